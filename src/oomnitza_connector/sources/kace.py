"""``[kace]``: Quest KACE Systems Management Appliance (SMA, formerly Dell KACE K1000) machines.

Login is ``POST /ams/shared/api/security/login`` with user, password and organization; the appliance
answers with a session cookie. Two generations of appliances are served by one flow:

- SMA 12.1 and newer want ``x-kace-api-version`` on every request, the login included, and send no
  CSRF token;
- SMA 12.0 and older answer the login with ``x-dell-csrf-token`` (or ``x-kace-csrf-token``), which
  must be echoed on every later request together with ``x-dell-api-version``.

So every request carries both version headers, and a CSRF token is echoed only when the login
returned one. A ``401`` mid-run (the session expired) logs in again once and repeats the request.

Machines come from ``/api/inventory/machines`` with ``shaping=machine all,software standard`` and
``paging=limit N offset M``, until an empty page (or ``Count`` is reached). Each machine is cleaned
the way the fact sheet says: top-level ``"empty"`` and ``"0000-00-00 00:00:00"`` become ``""``, and
the ``Software`` list becomes ``software`` = ``[{name, version, path: null}]`` for ``APPLICATIONS``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import datetime, tzinfo
from functools import cached_property
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from ..auth import RefreshingToken
from ..errors import SourceError
from ..http import Http, HttpAuthError, HttpError, OffsetLimit, PageRequest, at, decode_json, error_body
from ..settings import Int, Setting, Url
from .base import BadRecord, Page, Record, Source

log = logging.getLogger(__name__)

LOGIN = "/ams/shared/api/security/login"
LOGOUT = "/ams/shared/api/security/logout"
MACHINES = "/api/inventory/machines"
SHAPING = "machine all,software standard"
NO_VALUE = frozenset({"empty", "0000-00-00 00:00:00"})  # KACE's "no value" markers
CSRF_HEADERS = ("x-dell-csrf-token", "x-kace-csrf-token")
KACE_DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def machines_url(limit: int, offset: int) -> str:
    """The list URL with spaces encoded as ``%20`` (the appliance's own examples), commas literal."""
    shaping = quote(SHAPING, safe=",")
    paging = quote(f"limit {limit} offset {offset}")
    return f"{MACHINES}?shaping={shaping}&paging={paging}"


def machine_pages(limit: int) -> OffsetLimit:
    """``paging=limit N offset M`` (one parameter): the next offset counts what arrived (an appliance may
    send fewer than asked); the listing ends on an empty page, or once ``Count`` machines have been read."""

    def place(request: PageRequest, offset: int) -> PageRequest:
        return PageRequest(machines_url(limit, offset), {})

    return OffsetLimit(limit, items=at("Machines"), total=at("Count"), short_page_ends=False, place=place)


def clean_machine(machine: dict[str, Any], zone: Any = None) -> Record:
    """One ``Machines`` entry as mappings see it (top-level clean-up only; nested values untouched)."""
    record: Record = {}
    for key, value in machine.items():
        if key == "Software":
            continue
        if isinstance(value, str) and value in NO_VALUE:
            value = ""
        elif zone is not None and isinstance(value, str) and KACE_DATE.fullmatch(value):
            value = _with_offset(value, zone)
        record[key] = value
    software = machine.get("Software")
    record["software"] = [
        {"name": item.get("DISPLAY_NAME"), "version": item.get("DISPLAY_VERSION"), "path": None}
        for item in (software if isinstance(software, list) else [])
        if isinstance(item, dict)
    ]
    return record


def _with_offset(value: str, zone: Any) -> str:
    """``2026-09-14 06:12:45`` in the appliance's zone → ``2026-09-14 06:12:45-05:00``."""
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone).isoformat(sep=" ")
    except ValueError:
        return value


class KaceSession(RefreshingToken):
    """The session cookie (``Cookie`` header) plus, on old appliances, the echoed CSRF token.

    ``RefreshingToken`` keeps the "log in once, again once on 401" logic; the login result carries
    the extra CSRF header, applied alongside the cookie."""

    def __init__(self, login: Any) -> None:
        self.login = login
        self.extra: dict[str, str] = {}
        super().__init__(self._fetch, header="Cookie", scheme="")

    async def _fetch(self) -> tuple[str, float | None]:
        cookie, self.extra = await self.login()
        return cookie, None

    def _apply(self, request: httpx.Request) -> None:
        if self.token:
            request.headers["Cookie"] = self.token
        for name, value in self.extra.items():
            request.headers[name] = value

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await self._ensure()
        used = self.token
        self._apply(request)
        response = yield request
        if response.status_code in self.refresh_on:
            await response.aread()
            log.info("KACE answered %d: logging in again", response.status_code)
            await self._ensure(stale=used)
            self._apply(request)
            yield request


