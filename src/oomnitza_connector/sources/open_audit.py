"""``[open_audit]``: Open-AudIT (FirstWave) devices with their network card and installed software.

Login is a form POST to ``/open-audit/index.php/logon``; the server answers with a session cookie:
``ci_session`` on Open-AudIT 5.x (CodeIgniter 4), ``PHPSESSID`` on older servers. Whatever cookies
it sets are sent back on every request. An expired 5.x session is not a 401: the server waits 5 s
and redirects to ``/logon`` (``App\\Filters\\Session::before``), JSON requests included, so
redirects are not followed: a redirect (or a 401/403 on older servers) logs in again once and
repeats the request; a second one is an error, never data.

The device list is paged with ``limit``/``offset``; a page past the end is ``"data": false`` and
``meta.total`` may count devices the user cannot see, so an empty page ends the list. Each device's
details come from ``/devices/<id>?include=<table>``, one call per table the mapping needs
(``network`` and ``ip`` for ``hardware.mac``, ``software`` for ``software``): 5.x takes exactly one
table name (``response_get_include``), and anything else, ``network,software`` included, makes it
answer every table (~70 KB per device). Servers before 5.x ignore ``include`` and get the legacy
``/devices/<id>`` + ``?sub_resource=network`` + ``?sub_resource=software`` calls (detected once on the
first device, or forced with ``api_style``); 5.x ignores ``sub_resource`` and answers the device
itself, which is refused rather than read as a card or software.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx

from ..auth import RefreshingToken
from ..errors import SourceError
from ..http import Http, HttpAuthError, HttpError, OffsetLimit, at, decode_json, error_body, safe_url
from ..settings import Int, Setting, Url
from .base import BadRecord, Record, Source

log = logging.getLogger(__name__)

API = "/open-audit/index.php"
MAX_DETAIL_CONCURRENCY = 4  # the server serves one session's requests one at a time (its file lock)
DATE_FIELDS = ("end_of_life", "end_of_service", "first_seen", "last_seen", "os_installation_date", "warranty_expires")
UNKNOWN_DATES = frozenset({"2000-01-01", "2000-01-01 00:00:00", "0000-00-00", "0000-00-00 00:00:00"})
NULL_MACS = frozenset({"", "00:00:00:00:00:00"})
VIRTUAL_HINTS = ("virtual", "loopback", "vmware", "hyper-v", "vethernet", "miniport", "tunnel")
STYLES = ("auto", "include", "sub_resource")
NIC_FIELDS = ("hardware.mac", "hardware.mac_vendor")


def device_pages(limit: int) -> OffsetLimit:
    """``limit``/``offset``; ends on an empty page (``"data": false`` past the end), at ``meta.total``,
    or (no total) on a short page."""
    return OffsetLimit(limit, items=at("data"), total=at("meta", "total"))


def _attrs(row: Any) -> dict[str, Any] | None:
    """A JSON:API-ish row's ``attributes``, or the row itself when it is already flat."""
    if not isinstance(row, dict):
        return None
    attrs = row.get("attributes")
    return attrs if isinstance(attrs, dict) else row


def _device_id(item: Any) -> Any:
    if not isinstance(item, dict):
        return None
    attrs = found if isinstance(found := item.get("attributes"), dict) else {}
    return item.get("id") or attrs.get("devices.id") or attrs.get("id")


def plain_ip(value: Any) -> str:
    """``192.168.001.042`` (how Open-AudIT stores IPv4) and ``192.168.1.42`` compare equal."""
    text = str(value or "").strip()
    parts = text.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return ".".join(str(int(p)) for p in parts)
    return text.lower()


def _mac(row: dict[str, Any]) -> str:
    return str(row.get("mac") or "").strip().lower()


def pick_nic(cards: list[Any], addresses: list[Any], ip: Any) -> dict[str, Any] | None:
    """The network card for ``hardware.mac``: the one whose MAC carries the device's IP (5.x links
    them in the ``ip`` table: ``mac``, ``ip``, ``net_index``; older servers had the IP on the card),
    else the first card that is not virtual, else the first card with a MAC."""
    rows = [a for a in map(_attrs, cards) if a and _mac(a) not in NULL_MACS]
    wanted = plain_ip(ip)
    if wanted:
        carrying = {_mac(a) for a in map(_attrs, addresses) if a and plain_ip(a.get("ip")) == wanted}
        for card in rows:
            if _mac(card) in carrying:
                return card
        for card in rows:  # pre-5.x cards carried their own address
            if wanted in {plain_ip(card.get(k)) for k in ("ip", "ip_address_v4", "ip_address") if card.get(k)}:
                return card
    for card in rows:
        text = " ".join(str(card.get(k) or "") for k in ("type", "description", "connection", "name", "model"))
        if not any(hint in text.lower() for hint in VIRTUAL_HINTS):
            return card
    return rows[0] if rows else None


