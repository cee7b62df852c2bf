"""``[csv_assets]`` and ``[csv_users]``: rows of one CSV file or of every ``*.csv`` in a directory.

Rows are streamed in pages; nothing is loaded whole. Defaults fix the traps of the seed without
breaking its files: a UTF-8 BOM is stripped (``utf-8-sig``), ``encoding`` and ``delimiter`` are
settings, files are read in sorted order, and decode errors and ragged rows name file and line.

Damaged files fail row by row, never the whole file: a line that does not decode, a row or cell
over its size limit and a quote that is never closed each cost one failed record (named by its
line), and the rows after it are still read. The csv module alone would read to the end of the
file inside an unterminated quote, so records are delimited here first (``_records``): a quote
still open at the end of the file, or after ``max_row_size``, marks its first line as broken and
reading resumes on the next line. Memory is bounded by ``max_row_size`` per row and by
``PAGE_BUDGET`` per page, and every step is linear in the size of the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import SourceError
from ..settings import BOOL, File, Folder, List, Setting, Size
from .base import BadRecord, Record, UsersSource
from .files import PROCESSED_SETTINGS, FileSource, discover, display, one_of_problems, processed_problems
from .limits import CELL_COST, PAGE_BUDGET, PAGE_SIZE, human

log = logging.getLogger(__name__)

DELIMITER_WORDS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
BLOCK = 1 << 18  # bytes read (and decoded) at a time
SNIFF_CHARS = 4096  # of the header line, for delimiter = auto (the Sniffer is quadratic in its sample)
# Undecodable bytes are read as lone surrogates (errors="surrogateescape"), so decoding never
# stops a file; a line holding one is reported with the byte and its column.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _has_escaped_byte(text: str) -> bool:
    """Does ``text`` hold an undecodable byte? Clean text encodes, and encoding a block is some
    twenty times faster than searching it with the regex, which only a failure needs."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _ESCAPED_BYTE.search(text) is not None
    return False


STRAY_QUOTE = "a quoted value starts on this line and is never closed (a stray or missing quote)"

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
    Setting(
        "max_cell_size",
        "1M",
        kind=Size(),
        help=(
            "the largest value of one cell; a row with a larger cell is not sent (the csv module's own"
            " limit of 128 KiB does not apply)"
        ),
    ),
    Setting(
        "max_row_size",
        "8M",
        kind=Size(),
        help=(
            "the largest row, as text; a larger row is not sent. Each column also counts 64 bytes, so the"
            " default admits headers of up to 131,072 columns"
        ),
    ),
    *PROCESSED_SETTINGS,
)


# -- physical lines -----------------------------------------------------------------------------------


class _Undecodable(str):
    """A line holding bytes that are not valid in the file's encoding (kept for quote tracking)."""

    __slots__ = ()

    def reason(self, encoding: str) -> str:
        match = _ESCAPED_BYTE.search(self)
        assert match is not None
        byte = ord(match.group()) - 0xDC00
        return f"is not valid {encoding} (byte 0x{byte:02x} at column {match.start() + 1})"


@dataclass(frozen=True, slots=True)
class _TooLong:
    """A physical line longer than ``max_row_size``: only its size is kept, never its text."""

    size: int


def _decoded(fh: Any, encoding: str) -> Iterator[str]:
    """The text of a binary file, in large pieces; any encoding, UTF-16/32 included."""
    decoder = codecs.getincrementaldecoder(encoding)("surrogateescape")
    while block := fh.read(BLOCK):
        if text := decoder.decode(block):
            yield text
    if text := decoder.decode(b"", True):
        yield text


def _physical_lines(pieces: Iterable[str], cap: int) -> Iterator[str | _TooLong]:
    """Lines as ``open(newline="")`` splits them (the csv module's view), ends kept.

    A line longer than ``cap`` characters is yielded as ``_TooLong``: its text is dropped as it is
    read, so a file that is one huge line costs ``cap`` of memory, and pieces are joined once per
    line (linear time). Lines with undecodable bytes are yielded as ``_Undecodable``.
    """
    pending: list[str] = []
    size = 0  # characters of the unfinished line
    for piece in pieces:
        dirty = _has_escaped_byte(piece)
        lines = io.StringIO(piece, newline="").readlines()
        if not size and not dirty and len(lines) > 1 and (len(piece) <= cap or max(map(len, lines)) <= cap):
            # The common case: whole lines of clean text; only the last one may be unfinished.
            tail = lines.pop()
            yield from lines
            lines = [tail]
        last = len(lines) - 1
        for i, line in enumerate(lines):
            # A "\r" ending a piece may be the first half of "\r\n": the line is not finished yet.
            done = line[-1] == "\n" or (line[-1] == "\r" and i < last)
            if not size and done and len(line) <= cap and not dirty:
                yield line  # the common case
                continue
            size += len(line)
            if size <= cap:
                pending.append(line)
            elif pending:
                pending = []
            if done:
                yield _finish(pending, size, cap)
                pending, size = [], 0
    if size:
        yield _finish(pending, size, cap)


