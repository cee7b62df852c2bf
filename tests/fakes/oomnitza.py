"""An in-process fake of the Oomnitza REST API (the parts the connector calls), for tests and
benchmarks. It follows docs §9 of the API spec: auth, mappings, bulk upload with upsert
semantics, portions, managed polling and misc endpoints, plus fault injection.

Tests run it in-process (see the `fake_oomnitza` fixture) and assert on its state directly;
benchmarks run it as a subprocess: `python -m tests.fakes.oomnitza --port 0 ...`.

Where the faults come from (the real service sits behind load balancers and proxies; its own bulk
answer is undocumented, so the fake answers what the bench simulator answers and the connector must
prove delivery from it):
- `fail(..., 429, headers={"Retry-After": ...})`, 5xx: RFC 9110 §15.5.30 / §15.6 and §10.2.3
  (Retry-After as delay-seconds or an HTTP-date), https://www.rfc-editor.org/rfc/rfc9110
- `max_body_bytes`: a body over the limit is refused with 413 and nginx's HTML error page before the
  application sees it, as nginx's `client_max_body_size` does (default 1m;
  https://nginx.org/en/docs/http/ngx_http_core_module.html#client_max_body_size); RFC 9110 §15.5.14.
- `html_page(...)`: a proxy, captive portal or WAF answering with its own HTML page, status 200
  included; nothing reaches the application, nothing is stored.
- `stall(...)`: a hung upstream: the request is held, then a gateway gives up with 504 (RFC 9110
  §15.6.5); nothing is stored. `delay(...)` instead serves the request after the pause.
- `cancel(...)`: a sync canceled in the web UI shows as `"canceled": true` in portion info
  (oomnitza-api.md §4.5; the reference client reads exactly that key).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["FakeOomnitza", "LoggedRequest", "Portion", "main"]

FATAL_ERROR = "Fatal Error"
_MAX_ERRORS_UNLOGGED = 1000  # per portion, when keep_log=False (benchmarks)
_DATA_TYPE_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
_BULK_KEYS = frozenset(
    {
        "connector_version",
        "sync_field",
        "records",
        "portion",
        "data_type",
        "insert_only",
        "update_only",
        "error",
        "error_type",
        "connector_name",
        "connector_id",
        "test_run",
        "multi_str_input_value",
    }
)
_INVALID = object()  # marks a body that could not be parsed
_WROTE, _SKIPPED = 1, 2  # first outcome of a match key within a portion


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")


# --------------------------------------------------------------------------------------------- state


@dataclass(slots=True)
class LoggedRequest:
    """One request as the fake saw it; unpacks as (method, path, query, headers, body)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, form dict, raw text, or None when empty
    status: int | None = None  # filled in once the response started

    def __iter__(self) -> Iterator[Any]:
        return iter((self.method, self.path, self.query, self.headers, self.body))

    def __getitem__(self, index: int) -> Any:
        return (self.method, self.path, self.query, self.headers, self.body)[index]


@dataclass(slots=True)
class Portion:
    """A sync session (§5): created implicitly on first sight, counters per record outcome."""

    id: str
    data_type: str | None = None
    connector: str | int | None = None  # connector_name or connector_id
    payloads: int = 0
    received: int = 0
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    duplicates: int = 0  # repeats of a match key within this portion (retries), not re-counted
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_total: int = 0
    fatal: bool = False  # an error payload had error_type "Fatal Error"
    test_run: bool | None = None
    finalized: bool = False
    finalize_count: int = 0
    records_after_finalize: int = 0  # records uploaded after finalize: the client finalized early
    canceled: bool = False
    info_requests: int = 0  # GET /api/v3/bulk/{portion} (cancel checks)
    events: list[tuple[str, int]] = field(default_factory=list)  # ("info"|"bulk"|"error"|"finalize", n)
    keys: dict[tuple[str, ...], dict[tuple[Any, ...], int]] = field(default_factory=dict, repr=False)

    @property
    def status(self) -> str:
        if self.fatal:
            return "failed"
        if self.finalized:
            return "finalized"
        return "in_progress" if self.payloads else "unknown"

    def summary(self) -> dict[str, Any]:
        return {
            "portion": self.id,
            "status": self.status,
            "canceled": self.canceled,
            "data_type": self.data_type,
            "connector": self.connector,
            "payloads": self.payloads,
            "received": self.received,
            "inserted": self.inserted,
            "updated": self.updated,
            "skipped": self.skipped,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "errors_total": self.errors_total,
            "fatal": self.fatal,
            "test_run": self.test_run,
            "finalized": self.finalized,
            "finalize_count": self.finalize_count,
            "records_after_finalize": self.records_after_finalize,
        }


