"""``[json_assets]`` and ``[json_users]``: every ``*.json`` and ``*.jsonl`` file of a directory.

A ``.json`` file holds one record (an object) or many (an array of objects); a ``.jsonl`` file holds
one object per line and is streamed. A file that is not valid JSON,
or an array item that is not an object, is counted as a failed record and the run goes on with the
next one, so one stray file does not stop the sync.

Hostile files are bounded: a record (array item, line or whole document) may take at most
``max_record_size`` bytes and nest at most ``MAX_DEPTH`` levels. Both are checked on the raw bytes
as they are read (``_Guard``), before the parser builds anything: the streaming parser keeps an
item whole, and its cost grows with the square of the depth (it builds a path per level), so
deep nesting must never reach it. An over-limit line of a ``.jsonl`` file fails alone; in a
``.json`` array, the items before it are sent and the rest of that file is not read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any

import ijson
import orjson

from ..settings import Folder, List, Setting, Size
from .base import BadRecord, Record, Source, UsersSource
from .files import PROCESSED_SETTINGS, ProcessedFiles, discover, display, one_of_problems, processed_problems
from .limits import PAGE_BUDGET, PAGE_SIZE, human

log = logging.getLogger(__name__)

UTF8_BOM = b"\xef\xbb\xbf"
MAX_DEPTH = 100  # nesting levels of one record; vendor exports stay far below
BLOCK = 1 << 16
SIZE_SETTING = Setting(
    "max_record_size",
    "8M",
    kind=Size(),
    help=(
        "the largest record (an array item, a `.jsonl` line, or a whole file that is not an array); a larger one fails"
    ),
)

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_DELTA = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class _Refused(Exception):
    """The record being read is over a limit (message: what and why)."""


class _Guard:
    """Nesting depth and size of JSON text, counted on the raw bytes as they are read.

    Linear and in C (bytes methods): escaped backslashes and quotes are dropped, then everything
    but quotes and brackets; the brackets outside strings give the depth. A backslash ending a
    block is carried to the next one, and so is being inside a string. Only a block that goes
    too deep is walked byte by byte, to find where.
    """

    def __init__(self, max_depth: int, max_bytes: int) -> None:
        self.max_depth, self.max_bytes = max_depth, max_bytes
        self.depth = 0
        self.in_string = False
        self.carry = b""
        self.size = 0  # bytes since the last mark()

    def mark(self) -> None:
        self.size = 0

    def check_size(self) -> None:
        if self.size > self.max_bytes:
            raise _Refused(f"is larger than max_record_size ({human(self.max_bytes)})")

    def scan(self, data: bytes) -> int:
        """Account for ``data``; returns how many of its bytes stay within the depth limit."""
        self.size += len(data)
        before = (self.depth, self.in_string, self.carry)
        text = self.carry + data
        if b"\\" in text:
            text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
            self.carry = b"\\" if text.endswith(b"\\") else b""
        structure = text.translate(None, _NOT_STRUCTURE)
        if self.in_string:
            structure = b'"' + structure
        parts = structure.split(b'"')  # even parts are outside strings
        self.in_string = len(parts) % 2 == 0
        brackets = b"".join(parts[::2])
        if brackets:
            peak = max(accumulate(map(_DELTA.__getitem__, brackets), initial=self.depth))
            self.depth += sum(map(_DELTA.__getitem__, brackets))
            if peak > self.max_depth:
                return self._too_deep_at(data, *before)
        return len(data)

    def _too_deep_at(self, data: bytes, depth: int, in_string: bool, carry: bytes) -> int:
        escaped = bool(carry)
        for i, byte in enumerate(data):
            if in_string:
                if escaped:
                    escaped = False
                elif byte == 0x5C:  # backslash
                    escaped = True
                elif byte == 0x22:
                    in_string = False
            elif byte == 0x22:
                in_string = True
            elif byte in _DELTA:
                depth += _DELTA[byte]
                if depth > self.max_depth:
                    return i
        return len(data)

    def check(self, data: bytes) -> None:
        """A whole document at once."""
        if len(data) > self.max_bytes:
            raise _Refused(f"is larger than max_record_size ({human(self.max_bytes)})")
        if self.scan(data) < len(data):
            raise _Refused(f"nests deeper than {MAX_DEPTH} levels")


class _GuardedFile:
    """A binary file for ijson that stops where a record goes over a limit (see ``_Guard``).

    The bytes before that point are handed over first, so the parser still yields every item
    that came before; the next read raises ``_Refused``.
    """

    def __init__(self, fh: Any, guard: _Guard) -> None:
        self.fh, self.guard = fh, guard
        self.refused = ""

    def read(self, size: int = -1) -> bytes:
        if self.refused:
            raise _Refused(self.refused)
        self.guard.check_size()
        data = self.fh.read(BLOCK if size < 0 else size)
        if data:
            keep = self.guard.scan(data)
            if keep < len(data):
                self.refused = f"nests deeper than {MAX_DEPTH} levels"
                if not keep:  # an empty read would look like the end of the file
                    raise _Refused(self.refused)
                data = data[:keep]
        return data


def load_json(data: bytes) -> Any:
    """orjson for speed; the standard library where it is needed for UTF-16/32 files."""
    data = data.removeprefix(UTF8_BOM)
    if _wide(data):
        return json.loads(data)  # detects UTF-16/32, as the seed's loader did
    return orjson.loads(data)


def _wide(head: bytes) -> bool:
    """UTF-16/32 text (a BOM or NUL bytes in the first characters)."""
    return head[:1] in (b"\xff", b"\xfe") or b"\x00" in head[:4]


def _bad(message: str, **raw: Any) -> Record:
    return BadRecord(message, raw)  # type: ignore[return-value]


class _JsonSource(Source):
    def validate(self) -> Iterator[str]:
        yield from one_of_problems(self.name, "", self.setting("directory"), allow_filename=False)
        yield from processed_problems(self.name, self.setting("processed_action"), self.setting("processed_dir"))
        self.processed = ProcessedFiles(self.name, self.setting("processed_action"), self.setting("processed_dir"))
        self.max_bytes = self.value("max_record_size")

    async def commit(self) -> None:
        self.processed.finish()

    def reads_everything(self) -> bool:
        return self.processed.action == "none"  # moved or deleted files are not read again

    async def pages(self) -> AsyncIterator[list[Record]]:
        files = discover(self.name, "", self.setting("directory"), (".json", ".jsonl"))
        if not files:
            log.info("[%s] no *.json or *.jsonl files in %s", self.name, self.setting("directory"))
        for path in files:
            name = display(path)
            read = _lines if path.name.lower().endswith(".jsonl") else _document
            try:
                for page in read(path, name, self.max_bytes):
                    yield page
            except OSError as exc:
                yield [_bad(f"{name}: cannot read: {exc.strerror}", file=name)]
                continue
            # A file with a bad record fails the run, and then commit() moves nothing.
            self.processed.mark(path)


def _parse_whole(data: bytes, where: str, max_bytes: int, **raw: Any) -> Any:
    """One whole document (a .jsonl line, or a .json file that is not an array), or a BadRecord.
    ``where`` names it in messages ("a.json", "a.jsonl line 7")."""
    try:
        if _wide(data.removeprefix(UTF8_BOM)):  # UTF-16/32: checked as UTF-8, parsed as before
            data = data.decode(json.detect_encoding(data)).encode()
        _Guard(MAX_DEPTH, max_bytes).check(data.removeprefix(UTF8_BOM))
        return load_json(data)
    except _Refused as exc:
        return _bad(f"{where} {exc}", **raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return _bad(f"{where}: not valid JSON: {exc}", **raw)


def _document(path: Path, name: str, max_bytes: int) -> Iterator[list[Record]]:
    """A ``.json`` file: one object, or an array of objects streamed item by item (ijson), so a
    file of any size is never held whole. Items before a syntax error are still sent."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        start = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0
        wide = _wide(head[start:])
        fh.seek(start)
        if wide or _first_char(fh) != b"[":
            # One object (or a UTF-16/32 file: rare, parsed whole): at most max_record_size.
            fh.seek(0)
            data = fh.read(max_bytes + 1)
            if len(data) > max_bytes:
                kind = "UTF-16/32 file" if wide else "file that is not an array"
                yield [_bad(f"{name}: a {kind} larger than max_record_size ({human(max_bytes)})", file=name)]
                return
            data = _parse_whole(data, name, max_bytes, file=name)
            yield [data] if isinstance(data, BadRecord) else list(_records(name, data))
            return
        fh.seek(start)
        yield from _array(fh, name, max_bytes)


