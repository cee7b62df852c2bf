"""``[airwatch]``: Omnissa (formerly VMware) Workspace ONE UEM (AirWatch) devices.

One asset record per device from ``GET /api/mdm/devices/search`` (PascalCase, the resource pinned to
``Accept: application/json;version=1``), paged with ``page`` (0-based) and ``pagesize``; the listing ends
at ``Total``, on ``204 No Content`` or on an empty ``Devices`` list.

Auth: OAuth 2.0 client credentials (``client_id``/``client_secret``) against the region's token service
``https://{region}.uemauth.workspaceone.com/connect/token`` (or ``token_url``), recommended for SaaS; or
the seed's Basic ``username``/``password``. ``aw-tenant-code`` (``api_token``) is sent whenever set.

Enrichments:
- ``network``: ``GET /api/mdm/devices/{Id.Value}/network`` per device, only when a mapping (the
  Oomnitza one included) reads ``network.*``; concurrent within a page, bounded; a failed call leaves
  ``network = {}``;
- ``dep``: when ``dep_uuid`` is set and a mapping (the Oomnitza one included) reads ``dep.*``,
  ``GET /api/mdm/dep/groups/{dep_uuid}/devices`` once, matched to devices by serial number. A failure
  there aborts the run (as the seed did).

Vendor material: paging by ``page`` (0-based)/``pagesize`` and ``Total`` (VMware/Omnissa Tech Zone,
"Using paginated requests with Workspace ONE UEM REST APIs"); region token URLs (UEM Console Basics,
"Datacenter and Token URLs for OAuth 2.0 Support"); ``errorCode``/``message`` error bodies.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from ..auth import RefreshingToken, basic
from ..errors import SourceError
from ..http import Http, HttpAuthError, HttpError, PageRequest, Paginator, decode_json, error_body
from ..settings import Choice, Int, Setting, Url
from .base import BadRecord, Record, Source

log = logging.getLogger(__name__)

SEARCH = "/api/mdm/devices/search"
ACCEPT = "application/json;version=1"
REGIONS = ("na", "emea", "apac", "uat")
TOKEN_URL = "https://{region}.uemauth.workspaceone.com/connect/token"
MAX_PAGE_SIZE = 500


class DevicePages(Paginator):
    """``page`` 0, 1, 2 … with ``pagesize``: ends on 204, an empty ``Devices`` list or once ``Total``
    devices arrived (counted, so a server capping the page size below ours still pages correctly)."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.seen = 0

    def first(self, request: PageRequest) -> PageRequest:
        return PageRequest(request.url, {**request.params, "page": 0, "pagesize": self.page_size})

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        if response.status_code == 204 or not response.content.strip():
            return None
        body = decode_json(response)
        devices = body.get("Devices") if isinstance(body, dict) else None
        if not isinstance(devices, list) or not devices:
            return None
        self.seen += len(devices)
        total = body.get("Total")
        if isinstance(total, int) and not isinstance(total, bool) and self.seen >= total:
            return None
        return PageRequest(request.url, {**request.params, "page": int(request.params["page"]) + 1})


