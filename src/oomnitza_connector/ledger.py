"""Change-aware sync: remember what Oomnitza confirmed, send only what changed (issue 15).

A state file (SQLite, ``sync-state.db`` in the state directory) keeps, per *scope* (target +
section), for each sync key: a digest of the payload last confirmed delivered, when the record
was first and last seen, when it was last sent, for how many complete runs it has been missing,
whether it was retired, and its delivered field values (for ``plan``'s before → after).

Public API (all calls are synchronous and short; see "Cost" for ``finish``)::

    scope = open_scope(
        state_path(state_dir),                    # the state file; created (0600) on first write
        target=Target(url, identity=token),       # identity: token or user; only a salted fingerprint is kept
        name="csv_assets",                        # section; managed: "managed:<integration id>";
                                                  # webhook syncs use their section's name
        mapping=digest_of(effective_mapping),     # any JSON-able description of mapping + converters
        sync_fields=["SERIAL_NUMBER"],
        options=ScopeOptions(full=args.full, full_sync_interval=timedelta(days=7),
                             filter=digest_of(recordfilter_text), retire_after_runs=0,
                             retire_max=RetireMax.parse("5%")),
        read_only=False,                          # True for `plan`: never writes
        clock=time.time,                          # injectable
    )
    scope.full, scope.full_reasons                # is this run a full push, and why
    verdicts = scope.classify(payloads)           # one Verdict per mapped payload, same order
    to_send = [p for p, v in zip(payloads, verdicts) if v.send]   # v.kind: new/changed/unchanged/unkeyed
    scope.mark_delivered(sent_verdicts)           # only after the sink confirmed that batch
    scope.previous(verdict)                       # stored values of a changed record (plan), or None
    report = scope.finish(complete=True)          # RunReport; complete = every record of the source
                                                  # was read and classified (no source error, no
                                                  # --record-count, no record lost before classify)
    retirement = scope.retirement()               # Retirement: candidates under the guard
    payloads = retirement.payloads({"STATUS": "Retired"})   # resolved retire_mapping values
    scope.mark_retired(retirement.candidates)     # only after the sink confirmed them
    scope.missing(limit=20)                       # (count, first records) not seen in this run
    scope.close()                                 # also a context manager; an unfinished scope
                                                  # finishes as incomplete (delivered marks are kept)

``describe_changes(before, after)`` renders field-level before → after lines for ``plan`` (long
values and secrets elided). Errors a user can meet are ``StateError`` (damaged, locked, newer
format) or ``DiskError`` (full or read-only disk), each one line.

Rules:

- A record is *new* (no state), *changed* (digest differs), *unchanged* (same digest) or
  *unkeyed* (no sync-field value: always sent, never remembered). ``send`` is false only for
  unchanged records outside a full push.
- Only ``mark_delivered`` writes a digest, so a failed or canceled run never marks a record it did
  not deliver. Marks are written in batches (one transaction per ``flush_rows`` records, and at
  ``finish``/``close``); a crash loses at most the unwritten marks, and those records are simply
  sent again next time. Batches may complete in any order: each mark is an upsert by key.
- A full push (every record sent) happens when there is no complete full push yet, ``--full``,
  the mapping (or sync fields) changed, the credentials' fingerprint changed, or the last complete
  full push is older than ``full_sync_interval``. It counts as done when the run was complete;
  until then every run is a full push. A record the full push did not get confirmed (a failed
  batch) is sent again by the following runs, unchanged or not, until it is: only what was
  delivered since the last full push began counts as delivered under its mapping. Another
  Oomnitza URL is another scope (its own state); ``full_reasons`` says when the state knows the
  section under another URL.
- Partial runs (``ScopeOptions(partial=True)``: webhook syncs of single devices, sources that read
  only what changed since their last run): such a run never completes a full push, so it does not
  wait for one. An unchanged record is sent again when its own last delivery is older than
  ``full_sync_interval`` (or unknown); every record is sent when ``--full`` is given or when the
  mapping or the credentials differ from those of the last complete full push. Finish a partial
  run with ``complete=False``: a record it did not see is not missing.
- Missing records: ``finish(complete=True)`` adds one to the missing count of each remembered,
  unretired record not seen in this run; a record seen in any run (complete or not) goes back to
  zero. A run whose record filter differs from the previous run's is treated as incomplete.
- Retirement (off unless ``retire_after_runs`` > 0): after a complete run, records missing for at
  least ``retire_after_runs`` complete runs are candidates. When they exceed ``retire_max`` (a count,
  or a percentage of the remembered records, default 5 %, rounded down) nothing at all is retired
  and the reason says why: a source that suddenly returns less is far more likely than a mass
  decommissioning. ``plan`` lists the same candidates (read-only, counting its own read as the
  next run). A retired record that reappears is *changed* and is sent again.
- Records not seen for ``PRUNE_AFTER`` (one year) that are missing or retired are forgotten.
- Other sync fields make other keys: the scope then forgets what it remembered (else every old
  key would look missing and be retired) and the run is a full push that says why.

Storage (budget: 1,000,000 records < 150 MB): a ``records`` row holds the key, a 64-bit digest,
integer timestamps, counters, and a (block, slot) reference; the delivered values are kept apart in
zstd-compressed *blocks* of up to ``BLOCK_ROWS`` records (one block per flush). Values are stored
without field names: a per-scope *layout* (the payload's non-key field names, pinned while the
mapping stays the same) turns a payload into a JSON array of values; a payload with other fields is
stored as a sorted JSON object. Those bytes are also the digest's input, so a record is encoded
once. Why blocks: stored raw, the values of the benchmark's 11-field assets take ~150 bytes a
record and the file ~220 MB per million; compressing one small record at a time saves little and
costs ~10 µs (a compressor state per call), whereas one call per block of a thousand records
brings the values to ~35 bytes a record (records repeat models, places, domains) and the file to
well under budget (see benchmarks/ledger_bench.py). A changed record is written to a new block;
its old slot becomes garbage, and blocks that are mostly garbage are rewritten (``_compact``) once
the slots written since the last compaction reach half of the live ones. Values larger than
``STORE_MAX`` bytes are not kept (``plan`` then shows no "before"); their digest still is. The
file is private (0600): it holds the values the connector sends.

The digest is XXH3-64 (``xxhash``) of those bytes: change detection compares a record only with its
own previous version, so a false "unchanged" needs a 1-in-2^64 coincidence per changed record; a
cryptographic hash would cost ~1 µs more per record (a tenth of the CPU budget). zstd (level 1)
compresses these blocks ~3x faster than zlib and slightly smaller.

Cost: ``classify`` is one encode + digest per record and, once something is remembered, one lookup
query per call (a range scan when the batch's keys are close together, as when a source lists
records in key order, else one probe per key); ``mark_delivered`` one insert per record, batched
per transaction; ``finish`` one pass over the scope that writes only records whose status changed
(a record seen in a complete run keeps ``last_seen`` NULL, meaning "the latest complete run"), so
a no-op run writes almost nothing. On large scopes call ``finish`` through ``asyncio.to_thread``.
A scope object may be used from one thread at a time (calls are serialized by a lock).

The file is in WAL mode while written (one writer at a time, readers never blocked) and switched
back to a rollback journal when the last writer closes, so a read-only ``plan`` on a quiet file
opens it with ``mode=ro`` and leaves no ``-wal``/``-shm`` files behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import operator
import os
import secrets
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import xxhash
import zstandard

from .diskio import describe_os_error, describe_sqlite_error, private_dir
from .errors import ConnectorError, DiskError
from .oomnitza.payload import _default as _json_default

STATE_FILE = "sync-state.db"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x4F6F4C67  # "OoLg": marks the file as ours (PRAGMA application_id)

NEW, CHANGED, UNCHANGED, UNKEYED = "new", "changed", "unchanged", "unkeyed"

BLOCK_ROWS = 1000  # records per compressed block
BLOCK_BYTES = 1 << 20  # and at most this many raw bytes per block
STORE_MAX = 16384  # a record's values larger than this are not kept (the digest is)
PRUNE_AFTER = timedelta(days=365)
COMPACT_MIN = 5000  # slots written since the last compaction before one is considered
COMPACT_MAX_ROWS = 200_000  # live slots rewritten by one compaction (bounded time)
SMALL_BLOCK = 64  # blocks this small are merged when compacting
IN_CHUNK = 500  # ids per IN (...) query
LOOKUP_CHUNK = 1000  # keys per lookup query (passed as one JSON array)
FLUSH_SECONDS = 5.0  # delivered marks wait at most this long (besides flush_rows) before being written
KDF_ITERATIONS = 20_000  # identity fingerprint: PBKDF2-SHA256 with a per-file salt
BUSY_TIMEOUT = 10.0  # seconds to wait for another writer

_DUMPS_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_digest = xxhash.xxh3_64_intdigest  # unsigned 64-bit; minus _SIGN it fits SQLite's signed INTEGER
_SIGN = 1 << 63
_compress = zstandard.ZstdCompressor(level=1).compress
_decompress = zstandard.ZstdDecompressor().decompress
# Remembered, unretired, not seen in this run (records sent in this run were seen, even when the
# run began with nothing remembered and so kept no list of seen keys). Parameters: scope, and
# Scope._unseen_before: the run's start when it began with nothing remembered, else no bound (the
# list of seen keys is then whole, and a record delivered by the previous run within the same
# second as this run began must still count as missing).
_UNSEEN = (
    "scope=? AND retired IS NULL AND key NOT IN (SELECT key FROM temp.seen) AND (last_sent IS NULL OR last_sent < ?)"
)
# When a record was last seen: its own last_seen once it went missing (or was seen in an incomplete
# run); otherwise the latest complete run, or its last delivery when that is later. Keeping NULL
# for "seen in the latest complete run" spares a write per record and run. Parameter: the scope's
# last complete run.
_LAST_SEEN = "COALESCE(last_seen, max(COALESCE(last_sent, 0), ?))"
# Lookups fetch only what classify compares (where the values are kept is read by previous()).
_RANGE = "SELECT key, digest, last_sent FROM records WHERE scope=? AND key BETWEEN ? AND ? LIMIT ?"
_PROBE = "SELECT key, digest, last_sent FROM records WHERE scope=? AND key IN (SELECT value FROM json_each(?))"
_UPSERT = (
    "INSERT INTO records (scope, key, digest, first_seen, last_seen, last_sent, missing, retired, block, slot) "
    "SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?2, NULL, ?2, 0, NULL, ?3, key "
    "FROM json_each(?4) WHERE true ON CONFLICT (scope, key) DO UPDATE SET digest=excluded.digest, "
    "last_seen=excluded.last_seen, last_sent=excluded.last_sent, missing=0, retired=NULL, "
    "block=excluded.block, slot=excluded.slot"
)
_KEY_SEP = "\x1f"
_blob_of = operator.itemgetter(4)  # Verdict.blob
_NO_BOUND = 1 << 62

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS scopes (
    id               INTEGER PRIMARY KEY,
    target           TEXT NOT NULL,
    name             TEXT NOT NULL,
    identity         TEXT,
    mapping          TEXT,
    filter           TEXT,
    sync_fields      TEXT NOT NULL,
    layout           INTEGER,
    created_at       INTEGER NOT NULL,
    last_run_at      INTEGER,
    last_complete_at INTEGER,
    last_full_at     INTEGER,
    runs             INTEGER NOT NULL DEFAULT 0,
    complete_runs    INTEGER NOT NULL DEFAULT 0,
    slots_written    INTEGER NOT NULL DEFAULT 0,
    slots_live       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (target, name)
);
CREATE TABLE IF NOT EXISTS layouts (id INTEGER PRIMARY KEY, fields TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS blocks (
    id     INTEGER PRIMARY KEY,
    scope  INTEGER NOT NULL,
    layout INTEGER,
    total  INTEGER NOT NULL,
    data   BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS blocks_by_scope ON blocks (scope);
CREATE TABLE IF NOT EXISTS records (
    scope      INTEGER NOT NULL,
    key        TEXT NOT NULL,
    digest     INTEGER,  -- NULL once retired: a record that comes back is sent again
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER,  -- NULL: seen in the latest complete run (see _LAST_SEEN)
    last_sent  INTEGER,
    missing    INTEGER NOT NULL DEFAULT 0,
    retired    INTEGER,
    block      INTEGER,
    slot       INTEGER,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
"""


