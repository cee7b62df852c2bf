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
    verdicts = scope.classify(payloads)           # Verdicts: one per mapped payload, same order, as columns
    to_send = compress(payloads, verdicts.send)   # verdicts[i].kind: new/changed/unchanged/unkeyed
    sent = verdicts.select(verdicts.send)         # (or slices of it, as batches are cut)
    scope.mark_delivered(sent)                    # only after the sink confirmed that batch
    scope.previous(verdicts[i])                   # stored payload of a changed record (plan), or None
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
  not deliver. Marks are written in batches (one transaction per ``flush_rows`` records, default
  ``FLUSH_ROWS``, or ``FLUSH_SECONDS``, and at ``finish``/``close``); a crash loses at most the
  unwritten marks, and those records are simply sent again next time. Batches may complete in any
  order: each mark replaces what the state knew of its key.
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

Storage (budget: 1,000,000 records < 150 MB; format 4): per scope, a *snapshot* (one ``snapshots``
row: the keys as a zstd-compressed JSON array, and one int64 array per column of ``_COLUMNS``:
digest, first/last seen, last sent, missing count, retired, block, slot, compressed together; and
whether its keys were checked for repeats) plus a *journal* (``journal`` rows) of what was written
since. ``open_scope`` loads the snapshot into memory (``_Records``: the keys by row, the arrays,
and a key → row index when needed) and replays the journal. ``mark_delivered`` appends one journal
row per flushed block of values (the keys, compressed; the block; the digests only when some value
was too large to keep, else they are the digests of the block's lines), in the same transaction as
the block, once Oomnitza confirmed the batch; records delivered again unchanged get one row of
keys. (Compressed, a row of a thousand keys fits in a page: the journal costs a tenth of the
writes, and emptying it reads no overflow pages.) A finish of a complete run (or of an incomplete
one whose journal grew past ``JOURNAL_MERGE`` records or ``JOURNAL_ROWS`` rows) *merges*: in one
``BEGIN IMMEDIATE`` transaction it applies the journal and its own bookkeeping (missing counts,
pruning, compaction) to the records in memory, writes them as the scope's next snapshot generation
and empties the journal; a run that changed nothing writes no snapshot. A small incomplete run (a
webhook sync of one device) only adds a journal row of the keys it saw. Two writers on one scope
(the webhook server and a scheduled upload of the same section): each merge checks the scope's
generation inside its transaction; when another writer merged meanwhile, it re-reads that snapshot
and the journal (which hold, or still list, this run's own marks) and builds on them, so neither
overwrites the other. A crash loses nothing written: the next open replays the journal. Why not a
row per record, as format 1 did: one SQLite row inserted per record costs ~1.9 µs on the reference
machine, most of the 10 % CPU budget, while one blob per block of a thousand costs ~0.2 µs a
record. Format 3 (journal keys as plain JSON, digests in every row, no check of the keys) is read
as it is, and a writer marks the file as format 4. An older format is not read (format 2 digested
the values without their field names): a writer drops its records and the next run of each scope is
a full push whose reason says so (``_RESTARTED``).

The delivered payloads are kept in zstd-compressed *blocks* of about ``BLOCK_ROWS`` records (the
batches delivered, grouped), one line per record (``,`` and a newline between two: the items of
a JSON array, as the bulk body carries them): the payload's JSON exactly as the sink sends it
(``payload.encode``; orjson escapes newlines within values). Those bytes are the digest's input and
also the bulk body's (``EncodedRecords``): a record is encoded once, by ``classify``, and the sink
joins them. So a record whose nested object lists its keys in another order is sent again (nothing
is lost; sources keep their order). Raw, the benchmark's 11-field assets take ~290 bytes a record;
one compressor call per block brings them to ~37 bytes (the field names and much of the values
repeat). A changed record is written to a new block; its old
slot becomes garbage, and blocks that are mostly garbage are rewritten (``_compact``, within a
merge) once the slots written since the last compaction reach half of the live ones. Values larger
than ``STORE_MAX`` bytes are not kept (``plan`` then shows no "before"); their digest still is. The
file is private (0600): it holds the values the connector sends.

The digest is XXH3-64 (``xxhash``) of those bytes: change detection compares a record only with its
own previous version, so a false "unchanged" needs a 1-in-2^64 coincidence per changed record; a
cryptographic hash would cost ~1 µs more per record. zstd compresses these blocks ~3x faster than
zlib and smaller; it is still half of the instructions a first run adds (see ``_COMPRESSOR``;
zstd's negative levels and LZ4 save another 20-30 % of that but grow the blocks by 40-75 %).

Cost (per record, measured in benchmarks/README.md): ``classify`` encodes and digests each batch
at C speed (``map`` over the payloads; the digests collected as bytes, not as Python ints) and,
once something is remembered, finds the keys' rows: first where the previous batch ended (sources
keep their order; comparing neighbouring keys costs a tenth of a lookup in a dict of 200,000,
which misses the CPU's caches), or a little before or after (a batch an earlier run confirmed out
of order), else in the key index (built when first needed); a batch that is all new or all
unchanged makes its verdicts in one call. Verdicts are columns (``Verdicts``): the pipeline
slices them along with its batches, so nothing is done per record between ``classify`` and
``mark_delivered``, which keeps each delivered batch as its keys (as JSON: nothing of a record
outlives its batch, see ``_Entry``), digests and one joined bytes object (a value too large to
keep is found by looking for ``STORE_MAX`` bytes without a newline, a few calls a batch, not by
measuring each line); a flush writes a compressed block and a journal row per thousand records.
``finish`` applies the run's marks in memory (a first run's in one go, without decoding its keys
or building the key index), touches only the records whose status changes, and writes one
snapshot (a few MB per 200,000 records).
Memory: the loaded state costs about 150 bytes per remembered record (the key string ~60, its place
in the lists by row 16, eight 8-byte columns 64): ~140 MB for a million records, ~30 MB for
200,000; the key index, when built (the run after a first run checks the keys with it, and a source
read in another order needs it), adds ~70 more (see benchmarks/README.md). On large scopes call
``finish`` through ``asyncio.to_thread``. A scope object may be used from one thread at a time
(calls are serialized by a lock).

The file is in WAL mode while written (one writer at a time, readers never blocked) and switched
back to a rollback journal when the last writer closes, so a read-only ``plan`` on a quiet file
opens it with ``mode=ro`` and leaves no ``-wal``/``-shm`` files behind.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import hmac
import math
import operator
import os
import secrets
import sqlite3
import sys
import threading
import time
import urllib.parse
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import accumulate, chain, compress, repeat
from pathlib import Path
from typing import Any, overload

import orjson
import xxhash
import zstandard

from .diskio import describe_os_error, describe_sqlite_error, private_dir
from .errors import ConnectorError, DiskError
from .oomnitza.payload import encode_records

STATE_FILE = "sync-state.db"
SCHEMA_VERSION = 4  # 1: a row per record; 2: values without field names (an older state starts over);
# 3: journal keys as plain JSON and every _FRESH row with its digests (read as they are)
OLDEST_KEPT = 3  # the oldest format whose records are kept
APPLICATION_ID = 0x4F6F4C67  # "OoLg": marks the file as ours (PRAGMA application_id)

NEW, CHANGED, UNCHANGED, UNKEYED = "new", "changed", "unchanged", "unkeyed"

BLOCK_ROWS = 1000  # records per compressed block
STORE_MAX = 16384  # a record's values larger than this are not kept (the digest is)
PRUNE_AFTER = timedelta(days=365)
COMPACT_MIN = 5000  # slots written since the last compaction before one is considered
COMPACT_MAX_ROWS = 200_000  # live slots rewritten by one compaction (bounded time)
SMALL_BLOCK = 64  # blocks this small are merged when compacting
SEARCHES = 32  # batches a run looks for by position, when not where expected, before building the key index
SEARCH_ROWS = 5000  # ... this many rows before and after where expected (~0.1 ms a search)
JOURNAL_MERGE = 20_000  # an incomplete run merges the journal into the snapshot past this many records
JOURNAL_ROWS = 256  # ... or this many journal rows
FLUSH_ROWS = 5000  # delivered marks written per transaction (a crash loses at most these)
FLUSH_SECONDS = 5.0  # delivered marks wait at most this long (besides flush_rows) before being written
KDF_ITERATIONS = 20_000  # the identity fingerprint format 3 wrote: PBKDF2-SHA256 with the file's salt
BUSY_TIMEOUT = 10.0  # seconds to wait for another writer

_DUMPS_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
# zstd's fastest strategy with a 2^11-entry hash table (8 KB: it stays in the CPU's first-level
# cache instead of evicting the rest of the run's data) and matches of 6 bytes or more: on the
# benchmark's blocks, the ratio of level 1 (~8x) in 18 % less time (a few more instructions, far
# fewer cache misses). The 512 KB window holds a whole block of typical records.
_COMPRESSOR = zstandard.ZstdCompressor(
    compression_params=zstandard.ZstdCompressionParameters(
        window_log=19,
        hash_log=11,
        chain_log=11,
        search_log=1,
        min_match=6,
        target_length=0,
        strategy=zstandard.STRATEGY_FAST,
    )
)
_compress = _COMPRESSOR.compress
_decompress = zstandard.ZstdDecompressor().decompress
_KEY_SEP = "\x1f"
_NO_BOUND = 1 << 62
_FLIP = bytes.maketrans(b"\x00\x01", b"\x01\x00")
# Journal entries (see "Storage"): what one write did to the records it names.
_FRESH, _SENT, _RETIRED, _SEEN = 1, 2, 3, 4

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
    created_at       INTEGER NOT NULL,
    last_run_at      INTEGER,
    last_complete_at INTEGER,
    last_full_at     INTEGER,
    runs             INTEGER NOT NULL DEFAULT 0,
    complete_runs    INTEGER NOT NULL DEFAULT 0,
    slots_written    INTEGER NOT NULL DEFAULT 0,
    slots_live       INTEGER NOT NULL DEFAULT 0,
    generation       INTEGER NOT NULL DEFAULT 0,  -- of the snapshot; bumped by every merge
    note             TEXT,  -- why the state started over (until the next complete full push)
    UNIQUE (target, name)
);
CREATE TABLE IF NOT EXISTS blocks (
    id     INTEGER PRIMARY KEY,
    scope  INTEGER NOT NULL,
    total  INTEGER NOT NULL,
    data   BLOB NOT NULL  -- zstd(the records' payloads as sent: a JSON object a line, a comma ending all but the last)
);
CREATE INDEX IF NOT EXISTS blocks_by_scope ON blocks (scope);
CREATE TABLE IF NOT EXISTS snapshots (
    scope      INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    keys       BLOB NOT NULL,  -- zstd(JSON array of the keys)
    columns    BLOB NOT NULL,  -- zstd(one little-endian int64 array per column, see _COLUMNS)
    unique_keys INTEGER NOT NULL DEFAULT 0  -- 1: no key comes twice (checked): opening builds no index
);
CREATE TABLE IF NOT EXISTS journal (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a writer remembers the ids it applied
    scope   INTEGER NOT NULL,
    kind    INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    count   INTEGER NOT NULL,
    keys    BLOB NOT NULL,  -- zstd(JSON array of the keys)
    digests BLOB,           -- _FRESH: int64 array, one per key; NULL: the digests of the block's lines
    block   INTEGER         -- _FRESH: where the values are (slot = position in keys)
);
CREATE INDEX IF NOT EXISTS journal_by_scope ON journal (scope, id);
"""
_RESTARTED = "the sync state was written by an older connector version: it starts over"


# What a read-only run sees of a scope the file does not hold (yet).
_NOTHING_YET: dict[str, Any] = {
    "id": -1,
    "identity": None,
    "mapping": None,
    "filter": None,
    "last_full_at": None,
    "last_complete_at": None,
    "runs": 0,
    "sync_fields": "[]",
    "generation": 0,
    "note": None,
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
    flush_rows: int = FLUSH_ROWS  # delivered marks written per transaction
    # The run reads only some records (webhook syncs, incremental sources): see "Partial runs".
    partial: bool = False


class Verdict(tuple):
    """What ``classify`` decided for one payload: an item of :class:`Verdicts` (made when asked
    for, a tuple underneath).

    ``key``: the sync key (``None`` for *unkeyed*), ``kind``: new / changed / unchanged / unkeyed,
    ``send``: whether to send it in this run."""

    __slots__ = ()

    key: str | None = property(operator.itemgetter(0))  # type: ignore[assignment]
    kind: str = property(operator.itemgetter(1))  # type: ignore[assignment]
    send: bool = property(operator.itemgetter(2))  # type: ignore[assignment]
    digest: int = property(operator.itemgetter(3))  # type: ignore[assignment]  # (0 for unkeyed)
    blob: bytes = property(operator.itemgetter(4))  # type: ignore[assignment]  # the payload's JSON as sent
    row: int | None = property(operator.itemgetter(5))  # type: ignore[assignment]  # in the scope's records

    def __repr__(self) -> str:
        return f"Verdict({self[0]!r}, {self[1]}, send={self[2]})"


_new_verdict = tuple.__new__


class Lines(Sequence[bytes]):
    """Payloads' JSON as the sink sends it, one a line in one buffer, separated by ``,`` and a
    newline (``SEPARATOR``): the items of a JSON array, so the bulk body and the state's blocks
    take the buffer as it is. ``classify`` joins them while they are fresh in the CPU's caches:
    what follows copies a region of the buffer, or takes it whole, instead of visiting a bytes
    object per record (long gone from the caches when its batch is confirmed). orjson escapes
    newlines within values, so every newline ends a line. A slice shares the buffer; where each
    line starts (``starts``: ``len + 1`` offsets, line ``i`` is ``data[starts[i] : starts[i + 1]
    - 2]``) is found when first needed: batches of the pipeline are the slices ``classify`` saw,
    so usually never."""

    SEPARATOR = b",\n"

    __slots__ = ("_starts", "data", "total")

    def __init__(self, data: bytes, total: int, starts: array[int] | None = None) -> None:
        self.data, self.total, self._starts = data, total, starts

    @classmethod
    def of(cls, lines: list[bytes]) -> Lines:
        return cls(cls.SEPARATOR.join(lines), len(lines))

    @property
    def starts(self) -> array[int]:
        if self._starts is None:
            lengths = map(len, self.data.split(self.SEPARATOR)) if self.total else ()  # (2 bytes apart)
            self._starts = array("q", accumulate(map(operator.add, lengths, repeat(2)), initial=0))
        return self._starts

    def __len__(self) -> int:
        return self.total

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Lines: ...
    def __getitem__(self, index: int | slice) -> bytes | Lines:
        starts = self.starts
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return Lines.of(list(self)[index])
            stop = max(start, stop)
            return Lines(self.data, stop - start, starts[start : stop + 1])
        index = range(len(self))[index]
        return self.data[starts[index] : starts[index + 1] - 2]

    def __iter__(self) -> Iterator[bytes]:
        if self._starts is None:
            return iter(self.data.split(self.SEPARATOR) if self.total else ())
        starts = self._starts
        return map(self.data.__getitem__, map(slice, starts[:-1], map(operator.add, starts[1:], repeat(-2))))

    def joined(self) -> bytes:
        """The lines joined by ``SEPARATOR`` (the buffer, or a copy of their region of it)."""
        starts = self._starts  # (a slice of the whole buffer is the buffer itself: no copy)
        return self.data if starts is None else self.data[starts[0] : starts[-1] - 2] if self.total else b""


_FRESH_KINDS = frozenset((NEW, CHANGED))
_ONLY_NEW, _ONLY_UNCHANGED = frozenset((NEW,)), frozenset((UNCHANGED,))


class Verdicts(Sequence[Verdict]):
    """``classify``'s answer for a list of payloads, as columns: no object per record (the
    pipeline carries these for every record sent). Index it for a :class:`Verdict`; slice it,
    or :meth:`select` some, for another ``Verdicts``; hand what was delivered (one, or a list of
    them) to ``mark_delivered``. ``blobs``: each payload's JSON as the sink sends it (``b""`` for
    unkeyed ones), as :class:`Lines`; ``mix``: the kinds present."""

    __slots__ = ("blobs", "digests", "keys", "kinds", "mix", "rows", "send")

    def __init__(
        self,
        keys: list[str | None],
        kinds: list[str],
        send: list[bool],
        digests: array[int],
        blobs: Lines,
        rows: Sequence[int | None],
        mix: frozenset[str] | None = None,
    ) -> None:
        self.keys, self.kinds, self.send, self.digests, self.blobs, self.rows = keys, kinds, send, digests, blobs, rows
        self.mix = frozenset(kinds) if mix is None else mix

    @property
    def all_send(self) -> bool:
        return self.mix == _ONLY_NEW or False not in self.send

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self._part([column[index] for column in self._columns()])
        return _new_verdict(Verdict, tuple(column[index] for column in self._columns()))

    def __iter__(self) -> Iterator[Verdict]:
        return map(_new_verdict, repeat(Verdict), zip(*self._columns(), strict=True))

    def select(self, mask: Sequence[bool]) -> Verdicts:
        """The verdicts where ``mask`` is true."""
        return self._part([list(compress(column, mask)) for column in self._columns()])

    def _part(self, columns: list[Any]) -> Verdicts:
        keys, kinds, send, digests, blobs, rows = columns
        digests = digests if isinstance(digests, array) else array("Q", digests)
        blobs = blobs if isinstance(blobs, Lines) else Lines.of(blobs)
        return Verdicts(keys, kinds, send, digests, blobs, rows, self.mix if len(self.mix) == 1 else None)

    def _columns(self) -> tuple[Any, ...]:
        return self.keys, self.kinds, self.send, self.digests, self.blobs, self.rows

    def __repr__(self) -> str:
        return f"Verdicts({len(self)}, {sorted(self.mix)})"


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
    """What the state keeps of the credentials (an API token, or a user name; never a password),
    to tell when they change: HMAC-SHA256 keyed with the file's random salt. A token is far too
    random to be found from it; key stretching (PBKDF2, as format 3 did) would only add ~9 ms to
    every opening, which a webhook server pays per event."""
    if not identity:
        return ""
    return "h:" + hmac.new(salt, identity.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def _old_fingerprint(identity: str, salt: bytes) -> str:
    """The fingerprint format 3 wrote (recognized until the next full push writes the new one)."""
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


# -- the remembered records, in memory ----------------------------------------------------------------

_COLUMNS = ("digest", "first_seen", "last_seen", "last_sent", "missing", "retired", "block", "slot")
_BIG_ENDIAN = sys.byteorder == "big"


def _zeros(count: int) -> array[int]:
    return array("q", bytes(8 * count))


_SLOTS = array("q")


def _slots(count: int) -> array[int]:
    """0, 1, ... count - 1, copied from a cached array (an int converted into an array costs
    ~600 instructions: it goes through ``PyArg_Parse``)."""
    global _SLOTS
    if len(_SLOTS) < count:
        _SLOTS = array("q", range(max(count, 2 * len(_SLOTS), BLOCK_ROWS)))
    return _SLOTS[:count]


class _Records:
    """One scope's remembered records: ``index`` maps a key to its row (insertion order is row
    order, so ``list(index)`` is the keys by row), one 64-bit array per column. 0 stands for NULL:
    ``last_seen`` 0 = seen in the latest complete run (see :meth:`Scope._seen_at`),
    ``last_sent``/``retired``/``block`` 0 = never. No per-record Python object but the key and its
    row number, and nothing the garbage collector walks (a dict of str to int is not tracked; a
    list of 200,000 keys would be visited by every full collection). A first run, which never looks
    a key up, keeps its keys as its journal rows' JSON arrays (``_names_json``; a run that ends
    there never decodes them), or in ``_names``, and builds no index unless asked. ``unique``:
    no key comes twice (checked when the index was built; a first run's keys are not checked).
    Records loaded from a snapshot whose keys are unique build the index only when asked: a run
    over a source read in the same order finds its rows by position (see ``Scope._rows_of``), and
    building a dict of 200,000 keys costs ~0.03 s."""

    __slots__ = ("_names", "_names_json", "_index", "_keys_blob", "by_row", "retired_count", "unique", *_COLUMNS)

    def __init__(self) -> None:
        self._names: list[str] | None = None
        self._names_json: list[bytes] | None = None
        self._index: dict[str, int] | None = {}
        self._keys_blob: bytes | None = None  # the snapshot's keys as loaded, while no key came or went
        # ... and as a tuple (see Scope._rows_of; a tuple of strings is not tracked by the collector)
        self.by_row: tuple[str, ...] | None = None
        self.retired_count = 0
        self.unique = True
        self.digest: array[int] = array("Q")
        self.first_seen, self.last_seen, self.last_sent = array("q"), array("q"), array("q")
        self.missing, self.retired, self.block, self.slot = array("q"), array("q"), array("q"), array("q")

    def __len__(self) -> int:
        return len(self.digest)

    def keys(self) -> list[str]:
        """The keys by row (a new list, unless the index was never built)."""
        self._decode()
        return self._names if self._names is not None else list(self._index or ())

    def _decode(self) -> None:
        if self._names_json is not None:
            self._names, self._names_json = orjson.loads(_join_arrays(self._names_json)), None

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._decode()
            names = self._names or []
            index = dict(zip(names, range(len(names)), strict=True))
            if len(index) != len(names):  # a key delivered twice in one run: the last one counts
                self.keep(sorted(index.values()))
            else:
                self._index, self._names = index, None
            self.unique = True
        return self._index  # type: ignore[return-value]

    @property
    def indexed(self) -> bool:
        return self._index is not None

    def columns(self) -> list[array[int]]:
        return [getattr(self, name) for name in _COLUMNS]

    @classmethod
    def load(cls, keys: bytes, columns: bytes, unique: bool) -> _Records:
        records = cls()
        names: list[str] = orjson.loads(_decompress(keys))
        count = len(names)
        raw = memoryview(_decompress(columns))
        if len(raw) != 8 * count * len(_COLUMNS):
            raise ValueError("a snapshot's columns do not match its keys")
        for number, column in enumerate(records.columns()):
            column.frombytes(raw[number * 8 * count : (number + 1) * 8 * count])
            if _BIG_ENDIAN:
                column.byteswap()
        records._names, records._index, records.unique = names, None, unique
        if not unique:  # checked now: a key found twice later would renumber the rows mid-run
            records.index  # noqa: B018
        if len(records) == count:  # (else a key came twice: the rows were renumbered)
            records._keys_blob, records.by_row = keys, tuple(names)
        records.retired_count = len(records) - records.retired.count(0)
        return records

    def dump(self) -> tuple[bytes, bytes]:
        if self._keys_blob is not None:
            keys = self._keys_blob
        elif self._names_json is not None:
            keys = _compress(_join_arrays(self._names_json))
        else:
            keys = _compress(orjson.dumps(self.keys()))
        # Streamed from the arrays: no copy of them, joined or not, for the compressor.
        stream = _COMPRESSOR.compressobj(size=8 * len(self) * len(_COLUMNS))
        parts = []
        for column in self.columns():
            if _BIG_ENDIAN:
                column = array(column.typecode, column)
                column.byteswap()
            parts.append(stream.compress(memoryview(column)))
        parts.append(stream.flush())
        return keys, b"".join(parts)

    def keep(self, rows: Sequence[int]) -> None:
        """Forget every record but these rows (pruning)."""
        names = self.keys()
        self._index = dict(zip([names[row] for row in rows], range(len(rows)), strict=True))
        self._names, self._keys_blob, self.by_row = None, None, None
        for name in _COLUMNS:
            column = getattr(self, name)
            setattr(self, name, array(column.typecode, [column[row] for row in rows]))
        self.retired_count = len(rows) - self.retired.count(0)

    # -- what a journal entry does (the same at the write and when an open replays it) ------------
    def fresh(self, at: int, keys: Sequence[str], digests: array[int], block: int) -> None:
        """Delivered new or changed values: digest, values at (block, position), sent now."""
        index, count = self.index, len(keys)
        if not any(map(index.__contains__, keys)) and len(set(keys)) == count:
            self._append(at, keys, digests, array("q", [block]) * count, _slots(count))
            return
        for slot, key in enumerate(keys):
            row = index.get(key)
            if row is None:
                index[key] = len(self.digest)
                self._keys_blob = self.by_row = None
                for column, value in zip(self.columns(), (digests[slot], at, 0, at, 0, 0, block, slot), strict=True):
                    column.append(value)
                continue
            self.digest[row], self.last_seen[row], self.last_sent[row] = digests[slot], 0, at
            if self.retired[row]:
                self.retired_count -= 1
            self.missing[row] = self.retired[row] = 0
            self.block[row], self.slot[row] = block, slot

    def _append(
        self, at: int, keys: Sequence[str] | None, digests: array[int], blocks: array[int], slots: array[int]
    ) -> None:
        """New records (none of them known; a key twice only when the index is not built).
        ``keys`` None: they are in ``_names_json`` already (the first records of an empty scope)."""
        start, count = len(self.digest), len(digests)
        self._keys_blob = self.by_row = None
        if keys is None:
            assert self._index is None and self._names_json is not None
        elif self._index is not None:
            self._index.update(zip(keys, range(start, start + count), strict=True))
        else:
            self._decode()
            self._names = (self._names or []) + list(keys) if start else list(keys)
            self.unique = False
        stamp, zeros = array("q", [at]) * count, _zeros(count)
        self.digest.extend(digests)
        self.first_seen.extend(stamp)
        self.last_seen.extend(zeros)
        self.last_sent.extend(stamp)
        self.missing.extend(zeros)
        self.retired.extend(zeros)
        self.block.extend(blocks)
        self.slot.extend(slots)

    def fresh_all(self, entries: Sequence[_Entry]) -> bool:
        """Many ``fresh`` entries of new records at once (a first run's): False (nothing done)
        unless every key is new and none comes twice. Into an empty scope, the keys stay the
        entries' JSON (see ``_names_json``)."""
        keys: list[str] | None = None
        if len(self):
            keys = list(chain.from_iterable(e.keys for e in entries))
            if any(map(self.index.__contains__, keys)) or len(set(keys)) != len(keys):
                return False
        else:  # nothing was remembered: the index is built when needed (a key twice: the last counts)
            self._index, self._names, self._names_json = None, None, [e.keys_json for e in entries]
            self.unique = False
        position = 0
        for e in entries:
            part = None if keys is None else keys[position : position + e.count]
            position += e.count
            blocks = array("q", [e.block or 0]) * e.count
            self._append(e.at, part, e.digests, blocks, _slots(e.count))  # type: ignore[arg-type]
        return True

    def rows(self, keys: Sequence[str]) -> list[int]:
        rows = list(map(self.index.get, keys))
        return [row for row in rows if row is not None] if None in rows else rows  # type: ignore[return-value]

    def sent(self, at: int, keys: Sequence[str]) -> None:
        """Delivered again, unchanged."""
        rows = self.rows(keys)
        _fill(self.last_sent, rows, at)
        _fill(self.last_seen, rows, 0)
        _fill(self.missing, rows, 0)

    def retire(self, at: int, keys: Sequence[str]) -> None:
        for row in self.rows(keys):
            self.retired_count += not self.retired[row]
            self.retired[row] = self.last_sent[row] = at

    def seen(self, at: int, keys: Sequence[str]) -> None:
        """Seen in an incomplete run."""
        rows = self.rows(keys)
        _fill(self.missing, rows, 0)
        _fill(self.last_seen, rows, at)

    def apply(self, kind: int, at: int, keys: Sequence[str], digests: array[int] | None, block: int | None) -> None:
        if kind == _FRESH:
            if digests is None or len(digests) != len(keys):
                raise ValueError("a journal row's digests do not match its keys")
            self.fresh(at, keys, digests, block or 0)
        elif kind == _SENT:
            self.sent(at, keys)
        elif kind == _RETIRED:
            self.retire(at, keys)
        elif kind == _SEEN:
            self.seen(at, keys)


def _fill(column: array[int], rows: Sequence[int], value: int) -> None:
    """``column[row] = value`` for each row, at C speed."""
    start = _run_start(rows)
    if start is not None:  # consecutive rows (a run over a source read in the same order)
        column[start : start + len(rows)] = array(column.typecode, [value]) * len(rows)
    else:
        collections.deque(map(column.__setitem__, rows, repeat(value)), maxlen=0)


def _nonzero_rows(column: array[int]) -> Iterable[int]:
    """The rows whose value is not 0 (usually none: checked on the raw bytes first)."""
    if column.tobytes() == bytes(8 * len(column)):
        return ()
    return compress(range(len(column)), column)


def _run_start(rows: Sequence[int]) -> int | None:
    """The first row when ``rows`` are consecutive and ascending (else None)."""
    if isinstance(rows, range):
        return rows.start if rows and rows.step == 1 else None
    if not rows:
        return None
    start = rows[0]
    if rows[-1] - start != len(rows) - 1:
        return None
    expected = range(start, start + len(rows))
    same = rows == array("q", expected) if isinstance(rows, array) else rows == list(expected)
    return start if same else None


def _has_long_line(data: bytes, limit: int) -> bool:
    """Whether a line of ``data`` (``Lines.SEPARATOR`` between them) is longer than ``limit``
    bytes. Every line but the last is followed by ``,`` and a newline, so it is short when a
    newline comes within ``limit + 2`` bytes of its start: only the last newline of each such
    window is looked at (a few calls per batch, where asking each line its length costs a call
    per record)."""
    start, last = 0, data.rfind(b"\n") + 1  # (where the last line starts)
    if len(data) - last > limit:
        return True
    while last - start > limit + 2:
        newline = data.rfind(b"\n", start, start + limit + 2)
        if newline < 0:
            return True
        start = newline + 1
    return False


def _block_lines(data: bytes) -> list[bytes]:
    """A stored block's lines. (Blocks written before format 4 separate them by a newline alone:
    a line is a JSON object or empty, so such a block never holds ``,`` and a newline in a row.)"""
    return data.split(Lines.SEPARATOR if Lines.SEPARATOR in data else b"\n")


def _digests(blobs: list[bytes]) -> array[int]:
    """Each blob's XXH3-64, read as a little-endian unsigned 64-bit number. (Collected as bytes:
    converting 200,000 Python ints into an array costs more than hashing the records.)"""
    values = array("Q")
    values.frombytes(b"".join(map(xxhash.xxh3_64_digest, blobs)))
    if _BIG_ENDIAN:
        values.byteswap()
    return values


def _digest_array(data: bytes) -> array[int]:
    values = array("Q")
    values.frombytes(data)
    if _BIG_ENDIAN:
        values.byteswap()
    return values


def _digest_bytes(values: array[int]) -> bytes:
    column = values
    if _BIG_ENDIAN:
        column = array("Q", values)
        column.byteswap()
    return column.tobytes()


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


def _check_format(db: sqlite3.Connection, path: Path) -> int:
    """The file's format (0: empty, nothing written yet). Raises ``StateError`` for another
    program's database or a newer format."""
    # One statement, so one snapshot: read one by one, the three could straddle another writer's
    # creation of the file (tables, but no application id yet: "another program's database").
    app_id, version, tables = db.execute(
        "SELECT (SELECT application_id FROM pragma_application_id), (SELECT user_version FROM pragma_user_version), "
        "(SELECT count(*) FROM sqlite_master)"
    ).fetchone()
    if tables and app_id != APPLICATION_ID:
        raise StateError(f"{path} is not a sync state file (another program's database); choose another state folder")
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{path} was written by a newer connector (state format {version}, this one reads up to "
            f"{SCHEMA_VERSION}); upgrade the connector, or move the file aside to start over"
        )
    return version if tables else 0


def _snapshots_say_unique(db: sqlite3.Connection) -> bool:
    """Whether the snapshots table has its ``unique_keys`` column (format 3 had none)."""
    return "unique_keys" in {column[1] for column in db.execute("PRAGMA table_info(snapshots)")}


def _upgrade(db: sqlite3.Connection) -> None:
    """Format 3 is read as it is (its journal rows are told apart by their content): the file
    gets the snapshots' ``unique_keys`` column and is marked as format 4, which older connectors
    refuse. An older format's records are not read (format 1 kept a row per record, format 2
    digested the values without their field names): forget them and their values; keep the
    scopes, whose next run is a full push saying why (see :data:`_RESTARTED`), and the salt.
    (Columns an older format had and this one does not use stay, unused.)"""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < OLDEST_KEPT:  # not done by another writer
            db.execute("DROP TABLE IF EXISTS records")
            db.execute("DROP TABLE IF EXISTS layouts")
            db.execute("DELETE FROM blocks")
            if version < 2:
                db.execute("ALTER TABLE scopes ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
                db.execute("ALTER TABLE scopes ADD COLUMN note TEXT")
            for statement in _statements(_SCHEMA):
                db.execute(statement)
            db.execute("DELETE FROM snapshots")
            db.execute("DELETE FROM journal")
            db.execute(
                "UPDATE scopes SET note=?, mapping=NULL, last_full_at=NULL, last_complete_at=NULL, "
                "runs=0, complete_runs=0, slots_written=0, slots_live=0, generation=generation+1",
                (_RESTARTED,),
            )
        if not _snapshots_say_unique(db):  # (not done by another writer)
            db.execute("ALTER TABLE snapshots ADD COLUMN unique_keys INTEGER NOT NULL DEFAULT 0")
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def _use_wal(db: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL mode. Two processes opening a file in rollback mode at once can
    meet in a lock SQLite does not wait out (each holds a read lock the other's switch needs):
    one of them gets SQLITE_BUSY at once, and tries again until the other's switch is done."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorname", "") or "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _statements(script: str) -> Iterator[str]:
    """The statements of a script (``executescript`` would commit the open transaction)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""


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
    note = None
    try:
        if read_only and not path.exists():
            db = _empty_state()
        else:
            db = _connect(path, read_only, busy_timeout)
            version = _check_format(db, path)
            if version == 0 and read_only:
                db.close()
                db = _empty_state()
            elif version == 0:
                _create_schema(db)
            elif version < OLDEST_KEPT and read_only:
                db.close()
                db, note = _empty_state(), _RESTARTED
            elif not read_only and (version < SCHEMA_VERSION or not _snapshots_say_unique(db)):
                _upgrade(db)
        if not read_only:
            _use_wal(db, busy_timeout)
            db.execute("PRAGMA synchronous=NORMAL")
        return Scope(
            db, path, target, name, mapping, list(sync_fields), options or ScopeOptions(), read_only, clock, note
        )
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise _state_error(exc, path) from None
    except BaseException:
        if db is not None:
            db.close()
        raise


@dataclass(slots=True)  # (not frozen: a frozen dataclass's __init__ costs ~2 µs more)
class _Entry:
    """A journal row this run wrote, kept until it is applied to the records in memory.

    Its keys are kept as the row's JSON, not as the records' strings: a string kept from each
    record pins the allocator's memory of the whole record (a run that kept them took ~5 % more
    time, in cache misses, than one that kept copies); they are decoded when applied."""

    entry: int
    kind: int
    at: int
    count: int
    keys_json: bytes
    digests: array[int] | None = None
    block: int | None = None
    rows: list[Sequence[int]] | None = None  # _SENT: the records' rows (classify found them), by batch

    @property
    def keys(self) -> list[str]:
        return orjson.loads(self.keys_json)


@dataclass(slots=True)
class _Fresh:
    """A delivered batch's new and changed records, waiting for the flush (keys as JSON: see
    :class:`_Entry`); one per batch."""

    count: int
    keys_json: bytes
    digests: array[int]
    lines: bytes  # their encoded payloads, one a line (empty: too large to keep)
    kept_all: bool  # no line is empty: the digests need not be written (they are the lines')


def _join_arrays(arrays: Iterable[bytes]) -> bytes:
    """JSON arrays joined into one: ``[1,2]`` and ``[3]`` make ``[1,2,3]``."""
    items = [text[1:-1] for text in arrays if len(text) > 2]
    return b"[" + b",".join(items) + b"]"


def _blocks_of(batches: list[_Fresh]) -> Iterator[list[_Fresh]]:
    """Consecutive batches grouped into blocks of at least ``BLOCK_ROWS`` records (the last one
    may be smaller): one compressor call per block."""
    group: list[_Fresh] = []
    count = 0
    for batch in batches:
        group.append(batch)
        count += batch.count
        if count >= BLOCK_ROWS:
            yield group
            group, count = [], 0
    if group:
        yield group


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
        note: str | None = None,
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
        # Delivered marks not written yet: new and changed records' keys, digests and values (per
        # batch: the values joined in one line each), and the keys of records delivered again unchanged.
        self._pending_fresh: list[_Fresh] = []
        self._pending_same: list[bytes] = []  # JSON arrays of keys
        self._pending_same_rows: list[Sequence[int]] = []  # by batch: ranges, mostly
        self._pending_count = 0
        self._pending_since = 0.0
        self._next_row = 0  # where the next batch's keys are expected (see _rows_of)
        self._searches = 0  # batches looked for near _next_row (see _rows_of)
        self._snapshot_unique = True  # the loaded snapshot said its keys were checked
        self._finished: RunReport | None = None
        self._complete = False
        self._closed = False
        self._block_cache: dict[int, list[bytes]] = {}
        self._key = self._key_getter()
        # Rows classified in this run; rows from _own_from on were added by this run's deliveries.
        self._seen_rows: list[int] = []  # (a list: the index's own ints, no conversion)
        self._own_from = 0
        self._flags: bytearray | None = None  # per row: seen in this run (see _seen_flags)
        self._records = _Records()
        self._generation = 0
        self._replayed: set[int] = set()  # journal rows reflected in self._records
        self._unapplied: list[_Entry] = []  # this run's, written but not reflected yet
        salt = self._salt()
        self._identity = _fingerprint(target.identity, salt) if salt else ""
        self._same_identity = self._identity_check(target.identity, salt)
        row = self._load_or_create()
        if note is not None:
            row = {**row, "note": note}
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
        self._last_complete: int | None = row["last_complete_at"]
        if self.id >= 0:
            self._load()
        self._own_from = len(self._records)
        self._remembered = len(self._records) > 0
        # Records delivered by another writer during a run that began with nothing remembered are
        # not missing (see _unseen).
        self._unseen_before = _NO_BOUND if self._remembered else self.started

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

    def _identity_check(self, identity: str, salt: bytes) -> Callable[[str | None], bool]:
        def same(stored: str | None) -> bool:
            stored = stored or ""
            if stored == self._identity:
                return True
            return bool(stored and salt and not stored.startswith("h:")) and stored == _old_fingerprint(identity, salt)

        return same

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

    def _load(self) -> None:
        """The snapshot and the journal written since, read in one (read) transaction."""
        db = self.db
        own = not db.in_transaction
        if own:
            db.execute("BEGIN")
        try:
            self._read_snapshot()
            self._replay()
        finally:
            if own:
                db.execute("COMMIT")

    def _read_snapshot(self) -> None:
        db = self.db
        self._generation = db.execute("SELECT generation FROM scopes WHERE id=?", (self.id,)).fetchone()[0]
        cursor = db.execute("SELECT * FROM snapshots WHERE scope=?", (self.id,))  # (format 3: no unique_keys)
        row = cursor.fetchone()
        snapshot = dict(zip([column[0] for column in cursor.description], row, strict=True)) if row else {}
        self._snapshot_unique = bool(snapshot.get("unique_keys", 0)) if row else True
        try:
            self._records = (
                _Records.load(snapshot["keys"], snapshot["columns"], self._snapshot_unique) if row else _Records()
            )
        except (zstandard.ZstdError, orjson.JSONDecodeError, sqlite3.DatabaseError, ValueError, TypeError) as exc:
            raise StateError(
                f"{self.path} is damaged or not a sync state file ({exc}); move it aside and run again "
                "(the next run then sends every record)"
            ) from None
        self._replayed = set()
        self._block_cache.clear()

    def _replay(self) -> None:
        """Apply the journal rows not reflected yet (written by this or another writer)."""
        rows = self.db.execute(
            "SELECT id, kind, at, keys, digests, block FROM journal WHERE scope=? ORDER BY id", (self.id,)
        ).fetchall()
        records, replayed = self._records, self._replayed
        for entry, kind, at, keys, digests, block in rows:
            if entry in replayed:
                continue
            try:
                names: list[str] = orjson.loads(keys if keys[:1] == b"[" else _decompress(keys))  # ("[": format 3)
                values = None
                if kind == _FRESH:
                    values = _digest_array(digests) if digests is not None else self._block_digests(block)
                records.apply(kind, at, names, values, block)
            except (orjson.JSONDecodeError, zstandard.ZstdError, ValueError, TypeError, IndexError) as exc:
                raise StateError(
                    f"{self.path} is damaged or not a sync state file ({exc}); move it aside and run again "
                    "(the next run then sends every record)"
                ) from None
            replayed.add(entry)

    def _block_digests(self, block_id: int | None) -> array[int]:
        """The digests of a block's lines: those of the records a journal row wrote there, when
        the row does not list them (every line was kept)."""
        row = self.db.execute("SELECT data FROM blocks WHERE id=?", (block_id,)).fetchone()
        if row is None:
            raise ValueError(f"the journal names a block that is not there ({block_id})")
        return _digests(_block_lines(_decompress(row[0])))

    def _start_over(self, row: dict[str, Any]) -> dict[str, Any]:
        """Other sync fields make other keys: what is remembered under the old ones would all look
        missing (and be retired). Forget it (read-only: pretend it is gone)."""
        if self.read_only:
            return dict(_NOTHING_YET)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("snapshots", "journal", "blocks"):
                db.execute(f"DELETE FROM {table} WHERE scope=?", (row["id"],))
            db.execute(
                "UPDATE scopes SET sync_fields=?, mapping=NULL, last_full_at=NULL, runs=0, "
                "complete_runs=0, slots_written=0, slots_live=0, generation=generation+1 WHERE id=?",
                (orjson.dumps(self.sync_fields).decode(), row["id"]),
            )
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return {**row, "mapping": None, "last_full_at": None, "runs": 0}

    def _decide_full(self, row: Mapping[str, Any]) -> tuple[bool, tuple[str, ...]]:
        reasons: list[str] = []
        if self.options.full:
            reasons.append("--full was given")
        if self.options.partial:  # judged per record (see "Partial runs"), except what the scope knows
            if row["last_full_at"] is not None and row["mapping"] != self.mapping:
                reasons.append("the mapping, converters or sync fields changed")
            if row["last_full_at"] is not None and not self._same_identity(row["identity"]):
                reasons.append(self._identity_changed)
            return bool(reasons), tuple(reasons)
        if row["last_full_at"] is None:
            if self._restarted:
                reasons.append("the sync fields changed: the state starts over")
            elif row["note"]:
                reasons.append(row["note"])
            elif row["runs"] == 0 and self._elsewhere:
                reasons.append("first run against this Oomnitza URL (the state knows the section for another URL)")
            elif row["runs"] == 0:
                reasons.append("first run: nothing remembered yet")
            else:
                reasons.append("no complete full push yet")
        else:
            if row["mapping"] != self.mapping:
                reasons.append("the mapping, converters or sync fields changed")
            if not self._same_identity(row["identity"]):
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

    # -- classify ----------------------------------------------------------------------------------
    def classify(self, payloads: Sequence[Mapping[str, Any]]) -> Verdicts:
        """One verdict per payload (same order). Also notes every key as seen in this run."""
        with self._lock:
            self._check_open()
            encoded = self._encode_batch(payloads)
            per_payload: Sequence[str | None]
            if encoded is None:
                per_payload, keys, blobs = self._encode_each(payloads)
            else:
                keys, blobs = encoded
                per_payload = keys
            digests = _digests(blobs)
            self._flags = None
            if not self._remembered:  # a first run: everything keyed is new, no lookups
                return self._all_new(per_payload, keys, blobs, digests)
            rows = self._rows_of(keys)
            in_order = isinstance(rows, range)
            if per_payload is keys and (in_order or None not in rows):
                self._seen_rows += rows  # type: ignore[arg-type]
                verdicts = self._all_unchanged(keys, blobs, digests, rows)  # type: ignore[arg-type]
                if verdicts is not None:
                    return verdicts
            else:
                self._seen_rows += rows if in_order else [row for row in rows if row is not None]  # type: ignore[arg-type]
            return self._verdicts(per_payload, blobs, digests, rows)

    def _rows_of(self, keys: list[str]) -> Sequence[int | None]:
        """Each key's row (None: not remembered). Sources list their records in the same order
        run after run, so the keys are first compared with those that followed the previous
        batch's: a lookup in a large dict misses the CPU's caches (~0.4 µs a key on the reference
        machine), neighbouring keys compare at a tenth of that."""
        by_row, start = self._records.by_row, self._next_row
        end = start + len(keys)
        rows: Sequence[int | None]
        if by_row is not None and by_row[start:end] == tuple(keys):
            rows = range(start, end)
        elif (found := self._search(keys, start)) is not None:
            rows = range(found, found + len(keys))
            end = found + len(keys)
        else:
            rows = list(map(self._records.index.get, keys))
            last = rows[-1] if rows else None
            end = start if last is None else last + 1
        self._next_row = end
        return rows

    def _search(self, keys: list[str], near: int) -> int | None:
        """Where the keys lie one after another, found near ``near`` while the key index is not
        built (batches confirmed out of order in an earlier run swapped places); a few searches a
        run at most, then the index is built. None: not found so."""
        records, by_row = self._records, self._records.by_row
        if records.indexed or by_row is None or not keys or self._searches >= SEARCHES:
            return None
        self._searches += 1
        try:
            first = by_row.index(keys[0], max(0, near - SEARCH_ROWS), near + SEARCH_ROWS)
        except ValueError:
            return None
        return first if by_row[first : first + len(keys)] == tuple(keys) else None

    def _encode_batch(self, payloads: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[bytes]] | None:
        """The usual batch at C speed: one sync field, a text value in every payload. Keys and
        encoded payloads; None: some payload is not like that (see :meth:`_encode_each`)."""
        if len(self.sync_fields) != 1 or not payloads:
            return None
        try:
            keys: list[str] = list(map(operator.itemgetter(self.sync_fields[0]), payloads))
        except KeyError:
            return None
        if not all(keys):  # (None or "")
            return None
        try:
            _KEY_SEP.join(keys)  # (fails unless every key is text)
        except TypeError:
            return None
        return keys, encode_records(payloads)

    def _encode_each(self, payloads: Sequence[Mapping[str, Any]]) -> tuple[list[str | None], list[str], list[bytes]]:
        """Per payload: its key (None: unkeyed), and for the keyed ones key and encoded payload."""
        per_payload: list[str | None] = list(map(self._key, payloads))
        keyed = [key is not None for key in per_payload]
        keys: list[str] = list(compress(per_payload, keyed))  # type: ignore[arg-type]
        return per_payload, keys, encode_records(list(compress(payloads, keyed)))

    def _all_new(
        self, per_payload: Sequence[str | None], keys: list[str], blobs: list[bytes], digests: array[int]
    ) -> Verdicts:
        counts, count = self.counts, len(per_payload)
        unkeyed = count - len(keys)
        counts[NEW] += len(keys)
        counts[UNKEYED] += unkeyed
        counts["sent"] += count
        if not unkeyed:
            lines = Lines.of(blobs)
            return Verdicts(keys, [NEW] * count, [True] * count, digests, lines, [None] * count, _ONLY_NEW)  # type: ignore[arg-type]
        return self._verdicts(per_payload, blobs, digests, [None] * len(keys), counted=True)

    def _all_unchanged(
        self, keys: list[str], blobs: list[bytes], digests: array[int], rows: Sequence[int]
    ) -> Verdicts | None:
        """The usual batch of a run over remembered records: all unchanged (C speed). None: not so."""
        records = self._records
        if records.retired_count:
            return None
        start = _run_start(rows)
        if start is not None:  # the source lists records in the order they were remembered
            if records.digest[start : start + len(rows)] != digests:
                return None
        elif digests != array("Q", map(records.digest.__getitem__, rows)):
            return None
        send = self.full
        if not send and self._stale_before and min(map(records.last_sent.__getitem__, rows)) < self._stale_before:
            return None
        count = len(keys)
        self.counts[UNCHANGED] += count
        self.counts["sent"] += count if send else 0
        lines = Lines.of(blobs)
        return Verdicts(keys, [UNCHANGED] * count, [send] * count, digests, lines, rows, _ONLY_UNCHANGED)  # type: ignore[arg-type]

    def _verdicts(
        self,
        per_payload: Sequence[str | None],
        blobs: list[bytes],
        digests: array[int],
        rows: Sequence[int | None],
        counted: bool = False,
    ) -> Verdicts:
        """Record by record (``counted``: the counts are done)."""
        full, counts, stale = self.full, self.counts, self._stale_before or 0
        records = self._records
        known_digest, last_sent, retired = records.digest, records.last_sent, records.retired
        any_retired = records.retired_count > 0
        keys: list[str | None] = []
        kinds: list[str] = []
        sends: list[bool] = []
        digests_out, blobs_out, rows_out = array("Q"), [], []
        position = 0
        for key in per_payload:
            if key is None:
                kind, send, digest, blob, row = UNKEYED, True, 0, b"", None
            else:
                digest, blob, row = digests[position], blobs[position], rows[position]
                position += 1
                if row is None:
                    kind, send = NEW, True
                else:  # a retired record that comes back is sent again
                    same = known_digest[row] == digest and not (any_retired and retired[row])
                    kind = UNCHANGED if same else CHANGED
                    send = full or kind is CHANGED or last_sent[row] < stale
            if not counted:
                counts[kind] += 1
                counts["sent"] += send
            keys.append(key)
            kinds.append(kind)
            sends.append(send)
            digests_out.append(digest)
            blobs_out.append(blob)
            rows_out.append(row)
        return Verdicts(keys, kinds, sends, digests_out, Lines.of(blobs_out), rows_out)

    # -- delivered ---------------------------------------------------------------------------------
    def mark_delivered(self, verdicts: Verdicts | Iterable[Verdicts]) -> None:
        """Remember these records as delivered: a ``Verdicts``, or a list of them (the parts of one
        batch). Call only after the sink confirmed their batch."""
        with self._lock:
            self._check_open()
            if self.read_only:
                raise RuntimeError("a read-only sync state cannot mark records delivered")
            parts = [verdicts] if isinstance(verdicts, Verdicts) else verdicts
            if not self._pending_count:
                self._pending_since = time.monotonic()
            for part in parts:
                self._mark(part)
            if self._pending_count >= max(1, self.options.flush_rows) or (
                self._pending_count and time.monotonic() - self._pending_since >= FLUSH_SECONDS
            ):
                self._flush()

    def _mark(self, part: Verdicts) -> None:
        """Kept as columns, not verdicts: fewer objects live on for the garbage collector."""
        mix = part.mix
        fresh: Verdicts | None = None
        same: Verdicts | None = None
        if mix <= _FRESH_KINDS:
            fresh = part
        elif mix == _ONLY_UNCHANGED:
            same = part
        else:  # (unkeyed records are not remembered)
            fresh = part.select([kind is NEW or kind is CHANGED for kind in part.kinds])
            same = part.select([kind is UNCHANGED for kind in part.kinds])
        count = 0
        if fresh:
            lines = fresh.blobs.joined()
            kept_all = not _has_long_line(lines, STORE_MAX)
            if not kept_all:  # such values are not kept (the digest is)
                lines = Lines.SEPARATOR.join([b"" if len(blob) > STORE_MAX else blob for blob in fresh.blobs])
            self._pending_fresh.append(_Fresh(len(fresh), orjson.dumps(fresh.keys), fresh.digests, lines, kept_all))
            count += len(fresh)
        if same:
            self._pending_same.append(orjson.dumps(same.keys))
            rows, pending = same.rows, self._pending_same_rows
            last = pending[-1] if pending else None
            if isinstance(rows, range) and isinstance(last, range) and last.stop == rows.start:
                pending[-1] = range(last.start, rows.stop)  # (batches confirmed in order: one range)
            else:
                pending.append(rows)  # type: ignore[arg-type]
            count += len(same)
        self._pending_count += count
        self.counts["delivered"] += len(part)

    def _flush(self) -> None:
        """Write the pending marks in one transaction: per block of values (the batches delivered,
        about ``BLOCK_ROWS`` records a block), the block and its journal row; one journal row for
        the records delivered again unchanged. They are applied to the records in memory when the
        run finishes (see :meth:`_apply_own`)."""
        if not self._pending_count:
            return
        fresh, same, same_rows = self._pending_fresh, self._pending_same, self._pending_same_rows
        self._pending_fresh, self._pending_same, self._pending_same_rows = [], [], []
        self._pending_count = 0
        now = int(self.clock())
        db = self.db
        entries: list[_Entry] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            if fresh:
                written = 0
                for group in _blocks_of(fresh):
                    count = sum(f.count for f in group)
                    digests = array("Q")
                    for batch in group:
                        digests.extend(batch.digests)
                    raw = Lines.SEPARATOR.join(f.lines for f in group)
                    block_id = db.execute(
                        "INSERT INTO blocks (scope, total, data) VALUES (?, ?, ?)", (self.id, count, _compress(raw))
                    ).lastrowid
                    assert block_id is not None
                    keys = _join_arrays(f.keys_json for f in group)
                    kept_all = all(f.kept_all for f in group)
                    entries.append(self._journal(_FRESH, now, count, keys, digests, block_id, written=not kept_all))
                    written += count
                db.execute("UPDATE scopes SET slots_written = slots_written + ? WHERE id = ?", (written, self.id))
            if same:
                count = sum(map(len, same_rows))
                entries.append(self._journal(_SENT, now, count, _join_arrays(same), rows=same_rows))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _state_error(exc, self.path) from None
        except BaseException:
            self._rollback()
            raise
        self._unapplied.extend(entries)

    def _apply_own(self) -> None:
        """Apply this run's journal rows to the records in memory (a first run's in one go). Rows
        added here were delivered by this run, so it saw them (see :meth:`_seen_flags`)."""
        own, self._unapplied = self._unapplied, []
        records = self._records
        if not own:
            return
        if all(e.kind == _FRESH for e in own) and records.fresh_all(own):
            pass
        else:
            for e in own:
                if e.kind == _FRESH:
                    records.fresh(e.at, e.keys, e.digests, e.block)  # type: ignore[arg-type]
                elif e.kind == _SENT:  # this run saw them: finish resets their missing count
                    for rows in e.rows if e.rows is not None else [records.rows(e.keys)]:
                        _fill(records.last_sent, rows, e.at)
                else:
                    records.apply(e.kind, e.at, e.keys, None, None)
        self._replayed.update(e.entry for e in own)
        self._block_cache.clear()

    def _journal(
        self,
        kind: int,
        at: int,
        count: int,
        keys_json: bytes,
        digests: array[int] | None = None,
        block: int | None = None,
        rows: list[Sequence[int]] | None = None,
        written: bool = True,
    ) -> _Entry:
        """Write a journal row: ``count`` records, their keys as a JSON array (compressed: a tenth
        of the bytes to write, and a row of a thousand keys fits in a page). ``written`` False:
        the digests are those of the block's lines, and are not written again."""
        stored = _digest_bytes(digests) if digests is not None and written else None
        entry = self.db.execute(
            "INSERT INTO journal (scope, kind, at, count, keys, digests, block) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.id, kind, at, count, _compress(keys_json), stored, block),
        ).lastrowid
        assert entry is not None
        return _Entry(entry, kind, at, count, keys_json, digests, block, rows)

    # -- reading back ------------------------------------------------------------------------------
    def previous(self, verdict: Verdict) -> dict[str, Any] | None:
        """The payload last delivered for this record, or None when the record is new or its
        values were not kept. Ask before marking the record delivered."""
        with self._lock:
            if verdict.key is None or verdict.kind is NEW:
                return None
            row = self._records.index.get(verdict.key)
            if row is None or not self._records.block[row]:
                return None
            try:
                lines = self._read_block(self._records.block[row])
            except sqlite3.Error as exc:
                raise _state_error(exc, self.path) from None
            slot = self._records.slot[row]
            if lines is None or slot >= len(lines) or not lines[slot]:
                return None
            values = orjson.loads(lines[slot])
            return values if isinstance(values, dict) else None

    def _read_block(self, block_id: int) -> list[bytes] | None:
        """A block's lines (one encoded payload each, empty when it was not kept)."""
        cached = self._block_cache.get(block_id)
        if cached is not None:
            return cached
        row = self.db.execute("SELECT data FROM blocks WHERE id=?", (block_id,)).fetchone()
        if row is None:
            return None
        if len(self._block_cache) >= 8:
            self._block_cache.pop(next(iter(self._block_cache)))
        lines = _block_lines(_decompress(row[0]))
        self._block_cache[block_id] = lines
        return lines

    def _seen_at(self, row: int) -> int:
        """When a record was last seen: its own last_seen once it went missing (or was seen in an
        incomplete run); otherwise the latest complete run, or its last delivery when that is
        later. Keeping 0 for "seen in the latest complete run" spares a write per record and run."""
        records = self._records
        return records.last_seen[row] or max(records.last_sent[row], self._last_complete or 0)

    def _seen_flags(self) -> bytearray:
        """Per row, 1 if this run saw the record: classified it, or delivered it as a new one."""
        count = len(self._records)
        if self._flags is not None and len(self._flags) == count:
            return self._flags
        flags = bytearray(count)
        rows = self._seen_rows
        start = _run_start(rows)
        if start is not None:
            flags[start : start + len(rows)] = b"\x01" * len(rows)
        else:
            collections.deque(map(flags.__setitem__, rows, repeat(1)), maxlen=0)
        flags[self._own_from :] = b"\x01" * (count - self._own_from)
        self._flags = flags
        return flags

    def _set_flags(self, flags: bytearray) -> None:
        """After the rows were renumbered (a merge): what this run saw, in the new numbering."""
        self._flags = flags
        self._seen_rows = list(compress(range(len(flags)), flags))
        self._own_from = len(flags)

    def _unseen(self) -> list[int]:
        """Rows remembered, unretired, not seen in this run. Records another writer delivered
        during a run that began with nothing remembered were not missed by it (``_unseen_before``);
        a run that began with records remembered has a whole list of what it saw, and a record
        delivered by the previous run within the same second as this run began is missing."""
        records, bound = self._records, self._unseen_before
        seen = self._seen_flags()
        if seen.find(0) < 0:  # every record seen (the usual complete run)
            return []
        flags = bytes(seen).translate(_FLIP)
        retired, last_sent = records.retired, records.last_sent
        return [row for row in compress(range(len(flags)), flags) if not retired[row] and last_sent[row] < bound]

    def _candidates(self, rows: Iterable[int], limit: int, bump: int = 0) -> list[Candidate]:
        """The first ``limit`` rows, longest missing first, as candidates."""
        records = self._records
        rows = list(rows)
        if not rows or not limit:
            return []
        keys = records.keys()
        order = sorted(rows, key=lambda r: (-records.missing[r], self._seen_at(r), keys[r]))[:limit]
        return [
            Candidate(key_parts(keys[r]), records.missing[r] + bump, self._seen_at(r), records.last_sent[r] or None)
            for r in order
        ]

    def missing(self, limit: int = 20) -> tuple[int, list[Candidate]]:
        """Remembered, unretired records not seen in this run: how many, and the first ``limit``
        (longest missing first). ``missing_runs`` counts complete runs before this one."""
        with self._lock:
            if self.id < 0:
                return 0, []
            rows = self._unseen()
            return len(rows), self._candidates(rows, limit) if limit else []

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
                self._generation = -1  # what is in memory may be half done: the next merge re-reads
                raise _state_error(exc, self.path) from None
            except BaseException:
                self._generation = -1
                raise
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
        """One transaction. This run's journal rows are applied in memory (or, if another writer
        merged meanwhile, the snapshot is re-read: it holds them, or the journal still does). A
        complete run (or a large journal) then merges: the other writers' journal rows are
        applied, the run's bookkeeping is done, and the result is written as the next snapshot
        generation (the journal is then empty); when nothing changed, nothing is written. A small
        incomplete run only adds a journal row of what it saw."""
        now = int(self.clock())
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            generation, last_complete, entries, journaled = db.execute(
                "SELECT generation, last_complete_at, count(journal.id), coalesce(sum(journal.count), 0) "
                "FROM scopes LEFT JOIN journal ON journal.scope = scopes.id WHERE scopes.id=?",
                (self.id,),
            ).fetchone()
            changed = bool(entries or self._unapplied)
            if generation != self._generation:  # another writer merged meanwhile: build on its result
                saw = self._seen_keys()
                self._unapplied = []
                self._read_snapshot()
                self._replay()
                self._generation = generation
                self._set_flags(bytearray(map(saw.__contains__, self._records.keys())))
                changed = True
            else:
                self._apply_own()
            records, flags = self._records, self._seen_flags()
            merge = (
                complete
                or entries + 1 >= JOURNAL_ROWS
                or journaled + flags.count(1) >= max(JOURNAL_MERGE, len(records) // 2)
            )
            entry = None
            if merge:
                before = len(records)
                self._replay()  # what other writers delivered since
                if len(records) != before:
                    self._set_flags(flags + bytes(len(records) - before))
                self._last_complete = last_complete
                if complete:
                    missing, touched = self._complete_pass(now)
                else:
                    rows = list(compress(range(len(flags)), flags))
                    _fill(records.missing, rows, 0)
                    _fill(records.last_seen, rows, now)
                    missing, touched = len(self._unseen()), bool(rows)
                checked = records.unique and not self._snapshot_unique  # (later runs build no index)
                if self._compact_if_due() or changed or touched or checked:
                    keys, columns = self._records.dump()
                    db.execute(
                        "INSERT OR REPLACE INTO snapshots (scope, generation, count, keys, columns, unique_keys) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (self.id, generation + 1, len(self._records), keys, columns, int(self._records.unique)),
                    )
                    self._snapshot_unique = self._records.unique
                    db.execute("DELETE FROM journal WHERE scope=?", (self.id,))
                    db.execute("UPDATE scopes SET generation=? WHERE id=?", (generation + 1, self.id))
                    generation += 1
            else:
                keys_by_row = records.keys()
                seen = [keys_by_row[row] for row in compress(range(len(flags)), flags)]
                entry = self._journal(_SEEN, now, len(seen), orjson.dumps(seen)).entry if seen else None
                missing = len(self._unseen())
            db.execute(
                "UPDATE scopes SET last_run_at=?, runs=runs+1, filter=?, "
                "last_complete_at = CASE WHEN ? THEN ? ELSE last_complete_at END, "
                "complete_runs = complete_runs + ? WHERE id=?",
                (now, self.options.filter, complete, now, int(complete), self.id),
            )
            if full_done:
                db.execute(
                    "UPDATE scopes SET last_full_at=?, mapping=?, identity=?, sync_fields=?, note=NULL WHERE id=?",
                    (self.started, self.mapping, self._identity, orjson.dumps(self.sync_fields).decode(), self.id),
                )
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if generation != self._generation:  # a new snapshot: the journal is empty
            self._generation, self._replayed = generation, set()
        if entry is not None:
            self._records.seen(now, seen)
            self._replayed.add(entry)
        if complete:
            self._last_complete = now
        return missing

    def _seen_keys(self) -> set[str]:
        """The keys this run saw (classified, or delivered), whatever the rows' numbering."""
        keys, flags = self._records.keys(), self._seen_flags()
        seen = {keys[row] for row in compress(range(len(flags)), flags)}
        for entry in self._unapplied:
            seen.update(entry.keys)
        return seen

    def _complete_pass(self, now: int) -> tuple[int, bool]:
        """A complete run's bookkeeping: records it saw are "seen in the latest complete run"
        (last_seen 0, missing 0: written only where that changes anything), the others are
        missing one more run; long forgotten ones are pruned. Returns how many are missing, and
        whether anything changed."""
        records = self._records
        missing, last_seen = records.missing, records.last_seen
        flags = self._seen_flags()
        marked = set(_nonzero_rows(missing))
        marked.update(_nonzero_rows(last_seen))
        touched = False
        for row in marked:
            if flags[row]:
                missing[row] = last_seen[row] = 0
                touched = True
        unseen = self._unseen()
        for row in unseen:
            if not last_seen[row]:
                last_seen[row] = max(records.last_sent[row], self._last_complete or 0)
            missing[row] += 1
        cutoff = now - int(PRUNE_AFTER.total_seconds())
        retired = records.retired
        forgotten = {
            row for row in _nonzero_rows(last_seen) if last_seen[row] < cutoff and (retired[row] or missing[row] > 0)
        }
        if forgotten:
            kept = [row for row in range(len(records)) if row not in forgotten]
            records.keep(kept)
            self._set_flags(bytearray(flags[row] for row in kept))
        return len(unseen), touched or bool(unseen) or bool(forgotten)

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
            records = self._records
            missing, retired = records.missing, records.retired
            if self.read_only:  # count this (planned) run as the next complete one
                rows = [r for r in self._unseen() if missing[r] + 1 >= after]
            else:
                rows = [r for r in compress(range(len(records)), missing) if not retired[r] and missing[r] >= after]
            remembered = retired.count(0)
            total = len(rows)
            limit = guard.limit(remembered)
            allowed = 0 < total <= limit
            candidates = self._candidates(rows, total if allowed else sample, 1 if self.read_only else 0)
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
            self._apply_own()
            now = int(self.clock())
            keys = [_KEY_SEP.join(c.key) for c in candidates]
            if not keys:
                return
            try:
                self.db.execute("BEGIN IMMEDIATE")
                entry = self._journal(_RETIRED, now, len(keys), orjson.dumps(keys)).entry
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise _state_error(exc, self.path) from None
            self._records.retire(now, keys)
            self._replayed.add(entry)

    # -- compaction (inside the merge's transaction) ---------------------------------------------------
    def _compact_if_due(self) -> bool:
        """Whether the records' value references changed."""
        written, live = self.db.execute(
            "SELECT slots_written, slots_live FROM scopes WHERE id=?", (self.id,)
        ).fetchone()
        if written < COMPACT_MIN or written * 2 < live:
            return False
        if live == 0:  # never compacted: the blocks are fresh, there is nothing to gain yet
            self.db.execute("UPDATE scopes SET slots_written=0, slots_live=? WHERE id=?", (written, self.id))
            return False
        self._compact()
        return True

    def _compact(self) -> None:
        """Drop blocks no record refers to; rewrite blocks that are mostly garbage, and merge
        small ones (webhook syncs write a block per event)."""
        db = self.db
        live = Counter(self._records.block)
        live.pop(0, None)
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
        self._block_cache.clear()

    def _rewrite(self, victims: list[int]) -> None:
        db, records = self.db, self._records
        wanted = set(victims)
        moving: dict[int, list[int]] = {}
        for row, block in enumerate(records.block):
            if block in wanted:
                moving.setdefault(block, []).append(row)
        entries: list[tuple[int, bytes]] = []  # (row, its line)
        for block_id in victims:
            data = db.execute("SELECT data FROM blocks WHERE id=?", (block_id,)).fetchone()[0]
            lines = _block_lines(_decompress(data))
            for row in moving.get(block_id, []):
                slot = records.slot[row]
                entries.append((row, lines[slot] if slot < len(lines) else b""))
        for chunk in _chunks(entries, BLOCK_ROWS):
            raw = Lines.SEPARATOR.join(line for _, line in chunk)
            new_id = db.execute(
                "INSERT INTO blocks (scope, total, data) VALUES (?, ?, ?)", (self.id, len(chunk), _compress(raw))
            ).lastrowid
            assert new_id is not None
            for slot, (row, _) in enumerate(chunk):
                records.block[row], records.slot[row] = new_id, slot
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
