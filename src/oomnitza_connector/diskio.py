"""Writing files the user relies on: one clear line when the disk is full or read-only, private
files for raw records, and file names that fit the file system.

Used by ``--save-data``, the embedded local store and the export-file connector.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
from pathlib import Path

from .errors import DiskError

DEFAULT_NAME_MAX = 255  # bytes per file name on ext4, XFS, APFS, NTFS (in UTF-16 units there)
_SUFFIX_MAX = 16  # a longer "extension" is part of the name, not worth keeping whole
_HASH_LEN = 8
_SQLITE_MAX_WRITE = 65536 + 24  # one WAL frame of the largest page size


def describe_os_error(exc: OSError, path: Path | str) -> str:
    """One line naming ``path`` and what went wrong, for the errors a disk can cause."""
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"disk full: {path}" + (" (disk quota exceeded)" if code != errno.ENOSPC else "")
    if code == errno.EROFS:
        return f"cannot write {path}: read-only file system"
    if code == errno.EFBIG:
        return f"cannot write {path}: file too large for the file system or for the file size limit (ulimit -f)"
    if code in (errno.EACCES, errno.EPERM):
        return f"cannot write {path}: permission denied"
    if code == errno.ENAMETOOLONG:
        return f"cannot write {path}: file name too long"
    return f"cannot write {path}: {exc.strerror or exc}"


def disk_error(exc: OSError, path: Path | str) -> DiskError:
    return DiskError(describe_os_error(exc, path))


def describe_sqlite_error(exc: sqlite3.Error, path: Path | str) -> str:
    """One line for a failed write of a SQLite file (``sqlite_errorname`` says why; the OS errno
    is not exposed, so an unspecific I/O error is narrowed down by looking at the file system)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL" or (name.startswith("SQLITE_IOERR") and _no_space_left(path)):
        return f"disk full: {path}"
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or name == "SQLITE_PERM":
        if _read_only_fs(path):
            return f"cannot write {path}: read-only file system"
        if not _writable(path):
            return f"cannot write {path}: permission denied"
        return f"cannot open {path}: {exc}"
    if name.startswith("SQLITE_IOERR"):
        if _at_file_size_limit(path):
            return f"cannot write {path}: file too large for the file size limit (ulimit -f)"
        return f"cannot write {path}: disk I/O error (is the disk full or failing?)"
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return f"{path} is damaged or not a SQLite database: {exc}"
    return f"cannot use {path}: {exc}"


def is_disk_problem(exc: sqlite3.Error) -> bool:
    """A failure of the file rather than of one record (the whole write is lost)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return not name.startswith("SQLITE_CONSTRAINT") and not isinstance(exc, sqlite3.ProgrammingError)


def _existing(path: Path | str) -> Path:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _statvfs(path: Path | str) -> os.statvfs_result | None:
    if not hasattr(os, "statvfs"):  # Windows
        return None
    try:
        return os.statvfs(_existing(path))
    except OSError:
        return None


def _read_only_fs(path: Path | str) -> bool:
    st = _statvfs(path)
    return bool(st and st.f_flag & getattr(os, "ST_RDONLY", 1))


def _writable(path: Path | str) -> bool:
    """The file (when it exists) and its folder can be written by this process."""
    p = Path(path)
    if p.exists() and not os.access(p, os.W_OK):
        return False
    return os.access(_existing(p.parent), os.W_OK)


def _at_file_size_limit(path: Path | str) -> bool:
    """Whether the store (or its journal) reached the process's file size limit: SQLite reports
    the EFBIG of such a write only as an I/O error."""
    try:
        import resource
    except ImportError:  # Windows
        return False
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    for suffix in ("", "-wal", "-journal"):
        try:
            size = os.stat(f"{path}{suffix}").st_size
        except OSError:
            continue
        if size + _SQLITE_MAX_WRITE >= limit:
            return True
    return False


def _no_space_left(path: Path | str) -> bool:
    st = _statvfs(path)
    return bool(st and st.f_bavail == 0)


# -- private files ------------------------------------------------------------------------------------


def private_dir(folder: Path) -> None:
    """Create ``folder`` (and missing parents) so that only the owner can enter it; a folder that
    already exists keeps its mode (it is the user's)."""
    try:
        if folder.is_dir():
            return
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700)
    except FileExistsError:
        if not folder.is_dir():
            raise DiskError(f"cannot create the folder {folder}: a file of that name is in the way") from None
    except OSError as exc:
        raise disk_error(exc, folder) from None


def open_private(path: Path) -> int:
    """A new, empty file only the owner can read (0600), as a file descriptor.

    A file left by an earlier run is removed first rather than truncated, so it never keeps a wider
    mode, and a symbolic link planted in its place is replaced, not followed.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        path.unlink(missing_ok=True)
        return os.open(path, flags, 0o600)
    except OSError as exc:
        raise disk_error(exc, path) from None


# -- file names ---------------------------------------------------------------------------------------


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of ``folder`` takes."""
    try:
        return int(os.pathconf(_existing(folder), "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf on Windows
        return DEFAULT_NAME_MAX


def fit_name(name: str, limit: int = DEFAULT_NAME_MAX) -> str:
    """``name`` when it fits in ``limit`` bytes (UTF-8); else its beginning, a short hash of the
    whole name (so two long names that begin alike stay apart) and its extension."""
    if len(os.fsencode(name)) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = f".{ext}" if dot and stem and len(os.fsencode(ext)) < _SUFFIX_MAX else ""
    if not suffix:
        stem = name
    tag = "-" + hashlib.sha256(os.fsencode(name)).hexdigest()[:_HASH_LEN]
    room = max(0, limit - len(os.fsencode(suffix)) - len(tag))
    head = os.fsencode(stem)[:room].decode("utf-8", "ignore").rstrip()
    return f"{head}{tag}{suffix}"
