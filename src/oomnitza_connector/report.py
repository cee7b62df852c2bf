"""What a run reports about itself: summary lines in the log, ``--summary-json`` and
``--metrics-file`` (Prometheus textfile), all made from the same ``SectionResult`` objects the
summary table shows.

``--summary-json PATH`` (``-`` = standard output) writes one JSON object::

    {"schema": 1, "connector_version": "3.0.0", "mode": "upload", "testmode": false,
     "started": "2026-01-02T03:04:05.123Z", "finished": "…", "seconds": 12.3,
     "exit_code": 3, "stopped": null, "error": null,
     "sections": [{"section": "csv_assets", "type": "assets", "status": "records failed",
                   "pulled": 10, "sent": 8, "unchanged": 0, "filtered": 1, "missing_required": 0,
                   "failed_convert": 1, "failed_send": 0, "seconds": 1.234, "error": null,
                   "changes": {"full_push": true, "full_push_reasons": ["first run: nothing remembered yet"],
                               "new": 9, "changed": 0, "unchanged": 0, "unkeyed": 0, "complete": true,
                               "missing": 0, "retirement": null}}]}

``status`` is the summary table's word: ok, records failed, error, canceled, interrupted,
terminated, not run (the run stopped before it), already running (another run holds its lock).
Every pulled record is in exactly one bucket (sent, unchanged, filtered, missing_required,
failed_convert, failed_send); ``unchanged``: not sent because Oomnitza has it as it is (change-aware
sync). ``changes`` is null when change-aware sync did not apply (``change_aware = false``, no
``sync_field``); its ``retirement`` (null when ``retire_after_runs`` is 0) counts the retire updates
sent, which are no pulled records. ``error`` (per section, and for the whole run when it could not start) is one
scrubbed line or null.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__, redact
from .metrics import Samples, atomic_write, families, label_word
from .sync import BUCKETS

if TYPE_CHECKING:
    from .sync import SectionResult

log = logging.getLogger("oomnitza_connector")

SCHEMA = 1
ALREADY_RUNNING = "already running"
NOT_RUN = "not run"

RUN_FAMILIES = families(
    [
        (
            "last_run_records",
            "gauge",
            'Records of the section\'s last run per bucket ("pulled" = read from the source).',
        ),
        ("records_total", "counter", 'Records per section and bucket, over every run ("pulled" = read).'),
        ("runs_total", "counter", "Runs per section and result (ok, records_failed, error, already_running, ...)."),
        ("last_run_timestamp_seconds", "gauge", "When the section's last run ended (Unix time)."),
        ("last_run_duration_seconds", "gauge", "How long the section's last run took."),
        ("last_run_success", "gauge", "1 when the section's last run ended ok, else 0."),
        ("last_run_status", "gauge", "The result of the section's last run (the label; the value is 1)."),
        ("last_success_timestamp_seconds", "gauge", "When the section last ended ok (Unix time)."),
        ("last_run_retired_records", "gauge", "Records the section's last run retired (retire_after_runs)."),
    ]
)


@dataclass
class RunReport:
    """One run of ``upload``: its sections' results and how it ended."""

    mode: str = "upload"
    results: list[SectionResult] = field(default_factory=list)
    busy: dict[str, str] = field(default_factory=dict)  # section → who holds its lock ("" unknown)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    testmode: bool = False
    stopped: str | None = None
    exit_code: int | None = None
    error: str | None = None  # the run could not start (e.g. the configuration)

    def status(self, result: SectionResult) -> str:
        if result.section in self.busy:
            return ALREADY_RUNNING
        return result.status

    def entry(self, result: SectionResult) -> dict[str, Any]:
        """The section's object in ``--summary-json`` (and in the JSON log's summary line)."""
        return {
            "section": result.section,
            "type": result.data_type or None,
            "status": self.status(result),
            "pulled": result.pulled,
            **{bucket: result.counts.get(bucket, 0) for bucket in BUCKETS},
            "seconds": round(result.seconds, 3),
            "error": redact.scrub(result.error) if result.error else None,
            "changes": result.changes.summary() if result.changes is not None else None,
        }

    def document(self) -> dict[str, Any]:
        finished = self.finished if self.finished is not None else time.time()
        return {
            "schema": SCHEMA,
            "connector_version": __version__,
            "mode": self.mode,
            "testmode": self.testmode,
            "started": _iso(self.started),
            "finished": _iso(finished),
            "seconds": round(finished - self.started, 3),
            "exit_code": self.exit_code,
            "stopped": self.stopped,
            "error": redact.scrub(self.error) if self.error else None,
            "sections": [self.entry(r) for r in self.results],
        }


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the log ------------------------------------------------------------------------------------------