class _Collection:
    """Stored objects of one data_type, indexed per sync-field set (lower-cased, sorted).

    No per-record bookkeeping objects: 200k GC-tracked objects would make every full garbage
    collection crawl. Which portion wrote a record is kept as runs of consecutive inserts plus
    sparse dicts for records written more than once."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        # Keys: the raw value for one sync field, a tuple of values for a composite sync key.
        self.indexes: dict[tuple[str, ...], dict[Any, int]] = {}
        self.insert_runs: list[tuple[int, str]] = []  # (first position, portion), ascending
        self.last_writer: dict[int, str] = {}  # position -> portion, for updated records
        self.writes: dict[int, int] = {}  # position -> write count, when more than one

    def index(self, fields: tuple[str, ...]) -> dict[Any, int]:
        idx = self.indexes.get(fields)
        if idx is None:  # a sync-field set not seen before: index what is already stored
            idx = {}
            for pos, record in enumerate(self.records):
                key = _match_key(record, fields)
                if key is not None:
                    idx[key] = pos
            self.indexes[fields] = idx
        return idx

    def portion_of(self, pos: int) -> str | None:
        if pos in self.last_writer:
            return self.last_writer[pos]
        i = bisect.bisect_right(self.insert_runs, (pos, "\uffff")) - 1
        return self.insert_runs[i][1] if i >= 0 else None


def _field_value(record: dict[str, Any], name: str) -> Any:
    """record[name] with field ids compared case-insensitively (None if absent)."""
    value = record.get(name)
    if value is None and name not in record:
        upper = name.upper()  # INI-derived names arrive upper-cased: the likely spelling
        if upper in record:
            return record[upper]
        lower = name.lower()
        for k, v in record.items():
            if k.lower() == lower:
                return v
    return value


def _hashable(value: Any) -> Any:
    if isinstance(value, list | dict):  # unusual sync values: compare by canonical JSON text
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return value


def _match_key(record: dict[str, Any], fields: tuple[str, ...]) -> Any:
    """The record's index key for `fields`, or None if any value is absent, null or ""."""
    values = []
    for name in fields:
        value = _field_value(record, name)
        if value is None or value == "":
            return None
        values.append(_hashable(value))
    return values[0] if len(values) == 1 else tuple(values)


def _merge(stored: dict[str, Any], record: dict[str, Any]) -> None:
    """Overwrite stored fields with the record's (nulls included), matching ids case-insensitively."""
    if stored.keys() >= record.keys():  # the common case, checked without building a set
        stored.update(record)
        return
    new = record.keys() - stored.keys()
    if new:
        existing = {k.lower(): k for k in stored}
        renamed = {k: existing[k.lower()] for k in new if k.lower() in existing}
        if renamed:
            for k, v in record.items():
                stored[renamed.get(k, k)] = v
            return
    stored.update(record)


def _update(
    stored: dict[str, Any], record: dict[str, Any], pos: int, others: list[tuple[tuple[str, ...], dict[Any, int]]]
) -> None:
    if not others:
        _merge(stored, record)
        return
    # An update matched on one sync-field set may change the values of another set.
    before = [_match_key(stored, f) for f, _ in others]
    _merge(stored, record)
    for (f, idx), old in zip(others, before, strict=True):
        new = _match_key(stored, f)
        if new != old:
            if old is not None and idx.get(old) == pos:
                del idx[old]
            if new is not None:
                idx[new] = pos


@dataclass(slots=True)
class _Fault:
    method: str | None  # None = any method
    prefix: str
    status: int | None  # None = only delay, then serve normally
    remaining: int
    headers: dict[str, str] | None = None
    body: Any = None
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.prefix.endswith("$"):  # "/api/v3/bulk$": that path only, not /api/v3/bulk/<portion>/...
            return path == self.prefix[:-1]
        return path.startswith(self.prefix)


# ----------------------------------------------------------------------------------------- the fake


