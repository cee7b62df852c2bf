"""The pipeline: source → record filter → mapping → batcher → sink, with every record accounted for.

Memory stays flat: the source is read page by page, and at most ``workers`` batches are in flight
while the next one fills (the semaphore is the backpressure). The portion is finalized only after
every in-flight send has completed, and always (also after a failure), so sessions are never left
open in Oomnitza. A run that failed is reported to Oomnitza (a bulk error payload) before the
finalize, so the session is not mistaken for a complete sync.

Every mode runs this one pipeline: ``upload`` (sections of config.ini), the webhook server (the
devices Jamf told us of) and managed mode (a cloud config is a ``managed.engine.ManagedSource``
with a mapper of its own). The pipeline builds a ``RunContext`` (the merged mapping, the worker
budget, the options, the redactor, a delivery checkpoint) and hands it to the source; nothing flows
back from the source but records.

A section stops early, sending nothing new, when:
- the run is stopped (Ctrl-C, SIGTERM): in-flight sends get a short grace, then are cancelled;
- someone canceled the sync in Oomnitza's web UI (checked between pages and batches, throttled);
- Oomnitza failed several batches in a row (the circuit breaker) or rejected the credentials.
Records read but not sent then count as "failed send"; the summary says why the run stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import ledger, redact
from .changes import ChangeReport, Tracker, Verdicts, open_tracker
from .config import Config, SectionConfig
from .errors import (
    AuthError,
    ConfigError,
    ConnectorError,
    DiskError,
    RecordError,
    RecordsRejected,
    ReportedError,
)
from .mapping import Mapper, RecordMapper, incomplete_fields, merge_mappings
from .oomnitza.payload import EncodedRecords, RunInfo, encode
from .oomnitza.sinks import SaveData, Sink
from .sources.base import BadRecord, RunContext, Source

log = logging.getLogger(__name__)

BUCKETS = ("sent", "unchanged", "filtered", "missing_required", "failed_convert", "failed_send")
BUCKET_TITLES = {
    "pulled": "pulled",
    "sent": "sent",
    "unchanged": "unchanged",
    "filtered": "filtered",
    "missing_required": "missing required",
    "failed_convert": "failed convert",
    "failed_send": "failed send",
}
MAX_RECORD_WARNINGS = 20  # per section; the rest are counted, not each logged


class RunStop:
    """A request to stop the whole run early (a signal). Sections in progress stop reading, send
    nothing new, give in-flight sends ``grace`` seconds, finalize and report what was sent."""

    def __init__(self) -> None:
        self.reason: str | None = None  # e.g. "interrupted (SIGINT)"
        self.signum: int | None = None
        self._listeners: set[asyncio.Event] = set()

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str, signum: int | None = None) -> None:
        if self.reason is None:
            self.reason, self.signum = reason, signum
        for event in list(self._listeners):
            event.set()

    def watch(self, event: asyncio.Event) -> None:
        self._listeners.add(event)
        if self.requested:
            event.set()

    def unwatch(self, event: asyncio.Event) -> None:
        self._listeners.discard(event)


def signal_exit_code(signum: int | None) -> int:
    """The exit code of a run stopped by ``signum``, as shells report it: 143 for SIGTERM, else 130."""
    return 128 + signal.SIGTERM if signum == signal.SIGTERM else 128 + signal.SIGINT


@contextlib.contextmanager
def stop_on_signals(on_stop: Callable[[int], None], err: TextIO) -> Iterator[None]:
    """SIGINT and SIGTERM ask the running loop to stop (``on_stop``); a second one exits at once.
    Where the loop cannot take signals (Windows), Ctrl-C stays a KeyboardInterrupt."""
    loop = asyncio.get_running_loop()
    seen: list[int] = []

    def say(text: str) -> None:
        with contextlib.suppress(Exception):  # a closed stderr (its reader gone) must not lose the signal
            print(text, file=err, flush=True)

    def handle(signum: int) -> None:
        if seen:  # the second signal: no more waiting
            say(f"{signal.Signals(signum).name} again: exiting now.")
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            os._exit(signal_exit_code(signum))
        seen.append(signum)
        on_stop(signum)
        say(f"{signal.Signals(signum).name} received: stopping (send it again to exit at once).")

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, handle, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def stop_reason(signum: int) -> str:
    word = "interrupted" if signum == signal.SIGINT else "terminated"
    return f"{word} ({signal.Signals(signum).name})"


@dataclass
class Options:
    workers: int = 2
    batch_size: int = 100
    record_count: int = 0  # 0 = all
    testmode: bool = False
    save_data: Path | None = None
    stop: RunStop | None = None  # set by the CLI, which turns signals into stop requests
    full: bool = False  # --full: send every record, changed or not
    plan: bool = False  # `plan`: read and compare with the sync state only (with testmode: nothing is sent)
    plan_limit: int = 20  # `plan`: records listed per kind


@dataclass(frozen=True)
class Limits:
    """The run-lifecycle settings of ``[oomnitza]`` (validated when the config is loaded)."""

    failed_batches: int = 3  # consecutive failed batches that stop the sending; 0 = never
    cancel_check_interval: float = 2.0  # seconds between "was it canceled?" questions
    stop_grace: float = 5.0  # seconds in-flight sends get after a stop request

    @classmethod
    def of(cls, oomnitza: SectionConfig) -> Limits:
        def number(key: str, default: float) -> float:
            try:
                return float(oomnitza.settings.get(key) or default)
            except ValueError:
                return default

        return cls(
            failed_batches=int(number("stop_after_failed_batches", cls.failed_batches)),
            cancel_check_interval=number("cancel_check_interval", cls.cancel_check_interval),
            stop_grace=number("stop_grace", cls.stop_grace),
        )


@dataclass
class SectionResult:
    section: str
    data_type: str = ""
    portion: str = ""
    pulled: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    error: str | None = None
    report: str | None = None  # what Oomnitza is told about the failed run, when not "The run failed: <error>"
    seconds: float = 0.0
    canceled: bool = False  # canceled in Oomnitza's web UI
    stopped: str | None = None  # the run was stopped by a signal: why
    sink_down: bool = False  # Oomnitza stopped taking batches: later sections need not try
    not_run: bool = False  # skipped because the run stopped before it
    changes: ChangeReport | None = None  # change-aware sync (None: it did not apply)

    @property
    def failed(self) -> int:
        return self.counts["missing_required"] + self.counts["failed_convert"] + self.counts["failed_send"]

    @property
    def ok(self) -> bool:
        return self.error is None and self.counts["failed_convert"] == 0 and self.counts["failed_send"] == 0

    @property
    def status(self) -> str:
        """The summary's one word for this section."""
        if self.not_run:
            return "not run"
        if self.error:
            return "error"
        if self.stopped:
            return self.stopped.split(" ")[0]  # "interrupted" (SIGINT) or "terminated" (SIGTERM)
        if self.canceled:
            return "canceled"
        return "ok" if self.ok else "records failed"

    def balanced(self) -> bool:
        return sum(self.counts.values()) == self.pulled


