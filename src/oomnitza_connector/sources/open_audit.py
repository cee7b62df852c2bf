"""``[open_audit]``: Open-AudIT (FirstWave) devices with their network card and installed software.

Login is a form POST to ``/open-audit/index.php/logon``; the server answers with a session cookie:
``ci_session`` on Open-AudIT 5.x (CodeIgniter 4), ``PHPSESSID`` on older servers. Whatever cookies
it sets are sent back on every request, and a 401/403 mid-run logs in again once (sessions expire).

The device list is paged with ``limit``/``offset``; each device's details come from
``/devices/<id>?include=network,software`` on current servers, or from the legacy
``/devices/<id>`` + ``?sub_resource=network`` + ``?sub_resource=software`` calls on servers that do
not answer ``include`` (detected once, or forced with ``api_style``). Detail calls run concurrently
within a page, bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .. import redact
from ..auth import RefreshingToken
from ..errors import SourceError
from ..http import Http, HttpAuthError, HttpError, PageRequest, Paginator, decode_json, error_body
from ..settings import Int, Setting, Url
from .base import BadRecord, Record, Source

log = logging.getLogger(__name__)

API = "/open-audit/index.php"
DETAIL_CONCURRENCY = 8
DATE_FIELDS = ("end_of_life", "end_of_service", "first_seen", "last_seen", "os_installation_date", "warranty_expires")
UNKNOWN_DATES = frozenset({"2000-01-01", "2000-01-01 00:00:00", "0000-00-00", "0000-00-00 00:00:00"})
NULL_MACS = frozenset({"", "00:00:00:00:00:00"})
STYLES = ("auto", "include", "sub_resource")


class DevicePages(Paginator):
    """``limit``/``offset``; ends on an empty page, at ``meta.total``, or (no total) on a short page."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def first(self, request: PageRequest) -> PageRequest:
        return PageRequest(request.url, {**request.params, "limit": self.limit, "offset": 0})

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        body = decode_json(response)
        data = body.get("data") if isinstance(body, dict) else None
        n = len(data) if isinstance(data, list) else 0
        if n == 0:
            return None
        offset = int(request.params["offset"]) + n
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
        total = meta.get("total")
        if isinstance(total, int) and not isinstance(total, bool):
            if offset >= total:
                return None
        elif n < self.limit:
            return None
        return PageRequest(request.url, {**request.params, "offset": offset})


def _attrs(row: Any) -> dict[str, Any] | None:
    """A JSON:API-ish row's ``attributes``, or the row itself when it is already flat."""
    if not isinstance(row, dict):
        return None
    attrs = row.get("attributes")
    return attrs if isinstance(attrs, dict) else row


def _device_id(item: Any) -> Any:
    if not isinstance(item, dict):
        return None
    attrs = item.get("attributes") if isinstance(item.get("attributes"), dict) else {}
    return item.get("id") or attrs.get("devices.id") or attrs.get("id")


def pick_nic(rows: list[Any], ip: Any) -> dict[str, Any] | None:
    """The network row for ``hardware.mac``: the one carrying the device's IP, else the first
    non-virtual card with a MAC, else the first card with a MAC."""
    cards = [a for a in map(_attrs, rows) if a and str(a.get("mac") or "").strip().lower() not in NULL_MACS]
    if ip:
        for card in cards:
            if ip in (card.get("ip"), card.get("ip_address_v4"), card.get("ip_address")):
                return card
    for card in cards:
        text = " ".join(str(card.get(k) or "") for k in ("type", "description", "connection", "name")).lower()
        if "virtual" not in text and "loopback" not in text:
            return card
    return cards[0] if cards else None


def build_record(detail: dict[str, Any], network: list[Any], software: list[Any]) -> Record:
    hardware = dict(detail)
    for name in DATE_FIELDS:
        if isinstance(hardware.get(name), str) and hardware[name].strip() in UNKNOWN_DATES:
            hardware[name] = None  # Open-AudIT's "unknown" placeholder, not a real date
    nic = pick_nic(network, hardware.get("ip"))
    hardware["mac"] = (nic or {}).get("mac") or ""
    hardware["mac_vendor"] = (nic or {}).get("manufacturer") or ""
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
    return {"hardware": hardware, "software": apps}


def _rows(body: Any) -> list[Any]:
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, list) else []