def log_summary(report: RunReport, *, on_console: bool) -> None:
    """A summary line per section at INFO; an ERROR line for a section whose records failed (so
    errors.log holds every problem of the run); one closing line. ``on_console``: the console
    handlers print them too (JSON logs); otherwise only the log files get them, the console has
    the table."""
    extra: dict[str, Any] = {} if on_console else {"console": False}
    for result in report.results:
        entry = report.entry(result)
        counts = ", ".join(f"{key.replace('_', ' ')} {entry[key]}" for key in ("pulled", *BUCKETS))
        log.info(
            "[%s] %s: %s (%.1fs)%s",
            result.section,
            entry["status"],
            counts,
            result.seconds,
            " [test mode: nothing was sent]" if report.testmode else "",
            extra={**extra, "summary": entry},
        )
        changes = result.changes
        reason = changes.retire_reason() if changes is not None else None
        if changes is not None and reason is not None:
            level = logging.WARNING if changes.retire_failed else logging.INFO
            log.log(
                level,
                "[%s] retirement: retired %d, not confirmed %d (%s)",
                result.section,
                changes.retired,
                changes.retire_failed,
                reason,
                extra=extra,
            )
        failed = entry["failed_convert"] + entry["failed_send"]
        if failed and not result.error:
            log.error(
                "[%s] %d record(s) failed (failed convert %d, failed send %d); the warnings before name them",
                result.section,
                failed,
                entry["failed_convert"],
                entry["failed_send"],
                extra=extra,
            )
    document = report.document()
    line = {k: v for k, v in document.items() if k != "sections"}
    log.info(
        "%s finished in %.1fs: %s; exit code %s",
        report.mode,
        document["seconds"],
        _tally(report) or "no sections",
        report.exit_code,
        extra={**extra, "summary": line},
    )


def _tally(report: RunReport) -> str:
    counts: dict[str, int] = {}
    for result in report.results:
        status = report.status(result)
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items())


# -- --summary-json -----------------------------------------------------------------------------------


def write_summary_json(report: RunReport, target: str, *, stdout: TextIO | None = None) -> None:
    text = json.dumps(report.document(), indent=2, ensure_ascii=False) + "\n"
    if target == "-":
        out = stdout or sys.stdout
        out.write(text)
        out.flush()
        return
    atomic_write(Path(target), text)


# -- --metrics-file -----------------------------------------------------------------------------------


def write_metrics(
    report: RunReport, path: Path, *, lock_dir: Path | None = None, clock: Callable[[], float] = time.time
) -> None:
    """Update the Prometheus textfile at ``path`` with this run. The sections of this run replace
    their gauges, their counters grow; other sections' samples (from other jobs writing the same
    file) are kept. A lock in ``lock_dir`` (the state directory) keeps two jobs from losing each
    other's update."""
    from .locking import LockUnavailable, RunLock

    lock = RunLock.for_section(lock_dir, f"metrics:{path.resolve()}", what="metrics file") if lock_dir else None
    try:
        if lock is not None and not lock.acquire(timeout=30):
            log.warning("the metrics file %s is being written by another run; writing it anyway", path)
    except LockUnavailable as exc:
        log.warning("%s; the metrics file is written without it", exc)
    try:
        samples = Samples(RUN_FAMILIES)
        try:
            samples.load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read the metrics file %s (%s): its counters start again", path, exc)
        _apply(samples, report, clock())
        atomic_write(path, samples.render())
    finally:
        if lock is not None:
            lock.release()


def _apply(samples: Samples, report: RunReport, now: float) -> None:
    for result in report.results:
        section = result.section
        status = report.status(result)
        samples.add("runs_total", 1, section=section, result=label_word(status))
        if status in (ALREADY_RUNNING, NOT_RUN):
            continue  # it did not run: what its last run said stays
        kind = result.data_type or ""
        samples.drop("last_run_records", section=section)
        samples.drop("last_run_status", section=section)
        for bucket in ("pulled", *BUCKETS):
            value = result.pulled if bucket == "pulled" else result.counts.get(bucket, 0)
            samples.set("last_run_records", value, section=section, type=kind, bucket=bucket)
            samples.add("records_total", value, section=section, type=kind, bucket=bucket)
        samples.set("last_run_timestamp_seconds", now, section=section)
        samples.set("last_run_duration_seconds", round(result.seconds, 3), section=section)
        samples.set("last_run_success", 1 if status == "ok" else 0, section=section)
        samples.set("last_run_status", 1, section=section, status=label_word(status))
        samples.drop("last_run_retired_records", section=section)
        if result.changes is not None and result.changes.retire_reason() is not None:
            samples.set("last_run_retired_records", result.changes.retired, section=section)
        if status == "ok":
            samples.set("last_success_timestamp_seconds", now, section=section)