def _finish(pieces: list[str], size: int, cap: int) -> str | _TooLong:
    if size > cap:
        return _TooLong(size)
    line = pieces[0] if len(pieces) == 1 else "".join(pieces)
    return _Undecodable(line) if _has_escaped_byte(line) else line


# -- records ------------------------------------------------------------------------------------------


def open_at_end(line: str, quoted: bool, delimiter: str, *, strict: bool = False) -> bool | None:
    """Whether a quoted value is still open after ``line``, ``quoted`` telling if it was before.

    Follows the csv module's default dialect (``"`` quotes, ``""`` inside quotes is one quote, no
    escape character, not strict): a quote opens a value only at the start of a field, and a quote
    that is not doubled closes it (text after it up to the next delimiter joins the value).
    ``strict`` (for the lines a quoted value continues on): None when a closing quote is followed
    by text, which a well-formed file never has; it means the value began with a stray quote and
    has just paired with another (the csv module would glue the lines between into one cell).
    """
    if not quoted and '"' not in line:
        return False
    pos = 0
    while True:
        quote = line.find('"', pos)
        if quoted:
            if quote < 0:
                return True
            after = line[quote + 1 : quote + 2]
            if after == '"':
                pos = quote + 2  # a doubled quote
                continue
            if strict and after not in (delimiter, "\r", "\n", ""):
                return None
            quoted, pos = False, quote + 1
            continue
        if quote < 0:
            return False
        # Outside quotes a quote opens a value only where a field starts: at the start of the line
        # or right after a delimiter (line[pos - 1] is always a quote, never a delimiter).
        if quote == 0 or line[quote - 1] == delimiter:
            quoted = True
        pos = quote + 1


class _Problem(str):
    """Why a record cannot be read (its lines are not kept)."""

    __slots__ = ()


class _Records:
    """Physical lines grouped into records: a line (the common case), the lines of a quoted value
    that spans several, or a ``_Problem``. ``line`` is the first line of the record last yielded.

    A quote still open at the end of the file or after ``max_row`` characters, or closed by a
    quote followed by text (see ``open_at_end``), makes the record broken: it is reported at its
    first line, and the lines after that one are read again as records of their own, so a stray
    quote costs one row, not the rest of the file. The lines read again are at most ``max_row``
    characters, so each broken record costs bounded work.
    """

    def __init__(self, lines: Iterator[str | _TooLong], delimiter: str, max_row: int, encoding: str) -> None:
        self.lines, self.delimiter, self.max_row, self.encoding = lines, delimiter, max_row, encoding
        self.line = 0
        self.number = 0  # physical lines read
        self.replay: deque[tuple[int, str | _TooLong]] = deque()

    def __iter__(self) -> Iterator[str | list[str]]:
        lines, replay = self.lines, self.replay
        while True:
            if replay:
                start, first = replay.popleft()
            else:
                number = self.number
                for first in lines:  # the common case, kept tight: a line without quotes
                    number += 1
                    if type(first) is str and '"' not in first:
                        self.line = number
                        yield first
                        continue
                    break
                else:
                    return
                start = self.number = number
            self.line = start
            if type(first) is str and not open_at_end(first, False, self.delimiter):
                yield first
                continue
            if isinstance(first, _TooLong):
                yield _Problem(f"the line is {human(first.size)}, more than max_row_size")
                continue
            if not open_at_end(first, False, self.delimiter):
                yield _Problem(first.reason(self.encoding))  # type: ignore[attr-defined]
                continue
            taken, problem = self._quoted(start, first)
            if problem:
                yield _Problem(problem)
                replay.extendleft(reversed(taken[1:]))
                continue
            texts: list[str] = [text for _, text in taken]  # type: ignore[misc]
            bad = next((t for t in texts if type(t) is _Undecodable), None)
            yield _Problem(bad.reason(self.encoding)) if bad is not None else texts

    def _next(self) -> tuple[int, str | _TooLong] | None:
        if self.replay:
            return self.replay.popleft()
        line = next(self.lines, None)
        if line is None:
            return None
        self.number += 1
        return self.number, line

    def _quoted(self, start: int, first: str) -> tuple[list[tuple[int, str | _TooLong]], str]:
        """The lines of a record whose first line leaves a quoted value open, and its problem."""
        taken: list[tuple[int, str | _TooLong]] = [(start, first)]
        size = len(first)
        while True:
            item = self._next()
            if item is None:
                return taken, STRAY_QUOTE
            taken.append(item)
            line = item[1]
            size += line.size if isinstance(line, _TooLong) else len(line)
            if size > self.max_row:
                return taken, (
                    f"a quoted value starts on this line and is still open after {human(self.max_row)} "
                    "(max_row_size): a stray or missing quote?"
                )
            assert not isinstance(line, _TooLong)  # a too-long line always exceeds max_row
            state = open_at_end(line, True, self.delimiter, strict=True)
            if state is None:
                return taken, STRAY_QUOTE
            if not state:
                return taken, ""


