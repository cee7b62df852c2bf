"""Where mapped records go: the Oomnitza REST API, the embedded local store, or (``--testmode``)
standard output. ``--save-data`` wraps any of them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Any, Protocol, TextIO

from .. import redact
from ..config import SectionConfig
from ..diskio import describe_os_error, open_private, private_dir
from ..errors import DiskError
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
    scrubbed. JSON Lines keeps memory flat and the files greppable. They hold raw records, so they
    are created private (0600; the folder 0700 when we create it).

    Saving never stops the sync: when the disk is full or read-only, saving stops, ``error`` holds
    one line naming the file, and the run reports it (and exits non-zero) after finalizing.
    """

    def __init__(self, folder: Path, section: str) -> None:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in section)
        self.error: str | None = None
        self._files: list[tuple[Path, IO[str]]] = []
        try:
            private_dir(folder)
            self._open(folder / f"{safe}.source.jsonl")  # index 0: record()
            self._open(folder / f"{safe}.payloads.jsonl")  # index 1: payload()
        except DiskError as exc:
            self._stop(str(exc))

    def _open(self, path: Path) -> None:
        self._files.append((path, os.fdopen(open_private(path), "w", encoding="utf-8")))

    def record(self, raw: Any) -> None:
        self._write(0, redact.scrub(encode(raw).decode()) + "\n")

    def payload(self, run: RunInfo, records: list[dict[str, Any]]) -> None:
        self._write(1, redact.scrub(encode({**run.envelope(), "records": records}).decode()) + "\n")

    def _write(self, index: int, line: str) -> None:
        if self.error is not None:
            return
        path, fh = self._files[index]
        try:
            fh.write(line)
        except OSError as exc:
            self._stop(describe_os_error(exc, path))

    def _stop(self, message: str) -> None:
        """Remember the first problem and close every file (what is written so far stays)."""
        self.error = self.error or f"--save-data: {message}"
        self.close()

    def close(self) -> None:
        files, self._files = self._files, []
        for path, fh in files:
            try:
                fh.close()  # flushes: a full disk may show only here
            except OSError as exc:
                self.error = self.error or f"--save-data: {describe_os_error(exc, path)}"


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