def build_record(
    detail: dict[str, Any],
    cards: list[Any] | None,
    addresses: list[Any] | None,
    software: list[Any] | None,
) -> Record:
    """The record; ``None`` for a table that was not read (no mapping needs it)."""
    hardware = dict(detail)
    for name in DATE_FIELDS:
        if isinstance(hardware.get(name), str) and hardware[name].strip() in UNKNOWN_DATES:
            hardware[name] = None  # Open-AudIT's "unknown" placeholder, not a real date
    if cards is not None:
        nic = pick_nic(cards, addresses or [], hardware.get("ip"))
        hardware["mac"] = (nic or {}).get("mac") or ""
        hardware["mac_vendor"] = (nic or {}).get("manufacturer") or ""
    record: Record = {"hardware": hardware}
    if software is not None:
        apps = []
        for row in map(_attrs, software):
            if row and str(row.get("name") or "").strip():
                apps.append(
                    {
                        "name": row.get("name"),
                        "version": row.get("version"),
                        "publisher": row.get("publisher"),
                        "path": row.get("location"),
                    }
                )
        record["software"] = apps
    return record


def _rows(body: Any) -> list[Any]:
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, list) else []


def _refusal(body: Any) -> str | None:
    """Open-AudIT's in-body refusal (HTTP 200, no ``data``, ``meta.header`` 403, an ``errors``
    string; response_helper.php answers this way and exits): its text, or None."""
    if not isinstance(body, dict) or "data" in body:
        return None
    meta = found if isinstance(found := body.get("meta"), dict) else {}
    errors = body.get("errors")
    if str(meta.get("header")) in ("403", "401") or (isinstance(errors, str) and errors):
        return errors if isinstance(errors, str) and errors else f"meta.header {meta.get('header')}"
    return None


def _is_device_row(row: Any) -> bool:
    return isinstance(row, dict) and (row.get("type") == "devices" or "devices.id" in (_attrs(row) or {}))


class _OpenAuditSession(RefreshingToken):
    """The session cookie; a redirect to the logon page (5.x) or a 401/403 (older) logs in again once."""

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await self._ensure()
        used = self.token
        self._apply(request)
        response = yield request
        if response.status_code in (401, 403) or _to_logon(response):
            await response.aread()
            await self._ensure(stale=used)
            self._apply(request)
            yield request


def _to_logon(response: httpx.Response) -> bool:
    return response.is_redirect and "logon" in response.headers.get("location", "").lower()