def _array(fh: Any, name: str, max_bytes: int) -> Iterator[list[Record]]:
    # Depth counts the array itself; max_bytes is per item, checked between items.
    guard = _Guard(MAX_DEPTH + 1, max_bytes)
    page: list[Record] = []
    count = 0
    page_bytes = 0
    try:
        for item in ijson.items(_GuardedFile(fh, guard), "item", use_float=True):
            page.append(
                item
                if isinstance(item, dict)
                else _bad(f"{name}: item #{count} is not an object", file=name, item=item)
            )
            count += 1
            page_bytes += guard.size
            guard.mark()
            if len(page) >= PAGE_SIZE or page_bytes >= PAGE_BUDGET // 4:  # objects take ~4x their text
                yield page
                page, page_bytes = [], 0
    except ijson.JSONError as exc:
        page.append(_bad(f"{name}: not valid JSON after {count} item(s): {exc}", file=name))
    except _Refused as exc:
        page.append(_bad(f"{name}: item #{count} {exc}; the rest of the file is not read", file=name))
    if page:
        yield page


def _lines(path: Path, name: str, max_bytes: int) -> Iterator[list[Record]]:
    """JSON Lines: one object per line, streamed; a bad line fails alone, with its number."""
    page: list[Record] = []
    page_bytes = 0
    with open(path, "rb") as fh:
        number = 0
        while line := fh.readline(max_bytes + 1):
            number += 1
            if len(line) > max_bytes and not line.endswith(b"\n"):
                size = len(line) + _skip_line(fh)
                item = _bad(
                    f"{name} line {number}: {human(size)}, larger than max_record_size ({human(max_bytes)})",
                    file=name,
                    line=number,
                )
            elif not line.strip():
                continue
            else:
                item = _parse_whole(line, f"{name} line {number}", max_bytes, file=name, line=number)
            if not isinstance(item, dict | BadRecord):
                item = _bad(f"{name} line {number}: not an object", file=name, line=number)
            page.append(item)
            page_bytes += len(line)
            if len(page) >= PAGE_SIZE or page_bytes >= PAGE_BUDGET // 4:
                yield page
                page, page_bytes = [], 0
    if page:
        yield page