class OpenAudit(Source):
    module = "open_audit"
    mapping_name = "Open_Audit"
    record_type = "assets"
    summary = "Open-AudIT devices"
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
                "how device details are read: `auto` detects the style once per run; `include` forces "
                "`?include=network,software` (5.x); `sub_resource` forces the three legacy calls per "
                "device"
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

    async def _login(self, http: Http) -> tuple[str, float | None]:
        form = {"username": self.setting("username"), "password": self.setting("password")}
        try:
            response = await http.request("POST", "/logon", data=form, auth=None)
        except HttpAuthError as exc:
            raise SourceError(
                f"[{self.name}] Open-AudIT rejected the login ({exc.status}{_message(exc)}): "
                "check username and password"
            ) from None
        cookies = [(c.name, c.value) for c in response.cookies.jar]
        if not cookies:
            raise SourceError(
                f"[{self.name}] Open-AudIT accepted the login but set no session cookie: is url the Open-AudIT server?"
            )
        for _, value in cookies:
            redact.add_secret(value)
        names = {name for name, _ in cookies}
        if self.style == "auto" and "PHPSESSID" in names and "ci_session" not in names:
            self.style = "sub_resource"  # a pre-4.x server: no include=
        return "; ".join(f"{k}={v}" for k, v in cookies), None

    async def pages(self) -> AsyncIterator[list[Record]]:
        if self.base.startswith("http://"):
            log.warning("[%s] url is http://: the Open-AudIT password travels unencrypted; use https://", self.name)
        self.style = self.setting("api_style")
        self.legacy_noted = False
        async with self.http(
            base_url=self.base, headers={"Accept": "application/json"}, max_connections=DETAIL_CONCURRENCY
        ) as http:
            http.client.auth = RefreshingToken(
                lambda: self._login(http), header="Cookie", scheme="", refresh_on=(401, 403)
            )
            slots = asyncio.Semaphore(DETAIL_CONCURRENCY)

            async def one(device_id: Any) -> Record | BadRecord | None:
                async with slots:
                    return await self._device(http, device_id)

            try:
                async for response in http.paginate(DevicePages(int(self.setting("page_size"))), "/devices"):
                    body = decode_json(response)
                    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                        raise SourceError(f"[{self.name}] Open-AudIT's device list has no 'data' list")
                    ids = [_device_id(item) for item in body["data"]]
                    records = await asyncio.gather(*(one(i) for i in ids if i is not None))
                    page = [r for r in records if r is not None]
                    page += [
                        BadRecord("device list entry without an id", item)
                        for item, i in zip(body["data"], ids, strict=True)
                        if i is None
                    ]
                    if page:
                        yield page  # type: ignore[misc]
            except HttpAuthError as exc:
                raise SourceError(
                    f"[{self.name}] Open-AudIT refused access ({exc.status}{_message(exc)}) after "
                    "logging in again: check the user's roles"
                ) from None

    async def _device(self, http: Http, device_id: Any) -> Record | BadRecord | None:
        path = f"/devices/{device_id}"
        if self.style != "sub_resource":
            response = await http.request(
                "GET", path, params={"include": "network,software"}, ok_statuses=frozenset({404})
            )
            body = decode_json(response) if response.status_code != 404 else {}
            detail = _rows(body)
            if not detail:
                return self._vanished(device_id)
            included = body.get("included")
            if isinstance(included, dict):
                attrs = _attrs(detail[0])
                if attrs is None:
                    return BadRecord(f"device {device_id}: detail is not an object", detail[0])
                return build_record(attrs, _list(included.get("network")), _list(included.get("software")))
            if self.style == "include":
                raise SourceError(
                    f"[{self.name}] Open-AudIT ignored include=network,software; "
                    "set api_style = sub_resource (or auto) for this server"
                )
            if not self.legacy_noted:
                self.legacy_noted = True
                log.info("[%s] this Open-AudIT server does not answer include=; using sub_resource calls", self.name)
            self.style = "sub_resource"
            first = body
        else:
            response = await http.request("GET", path, ok_statuses=frozenset({404}))
            first = decode_json(response) if response.status_code != 404 else {}
        detail = _rows(first)
        if not detail:
            return self._vanished(device_id)
        attrs = _attrs(detail[0])
        if attrs is None:
            return BadRecord(f"device {device_id}: detail is not an object", detail[0])
        network, software = await asyncio.gather(
            http.request("GET", path, params={"sub_resource": "network"}, ok_statuses=frozenset({404})),
            http.request("GET", path, params={"sub_resource": "software"}, ok_statuses=frozenset({404})),
        )
        return build_record(attrs, _rows(_json_or_empty(network)), _rows(_json_or_empty(software)))

    def _vanished(self, device_id: Any) -> None:
        log.warning("[%s] device %s disappeared between the list and its details; skipped", self.name, device_id)
        return None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _json_or_empty(response: httpx.Response) -> Any:
    return {} if response.status_code == 404 else decode_json(response)


def _message(exc: HttpError) -> str:
    message = error_body(exc).get("message")
    return f" {message}" if isinstance(message, str) and message else ""
