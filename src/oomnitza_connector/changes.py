"""Change-aware sync in the pipeline (issue 15): the sync state (``ledger``) around one run.

``sync.run_section`` is the one place where records are sent and confirmed, for ``upload``,
webhook syncs and managed integrations alike. It asks this module, in order::

    tracker = await open_tracker(...)      # None: change-aware sync does not apply to this run
    verdicts = tracker.classify(payloads)  # per mapped slice: which records to send
    tracker.delivered(verdicts)            # per batch Oomnitza confirmed whole
    await tracker.finish(complete, why)    # after the last send: bookkeeping, missing records
    batch = tracker.retirement_batch()     # records to retire (guarded), sent like any batch
    tracker.retired(candidates)            # per retire batch Oomnitza confirmed whole
    tracker.close()

A batch Oomnitza took only in part (a 413 split that failed half-way, an answer counting some
records as failed) marks none of its records: which ones arrived is not known, and a record not
marked is simply sent again next time. A state file that cannot be written mid-run stops the
marking (the records still go out), and the run ends with that one-line error.

Where the state applies: sections with ``change_aware`` on (the default) and a sync field. Not
in managed test runs (``test_run``: ten records, for a look). ``--testmode`` and ``plan`` read the
state and write nothing. Sources that read only some records (webhook syncs, incremental sources:
``Source.reads_everything``) make *partial* runs (see ``ledger``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import ledger
from .errors import ConfigError, ConnectorError
from .statedir import state_dir

if TYPE_CHECKING:
    from .config import Config, SectionConfig
    from .mapping import RecordMapper
    from .oomnitza.payload import RunInfo
    from .sources.base import Source

log = logging.getLogger(__name__)

Verdict = ledger.Verdict
Verdicts = ledger.Verdicts
PLAN_LIMIT = 20  # records listed per kind by `plan`


@dataclass(frozen=True)
class ChangeSettings:
    """A section's change-aware settings, typed (``settings.COMMON_SETTINGS`` declares them)."""

    enabled: bool = True
    full_sync_interval: timedelta = timedelta(days=7)
    retire_after_runs: int = 0
    retire_max: str = "5%"
    retire_mapping: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, section: SectionConfig) -> ChangeSettings:
        """Raises ConfigError (one line naming the setting) for a value the loader did not check
        (a managed section's)."""
        return cls(
            enabled=section.flag("change_aware"),
            full_sync_interval=section.value("full_sync_interval"),
            retire_after_runs=section.value("retire_after_runs") or 0,
            retire_max=section.value("retire_max") or "5%",
            retire_mapping={str(k).upper(): v for k, v in (section.value("retire_mapping") or {}).items()},
        )


@dataclass
class Change:
    """A record ``plan`` lists: its sync key and, for an update, ``(field, before, after)`` lines."""

    key: dict[str, Any]
    changes: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class ChangeReport:
    """What change-aware sync did in one run (``SectionResult.changes``; the summary, the JSON
    report and ``plan`` show it)."""

    read_only: bool = False
    partial: bool = False
    full: bool = False
    full_reasons: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)  # new, changed, unchanged, unkeyed (classified)
    complete: bool | None = None  # None: the run did not get to the end of its bookkeeping
    incomplete_reason: str | None = None
    missing: int = 0  # remembered records this run did not see
    missing_records: list[ledger.Candidate] = field(default_factory=list)  # plan: the first few
    retirement: ledger.Retirement | None = None
    retired: int = 0  # retire updates Oomnitza confirmed
    retire_failed: int = 0
    creates: list[Change] = field(default_factory=list)  # plan: the first few of each
    updates: list[Change] = field(default_factory=list)
    sync_fields: tuple[str, ...] = ()

    def retire_reason(self) -> str | None:
        retirement = self.retirement
        return retirement.reason if retirement is not None and retirement.enabled else None

    def summary(self) -> dict[str, Any]:
        """The section's ``changes`` object in ``--summary-json``."""
        retirement = self.retirement
        return {
            "full_push": self.full,
            "full_push_reasons": list(self.full_reasons),
            "new": self.counts.get(ledger.NEW, 0),
            "changed": self.counts.get(ledger.CHANGED, 0),
            "unchanged": self.counts.get(ledger.UNCHANGED, 0),
            "unkeyed": self.counts.get(ledger.UNKEYED, 0),
            "complete": self.complete,
            "missing": None if self.partial else self.missing,
            "retirement": None
            if retirement is None or not retirement.enabled
            else {
                "candidates": retirement.total,
                "limit": retirement.limit,
                "allowed": retirement.allowed,
                "retired": self.retired,
                "failed": self.retire_failed,
                "reason": retirement.reason,
            },
        }


