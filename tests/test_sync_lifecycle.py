"""The pipeline's run-lifecycle mechanisms on their own, with an injected clock: the throttled cancel
check, the circuit breaker, stop requests and the accounting of batches cut off. The end-to-end
behaviour is covered through the CLI in test_sink_lifecycle.py and test_signals.py."""

from __future__ import annotations

import asyncio
from typing import Any

from oomnitza_connector.config import SectionConfig
from oomnitza_connector.errors import AuthError, SinkError
from oomnitza_connector.oomnitza.payload import RunInfo
from oomnitza_connector.sync import Limits, Options, RunStop, SectionResult, _Run


class StubSink:
    """Answers from a script: each send pops the next outcome (an int taken, or an exception)."""

    def __init__(self, outcomes: list[Any] | None = None, canceled_after: int | None = None) -> None:
        self.outcomes = list(outcomes or [])
        self.sent: list[int] = []
        self.questions = 0
        self.canceled_after = canceled_after
        self.hold: asyncio.Event | None = None  # set: sends wait for it (a hung Oomnitza)

    async def send(self, run: RunInfo, records: list[dict[str, Any]]) -> int | None:
        if self.hold is not None:
            await self.hold.wait()
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, Exception):
            raise outcome
        self.sent.append(len(records))
        return outcome

    async def canceled(self, run: RunInfo) -> bool:
        self.questions += 1
        return self.canceled_after is not None and self.questions >= self.canceled_after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_run(
    sink: StubSink,
    *,
    limits: Limits | None = None,
    workers: int = 0,
    stop: RunStop | None = None,
    clock: Clock | None = None,
) -> _Run:
    section = SectionConfig(name="csv_assets", ini_path="config.ini", settings={})
    info = RunInfo(section="csv_assets", connector_name="CSV_assets", data_type="assets", sync_field=["SERIAL"])
    result = SectionResult(section="csv_assets")
    options = Options(workers=workers, stop=stop)
    return _Run(section, sink, info, options, result, None, limits or Limits(), clock or Clock())  # type: ignore[arg-type]


BATCH = [{"SERIAL": str(i)} for i in range(10)]


def test_cancel_is_asked_at_most_once_per_interval() -> None:
    async def scenario() -> None:
        clock = Clock()
        sink = StubSink()
        run = make_run(sink, limits=Limits(cancel_check_interval=2.0), clock=clock)
        for step in (0.0, 0.5, 1.0, 1.9, 2.0, 2.1, 3.9, 4.0):
            clock.now = 100.0 + step
            await run.check_canceled()
        assert sink.questions == 2  # at +2.0 and +4.0: never at the start of a short run

    asyncio.run(scenario())


def test_a_cancel_halts_the_section_and_later_batches_are_not_sent() -> None:
    async def scenario() -> None:
        sink = StubSink(canceled_after=1)
        run = make_run(sink, limits=Limits(cancel_check_interval=0))
        await run.dispatch(list(BATCH))
        await run.drain()
        assert run.result.canceled and run.halted
        assert sink.sent == [] and run.result.counts["failed_send"] == 10 and run.unsent == 10

    asyncio.run(scenario())


def test_the_breaker_opens_after_consecutive_failures_only() -> None:
    async def scenario() -> None:
        failure = SinkError("503 after retries")
        sink = StubSink([failure, failure, None, failure, failure, failure, None])
        run = make_run(sink, limits=Limits(failed_batches=3))
        for _ in range(7):
            await run.dispatch(list(BATCH))
        await run.drain()
        counts = run.result.counts
        assert run.halted and run.result.sink_down
        assert "Oomnitza failed 3 batches in a row" in str(run.fatal)
        assert sink.sent == [10]  # a success in between reset the count
        assert counts["sent"] == 10 and counts["failed_send"] == 60  # 5 failed, the 7th never sent

    asyncio.run(scenario())


def test_a_refused_credential_stops_at_once() -> None:
    async def scenario() -> None:
        sink = StubSink([AuthError("Oomnitza rejected the api_token")])
        run = make_run(sink, limits=Limits(failed_batches=0))
        await run.dispatch(list(BATCH))
        await run.dispatch(list(BATCH))
        await run.drain()
        assert run.halted and not run.result.sink_down and isinstance(run.fatal, AuthError)
        assert run.result.counts["failed_send"] == 20

    asyncio.run(scenario())


