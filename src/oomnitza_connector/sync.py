"""The pipeline: source → record filter → mapping → batcher → sink, with every record accounted for.

Memory stays flat: the source is read page by page, and at most ``workers`` batches are in flight
while the next one fills (the semaphore is the backpressure). The portion is finalized only after
every in-flight send has completed, and always (also after a failure), so sessions are never left
open in Oomnitza.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import redact
from .config import Config, SectionConfig
from .errors import AuthError, ConnectorError, DiskError, RecordError, RecordsRejected
from .mapping import Mapper, merge_mappings
from .oomnitza.payload import RunInfo
from .oomnitza.sinks import SaveData, Sink
from .sources.base import BadRecord, Source

log = logging.getLogger(__name__)

BUCKETS = ("sent", "filtered", "missing_required", "failed_convert", "failed_send")
BUCKET_TITLES = {
    "pulled": "pulled",
    "sent": "sent",
    "filtered": "filtered",
    "missing_required": "missing required",
    "failed_convert": "failed convert",
    "failed_send": "failed send",
}
MAX_RECORD_WARNINGS = 20  # per section; the rest are counted, not each logged


@dataclass
class Options:
    workers: int = 2
    batch_size: int = 100
    record_count: int = 0  # 0 = all
    testmode: bool = False
    save_data: Path | None = None


@dataclass
class SectionResult:
    section: str
    data_type: str = ""
    portion: str = ""
    pulled: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    error: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.counts["missing_required"] + self.counts["failed_convert"] + self.counts["failed_send"]

    @property
    def ok(self) -> bool:
        return self.error is None and self.counts["failed_convert"] == 0 and self.counts["failed_send"] == 0

    def balanced(self) -> bool:
        return sum(self.counts.values()) == self.pulled


async def build_mapper(
    section: SectionConfig, source_cls: type[Source], source: Source, sink: Sink, config: Config
) -> Mapper:
    server: dict[str, Any] = {}
    if section.flag("use_server_map"):
        server = await sink.mapping(source.connector_name())
    specs = merge_mappings(
        defaults=source_cls.default_mappings,
        server=server,
        ini=section.mappings,
        default_converters=source_cls.default_converters,
        extras=source.extra_mappings(),
    )
    source.mapping_specs = specs
    return Mapper(specs, section, config.converters)


class _Run:
    """State of one section's run (kept off the hot loop's locals for readability)."""

    def __init__(
        self,
        section: SectionConfig,
        sink: Sink,
        run: RunInfo,
        options: Options,
        result: SectionResult,
        saver: SaveData | None,
    ) -> None:
        self.section, self.sink, self.info, self.options = section, sink, run, options
        self.result, self.saver = result, saver
        self.slots = asyncio.Semaphore(max(1, options.workers))
        self.tasks: set[asyncio.Task[None]] = set()
        self.fatal: ConnectorError | None = None
        self.warnings = 0

    def record_problem(self, bucket: str, message: str, index: int) -> None:
        self.result.counts[bucket] += 1
        self.warn(f"record {index}: {message}")

    def warn(self, message: str) -> None:
        self.warnings += 1
        if self.warnings <= MAX_RECORD_WARNINGS:
            log.warning("[%s] %s", self.section.name, message)
        elif self.warnings == MAX_RECORD_WARNINGS + 1:
            log.warning("[%s] more records have problems; they are counted in the summary", self.section.name)

    async def dispatch(self, batch: list[dict[str, Any]]) -> None:
        if self.saver:
            self.saver.payload(self.info, batch)
        if self.options.workers <= 0:
            await self._send(batch)
            return
        await self.slots.acquire()
        task = asyncio.create_task(self._send(batch, release=True))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, batch: list[dict[str, Any]], release: bool = False) -> None:
        try:
            if self.fatal is not None:
                raise self.fatal
            await self.sink.send(self.info, batch)
            self.result.counts["sent"] += len(batch)
        except RecordsRejected as exc:  # the sink stored the others
            self.result.counts["sent"] += len(batch) - exc.rejected
            self.result.counts["failed_send"] += exc.rejected
            self.warn(str(exc))
        except ConnectorError as exc:
            self.result.counts["failed_send"] += len(batch)
            if self.fatal is None and not isinstance(exc, DiskError):  # that one is the run's error line
                log.error("[%s] %d record(s) not sent: %s", self.section.name, len(batch), exc)
            if isinstance(exc, (AuthError, DiskError)) and self.fatal is None:
                self.fatal = exc  # every later batch would be refused too: stop reading
        except Exception as exc:  # a bug must not lose the accounting of the batch
            self.result.counts["failed_send"] += len(batch)
            log.exception("[%s] %d record(s) not sent: %s", self.section.name, len(batch), exc)
        finally:
            if release:
                self.slots.release()

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


async def run_section(
    section: SectionConfig, config: Config, sink: Sink, options: Options, source: Source | None = None
) -> SectionResult:
    """Sync one section. Never raises for user-fixable problems: they end up in ``result.error``.
    ``source`` replaces the section's own (the webhook server syncs only the devices it was told of)."""
    started = time.monotonic()
    result = SectionResult(section=section.name)
    assert section.source_cls is not None
    source_cls = section.source_cls
    saver: SaveData | None = None
    if source is None:
        try:
            source = source_cls(section)
        except ConnectorError as exc:
            result.error = str(exc)
            return result
    source.workers = options.workers
    run = RunInfo(
        section=section.name,
        connector_name=source.connector_name(),
        data_type=source.record_type,
        sync_field=section.sync_fields,
        insert_only=section.insert_only,
        update_only=section.update_only,
    )
    result.data_type, result.portion = run.data_type, run.portion
    state: _Run | None = None
    finished = False  # the source was read to the end it was asked for, without an exception
    try:
        mapper = await build_mapper(section, source_cls, source, sink, config)
        if config.converters.uses_location:
            config.converters.set_locations(await sink.locations())
        if options.save_data:
            saver = SaveData(options.save_data, section.name)
        state = _Run(section, sink, run, options, result, saver)
        await _pump(source, mapper, section, state, options)
        finished = True
    except ConnectorError as exc:
        result.error = str(exc)
    except asyncio.CancelledError:
        result.error = "interrupted"
        raise
    finally:
        if state is not None:
            await state.drain()
            if state.fatal is not None and result.error is None:
                result.error = str(state.fatal)
        await source.aclose()
        if saver:
            saver.close()
            if saver.error and result.error is None:
                result.error = saver.error
        if state is not None:
            await _finalize(sink, run, result)
            # Only a run that ended normally with every record delivered may move or delete its input.
            if finished and result.ok and not options.testmode:
                await _commit(source, result)
        result.seconds = time.monotonic() - started
        if result.error:
            result.error = redact.scrub(result.error)
    return result


