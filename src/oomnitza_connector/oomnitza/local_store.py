"""The embedded local store: a SQLite file that takes bulk payloads as Oomnitza does.

Selected by ``[oomnitza] url = sqlite:///./oomnitza-local.db``. Records are kept per data type and
upserted by their ``sync_field`` values (field ids compared case-insensitively); ``insert_only`` /
``update_only`` are honoured; each run is a portion with its counters. It is how a user evaluates
mappings before pointing the connector at a tenant, and what ``make demo`` fills.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from ..diskio import describe_os_error, describe_sqlite_error, is_disk_problem
from ..errors import ConfigError, DiskError, RecordsRejected
from .payload import RunInfo, encode

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    data_type  TEXT NOT NULL,
    sync_key   TEXT NOT NULL,
    fields     TEXT NOT NULL,
    portion    TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    writes     INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (data_type, sync_key)
);
CREATE TABLE IF NOT EXISTS portions (
    portion        TEXT PRIMARY KEY,
    section        TEXT NOT NULL,
    connector_name TEXT NOT NULL,
    data_type      TEXT NOT NULL,
    started_at     REAL NOT NULL,
    finalized_at   REAL,
    received       INTEGER NOT NULL DEFAULT 0,
    inserted       INTEGER NOT NULL DEFAULT 0,
    updated        INTEGER NOT NULL DEFAULT 0,
    skipped        INTEGER NOT NULL DEFAULT 0,
    failed         INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS errors (
    portion TEXT NOT NULL,
    message TEXT NOT NULL,
    record  TEXT,
    at      REAL NOT NULL
);
"""


STORED = ("inserted", "updated", "skipped")  # what _apply_one answers for a record it took


