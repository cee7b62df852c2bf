"""Shared file handling of the CSV and JSON sources: ``filename`` xor ``directory``, and what
happens to the files after a successful run (``processed_action``)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from ..diskio import describe_os_error
from ..errors import SourceError
from ..settings import Choice, Folder, Setting
from .base import Source

log = logging.getLogger(__name__)


def one_of_problems(section: str, filename: str, directory: str, *, allow_filename: bool = True) -> Iterator[str]:
    if allow_filename and filename and directory:
        yield f"[{section}] filename and directory are mutually exclusive; keep one of them"
    if not (filename or directory):
        yield f"[{section}] set " + ("filename or directory" if allow_filename else "directory")


def discover(section: str, filename: str, directory: str, suffix: str | tuple[str, ...]) -> list[Path]:
    """The files to read, in a stable order. ``*.csv`` matches case-insensitively; dot-files are skipped."""
    if filename:
        path = Path(filename).expanduser()
        if not path.is_file():
            raise SourceError(f"[{section}] filename = {filename}: no such file")
        return [path]
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise SourceError(f"[{section}] directory = {directory}: no such directory")
    return sorted(
        (p for p in folder.iterdir() if not p.name.startswith(".") and p.name.lower().endswith(suffix) and p.is_file()),
        key=lambda p: p.name,
    )


def first_bad_line(path: Path, encoding: str) -> tuple[int, str]:
    """Line number (1-based) and reason of the first line that does not decode (for a clear error)."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as exc:
                return number, f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
    return 0, "undecodable bytes"


def display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


PROCESSED_ACTIONS = ("none", "move", "delete")
PROCESSED_SETTINGS = (
    Setting(
        "processed_action",
        "none",
        kind=Choice(PROCESSED_ACTIONS),
        help=(
            "after a run in which every record was accepted: `move` (to `processed_dir`) or `delete` "
            "the files read to their end (see below); `none` leaves them"
        ),
    ),
    Setting(
        "processed_dir",
        "",
        example="/some/path/to/processed/",
        kind=Folder(must_exist=False),
        help="folder for `processed_action = move`; created if missing",
    ),
)


def processed_problems(section: str, action: str, folder: str) -> Iterator[str]:
    if action == "move" and not folder.strip():
        yield f"[{section}] processed_action = move needs processed_dir"


class ProcessedFiles:
    """Files read to the end during a run; moved or deleted by ``finish`` once the run succeeded.

    A file is "done" only when the reader went past its last record, so a run cut short by
    ``--record-count`` or an error leaves the file where it is, to be read again next time.
    ``finish`` is called (through ``Source.commit``) only after a run that ended normally with every
    record confirmed delivered: no failed send (a record the local store refused included), no
    failed convert, the session closed. Anything else leaves every file in place.
    """

    def __init__(self, section: str, action: str, folder: str) -> None:
        self.section = section
        self.action = action or "none"
        self.folder = Path(folder).expanduser() if folder else None
        self.done: list[Path] = []

    def mark(self, path: Path) -> None:
        if self.action != "none":
            self.done.append(path)

    def finish(self) -> None:
        if self.action == "none" or not self.done:
            return
        if self.action == "move":
            assert self.folder is not None
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SourceError(
                    f"[{self.section}] cannot create processed_dir: {describe_os_error(exc, self.folder)}"
                ) from None
        for path in self.done:
            if self.action == "delete":
                try:
                    path.unlink()
                except OSError as exc:
                    raise SourceError(
                        f"[{self.section}] cannot delete {display(path)}: {exc.strerror or exc}"
                    ) from None
            else:
                assert self.folder is not None
                self._move(path, _free_name(self.folder / path.name))
        log.info(
            "[%s] %s %d processed file(s)%s",
            self.section,
            "moved" if self.action == "move" else "deleted",
            len(self.done),
            f" to {display(self.folder)}" if self.folder and self.action == "move" else "",
        )
        self.done = []

    def _move(self, path: Path, target: Path) -> None:
        try:
            shutil.move(path, target)
        except OSError as exc:
            # Across file systems a move is a copy: never leave half a copy next to the original.
            if path.exists():
                target.unlink(missing_ok=True)
            raise SourceError(
                f"[{self.section}] cannot move {display(path)}: {describe_os_error(exc, display(target))}"
            ) from None


def _free_name(target: Path) -> Path:
    """``target``, or ``name.<UTC time>[-n].ext`` when a file of that name was processed before."""
    if not target.exists():
        return target
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        candidate = target.with_name(f"{target.stem}.{stamp}{f'-{n}' if n else ''}{target.suffix}")
        if not candidate.exists():
            return candidate
    raise SourceError(f"cannot find a free file name for {target}")


class FileSource(Source):
    """A source that reads files: the ``processed_action`` settings move or delete them once the
    whole run reached Oomnitza (``commit``)."""

    @cached_property
    def processed(self) -> ProcessedFiles:
        return ProcessedFiles(self.name, self.setting("processed_action"), self.setting("processed_dir"))

    async def commit(self) -> None:
        self.processed.finish()

    def reads_everything(self) -> bool:
        return self.processed.action == "none"  # moved or deleted files are not read again