def sync_fields_of(run: RunInfo, mapper: RecordMapper) -> list[str]:
    """The run's sync fields as the payloads spell them (``sync_field = serial_number`` names the
    mapped field ``SERIAL_NUMBER``; Oomnitza compares field ids without regard to case)."""
    names = {str(name).upper(): str(name) for name in mapper.specs}
    return [names.get(f.upper(), f) for f in run.sync_field]


def target_of(sink: Any, config: Config) -> ledger.Target:
    """Where this run's records go: the sink's Oomnitza URL and credentials (a managed integration
    may send with a token of its own), else ``[oomnitza]``'s (test mode, plan); for the local
    store, which store file (its ``identity``)."""
    inner = getattr(sink, "reader", sink)  # TestModeSink / PlanSink wrap the client they read with
    section = getattr(inner, "section", None)
    settings = getattr(section, "settings", None) or config.oomnitza.settings
    url = str(getattr(inner, "url", "") or settings.get("url", "") or config.oomnitza.settings.get("url", ""))
    if url.startswith("sqlite:"):  # the local store: which file (plan does not open it)
        from .oomnitza.local_store import store_identity

        identity = getattr(inner, "identity", None) or store_identity(url) or ""
        return ledger.Target(url, identity=identity, what="the local store file")
    identity = settings.get("api_token") or settings.get("username") or ""
    return ledger.Target(url, identity=identity)


def mapping_digest(run: RunInfo, mapper: RecordMapper, config: Config) -> str:
    """What the state compares to decide that the mapping changed: the merged mapping, the custom
    converters' code, and what the session tells Oomnitza about the records."""
    doc = config.doc
    converters = dict(doc["converters"].values) if doc is not None and "converters" in doc else {}
    return ledger.digest_of(
        {
            "mapping": dict(mapper.specs),
            "converters": converters,
            "session": [run.connector_name, run.data_type, run.insert_only, run.update_only],
        }
    )


def secret_fields(section: SectionConfig, mapper: RecordMapper) -> list[str]:
    """Mapped fields whose value is a secret setting (``{"setting": "api_key"}``): ``plan`` masks them."""
    hidden = []
    for name, spec in mapper.specs.items():
        setting = spec.get("setting") if isinstance(spec, Mapping) else None
        if not setting:
            continue
        declared = section.declaration(str(setting))
        if setting in section.secret_names or (declared is not None and declared.secret):
            hidden.append(str(name))
    return hidden