def store_path(url: str) -> Path:
    """``sqlite:///./x.db`` → ``./x.db`` (relative to the working directory); ``sqlite:////abs`` → ``/abs``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix:
        raise ConfigError(f"[oomnitza] url = {url!r}: write the local store as sqlite:///./oomnitza-local.db")
    return Path(url[len(prefix) :])


_INSTANCE = "SELECT value FROM meta WHERE name = 'instance'"


def _identity(instance: str) -> str:
    return f"local store {instance}"


def store_identity(url: str) -> str | None:
    """The identity of the local store at ``url`` (as ``LocalStoreSink.identity``), read without
    creating or changing the file (``plan``); None when there is no such store yet."""
    path = store_path(url)
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            row = db.execute(_INSTANCE).fetchone()
    except sqlite3.Error:
        return None
    return _identity(row[0]) if row else None


class LocalStore:
    """Thread-safe access to the SQLite file; async callers go through ``asyncio.to_thread``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DiskError(f"local store: {describe_os_error(exc, path.parent)}") from None
        try:
            self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            # Which store this is: change-aware sync remembers what one store holds, and a store
            # deleted and made again (same path, empty) must get every record again.
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('instance', ?)", (uuid.uuid4().hex,))
            self.instance: str = self.db.execute(_INSTANCE).fetchone()[0]
        except sqlite3.Error as exc:
            raise DiskError(f"local store: {describe_sqlite_error(exc, path)}") from None
        self.lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    # -- the bulk semantics -------------------------------------------------------------------------
    def _ensure_portion(self, run: RunInfo) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO portions (portion, section, connector_name, data_type, started_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (run.portion, run.section, run.connector_name, run.data_type, time.time()),
        )

    def apply(self, run: RunInfo, records: list[dict[str, Any]]) -> dict[str, int]:
        return self.apply_with_reasons(run, records)[0]

    def apply_with_reasons(self, run: RunInfo, records: list[dict[str, Any]]) -> tuple[dict[str, int], list[str]]:
        """Store one batch in one transaction: the counts, and why each refused record was refused.

        A record the store refuses (no sync field value, a value it cannot keep) is counted as
        failed and kept in ``errors``; a failure of the file itself (disk full, read-only) loses the
        whole batch and raises ``DiskError``."""
        counts = {"received": len(records), "inserted": 0, "updated": 0, "skipped": 0, "failed": 0}
        reasons: list[str] = []
        with self.lock:
            try:
                self.db.execute("BEGIN")
                self._ensure_portion(run)
                now = time.time()
                for record in records:
                    outcome = self._apply_one(run, record, now)
                    if outcome in STORED:
                        counts[outcome] += 1
                        continue
                    counts["failed"] += 1
                    reasons.append(outcome)
                    self.db.execute(
                        "INSERT INTO errors VALUES (?, ?, ?, ?)", (run.portion, outcome, _as_text(record), now)
                    )
                self.db.execute(
                    "UPDATE portions SET received=received+?, inserted=inserted+?, updated=updated+?, "
                    "skipped=skipped+?, failed=failed+? WHERE portion=?",
                    (
                        counts["received"],
                        counts["inserted"],
                        counts["updated"],
                        counts["skipped"],
                        counts["failed"],
                        run.portion,
                    ),
                )
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise DiskError(describe_sqlite_error(exc, self.path)) from None
            except BaseException:
                self._rollback()
                raise
        return counts, reasons

    def _apply_one(self, run: RunInfo, record: dict[str, Any], now: float) -> str:
        """``inserted``, ``updated`` or ``skipped``; any other answer is why the record was refused."""
        sync = [f.upper() for f in run.sync_field]
        fields = {str(k).upper(): v for k, v in record.items()}
        key_values = [fields.get(f) for f in sync]
        if not sync:
            return "no sync_field is set for this section"
        if any(v in (None, "") for v in key_values):
            return f"no value for sync field(s) {', '.join(sync)}"
        try:
            key = encode(key_values).decode()
            row = self.db.execute(
                "SELECT fields FROM records WHERE data_type=? AND sync_key=?", (run.data_type, key)
            ).fetchone()
            if row is None:
                if run.update_only:
                    return "skipped"
                self.db.execute(
                    "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, 1)",
                    (run.data_type, key, encode(fields).decode(), run.portion, now, now),
                )
                return "inserted"
            if run.insert_only:
                return "skipped"
            merged = {**orjson.loads(row[0]), **fields}
            self.db.execute(
                "UPDATE records SET fields=?, portion=?, updated_at=?, writes=writes+1 "
                "WHERE data_type=? AND sync_key=?",
                (encode(merged).decode(), run.portion, now, run.data_type, key),
            )
            return "updated"
        except (TypeError, orjson.JSONEncodeError) as exc:  # a value no JSON can hold
            return f"cannot store the record: {exc}"
        except sqlite3.Error as exc:
            if is_disk_problem(exc):
                raise
            return f"the local store refused the record: {exc}"  # a constraint: this record only

    def _rollback(self) -> None:
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.debug("rollback of %s failed: %s", self.path, exc)

    def finalize(self, run: RunInfo) -> None:
        with self.lock:
            try:
                self.db.execute("BEGIN")
                self._ensure_portion(run)
                self.db.execute(
                    "UPDATE portions SET finalized_at=COALESCE(finalized_at, ?) WHERE portion=?",
                    (time.time(), run.portion),
                )
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise DiskError(describe_sqlite_error(exc, self.path)) from None

    # -- reading it back ----------------------------------------------------------------------------
    def records(self, data_type: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT data_type, fields FROM records"
        args: tuple[Any, ...] = ()
        if data_type:
            query += " WHERE data_type=?"
            args = (data_type,)
        query += " ORDER BY data_type, created_at, rowid"
        with self.lock:
            rows = self.db.execute(query, args).fetchall()
        return [{"data_type": dt, **orjson.loads(fields)} for dt, fields in rows]

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.db.execute("SELECT data_type, COUNT(*) FROM records GROUP BY data_type").fetchall())

    def portions(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.lock:
            cur = self.db.execute(
                "SELECT portion, section, connector_name, data_type, started_at, finalized_at, received, "
                "inserted, updated, skipped, failed FROM portions ORDER BY started_at DESC LIMIT ?",
                (limit,),
            )
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def errors(self, portion: str) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute("SELECT message, record FROM errors WHERE portion=?", (portion,)).fetchall()
        return [{"message": m, "record": orjson.loads(r) if r else None} for m, r in rows]


def export(store: LocalStore, *, data_type: str | None, fmt: str) -> str:
    """The store's records as CSV or JSON text (columns: data_type, then every field seen, sorted)."""
    records = store.records(data_type)
    if fmt == "json":
        return encode(records, pretty=True).decode() + "\n"
    columns = sorted({k for r in records for k in r if k != "data_type"})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["data_type", *columns])
    for r in records:
        writer.writerow([r["data_type"], *(_cell(r.get(c)) for c in columns)])
    return buf.getvalue()


def _as_text(record: Any) -> str:
    try:
        return encode(record).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(record)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return encode(value).decode()
    return str(value)


class LocalStoreSink:
    """The sink side of the local store (the same calls the REST client answers)."""

    def __init__(self, url: str) -> None:
        self.store = LocalStore(store_path(url))
        self.url = url
        self.identity = _identity(self.store.instance)  # what change-aware sync fingerprints
        self.disk_problem: str | None = None  # the first write the store's file could not take

    async def login(self) -> None:
        return None

    async def mapping(self, name: str) -> dict[str, Any]:
        return {}

    async def locations(self) -> list[dict[str, Any]]:
        return []

    async def send(self, run: RunInfo, records: list[dict[str, Any]]) -> None:
        try:
            counts, reasons = await asyncio.to_thread(self.store.apply_with_reasons, run, records)
        except DiskError as exc:
            self.disk_problem = self.disk_problem or str(exc)
            raise
        if counts["failed"]:
            why = "; ".join(sorted(set(reasons))[:3])
            raise RecordsRejected(
                f"the local store refused {counts['failed']} of {len(records)} record(s): {why}",
                counts["failed"],
            )

    async def finalize(self, run: RunInfo) -> None:
        try:
            await asyncio.to_thread(self.store.finalize, run)
        except DiskError as exc:
            if self.disk_problem is None:
                raise
            # Already reported (that is the run's error line); the session stays open in the store
            # because the file cannot take one more write.
            log.debug("[%s] the local store cannot close the sync session: %s", run.section, exc)

    async def aclose(self) -> None:
        self.store.close()