class _Feed:
    """The csv reader's input: the lines of one record at a time."""

    __slots__ = ("lines",)

    def __init__(self) -> None:
        self.lines: deque[str] = deque()

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        try:
            return self.lines.popleft()
        except IndexError:
            raise StopIteration from None


def _parse(rec: str | list[str], feed: _Feed, reader: Any, delimiter: str) -> tuple[list[str] | None, int]:
    """The cells of a record and its size in characters; None for a ``_Problem``."""
    if type(rec) is str:
        if '"' not in rec:  # no quoting: the csv module would split at the delimiters
            text = rec.rstrip("\r\n")
            return (text.split(delimiter) if text else []), len(rec)
        feed.lines.append(rec)
        size = len(rec)
    elif type(rec) is list:
        feed.lines.extend(rec)
        size = sum(map(len, rec))
    else:
        return None, 0
    row = next(reader, None) or []
    feed.lines.clear()
    return row, size


# -- the sources --------------------------------------------------------------------------------------


class _CsvSource(FileSource):
    file_settings: ClassVar[tuple[Setting, ...]] = FILE_SETTINGS

    def validate(self) -> Iterator[str]:
        yield from one_of_problems(self.name, self.setting("filename"), self.setting("directory"))
        yield from processed_problems(self.name, self.setting("processed_action"), self.setting("processed_dir"))
        try:
            codecs.lookup(self.setting("encoding"))
        except LookupError:
            yield (
                f"[{self.name}] encoding = {self.setting('encoding')!r} is not a known "
                "encoding (e.g. utf-8, cp1252, latin-1, utf-16)"
            )
        delimiter = self._delimiter_setting()
        if delimiter != "auto" and len(delimiter) != 1:
            yield f"[{self.name}] delimiter = {self.setting('delimiter')!r} must be one character, tab, or auto"
        if delimiter in ('"', "\r", "\n"):
            yield f"[{self.name}] delimiter = {self.setting('delimiter')!r} cannot separate fields"

    @property
    def strip_headers(self) -> bool:
        return bool(self.value("strip_headers"))

    @property
    def max_cell(self) -> int:
        return int(self.value("max_cell_size"))

    @property
    def max_row(self) -> int:
        return int(self.value("max_row_size"))

    def _delimiter_setting(self) -> str:
        raw = self.setting("delimiter") or ","
        return DELIMITER_WORDS.get(raw.lower(), raw)

    async def pages(self) -> AsyncIterator[list[Record]]:
        # The csv module's own limit (131072 by default, process-wide) is only ever raised: rows
        # are bounded here, before the csv module sees them.
        csv.field_size_limit(max(csv.field_size_limit(), self.max_row + 1))
        files = discover(self.name, self.setting("filename"), self.setting("directory"), ".csv")
        if not files:
            log.info("[%s] no *.csv files in %s", self.name, self.setting("directory"))
        for path in files:
            for page in self._read(path):
                yield page
            self.processed.mark(path)

    def _read(self, path: Path) -> Iterator[list[Record]]:
        encoding = self.setting("encoding") or "utf-8-sig"
        name = display(path)
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise SourceError(f"[{self.name}] cannot open {name}: {exc.strerror}") from None
        with fh:
            try:
                yield from self._rows(_physical_lines(_decoded(fh, encoding), self.max_row), name, encoding)
            except OSError as exc:
                raise SourceError(f"[{self.name}] cannot read {name}: {exc.strerror or exc}") from None

    def _rows(self, lines: Iterator[str | _TooLong], name: str, encoding: str) -> Iterator[list[Record]]:
        delimiter = self._delimiter_setting()
        if delimiter == "auto":
            first = next(lines, "")
            try:
                sample = first[:SNIFF_CHARS] if isinstance(first, str) else ""
                delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
            except csv.Error:
                delimiter = ","
            lines = itertools.chain([first], lines)
        feed = _Feed()
        reader = csv.reader(feed, delimiter=delimiter)
        records = _Records(iter(lines), delimiter, self.max_row, encoding)
        found = iter(records)
        header = self._header(found, records, feed, reader, name, delimiter)
        if not isinstance(header, list):
            if header is not None:
                yield [header]  # type: ignore[list-item]
            return
        width = len(header)
        page: list[Record] = []
        cost = 0
        short_lines: list[int] = []
        row_cost, max_cell = CELL_COST * width, self.max_cell
        row: list[str] | None
        for rec in found:
            if type(rec) is str and '"' not in rec:  # inline, as _parse would
                text = rec.rstrip("\r\n")
                row, size = (text.split(delimiter) if text else []), len(rec)
            else:
                row, size = _parse(rec, feed, reader, delimiter)
                if row is None:
                    page.append(self._bad(name, records.line, rec))  # type: ignore[arg-type]
                    continue
            cells = len(row)
            if cells == width and size <= max_cell:
                page.append(dict(zip(header, row, strict=False)))  # the common case first
            elif not row:
                continue  # a blank line
            elif cells > width:
                page.append(
                    BadRecord(  # type: ignore[arg-type]
                        f"{name} line {records.line}: {cells} cells but the header has {width}; "
                        "the row is not sent (a value with an unquoted delimiter?)",
                        raw={"file": name, "line": records.line, "cells": row[: width + 10]},
                    )
                )
            elif size > max_cell and (problem := self._too_big(row)):
                page.append(self._bad(name, records.line, problem))
            elif cells == width:
                page.append(dict(zip(header, row, strict=False)))
            else:
                short_lines.append(records.line)
                record: dict[str, Any] = dict(zip(header, row, strict=False))
                for col in header[cells:]:
                    record[col] = None
                page.append(record)
            cost += size + row_cost
            if cost >= PAGE_BUDGET or len(page) >= PAGE_SIZE:
                yield page
                page, cost = [], 0
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

    def _header(
        self, found: Iterator[str | list[str]], records: _Records, feed: _Feed, reader: Any, name: str, delimiter: str
    ) -> list[str] | BadRecord | None:
        """The column names, or a BadRecord saying why the file cannot be read (None: empty file)."""
        rec = next(found, None)
        if rec is None:
            return None
        header, _ = _parse(rec, feed, reader, delimiter)
        if header is None:
            return self._bad(name, records.line, f"the header row cannot be read ({rec}); the file is not read")
        rec_line = records.line
        if len(header) * CELL_COST > self.max_row:
            return self._bad(
                name,
                rec_line,
                f"the header has {len(header):,} columns; max_row_size = {human(self.max_row)} allows "
                f"{self.max_row // CELL_COST:,} ({CELL_COST} bytes each); the file is not read",
            )
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]  # a BOM the configured encoding kept
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
        if len(header) == 1 and delimiter == "," and any(c in header[0] for c in ";\t|"):
            log.warning(
                "[%s] %s has a single column %r: is the file separated by another character? (set delimiter)",
                self.name,
                name,
                header[0][:100],
            )
        return header

    def _too_big(self, row: list[str]) -> str:
        """Why a parsed row is too large to send ("" when it is not)."""
        biggest = max(map(len, row))
        if biggest > self.max_cell:
            return f"a cell of {human(biggest)} is larger than max_cell_size ({human(self.max_cell)})"
        return ""

    def _bad(self, name: str, line: int, problem: str) -> Any:
        hint = ""
        if problem.startswith("is not valid"):
            hint = f"; set encoding = <the file's encoding> (e.g. cp1252) in [{self.name}]"
        elif setting := next((s for s in ("max_row_size", "max_cell_size") if s in problem), ""):
            hint = f" (raise {setting} in [{self.name}] if such rows are expected)"
        message = f"{name} line {line} {problem}" if problem.startswith("is ") else f"{name} line {line}: {problem}"
        if "not read" not in problem:
            message += "; the row is not sent"
        return BadRecord(message + hint, raw={"file": name, "line": line})


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