class Tracker:
    """One run's use of the sync state."""

    def __init__(
        self,
        scope: ledger.Scope,
        section: str,
        *,
        read_only: bool,
        partial: bool,
        plan_limit: int,
        retire_values: Mapping[str, Any],
        secret_fields: Sequence[str] = (),
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        self.scope, self.section = scope, section
        self.read_only, self.plan_limit = read_only, plan_limit
        self.retire_values = dict(retire_values)
        self.secret_fields, self.scrub = list(secret_fields), scrub
        self.report = ChangeReport(
            read_only=read_only,
            partial=partial,
            full=scope.full,
            full_reasons=scope.full_reasons,
            counts=scope.counts,
            sync_fields=scope.sync_fields,
        )
        self.problem: str | None = None  # the state failed mid-run (logged): it is not used any more
        self._closed = False

    @property
    def working(self) -> bool:
        return self.problem is None

    # -- during the run ---------------------------------------------------------------------------
    def classify(self, payloads: Sequence[dict[str, Any]]) -> Verdicts | None:
        """One verdict per payload; None when the state has failed (then every record is sent)."""
        if not self.working:
            return None
        try:
            verdicts = self.scope.classify(payloads)
        except ConnectorError as exc:
            self._failed(exc)
            return None
        if self.plan_limit:
            self._note(payloads, verdicts)
        return verdicts

    def delivered(self, verdicts: Sequence[Verdicts]) -> None:
        """Oomnitza confirmed a whole batch: remember its records (these verdicts are its parts)."""
        if self.read_only or not self.working:
            return
        try:
            self.scope.mark_delivered(verdicts)
        except ConnectorError as exc:
            self._failed(exc)

    def _failed(self, exc: ConnectorError) -> None:
        """The state failed mid-run (a full disk): stop using it. What was sent stays sent; what
        is not remembered is sent again next time."""
        self.problem = str(exc)
        level = logging.ERROR if isinstance(exc, ledger.StateError) else logging.WARNING  # a full disk: no loss
        log.log(
            level,
            "[%s] %s; the rest of the run goes without the sync state (what it did not "
            "remember is sent again next time)",
            self.section,
            exc,
        )

    def _note(self, payloads: Sequence[dict[str, Any]], verdicts: Sequence[Verdict]) -> None:
        """``plan``: keep the first few creates and updates, updates with their field changes."""
        limit, report = self.plan_limit, self.report
        for payload, verdict in zip(payloads, verdicts, strict=True):
            kind = verdict.kind
            if kind == ledger.NEW and len(report.creates) < limit:
                report.creates.append(Change(self._key(payload)))
            elif kind == ledger.CHANGED and len(report.updates) < limit:
                before = self.scope.previous(verdict)
                lines = ledger.describe_changes(before, payload, secret_fields=self.secret_fields, scrub=self.scrub)
                report.updates.append(Change(self._key(payload), lines))

    def _key(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        key = {f: payload.get(f) for f in self.scope.sync_fields}
        if self.scrub is not None:
            key = {f: self.scrub(v) if isinstance(v, str) else v for f, v in key.items()}
        return key

    # -- the end of the run -------------------------------------------------------------------------
    async def finish(self, complete: bool, why: str | None, *, read_to_end: bool | None = None) -> None:
        """The run's bookkeeping (missing records, a full push done); ``why`` it was incomplete;
        ``read_to_end``: the source was read to its end though some records could not be mapped."""
        report = self.report
        if not self.working:
            return
        try:
            result = await asyncio.to_thread(self.scope.finish, complete=complete, read_to_end=read_to_end)
            report.complete = result.complete
            report.incomplete_reason = why if not complete else result.incomplete_reason
            report.missing = result.missing
            if self.plan_limit and result.missing:
                records = self.scope.missing(limit=self.plan_limit)[1]
                if self.read_only and result.complete:  # `plan` counts its own read as the next run
                    records = [dataclasses.replace(c, missing_runs=c.missing_runs + 1) for c in records]
                report.missing_records = records
            report.retirement = await asyncio.to_thread(self.scope.retirement, max(self.plan_limit, 20))
        except ConnectorError as exc:
            self._failed(exc)
            return
        self._log_end()

    def _log_end(self) -> None:
        report, name = self.report, self.section
        counts = self.scope.counts
        if report.full and not self.read_only and report.complete:
            unconfirmed = counts["sent"] - counts[ledger.UNKEYED] - counts["delivered"]
            if unconfirmed > 0:
                log.warning(
                    "[%s] full push done, but %d record(s) were not confirmed: the next runs send them again",
                    name,
                    unconfirmed,
                )
            else:
                log.info("[%s] full push done: every record was sent and confirmed", name)
        retirement = report.retirement
        if retirement is None or not retirement.enabled:
            return
        if retirement.total and not retirement.allowed:
            log.warning("[%s] retirement: %s", name, retirement.reason)
        elif not report.complete and not report.partial:
            log.info("[%s] retirement: %s", name, retirement.reason)

    def retirement_batch(self) -> tuple[list[dict[str, Any]], list[ledger.Candidate]]:
        """The retire updates to send (guarded) and their records; nothing when read-only."""
        retirement = self.report.retirement
        if self.read_only or not self.working or retirement is None or not retirement.allowed:
            return [], []
        payloads = retirement.payloads(self.retire_values)
        for candidate in retirement.candidates[:PLAN_LIMIT]:
            log.info(
                "[%s] retiring %s: missing from the source for %d complete run(s)",
                self.section,
                self._shown_key(candidate.key),
                candidate.missing_runs,
            )
        if len(retirement.candidates) > PLAN_LIMIT:
            log.info("[%s] ... and %d more", self.section, len(retirement.candidates) - PLAN_LIMIT)
        return payloads, list(retirement.candidates)

    def _shown_key(self, key: Sequence[str]) -> str:
        text = ", ".join(f"{f}={v!r}" for f, v in zip(self.scope.sync_fields, key, strict=False))
        return self.scrub(text) if self.scrub is not None else text

    def retired(self, candidates: Sequence[ledger.Candidate], confirmed: bool) -> None:
        """A retire batch's outcome: remember the records only when Oomnitza took it whole."""
        if confirmed:
            self.report.retired += len(candidates)
            if self.working:
                try:
                    self.scope.mark_retired(candidates)
                except ConnectorError as exc:
                    self._failed(exc)
        else:
            self.report.retire_failed += len(candidates)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.scope.close()
        except ConnectorError as exc:
            if self.working:
                self._failed(exc)
        except Exception as exc:  # the scope was broken already (reported): closing is best effort
            log.debug("[%s] closing the sync state: %s", self.section, exc)


async def open_tracker(
    section: SectionConfig,
    config: Config,
    sink: Any,
    source: Source,
    run: RunInfo,
    mapper: RecordMapper,
    *,
    full: bool,
    read_only: bool,
    plan: bool,
    plan_limit: int,
    scrub: Callable[[str], str] | None,
) -> Tracker | None:
    """The run's tracker, or None when change-aware sync does not apply (it then sends every
    record, as before): also when the state file cannot be used (logged). ``plan`` raises
    ConnectorError then (one line): comparing is all it does."""
    settings = ChangeSettings.of(section)
    if not settings.enabled:
        log.debug("[%s] change-aware sync is off (change_aware = false)", section.name)
        return None
    if run.test_run:
        log.info("[%s] test run: every record is sent and none is remembered", section.name)
        return None
    fields = sync_fields_of(run, mapper)
    if not fields:
        log.info("[%s] change-aware sync is off: no sync_field, so records cannot be recognised", section.name)
        return None
    partial = not source.reads_everything()
    retire_values: dict[str, Any] = {}
    if settings.retire_after_runs and partial:
        log.info("[%s] retire_after_runs is ignored: this source reads only some records each run", section.name)
    elif settings.retire_after_runs:
        retire_values = _retire_values(section, config, settings)
    try:
        retire_max = ledger.RetireMax.parse(settings.retire_max)
    except ValueError as exc:
        raise ConfigError(f"{section.ini_path}: [{section.name}] retire_max {exc}") from None
    options = ledger.ScopeOptions(
        full=full,
        full_sync_interval=settings.full_sync_interval,
        filter=ledger.digest_of(section.recordfilter_text) if section.recordfilter_text else "",
        retire_after_runs=settings.retire_after_runs if retire_values else 0,
        retire_max=retire_max,
        partial=partial,
    )
    path = ledger.state_path(state_dir(config.oomnitza.settings))
    name = f"managed:{run.connector_id}" if run.connector_id is not None else section.name
    try:
        scope = await asyncio.to_thread(
            ledger.open_scope,
            path,
            target=target_of(sink, config),
            name=name,
            mapping=mapping_digest(run, mapper, config),
            sync_fields=fields,
            options=options,
            read_only=read_only,
        )
    except ConnectorError as exc:
        if plan:
            raise
        # As with the lock folder, a state that cannot be used does not stop the sync: it then
        # sends every record, as before change-aware sync. A damaged file is an ERROR line.
        level = logging.ERROR if isinstance(exc, ledger.StateError) else logging.WARNING
        log.log(level, "[%s] %s; this run sends every record", section.name, exc)
        return None
    tracker = Tracker(
        scope,
        section.name,
        read_only=read_only,
        partial=partial,
        plan_limit=plan_limit,
        retire_values=retire_values,
        secret_fields=secret_fields(section, mapper),
        scrub=scrub,
    )
    _log_start(section.name, scope, partial)
    return tracker


def _retire_values(section: SectionConfig, config: Config, settings: ChangeSettings) -> dict[str, Any]:
    """``retire_mapping`` resolved with the mapping machinery (hardcoded values, settings)."""
    from .mapping import Mapper

    specs = dict(settings.retire_mapping)
    if not specs:
        log.warning("[%s] retire_after_runs is set but retire_mapping is not: nothing is retired", section.name)
        return {}
    return Mapper(specs, section, config.converters).convert({})


def _log_start(name: str, scope: ledger.Scope, partial: bool) -> None:
    if scope.full:
        log.info("[%s] change-aware sync: sending every record (%s)", name, "; ".join(scope.full_reasons))
    elif partial:
        log.info("[%s] change-aware sync: sending only changed records (and those not sent for a while)", name)
    else:
        log.info("[%s] change-aware sync: sending only new and changed records", name)