def _skip_line(fh: Any) -> int:
    """Read past the end of the current line (without keeping it); returns the bytes skipped."""
    skipped = 0
    while chunk := fh.readline(BLOCK):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _records(name: str, data: Any) -> Iterator[Record]:
    """The records of a parsed document: an object, or a list of objects."""
    if isinstance(data, dict):
        yield data
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield item if isinstance(item, dict) else _bad(f"{name}: item #{i} is not an object", file=name, item=item)
    else:
        yield _bad(f"{name}: does not contain a list or an object", file=name)


def _first_char(fh: Any) -> bytes:
    """The first non-whitespace byte of a binary file (b"" when there is none)."""
    while chunk := fh.read(BLOCK):
        stripped = chunk.lstrip()
        if stripped:
            return stripped[:1]
    return b""


class JsonAssets(_JsonSource):
    module = "json_assets"
    mapping_name = "JSON-assets"
    record_type = "assets"
    summary = "Objects of *.json files as assets"
    settings = (
        Setting(
            "directory",
            None,
            example="/some/path/to/files/",
            kind=Folder(must_exist=False),
            help="every `*.json` and `*.jsonl` file in this folder (sorted by name)",
        ),
        Setting(
            "sync_field",
            None,
            example="24DCF85294E411E38A52066B556BA4EE",
            kind=List(),
            help="the Oomnitza field id(s) that identify an asset, comma-separated (e.g. `SERIAL_NUMBER`)",
        ),
        SIZE_SETTING,
        *PROCESSED_SETTINGS,
    )


class JsonUsers(_JsonSource, UsersSource):
    module = "json_users"
    mapping_name = "JSON-users"
    record_type = "users"
    summary = "Objects of *.json files as users"
    settings = (
        Setting(
            "directory",
            None,
            example="/some/path/to/files/",
            kind=Folder(must_exist=False),
            help="every `*.json` and `*.jsonl` file in this folder (sorted by name)",
        ),
        Setting("default_role", "25", help="the Oomnitza role ID put into `PERMISSIONS_ID`"),
        Setting("default_position", "Employee", help="put into `POSITION` unless you map it"),
        Setting(
            "sync_field",
            None,
            example="USER",
            kind=List(),
            help="the Oomnitza field id(s) that identify a user, comma-separated (e.g. `USER`)",
        ),
        SIZE_SETTING,
        *PROCESSED_SETTINGS,
    )
