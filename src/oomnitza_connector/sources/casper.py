"""``[casper]``: Jamf Pro (formerly Casper Suite) computers or mobile devices, one kind per section.

Jamf turned Basic auth off for the Classic API in 11.5 and deprecated the Classic computer
inventory in 11.15, so this source reads the Jamf Pro API and keeps the seed's record shape:

- auth: an API client (``client_id``/``client_secret`` → ``POST /api/oauth/token``) or a user bearer
  token (``username``/``password`` → ``POST /api/v1/auth/token``, renewed with
  ``/api/v1/auth/keep-alive``, invalidated when the run ends). ``RefreshingToken`` renews it ahead of
  expiry and once more on a 401;
- computers: ``GET /api/vN/computers-inventory?section=…&page=&page-size=&sort=id:asc``, N the newest
  of v4, v3, v2, v1 the server answers (or the ``api_version`` setting); v4 calls the check-in time
  ``general.lastCheckIn`` (v3: ``lastContactTime``);
- mobile devices: ``GET /api/v2/mobile-devices/detail?section=…&page=&page-size=&sort=mobileDeviceId:asc``
  (the default sort, ``displayName``, is not unique: equal names make page paging skip and repeat
  devices); ``initialEntryTimestamp`` and the last backup time exist only in the per-device
  ``/api/v2/mobile-devices/{id}/detail``, fetched only when the merged mapping uses them;
- ``group_name``: the group's member IDs from the Classic API (``/JSSResource/computergroups``, with
  the bearer token), then the inventory filtered with RSQL ``id=in=(…)`` in chunks, fetched
  concurrently but never more than ``min(--workers, max_connections)`` at a time.

Every record is the Jamf Pro API JSON *plus* the Classic keys the seed's mappings address
(``general.serial_number``, ``hardware.total_ram_mb``, ``location.email_address``, the ``*_epoch`` /
``*_utc`` dates, ``software.applications``, ``extension_attributes``): see ``classic_computer`` and
``classic_mobile``, the documented translation layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from ..auth import HeaderToken, RefreshingToken, basic
from ..errors import ConfigError, SourceError
from ..http import Http, HttpAuthError, HttpError, PageNumber, at, decode_json, error_body, safe_url
from ..settings import Int, List, Setting, Url
from .base import BadRecord, Record, Source

log = logging.getLogger(__name__)

COMPUTER_SECTIONS = (
    "GENERAL",
    "HARDWARE",
    "OPERATING_SYSTEM",
    "USER_AND_LOCATION",
    "PURCHASING",
    "APPLICATIONS",
    "EXTENSION_ATTRIBUTES",
    "SECURITY",
    "STORAGE",
    "GROUP_MEMBERSHIPS",
)
MOBILE_SECTIONS = (
    "GENERAL",
    "HARDWARE",
    "USER_AND_LOCATION",
    "PURCHASING",
    "SECURITY",
    "NETWORK",
    "APPLICATIONS",
    "EXTENSION_ATTRIBUTES",
)
# Sections beyond the default list, requested when the merged mapping names their record key
# (the ComputerSection enum of the Jamf Pro API schema, jamf-cli specs/ComputersInventory.yaml).
COMPUTER_EXTRA_SECTIONS = {
    "diskEncryption": "DISK_ENCRYPTION",
    "configurationProfiles": "CONFIGURATION_PROFILES",
    "printers": "PRINTERS",
    "services": "SERVICES",
    "localUserAccounts": "LOCAL_USER_ACCOUNTS",
    "certificates": "CERTIFICATES",
    "attachments": "ATTACHMENTS",
    "plugins": "PLUGINS",
    "packageReceipts": "PACKAGE_RECEIPTS",
    "fonts": "FONTS",
    "licensedSoftware": "LICENSED_SOFTWARE",
    "ibeacons": "IBEACONS",
    "softwareUpdates": "SOFTWARE_UPDATES",
    "contentCaching": "CONTENT_CACHING",
}
COMPUTER_API_VERSIONS = ("v4", "v3", "v2", "v1")  # newest first; v1 and v3 are deprecated by Jamf
# Classic mobile fields only the per-device detail (/api/v2/mobile-devices/{id}/detail) can fill.
MOBILE_DETAIL_FIELDS = ("general.initial_entry_date", "general.last_backup_time")
MAX_IDS_PER_FILTER = 100  # an RSQL id=in=(…) list per request; keeps the request line short
NAMES_TTL = 3600.0  # building/department names are re-read after this long (long-lived webhook server)
DATE_FIELDS = (
    "general.report_date",
    "general.last_contact_time",
    "general.initial_entry_date",
    "purchasing.warranty_expires",
    "purchasing.lease_expires",
    "purchasing.po_date",
)


class DeviceNotFound(SourceError):
    """``fetch_one`` was asked for an ID Jamf Pro does not have (deleted, or the other device kind)."""


@dataclass(frozen=True)
class Kind:
    """What differs between computers and mobile devices."""

    label: str
    sections: tuple[str, ...]
    id_field: str  # the RSQL field holding the numeric ID (and the unique sort key)
    group_path: str  # Classic API group collection
    group_list_key: str
    group_key: str
    members_key: str
    privileges: str
    translate: Callable[[dict[str, Any], Names], Record]
    extra_sections: dict[str, str] = field(default_factory=dict)  # record key → section, on demand


class Casper(Source):
    module = "casper"
    mapping_name = "Casper"
    record_type = "assets"
    summary = "Jamf Pro (Casper) computers or mobile devices"
    settings = (
        Setting(
            "url",
            "https://jss.jamfcloud.com/example",
            example="https://acme.jamfcloud.com",
            kind=Url(),
            help=(
                "your Jamf Pro server, e.g. `https://acme.jamfcloud.com` or "
                "`https://jamf.example.com:8443`; `/api`, `/api/v1` or `/JSSResource` at the end and a "
                "trailing `/` work too"
            ),
        ),
        Setting(
            "username",
            "",
            example="username@example.com",
            help="a Jamf Pro user, used only when `client_id` is not set",
        ),
        Setting(
            "password",
            "",
            example="change-me",
            secret=True,
            help="that user's password (any character works, `%` and `*` included)",
        ),
        Setting(
            "sync_type",
            "computers",
            choices=("computers", "mobiledevices"),
            help="`computers` or `mobiledevices`; it also picks the mapping name: `Casper` or `Casper.MDM`",
        ),
        Setting(
            "group_name",
            "",
            help=(
                "sync only the members of this group: a computer group for `computers`, a mobile device "
                "group for `mobiledevices`; smart and static groups both work. The exact name wins, else "
                "a name that differs only in letter case"
            ),
        ),
        Setting(
            "client_id",
            "",
            help=("the Client ID of a Jamf Pro API client; when it is set, `username` and `password` are not used"),
        ),
        Setting("client_secret", "", secret=True, help="that API client's secret"),
        Setting(
            "page_size",
            "100",
            kind=Int(1, 2000),
            help=(
                "devices per inventory request; Jamf's default is 100, and large pages with the "
                "`APPLICATIONS` section can be slow"
            ),
        ),
        Setting(
            "max_connections",
            "5",
            kind=Int(1, 50),
            help=(
                "the most requests open against Jamf at the same time (Jamf asks API users to stay at 5 "
                "or fewer); group members are fetched `min(--workers, max_connections)` at a time"
            ),
        ),
        Setting(
            "api_version",
            "auto",
            help=(
                "the computer inventory API version: `auto` uses the newest one the server answers (tried"
                " in the order `v4`, `v3`, `v2`, `v1`); e.g. `v3` pins that version and skips the check. "
                "Mobile devices always use `/api/v2/mobile-devices/detail`"
            ),
        ),
        Setting(
            "sections",
            "",
            kind=List(),
            help=(
                "the inventory sections to request, e.g. `GENERAL,HARDWARE,OPERATING_SYSTEM`; empty means"
                ' every section the old field names need (see "Record shape") plus, for computers, every'
                " section whose Jamf Pro API key the merged mapping names (e.g. `diskEncryption.*` adds"
                " `DISK_ENCRYPTION`). A list you set is used as it is; leaving out `APPLICATIONS` makes large"
                " syncs much faster, if you do not map applications"
            ),
        ),
    )
    default_converters = dict.fromkeys(DATE_FIELDS, "date_format")

    def __init__(self, section: Any) -> None:
        super().__init__(section)
        self._shared: _Session | None = None
        self._shared_lock = asyncio.Lock()

    # -- settings -----------------------------------------------------------------------------------

    def validate(self) -> None:
        where = f"[{self.name}]"
        if bool(self.setting("client_id")) != bool(self.setting("client_secret")):
            raise ConfigError(f"{where} set both client_id and client_secret (a Jamf Pro API client)")
        if not self.setting("client_id") and not (self.setting("username") and self.setting("password")):
            raise ConfigError(
                f"{where} set client_id and client_secret (a Jamf Pro API client), or username and password"
            )
        version = self.setting("api_version") or "auto"
        if version != "auto" and not re.fullmatch(r"v\d+", version):
            raise ConfigError(f"{where} api_version must be auto or a version like v4")
        for name in self._requested_sections():
            if not re.fullmatch(r"[A-Z_]+", name):
                raise ConfigError(f"{where} sections: {name!r} is not a Jamf Pro section name (e.g. GENERAL)")

    @property
    def kind(self) -> Kind:
        return MOBILES if self.setting("sync_type") == "mobiledevices" else COMPUTERS

    def connector_name(self) -> str:
        return "Casper.MDM" if self.kind is MOBILES else "Casper"

    def extra_mappings(self) -> dict[str, dict[str, Any]]:
        # The reference always added this for computers; a user mapping of APPLICATIONS wins.
        return {"APPLICATIONS": {"source": "software.applications"}} if self.kind is COMPUTERS else {}

    @property
    def base(self) -> str:
        """The server root, whether the user gave it with /api, /api/vN or /JSSResource or not."""
        url = self.setting("url").rstrip("/")
        return re.sub(r"/(api(/v\d+)?|JSSResource)$", "", url, flags=re.IGNORECASE)

    @property
    def page_size(self) -> int:
        return int(self.setting("page_size") or 100)

    @property
    def cap(self) -> int:
        return int(self.setting("max_connections") or 5)

    @property
    def concurrency(self) -> int:
        """Parallel inventory requests for group members and webhooks: --workers, never above the cap."""
        return max(1, min(self.ctx.workers, self.cap))

    def _requested_sections(self) -> list[str]:
        text = self.setting("sections").strip()
        if not text:
            return list(self.kind.sections) + [s for s in self._mapped_sections() if s not in self.kind.sections]
        return [s.strip().upper() for s in text.split(",") if s.strip()]

    def _mapped_sections(self) -> list[str]:
        """Further sections the merged mapping reads by their Jamf Pro API name (``diskEncryption.…``)."""
        extra = self.kind.extra_sections
        return list(
            dict.fromkeys(extra[s.split(".", 1)[0]] for s in self.mapped_sources() if s.split(".", 1)[0] in extra)
        )

    def wants_mobile_detail(self) -> bool:
        return any(src.startswith(MOBILE_DETAIL_FIELDS) for src in self.mapped_sources())

    @property
    def credentials_hint(self) -> str:
        return "client_id and client_secret" if self.setting("client_id") else "username and password"

    # -- the contract -------------------------------------------------------------------------------

    async def check(self) -> None:
        async with self._session() as jamf:
            try:
                await jamf.inventory_path()
            except HttpAuthError as exc:
                raise self._refused(exc) from None

    async def pages(self) -> AsyncIterator[list[Record | BadRecord]]:
        async with self._session() as jamf:
            try:
                await jamf.load_names()
                if self.setting("group_name"):
                    ids = await jamf.group_member_ids(self.setting("group_name"))
                    log.info("[%s] group %r has %d member(s)", self.name, self.setting("group_name"), len(ids))
                    async for page in jamf.pages_for_ids(ids):
                        yield page
                else:
                    async for page in jamf.inventory():
                        yield page
            except HttpAuthError as exc:
                raise self._refused(exc) from None

    async def fetch_one(self, device_id: str) -> dict[str, Any]:
        """One device's record, shaped exactly as ``pages()`` yields it (for the webhook server).

        Raises ``DeviceNotFound`` for an unknown ID, ``SourceError`` when Jamf cannot be read. The
        client (and its token) is kept between calls; ``aclose()`` releases it.
        """
        ident = str(device_id).strip()
        if not ident.isascii() or not ident.isdigit():
            raise DeviceNotFound(f"[{self.name}] {ident!r} is not a Jamf Pro {self.kind.label} ID")
        async with self._shared_lock:
            if self._shared is None:
                self._shared = _Session(self)
        jamf = self._shared
        try:
            await jamf.load_names()
            records = await jamf.fetch_ids([ident])
        except HttpAuthError as exc:
            raise self._refused(exc) from None
        for record in records:
            if isinstance(record, BadRecord):
                raise SourceError(f"[{self.name}] {record.message}")
            if str(_id_of(record)) == ident:
                return record
        raise DeviceNotFound(f"[{self.name}] Jamf Pro has no {self.kind.label} with ID {ident}")

    async def aclose(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            await shared.close()

    # -- helpers ------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        jamf = _Session(self)
        try:
            yield jamf
        finally:
            await jamf.close()

    def _refused(self, exc: HttpAuthError) -> SourceError:
        where = safe_url(exc.response.request.url) if exc.response is not None else "Jamf Pro"
        code = _jamf_error(exc.response)
        if exc.status == 403:
            return SourceError(
                f"[{self.name}] Jamf Pro refused access to {where} ({exc.status}{code}): give the "
                f"API role or user the privileges {self.kind.privileges}"
            )
        return SourceError(
            f"[{self.name}] Jamf Pro rejected the credentials ({exc.status}{code}): check {self.credentials_hint}"
        )


# -- the Jamf Pro API conversation ------------------------------------------------------------------


class _Session:
    """One client with its token, discovered API version and name lookups."""

    def __init__(self, source: Casper) -> None:
        self.source = source
        self.kind = source.kind
        self.name = source.name
        self.sections = source._requested_sections()
        self.http: Http = source.http(
            base_url=source.base, headers={"Accept": "application/json"}, max_connections=source.cap
        )
        self.http.client.auth = RefreshingToken(self._fetch_token, leeway=30.0)
        self.user_token: str | None = None  # a username/password bearer token, renewed by keep-alive
        self.user_expires = 0.0
        self._path: str | None = None
        self._path_lock = asyncio.Lock()
        self.names = Names()
        self._names_at: float | None = None
        self._names_lock = asyncio.Lock()

    async def close(self) -> None:
        try:
            if self.user_token:  # a user token outlives the run unless it is invalidated
                with contextlib.suppress(HttpError):
                    await self.http.request(
                        "POST",
                        "/api/v1/auth/invalidate-token",
                        retry=False,
                        auth=HeaderToken(self.user_token, scheme="Bearer"),
                    )
                self.user_token = None
        finally:
            await self.http.aclose()

    # tokens

    async def _fetch_token(self) -> tuple[str, float | None]:
        s = self.source
        if s.setting("client_id"):
            body = await self._token_call(
                "/api/oauth/token",
                "client_id and client_secret",
                data={
                    "grant_type": "client_credentials",
                    "client_id": s.setting("client_id"),
                    "client_secret": s.setting("client_secret"),
                },
            )
            token = body.get("access_token")
            lifetime = _number(body.get("expires_in")) or 300.0
        else:
            body = None
            if self.user_token and time.time() < self.user_expires:
                try:  # renew the token we have: Jamf invalidates the old one
                    body = decode_json(
                        await self.http.request(
                            "POST",
                            "/api/v1/auth/keep-alive",
                            auth=HeaderToken(self.user_token, scheme="Bearer"),
                            idempotent=True,
                        )
                    )
                except HttpError as exc:
                    log.debug("[%s] keep-alive failed (%s); logging in again", self.name, exc)
                    body = None
            if not isinstance(body, dict) or not body.get("token"):
                body = await self._token_call(
                    "/api/v1/auth/token",
                    "username and password",
                    auth=basic(s.setting("username"), s.setting("password")),
                )
            token = body.get("token")
            expires = _parse_time(body.get("expires"))
            lifetime = max(1.0, expires.timestamp() - time.time()) if expires else 1200.0
        if not isinstance(token, str) or not token:
            raise SourceError(f"[{self.name}] Jamf Pro answered the token request without a token")
        if not s.setting("client_id"):
            self.user_token, self.user_expires = token, time.time() + lifetime
        return token, lifetime

    async def _token_call(self, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("auth", None)  # never the client's RefreshingToken: it is waiting for this call
        kwargs.setdefault("idempotent", True)  # a token request: asking again only issues another token
        try:
            response = await self.http.request("POST", path, **kwargs)
        except HttpError as exc:
            if exc.status in (400, 401, 403):
                raise SourceError(
                    f"[{self.name}] Jamf Pro rejected the {what} ({exc.status}"
                    f"{_jamf_error(exc.response)}): check {what}"
                ) from None
            raise
        body = decode_json(response)
        if not isinstance(body, dict):
            raise SourceError(f"[{self.name}] Jamf Pro answered the token request with {type(body).__name__}")
        return body

    # inventory

    async def inventory_path(self) -> str:
        if self.kind is MOBILES:
            return "/api/v2/mobile-devices/detail"
        async with self._path_lock:
            if self._path is None:
                self._path = await self._discover()
        return self._path

    async def _discover(self) -> str:
        pinned = self.source.setting("api_version") or "auto"
        if pinned != "auto":
            return f"/api/{pinned}/computers-inventory"
        for version in COMPUTER_API_VERSIONS:
            path = f"/api/{version}/computers-inventory"
            response = await self.http.request(
                "GET", path, params={"section": "GENERAL", "page": 0, "page-size": 1}, ok_statuses=frozenset({404})
            )
            await response.aclose()
            if response.status_code != 404:
                log.info("[%s] using Jamf Pro API %s", self.name, path)
                return path
        raise SourceError(
            f"[{self.name}] {self.source.base} has no Jamf Pro computers-inventory API (tried "
            f"{', '.join(COMPUTER_API_VERSIONS)}): check url; Jamf Pro 10.39 or newer is needed"
        )

    def _params(self, **extra: Any) -> dict[str, Any]:
        # A unique sort key keeps page paging stable: the defaults (general.name, displayName) are not.
        return {"section": self.sections, "sort": f"{self.kind.id_field}:asc", **extra}

    async def inventory(self) -> AsyncIterator[list[Record | BadRecord]]:
        path = await self.inventory_path()
        async for response in self.http.paginate(jamf_pages(self.source.page_size), path, params=self._params()):
            page = self._records(response)
            if not page:
                break
            yield await self.with_mobile_details(page)

    async def fetch_ids(self, ids: list[str]) -> list[Record | BadRecord]:
        """The devices with these IDs (≤ MAX_IDS_PER_FILTER), via the inventory's RSQL filter."""
        path = await self.inventory_path()
        params = self._params(filter=f"{self.kind.id_field}=in=({','.join(ids)})")
        records: list[Record | BadRecord] = []
        async for response in self.http.paginate(jamf_pages(max(len(ids), 1)), path, params=params):
            page = self._records(response)
            if not page:
                break
            records += page
        return await self.with_mobile_details(records)

    async def with_mobile_details(self, page: list[Record | BadRecord]) -> list[Record | BadRecord]:
        """Fill the fields only ``/api/v2/mobile-devices/{id}/detail`` has, when a mapping uses them."""
        if self.kind is not MOBILES or not self.source.wants_mobile_detail():
            return page
        slots = asyncio.Semaphore(self.source.concurrency)

        async def one(record: Record | BadRecord) -> Record | BadRecord:
            if isinstance(record, BadRecord):
                return record
            async with slots:
                return await self._mobile_detail(record)

        return list(await asyncio.gather(*(one(r) for r in page)))

    async def _mobile_detail(self, record: Record) -> Record | BadRecord:
        ident = _id_of(record)
        try:
            response = await self.http.request(
                "GET", f"/api/v2/mobile-devices/{ident}/detail", ok_statuses=frozenset({404})
            )
        except HttpError as exc:
            if isinstance(exc, HttpAuthError):
                raise
            return BadRecord(f"mobile device {ident}: its detail could not be read: {exc}", {"id": ident})
        if response.status_code == 404:  # deleted since the page was read: the page's data stands
            log.debug("[%s] mobile device %s has no detail any more", self.name, ident)
            return record
        detail = decode_json(response)
        if isinstance(detail, dict):
            add_mobile_detail(record, detail)
        return record

    async def pages_for_ids(self, ids: list[str]) -> AsyncIterator[list[Record | BadRecord]]:
        """Group members in chunks; up to ``concurrency`` chunks in flight, pages yielded in order."""
        size = min(self.source.page_size, MAX_IDS_PER_FILTER)
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
        width = self.source.concurrency
        for start in range(0, len(chunks), width):
            window = chunks[start : start + width]
            results = await asyncio.gather(*(self.fetch_ids(chunk) for chunk in window), return_exceptions=True)
            for chunk, result in zip(window, results, strict=True):
                if isinstance(result, HttpError) and not isinstance(result, HttpAuthError):
                    # One failed request costs its devices, not the run (the reference stopped here).
                    log.warning("[%s] %d %s(s) skipped: %s", self.name, len(chunk), self.kind.label, result)
                    yield [BadRecord(f"{self.kind.label} {i}: {result}", {"id": i}) for i in chunk]
                elif isinstance(result, BaseException):
                    raise result
                elif result:
                    yield result

    def _records(self, response: httpx.Response) -> list[Record | BadRecord]:
        body = decode_json(response)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise SourceError(
                f"[{self.name}] {safe_url(response.request.url)} answered with "
                f'{type(body).__name__}, not an inventory page ({{"totalCount", "results"}})'
            )
        out: list[Record | BadRecord] = []
        for raw in results:
            if not isinstance(raw, dict):
                out.append(BadRecord(f"a {self.kind.label} entry is {type(raw).__name__}, not an object", raw))
                continue
            try:
                out.append(self.kind.translate(raw, self.names))
            except (TypeError, ValueError, AttributeError) as exc:
                out.append(
                    BadRecord(
                        f"{self.kind.label} {raw.get('id', raw.get('mobileDeviceId'))}: cannot read the record ({exc})",
                        raw,
                    )
                )
        return out

    # building and department names (the Jamf Pro API gives computers only their IDs)

    async def load_names(self) -> None:
        if "USER_AND_LOCATION" not in self.sections:
            return
        async with self._names_lock:
            if self._names_at is not None and time.monotonic() - self._names_at < NAMES_TTL:
                return
            self.names = Names(await self._name_table("buildings"), await self._name_table("departments"))
            self._names_at = time.monotonic()

    async def _name_table(self, what: str) -> dict[str, str | None]:
        table: dict[str, str | None] = {}
        try:
            async for response in self.http.paginate(jamf_pages(200), f"/api/v1/{what}", params={"sort": "id:asc"}):
                body = decode_json(response)
                results = body.get("results") if isinstance(body, dict) else None
                if not results:
                    break
                for item in results:
                    if isinstance(item, dict) and item.get("id") is not None:
                        table[str(item["id"])] = item.get("name")
        except HttpError as exc:
            log.warning(
                "[%s] cannot read the Jamf Pro %s (%s); location.%s stays empty (grant 'Read %s')",
                self.name,
                what,
                exc,
                what[:-1],
                what.capitalize(),
            )
        return table

    # groups (Classic API: one list call, one group call; members of smart and static groups alike)

    async def group_member_ids(self, group: str) -> list[str]:
        kind = self.kind
        listing = decode_json(await self.http.request("GET", f"/JSSResource/{kind.group_path}"))
        groups = [g for g in _as_list(_dig(listing, kind.group_list_key)) if isinstance(g, dict)]
        found = [g for g in groups if g.get("name") == group] or [
            g for g in groups if str(g.get("name", "")).casefold() == group.casefold()
        ]
        if not found:
            raise SourceError(f"[{self.name}] Jamf Pro has no {kind.label} group named {group!r}: check group_name")
        if len(found) > 1:
            listed = ", ".join(str(g.get("id")) for g in found)
            raise SourceError(
                f"[{self.name}] {len(found)} {kind.label} groups are named {group!r} (ids {listed}); "
                "make group_name unique"
            )
        detail = decode_json(await self.http.request("GET", f"/JSSResource/{kind.group_path}/id/{found[0].get('id')}"))
        members = _as_list(_dig(detail, kind.group_key, kind.members_key))
        ids: list[str] = []
        for member in members:
            ident = member.get("id") if isinstance(member, dict) else None
            if ident is not None and str(ident).isdigit() and str(ident) not in ids:
                ids.append(str(ident))
        return ids


