"""``connector.py plan <sections…>``: what an ``upload`` of the sections would do, without doing it.

Each section runs through the upload pipeline (``sync.run_section``: the same source, record
filter, mapping and change-aware comparison) with a sink that sends nothing, and a sync state
opened read-only. Oomnitza is only read: the login (an API token is checked with a read), the
server-side mapping and locations. No sync session is opened or finalized, no record is uploaded,
the sync state and the local store are not written, and a source's incremental marks and
processed files stay as they are.

The text report lists, per section, the records a run would create, update (field by field, before
→ after: long values shortened, secrets masked), leave unchanged, and those missing since the last
run, with the retirement the run would do; ``--format json`` gives the same as one JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__, redact
from .changes import Change

if TYPE_CHECKING:
    from .ledger import Candidate
    from .sync import SectionResult

SCHEMA = 1


class PlanSink:
    """Takes every batch and keeps none; reads (mappings, locations) through ``reader``, the
    Oomnitza client, when there is one (None: the local store, which has nothing to read)."""

    def __init__(self, reader: Any | None) -> None:
        self.reader = reader

    async def login(self) -> None:
        if self.reader is not None:
            await self.reader.login()

    async def mapping(self, name: str) -> dict[str, Any]:
        return await self.reader.mapping(name) if self.reader is not None else {}

    async def locations(self) -> list[dict[str, Any]]:
        return await self.reader.locations() if self.reader is not None else []

    async def send(self, run: Any, records: list[dict[str, Any]]) -> int:
        return len(records)

    async def finalize(self, run: Any) -> None:
        return None

    async def aclose(self) -> None:
        if self.reader is not None:
            await self.reader.aclose()


# -- the document ------------------------------------------------------------------------------------


def _time(seconds: int | None) -> str | None:
    if not seconds:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(fields: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
    return {f: redact.scrub(v) for f, v in zip(fields, values, strict=False)}


def _candidate(fields: tuple[str, ...], c: Candidate) -> dict[str, Any]:
    return {
        "key": _key(fields, c.key),
        "missing_runs": c.missing_runs,
        "last_seen": _time(c.last_seen),
        "last_sent": _time(c.last_sent),
    }


def _change(change: Change) -> dict[str, Any]:
    return {
        "key": change.key,
        "changes": [{"field": f, "before": b, "after": a} for f, b, a in change.changes],
    }


def section_plan(result: SectionResult, target: str) -> dict[str, Any]:
    """One section's plan as JSON-able data."""
    counts = result.counts
    entry: dict[str, Any] = {
        "section": result.section,
        "type": result.data_type or None,
        "target": redact.scrub(target),
        "status": "error" if result.error else "ok",
        "error": redact.scrub(result.error) if result.error else None,
        "pulled": result.pulled,
        "would_send": counts["sent"],
        "filtered": counts["filtered"],
        "failed": counts["failed_convert"] + counts["missing_required"],
        "change_aware": result.changes is not None,
    }
    changes = result.changes
    if changes is None:
        return entry
    fields = changes.sync_fields
    retirement = changes.retirement
    entry.update(
        {
            "sync_fields": list(fields),
            "full_push": changes.full,
            "full_push_reasons": list(changes.full_reasons),
            "create": changes.counts.get("new", 0),
            "update": changes.counts.get("changed", 0),
            "unchanged": changes.counts.get("unchanged", 0),
            "unchanged_sent": counts["sent"]
            - changes.counts.get("new", 0)
            - changes.counts.get("changed", 0)
            - changes.counts.get("unkeyed", 0),
            "unkeyed": changes.counts.get("unkeyed", 0),
            "complete": changes.complete,
            "incomplete_reason": changes.incomplete_reason,
            "missing": None if changes.partial else changes.missing,
            "creates": [{"key": c.key} for c in changes.creates],
            "updates": [_change(c) for c in changes.updates],
            "missing_records": [_candidate(fields, c) for c in changes.missing_records],
            "retirement": None
            if retirement is None or not retirement.enabled
            else {
                "allowed": retirement.allowed,
                "candidates": retirement.total,
                "limit": retirement.limit,
                "reason": retirement.reason,
                "records": [_candidate(fields, c) for c in retirement.candidates],
            },
        }
    )
    return entry


