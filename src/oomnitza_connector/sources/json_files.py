"""``[json_assets]`` and ``[json_users]``: every ``*.json`` and ``*.jsonl`` file of a directory.

A ``.json`` file holds one record (an object) or many (an array of objects); a ``.jsonl`` file holds
one object per line and is streamed. A file that is not valid JSON,
or an array item that is not an object, is counted as a failed record and the run goes on with the
next one, so one stray file does not stop the sync.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import ijson
import orjson

from ..settings import Folder, List, Setting
from .base import BadRecord, Record, Source, UsersSource
from .files import PROCESSED_SETTINGS, ProcessedFiles, discover, display, one_of_problems, processed_problems

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
UTF8_BOM = b"\xef\xbb\xbf"


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

    async def commit(self) -> None:
        self.processed.finish()

    async def pages(self) -> AsyncIterator[list[Record]]:
        files = discover(self.name, "", self.setting("directory"), (".json", ".jsonl"))
        if not files:
            log.info("[%s] no *.json or *.jsonl files in %s", self.name, self.setting("directory"))
        for path in files:
            name = display(path)
            read = _lines if path.name.lower().endswith(".jsonl") else _document
            try:
                for page in read(path, name):
                    yield page
            except OSError as exc:
                yield [_bad(f"{name}: cannot read: {exc.strerror}", file=name)]
                continue
            # A file with a bad record fails the run, and then commit() moves nothing.
            self.processed.mark(path)


def _document(path: Path, name: str) -> Iterator[list[Record]]:
    """A ``.json`` file: one object, or an array of objects streamed item by item (ijson), so a
    file of any size is never held whole. Items before a syntax error are still sent."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        if _wide(head.removeprefix(UTF8_BOM)):  # UTF-16/32: rare, small; parsed whole
            try:
                data = load_json(head + fh.read())
            except ValueError as exc:
                yield [_bad(f"{name}: not valid JSON: {exc}", file=name)]
                return
            yield from _records(name, data)
            return
        start = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0
        fh.seek(start)
        if _first_char(fh) != b"[":
            fh.seek(start)
            try:
                data = load_json(fh.read())
            except ValueError as exc:
                yield [_bad(f"{name}: not valid JSON: {exc}", file=name)]
                return
            yield from _records(name, data)
            return
        fh.seek(start)
        page: list[Record] = []
        count = 0
        try:
            for item in ijson.items(fh, "item", use_float=True):
                page.append(
                    item
                    if isinstance(item, dict)
                    else _bad(f"{name}: item #{count} is not an object", file=name, item=item)
                )
                count += 1
                if len(page) >= PAGE_SIZE:
                    yield page
                    page = []
        except ijson.JSONError as exc:
            page.append(_bad(f"{name}: not valid JSON after {count} item(s): {exc}", file=name))
        if page:
            yield page


def _lines(path: Path, name: str) -> Iterator[list[Record]]:
    """JSON Lines: one object per line, streamed; a bad line fails alone, with its number."""
    page: list[Record] = []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                item = load_json(line)
            except ValueError as exc:
                item = _bad(f"{name} line {number}: not valid JSON: {exc}", file=name, line=number)
            if not isinstance(item, dict | BadRecord):
                item = _bad(f"{name} line {number}: not an object", file=name, line=number)
            page.append(item)
            if len(page) >= PAGE_SIZE:
                yield page
                page = []
    if page:
        yield page


def _records(name: str, data: Any) -> Iterator[list[Record]]:
    """The records of a parsed document: an object, or a list of objects."""
    if isinstance(data, dict):
        yield [data]
    elif isinstance(data, list):
        for start in range(0, len(data), PAGE_SIZE):
            yield [
                item if isinstance(item, dict) else _bad(f"{name}: item #{i} is not an object", file=name, item=item)
                for i, item in enumerate(data[start : start + PAGE_SIZE], start=start)
            ]
    else:
        yield [_bad(f"{name}: does not contain a list or an object", file=name)]


def _first_char(fh: Any) -> bytes:
    """The first non-whitespace byte of a binary file (b"" when there is none)."""
    while chunk := fh.read(1):
        if not chunk.isspace():
            return chunk
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
        *PROCESSED_SETTINGS,
    )
