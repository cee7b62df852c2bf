"""The pipeline (sync.run_section) on its own: a scripted in-memory source and sink, no HTTP, no
clock. How pages become batches, where every record is counted, when reading stops. The same
behaviour through the CLI and real HTTP is covered by every source's tests (tests/sourcekit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from oomnitza_connector.config import Config, SectionConfig
from oomnitza_connector.converters import ConverterRegistry
from oomnitza_connector.errors import SinkError, SourceError
from oomnitza_connector.oomnitza.payload import RunInfo
from oomnitza_connector.redact import Redactor
from oomnitza_connector.sources.base import BadRecord, Page, Source
from oomnitza_connector.sync import Options, SectionResult, run_section

BUCKETS = ("sent", "filtered", "missing_required", "failed_convert", "failed_send")


class Scripted(Source):
    """Yields the pages it is given, then raises ``fail_after`` if set; counts the pages asked for."""

    module = "scripted"
    mapping_name = "Scripted"
    record_type = "assets"
    default_mappings = {"SERIAL": {"source": "serial"}}
    script: list[list[Any]] = []
    fail_after: Exception | None = None

    async def pages(self) -> AsyncIterator[Page]:
        self.asked = 0
        for page in self.script:
            self.asked += 1
            yield page
        if self.fail_after is not None:
            raise self.fail_after


class ScriptedSink:
    """Takes every batch, except those whose number is in ``refuse`` (1-based): SinkError."""

    def __init__(self, refuse: tuple[int, ...] = ()) -> None:
        self.refuse = refuse
        self.batches: list[list[dict[str, Any]]] = []
        self.finalized = False

    async def send(self, run: RunInfo, records: list[dict[str, Any]]) -> int | None:
        self.batches.append(list(records))
        if len(self.batches) in self.refuse:
            raise SinkError("Oomnitza refused the batch (scripted)")
        return None

    async def canceled(self, run: RunInfo) -> bool:
        return False

    async def mapping(self, name: str) -> dict[str, Any]:
        return {}

    async def locations(self) -> list[dict[str, Any]]:
        return []

    async def finalize(self, run: RunInfo) -> None:
        self.finalized = True

    def serials(self, *, refused: bool = False) -> list[str]:
        return [
            r["SERIAL"]
            for number, batch in enumerate(self.batches, 1)
            if (number in self.refuse) == refused
            for r in batch
        ]


def run(
    script: list[list[Any]],
    sink: ScriptedSink,
    *,
    batch_size: int = 100,
    record_count: int = 0,
    fail_after: Exception | None = None,
    recordfilter: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[SectionResult, Scripted]:
    section = SectionConfig(
        name="scripted", ini_path="config.ini", settings={"sync_field": "SERIAL"}, source_cls=Scripted
    )
    section.recordfilter = recordfilter
    oomnitza = SectionConfig(name="oomnitza", ini_path="config.ini", settings={})
    config = Config("config.ini", None, oomnitza, {"scripted": section}, [], ConverterRegistry(), Redactor())  # type: ignore[arg-type]
    source = Scripted(section)
    source.script, source.fail_after = script, fail_after
    options = Options(workers=0, batch_size=batch_size, record_count=record_count)
    result = asyncio.run(run_section(section, config, sink, options, source=source))  # type: ignore[arg-type]
    return result, source


def accounted(result: SectionResult) -> dict[str, int]:
    """The buckets, after checking that every record pulled is in exactly one of them."""
    counts = {bucket: result.counts[bucket] for bucket in BUCKETS}
    assert sum(counts.values()) == result.pulled, (result.pulled, counts)
    return counts


def records(*serials: str) -> list[dict[str, Any]]:
    return [{"serial": s} for s in serials]


def test_pages_are_sent_in_batches_of_batch_size_across_page_ends() -> None:
    sink = ScriptedSink()
    result, _ = run([records("1", "2", "3"), records("4", "5", "6", "7")], sink, batch_size=5)
    assert result.error is None and result.pulled == 7
    assert accounted(result)["sent"] == 7
    assert [len(b) for b in sink.batches] == [5, 2]  # a batch fills across the page end
    assert sink.serials() == ["1", "2", "3", "4", "5", "6", "7"] and sink.finalized


def test_each_record_lands_in_one_bucket() -> None:
    bad = BadRecord("not an object", "garbage")
    sink = ScriptedSink(refuse=(2,))
    result, _ = run(
        [[*records("1", "skip-me", "2"), bad], records("3", "4", "5")],
        sink,
        batch_size=2,
        recordfilter=lambda record: record["serial"] != "skip-me",
    )
    counts = accounted(result)
    assert result.pulled == 7
    assert counts["failed_convert"] == 1  # the BadRecord: counted, never sent
    assert counts["filtered"] == 1
    assert counts["failed_send"] == len(sink.serials(refused=True)) == 2  # the refused batch alone
    assert counts["sent"] == len(sink.serials()) == 3
    assert sorted(sink.serials() + sink.serials(refused=True)) == ["1", "2", "3", "4", "5"]


def test_record_count_stops_reading_pages() -> None:
    sink = ScriptedSink()
    pages = [records(*(f"{p}-{i}" for i in range(5))) for p in range(4)]
    result, source = run(pages, sink, record_count=7)
    assert result.pulled == 7 and accounted(result)["sent"] == 7
    assert source.asked == 2  # the third page was never asked for
    assert sink.serials()[-1] == "1-1"


def test_a_source_failing_mid_way_still_sends_what_it_read() -> None:
    sink = ScriptedSink()
    result, _ = run([records("1", "2")], sink, fail_after=SourceError("[scripted] the vendor went away"))
    assert result.error is not None and "the vendor went away" in result.error
    assert result.pulled == 2 and accounted(result)["sent"] == 2
    assert sink.serials() == ["1", "2"]