class AirWatch(Source):
    module = "airwatch"
    mapping_name = "AirWatch"
    record_type = "assets"
    summary = "Workspace ONE UEM (AirWatch) devices"
    settings = (
        Setting(
            "url",
            "https://apidev.awmdm.com",
            example="https://as1234.awmdm.com",
            kind=Url(),
            help="the UEM REST API host (`https://as1234.awmdm.com`); `/api` may be included",
        ),
        Setting(
            "username",
            "",
            example="username@example.com",
            help="an admin with API access, for HTTP Basic (when no `client_id` is set)",
        ),
        Setting("password", "", example="change-me", secret=True, help="that admin's password"),
        Setting(
            "api_token",
            "",
            example="YOUR AirWatch API TOKEN",
            secret=True,
            help=(
                'the REST API key ("tenant code"), sent as `aw-tenant-code`; required with '
                "`username`/`password`, sent with OAuth too when set"
            ),
        ),
        Setting(
            "dep_uuid",
            "",
            help=(
                "UUID of the organization group whose Apple DEP (ADE) device list is merged in as `dep`, "
                "read when a mapping reads `dep.…`; empty = no DEP call"
            ),
        ),
        Setting(
            "client_id",
            "",
            help=(
                "an OAuth client (recommended for SaaS tenants) instead of `username`/`password`: its "
                "client ID (Groups & Settings > Configurations > OAuth Client Management)"
            ),
        ),
        Setting("client_secret", "", secret=True, help="that OAuth client's secret"),
        Setting(
            "region",
            "",
            kind=Choice(REGIONS, ignore_case=True),
            help=("the OAuth client's token service region: `https://{region}.uemauth.workspaceone.com/connect/token`"),
        ),
        Setting(
            "token_url", "", kind=Url(), help="the full token URL instead of `region` (other datacenters, a proxy)"
        ),
        Setting("page_size", "250", kind=Int(1, MAX_PAGE_SIZE), help="devices per search request"),
        Setting(
            "max_connections",
            "4",
            kind=Int(1, 32),
            help="concurrent requests to UEM at most (the per-device network calls)",
        ),
    )

    def validate(self) -> Iterator[str]:
        where = f"[{self.name}]"
        if bool(self.setting("client_id")) != bool(self.setting("client_secret")):
            yield f"{where} set both client_id and client_secret (an OAuth client)"
        if self.oauth:
            if not self.setting("token_url") and not self.setting("region"):
                yield f"{where} set region ({', '.join(REGIONS)}) or token_url for the OAuth client"
        else:
            missing = [n for n in ("username", "password", "api_token") if not self.setting(n)]
            if missing:
                yield (
                    f"{where} set client_id and client_secret (OAuth), or username, password and "
                    f"api_token (missing: {', '.join(missing)})"
                )

    @property
    def oauth(self) -> bool:
        return bool(self.setting("client_id"))

    @property
    def base(self) -> str:
        return re.sub(r"/api(/mdm)?/?$", "", self.setting("url").rstrip("/"), flags=re.IGNORECASE)

    @property
    def token_url(self) -> str:
        return self.setting("token_url") or TOKEN_URL.format(region=self.setting("region").strip().lower())

    def wants_network(self) -> bool:
        return self._maps("network")

    def wants_dep(self) -> bool:
        return bool(self.setting("dep_uuid").strip()) and self._maps("dep")

    def _maps(self, key: str) -> bool:
        return any(src == key or src.startswith(f"{key}.") for src in self.mapped_sources())

    def _client(self) -> Http:
        headers = {"Accept": ACCEPT}
        if self.setting("api_token"):
            headers["aw-tenant-code"] = self.setting("api_token")
        cap = self.value("max_connections")
        auth = None if self.oauth else basic(self.setting("username"), self.setting("password"))
        return self.http(base_url=self.base, headers=headers, auth=auth, max_connections=cap)

    async def _token(self, http: Http) -> tuple[str, float | None]:
        form = {"grant_type": "client_credentials"}
        client = basic(self.setting("client_id"), self.setting("client_secret"))
        try:
            response = await http.request(
                "POST", self.token_url, data=form, auth=client, headers={"Accept": "application/json"}
            )
        except HttpError as exc:
            raise SourceError(
                f"[{self.name}] the Workspace ONE token service refused the OAuth client "
                f"({exc.status or 'no answer'}{_oauth_error(exc)}): check client_id, client_secret "
                "and region/token_url"
            ) from None
        data = decode_json(response)
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise SourceError(f"[{self.name}] the Workspace ONE token service answered without an access_token")
        expires = data.get("expires_in")
        return token, float(expires) if isinstance(expires, int | float) and expires > 0 else 3600.0

    async def pages(self) -> AsyncIterator[list[Record]]:
        async with self._client() as http:
            if self.oauth:
                http.client.auth = RefreshingToken(lambda: self._token(http))
            try:
                if self.setting("dep_uuid").strip() and not self.wants_dep():
                    log.info("[%s] dep_uuid is set but no mapping reads dep.*: DEP list not read", self.name)
                dep = await self._dep(http) if self.wants_dep() else None
                network = self.wants_network()
                slots = asyncio.Semaphore(self.value("max_connections"))
                paginator = DevicePages(self.value("page_size"))
                async for response in http.paginate(paginator, SEARCH):
                    if response.status_code == 204 or not response.content.strip():
                        break  # UEM's "no (more) devices"
                    body = decode_json(response)
                    devices = body.get("Devices") if isinstance(body, dict) else None
                    if not isinstance(devices, list):
                        raise SourceError(f"[{self.name}] the device search answered without a 'Devices' list")
                    if not devices:
                        break
                    yield await self._page(http, devices, dep, network, slots)
            except HttpAuthError as exc:
                raise SourceError(self._rejected(exc)) from None

    async def _page(
        self, http: Http, devices: list[Any], dep: dict[str, Any] | None, network: bool, slots: asyncio.Semaphore
    ) -> list[Record]:
        page: list[Any] = []
        for device in devices:
            if not isinstance(device, dict):
                page.append(BadRecord("device search entry is not an object", device))
                continue
            if dep is not None:
                entry = dep.get(str(device.get("SerialNumber") or ""))
                if entry is not None:
                    device["dep"] = entry
            page.append(device)
        if network:

            async def one(device: dict[str, Any]) -> None:
                async with slots:
                    device["network"] = await self._network(http, device)

            await asyncio.gather(*(one(d) for d in page if isinstance(d, dict)))
        return page

    async def _network(self, http: Http, device: dict[str, Any]) -> Any:
        device_id = (device.get("Id") or {}).get("Value") if isinstance(device.get("Id"), dict) else None
        if device_id is None:
            return {}
        try:
            response = await http.request("GET", f"/api/mdm/devices/{quote(str(device_id), safe='')}/network")
            if response.status_code == 204 or not response.content.strip():
                return {}
            body = decode_json(response)
        except HttpError as exc:
            log.warning("[%s] network details of device %s not read: %s", self.name, device_id, exc)
            return {}
        return body if isinstance(body, dict) else {}

    async def _dep(self, http: Http) -> dict[str, Any]:
        uuid = self.setting("dep_uuid").strip()
        try:
            response = await http.request("GET", f"/api/mdm/dep/groups/{quote(uuid, safe='')}/devices")
        except HttpAuthError:
            raise
        except HttpError as exc:
            raise SourceError(f"[{self.name}] the DEP device list of group {uuid} could not be read: {exc}") from None
        if response.status_code == 204 or not response.content.strip():
            return {}
        body = decode_json(response)
        if isinstance(body, dict):  # tolerate an envelope around the list
            body = next((v for v in body.values() if isinstance(v, list)), None)
        if not isinstance(body, list):
            raise SourceError(f"[{self.name}] the DEP device list of group {uuid} is not a list")
        by_serial: dict[str, Any] = {}
        for entry in body:
            if isinstance(entry, dict) and entry.get("deviceSerialNumber"):
                by_serial.setdefault(str(entry["deviceSerialNumber"]), entry)
        log.info("[%s] %d DEP device(s) in group %s", self.name, len(by_serial), uuid)
        return by_serial

    def _rejected(self, exc: HttpError) -> str:
        check = (
            "client_id/client_secret, the OAuth client's role and api_token"
            if self.oauth
            else "username, password and api_token"
        )
        return (
            f"[{self.name}] Workspace ONE UEM rejected the credentials ({exc.status}{_uem_error(exc)}): check {check}"
        )


def _uem_error(exc: HttpError) -> str:
    body = error_body(exc)
    code, message = body.get("errorCode"), body.get("message")
    parts = [str(p) for p in (code, message) if p not in (None, "")]
    return f" {' '.join(parts)}" if parts else ""


def _oauth_error(exc: HttpError) -> str:
    body = error_body(exc)
    if body.get("error"):
        return f" {body['error']}"
    return ""