class FakeOomnitza:
    """Fake Oomnitza API. `app` is the ASGI app; serve it with tests.fakes.server.serve().

    Inspect: records(data_type), record(data_type, FIELD=value), portions / portion(id=None),
    requests / find_requests(method, path_prefix), bulk_payloads, ready_portions, stats(),
    records_dump().
    Inject: fail(method, path_prefix, status, times, headers, body), delay(...), stall(...),
    html_page(...), max_body_bytes, expire_token_after(n), latency,
    cancel(portion=None, after_records=None), enqueue_managed(*configs), reset().
    Configure (any time): username/password, mappings / set_mapping / set_managed_mapping,
    locations, global_variables, sync_keys (server-side sync fields per connector name or
    str(id), used when a payload's sync_field is empty), add_integration_token, set_secret /
    secrets, add_media_file, csrf_token, require_client_cert, lenient.
    """

    def __init__(
        self,
        token: str = "test-token",
        username: str | None = None,
        password: str | None = None,
        mappings: dict[str, Any] | None = None,
        locations: list[dict[str, Any]] | None = None,
        *,
        keep_log: bool = True,
        sync_keys: dict[str, list[str]] | None = None,
        global_variables: list[dict[str, Any]] | None = None,
        csrf_token: str | None = None,
        require_client_cert: bool = False,
        lenient: bool = False,
        latency: float = 0.0,
    ) -> None:
        self.url = ""  # base URL, set by whoever serves `app` (e.g. the fake_oomnitza fixture)
        self.token = token
        self.username = username
        self.password = password
        # {name: {source: field}} and {"connector_id:N": {FIELD: {"type", "value"}}}
        self.mappings: dict[str, Any] = dict(mappings or {})
        self.locations: list[dict[str, Any]] = list(locations or [])
        self.keep_log = keep_log
        self.sync_keys: dict[str, list[str]] = dict(sync_keys or {})
        self.global_variables: list[dict[str, Any]] = list(global_variables or [])
        self.csrf_token = csrf_token
        # With TLS client-cert verification done by the server (serve(..., ssl_cert_reqs=
        # CERT_REQUIRED)), a login over https with empty login/password is accepted (§2 mode 3).
        self.require_client_cert = require_client_cert
        self.lenient = lenient  # accept unknown top-level keys in bulk payloads
        self.max_body_bytes: int | None = None  # > 0: larger POST bodies get nginx's 413 page
        self.integration_tokens: dict[str, str] = {}  # token_id -> token (§2 per-integration)
        # credential_id -> {"headers", "params", ...} or callable(request body) -> response dict
        self.secrets: dict[str, dict[str, Any] | Callable[[Any], dict[str, Any]]] = {}
        self.credentials: dict[str, dict[str, Any]] = {}  # credential_id -> details (GET, HEAD)
        self.media_files: dict[str, dict[str, Any]] = {}  # uid -> metadata + "content"
        self.media_page_size = 0  # > 0: GET /api/v3/media_storage lists at most this many files
        self._lock = threading.Lock()  # guards state shared with the test thread (faults, queue)
        self.reset()
        self.latency = latency  # seconds slept per /api request, before anything else
        self.app: ASGIApp = Starlette(
            routes=self._routes(),
            middleware=[Middleware(_Gate, fake=self)],
            exception_handlers={404: _not_found, 405: _not_allowed},
        )

    # ---------------------------------------------------------------- state and test hooks

    def reset(self) -> None:
        """Forget runtime state (records, portions, logs, faults, expiry, queue, counters, latency);
        keep configuration (tokens, credentials, mappings, locations, media files)."""
        self.requests: list[LoggedRequest] = []
        self.bulk_payloads: list[dict[str, Any]] = []
        self.portions: dict[str, Portion] = {}
        self.ready_portions: list[dict[str, Any]] = []
        self.latency = 0.0
        self._collections: dict[str, _Collection] = {}
        self._faults: list[_Fault] = []
        self._managed_queue: list[dict[str, Any]] = []
        self._auth_budget: int | None = None
        self._cancel_all = False
        self._cancel_after: int | None = None
        self._route_counts: Counter[str] = Counter()
        self._status_counts: Counter[int] = Counter()
        self._payload_sizes: Counter[int] = Counter()
        self._clients: set[tuple[str, int]] = set()
        self._bytes_received = 0
        self._in_flight = 0
        self._peak_in_flight = 0
        self._first_api: float | None = None
        self._last_api: float | None = None

    def records(self, data_type: str) -> list[dict[str, Any]]:
        """Stored objects of `data_type`, in insertion order (the live dicts: do not mutate)."""
        coll = self._collections.get(data_type)
        return list(coll.records) if coll else []

    def record(self, data_type: str, **match: Any) -> dict[str, Any] | None:
        """The stored object whose fields equal `match` (field ids case-insensitive), or None."""
        fields = {k.lower(): v for k, v in match.items()}
        for rec in self.records(data_type):
            if all(_field_value(rec, k) == v for k, v in fields.items()):
                return rec
        return None

    def portion(self, portion_id: str | None = None) -> Portion:
        """The portion `portion_id`, or the only portion there is (AssertionError otherwise)."""
        if portion_id is not None:
            return self.portions[portion_id]
        assert len(self.portions) == 1, f"expected exactly one portion, have {list(self.portions)}"
        return next(iter(self.portions.values()))

    def find_requests(self, method: str | None = None, path_prefix: str = "") -> list[LoggedRequest]:
        """Logged requests filtered by method and path prefix (needs keep_log=True)."""
        m = method.upper() if method else None
        return [r for r in self.requests if (m is None or r.method == m) and r.path.startswith(path_prefix)]

    @property
    def api_requests(self) -> list[LoggedRequest]:
        return self.find_requests(path_prefix="/api/")

    def fail(
        self,
        method: str | None,
        path_prefix: str,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Answer the next `times` requests matching method ("*"/None = any) and path prefix with
        `status` (before the auth check). A prefix ending in "$" matches that exact path.
        `body`: dict/list → JSON, str/bytes → as-is."""
        self._add_fault(_Fault(_norm_method(method), path_prefix, status, times, headers, body))

    def delay(self, method: str | None, path_prefix: str, seconds: float, times: int = 1) -> None:
        """Hold the next `times` matching requests for `seconds`, then serve them normally."""
        self._add_fault(_Fault(_norm_method(method), path_prefix, None, times, delay=seconds))

    def stall(self, method: str | None, path_prefix: str, seconds: float, times: int = 1) -> None:
        """Hold the next `times` matching requests for `seconds`, then answer 504 from a "gateway";
        the request is not processed (nothing stored)."""
        body = "<html><head><title>504 Gateway Time-out</title></head><body>504 Gateway Time-out</body></html>"
        self._add_fault(
            _Fault(_norm_method(method), path_prefix, 504, times, {"content-type": "text/html"}, body, delay=seconds)
        )

    def html_page(self, method: str | None, path_prefix: str, status: int = 200, times: int = 1) -> None:
        """Answer the next `times` matching requests with a proxy's HTML page (status 200 unless
        told otherwise); the request is not processed."""
        body = "<!DOCTYPE html><html><head><title>Attention Required</title></head><body>blocked</body></html>"
        self.fail(method, path_prefix, status, times, headers={"content-type": "text/html; charset=UTF-8"}, body=body)

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def expire_token_after(self, n: int) -> None:
        """Let `n` more authorized requests through, then 401 until a successful request_token."""
        self._auth_budget = n

    def cancel(self, portion_id: str | None = None, *, after_records: int | None = None) -> None:
        """Make portion info report canceled: one portion, or (None) every portion, present and
        future. `after_records`: only once a portion has received that many records."""
        if portion_id is None:
            self._cancel_all = True
            self._cancel_after = after_records
        else:
            self._portion(portion_id).canceled = True

    def enqueue_managed(self, *configs: dict[str, Any]) -> None:
        """Queue run configs that the next check_managed poll returns (each exactly once)."""
        with self._lock:
            self._managed_queue.extend(configs)

    def set_mapping(self, name: str, mapping: dict[str, Any]) -> None:
        self.mappings[name] = mapping

    def set_managed_mapping(self, connector_id: int | str, mapping: dict[str, Any]) -> None:
        self.mappings[f"connector_id:{connector_id}"] = mapping

    def add_integration_token(self, token_id: str | int, token: str) -> None:
        """GET /api/v3/auth/oomnitza_tokens/{token_id} returns `token`, which is then also valid."""
        self.integration_tokens[str(token_id)] = token

    def set_secret(
        self,
        credential_id: str,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        *,
        name: str | None = None,
        **extra: Any,
    ) -> None:
        """Configure POST /api/v3/auth/{credential_id}/secret (and GET .../{credential_id})."""
        self.secrets[credential_id] = {"headers": headers or {}, "params": params or {}, **extra}
        self.credentials[credential_id] = {"id": credential_id, "name": name or credential_id}

    def add_media_file(
        self,
        filename: str,
        content: bytes,
        *,
        creation_date: int | None = None,
        created_by_type: str = "reports_connectors",
        created_by_id: int | str | None = None,
        uid: str | None = None,
    ) -> dict[str, Any]:
        """Add an export file listed by GET /api/v3/media_storage, downloadable without auth."""
        uid = uid or uuid.uuid4().hex
        meta = {
            "uid": uid,
            "filename": filename,
            "creation_date": int(time.time()) if creation_date is None else creation_date,
            "created_by_type": created_by_type,
            "created_by_id": created_by_id,
            "content": content,
        }
        self.media_files[uid] = meta
        return meta

    # ---------------------------------------------------------------- statistics

    def stats(self) -> dict[str, Any]:
        portions = list(self.portions.values())
        sizes = self._payload_sizes
        n_payloads = sum(sizes.values())
        errors: list[dict[str, Any]] = []
        for p in portions:
            errors.extend({"portion": p.id, **e} for e in p.errors[: 1000 - len(errors)])
        active = (self._last_api - self._first_api) if self._first_api and self._last_api else 0.0
        return {
            "requests": dict(self._route_counts),
            "requests_total": sum(self._route_counts.values()),
            "statuses": {str(k): v for k, v in sorted(self._status_counts.items())},
            "records_received": sum(p.received for p in portions),
            "records_stored": sum(len(c.records) for c in self._collections.values()),
            "records_stored_by_type": {k: len(c.records) for k, c in self._collections.items()},
            "inserted": sum(p.inserted for p in portions),
            "updated": sum(p.updated for p in portions),
            "skipped": sum(p.skipped for p in portions),
            "failed": sum(p.failed for p in portions),
            "duplicates": sum(p.duplicates for p in portions),
            "bulk_payloads": {
                "count": n_payloads,
                "min_records": min(sizes) if sizes else 0,
                "max_records": max(sizes) if sizes else 0,
                "mean_records": (sum(k * v for k, v in sizes.items()) / n_payloads) if n_payloads else 0,
                "histogram": {str(k): v for k, v in sorted(sizes.items())},
            },
            "bytes_received": self._bytes_received,
            "in_flight": self._in_flight,
            "peak_in_flight": self._peak_in_flight,
            "client_connections_seen": len(self._clients),
            "api_active_seconds": round(active, 6),
            "portions": {p.id: p.summary() for p in portions},
            "ready_portions": list(self.ready_portions),
            "errors_total": sum(p.errors_total for p in portions),
            "errors": errors,
        }

    def records_dump(self, data_type: str | None = None) -> dict[str, Any]:
        """Stored records with metadata, in the shape the bench tools' check_upload.py reads."""
        out = []
        for dt, coll in self._collections.items():
            if data_type is not None and dt != data_type:
                continue
            fields = next(iter(coll.indexes), ())
            for pos, record in enumerate(coll.records):
                key = _match_key(record, fields) if fields else None
                out.append(
                    {
                        "data_type": dt,
                        "key": None if key is None else list(key) if isinstance(key, tuple) else [key],
                        "record": record,
                        "portion": coll.portion_of(pos),
                        "writes": coll.writes.get(pos, 1),
                    }
                )
        return {"count": len(out), "records": out}

    # ---------------------------------------------------------------- internals

    def _portion(self, portion_id: str) -> Portion:
        p = self.portions.get(portion_id)
        if p is None:
            p = self.portions[portion_id] = Portion(portion_id)
            if self._cancel_all and self._cancel_after is None:
                p.canceled = True
        return p

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _check_auth(self, token: str | None, csrf: str | None, path: str, query: bytes) -> Response | None:
        if token is None:
            return _json({"error": "unauthorized", "detail": "missing Authorization2 header"}, 401)
        if token != self.token and token not in self.integration_tokens.values():
            return _json({"error": "unauthorized", "detail": "invalid token"}, 401)
        if self._auth_budget is not None:
            if self._auth_budget <= 0:
                return _json({"error": "unauthorized", "detail": "token expired"}, 401)
            self._auth_budget -= 1
        if self.csrf_token is not None and csrf != self.csrf_token and not _is_auth_probe(path, query):
            return _json({"error": "forbidden", "detail": "missing or wrong X-CSRF-Token"}, 403)
        return None

    def _routes(self) -> list[Route]:
        return [
            Route("/api/v3/bulk", self._bulk_route, methods=["POST"]),
            Route("/api/v3/bulk/check_managed", self._check_managed, methods=["POST"]),
            Route("/api/v3/bulk/{portion}", self._portion_info, methods=["GET"]),
            Route("/api/v3/bulk/{portion}/finalize", self._finalize, methods=["POST"]),
            Route("/api/v3/bulk/{integration_id}/add_ready_portion", self._add_ready, methods=["POST"]),
            Route("/api/request_token", self._request_token, methods=["POST"]),
            Route("/api/v2/mappings", self._mappings, methods=["GET"]),
            Route("/api/v3/auth/oomnitza_tokens/{token_id}", self._oomnitza_token, methods=["GET"]),
            Route("/api/v3/auth/{credential_id}/secret", self._secret, methods=["POST"]),
            Route("/api/v3/auth/{credential_id}", self._credential, methods=["GET"]),
            Route("/api/v3/locations", self._locations, methods=["GET"]),
            Route("/api/v3/media_storage", self._media_storage, methods=["GET"]),
            Route("/api/v3/settings/global_variables", self._global_variables, methods=["GET"]),
            Route("/media/{uid}/{filename:path}", self._media_download, methods=["GET"]),
            # Control routes for harnesses driving the fake out of process: no auth, no latency.
            Route("/__fake/health", self._ctl_health, methods=["GET"]),
            Route("/__fake/stats", self._ctl_stats, methods=["GET"]),
            Route("/__fake/records", self._ctl_records, methods=["GET"]),
            Route("/__fake/reset", self._ctl_reset, methods=["POST"]),
            Route("/__fake/portions/{portion}/cancel", self._ctl_cancel, methods=["POST"]),
            Route("/__fake/managed", self._ctl_managed, methods=["POST"]),
            Route("/__fake/fail", self._ctl_fail, methods=["POST"]),
        ]

    # ---------------------------------------------------------------- /api endpoints

    async def _request_token(self, request: Request) -> Response:
        body = request.scope.get("fake.body")
        if not isinstance(body, dict) or "login" not in body or "password" not in body:
            return _json({"error": "bad request", "detail": "form fields login and password required"}, 400)
        login, password = body["login"], body["password"]
        by_password = self.username is not None and (login, password) == (self.username, self.password)
        # The TLS layer already verified the client certificate (the fake cannot see it).
        by_cert = self.require_client_cert and request.url.scheme == "https" and not login and not password
        if not (by_password or by_cert):
            return _json({"error": "unauthorized", "detail": "invalid credentials"}, 401)
        self._auth_budget = None  # a fresh login ends a simulated expiry
        return _json({"token": self.token}, headers=self._csrf_headers())

    def _csrf_headers(self) -> dict[str, str] | None:
        return {"X-CSRF-Token": self.csrf_token} if self.csrf_token is not None else None

    async def _mappings(self, request: Request) -> Response:
        q = request.query_params
        if "connector_id" in q:
            return _json(self.mappings.get(f"connector_id:{q['connector_id']}", {}))
        if "name" in q:
            headers = self._csrf_headers() if q["name"] == "AuthTest" else None
            return _json(self.mappings.get(q["name"], {}), headers=headers)
        return _json({"error": "bad request", "detail": "name or connector_id required"}, 400)

    async def _bulk_route(self, request: Request) -> Response:
        # Normally answered by _Gate's fast path; kept so the route table is complete.
        status, body = self._bulk(request.scope.get("fake.body"), request.headers.get("content-type"))
        return _json(body, status)

    def _bulk(self, payload: Any, content_type: str | None) -> tuple[int, dict[str, Any]]:
        """POST /api/v3/bulk: (status, response body)."""
        problems = _content_type_problems(content_type)
        if payload is _INVALID or (payload is None and not problems):
            problems.append("body is not a UTF-8 JSON object")
        else:
            problems += _validate_bulk(payload, self.lenient)
        if problems:
            return 400, {"error": "malformed bulk payload", "details": problems}

        pid: str = payload["portion"]
        connector = payload["connector_name"] if "connector_name" in payload else payload["connector_id"]
        portion = self._portion(pid)
        if portion.data_type is None:
            portion.data_type, portion.connector = payload["data_type"], connector
        elif portion.data_type != payload["data_type"] or str(portion.connector) != str(connector):
            problem = f"portion {pid} belongs to data_type={portion.data_type!r} connector={portion.connector!r}"
            return 400, {"error": "malformed bulk payload", "details": [problem]}
        if self.keep_log:  # accepted payloads only; rejected ones are in `requests`
            self.bulk_payloads.append(payload)
        records: list[dict[str, Any]] = payload["records"]
        n = len(records)
        self._payload_sizes[n] += 1
        portion.payloads += 1
        portion.received += n
        if "test_run" in payload:
            portion.test_run = payload["test_run"]
        if portion.finalized:
            portion.records_after_finalize += n

        error = payload["error"]
        if error is not None:  # an error report: counted as failed, never stored
            failed = max(n, 1)
            portion.failed += failed
            if payload.get("error_type") == FATAL_ERROR:
                portion.fatal = True
            self._add_error(portion, {"error": error, "error_type": payload.get("error_type"), "records": records})
            if self.keep_log:
                portion.events.append(("error", n))
            return 200, {"portion": pid, "received": n, "inserted": 0, "updated": 0, "skipped": 0, "failed": failed}

        result = self._upsert(portion, payload, records)
        if self.keep_log:
            portion.events.append(("bulk", n))
        return 200, {"portion": pid, "received": n, **result}

    def _upsert(self, portion: Portion, payload: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, int]:
        sync_field: list[str] = payload["sync_field"]
        if not sync_field:  # §9: fall back to the sync key configured on the server side
            sync_field = self.sync_keys.get(str(portion.connector)) or []
            if not sync_field:
                for rec in records:
                    self._add_error(portion, {"error": "no sync_field and no server-side sync key", "record": rec})
                portion.failed += len(records)
                return {"inserted": 0, "updated": 0, "skipped": 0, "failed": len(records), "duplicates": 0}
        pid = portion.id
        spelled = {f.lower(): f for f in sync_field}
        fields = tuple(sorted(spelled))
        coll = self._collections.get(payload["data_type"])
        if coll is None:
            coll = self._collections[payload["data_type"]] = _Collection()
        index = coll.index(fields)
        others = [(f, i) for f, i in coll.indexes.items() if f != fields]
        stored, writes, last_writer = coll.records, coll.writes, coll.last_writer
        if not coll.insert_runs or coll.insert_runs[-1][1] != pid:
            coll.insert_runs.append((len(stored), pid))
        seen = portion.keys.get(fields)
        if seen is None:
            seen = portion.keys[fields] = {}
        insert_only, update_only = payload["insert_only"], payload["update_only"]
        # Without a payload log nothing else references the parsed records: store them as they are.
        copy = self.keep_log
        # Hot path: one sync field, looked up as the client spelled it in sync_field.
        single = spelled[fields[0]] if len(fields) == 1 else None
        inserted = updated = skipped = failed = duplicates = 0

        for rec in records:
            if single is not None:  # written out (no helper calls): this loop bounds throughput
                try:
                    key = rec[single]
                except KeyError:
                    key = _field_value(rec, single)
                if type(key) is not str:
                    key = None if key is None else _hashable(key)
                elif not key:
                    key = None
            else:
                key = _match_key(rec, fields)
            if key is None:
                failed += 1
                self._add_error(portion, {"error": f"missing value for sync field(s) {sync_field}", "record": rec})
                continue
            pos = index.get(key)
            if key in seen:  # a repeat within the portion (e.g. a retried POST): last write wins
                duplicates += 1
                if seen[key] == _WROTE and pos is not None:
                    _update(stored[pos], rec, pos, others)
                    writes[pos] = writes.get(pos, 1) + 1
                continue
            if pos is None:
                if update_only:
                    skipped += 1
                    seen[key] = _SKIPPED
                    continue
                pos = index[key] = len(stored)
                stored.append(dict(rec) if copy else rec)
                if others:
                    for f, idx in others:
                        other = _match_key(rec, f)
                        if other is not None:
                            idx[other] = pos
                inserted += 1
            else:
                if insert_only:
                    skipped += 1
                    seen[key] = _SKIPPED
                    continue
                _update(stored[pos], rec, pos, others)
                writes[pos] = writes.get(pos, 1) + 1
                last_writer[pos] = pid
                updated += 1
            seen[key] = _WROTE

        portion.inserted += inserted
        portion.updated += updated
        portion.skipped += skipped
        portion.failed += failed
        portion.duplicates += duplicates
        return {
            "inserted": inserted,
            "updated": updated,
            "skipped": skipped,
            "failed": failed,
            "duplicates": duplicates,
        }

    def _add_error(self, portion: Portion, error: dict[str, Any]) -> None:
        portion.errors_total += 1
        if self.keep_log or len(portion.errors) < _MAX_ERRORS_UNLOGGED:
            portion.errors.append(error)

    async def _finalize(self, request: Request) -> Response:
        body = request.scope.get("fake.body")
        if body is not None and not isinstance(body, dict):
            return _json({"error": "bad request", "detail": "finalize body must be a JSON object"}, 400)
        portion = self._portion(request.path_params["portion"])
        portion.finalized = True
        portion.finalize_count += 1
        if self.keep_log:
            portion.events.append(("finalize", 0))
        return _json(portion.summary())

    async def _portion_info(self, request: Request) -> Response:
        pid = request.path_params["portion"]
        known = pid in self.portions
        portion = self._portion(pid)
        portion.info_requests += 1
        if self._cancel_all and self._cancel_after is not None and portion.received >= self._cancel_after:
            portion.canceled = True
        if self.keep_log:
            portion.events.append(("info", 0))
        summary = portion.summary()
        if not known:
            summary["status"] = "unknown"
        return _json(summary)

    async def _add_ready(self, request: Request) -> Response:
        body = request.scope.get("fake.body")
        if not isinstance(body, dict) or not isinstance(body.get("correlation_id"), str):
            return _json({"error": "bad request", "detail": "JSON object with correlation_id required"}, 400)
        self.ready_portions.append({"integration_id": request.path_params["integration_id"], **body})
        return _json({"ok": True})

    async def _check_managed(self, request: Request) -> Response:
        with self._lock:
            due, self._managed_queue = self._managed_queue, []
        return _json(due)

    async def _oomnitza_token(self, request: Request) -> Response:
        token = self.integration_tokens.get(request.path_params["token_id"])
        if token is None:
            return _json({"error": "not found", "detail": "unknown token id"}, 404)
        return _json({"token": token})

    async def _secret(self, request: Request) -> Response:
        secret = self.secrets.get(request.path_params["credential_id"])
        if secret is None:
            return _json({"error": "not found", "detail": "unknown credential"}, 404)
        return _json(secret(request.scope.get("fake.body")) if callable(secret) else secret)

    async def _credential(self, request: Request) -> Response:
        cred = self.credentials.get(request.path_params["credential_id"])
        return _json(cred) if cred is not None else _json({"error": "not found"}, 404)

    async def _locations(self, request: Request) -> Response:
        return _json(self.locations)

    async def _global_variables(self, request: Request) -> Response:
        return _json(self.global_variables)

    async def _media_storage(self, request: Request) -> Response:
        q = request.query_params
        flt = q.get("filter", "")
        since = _filter_value(flt, r"creation_date\s+gt\s+(\d+)")
        by_type = _filter_value(flt, r"created_by_type\s+eq\s+'([^']*)'")
        # Since 2.3.8 the reference sends created_by_id as its own parameter (the spec's corrections,
        # "export-file listing"); a created_by_id clause left inside the filter narrows nothing here,
        # the harder case: a client still sending it gets the files of every integration.
        by_id = q.get("created_by_id")
        base = str(request.base_url).rstrip("/")
        files = []
        for meta in sorted(self.media_files.values(), key=lambda m: m["creation_date"]):
            if since is not None and meta["creation_date"] <= int(since):
                continue
            if by_type is not None and meta["created_by_type"] != by_type:
                continue
            if by_id is not None and str(meta["created_by_id"]) != by_id:
                continue
            item = {k: v for k, v in meta.items() if k != "content"}
            item["url"] = f"{base}/media/{meta['uid']}/{quote(str(meta['filename']), safe='')}"
            files.append(item)
        if self.media_page_size:  # the listing is paged: the oldest files first, the rest on a later ask
            files = files[: self.media_page_size]
        return _json(files)

    async def _media_download(self, request: Request) -> Response:
        meta = self.media_files.get(request.path_params["uid"])
        if meta is None:
            return _json({"error": "not found"}, 404)
        return Response(meta["content"], media_type="application/octet-stream")

    # ---------------------------------------------------------------- control endpoints

    async def _ctl_health(self, request: Request) -> Response:
        return _json({"ok": True})

    async def _ctl_stats(self, request: Request) -> Response:
        return _json(self.stats())

    async def _ctl_records(self, request: Request) -> Response:
        return _json(self.records_dump(request.query_params.get("data_type")))

    async def _ctl_reset(self, request: Request) -> Response:
        self.reset()
        return _json({"ok": True})

    async def _ctl_cancel(self, request: Request) -> Response:
        self.cancel(request.path_params["portion"])
        return _json({"ok": True})

    async def _ctl_managed(self, request: Request) -> Response:
        body = orjson.loads(await request.body() or b"[]")
        self.enqueue_managed(*(body if isinstance(body, list) else [body]))
        return _json({"ok": True})

    async def _ctl_fail(self, request: Request) -> Response:
        spec = orjson.loads(await request.body())
        self.fail(
            spec.get("method"),
            spec["path_prefix"],
            int(spec["status"]),
            times=int(spec.get("times", 1)),
            headers=spec.get("headers"),
            body=spec.get("body"),
        )
        return _json({"ok": True})


