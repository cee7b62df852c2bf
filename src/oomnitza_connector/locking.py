"""One run at a time per section: a lock file per section (or managed integration) in the state
directory's ``locks/`` folder.

The lock is the operating system's, not the file's existence: ``flock`` on POSIX, ``msvcrt.locking``
on Windows. The OS drops it when the process ends, however it ends (a crash, ``kill -9``, a
reboot), so a stale lock cannot block later runs; the file itself stays and is harmless. ``flock``
rather than ``fcntl``/``lockf`` record locks: those belong to the process (a second lock taken in
the same process would succeed, and closing any descriptor of the file would drop it), while a
``flock`` belongs to the open file, so two syncs of one section inside one process exclude each
other too. Lock files are never deleted: deleting one while another process waits on it would let
a third process lock a new file of the same name, and two runs would hold "the" lock.

The holder writes who it is into the file (process id, host, start time, what it runs), so the
run that finds the lock taken can say by whom. (On Windows the locked byte cannot be read by
others; the message then names no process.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCKS = "locks"
EX_TEMPFAIL = 75  # sysexits.h: "temporary failure; the user is invited to retry"


class LockUnavailable(Exception):
    """The lock file cannot be created or locked (a read-only or missing folder, no lock support)."""


def lock_path(state_dir: Path, name: str) -> Path:
    """``<state_dir>/locks/<name>.lock``; characters a file name cannot carry are replaced, and a
    short hash of the real name keeps two names that differ only there apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "_"
    if safe != name or len(safe) > 120:
        safe = f"{safe[:120]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return state_dir / LOCKS / f"{safe}.lock"


class RunLock:
    """An exclusive, non-waiting (or briefly waiting) lock on one name."""

    def __init__(self, path: Path, *, what: str = "") -> None:
        self.path = path
        self.what = what  # written for the next run to read, e.g. "upload csv_assets"
        self._fd: int | None = None

    @classmethod
    def for_section(cls, state_dir: Path, name: str, *, what: str = "") -> RunLock:
        return cls(lock_path(state_dir, name), what=what)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, timeout: float = 0.0, sleep: Callable[[float], None] = time.sleep, poll: float = 0.05) -> bool:
        """True when locked (by us now); False when another run holds it (after ``timeout`` seconds).
        Raises ``LockUnavailable`` when the lock file cannot be made or locked at all."""
        if self._fd is not None:
            return True
        fd = self._open()
        deadline = time.monotonic() + timeout
        try:
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                sleep(poll)
        except OSError as exc:
            os.close(fd)
            raise LockUnavailable(f"cannot lock {self.path}: {exc.strerror or exc}") from None
        self._fd = fd
        self._write_owner(fd)
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            _unlock(fd)
        os.close(fd)  # closing drops the lock anyway; unlocking first is for Windows' sake

    def holder(self) -> str:
        """Who holds the lock, as the holder wrote it ("" when unknown)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                owner = json.loads(fh.read(4096) or "{}")
        except (OSError, ValueError):
            return ""
        if not isinstance(owner, dict):
            return ""
        parts = []
        if owner.get("pid"):
            where = f" on {owner['host']}" if owner.get("host") and owner["host"] != socket.gethostname() else ""
            parts.append(f"process {owner['pid']}{where}")
        if owner.get("started"):
            parts.append(f"since {owner['started']}")
        return ", ".join(str(p) for p in parts)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_RDWR without O_TRUNC: opening must not wipe what the holder wrote.
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
        except OSError as exc:
            raise LockUnavailable(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None

    def _write_owner(self, fd: int) -> None:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "what": self.what,
        }
        data = (json.dumps(owner) + "\n").encode()
        with contextlib.suppress(OSError):  # only a courtesy for the next run's message
            if sys.platform != "win32":  # Windows: the locked byte is ours, the rest is left as is
                os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, data)


@dataclass
class Claim:
    """The outcome of ``claim``: ``busy`` when another run holds the lock (``holder`` says who, if
    known); else ``lock`` is ours to release, or None when no lock could be made (then the run
    goes on unprotected: a folder that cannot be written must not stop syncs that worked before)."""

    lock: RunLock | None = None
    busy: bool = False
    holder: str = ""

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


_warned: set[Path] = set()


def claim(state_dir: Path, name: str, *, what: str) -> Claim:
    """Take the lock of ``name`` without waiting."""
    lock = RunLock.for_section(state_dir, name, what=what)
    try:
        if lock.acquire():
            return Claim(lock=lock)
    except LockUnavailable as exc:
        if lock.path.parent not in _warned:  # once per folder, not once per section
            _warned.add(lock.path.parent)
            log.warning(
                "%s: runs are not protected from overlapping (set [oomnitza] state_dir or OOMNITZA_STATE_DIR "
                "to a writable folder)",
                exc,
            )
        return Claim()
    return Claim(busy=True, holder=lock.holder())


if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except PermissionError:  # EACCES: locked by another process
            return False
        except OSError as exc:
            if exc.errno in (13, 36):  # EACCES, EDEADLOCK
                return False
            raise
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # EWOULDBLOCK / EAGAIN: another open file holds it
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
