"""Shared file discovery for the CSV and JSON sources: ``filename`` xor ``directory``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, SourceError


def check_one_of(section: str, filename: str, directory: str, *, allow_filename: bool = True) -> None:
    if allow_filename and filename and directory:
        raise ConfigError(f"[{section}] filename and directory are mutually exclusive; keep one of them")
    if not (filename or directory):
        raise ConfigError(f"[{section}] set " + ("filename or directory" if allow_filename else "directory"))


def discover(section: str, filename: str, directory: str, suffix: str) -> list[Path]:
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
        (p for p in folder.iterdir()
         if not p.name.startswith(".") and p.name.lower().endswith(suffix) and p.is_file()),
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