# -------------------------------------------------------------------------------- gate middleware


class _Gate:
    """Cross-cutting behaviour for every non-control request: read and log the body, count,
    latency, fault injection, token check. Handlers find the parsed body in scope["fake.body"]."""

    def __init__(self, app: ASGIApp, fake: FakeOomnitza) -> None:
        self.app = app
        self.fake = fake

    def _route_path(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:  # answered here (401, fault) before routing: find the route it was for
            for candidate in self.fake.app.router.routes:
                if candidate.matches(scope)[0] is Match.FULL:
                    route = candidate
                    break
        return route.path if route is not None else "<unknown>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/__fake/"):
            await self.app(scope, receive, send)
            return
        fake = self.fake
        method: str = scope["method"]
        path: str = scope["path"]
        is_api = path.startswith("/api/")
        if is_api and fake._first_api is None:
            fake._first_api = time.monotonic()
        fake._in_flight += 1
        if fake._in_flight > fake._peak_in_flight:
            fake._peak_in_flight = fake._in_flight
        client = scope.get("client")
        if client:
            fake._clients.add((client[0], client[1]))
        logged: LoggedRequest | None = None
        counted = False

        def count(status: int, label: str | None = None) -> None:
            # Runs before the response goes out, so a test reading the fake right after it sees it.
            nonlocal counted
            counted = True
            fake._route_counts[label or f"{method} {self._route_path(scope)}"] += 1
            fake._status_counts[status] += 1
            if logged is not None:
                logged.status = status

        try:
            chunks = []
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            raw = b"".join(chunks) if len(chunks) != 1 else chunks[0]
            fake._bytes_received += len(raw)
            token = csrf = ctype = None
            for name, value in scope["headers"]:  # uvicorn lower-cases header names
                if name == b"authorization2":
                    token = value.decode("latin-1")
                elif name == b"content-type":
                    ctype = value.decode("latin-1")
                elif name == b"x-csrf-token":
                    csrf = value.decode("latin-1")
            body = scope["fake.body"] = _parse_body(raw, ctype)
            if fake.keep_log:
                logged = LoggedRequest(
                    method,
                    path,
                    dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)),
                    {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
                    raw.decode("utf-8", "replace") if body is _INVALID else body,
                )
                fake.requests.append(logged)

            if is_api and fake.latency > 0:
                await asyncio.sleep(fake.latency)
            response: Response | None = None
            if fake.max_body_bytes and method == "POST" and len(raw) > fake.max_body_bytes:
                response = _too_large()
            fault = fake._take_fault(method, path) if fake._faults and response is None else None
            if fault is not None:
                if fault.delay and fault.status is not None:  # a stall: over when the client gives up
                    if await _client_left_within(receive, fault.delay):
                        return
                elif fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status is not None:
                    response = _fault_response(fault)
            if response is None and is_api and path != "/api/request_token":
                response = fake._check_auth(token, csrf, path, scope["query_string"])
            if response is None and path == "/api/v3/bulk" and method == "POST":
                # Fast path for the benchmark-critical route: no router, no Request/Response objects.
                status, result = fake._bulk(body, ctype)
                content = orjson.dumps(result)
                headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
                count(status, "POST /api/v3/bulk")
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": content})
                return

            async def send_counted(message: Message) -> None:
                if message["type"] == "http.response.start":
                    count(message["status"])
                await send(message)

            delivered = False

            async def replay() -> Message:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": raw, "more_body": False}
                return await receive()

            if response is not None:
                await response(scope, replay, send_counted)
            else:
                await self.app(scope, replay, send_counted)
        finally:
            fake._in_flight -= 1
            if not counted:  # the app raised (the outer error middleware answers 500) or the client left
                count(500)
            if is_api:
                fake._last_api = time.monotonic()