# What a read-only run sees of a scope the file does not hold (yet).
_NOTHING_YET: dict[str, Any] = {
    "id": -1,
    "identity": None,
    "mapping": None,
    "filter": None,
    "layout": None,
    "last_full_at": None,
    "last_complete_at": None,
    "runs": 0,
    "sync_fields": "[]",
}


class StateError(ConnectorError):
    """The state file cannot be used (damaged, locked, written by a newer version); one line."""


# -- small value types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where records go. ``identity`` (token or user name) is secret-safe: only a salted, slow
    fingerprint of it is stored, and it never appears in ``repr``."""

    url: str
    identity: str = field(default="", repr=False)
    what: str = "the Oomnitza credentials"  # what ``identity`` is, for the full-push reason

    def normalized_url(self) -> str:
        """Scheme and host in lower case, no trailing slash: the same tenant gives the same text."""
        text = self.url.strip()
        parts = urllib.parse.urlsplit(text)
        if parts.scheme.lower() in ("http", "https") and parts.netloc:
            return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", ""))
        return text


@dataclass(frozen=True)
class RetireMax:
    """The retirement guard: at most ``count`` records, or ``percent`` of the remembered ones."""

    count: int | None = None
    percent: float | None = 5.0

    @classmethod
    def parse(cls, text: str) -> RetireMax:
        """``"5%"`` or ``"50"``; ``ValueError`` with a message fit for a ``[section] key`` line."""
        value = str(text).strip()
        try:
            if value.endswith("%"):
                percent = float(value[:-1])
                if not 0 <= percent <= 100:
                    raise ValueError
                return cls(count=None, percent=percent)
            count = int(value)
            if count < 0:
                raise ValueError
            return cls(count=count, percent=None)
        except ValueError:
            raise ValueError(f"{text!r} is not a record count (50) or a percentage (5%)") from None

    def limit(self, remembered: int) -> int:
        if self.count is not None:
            return self.count
        return math.floor(remembered * (self.percent or 0.0) / 100.0)

    def describe(self) -> str:
        return f"{self.count}" if self.count is not None else f"{self.percent:g}%"


@dataclass(frozen=True)
class ScopeOptions:
    full: bool = False  # --full
    full_sync_interval: timedelta = timedelta(days=7)  # 0 = every run is a full push
    filter: str = ""  # digest of the section's record filter ("" = none)
    retire_after_runs: int = 0  # 0 = retirement off
    retire_max: RetireMax = RetireMax()
    flush_rows: int = BLOCK_ROWS  # delivered marks written per transaction
    # The run reads only some records (webhook syncs, incremental sources): see "Partial runs".
    partial: bool = False


class Verdict(tuple):
    """What ``classify`` decided for one payload. Keep it with the payload until the sink
    answers, then hand it to ``mark_delivered``. (A tuple underneath: one is made per record.)

    ``key``: the sync key (``None`` for *unkeyed*), ``kind``: new / changed / unchanged / unkeyed,
    ``send``: whether to send it in this run."""

    __slots__ = ()

    key: str | None = property(operator.itemgetter(0))  # type: ignore[assignment]
    kind: str = property(operator.itemgetter(1))  # type: ignore[assignment]
    send: bool = property(operator.itemgetter(2))  # type: ignore[assignment]
    digest: int | None = property(operator.itemgetter(3))  # type: ignore[assignment]
    blob: bytes = property(operator.itemgetter(4))  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Verdict({self[0]!r}, {self[1]}, send={self[2]})"


_new_verdict = tuple.__new__


def _verdict(
    key: str | None,
    kind: str,
    send: bool,
    digest: int | None = None,
    blob: bytes = b"",
) -> Verdict:
    return _new_verdict(Verdict, (key, kind, send, digest, blob))


@dataclass(frozen=True)
class Candidate:
    """A record proposed for retirement (or listed as missing)."""

    key: tuple[str, ...]
    missing_runs: int
    last_seen: int
    last_sent: int | None


@dataclass
class Retirement:
    enabled: bool
    allowed: bool
    reason: str  # why nothing is retired, or what is retired
    total: int  # candidates found
    limit: int  # what the guard allows
    candidates: list[Candidate]  # all of them when allowed, else the first few
    sync_fields: tuple[str, ...] = ()

    def payloads(self, fields: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The records to send: each candidate's sync-field values plus the retire fields."""
        if not self.allowed:
            return []
        return [{**dict(zip(self.sync_fields, c.key, strict=True)), **fields} for c in self.candidates]