def test_a_partial_answer_counts_only_what_was_taken() -> None:
    async def scenario() -> None:
        sink = StubSink([7])
        run = make_run(sink)
        await run.dispatch(list(BATCH))
        await run.drain()
        assert run.result.counts["sent"] == 7 and run.result.counts["failed_send"] == 3

    asyncio.run(scenario())


def test_a_stop_request_cuts_off_hung_uploads_after_the_grace() -> None:
    async def scenario() -> None:
        stop = RunStop()
        sink = StubSink()
        sink.hold = asyncio.Event()  # never set: Oomnitza does not answer
        run = make_run(sink, limits=Limits(stop_grace=0.05), workers=2, stop=stop)
        await run.dispatch(list(BATCH))
        await run.dispatch(list(BATCH))
        waiting = asyncio.ensure_future(run.dispatch(list(BATCH)))  # no free slot: waits
        await asyncio.sleep(0)
        stop.request("terminated (SIGTERM)", 15)
        await waiting
        await run.drain()
        run.close()
        counts = run.result.counts
        assert counts["sent"] == 0 and counts["failed_send"] == 30 and run.unsent == 10
        assert run.why_halted() == "the run was terminated (SIGTERM)"

    asyncio.run(scenario())


def test_run_stop_reaches_sections_that_start_later() -> None:
    async def scenario() -> None:
        stop = RunStop()
        stop.request("interrupted (SIGINT)", 2)
        run = make_run(StubSink(), stop=stop)
        assert run.halted
        await run.dispatch(list(BATCH))
        assert run.result.counts["failed_send"] == 10

    asyncio.run(scenario())


# -- the RunContext: what a source is given, and all it is given ----------------------------------------


def test_a_run_context_is_read_only() -> None:
    import dataclasses

    import pytest

    from oomnitza_connector.sources.base import RunContext

    ctx = RunContext(section="x", mapping={"A": {"source": "a.b"}, "B": {"hardcoded": 1}}, workers=3)
    assert ctx.mapped_sources() == ["a.b"] and ctx.workers == 3 and not ctx.testmode
    with pytest.raises(TypeError):
        ctx.mapping["C"] = {"source": "c"}  # type: ignore[index]
    with pytest.raises(TypeError):
        ctx.mapping["A"]["source"] = "z"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.workers = 9  # type: ignore[misc]
    assert asyncio.run(ctx.delivered()) is False  # outside a run nothing was delivered


def test_run_section_hands_the_source_its_context_and_writes_nothing_into_it() -> None:
    from oomnitza_connector.config import Config
    from oomnitza_connector.converters import ConverterRegistry
    from oomnitza_connector.redact import Redactor
    from oomnitza_connector.sources.base import Source
    from oomnitza_connector.sync import run_section

    class Listing(Source):
        module = "listing"
        mapping_name = "Listing"
        record_type = "assets"
        default_mappings = {"SERIAL": {"source": "serial"}}

        async def pages(self) -> Any:
            ctx = self.ctx
            self.seen = {"mapping": dict(ctx.mapping), "workers": ctx.workers, "redactor": ctx.redactor}
            yield [{"serial": "1", "note": "first"}]
            self.seen["delivered after page 1"] = await ctx.delivered()  # a checkpoint: flushed and sent
            yield [{"serial": "2", "note": "second"}]

    class MappingSink(StubSink):
        async def mapping(self, name: str) -> dict[str, Any]:
            return {"note": "NOTE"}  # Oomnitza's server-side mapping for "Listing"

        async def locations(self) -> list[dict[str, Any]]:
            return []

        async def finalize(self, run: RunInfo) -> None:
            self.finalized = run.portion

    redactor = Redactor()
    oomnitza = SectionConfig(name="oomnitza", ini_path="config.ini", settings={})
    section = SectionConfig(
        name="listing", ini_path="config.ini", settings={"sync_field": "SERIAL"}, source_cls=Listing
    )
    config = Config("config.ini", None, oomnitza, {"listing": section}, [], ConverterRegistry(), redactor)  # type: ignore[arg-type]
    source = Listing(section)
    before = set(vars(source))
    sink = MappingSink()
    result = asyncio.run(run_section(section, config, sink, Options(workers=3), source=source))  # type: ignore[arg-type]
    assert result.error is None and result.counts["sent"] == 2 and sink.sent == [1, 1]
    assert source.seen["mapping"] == {"SERIAL": {"source": "serial"}, "NOTE": {"source": "note"}}
    assert source.seen["workers"] == 3 and source.seen["redactor"] is redactor
    assert source.seen["delivered after page 1"] is True
    assert set(vars(source)) - before == {"_ctx", "seen"}  # the pipeline set nothing else on it