# ------------------------------------------------------------------------------------- helpers


def _norm_method(method: str | None) -> str | None:
    return None if method in (None, "*") else method.upper()


def _is_auth_probe(path: str, query: bytes) -> bool:
    return path == "/api/v2/mappings" and b"name=AuthTest" in query


def _parse_body(raw: bytes, content_type: str | None) -> Any:
    """Form dict for form content, else JSON whatever the content type (bulk checks it itself);
    _INVALID if unparsable."""
    if not raw:
        return None
    try:
        if content_type and content_type.startswith("application/x-www-form-urlencoded"):
            return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
        return orjson.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError included
        return _INVALID


def _content_type_problems(ctype: str | None) -> list[str]:
    if ctype is None:
        return ["Content-Type: application/json required"]
    parts = [p.strip().lower() for p in ctype.split(";")]
    if parts[0] != "application/json":
        return [f"Content-Type: application/json required, got {ctype!r}"]
    for p in parts[1:]:
        if p.startswith("charset=") and p[8:].strip('"') not in ("utf-8", "utf8"):
            return [f"Content-Type charset must be utf-8, got {ctype!r}"]
    return []


def _validate_bulk(p: Any, lenient: bool) -> list[str]:
    """Every problem with a §4.3 bulk body (empty list = valid)."""
    if type(p) is not dict:
        return ["body must be a JSON object"]
    d: list[str] = []
    v = p.get("connector_version")
    if not (isinstance(v, str) and v):
        d.append("connector_version: required non-empty string")
    sf = p.get("sync_field")
    if not (isinstance(sf, list) and all(isinstance(f, str) and f for f in sf)):
        d.append("sync_field: required list of non-empty strings")
    recs = p.get("records")
    if not isinstance(recs, list):
        d.append("records: required list of objects")
    else:
        for i, r in enumerate(recs):
            if type(r) is not dict:
                d.append(f"records[{i}]: not an object")
                break
            if "" in r:
                d.append(f"records[{i}]: empty field name")
                break
    portion = p.get("portion")
    try:
        uuid.UUID(portion)
    except (TypeError, ValueError, AttributeError):
        d.append("portion: required UUID string")
    dt = p.get("data_type")
    if not (isinstance(dt, str) and _DATA_TYPE_RE.match(dt)):
        d.append("data_type: required lower-case identifier (assets, users, ...)")
    for flag in ("insert_only", "update_only"):
        if type(p.get(flag)) is not bool:
            d.append(f"{flag}: required boolean")
    if p.get("insert_only") is True and p.get("update_only") is True:
        d.append("insert_only and update_only cannot both be true")
    if "error" not in p or not (p["error"] is None or isinstance(p["error"], str)):
        d.append("error: required, null or string")
    has_name, has_id = "connector_name" in p, "connector_id" in p
    if has_name == has_id:
        d.append("exactly one of connector_name / connector_id is required")
    elif has_name and not (isinstance(p["connector_name"], str) and p["connector_name"]):
        d.append("connector_name: non-empty string required")
    elif has_id and (type(p["connector_id"]) not in (str, int) or p["connector_id"] == ""):
        d.append("connector_id: string or integer required")
    if "error_type" in p and not isinstance(p["error_type"], str):
        d.append("error_type: string required")
    if "test_run" in p and type(p["test_run"]) is not bool:
        d.append("test_run: boolean required")
    if not lenient:
        unknown = sorted(p.keys() - _BULK_KEYS)
        if unknown:
            d.append(f"unknown top-level keys: {unknown}")
    return d