async def _finalize(sink: Sink, run: RunInfo, result: SectionResult) -> None:
    try:
        await sink.finalize(run)
    except ConnectorError as exc:
        log.error("[%s] could not finalize the sync session: %s", run.section, exc)
        if result.error is None:
            result.error = f"could not finalize the sync session: {exc}"


async def _commit(source: Source, result: SectionResult) -> None:
    try:
        await source.commit()
    except ConnectorError as exc:
        result.error = f"after the upload: {exc}"


async def _pump(source: Source, mapper: Mapper, section: SectionConfig, state: _Run, options: Options) -> None:
    result = state.result
    counts = result.counts
    limit = options.record_count
    batch_size = max(1, options.batch_size)
    record_filter = section.recordfilter
    convert = mapper.convert
    saver = state.saver
    batch: list[dict[str, Any]] = []
    pulled = 0
    done = False

    async def delivered() -> bool:
        """Source.delivered: flush the partial batch, drain the sends, report whether all arrived."""
        nonlocal batch
        if batch and state.fatal is None:
            await state.dispatch(batch)
            batch = []
        await state.drain()
        failed = counts["failed_convert"] or counts["failed_send"] or batch
        return not options.testmode and state.fatal is None and not failed

    source.delivered = delivered
    pages = source.pages()
    try:
        async for page in pages:
            for raw in page:
                if limit and pulled >= limit:
                    done = True
                    break
                pulled += 1
                result.pulled = pulled
                if saver:
                    saver.record(raw.raw if type(raw) is BadRecord else raw)
                if type(raw) is BadRecord:
                    state.record_problem("failed_convert", raw.message, pulled)
                    continue
                try:
                    if record_filter is not None and not record_filter(raw):
                        counts["filtered"] += 1
                        continue
                    batch.append(convert(raw))
                except RecordError as exc:
                    state.record_problem(exc.bucket, str(exc), pulled)
                    continue
                if len(batch) >= batch_size:
                    await state.dispatch(batch)
                    batch = []
                    if state.fatal is not None:
                        done = True
                        break
            if done:
                break
            await asyncio.sleep(0)  # let in-flight sends progress between pages
    finally:
        # Records already mapped are sent (or counted) even when the source failed mid-way.
        if batch and state.fatal is None:
            await state.dispatch(batch)
        elif batch:
            counts["failed_send"] += len(batch)
        await pages.aclose()  # type: ignore[attr-defined]