async def build_mapper(section: SectionConfig, source: Source, sink: Sink, config: Config) -> Mapper:
    """The section's merged mapping (defaults < Oomnitza's server-side mapping < INI), compiled."""
    server: dict[str, Any] = {}
    if section.flag("use_server_map"):
        server = await sink.mapping(source.connector_name())
    specs = merge_mappings(
        defaults=source.default_mappings,
        server=server,
        ini=section.mappings,
        default_converters=source.default_converters,
        extras=source.extra_mappings(),
    )
    missing = incomplete_fields(specs)
    if missing:  # an INI line with only a converter/required, for a field the server mapping lacks
        names = ", ".join(f"mapping.{name}" for name in missing)
        raise ConfigError(
            f'{section.ini_path}: [{section.name}] {names}: no "source", "setting" or "hardcoded" '
            f"in the INI, and the server mapping {source.connector_name()!r} gives none either; "
            "add one to the line"
        )
    return Mapper(specs, section, config.converters)


async def mapper_of(source: Source, section: SectionConfig, sink: Sink, config: Config) -> RecordMapper:
    """The source's own mapper (managed integrations), else the section's merged mapping."""
    own = await source.mapper(sink)
    return own if own is not None else await build_mapper(section, source, sink, config)


async def show_mappings(config: Config, names: list[str], sink: Sink, out: TextIO) -> None:
    """``--show-mappings``: the merged mapping of each section, secrets masked."""
    for name in names:
        section = config.sections[name]
        assert section.source_cls is not None
        source = section.source_cls(section)
        mapper = await mapper_of(source, section, sink, config)
        print(f"{name} Mappings", file=out)
        print(encode(config.redactor.scrub_obj(dict(mapper.specs)), pretty=True).decode(), file=out)


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
        limits: Limits,
        clock: Callable[[], float] = time.monotonic,
        *,
        cloud_reports: bool = False,
    ) -> None:
        self.section, self.sink, self.info, self.options = section, sink, run, options
        self.result, self.saver, self.limits, self.clock = result, saver, limits, clock
        self.cloud_reports = cloud_reports  # failed records are reported to Oomnitza one by one
        self.slots = asyncio.Semaphore(max(1, options.workers))
        self.tasks: set[asyncio.Task[None]] = set()
        self.batch: list[dict[str, Any]] = []  # mapped records waiting for a full batch
        # What change-aware sync said of the batch's records (parts of its classify answers, in
        # order); they may cover only the first records (the state failed mid-run) or none, and
        # never a record without a sync key (add_classified batches those apart).
        self.verdicts: list[Verdicts] = []
        # Records without a sync-field value (always sent, never remembered) are batched apart: when
        # Oomnitza refuses them, records batched with them would not be remembered either.
        self.unkeyed: list[dict[str, Any]] = []
        self.tracker: Tracker | None = None
        self.started = False  # the source is being read (a session may be open in Oomnitza)
        self.fatal: ConnectorError | None = None  # the sink refused us (credentials) or stopped answering
        self.warnings = 0
        self.failed_in_a_row = 0
        self.unsent = 0  # read but not sent because the section stopped early
        self.halt = asyncio.Event()  # set when the section must stop reading and sending
        self.stop = options.stop
        if self.stop is not None:
            self.stop.watch(self.halt)
        self._ask_canceled = getattr(sink, "canceled", None)  # only the Oomnitza API can be asked
        self._last_cancel_check = clock()

    def close(self) -> None:
        if self.stop is not None:
            self.stop.unwatch(self.halt)

    @property
    def halted(self) -> bool:
        return self.halt.is_set()

    def why_halted(self) -> str:
        if self.stop is not None and self.stop.reason:
            return f"the run was {self.stop.reason}"
        if self.result.canceled:
            return "the sync was canceled in Oomnitza"
        if self.result.sink_down:
            return f"sending stopped after {self.failed_in_a_row} failed batches in a row"
        if isinstance(self.fatal, DiskError):
            return "the disk is full or read-only (see the error)"  # the error line names the file once
        return str(self.fatal) if self.fatal else "the section stopped"

    async def record_failed(self, bucket: str, message: str, index: int, raw: Any) -> None:
        """Count a record that cannot be sent; a cloud-managed integration also reports it to
        Oomnitza (an error payload holding the raw record, managed-mode.md §8.2)."""
        self.result.counts[bucket] += 1
        self.warn(f"record {index}: {message}")
        report = getattr(self.sink, "send_error", None)
        if not self.cloud_reports or report is None or self.halted:
            return
        record = raw if isinstance(raw, dict) else {"item": raw}
        message = redact.scrub(message)
        if not await self._until_halted(self.slots.acquire()):
            return
        self._start(self._report(report, record, message))

    async def _report(self, report: Callable[..., Any], record: dict[str, Any], message: str) -> None:
        try:
            await report(self.info, record, message)
        except ConnectorError as exc:
            log.error("[%s] could not report a failed record to Oomnitza: %s", self.section.name, exc)
        except Exception as exc:  # a bug must not stop the run
            log.exception("[%s] could not report a failed record to Oomnitza: %s", self.section.name, exc)
        finally:
            self.slots.release()

    def _start(self, job: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def add(self, records: Iterable[dict[str, Any]]) -> None:
        """Mapped records, in order: batched, each batch sent once it is full. (One call per page:
        awaiting a coroutine per record cost more than the batching itself.)"""
        size = max(1, self.options.batch_size)
        for record in records:
            self.batch.append(record)
            if len(self.batch) >= size:
                await self._dispatch_batch()

    async def add_classified(self, records: list[dict[str, Any]], verdicts: Verdicts) -> None:
        """Records change-aware sync classified, all to be sent: batched with their verdicts (whole
        slices of them, no work per record), those without a sync key apart."""
        size = max(1, self.options.batch_size)
        if ledger.UNKEYED in verdicts.mix:
            keyed = [key is not None for key in verdicts.keys]
            for record in itertools.compress(records, [not k for k in keyed]):
                self.unkeyed.append(record)
                if len(self.unkeyed) >= size:
                    batch, self.unkeyed = self.unkeyed, []
                    await self.dispatch(batch)
            records, verdicts = list(itertools.compress(records, keyed)), verdicts.select(keyed)
        start, count = 0, len(records)
        while start < count:
            take = min(size - len(self.batch), count - start)
            self.batch.extend(records[start : start + take])
            self.verdicts.append(verdicts if take == count else verdicts[start : start + take])
            start += take
            if len(self.batch) >= size:
                await self._dispatch_batch()

    async def _dispatch_batch(self) -> None:
        batch, self.batch = self.batch, []
        verdicts, self.verdicts = self.verdicts, []
        await self.dispatch(batch, verdicts)

    async def flush(self) -> None:
        """Send the partial batches (or count them as not sent when the section has halted)."""
        if self.batch:
            await self._dispatch_batch()
        if self.unkeyed:
            batch, self.unkeyed = self.unkeyed, []
            await self.dispatch(batch)

    async def delivered(self) -> bool:
        """RunContext.delivered: flush the partial batch, drain the sends, say whether all arrived."""
        if not self.halted:
            await self.flush()
        await self.drain()
        counts = self.result.counts
        failed = counts["failed_convert"] or counts["failed_send"] or self.batch or self.unkeyed
        return not self.options.testmode and not self.halted and self.fatal is None and not failed

    def warn(self, message: str) -> None:
        self.warnings += 1
        if self.warnings <= MAX_RECORD_WARNINGS:
            log.warning("[%s] %s", self.section.name, message)
        elif self.warnings == MAX_RECORD_WARNINGS + 1:
            log.warning("[%s] more records have problems; they are counted in the summary", self.section.name)

    def not_sent(self, count: int, retiring: list[Any] | None = None) -> None:
        """Records read but not sent because the section stopped."""
        if retiring is not None:  # retire updates are no records read: counted apart
            assert self.tracker is not None
            self.tracker.retired(retiring, confirmed=False)
            return
        self.result.counts["failed_send"] += count
        self.unsent += count

    async def check_canceled(self) -> None:
        """Ask Oomnitza whether the sync was canceled, at most once per ``cancel_check_interval``."""
        if self._ask_canceled is None or self.halted:
            return
        now = self.clock()
        if now - self._last_cancel_check < self.limits.cancel_check_interval:
            return
        self._last_cancel_check = now
        if await self._ask_canceled(self.info):
            log.warning(
                "[%s] the sync was canceled in Oomnitza: reading stops, nothing more is sent", self.info.section
            )
            self.result.canceled = True
            self.halt.set()

    async def dispatch(
        self,
        batch: list[dict[str, Any]],
        verdicts: list[Verdicts] | None = None,
        retiring: list[Any] | None = None,
    ) -> None:
        """Send one batch. ``verdicts`` (change-aware sync) are marked delivered once Oomnitza
        confirmed the whole batch; ``retiring``: the batch holds the retire updates of these records."""
        await self.check_canceled()
        if self.halted:
            self.not_sent(len(batch), retiring)
            return
        if self.saver:
            self.saver.payload(self.info, batch)
        if not await self._until_halted(self.slots.acquire()):
            self.not_sent(len(batch), retiring)
            return
        if self.halted:  # the slot and the halt came at once: send nothing new
            self.slots.release()
            self.not_sent(len(batch), retiring)
            return
        task = self._start(self._send(batch, verdicts, retiring))
        if self.options.workers <= 0:  # one at a time: wait for this batch before reading on
            await self._until_halted(asyncio.shield(task))

    async def _until_halted(self, awaitable: Any) -> bool:
        """Await ``awaitable`` unless the section halts first (then it is cancelled): True if it finished."""
        finished, _value = await self.unless_halted(awaitable)
        return finished

    async def unless_halted(self, awaitable: Any) -> tuple[bool, Any]:
        """(True, its result), or (False, None) when the section halts first (it is then cancelled)."""
        job = asyncio.ensure_future(awaitable)
        halt = asyncio.ensure_future(self.halt.wait())
        try:
            await asyncio.wait({job, halt}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halt.cancel()
            if not job.done():
                job.cancel()
                # Let it unwind (a source's generator must not be closed while it still runs).
                await asyncio.wait({job})
        if job.cancelled():
            return False, None
        return True, job.result()

    async def _send(
        self, batch: list[dict[str, Any]], verdicts: list[Verdicts] | None, retiring: list[Any] | None
    ) -> None:
        delivered = 0
        records = batch
        if verdicts and sum(map(len, verdicts)) == len(batch):  # change-aware sync encoded each record
            records = EncodedRecords(batch, [part.blobs.joined() for part in verdicts])
        try:
            sent = await self.sink.send(self.info, records)
            delivered = len(batch) if sent is None else sent
            self.failed_in_a_row = 0
        except RecordsRejected as exc:  # the sink (the local store) stored the others
            delivered = len(batch) - exc.rejected
            self.warn(str(exc))
        except ConnectorError as exc:
            delivered = getattr(exc, "delivered", 0)
            self._failed(batch, delivered, exc)
        except asyncio.CancelledError:  # stalled past the grace after a stop request
            log.error(
                "[%s] %d record(s) not confirmed by Oomnitza: the upload was cut off (%s)",
                self.section.name,
                len(batch),
                self.why_halted(),
            )
            raise
        except Exception as exc:  # a bug must not lose the accounting of the batch
            log.exception("[%s] %d record(s) not sent: %s", self.section.name, len(batch), exc)
        finally:
            try:
                self._outcome(batch, delivered, verdicts, retiring)
            except Exception as exc:  # a bug: logged, and the slot is freed all the same (else the run hangs)
                log.exception("[%s] could not account for a batch: %s", self.section.name, exc)
            finally:
                self.slots.release()

    def _outcome(
        self,
        batch: list[dict[str, Any]],
        delivered: int,
        verdicts: list[Verdicts] | None,
        retiring: list[Any] | None,
    ) -> None:
        """Count a batch; tell change-aware sync what arrived. Only a batch taken whole is
        remembered: which records of a partly taken one arrived is not known, and a record not
        remembered is merely sent again next time."""
        whole = delivered == len(batch)
        if retiring is not None:  # retire updates: counted apart from the records read
            assert self.tracker is not None
            self.tracker.retired(retiring, confirmed=whole)
            return
        counts = self.result.counts
        counts["sent"] += delivered
        counts["failed_send"] += len(batch) - delivered
        if whole and verdicts and self.tracker is not None:
            self.tracker.delivered(verdicts)

    def _failed(self, batch: list[dict[str, Any]], delivered: int, exc: ConnectorError) -> None:
        if not self.halted and not isinstance(exc, DiskError):  # a full disk is the run's one error line
            log.error("[%s] %d record(s) not sent: %s", self.section.name, len(batch) - delivered, exc)
        if self.fatal is not None:
            return
        if isinstance(exc, (AuthError, DiskError)) or isinstance(exc.__cause__, AuthError):
            self.fatal = exc  # every later batch would be refused too: stop reading
            self.halt.set()
            return
        self.failed_in_a_row += 1
        limit = self.limits.failed_batches
        if limit and self.failed_in_a_row >= limit:
            self.fatal = ConnectorError(
                f"stopped sending: Oomnitza failed {self.failed_in_a_row} batches in a row (last: {exc})"
            )
            self.result.sink_down = True  # the CLI prints result.error: one line
            self.halt.set()

    async def drain(self) -> None:
        """Wait for every in-flight send; after a stop request, only for ``stop_grace`` seconds."""
        stopping = self.stop is not None and self.stop.requested
        if stopping and self.tasks:
            log.warning(
                "[%s] waiting up to %.0fs for %d upload(s) in flight",
                self.section.name,
                self.limits.stop_grace,
                len(self.tasks),
            )
            _done, late = await asyncio.wait(set(self.tasks), timeout=self.limits.stop_grace)
            for task in late:
                task.cancel()
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


async def run_section(
    section: SectionConfig,
    config: Config,
    sink: Sink,
    options: Options,
    source: Source | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    redactor: redact.Redactor | None = None,
    result: SectionResult | None = None,
) -> SectionResult:
    """Sync one section. Never raises for user-fixable problems: they end up in ``result.error``.

    ``source`` replaces the section's own (the webhook server syncs only the devices it was told
    of; managed mode runs a cloud config): the caller then owns it and closes it. ``redactor``
    (default: the config's) scrubs the run's messages and is the one the source is given.
    ``result``: the object to count into, which a caller may read while the run goes on (the live
    progress display does); a new one by default."""
    redactor = redactor or config.redactor
    result = result if result is not None else SectionResult(section=section.name)
    with redact.using(redactor):
        return await _run_section(section, config, sink, options, source, clock, redactor, result)


async def _run_section(
    section: SectionConfig,
    config: Config,
    sink: Sink,
    options: Options,
    given: Source | None,
    clock: Callable[[], float],
    redactor: redact.Redactor,
    result: SectionResult,
) -> SectionResult:
    started = time.monotonic()
    source = given
    if source is None:
        assert section.source_cls is not None
        try:
            source = section.source_cls(section)
        except ConnectorError as exc:
            result.error = redactor.scrub(str(exc))
            return result
    saver: SaveData | None = None
    state: _Run | None = None
    finished = False  # the source was read to the end it was asked for, without an exception
    cancelled = False
    try:
        run = source.run_info() or _run_info(section, source)
        result.data_type, result.portion = run.data_type, run.portion
        limits = Limits.of(config.oomnitza)
        state = _Run(section, sink, run, options, result, None, limits, clock, cloud_reports=source.cloud_reports)
        mapper = await mapper_of(source, section, sink, config)
        if config.converters.uses_location:
            config.converters.set_locations(await sink.locations())
        state.tracker = await open_tracker(
            section,
            config,
            sink,
            source,
            run,
            mapper,
            full=options.full,
            read_only=options.testmode or options.plan,
            plan=options.plan,
            plan_limit=options.plan_limit if options.plan else 0,
            scrub=redactor.scrub,
        )
        result.changes = state.tracker.report if state.tracker is not None else None
        if options.save_data:
            saver = state.saver = SaveData(options.save_data, section.name)
        source.open(
            RunContext(
                section=section.name,
                mapping=mapper.specs,
                workers=options.workers,
                options=options,
                redactor=redactor,
                clock=clock,
                checkpoint=state.delivered,
            )
        )
        state.started = True
        await _pump(source, mapper, section, state, options)
        finished = not state.halted  # a stop, a cancel or the circuit breaker left the source unread
    except ConnectorError as exc:
        result.error = str(exc)
        if isinstance(exc, ReportedError):
            result.report = str(exc)
    except asyncio.CancelledError:
        result.error = "interrupted"
        cancelled = True
        raise
    finally:
        if state is not None:
            await state.drain()
            if state.tracker is not None and not cancelled:
                await _finish_changes(state, source, options, finished)
            state.close()
            _note_stop(state, result)
        if given is None:
            await source.aclose()
        if saver:
            saver.close()
            if saver.error and result.error is None:
                result.error = saver.error
        if state is not None:
            await _close_session(sink, state.info, result, state)
            # Only a run that ended normally with every record delivered may move or delete its input.
            # A stop or cancel that came after the last record was read still means: do nothing more.
            if finished and not state.halted and result.ok and not options.testmode:
                await _commit(source, result)
            if state.tracker is not None:
                state.tracker.close()
                if state.tracker.problem and options.plan and result.error is None:
                    result.error = state.tracker.problem
        result.seconds = time.monotonic() - started
        if result.error:
            result.error = redactor.scrub(result.error)
        if result.report:
            result.report = redactor.scrub(result.report)
    return result


async def _finish_changes(state: _Run, source: Source, options: Options, finished: bool) -> None:
    """Change-aware sync's bookkeeping after the last send; then, after a complete run, the retire
    updates (guarded), sent in the same session as any batch."""
    tracker = state.tracker
    assert tracker is not None
    unread = _not_read_to_end(state, source, options, finished)
    why = unread or _unmapped(state)
    await tracker.finish(why is None, why, read_to_end=unread is None)
    payloads, candidates = tracker.retirement_batch()
    if not payloads or state.halted:
        return
    size = max(1, options.batch_size)
    for start in range(0, len(payloads), size):
        await state.dispatch(payloads[start : start + size], retiring=candidates[start : start + size])
    await state.drain()


def _not_read_to_end(state: _Run, source: Source, options: Options, finished: bool) -> str | None:
    """Why this run did not read every record of the source (None: it did)."""
    if not source.reads_everything():
        return "the source reads only some records"
    if state.result.error:
        return "the run failed"
    if not finished or state.halted:
        return "the run stopped before the source was read to the end"
    if options.record_count:
        return "--record-count limited the records read"
    return None


def _unmapped(state: _Run) -> str | None:
    """Records read but not mapped: their sync keys are unknown, so the run cannot tell which
    remembered records are missing (only a complete run may count them), though it still
    completes a full push: those records cannot be sent anyway."""
    counts = state.result.counts
    lost = counts["failed_convert"] + counts["missing_required"]
    return f"{lost} record(s) could not be mapped, so their sync keys are not known" if lost else None


def _run_info(section: SectionConfig, source: Source) -> RunInfo:
    """A section's sync session (a new portion each run)."""
    return RunInfo(
        section=section.name,
        connector_name=source.connector_name(),
        data_type=source.record_type,
        sync_field=section.sync_fields,
        insert_only=section.insert_only,
        update_only=section.update_only,
    )


def _note_stop(state: _Run, result: SectionResult) -> None:
    if state.fatal is not None and result.error is None:
        result.error = str(state.fatal)
    if state.stop is not None and state.stop.reason:
        result.stopped = state.stop.reason
    if state.unsent:
        log.warning("[%s] %d record(s) read but not sent: %s", result.section, state.unsent, state.why_halted())


async def _close_session(sink: Sink, run: RunInfo, result: SectionResult, state: _Run) -> None:
    """Report a failed or stopped run to Oomnitza, then finalize the session. After a stop request
    each call gets the grace, so a stalled Oomnitza cannot hold the exit.

    A cloud-managed integration's run that read nothing is one synthetic portion instead, failed
    or empty (born finalized: managed-mode.md §8.3). A classic section that failed before reading
    (its mapping could not be loaded) opened no session: nothing to report or close."""
    limit = state.limits.stop_grace if result.stopped else None
    problem = _run_problem(result, state)
    if state.cloud_reports and result.pulled == 0 and run.connector_id is not None:
        if problem is None and (result.error or result.canceled):
            return
        await _ready_portion(sink, run, problem, limit)
        return
    if not state.started:
        return
    report = getattr(sink, "send_error", None)
    if problem and report is not None:
        try:
            await asyncio.wait_for(report(run, {}, problem, fatal=True), limit)
        except (ConnectorError, TimeoutError) as exc:
            log.error("[%s] could not report the failure to Oomnitza: %s", run.section, _why_not(exc, limit))
    try:
        await asyncio.wait_for(sink.finalize(run), limit)
    except (ConnectorError, TimeoutError) as exc:
        message = _why_not(exc, limit)
        log.error("[%s] could not finalize the sync session: %s", run.section, message)
        if result.error is None:
            result.error = f"could not finalize the sync session: {message}"


def _why_not(exc: BaseException, limit: float | None) -> str:
    """A call that failed, in words: a timeout's exception has no text of its own."""
    if str(exc):
        return str(exc)
    return f"no answer within {limit:g}s (stop_grace)" if limit is not None else "no answer in time"


async def _ready_portion(sink: Sink, run: RunInfo, problem: str | None, limit: float | None) -> None:
    """A synthetic portion: failed (with the problem), or an empty run."""
    add = getattr(sink, "call_json", None)
    if add is None:  # test mode, or the local store: nothing to tell
        return
    body: dict[str, Any] = {"correlation_id": str(uuid.uuid4())}
    if problem is not None:
        body.update(failed=1, error_message=problem, error_type="Fatal Error")
    else:
        body.update(is_empty_run=True, multi_str_input_value=run.multi_str_input_value)
    if run.test_run is not None:
        body["test_run"] = run.test_run
    try:
        await asyncio.wait_for(add("POST", f"/api/v3/bulk/{run.connector_id}/add_ready_portion", json=body), limit)
    except (ConnectorError, TimeoutError) as exc:
        log.error("[%s] could not report to Oomnitza: %s", run.section, _why_not(exc, limit))


def _run_problem(result: SectionResult, state: _Run) -> str | None:
    """What to tell Oomnitza about a run that did not complete (None: it completed, or Oomnitza is
    the problem and would not take the report anyway)."""
    if state.fatal is not None:  # refused credentials or a dead Oomnitza: a report would fail too
        return None
    if result.stopped:
        return f"The run was {result.stopped} before the source was read to the end"
    if result.error:
        return redact.scrub(result.report or f"The run failed: {result.error}")
    return None


async def _commit(source: Source, result: SectionResult) -> None:
    try:
        await source.commit()
    except ConnectorError as exc:
        result.error = f"after the upload: {exc}"


async def _pages(source: Source, state: _Run) -> AsyncGenerator[Sequence[Any], None]:
    """The source's pages until it ends or the section halts (a pending read is then cancelled).
    Between pages, Oomnitza is asked (throttled) whether the sync was canceled."""
    pages = source.pages()
    try:
        while not state.halted:
            read = asyncio.ensure_future(pages.__anext__())
            try:
                if not await state._until_halted(read):
                    return
            except StopAsyncIteration:
                return
            yield read.result()
            await state.check_canceled()
    finally:
        with contextlib.suppress(Exception):
            await pages.aclose()  # type: ignore[attr-defined]


async def _pump(source: Source, mapper: RecordMapper, section: SectionConfig, state: _Run, options: Options) -> None:
    """Read page by page; each page in slices of a batch: count and save the raw records, filter
    them, map the slice at once (one round trip for a mapper that renders templates elsewhere),
    batch and send. A halt stops before the next slice, so what was not pulled stays unread. Every
    record pulled lands in exactly one bucket."""
    result = state.result
    limit = options.record_count
    size = max(1, options.batch_size)
    pages = _pages(source, state)
    try:
        async for page in pages:
            if limit:
                page = page[: max(0, limit - result.pulled)]
            for start in range(0, len(page), size):
                if state.halted:
                    break
                await _slice(page[start : start + size], mapper, section, state)
            if state.halted or (limit and result.pulled >= limit):
                break
            await asyncio.sleep(0)  # let in-flight sends progress between pages
    finally:
        # Records already mapped are sent (or counted) even when the source failed mid-way.
        await state.flush()
        await pages.aclose()


async def _slice(records: Sequence[Any], mapper: RecordMapper, section: SectionConfig, state: _Run) -> None:
    result, counts, saver, record_filter = state.result, state.result.counts, state.saver, section.recordfilter
    kept: list[tuple[int, Any]] = []  # (record number, raw record) to map
    for raw in records:
        result.pulled += 1
        if saver:
            saver.record(raw.raw if type(raw) is BadRecord else raw)
        if type(raw) is BadRecord:
            await state.record_failed("failed_convert", raw.message, result.pulled, raw.raw)
            continue
        try:
            if record_filter is not None and not record_filter(raw):
                counts["filtered"] += 1
                continue
        except RecordError as exc:
            await state.record_failed(exc.bucket, str(exc), result.pulled, raw)
            continue
        kept.append((result.pulled, raw))
    if not kept:
        return
    finished, mapped = await state.unless_halted(mapper.map_page([raw for _, raw in kept]))
    if not finished:
        state.not_sent(len(kept))  # the run stopped while these were being mapped
        return
    payloads: list[dict[str, Any]] = []
    for (number, raw), out in zip(kept, mapped, strict=True):
        if isinstance(out, RecordError):
            await state.record_failed(out.bucket, str(out), number, raw)
        else:
            payloads.append(out)
    if not payloads:
        return
    verdicts = state.tracker.classify(payloads) if state.tracker is not None else None
    if verdicts is None:
        await state.add(payloads)  # (after a halt: counted as not sent)
        return
    # Change-aware sync: only what is to be sent is batched, so batches stay full.
    if not verdicts.all_send:
        send = verdicts.send
        counts["unchanged"] += send.count(False)
        if True not in send:  # (the usual slice of a run over unchanged data)
            return
        payloads, verdicts = list(itertools.compress(payloads, send)), verdicts.select(send)
    await state.add_classified(payloads, verdicts)