def _fault_response(fault: _Fault) -> Response:
    body = fault.body
    if body is None:
        body = {"error": "injected fault", "status": fault.status}
    if isinstance(body, dict | list):
        return _json(body, fault.status or 500, fault.headers)
    content = body.encode() if isinstance(body, str) else body
    return Response(content, status_code=fault.status or 500, headers=fault.headers, media_type="text/plain")


async def _client_left_within(receive: Receive, seconds: float) -> bool:
    """Wait `seconds` unless the client disconnects first (True then); see ``server.client_left_within``.
    Imported here, not at the top: the fake also runs on its own (``python -m tests.fakes.oomnitza``)."""
    from tests.fakes.server import client_left_within

    return await client_left_within(receive, seconds)


def _too_large() -> Response:
    """nginx's answer to a body over client_max_body_size."""
    page = (
        "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
        "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Response(page, status_code=413, media_type="text/html")


def _filter_value(flt: str, pattern: str) -> str | None:
    m = re.search(pattern, flt)
    return m.group(1) if m else None


async def _not_found(request: Request, exc: Exception) -> Response:
    return _json({"error": "not found", "path": request.url.path}, 404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _json({"error": "method not allowed", "path": request.url.path}, 405)


# ------------------------------------------------------------------------------------------- CLI


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    from tests.fakes.server import serve_forever

    ap = argparse.ArgumentParser(prog="python -m tests.fakes.oomnitza", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="sleep per /api request")
    ap.add_argument("--token", default="test-token")
    ap.add_argument("--username")
    ap.add_argument("--password")
    ap.add_argument("--mappings", help="JSON file {name: mapping, 'connector_id:N': mapping}")
    ap.add_argument("--port-file", help="written with the port once listening")
    ap.add_argument("--state-file", help="written with stats and records on SIGTERM/SIGINT")
    ap.add_argument("--keep-log", action="store_true", help="keep the full request/payload log")
    ap.add_argument("--lenient", action="store_true", help="accept unknown bulk payload keys")
    args = ap.parse_args(argv)

    mappings = None
    if args.mappings:
        with open(args.mappings, "rb") as fh:
            mappings = orjson.loads(fh.read())
    fake = FakeOomnitza(
        token=args.token,
        username=args.username,
        password=args.password,
        mappings=mappings,
        keep_log=args.keep_log,
        lenient=args.lenient,
    )
    fake.latency = args.latency_ms / 1000.0

    def on_listening(url: str) -> None:
        print(f"listening on {url}", flush=True)
        if args.port_file:
            _write_atomic(args.port_file, url.rsplit(":", 1)[1].encode())

    # No Server/Date response headers: a little less work per request for h11.
    serve_forever(fake.app, args.host, args.port, on_listening=on_listening, server_header=False, date_header=False)
    if args.state_file:
        state = {"stats": fake.stats(), "records": fake.records_dump()}
        _write_atomic(args.state_file, orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS))
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
