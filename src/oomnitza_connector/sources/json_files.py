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

import orjson

from ..settings import Setting
from .base import BadRecord, Record, Source, UsersSource
from .files import PROCESSED_SETTINGS, ProcessedFiles, check_one_of, check_processed, discover, display

log = logging.getLogger(__name__)

PAGE_SIZE = 1000


def load_json(data: bytes) -> Any:
    """orjson for speed; the standard library where it is needed for UTF-16/32 files."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    if data[:1] in (b"\xff", b"\xfe") or b"\x00" in data[:4]:
        return json.loads(data)  # detects UTF-16/32, as the seed's loader did
    return orjson.loads(data)


class _JsonSource(Source):
    def validate(self) -> None:
        check_one_of(self.name, "", self.setting("directory"), allow_filename=False)
        check_processed(self.name, self.setting("processed_action"), self.setting("processed_dir"))
        self.processed = ProcessedFiles(self.name, self.setting("processed_action"), self.setting("processed_dir"))

    async def commit(self) -> None:
        self.processed.finish()

    async def pages(self) -> AsyncIterator[list[Record]]:
        files = discover(self.name, "", self.setting("directory"), (".json", ".jsonl"))
        if not files:
            log.info("[%s] no *.json or *.jsonl files in %s", self.name, self.setting("directory"))
        for path in files:
            name = display(path)
            if path.name.lower().endswith(".jsonl"):
                try:
                    for page in self._lines(path, name):
                        yield page
                except OSError as exc:
                    yield [BadRecord(f"{name}: cannot read: {exc.strerror}", {"file": name})]  # type: ignore[list-item]
                    continue
                self.processed.mark(path)
                continue
            try:
                data = load_json(path.read_bytes())
            except OSError as exc:
                yield [BadRecord(f"{name}: cannot read: {exc.strerror}", {"file": name})]  # type: ignore[list-item]
                continue
            except ValueError as exc:
                yield [BadRecord(f"{name}: not valid JSON: {exc}", {"file": name})]  # type: ignore[list-item]
                continue
            if isinstance(data, dict):
                yield [data]
            elif isinstance(data, list):
                for start in range(0, len(data), PAGE_SIZE):
                    yield [item if isinstance(item, dict) else
                           BadRecord(f"{name}: item #{i} is not an object", {"file": name, "item": item})
                           for i, item in enumerate(data[start:start + PAGE_SIZE], start=start)]
            else:
                yield [BadRecord(f"{name}: does not contain a list or an object", {"file": name})]  # type: ignore[list-item]
                continue
            self.processed.mark(path)


    @staticmethod
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
                    item = BadRecord(f"{name} line {number}: not valid JSON: {exc}", {"file": name, "line": number})
                if not isinstance(item, dict | BadRecord):
                    item = BadRecord(f"{name} line {number}: not an object", {"file": name, "line": number})
                page.append(item)  # type: ignore[arg-type]
                if len(page) >= PAGE_SIZE:
                    yield page
                    page = []
        if page:
            yield page


class JsonAssets(_JsonSource):
    module = "json_assets"
    mapping_name = "JSON-assets"
    record_type = "assets"
    summary = "Objects of *.json files as assets"
    settings = (
        Setting("directory", None, example="/some/path/to/files/", help="a folder of *.json and *.jsonl files"),
        Setting("sync_field", None, example="24DCF85294E411E38A52066B556BA4EE",
                help="Oomnitza field id(s) identifying an asset"),
        *PROCESSED_SETTINGS,
    )


class JsonUsers(_JsonSource, UsersSource):
    module = "json_users"
    mapping_name = "JSON-users"
    record_type = "users"
    summary = "Objects of *.json files as users"
    settings = (
        Setting("directory", None, example="/some/path/to/files/", help="a folder of *.json and *.jsonl files"),
        Setting("default_role", "25", help="Oomnitza role id given to new users"),
        Setting("default_position", "Employee", help="position given to users"),
        Setting("sync_field", None, example="USER", help="Oomnitza field id(s) identifying a user"),
        *PROCESSED_SETTINGS,
    )