def document(results: list[SectionResult], target: str, limit: int) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "connector_version": __version__,
        "mode": "plan",
        "listed": limit,  # records listed per kind (retirement: all of them in JSON)
        "sections": [section_plan(r, target) for r in results],
    }


# -- the text ----------------------------------------------------------------------------------------


def _shown_key(key: dict[str, Any]) -> str:
    return ", ".join(f"{f}={v}" for f, v in key.items())


def _list(out: list[str], title: str, total: int, shown: int, rows: list[str]) -> None:
    if not total:
        return
    first = f", first {shown} shown" if shown < total else ""
    out.append(f"  {title} ({total:,}{first}):")
    out.extend(f"    {row}" for row in rows)


def section_text(entry: dict[str, Any], limit: int) -> list[str]:
    name, kind = entry["section"], entry["type"] or "records"
    lines = [f"[{name}] {kind} → {entry['target']}"]
    if entry["error"]:
        lines.append(f"  error: {entry['error']}")
        return lines
    read = f"  read {entry['pulled']:,}: would send {entry['would_send']:,}"
    if entry["filtered"]:
        read += f", filtered {entry['filtered']:,}"
    if entry["failed"]:
        read += f", failed {entry['failed']:,} (mapping or required fields)"
    lines.append(read)
    if not entry["change_aware"]:
        lines.append("  change-aware sync is off for this section (change_aware = false, no sync_field, or a test run)")
        return lines
    counts = (
        f"  create {entry['create']:,}, update {entry['update']:,}, unchanged {entry['unchanged']:,}"
        + (f" (the full push sends {entry['unchanged_sent']:,} of them)" if entry["unchanged_sent"] else "")
        + (f", without a sync key (always sent) {entry['unkeyed']:,}" if entry["unkeyed"] else "")
    )
    lines.append(counts)
    if entry["full_push"]:
        lines.append(f"  full push: yes ({'; '.join(entry['full_push_reasons'])})")
    else:
        lines.append("  full push: no (only new and changed records are sent)")
    if entry["missing"] is None:
        lines.append("  missing since the last run: not tracked (the source reads only some records)")
    else:
        lines.append(f"  missing since the last run: {entry['missing']:,}")
        if entry["complete"] is False and entry["incomplete_reason"]:
            lines.append(f"    (this read was incomplete: {entry['incomplete_reason']}; none would count as missing)")
    retirement = entry["retirement"]
    lines.append(f"  retirement: {retirement['reason'] if retirement else 'off (retire_after_runs = 0)'}")
    creates = [_shown_key(c["key"]) for c in entry["creates"]]
    _list(lines, "create", entry["create"], len(creates), creates)
    updates: list[str] = []
    for change in entry["updates"]:
        updates.append(_shown_key(change["key"]))
        updates.extend(f"  {c['field']}: {c['before']} → {c['after']}" for c in change["changes"])
    _list(lines, "update", entry["update"], len(entry["updates"]), updates)
    missing = [_missing_row(c) for c in entry["missing_records"]]
    _list(lines, "missing", entry["missing"] or 0, len(missing), missing)
    if retirement and retirement["allowed"]:
        retire = [_missing_row(c) for c in retirement["records"][:limit]]
        _list(lines, "would retire", retirement["candidates"], len(retire), retire)
    return lines


def _missing_row(c: dict[str, Any]) -> str:
    seen = f", last seen {c['last_seen']}" if c["last_seen"] else ""
    return f"{_shown_key(c['key'])} (missing for {c['missing_runs']} complete run(s){seen})"


def write(results: list[SectionResult], target: str, fmt: str, limit: int, out: TextIO) -> None:
    doc = document(results, target, limit)
    if fmt == "json":
        out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return
    blocks = ["\n".join(section_text(entry, limit)) for entry in doc["sections"]]
    out.write("Plan (nothing was sent or written):\n" + "\n\n".join(blocks) + "\n")


__all__ = ["PlanSink", "document", "write"]