@dataclass
class RunReport:
    full: bool
    full_reasons: tuple[str, ...]
    complete: bool
    incomplete_reason: str | None
    counts: dict[str, int]  # new, changed, unchanged, unkeyed, sent (verdicts to send), delivered
    missing: int  # remembered records not seen in this run (retired ones excluded)
    full_push_done: bool  # the full push completed and is remembered


# -- helpers ----------------------------------------------------------------------------------------


def state_path(state_dir: Path | str) -> Path:
    return Path(state_dir) / STATE_FILE


def digest_of(obj: Any) -> str:
    """A stable hex digest of any JSON-able description (mapping specs, filter text, options)."""
    data = orjson.dumps(obj, option=_DUMPS_OPTS, default=lambda o: repr(o))
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def key_parts(key: str) -> tuple[str, ...]:
    return tuple(key.split(_KEY_SEP))


def _fingerprint(identity: str, salt: bytes) -> str:
    if not identity:
        return ""
    return hashlib.pbkdf2_hmac("sha256", identity.encode("utf-8"), salt, KDF_ITERATIONS, dklen=16).hex()


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _humanize(seconds: float) -> str:
    days = seconds / 86400
    if days >= 1:
        return f"{days:.1f} days"
    return f"{seconds / 3600:.1f} hours"


def _elide(value: Any, max_len: int) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, option=_DUMPS_OPTS, default=repr).decode()
    if len(text) <= max_len:
        return text
    return f"{text[: max(0, max_len - 20)]}… ({len(text)} chars)"


def describe_changes(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    *,
    secret_fields: Iterable[str] = (),
    max_len: int = 60,
    scrub: Callable[[str], str] | None = None,
) -> list[tuple[str, str, str]]:
    """``(field, before, after)`` for each field whose value differs, as display strings: values
    longer than ``max_len`` are cut, fields in ``secret_fields`` (and values the ``scrub`` function
    masks, e.g. ``redact.scrub``) show as ``********``. ``before`` None (not kept) shows ``?``."""
    hidden = {f.upper() for f in secret_fields}
    masked = "********"
    rows: list[tuple[str, str, str]] = []
    names = list(after) + [n for n in (before or {}) if n not in after]
    for name in names:
        new = after.get(name)
        old = before.get(name) if before is not None else None
        if before is not None and name in before and name in after and old == new:
            continue
        if before is not None and name not in after:
            continue  # a field no longer sent keeps its value in Oomnitza
        if name.upper() in hidden:
            rows.append((name, masked, masked))
            continue
        old_text = "?" if before is None else ("(none)" if name not in before else _elide(old, max_len))
        new_text = _elide(new, max_len)
        if scrub is not None:
            old_text, new_text = scrub(old_text), scrub(new_text)
        rows.append((name, old_text, new_text))
    return rows