def jamf_pages(size: int) -> PageNumber:
    """``page`` (0-based) + ``page-size``; stop on an empty page or once ``totalCount`` records arrived.

    Counting what arrived (not assuming full pages) keeps it right when the server serves fewer
    devices per page than asked for."""
    return PageNumber(
        size, items=at("results"), first=0, total=at("totalCount"), page_param="page", size_param="page-size"
    )


def _jamf_error(response: httpx.Response | None) -> str:
    """`` INVALID_TOKEN`` / `` invalid_client`` from a Jamf error body, or nothing."""
    body = error_body(response)
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict) and errors[0].get("code"):
        return f" {errors[0]['code']}"
    return f" {body['error']}" if isinstance(body.get("error"), str) else ""


# -- the translation layer: Jamf Pro API JSON → the Classic record shape -----------------------------


@dataclass
class Names:
    """Building and department names by ID (Classic records carried names)."""

    buildings: dict[str, str | None] = field(default_factory=dict)
    departments: dict[str, str | None] = field(default_factory=dict)

    def building(self, ident: Any) -> Any:
        return None if ident in (None, "", "-1") else self.buildings.get(str(ident))

    def department(self, ident: Any) -> Any:
        return None if ident in (None, "", "-1") else self.departments.get(str(ident))


_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake(name: str) -> str:
    """``lastIpAddress`` → ``last_ip_address``: the Classic spelling of most Jamf Pro API fields."""
    return _CAMEL.sub(r"_\1", name).lower()


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _with_snake(section: dict[str, Any]) -> dict[str, Any]:
    """A copy of a section with a snake_case twin added for every plain (non-container) value."""
    out = dict(section)
    for key, value in section.items():
        if not isinstance(value, dict | list):
            out.setdefault(snake(key), value)
    return out