class OpenAudit(Source):
    module = "open_audit"
    mapping_name = "Open_Audit"
    record_type = "assets"
    summary = "Open-AudIT devices"
    style: str = "auto"  # api_style; "auto" until the first answer decides (set by each run)
    settings = (
        Setting(
            "url",
            None,
            example="http://XXX.XXX.XXX.XXX",
            kind=Url(),
            help=(
                "the scheme and host (and port) of the server, e.g. `https://audit.example.com`; "
                "`.../open-audit/index.php` also works"
            ),
        ),
        Setting("username", None, example="", help="the Open-AudIT user"),
        Setting("password", "", secret=True, help="that user's password"),
        Setting(
            "api_style",
            "auto",
            choices=STYLES,
            help=(
                "how device details are read: `auto` decides once per run, from the first device's answer,"
                " and never switches; `include` reads `?include=<table>`, one call per table (4.x and 5.x);"
                " `sub_resource` forces the legacy calls (before 4.x; a 5.x server ignores them and the run"
                " stops with one line saying so)"
            ),
        ),
        Setting("page_size", "1000", kind=Int(min=1), help="devices per list request (`limit`)"),
    )
    default_mappings = {"APPLICATIONS": {"source": "software"}}
    default_converters = {f"hardware.{name}": "date_format" for name in DATE_FIELDS}

    @property
    def base(self) -> str:
        base = self.setting("url").rstrip("/")
        for suffix in ("/index.php", "/open-audit"):
            base = base.removesuffix(suffix).rstrip("/")
        return base + API

    def tables(self) -> list[str]:
        """The component tables the merged mapping needs, in the order they are read."""
        sources = self.mapped_sources()
        tables = []
        if any(s in NIC_FIELDS or s == "hardware" for s in sources):
            tables += ["network", "ip"]
        if any(s == "software" or s.startswith("software.") for s in sources):
            tables.append("software")
        return tables

    async def _login(self, http: Http) -> tuple[str, float | None]:
        form = {"username": self.setting("username"), "password": self.setting("password")}
        try:
            response = await http.request("POST", "/logon", data=form, auth=None, idempotent=True)
        except HttpAuthError as exc:
            raise SourceError(
                f"[{self.name}] Open-AudIT rejected the login ({exc.status}{_message(exc)}): "
                "check username and password"
            ) from None
        if response.is_redirect:
            raise SourceError(
                f"[{self.name}] Open-AudIT answered the login with a redirect to "
                f"{response.headers.get('location', '?')}: is url the Open-AudIT server?"
            )
        cookies = [(c.name, c.value) for c in response.cookies.jar]
        if not cookies:
            raise SourceError(
                f"[{self.name}] Open-AudIT accepted the login but set no session cookie: is url the Open-AudIT server?"
            )
        for _, value in cookies:
            self.ctx.redactor.add(value)
        names = {name for name, _ in cookies}
        if self.style == "auto" and "PHPSESSID" in names and "ci_session" not in names:
            self.style = "sub_resource"  # a pre-4.x server: no include=
        return "; ".join(f"{k}={v}" for k, v in cookies), None

    async def _get(self, http: Http, path: str, **params: str) -> Any:
        """A GET that must answer JSON; a redirect after logging in again is an error, never data."""
        response = await http.request("GET", path, params=params or None, ok_statuses=frozenset({404}))
        self._no_redirect(response)
        return {} if response.status_code == 404 else decode_json(response)

    def _no_redirect(self, response: httpx.Response) -> None:
        if response.is_redirect:
            raise SourceError(
                f"[{self.name}] Open-AudIT sent {safe_url(response.request.url)} to "
                f"{response.headers.get('location', '?')} again right after logging in: the session is not "
                "kept (a proxy dropping cookies?) or the user may not use the API"
            )

    async def pages(self) -> AsyncIterator[list[Record]]:
        if self.base.startswith("http://"):
            log.warning("[%s] url is http://: the Open-AudIT password travels unencrypted; use https://", self.name)
        self.style = self.setting("api_style")
        self.legacy_noted = False
        self.include_seen = False
        self.needed = self.tables()
        async with self.http(
            base_url=self.base, headers={"Accept": "application/json"}, max_connections=MAX_DETAIL_CONCURRENCY
        ) as http:
            http.client.follow_redirects = False  # a redirect to /logon means "log in again", not data
            http.client.auth = _OpenAuditSession(lambda: self._login(http), header="Cookie", scheme="")
            slots = asyncio.Semaphore(max(1, min(self.ctx.workers, MAX_DETAIL_CONCURRENCY)))

            async def one(device_id: Any) -> Record | BadRecord | None:
                async with slots:
                    return await self._device(http, device_id)

            try:
                async for response in http.paginate(device_pages(int(self.setting("page_size"))), "/devices"):
                    self._no_redirect(response)
                    body = decode_json(response)
                    items = self._device_list(body)
                    ids = [_device_id(item) for item in items]
                    todo = [i for i in ids if i is not None]
                    records: list[Record | BadRecord | None] = []
                    if todo and self.style == "auto":  # the first answer decides the API style, once
                        records.append(await one(todo.pop(0)))
                    records += await asyncio.gather(*(one(i) for i in todo))
                    page = [r for r in records if r is not None]
                    page += [
                        BadRecord("device list entry without an id", item)
                        for item, i in zip(items, ids, strict=True)
                        if i is None
                    ]
                    if page:
                        yield page  # type: ignore[misc]
            except HttpAuthError as exc:
                raise SourceError(
                    f"[{self.name}] Open-AudIT refused access ({exc.status}{_message(exc)}) after "
                    "logging in again: check the user's roles"
                ) from None

    def _device_list(self, body: Any) -> list[Any]:
        if not isinstance(body, dict):
            raise SourceError(f"[{self.name}] Open-AudIT's device list is not a JSON object")
        refused = _refusal(body)
        if refused:
            raise SourceError(
                f"[{self.name}] Open-AudIT refused to list devices ({refused}): give the user a role "
                "that may read devices"
            )
        data = body.get("data")
        if data is False or data is None:  # a page past the end (meta.total may overcount)
            return []
        if not isinstance(data, list):
            raise SourceError(f"[{self.name}] Open-AudIT's device list has no 'data' list")
        return data

    async def _device(self, http: Http, device_id: Any) -> Record | BadRecord | None:
        path = f"/devices/{device_id}"
        if self.style == "sub_resource":
            return await self._legacy_device(http, path, device_id)
        tables = self.needed or ["network"]  # some table: without include= 5.x sends them all
        components: dict[str, list[Any]] = {}
        attrs: dict[str, Any] | None = None
        for table in tables:
            body = await self._get(http, path, include=table)
            refused = _refusal(body)
            detail = _rows(body)
            if refused or not detail:
                self._skipped(device_id, refused)
                return None
            if "included" not in body:
                if self.style == "auto":
                    return await self._switch_to_legacy(http, path, device_id, body)
                if not self.include_seen:  # api_style = include on a server without include=
                    raise SourceError(
                        f"[{self.name}] Open-AudIT ignored include={table}; "
                        "set api_style = sub_resource (or auto) for this server"
                    )
                # The style stays: one odd answer costs its device, not the run's API style.
                return BadRecord(f"device {device_id}: Open-AudIT answered include={table} without 'included'", body)
            self.style = "include"  # decided: never switched again in this run
            self.include_seen = True
            attrs = attrs or _attrs(detail[0])
            if attrs is None:
                return BadRecord(f"device {device_id}: detail is not an object", detail[0])
            components[table] = _included(body.get("included"), table)
        assert attrs is not None
        return build_record(
            attrs,
            components.get("network") if "network" in self.needed else None,
            components.get("ip"),
            components.get("software") if "software" in self.needed else None,
        )

    async def _switch_to_legacy(self, http: Http, path: str, device_id: Any, first: Any) -> Record | BadRecord | None:
        if not self.legacy_noted:
            self.legacy_noted = True
            log.info("[%s] this Open-AudIT server does not answer include=; using sub_resource calls", self.name)
        self.style = "sub_resource"
        return await self._legacy_device(http, path, device_id, first)

    async def _legacy_device(
        self, http: Http, path: str, device_id: Any, first: Any = None
    ) -> Record | BadRecord | None:
        body = first if first is not None else await self._get(http, path)
        detail = _rows(body)
        if _refusal(body) or not detail:
            self._skipped(device_id, _refusal(body))
            return None
        attrs = _attrs(detail[0])
        if attrs is None:
            return BadRecord(f"device {device_id}: detail is not an object", detail[0])
        wanted = [t for t in ("network", "ip", "software") if t in self.needed]
        answers = await asyncio.gather(*(self._get(http, path, sub_resource=t) for t in wanted))
        found = dict(zip(wanted, map(_rows, answers), strict=True))
        for table, rows in found.items():
            if any(_is_device_row(r) for r in rows):
                if table == "ip":  # an old server without the ip table: the cards carry their address
                    found["ip"] = []
                    continue
                raise SourceError(
                    f"[{self.name}] Open-AudIT answered sub_resource={table} with the device itself: this "
                    "server (5.x) ignores sub_resource; set api_style = include (or auto)"
                )
        return build_record(attrs, found.get("network"), found.get("ip"), found.get("software"))

    def _skipped(self, device_id: Any, refused: str | None) -> None:
        if refused:
            log.warning("[%s] device %s was listed but may not be read (%s); skipped", self.name, device_id, refused)
        else:
            log.warning("[%s] device %s disappeared between the list and its details; skipped", self.name, device_id)


def _included(included: Any, table: str) -> list[Any]:
    """The rows of ``table`` in ``included``: 5.x keys them by table and leaves out a table without
    rows (PHP's empty array comes as ``[]``, not ``{}``); 4.x sends one flat list of rows typed
    ``network``, ``software``, ... (``format_data``)."""
    if isinstance(included, dict):
        rows = included.get(table)
        return rows if isinstance(rows, list) else []
    if isinstance(included, list):
        return [r for r in included if isinstance(r, dict) and r.get("type") == table]
    return []


def _message(exc: HttpError) -> str:
    message = error_body(exc).get("message")
    return f" {message}" if isinstance(message, str) and message else ""