# -- opening the file --------------------------------------------------------------------------------


def _state_error(exc: sqlite3.Error, path: Path) -> ConnectorError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StateError(
            f"{path} is locked by another connector process; wait until it finishes (or stop it) and run again"
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StateError(
            f"{path} is damaged or not a sync state file ({exc}); move it aside and run again "
            "(the next run then sends every record)"
        )
    return DiskError(f"sync state: {describe_sqlite_error(exc, path)}")


def _connect(path: Path, read_only: bool, busy_timeout: float) -> sqlite3.Connection:
    if read_only:
        uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    try:
        private_dir(path.parent)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise DiskError(f"sync state: {describe_os_error(exc, path)}") from None
    return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout)


def _empty_state() -> sqlite3.Connection:
    """What a read-only open of a file that does not exist (yet) sees: nothing remembered."""
    db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    _create_schema(db)
    return db


def _create_schema(db: sqlite3.Connection) -> None:
    # executescript commits any open transaction first, so the script carries its own.
    db.executescript(
        f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA application_id = {APPLICATION_ID};"
        f"PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
    )


def _check_format(db: sqlite3.Connection, path: Path) -> bool:
    """Whether the file holds a state (False: empty, nothing written yet). Raises ``StateError``
    for another program's database or a newer format."""
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if tables and app_id != APPLICATION_ID:
        raise StateError(f"{path} is not a sync state file (another program's database); choose another state folder")
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{path} was written by a newer connector (state format {version}, this one reads up to "
            f"{SCHEMA_VERSION}); upgrade the connector, or move the file aside to start over"
        )
    return bool(tables)


def _require_json(db: sqlite3.Connection) -> None:
    try:
        db.execute("SELECT count(*) FROM json_each('[1]')").fetchone()
    except sqlite3.OperationalError:
        raise StateError(
            f"this Python's SQLite ({sqlite3.sqlite_version}) has no JSON functions, which change-aware sync "
            "needs: use a Python built with SQLite 3.38 or later (or with JSON1)"
        ) from None


def open_scope(
    path: Path | str,
    *,
    target: Target,
    name: str,
    mapping: str,
    sync_fields: Sequence[str],
    options: ScopeOptions | None = None,
    read_only: bool = False,
    clock: Callable[[], float] = time.time,
    busy_timeout: float = BUSY_TIMEOUT,
) -> Scope:
    """Open (or, unless ``read_only``, create) the state of one target and section.

    ``read_only`` opens the file with ``mode=ro`` and never writes; a missing file reads as empty
    (every record new)."""
    path = Path(path)
    db: sqlite3.Connection | None = None
    try:
        if read_only and not path.exists():
            db = _empty_state()
        else:
            db = _connect(path, read_only, busy_timeout)
            if not _check_format(db, path):
                if read_only:
                    db.close()
                    db = _empty_state()
                else:
                    _create_schema(db)
        if not read_only:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        _require_json(db)
        db.execute("CREATE TEMP TABLE seen (key TEXT PRIMARY KEY) WITHOUT ROWID")
        return Scope(db, path, target, name, mapping, list(sync_fields), options or ScopeOptions(), read_only, clock)
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise _state_error(exc, path) from None
    except BaseException:
        if db is not None:
            db.close()
        raise


# -- the scope ----------------------------------------------------------------------------------------