def _int(value: Any) -> Any:
    """Classic IDs are numbers; the Jamf Pro API sends them as strings."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _either(section: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` with a value: computers and mobile devices spell some fields differently."""
    return next((section[k] for k in keys if section.get(k) is not None), None)


def classic_location(ul: dict[str, Any], names: Any) -> dict[str, Any]:
    """The Classic API's ``location`` of a computer or mobile device from the Jamf Pro API's ``userAndLocation``."""
    location = _with_snake(ul)
    phone = _either(ul, "phoneNumber", "phone")
    location.update(
        {
            "username": ul.get("username"),
            "real_name": _either(ul, "realname", "realName"),
            "email_address": _either(ul, "email", "emailAddress"),
            "position": ul.get("position"),
            "phone": phone,
            "phone_number": phone,
            "room": ul.get("room"),
            "building": ul.get("building") or names.building(ul.get("buildingId")),
            "department": ul.get("department") or names.department(ul.get("departmentId")),
        }
    )
    return location


def classic_purchasing(pu: dict[str, Any]) -> dict[str, Any]:
    """The Classic API's ``purchasing`` (with the ``*_epoch``/``*_utc`` dates) from the Jamf Pro API's."""
    purchasing = _with_snake(pu)
    purchasing.update(
        {
            "is_purchased": pu.get("purchased"),
            "is_leased": pu.get("leased"),
            "po_number": pu.get("poNumber"),
            "vendor": pu.get("vendor"),
            "applecare_id": pu.get("appleCareId"),
            "purchase_price": pu.get("purchasePrice"),
            "purchasing_account": pu.get("purchasingAccount"),
            "purchasing_contact": pu.get("purchasingContact"),
            "life_expectancy": pu.get("lifeExpectancy"),
        }
    )
    add_dates(purchasing, "po_date", pu.get("poDate"))
    add_dates(purchasing, "warranty_expires", _either(pu, "warrantyDate", "warrantyExpiresDate"))
    add_dates(purchasing, "lease_expires", _either(pu, "leaseDate", "leaseExpiresDate"))
    return purchasing


