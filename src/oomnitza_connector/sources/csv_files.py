"""``[csv_assets]`` and ``[csv_users]``: rows of one CSV file or of every ``*.csv`` in a directory.

Rows are streamed in pages; nothing is loaded whole. Defaults fix the traps of the seed without
breaking its files: a UTF-8 BOM is stripped (``utf-8-sig``), ``encoding`` and ``delimiter`` are
settings, files are read in sorted order, and decode errors and ragged rows name file and line.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

from ..errors import SourceError
from ..settings import BOOL, File, Folder, List, Setting
from .base import BadRecord, Record, Source, UsersSource
from .files import (
    PROCESSED_SETTINGS,
    ProcessedFiles,
    discover,
    display,
    first_bad_line,
    one_of_problems,
    processed_problems,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
DELIMITER_WORDS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}

FILE_SETTINGS = (
    Setting(
        "filename",
        "",
        example="/some/path/to/file/assets.csv",
        kind=File(must_exist=False),
        help="one CSV file (`filename` and `directory` are mutually exclusive)",
    ),
    Setting(
        "directory",
        "",
        example="/some/path/to/files/",
        kind=Folder(must_exist=False),
        help=(
            "every `*.csv` file in this folder (not recursive, sorted by name, case-insensitive "
            "extension, dot-files skipped)"
        ),
    ),
)
FORMAT_SETTINGS = (
    Setting(
        "encoding",
        "utf-8-sig",
        help="text encoding (`cp1252`, `latin-1`, `utf-16`, …); a UTF-8 byte-order mark is stripped",
    ),
    Setting("delimiter", ",", help="field separator: `,` `;` `|` `tab`, or `auto` to detect it from the header"),
    Setting(
        "strip_headers",
        "false",
        kind=BOOL,
        help=(
            'remove spaces around column names (`" Serial "` becomes `"Serial"`); without it a padded'
            " name is warned about, since mappings must then spell it with its spaces"
        ),
    ),
    *PROCESSED_SETTINGS,
)


class _DecodedLines:
    """The lines of a binary file decoded with ``encoding``, read in large blocks for speed.

    When a block does not decode, its lines are decoded one by one: the good lines before the bad
    one are still delivered, and ``number`` is then the exact (1-based) line of the bad byte.
    """

    BLOCK = 1 << 18

    def __init__(self, fh: Any, encoding: str) -> None:
        self.fh = fh
        self.encoding = encoding
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(self.encoding)("strict")
        pending = b""
        lines_before = 0
        while True:
            block = self.fh.read(self.BLOCK)
            data = pending + block
            if block:
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    pending = data
                    continue
                data, pending = data[:cut], data[cut:]
            try:
                text = decoder.decode(data, not block)
            except UnicodeDecodeError:
                yield from self._line_by_line(data, lines_before)
                raise AssertionError("unreachable: the block did not decode") from None
            # newline="" splits exactly as open(..., newline="") does, which the csv module expects.
            yield from io.StringIO(text, newline="")
            lines_before += data.count(b"\n")
            if not block:
                return

    def _line_by_line(self, data: bytes, lines_before: int) -> Iterator[str]:
        decode = codecs.getincrementaldecoder(self.encoding)("strict").decode
        pieces = data.split(b"\n")
        for i, raw in enumerate(pieces):
            self.number = lines_before + i + 1
            yield decode(raw + b"\n" if i < len(pieces) - 1 else raw, i == len(pieces) - 1)


class _CsvSource(Source):
    file_settings: ClassVar[tuple[Setting, ...]] = FILE_SETTINGS

    def validate(self) -> Iterator[str]:
        yield from one_of_problems(self.name, self.setting("filename"), self.setting("directory"))
        yield from processed_problems(self.name, self.setting("processed_action"), self.setting("processed_dir"))
        self.processed = ProcessedFiles(self.name, self.setting("processed_action"), self.setting("processed_dir"))
        try:
            codecs.lookup(self.setting("encoding"))
        except LookupError:
            yield (
                f"[{self.name}] encoding = {self.setting('encoding')!r} is not a known "
                "encoding (e.g. utf-8, cp1252, latin-1, utf-16)"
            )
        self.strip_headers = self.value("strip_headers")
        delimiter = self._delimiter_setting()
        if delimiter != "auto" and len(delimiter) != 1:
            yield f"[{self.name}] delimiter = {self.setting('delimiter')!r} must be one character, tab, or auto"

    def _delimiter_setting(self) -> str:
        raw = self.setting("delimiter") or ","
        return DELIMITER_WORDS.get(raw.lower(), raw)

    async def pages(self) -> AsyncIterator[list[Record]]:
        files = discover(self.name, self.setting("filename"), self.setting("directory"), ".csv")
        if not files:
            log.info("[%s] no *.csv files in %s", self.name, self.setting("directory"))
        for path in files:
            for page in self._read(path):
                yield page
            self.processed.mark(path)

    async def commit(self) -> None:
        self.processed.finish()

    def _read(self, path: Path) -> Any:
        encoding = self.setting("encoding") or "utf-8-sig"
        name = display(path)
        line_aligned = not codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
        try:
            # Byte lines decoded one by one: rows before a bad byte are still read, and the error
            # names the exact line. UTF-16/32 cannot be split on b"\n", so those decode as a stream.
            fh = open(path, "rb") if line_aligned else open(path, encoding=encoding, newline="")
        except OSError as exc:
            raise SourceError(f"[{self.name}] cannot open {name}: {exc.strerror}") from None
        lines = _DecodedLines(fh, encoding) if line_aligned else None
        with fh:
            try:
                yield from self._rows(lines if lines is not None else fh, name)
            except UnicodeDecodeError as exc:
                if lines is not None:
                    line, reason = lines.number, f"byte 0x{exc.object[exc.start]:02x} at column {exc.start + 1}"
                else:
                    line, reason = first_bad_line(path, encoding)
                raise SourceError(
                    f"[{self.name}] {name} line {line} is not valid {encoding} ({reason}); "
                    f"set encoding = <the file's encoding> (e.g. cp1252) in [{self.name}]"
                ) from None
            except csv.Error as exc:
                raise SourceError(f"[{self.name}] {name}: malformed CSV: {exc}") from None

    def _rows(self, lines: Iterator[str], name: str) -> Any:
        delimiter = self._delimiter_setting()
        lines = iter(lines)
        if delimiter == "auto":
            first = next(lines, "")
            try:
                delimiter = csv.Sniffer().sniff(first, delimiters=",;\t|").delimiter
            except csv.Error:
                delimiter = ","
            lines = itertools.chain([first], lines)
        reader = csv.reader(lines, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        width = len(header)
        padded = [h for h in header if h != h.strip()]
        if padded and self.strip_headers:
            header = [h.strip() for h in header]
        elif padded:
            log.warning(
                "[%s] %s: column name(s) %s have spaces around them: mappings must use them exactly, "
                "or set strip_headers = true",
                self.name,
                name,
                ", ".join(map(repr, padded[:5])),
            )
        if width == 1 and delimiter == "," and any(c in header[0] for c in ";\t|"):
            log.warning(
                "[%s] %s has a single column %r: is the file separated by another character? (set delimiter)",
                self.name,
                name,
                header[0],
            )
        page: list[Record] = []
        short_lines: list[int] = []
        try:
            for row in reader:
                if len(row) == width:
                    page.append(dict(zip(header, row, strict=True)))
                elif not row:
                    continue  # blank line
                elif len(row) < width:
                    short_lines.append(reader.line_num)
                    record: dict[Any, Any] = dict(zip(header, row, strict=False))
                    for col in header[len(row) :]:
                        record[col] = None
                    page.append(record)
                else:
                    page.append(
                        BadRecord(  # type: ignore[arg-type]
                            f"{name} line {reader.line_num}: {len(row)} cells but the header has {width}; "
                            "the row is not sent (a value with an unquoted delimiter?)",
                            raw={"file": name, "line": reader.line_num, "cells": row},
                        )
                    )
                if len(page) >= PAGE_SIZE:
                    yield page
                    page = []
        except (UnicodeDecodeError, csv.Error):
            if page:  # rows read before the bad line still go out
                yield page
            raise
        if page:
            yield page
        if short_lines:
            shown = ", ".join(map(str, short_lines[:10])) + (" …" if len(short_lines) > 10 else "")
            log.warning(
                "[%s] %s: %d row(s) have fewer cells than the header (lines %s); the missing cells are empty (null)",
                self.name,
                name,
                len(short_lines),
                shown,
            )


class CsvAssets(_CsvSource):
    module = "csv_assets"
    mapping_name = "CSV_assets"
    record_type = "assets"
    summary = "Rows of a CSV file (or a folder of them) as assets"
    settings = (
        *FILE_SETTINGS,
        Setting(
            "sync_field",
            None,
            example="24DCF85294E411E38A52066B556BA4EE",
            kind=List(),
            help="the Oomnitza field id(s) that identify an asset, comma-separated (e.g. `SERIAL_NUMBER`)",
        ),
        *FORMAT_SETTINGS,
    )


class CsvUsers(_CsvSource, UsersSource):
    module = "csv_users"
    mapping_name = "CSV_users"
    record_type = "users"
    summary = "Rows of a CSV file (or a folder of them) as users"
    settings = (
        Setting(
            "filename",
            "",
            example="/some/path/to/file/users.csv",
            kind=File(must_exist=False),
            help="one CSV file (`filename` and `directory` are mutually exclusive)",
        ),
        FILE_SETTINGS[1],
        *UsersSource.role_settings,
        Setting(
            "sync_field",
            None,
            example="USER",
            kind=List(),
            help="the Oomnitza field id(s) that identify a user, comma-separated (e.g. `USER`)",
        ),
        *FORMAT_SETTINGS,
    )
