"""Where mapped records go: the Oomnitza REST API, the embedded local store, or (``--testmode``)
standard output. ``--save-data`` wraps any of them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol, TextIO

from .. import redact
from ..config import SectionConfig
from ..http import DEFAULT_POLICY, RetryPolicy
from .payload import RunInfo, encode


class Sink(Protocol):
    """Where a run's records go. ``send`` returns how many records the receiver took (None: all of
    them) and raises when it took none. The Oomnitza API also offers ``canceled(run)`` (was the sync
    canceled in the web UI?) and ``send_error(run, record, message, fatal=)``; the pipeline uses
    them where a sink has them."""

    async def login(self) -> None: ...
    async def mapping(self, name: str) -> dict[str, Any]: ...
    async def locations(self) -> list[dict[str, Any]]: ...
    async def send(self, run: RunInfo, records: list[dict[str, Any]]) -> int | None: ...
    async def finalize(self, run: RunInfo) -> None: ...
    async def aclose(self) -> None: ...


class TestModeSink:
    """Prints each payload as JSON and sends nothing: no login, no upload, no finalize.

    With an ``api_token`` (no login needed) it still *reads* server-side mappings and locations, so
    the printed payloads are what a real run would send.
    """

    __test__ = False  # not a pytest class

    def __init__(self, reader: Sink | None, out: TextIO | None = None) -> None:
        self.reader = reader
        self.out = out or sys.stdout

    async def login(self) -> None:
        return None

    async def mapping(self, name: str) -> dict[str, Any]:
        return await self.reader.mapping(name) if self.reader else {}

    async def locations(self) -> list[dict[str, Any]]:
        return await self.reader.locations() if self.reader else []

    async def send(self, run: RunInfo, records: list[dict[str, Any]]) -> int | None:
        payload = {**run.envelope(), "records": records}
        self.out.write(redact.scrub(encode(payload, pretty=True).decode()) + "\n")
        self.out.flush()
        return None

    async def finalize(self, run: RunInfo) -> None:
        return None

    async def aclose(self) -> None:
        if self.reader:
            await self.reader.aclose()


class SaveData:
    """``--save-data``: the raw source records and the payloads, one JSON document per line.

    Files: ``saved_data/<section>.source.jsonl`` and ``saved_data/<section>.payloads.jsonl``, secrets
    scrubbed. JSON Lines keeps memory flat and the files greppable.
    """

    def __init__(self, folder: Path, section: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in section)
        self.source = open(folder / f"{safe}.source.jsonl", "w", encoding="utf-8")
        self.payloads = open(folder / f"{safe}.payloads.jsonl", "w", encoding="utf-8")

    def record(self, raw: Any) -> None:
        self.source.write(redact.scrub(encode(raw).decode()) + "\n")

    def payload(self, run: RunInfo, records: list[dict[str, Any]]) -> None:
        self.payloads.write(redact.scrub(encode({**run.envelope(), "records": records}).decode()) + "\n")

    def close(self) -> None:
        self.source.close()
        self.payloads.close()


def make_sink(
    oomnitza: SectionConfig,
    *,
    testmode: bool,
    workers: int,
    policy: RetryPolicy = DEFAULT_POLICY,
    out: TextIO | None = None,
) -> Sink:
    url = oomnitza.settings.get("url", "")
    if url.startswith("sqlite:"):
        from .local_store import LocalStoreSink

        store: Sink = LocalStoreSink(url)
        return TestModeSink(None, out) if testmode else store
    from .client import OomnitzaClient

    client = OomnitzaClient(oomnitza, workers=workers, policy=policy)
    if testmode:
        return TestModeSink(client if oomnitza.settings.get("api_token") else None, out)
    return client