class Scope:
    """The state of one target + section for one run. Create with :func:`open_scope`."""

    def __init__(
        self,
        db: sqlite3.Connection,
        path: Path,
        target: Target,
        name: str,
        mapping: str,
        sync_fields: list[str],
        options: ScopeOptions,
        read_only: bool,
        clock: Callable[[], float],
    ) -> None:
        if not sync_fields:
            raise ValueError("a sync scope needs at least one sync field")
        self.db, self.path, self.name = db, path, name
        self.target_url = target.normalized_url()
        self._identity_changed = f"{target.what} changed"
        self.sync_fields = tuple(sync_fields)
        self.options, self.read_only, self.clock = options, read_only, clock
        self.started = int(clock())
        self._lock = threading.RLock()
        self.mapping = digest_of({"mapping": mapping, "sync_fields": self.sync_fields})
        self.counts = dict.fromkeys((NEW, CHANGED, UNCHANGED, UNKEYED, "sent", "delivered"), 0)
        self._pending: list[Verdict] = []
        self._pending_since = 0.0
        self._finished: RunReport | None = None
        self._complete = False
        self._closed = False
        self._block_cache: dict[int, tuple[int | None, list[bytes]]] = {}
        self._layouts: dict[int, list[str]] = {}
        self._key = self._key_getter()
        salt = self._salt()
        self._identity = _fingerprint(target.identity, salt) if salt else ""
        row = self._load_or_create()
        self._restarted = row["id"] >= 0 and orjson.loads(row["sync_fields"]) != list(self.sync_fields)
        if self._restarted:
            row = self._start_over(row)
        self.id: int = row["id"]
        self.full, self.full_reasons = self._decide_full(row)
        # An unchanged record last delivered before this is sent again: one the last full push did
        # not get confirmed, and in a partial run one not delivered for full_sync_interval.
        stale = [row["last_full_at"] or 0]
        if options.partial:
            stale.append(self.started - int(options.full_sync_interval.total_seconds()) + 1)
        self._stale_before: int | None = max(stale) or None
        self.filter_changed = row["id"] >= 0 and row["runs"] > 0 and (row["filter"] or "") != options.filter
        self._range_skip = self._range_misses = 0
        self._last_complete: int | None = row["last_complete_at"]
        self._remembered = row["id"] >= 0 and (
            self.db.execute("SELECT 1 FROM records WHERE scope=? LIMIT 1", (row["id"],)).fetchone() is not None
        )
        self._unseen_before = _NO_BOUND if self._remembered else self.started
        # The value layout: pinned while the mapping stays; otherwise taken from the first payload.
        self._layout_id: int | None = row["layout"] if row["mapping"] == self.mapping else None
        self._layout: list[str] | None = self._layout_fields(self._layout_id) if self._layout_id else None
        self._layout_get: Callable[[Mapping[str, Any]], Any] | None = None
        if self._layout is not None:
            self._layout_get = self._getter(self._layout)

    # -- setup -------------------------------------------------------------------------------------
    def _salt(self) -> bytes:
        row = self.db.execute("SELECT value FROM meta WHERE name='salt'").fetchone()
        if row:
            return bytes(row[0])
        if self.read_only:
            return b""
        salt = secrets.token_bytes(16)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('salt', ?)", (salt,))
        return bytes(self.db.execute("SELECT value FROM meta WHERE name='salt'").fetchone()[0])

    def _load_or_create(self) -> dict[str, Any]:
        self.db.row_factory = sqlite3.Row
        try:
            query = "SELECT * FROM scopes WHERE target=? AND name=?"
            row = self.db.execute(query, (self.target_url, self.name)).fetchone()
            if row is None and not self.read_only:
                self.db.execute(
                    "INSERT OR IGNORE INTO scopes (target, name, sync_fields, created_at) VALUES (?, ?, ?, ?)",
                    (self.target_url, self.name, orjson.dumps(self.sync_fields).decode(), self.started),
                )
                row = self.db.execute(query, (self.target_url, self.name)).fetchone()
            self._elsewhere = self.db.execute(
                "SELECT count(*) FROM scopes WHERE name=? AND target<>?", (self.name, self.target_url)
            ).fetchone()[0]
        finally:
            self.db.row_factory = None
        if row is None:  # read-only, nothing known yet
            return _NOTHING_YET
        return dict(row)

    def _start_over(self, row: dict[str, Any]) -> dict[str, Any]:
        """Other sync fields make other keys: what is remembered under the old ones would all look
        missing (and be retired). Forget it (read-only: pretend it is gone)."""
        if self.read_only:
            return dict(_NOTHING_YET)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM records WHERE scope=?", (row["id"],))
            db.execute("DELETE FROM blocks WHERE scope=?", (row["id"],))
            db.execute(
                "UPDATE scopes SET sync_fields=?, mapping=NULL, layout=NULL, last_full_at=NULL, runs=0, "
                "complete_runs=0, slots_written=0, slots_live=0 WHERE id=?",
                (orjson.dumps(self.sync_fields).decode(), row["id"]),
            )
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return {**row, "mapping": None, "layout": None, "last_full_at": None, "runs": 0}

    def _decide_full(self, row: Mapping[str, Any]) -> tuple[bool, tuple[str, ...]]:
        reasons: list[str] = []
        if self.options.full:
            reasons.append("--full was given")
        if self.options.partial:  # judged per record (see "Partial runs"), except what the scope knows
            if row["last_full_at"] is not None and row["mapping"] != self.mapping:
                reasons.append("the mapping, converters or sync fields changed")
            if row["last_full_at"] is not None and (row["identity"] or "") != self._identity:
                reasons.append(self._identity_changed)
            return bool(reasons), tuple(reasons)
        if row["last_full_at"] is None:
            if self._restarted:
                reasons.append("the sync fields changed: the state starts over")
            elif row["runs"] == 0 and self._elsewhere:
                reasons.append("first run against this Oomnitza URL (the state knows the section for another URL)")
            elif row["runs"] == 0:
                reasons.append("first run: nothing remembered yet")
            else:
                reasons.append("no complete full push yet")
        else:
            if row["mapping"] != self.mapping:
                reasons.append("the mapping, converters or sync fields changed")
            if (row["identity"] or "") != self._identity:
                reasons.append(self._identity_changed)
            age = self.started - row["last_full_at"]
            interval = self.options.full_sync_interval.total_seconds()
            if age >= interval:
                reasons.append(
                    f"the last full push was {_humanize(age)} ago (full_sync_interval: {_humanize(interval)})"
                )
        return bool(reasons), tuple(reasons)

    def _key_getter(self) -> Callable[[Mapping[str, Any]], str | None]:
        fields = self.sync_fields
        if len(fields) == 1:
            only = fields[0]

            def single(payload: Mapping[str, Any]) -> str | None:
                value = payload.get(only)
                if value is None or value == "":
                    return None
                return value if type(value) is str else str(value)

            return single

        def composite(payload: Mapping[str, Any]) -> str | None:
            parts = ["" if (v := payload.get(f)) is None else str(v) for f in fields]
            return _KEY_SEP.join(parts) if any(parts) else None

        return composite

    @staticmethod
    def _getter(fields: Sequence[str]) -> Callable[[Mapping[str, Any]], Any]:
        if len(fields) >= 2:
            return operator.itemgetter(*fields)
        if len(fields) == 1:
            only = fields[0]
            return lambda p: (p[only],)
        return lambda p: ()

    def _layout_fields(self, layout_id: int | None) -> list[str] | None:
        if layout_id is None:
            return None
        if layout_id not in self._layouts:
            row = self.db.execute("SELECT fields FROM layouts WHERE id=?", (layout_id,)).fetchone()
            if row is None:
                return None
            self._layouts[layout_id] = orjson.loads(row[0])
        return self._layouts[layout_id]

    # -- classify ----------------------------------------------------------------------------------
    def _set_layout(self, payload: Mapping[str, Any]) -> None:
        keyset = set(self.sync_fields)
        self._layout = [f for f in payload if f not in keyset]
        self._layout_get = self._getter(self._layout)

    def _encode_other(self, payload: Mapping[str, Any]) -> bytes:
        """A payload whose fields differ from the layout: a sorted object without the sync fields."""
        keyset = set(self.sync_fields)
        rest = {k: v for k, v in payload.items() if k not in keyset}
        return orjson.dumps(rest, option=_DUMPS_OPTS, default=_json_default)

    def classify(self, payloads: Sequence[Mapping[str, Any]]) -> list[Verdict]:
        """One verdict per payload (same order). Also notes every key as seen in this run."""
        with self._lock:
            self._check_open()
            if self._layout_get is None:
                for payload in payloads:
                    self._set_layout(payload)
                    break
            key_of, getter, other = self._key, self._layout_get, self._encode_other
            width = len(self._layout or ()) + len(self.sync_fields)
            dumps, digest_of_blob = orjson.dumps, _digest
            per_payload: list[str | None] = []  # parallel lists: fewer objects for the collector
            keys: list[str] = []
            blobs: list[bytes] = []
            digests: list[int] = []
            for payload in payloads:
                key = key_of(payload)
                per_payload.append(key)
                if key is None:
                    continue
                if len(payload) == width:
                    try:
                        blob = dumps(getter(payload), option=_DUMPS_OPTS, default=_json_default)  # type: ignore[misc]
                    except KeyError:
                        blob = other(payload)
                else:
                    blob = other(payload)
                keys.append(key)
                blobs.append(blob)
                digests.append(digest_of_blob(blob) - _SIGN)
            if not self._remembered:  # a first run: everything keyed is new, no lookups
                return self._all_new(per_payload, keys, blobs, digests)
            known = self._lookup(keys)
            return self._verdicts(per_payload, keys, blobs, digests, known)

    def _all_new(
        self, per_payload: list[str | None], keys: list[str], blobs: list[bytes], digests: list[int]
    ) -> list[Verdict]:
        counts, new = self.counts, _new_verdict
        unkeyed = len(per_payload) - len(keys)
        counts[NEW] += len(keys)
        counts[UNKEYED] += unkeyed
        counts["sent"] += len(per_payload)
        verdicts = [new(Verdict, (k, NEW, True, d, b)) for k, d, b in zip(keys, digests, blobs, strict=True)]
        if unkeyed:
            it = iter(verdicts)
            verdicts = [next(it) if key is not None else _verdict(None, UNKEYED, True) for key in per_payload]
        return verdicts

    def _verdicts(
        self,
        per_payload: list[str | None],
        keys: list[str],
        blobs: list[bytes],
        digests: list[int],
        known: dict[str, tuple[Any, ...]],
    ) -> list[Verdict]:
        full, counts, stale = self.full, self.counts, self._stale_before
        verdicts: list[Verdict] = []
        append, new = verdicts.append, _new_verdict
        index = 0
        for key in per_payload:
            if key is None:
                counts[UNKEYED] += 1
                counts["sent"] += 1
                append(_verdict(None, UNKEYED, True))
                continue
            digest, blob = digests[index], blobs[index]
            index += 1
            prev = known.get(key)
            if prev is None:
                counts[NEW] += 1
                counts["sent"] += 1
                append(new(Verdict, (key, NEW, True, digest, blob)))
                continue
            kind = UNCHANGED if prev[1] == digest else CHANGED
            send = full or kind is CHANGED or (stale is not None and (prev[2] is None or prev[2] < stale))
            counts[kind] += 1
            counts["sent"] += send
            append(new(Verdict, (key, kind, send, digest, blob)))
        return verdicts

    def _lookup(self, keys: list[str]) -> dict[str, tuple[Any, ...]]:
        """``key -> (key, digest, block, slot)`` of the known keys (and maybe a few neighbours);
        notes the keys as seen. Skipped while the scope had no records when the run began.

        Sources often list records in key order; then one range scan over the batch's smallest to
        largest key reads the batch's rows several times faster than looking each key up. When
        that range holds far more rows than the batch, keys are looked up one by one, and after a
        few such batches ranges are not tried for a while."""
        if not keys or not self._remembered:
            return {}
        db = self.db
        found: dict[str, tuple[Any, ...]] | None = None
        try:
            packed = orjson.dumps(keys)
            if self._range_skip > 0:
                self._range_skip -= 1
            else:
                limit = 2 * len(keys) + 16
                rows = db.execute(_RANGE, (self.id, min(keys), max(keys), limit)).fetchall()
                if len(rows) < limit:
                    found = {row[0]: row for row in rows}
                    self._range_misses = 0
                else:
                    self._range_misses += 1
                    if self._range_misses >= 3:
                        self._range_skip, self._range_misses = 64, 0
            if found is None:
                found = {row[0]: row for row in db.execute(_PROBE, (self.id, packed))}
            db.execute("INSERT OR IGNORE INTO temp.seen (key) SELECT value FROM json_each(?)", (packed,))
        except sqlite3.Error as exc:
            raise _state_error(exc, self.path) from None
        return found

    # -- delivered ---------------------------------------------------------------------------------
    def mark_delivered(self, verdicts: Iterable[Verdict]) -> None:
        """Remember these records as delivered. Call only after the sink confirmed their batch."""
        with self._lock:
            self._check_open()
            if self.read_only:
                raise RuntimeError("a read-only sync state cannot mark records delivered")
            pending = self._pending
            before = len(pending)
            if not before:
                self._pending_since = time.monotonic()
            pending.extend(verdicts)
            self.counts["delivered"] += len(pending) - before
            if len(pending) >= max(1, self.options.flush_rows) or (
                pending and time.monotonic() - self._pending_since >= FLUSH_SECONDS
            ):
                self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        fresh = [v for v in pending if v[1] is NEW or v[1] is CHANGED]
        same = [v[0] for v in pending if v[1] is UNCHANGED]
        if not fresh and not same:
            return
        now = int(self.clock())
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            if fresh:
                layout_id = self._store_layout()
                for chunk in self._block_chunks(fresh):
                    raw = b"\n".join([v[4] if len(v[4]) <= STORE_MAX else b"" for v in chunk])
                    block_id = db.execute(
                        "INSERT INTO blocks (scope, layout, total, data) VALUES (?, ?, ?, ?)",
                        (self.id, layout_id, len(chunk), _compress(raw)),
                    ).lastrowid
                    db.execute(_UPSERT, (self.id, now, block_id, orjson.dumps([(v[0], v[3]) for v in chunk])))
                db.execute(
                    "UPDATE scopes SET slots_written = slots_written + ?, layout = ? WHERE id = ?",
                    (len(fresh), layout_id, self.id),
                )
            if same:
                db.execute(
                    "UPDATE records SET last_sent=?1, last_seen=NULL, missing=0 "
                    "WHERE scope=?2 AND key IN (SELECT value FROM json_each(?3))",
                    (now, self.id, orjson.dumps(same)),
                )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _state_error(exc, self.path) from None
        except BaseException:
            self._rollback()
            raise

    @staticmethod
    def _block_chunks(verdicts: list[Verdict]) -> Iterator[list[Verdict]]:
        """Groups of at most ``BLOCK_ROWS`` records and (roughly) ``BLOCK_BYTES`` of values."""
        start = 0
        while start < len(verdicts):
            chunk = verdicts[start : start + BLOCK_ROWS]
            while len(chunk) > 1 and sum(map(len, map(_blob_of, chunk))) > BLOCK_BYTES:
                chunk = chunk[: len(chunk) // 2]
            yield chunk
            start += len(chunk)

    def _store_layout(self) -> int | None:
        if self._layout is None:
            return None
        if self._layout_id is None:
            text = orjson.dumps(self._layout).decode()
            self.db.execute("INSERT OR IGNORE INTO layouts (fields) VALUES (?)", (text,))
            self._layout_id = self.db.execute("SELECT id FROM layouts WHERE fields=?", (text,)).fetchone()[0]
            self._layouts[self._layout_id] = list(self._layout)
        return self._layout_id

    # -- reading back ------------------------------------------------------------------------------
    def previous(self, verdict: Verdict) -> dict[str, Any] | None:
        """The values last delivered for this record (sync fields included), or None when the
        record is new or its values were not kept. Ask before marking the record delivered."""
        with self._lock:
            if verdict.key is None or verdict.kind is NEW:
                return None
            try:
                where = self.db.execute(
                    "SELECT block, slot FROM records WHERE scope=? AND key=?", (self.id, verdict.key)
                ).fetchone()
                block = self._read_block(where[0]) if where is not None and where[0] is not None else None
            except sqlite3.Error as exc:
                raise _state_error(exc, self.path) from None
            if block is None:
                return None
            slot = where[1]
            layout_id, blobs = block
            if slot is None or slot >= len(blobs) or not blobs[slot]:
                return None
            values = orjson.loads(blobs[slot])
            if isinstance(values, dict):
                rest = values
            else:
                names = self._layout_fields(layout_id)
                if names is None or len(names) != len(values):
                    return None
                rest = dict(zip(names, values, strict=True))
            return {**dict(zip(self.sync_fields, key_parts(verdict.key), strict=False)), **rest}

    def _read_block(self, block_id: int) -> tuple[int | None, list[bytes]] | None:
        cached = self._block_cache.get(block_id)
        if cached is not None:
            return cached
        row = self.db.execute("SELECT layout, data FROM blocks WHERE id=?", (block_id,)).fetchone()
        if row is None:
            return None
        if len(self._block_cache) >= 8:
            self._block_cache.pop(next(iter(self._block_cache)))
        result = (row[0], _decompress(row[1]).split(b"\n"))
        self._block_cache[block_id] = result
        return result

    def missing(self, limit: int = 20) -> tuple[int, list[Candidate]]:
        """Remembered, unretired records not seen in this run: how many, and the first ``limit``
        (longest missing first). ``missing_runs`` counts complete runs before this one."""
        with self._lock:
            if self.id < 0:
                return 0, []
            where = _UNSEEN
            try:
                args = (self.id, self._unseen_before)
                total = self.db.execute(f"SELECT count(*) FROM records WHERE {where}", args).fetchone()[0]
                rows = self.db.execute(
                    f"SELECT key, missing, {_LAST_SEEN} AS seen, last_sent FROM records WHERE {where} "
                    "ORDER BY missing DESC, seen, key LIMIT ?",
                    (self._last_complete or 0, *args, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise _state_error(exc, self.path) from None
            return total, [Candidate(key_parts(k), m, s, t) for k, m, s, t in rows]

    # -- end of the run ----------------------------------------------------------------------------
    def finish(self, *, complete: bool, read_to_end: bool | None = None) -> RunReport:
        """Write the pending marks and the run's bookkeeping. ``complete``: every record of the
        source was read and classified. ``read_to_end`` (default: ``complete``): the source was
        read to its end, though some records could not be mapped (so their keys are unknown and
        the run is not complete): a full push is still done, for those records cannot be sent
        anyway; else one record with a bad value would make every run a full push.
        Read-only: computes the same report, writes nothing."""
        with self._lock:
            self._check_open()
            if self._finished is not None:
                return self._finished
            reason = None
            if not complete:
                reason = "the run did not read every record"
            elif self.filter_changed:
                complete, reason = False, "the record filter changed since the last run"
            self._complete = complete
            read_to_end = complete if read_to_end is None else read_to_end and not self.filter_changed
            full_done = self.full and (complete or read_to_end) and not self.read_only
            try:
                if self.read_only:
                    missing = self.missing(limit=0)[0]
                else:
                    self._flush()
                    missing = self._finish_writes(complete, full_done)
            except sqlite3.Error as exc:
                self._rollback()
                raise _state_error(exc, self.path) from None
            self._finished = RunReport(
                full=self.full,
                full_reasons=self.full_reasons,
                complete=complete,
                incomplete_reason=reason,
                counts=dict(self.counts),
                missing=missing,
                full_push_done=full_done,
            )
            return self._finished

    def _finish_writes(self, complete: bool, full_done: bool) -> int:
        now = int(self.clock())
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            args = (self.id, self._unseen_before)
            if complete:
                # Seen rows keep last_seen NULL ("the latest complete run"): only rows whose status
                # changes are written, so a no-op run writes almost nothing.
                # "+key": scan the scope, testing the cheap columns first, rather than probe the
                # records once per seen key (5x slower when, as usual, no record has to change).
                db.execute(
                    "UPDATE records SET missing=0, last_seen=NULL WHERE scope=? "
                    "AND (missing > 0 OR last_seen IS NOT NULL) AND +key IN (SELECT key FROM temp.seen)",
                    (self.id,),
                )
                missing = db.execute(
                    f"UPDATE records SET missing = missing + 1, last_seen = {_LAST_SEEN} WHERE {_UNSEEN}",
                    (self._last_complete or 0, *args),
                ).rowcount
                cutoff = now - int(PRUNE_AFTER.total_seconds())
                db.execute(
                    "DELETE FROM records WHERE scope=? AND last_seen < ? AND (retired IS NOT NULL OR missing > 0)",
                    (self.id, cutoff),
                )
            else:
                db.execute(
                    "UPDATE records SET missing=0, last_seen=? WHERE scope=? AND key IN (SELECT key FROM temp.seen)",
                    (now, self.id),
                )
                missing = db.execute(f"SELECT count(*) FROM records WHERE {_UNSEEN}", args).fetchone()[0]
            db.execute(
                "UPDATE scopes SET last_run_at=?, runs=runs+1, filter=?, "
                "last_complete_at = CASE WHEN ? THEN ? ELSE last_complete_at END, "
                "complete_runs = complete_runs + ? WHERE id=?",
                (now, self.options.filter, complete, now, int(complete), self.id),
            )
            if full_done:
                db.execute(
                    "UPDATE scopes SET last_full_at=?, mapping=?, identity=?, sync_fields=? WHERE id=?",
                    (self.started, self.mapping, self._identity, orjson.dumps(self.sync_fields).decode(), self.id),
                )
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if complete:
            self._last_complete = now
        self._compact_if_due()
        return missing

    # -- retirement --------------------------------------------------------------------------------
    def retirement(self, sample: int = 20) -> Retirement:
        """The records a complete run retires, under the guard. Call after :meth:`finish`."""
        with self._lock:
            if self._finished is None:
                raise RuntimeError("call finish() before retirement()")
            after = self.options.retire_after_runs
            guard = self.options.retire_max

            def nothing(reason: str, enabled: bool = True) -> Retirement:
                return Retirement(enabled, False, reason, 0, 0, [], self.sync_fields)

            if after <= 0:
                return nothing("retirement is off (retire_after_runs = 0)", enabled=False)
            if not self._complete:
                why = self._finished.incomplete_reason or "the run was incomplete"
                return nothing(f"nothing is retired after an incomplete run: {why}")
            if self.id < 0:
                return nothing("nothing is remembered yet")
            if self.read_only:  # count this (planned) run as the next complete one
                where = "scope=? AND retired IS NULL AND missing + 1 >= ? AND key NOT IN (SELECT key FROM temp.seen)"
            else:
                where = "scope=? AND retired IS NULL AND missing >= ?"
            try:
                remembered = self.db.execute(
                    "SELECT count(*) FROM records WHERE scope=? AND retired IS NULL", (self.id,)
                ).fetchone()[0]
                total = self.db.execute(f"SELECT count(*) FROM records WHERE {where}", (self.id, after)).fetchone()[0]
                limit = guard.limit(remembered)
                allowed = 0 < total <= limit
                rows = self.db.execute(
                    f"SELECT key, missing, {_LAST_SEEN} AS seen, last_sent FROM records WHERE {where} "
                    "ORDER BY missing DESC, seen, key LIMIT ?",
                    (self._last_complete or 0, self.id, after, total if allowed else sample),
                ).fetchall()
            except sqlite3.Error as exc:
                raise _state_error(exc, self.path) from None
            bump = 1 if self.read_only else 0
            candidates = [Candidate(key_parts(k), m + bump, s, t) for k, m, s, t in rows]
            if total == 0:
                reason = f"no record has been missing for {after} complete runs"
            elif allowed:
                reason = f"{total} record(s) missing for {after}+ complete runs are retired"
            else:
                reason = (
                    f"{total} records have been missing for {after}+ complete runs, more than retire_max "
                    f"({guard.describe()} of {remembered} = {limit}) allows: nothing is retired; check the "
                    "source, or raise retire_max if they really are gone"
                )
            return Retirement(True, allowed, reason, total, limit, candidates, self.sync_fields)

    def mark_retired(self, candidates: Iterable[Candidate]) -> None:
        """Remember these records as retired (after the sink confirmed the retire updates). A
        retired record that reappears counts as changed and is sent again."""
        with self._lock:
            self._check_open()
            if self.read_only:
                raise RuntimeError("a read-only sync state cannot mark records retired")
            now = int(self.clock())
            rows = [(now, now, self.id, _KEY_SEP.join(c.key)) for c in candidates]
            try:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(
                    "UPDATE records SET retired=?, last_sent=?, digest=NULL WHERE scope=? AND key=?", rows
                )
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise _state_error(exc, self.path) from None

    # -- compaction --------------------------------------------------------------------------------
    def _compact_if_due(self) -> None:
        written, live = self.db.execute(
            "SELECT slots_written, slots_live FROM scopes WHERE id=?", (self.id,)
        ).fetchone()
        if written < COMPACT_MIN or written * 2 < live:
            return
        if live == 0:  # never compacted: the blocks are fresh, there is nothing to gain yet
            self.db.execute("UPDATE scopes SET slots_written=0, slots_live=? WHERE id=?", (written, self.id))
            return
        self._compact()

    def _compact(self) -> None:
        """Drop blocks no record refers to; rewrite blocks that are mostly garbage, and merge
        small ones (webhook syncs write a block per event)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            live = dict(
                db.execute(
                    "SELECT block, count(*) FROM records WHERE scope=? AND block IS NOT NULL GROUP BY block",
                    (self.id,),
                ).fetchall()
            )
            blocks = db.execute("SELECT id, total FROM blocks WHERE scope=?", (self.id,)).fetchall()
            db.executemany("DELETE FROM blocks WHERE id=?", [(b,) for b, _ in blocks if b not in live])
            victims: list[int] = []
            garbage = 0
            budget = COMPACT_MAX_ROWS
            for block_id, total in blocks:
                used = live.get(block_id, 0)
                if used and (used * 2 < total or total < SMALL_BLOCK) and used <= budget:
                    victims.append(block_id)
                    garbage += total - used
                    budget -= used
            if garbage or len(victims) > 1:
                self._rewrite(victims)
            db.execute("UPDATE scopes SET slots_written=0, slots_live=? WHERE id=?", (sum(live.values()), self.id))
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._block_cache.clear()

    def _rewrite(self, victims: list[int]) -> None:
        db = self.db
        wanted = set(victims)
        moving: dict[int, list[tuple[str, int]]] = {}
        for chunk in _chunks(victims, IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            for key, block, slot in db.execute(
                f"SELECT key, block, slot FROM records WHERE scope=? AND block IN ({marks})", (self.id, *chunk)
            ):
                if block in wanted:
                    moving.setdefault(block, []).append((key, slot))
        by_layout: dict[int | None, list[tuple[str, bytes]]] = {}
        for block_id in victims:
            layout, data = db.execute("SELECT layout, data FROM blocks WHERE id=?", (block_id,)).fetchone()
            blobs = _decompress(data).split(b"\n")
            for key, slot in moving.get(block_id, []):
                by_layout.setdefault(layout, []).append((key, blobs[slot] if slot < len(blobs) else b""))
        updates: list[tuple[int, int, int, str]] = []
        for layout, entries in by_layout.items():
            for chunk in _chunks(entries, BLOCK_ROWS):
                raw = b"\n".join(blob for _, blob in chunk)
                cursor = db.execute(
                    "INSERT INTO blocks (scope, layout, total, data) VALUES (?, ?, ?, ?)",
                    (self.id, layout, len(chunk), _compress(raw)),
                )
                new_id = cursor.lastrowid
                assert new_id is not None
                updates.extend((new_id, slot, self.id, key) for slot, (key, _) in enumerate(chunk))
        db.executemany("UPDATE records SET block=?, slot=? WHERE scope=? AND key=?", updates)
        db.executemany("DELETE FROM blocks WHERE id=?", [(b,) for b in victims])

    # -- lifecycle ---------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the sync state is closed")

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")

    def close(self) -> None:
        """Finish as incomplete if :meth:`finish` was not called (delivered marks are kept), then
        close the file; the last writer switches it back to a rollback journal (see the module doc)."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._finished is None:
                    self.finish(complete=False)
            finally:
                self._closed = True
                if not self.read_only:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("PRAGMA busy_timeout = 0")
                        self.db.execute("PRAGMA journal_mode=DELETE")  # fails harmlessly if others have it open
                self.db.close()

    def __enter__(self) -> Scope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