class Kace(Source):
    module = "kace"
    mapping_name = "KACE"
    record_type = "assets"
    summary = "Quest KACE SMA machines"
    settings = (
        Setting(
            "url",
            None,
            example="https://KACE_SMA",
            kind=Url(),
            help="the appliance, e.g. `https://kace.example.com`; a URL that ends in `/api` also works",
        ),
        Setting(
            "username",
            "",
            example="***",
            help=(
                "a KACE user with the admin or read-only admin role, without 2FA (a standard user sees "
                "only its own machines); required"
            ),
        ),
        Setting("password", "", example="***", secret=True, help="that user's password; required"),
        Setting(
            "organization_name",
            "Default",
            help="the organization to log into, on appliances with several organizations",
        ),
        Setting(
            "api_version",
            "8",
            kind=Int(min=1),
            help=(
                "the API version to ask for, sent as `x-kace-api-version` and `x-dell-api-version`; a "
                "route without it answers with its newest version. `14` is fine on current appliances"
            ),
        ),
        Setting("page_size", "100", kind=Int(min=1), help="machines per request (`paging=limit N offset M`)"),
        Setting(
            "timezone",
            "",
            help=(
                "the appliance's time zone as an IANA name, e.g. `America/Chicago`: KACE dates carry no "
                'time zone and are then read in that zone (see "Dates"); empty = UTC'
            ),
        ),
    )
    default_mappings = {"APPLICATIONS": {"source": "software"}}
    default_converters = {"Last_inventory": "timestamp", "Last_sync": "timestamp"}

    def validate(self) -> Iterator[str]:
        if not self.setting("username") or not self.setting("password"):
            yield f"[{self.name}] set username and password of a KACE admin or read-only admin"
        name = self.setting("timezone").strip()
        if name:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                yield (
                    f"[{self.name}] timezone '{name}' is not a known time zone (use an IANA name such as Europe/Berlin)"
                )

    @cached_property
    def zone(self) -> tzinfo | None:
        name = self.setting("timezone").strip()
        return ZoneInfo(name) if name else None

    @property
    def base(self) -> str:
        base = self.setting("url").strip().rstrip("/")
        for suffix in ("/api", "/ams/shared/api"):
            if base.endswith(suffix):
                return base.removesuffix(suffix)
        return base

    def _client(self) -> Http:
        version = self.setting("api_version").strip()
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "x-kace-api-version": version,  # SMA 12.1+: on every request, the login included
            "x-dell-api-version": version,  # SMA 12.0 and older (deprecated by Quest, still honoured)
        }
        return self.http(base_url=self.base, headers=headers)

    async def _login(self, http: Http) -> tuple[str, dict[str, str]]:
        body = {
            "userName": self.setting("username"),
            "password": self.setting("password"),
            "organizationName": self.setting("organization_name"),
        }
        try:
            response = await http.request("POST", LOGIN, json=body, auth=None, idempotent=True)
        except HttpAuthError as exc:
            raise SourceError(
                f"[{self.name}] KACE rejected the login ({exc.status}{_kace_error(exc)}): "
                "check username, password and organization_name"
            ) from None
        cookies = [(c.name, c.value) for c in response.cookies.jar]
        http.client.cookies.clear()  # sent by KaceSession, also over http:// (the cookie may say Secure)
        extra = {name: response.headers[name] for name in CSRF_HEADERS if response.headers.get(name)}
        if not cookies and not extra:
            raise SourceError(
                f"[{self.name}] KACE accepted the login but returned no session cookie: is url the KACE appliance?"
            )
        for _, value in cookies:
            self.ctx.redactor.add(value)
        for value in extra.values():
            self.ctx.redactor.add(value)
        log.debug("[%s] logged in (%s)", self.name, "CSRF token, SMA 12.0 or older" if extra else "SMA 12.1+")
        return "; ".join(f"{k}={v}" for k, v in cookies), extra

    async def pages(self) -> AsyncIterator[Page]:
        zone = getattr(self, "zone", None)
        async with self._client() as http:
            session = KaceSession(lambda: self._login(http))
            http.client.auth = session
            try:
                async for response in http.paginate(machine_pages(self.value("page_size")), MACHINES):
                    body = decode_json(response)
                    if not isinstance(body, dict):
                        raise SourceError(
                            f"[{self.name}] KACE answered with {type(body).__name__}, not an object with 'Machines'"
                        )
                    machines = body.get("Machines")
                    if not isinstance(machines, list) or not machines:
                        break
                    yield [
                        clean_machine(m, zone) if isinstance(m, dict) else BadRecord("machine is not an object", m)
                        for m in machines
                    ]
            except HttpAuthError as exc:
                raise SourceError(
                    f"[{self.name}] KACE refused access after logging in again ({exc.status}{_kace_error(exc)}): "
                    "the user needs the admin or read-only admin role, and accounts with two-factor "
                    "authentication cannot use the API (use a dedicated API account without 2FA)"
                ) from None
            finally:
                if session.token is not None:
                    await self._logout(http)

    async def _logout(self, http: Http) -> None:
        assert isinstance(http.client.auth, KaceSession)
        http.client.auth.refresh_on = ()  # never log in again just to log out
        try:
            await http.request("GET", LOGOUT, retry=False, timeout=10.0)
        except (HttpError, httpx.HTTPError) as exc:
            log.debug("[%s] logout failed: %s", self.name, exc)


def _kace_error(exc: HttpError) -> str:
    """The appliance's error text, when its body has one."""
    body = error_body(exc)
    for key in ("error", "message", "errorDescription", "errorMessage"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return f" {value}"
    return ""