def add_dates(target: dict[str, Any], name: str, value: Any) -> None:
    """``name`` (``YYYY-MM-DD HH:MM:SS`` in UTC, or ``YYYY-MM-DD`` for a date), ``name_epoch`` (ms)
    and ``name_utc`` (``2026-09-14T08:02:11.000+0000``) from an ISO-8601 value; null when absent."""
    dt = _parse_time(value)
    if dt is None:
        target[name] = value if value not in ("",) else None
        target[f"{name}_epoch"] = None
        target[f"{name}_utc"] = None
        return
    date_only = isinstance(value, str) and len(value.strip()) == 10
    target[name] = dt.strftime("%Y-%m-%d") if date_only else dt.strftime("%Y-%m-%d %H:%M:%S")
    target[f"{name}_epoch"] = int(dt.timestamp() * 1000)
    target[f"{name}_utc"] = dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+0000"


def extension_attributes(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Every extension attribute of the record (top level and per section), Classic-style:
    ``{id, name, type, multi_value, value}`` with several values joined by ``", "``."""
    found: list[dict[str, Any]] = []
    seen: set[tuple[Any, Any]] = set()
    sources = [raw.get("extensionAttributes")] + [
        section.get("extensionAttributes") for section in raw.values() if isinstance(section, dict)
    ]
    for entries in sources:
        for ea in entries if isinstance(entries, list) else []:
            if not isinstance(ea, dict):
                continue
            ident = _int(ea.get("definitionId", ea.get("id")))
            if (ident, ea.get("name")) in seen:
                continue
            seen.add((ident, ea.get("name")))
            values = ea.get("values", ea.get("value"))
            if isinstance(values, list):
                value = ", ".join("" if v is None else str(v) for v in values)
            else:
                value = "" if values is None else values
            found.append(
                {
                    "id": ident,
                    "name": ea.get("name"),
                    "type": ea.get("dataType", ea.get("type")),
                    "multi_value": ea.get("multiValue", isinstance(values, list) and len(values) > 1),
                    "value": value,
                }
            )
    return found


# Seed field names with no Jamf Pro API counterpart (NetBoot, Apple's Software Update Server and
# Windows service packs are gone; OS AppleCare/maintenance were never in the API): null, not missing.
NO_SOURCE = {
    "general": ("netboot_server", "sus"),
    "hardware": ("service_pack",),
    "purchasing": ("os_applecare_id", "os_maintence_expires"),
}


def add_mobile_detail(record: Record, detail: dict[str, Any]) -> None:
    """The Classic dates only the per-device detail (MobileDeviceDetailsGetV2) carries."""
    general = record.setdefault("general", {})
    add_dates(general, "initial_entry_date", detail.get("initialEntryTimestamp"))
    kind: dict[str, Any] = next(
        (detail[k] for k in ("ios", "visionos", "watchos") if isinstance(detail.get(k), dict)), {}
    )
    if kind.get("lastBackupTimestamp") is not None:
        add_dates(general, "last_backup_time", kind.get("lastBackupTimestamp"))


def classic_computer(raw: dict[str, Any], names: Names) -> Record:
    """A ``computers-inventory`` result with the Classic ``/JSSResource/computers`` keys added."""
    g = _section(raw, "general")
    hw = _section(raw, "hardware")
    os_ = _section(raw, "operatingSystem")
    ul = _section(raw, "userAndLocation")
    pu = _section(raw, "purchasing")
    remote = found if isinstance(found := g.get("remoteManagement"), dict) else {}
    mdm = g.get("mdmCapability", g.get("mdmCapable"))
    site = found if isinstance(found := g.get("site"), dict) else {}

    general = _with_snake(g)
    general.update(
        {
            "id": _int(raw.get("id")),
            "name": g.get("name"),
            "udid": raw.get("udid"),
            "serial_number": hw.get("serialNumber"),
            "asset_tag": g.get("assetTag"),
            "barcode_1": g.get("barcode1"),
            "barcode_2": g.get("barcode2"),
            "mac_address": hw.get("macAddress"),
            "alt_mac_address": hw.get("altMacAddress"),
            "ip_address": g.get("lastIpAddress"),
            "last_reported_ip": g.get("lastReportedIp"),
            "jamf_version": g.get("jamfBinaryVersion"),
            "platform": g.get("platform"),
            "mdm_capable": mdm.get("capable") if isinstance(mdm, dict) else mdm,
            "supervised": g.get("supervised"),
            "distribution_point": g.get("distributionPoint"),
            "itunes_store_account_is_active": g.get("itunesStoreAccountActive"),
            "remote_management": {
                "managed": remote.get("managed"),
                "management_username": remote.get("managementUsername"),
            },
            "management_status": {
                "enrolled_via_dep": g.get("enrolledViaAutomatedDeviceEnrollment"),
                "user_approved_mdm": g.get("userApprovedMdm"),
            },
            "site": {"id": _int(site.get("id")), "name": site.get("name")},
        }
    )
    add_dates(general, "report_date", g.get("reportDate"))
    # computers-inventory v4 renamed lastContactTime to lastCheckIn; the seed's name stays.
    add_dates(general, "last_contact_time", _either(g, "lastCheckIn", "lastContactTime"))
    add_dates(general, "initial_entry_date", g.get("initialEntryDate"))
    add_dates(general, "last_cloud_backup_date", g.get("lastCloudBackupDate"))
    add_dates(general, "last_enrolled_date", g.get("lastEnrolledDate"))
    for name in NO_SOURCE["general"]:
        general.setdefault(name, None)

    hardware = _with_snake(hw)
    hardware.update(
        {
            "make": hw.get("make"),
            "model": hw.get("model"),
            "model_identifier": hw.get("modelIdentifier"),
            "os_name": os_.get("name"),
            "os_version": os_.get("version"),
            "os_build": os_.get("build"),
            "active_directory_status": os_.get("activeDirectoryStatus"),
            "processor_type": hw.get("processorType"),
            "processor_architecture": hw.get("processorArchitecture"),
            "processor_speed": hw.get("processorSpeedMhz"),
            "processor_speed_mhz": hw.get("processorSpeedMhz"),
            "number_processors": hw.get("processorCount"),
            "number_cores": hw.get("coreCount"),
            "bus_speed": hw.get("busSpeedMhz"),
            "bus_speed_mhz": hw.get("busSpeedMhz"),
            "cache_size": hw.get("cacheSizeKilobytes"),
            "cache_size_kb": hw.get("cacheSizeKilobytes"),
            "total_ram": hw.get("totalRamMegabytes"),
            "total_ram_mb": hw.get("totalRamMegabytes"),
            "available_ram_slots": hw.get("openRamSlots"),
            "battery_capacity": hw.get("batteryCapacityPercent"),
            "smc_version": hw.get("smcVersion"),
            "nic_speed": hw.get("nicSpeed"),
            "optical_drive": hw.get("opticalDrive"),
            "boot_rom": hw.get("bootRom"),
            "storage": [
                {
                    "disk": d.get("device"),
                    "model": d.get("model"),
                    "revision": d.get("revision"),
                    "serial_number": d.get("serialNumber"),
                    "size": d.get("sizeMegabytes"),
                    "drive_capacity_mb": d.get("sizeMegabytes"),
                    "connection_type": d.get("type"),
                    "smart_status": d.get("smartStatus"),
                }
                for d in _as_list(_section(raw, "storage").get("disks"))
                if isinstance(d, dict)
            ],
        }
    )

    for name in NO_SOURCE["hardware"]:
        hardware.setdefault(name, None)
    location = classic_location(ul, names)
    purchasing = classic_purchasing(pu)
    for name in NO_SOURCE["purchasing"]:
        purchasing.setdefault(name, None)

    security = _with_snake(_section(raw, "security"))
    security.setdefault("activation_lock", security.get("activationLockEnabled"))

    record = dict(raw)
    record.update(
        {
            "general": general,
            "hardware": hardware,
            "location": location,
            "purchasing": purchasing,
            "security": security,
            "software": {
                "applications": [
                    {
                        "name": a.get("name"),
                        "path": a.get("path"),
                        "version": a.get("version"),
                        "bundle_id": a.get("bundleId"),
                    }
                    for a in _as_list(raw.get("applications"))
                    if isinstance(a, dict)
                ]
            },
            "extension_attributes": extension_attributes(raw),
            "groups_accounts": {
                "computer_group_memberships": [
                    m.get("groupName") for m in _as_list(raw.get("groupMemberships")) if isinstance(m, dict)
                ]
            },
        }
    )
    return record


def classic_mobile(raw: dict[str, Any], names: Names) -> Record:
    """A ``mobile-devices/detail`` result with the Classic ``/JSSResource/mobiledevices`` keys added."""
    g = _section(raw, "general")
    hw = _section(raw, "hardware")
    ul = _section(raw, "userAndLocation")
    pu = _section(raw, "purchasing")
    net = _section(raw, "network")
    sec = _section(raw, "security")
    display = g.get("displayName", g.get("name"))

    general = _with_snake(g)
    general.update(
        {
            "id": _int(raw.get("mobileDeviceId", raw.get("id"))),
            "name": display,
            "device_name": display,
            "display_name": display,
            "serial_number": hw.get("serialNumber"),
            "udid": g.get("udid"),
            "asset_tag": g.get("assetTag"),
            "os_type": raw.get("deviceType"),
            "os_version": g.get("osVersion"),
            "os_build": g.get("osBuild"),
            "ip_address": g.get("ipAddress"),
            "managed": g.get("managed"),
            "supervised": g.get("supervised"),
            "model": hw.get("model"),
            "model_display": hw.get("model"),
            "modelDisplay": hw.get("model"),
            "model_identifier": hw.get("modelIdentifier"),
            "model_number": hw.get("modelNumber"),
            "wifi_mac_address": hw.get("wifiMacAddress"),
            "bluetooth_mac_address": hw.get("bluetoothMacAddress"),
            "modem_firmware": hw.get("modemFirmwareVersion"),
            "capacity": hw.get("capacityMb"),
            "capacity_mb": hw.get("capacityMb"),
            "available": hw.get("availableSpaceMb"),
            "available_mb": hw.get("availableSpaceMb"),
            "percentage_used": hw.get("usedSpacePercentage"),
            "battery_level": hw.get("batteryLevel"),
            "device_id": hw.get("deviceId"),
            "phone_number": net.get("phoneNumber"),
            "airplay_password": g.get("airPlayPassword"),
            "device_ownership_level": g.get("deviceOwnershipType"),
            "itunes_store_account_is_active": g.get("itunesStoreAccountActive"),
            "site": {"id": _int(g.get("siteId")), "name": None},
        }
    )
    add_dates(general, "last_inventory_update", g.get("lastInventoryUpdateDate"))
    add_dates(general, "last_enrollment", g.get("lastEnrolledDate"))
    add_dates(general, "initial_entry_date", g.get("initialEntryDate", g.get("initialEntryTimestamp")))
    add_dates(general, "last_backup_time", g.get("lastBackupDate", g.get("lastBackupTimestamp")))
    add_dates(general, "last_cloud_backup_date", g.get("lastCloudBackupDate"))

    location = classic_location(ul, names)
    purchasing = classic_purchasing(pu)

    network = _with_snake(net)  # the Classic names are exactly the snake_case ones
    security = _with_snake(sec)
    security.setdefault("data_protection", sec.get("dataProtected"))

    record = dict(raw)
    record.update(
        {
            "general": general,
            "location": location,
            "purchasing": purchasing,
            "network": network,
            "security": security,
            # One list, both spellings: Classic application_* keys next to the Jamf Pro API ones.
            "applications": [
                {
                    **a,
                    "application_name": a.get("name"),
                    "application_version": a.get("version"),
                    "application_short_version": a.get("shortVersion"),
                    "identifier": a.get("identifier"),
                    "application_status": a.get("managementStatus"),
                }
                for a in _as_list(raw.get("applications"))
                if isinstance(a, dict)
            ],
            "extension_attributes": extension_attributes(raw),
        }
    )
    return record


def _id_of(record: Record) -> Any:
    general = record.get("general")
    return general.get("id") if isinstance(general, dict) else None


def _as_list(value: Any) -> list[Any]:
    """Classic JSON sends a one-element list as the element itself now and then."""
    if value is None or value == "":
        return []
    return value if isinstance(value, list) else [value]


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


COMPUTERS = Kind(
    label="computer",
    sections=COMPUTER_SECTIONS,
    id_field="id",
    group_path="computergroups",
    group_list_key="computer_groups",
    group_key="computer_group",
    members_key="computers",
    privileges="'Read Computers' (and, for group_name, 'Read Smart Computer Groups' and 'Read Static Computer Groups')",
    translate=classic_computer,
    extra_sections=COMPUTER_EXTRA_SECTIONS,
)
MOBILES = Kind(
    label="mobile device",
    sections=MOBILE_SECTIONS,
    id_field="mobileDeviceId",
    group_path="mobiledevicegroups",
    group_list_key="mobile_device_groups",
    group_key="mobile_device_group",
    members_key="mobile_devices",
    privileges="'Read Mobile Devices' (and, for group_name, 'Read Smart Mobile Device Groups' and 'Read Static "
    "Mobile Device Groups')",
    translate=classic_mobile,
)
