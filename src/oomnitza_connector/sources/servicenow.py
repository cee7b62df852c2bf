"""``[servicenow]``: ServiceNow assets (``alm_asset``) with their computer CI, custom ``alm_hardware``
fields and installed software, through the Table API (``/api/now/table/<table>``).

Auth: HTTP Basic (the seed's ``username``/``password``), or OAuth 2.0 at ``POST /oauth_token.do``
(``client_credentials``, or the ``password`` grant when a username is also set), refreshed by
``RefreshingToken`` ahead of expiry and once on 401.

Paging is ``sysparm_limit``/``sysparm_offset`` ordered by ``sys_id``; the offset grows by the rows
that actually arrived, and ``X-Total-Count`` saves the final empty request (as ServiceNow's own
client, PySNC ``record.py``, pages). The enrichment of a page is done with a few batched queries
(``sys_idIN...``, ``ciIN...``, ``installed_onIN...``) that run concurrently, instead of 4-5 requests
per asset: the join happens in memory, with the reference's merge order. The computer query asks
(``sysparm_fields``) for the 16 fields of the record shape plus every ``hardware.<field>`` /
``hardware_raw.<field>`` the merged mapping names; such a field that the asset row lacks is taken
from the asset's ``alm_hardware`` row, else from its computer CI. 429 is retried honouring
``Retry-After``; an ``X-RateLimit-Reset`` pauses all requests (docs: "Inbound REST API rate limiting").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import httpx

from ..auth import RefreshingToken, basic
from ..errors import ConfigError, SourceError
from ..http import (
    Http,
    HttpAuthError,
    HttpError,
    OffsetLimit,
    RateLimiter,
    at,
    decode_json,
    error_body,
    header_int,
)
from ..settings import Int, Setting, Url
from .base import BadRecord, Page, Record, Source

log = logging.getLogger(__name__)

TABLE = "/api/now/table"
TOKEN_PATH = "/oauth_token.do"
COMPUTER_FIELDS = (
    "manufacturer",
    "model_number",
    "operational_status",
    "hardware_status",
    "ip_address",
    "cpu_name",
    "cpu_speed",
    "cpu_count",
    "os",
    "os_version",
    "disk_space",
    "ram",
    "sys_created_on",
    "mac_address",
    "warranty_expiration",
    "model_id",
)
COMPUTER_DATES = ("sys_created_on", "warranty_expiration")
SOFTWARE_TABLES = ("auto", "cmdb_software_instance", "cmdb_sam_sw_install")
IDS_PER_QUERY = 100  # sys_ids per ...IN query: keeps the URL short
ENRICH_CONCURRENCY = 4
URL_SUFFIXES = ("/api/now/table", "/api/now/v2/table", "/api/now", "/api")


def table_pages(limit: int) -> OffsetLimit:
    """``sysparm_offset`` grows by the rows received; stops on an empty ``result`` or at ``X-Total-Count``.
    A short page does not end it: ServiceNow drops rows the user may not read after applying the limit."""
    return OffsetLimit(
        limit,
        items=at("result"),
        total=header_int("x-total-count"),
        short_page_ends=False,
        offset_param="sysparm_offset",
        limit_param="sysparm_limit",
    )


def _result(body: Any) -> list[Any] | None:
    rows = body.get("result") if isinstance(body, dict) else None
    return rows if isinstance(rows, list) else None


def display(row: dict[str, Any]) -> dict[str, Any]:
    """Every ``{"display_value", "value"}`` field replaced by its display value (the reference's shape)."""
    return {k: (v.get("display_value") if isinstance(v, dict) and "display_value" in v else v) for k, v in row.items()}


def raw(row: dict[str, Any]) -> dict[str, Any]:
    """Every field replaced by its stored value (sys_ids, choice values, UTC dates)."""
    return {k: (v.get("value") if isinstance(v, dict) and "value" in v else v) for k, v in row.items()}


def _value(field: Any) -> str:
    if isinstance(field, dict):
        field = field.get("value")
    return field if isinstance(field, str) else ""


def iso_utc(value: Any) -> str:
    """A Table API stored date/time (UTC, ``YYYY-MM-DD[ HH:MM:SS]``) as ISO-8601 with offset; ``""`` if empty."""
    if not isinstance(value, str) or not value.strip():
        return ""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.isoformat()


def build_record(
    asset: dict[str, Any],
    computer: dict[str, Any] | None,
    hardware: dict[str, Any] | None,
    software: list[dict[str, Any]],
    extras: Iterable[str] = (),
) -> Record:
    """Merge in the reference's order (asset → computer → ``u_*`` of alm_hardware, later wins), then
    add the mapped ``extras`` the asset row lacks, from alm_hardware or else the computer."""
    shown, stored = display(asset), raw(asset)
    for key in ("sys_created_on", "model_id"):
        if key in shown:  # the computer's fields overwrite these; keep the asset's own too
            shown[f"asset_{key}"], stored[f"asset_{key}"] = shown[key], stored[key]
    comp_shown = display(computer) if computer else {}
    comp_stored = raw(computer) if computer else {}
    for key in COMPUTER_FIELDS:
        if key in COMPUTER_DATES:  # from the UTC stored value, not the user-time-zone display value
            shown[key] = stored[key] = iso_utc(comp_stored.get(key))
        else:
            shown[key] = comp_shown.get(key) if comp_shown.get(key) is not None else ""
            stored[key] = comp_stored.get(key) if comp_stored.get(key) is not None else ""
    if hardware:
        for key, field in hardware.items():
            if key.startswith("u_"):
                shown[key] = display({key: field})[key]
                stored[key] = raw({key: field})[key]
    for key in extras:
        if key in asset or key in COMPUTER_FIELDS or key.startswith("u_"):
            continue  # the asset's own field (and the fixed shape above) wins
        found = hardware if hardware and key in hardware else computer if computer and key in computer else None
        if found is not None:
            shown[key] = display({key: found[key]})[key]
            stored[key] = raw({key: found[key]})[key]
    return {"hardware": shown, "hardware_raw": stored, "software": software}


def _chunks(ids: list[str], size: int = IDS_PER_QUERY) -> Iterable[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _error_text(exc: HttpError) -> str:
    """ServiceNow's ``{"error": {"message", "detail"}}`` (or OAuth's ``error_description``) as a suffix."""
    body = error_body(exc)
    err = body.get("error")
    if isinstance(err, dict):
        parts = [str(err.get(k)) for k in ("message", "detail") if err.get(k)]
        return f": {' - '.join(parts)}" if parts else ""
    text = body.get("error_description") or err
    return f": {text}" if isinstance(text, str) and text else ""


def _reset_pause(response: httpx.Response) -> float | None:
    """On 429 without ``Retry-After``, wait until ``X-RateLimit-Reset`` (epoch seconds)."""
    if response.status_code != 429 or response.headers.get("retry-after"):
        return None
    try:
        return float(response.headers.get("x-ratelimit-reset", "")) - time.time()
    except ValueError:
        return None


class ServiceNow(Source):
    module = "servicenow"
    mapping_name = "ServiceNow"
    record_type = "assets"
    summary = "ServiceNow assets (alm_asset + computer CI + software)"
    settings = (
        Setting(
            "url",
            None,
            example="https://xxx.service-now.com",
            kind=Url(),
            help="the instance, e.g. `https://acme.service-now.com`; `/api/now` may be included",
        ),
        Setting("username", "", help="HTTP Basic auth user; with `client_id`, the user of the OAuth password grant"),
        Setting("password", "", secret=True, help="that user's password"),
        Setting(
            "client_id",
            "",
            help=(
                "OAuth 2.0 (recommended; Application Registry): client credentials grant, or password "
                "grant when `username`/`password` are set too; empty = Basic auth"
            ),
        ),
        Setting("client_secret", "", secret=True, help="that OAuth client's secret"),
        Setting("page_size", "100", kind=Int(1, 10000), help="rows per Table API request (`sysparm_limit`)"),
        Setting(
            "software_table",
            "auto",
            choices=SOFTWARE_TABLES,
            help=(
                "`auto` (`cmdb_sam_sw_install` when it exists and has rows, else "
                "`cmdb_software_instance`), or one of the two"
            ),
        ),
    )
    default_mappings = {"APPLICATIONS": {"source": "software"}}

    def validate(self) -> None:
        if self.setting("client_id"):
            if not self.setting("client_secret"):
                raise ConfigError(f"[{self.name}] client_id is set: set client_secret too")
            if bool(self.setting("username")) != bool(self.setting("password")):
                raise ConfigError(f"[{self.name}] the OAuth password grant needs both username and password")
        elif not (self.setting("username") and self.setting("password")):
            raise ConfigError(
                f"[{self.name}] set username and password (Basic auth), or client_id and client_secret (OAuth)"
            )

    @property
    def base(self) -> str:
        base = self.setting("url").rstrip("/")
        for suffix in URL_SUFFIXES:
            if base.endswith(suffix):
                return base.removesuffix(suffix)
        return base

    @property
    def page_size(self) -> int:
        return int(self.setting("page_size"))

    def mapped_fields(self) -> list[str]:
        """The field names the merged mapping reads under ``hardware``/``hardware_raw`` that the fixed
        record shape does not hold: asked of the computer CI too (``sysparm_fields``)."""
        names: set[str] = set()
        for path in self.mapped_sources():
            root, _, rest = path.partition(".")
            name = rest.split(".", 1)[0]
            if root in ("hardware", "hardware_raw") and name and name not in COMPUTER_FIELDS:
                names.add(name)
        return sorted(names - {"sys_id", "asset_sys_created_on", "asset_model_id"})

    def _client(self) -> Http:
        oauth = bool(self.setting("client_id"))
        return self.http(
            base_url=self.base,
            headers={"Accept": "application/json"},
            auth=None if oauth else basic(self.setting("username"), self.setting("password")),
            limiter=RateLimiter(pause_from=_reset_pause),
            max_connections=ENRICH_CONCURRENCY * 2,
        )

    def _oauth(self, http: Http) -> None:
        grant = "password" if self.setting("username") else "client_credentials"
        form = {
            "grant_type": grant,
            "client_id": self.setting("client_id"),
            "client_secret": self.setting("client_secret"),
        }
        if grant == "password":
            form |= {"username": self.setting("username"), "password": self.setting("password")}

        async def fetch() -> tuple[str, float | None]:
            try:
                response = await http.request("POST", TOKEN_PATH, data=form, auth=None, idempotent=True)
            except HttpError as exc:
                raise SourceError(
                    f"[{self.name}] ServiceNow refused the OAuth {grant} grant "
                    f"({exc.status}{_error_text(exc)}): check client_id and client_secret"
                    + (", username and password" if grant == "password" else "")
                ) from None
            body = decode_json(response)
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise SourceError(f"[{self.name}] ServiceNow's OAuth answer has no access_token")
            expires = body.get("expires_in")
            return token, float(expires) if isinstance(expires, int | float) else 1800.0

        http.client.auth = RefreshingToken(fetch)

    async def pages(self) -> AsyncIterator[Page]:
        async with self._client() as http:
            if self.setting("client_id"):
                self._oauth(http)
            self._software_table = self.setting("software_table")
            self._slots = asyncio.Semaphore(ENRICH_CONCURRENCY)
            self._extras = self.mapped_fields()
            params = {
                "sysparm_display_value": "all",
                "sysparm_query": "ORDERBYsys_id",
                "sysparm_exclude_reference_link": "true",
            }
            try:
                async for response in http.paginate(table_pages(self.page_size), f"{TABLE}/alm_asset", params=params):
                    assets = _result(decode_json(response))
                    if assets is None:
                        raise SourceError(f"[{self.name}] ServiceNow's alm_asset answer has no 'result' list")
                    if assets:
                        yield await self._enrich(http, assets)
            except HttpAuthError as exc:
                if exc.status == 403:
                    raise SourceError(
                        f"[{self.name}] ServiceNow denied access ({exc.status}{_error_text(exc)}): "
                        "give the user read access (ACLs) to alm_asset, cmdb_ci_computer, "
                        "alm_hardware and the software table"
                    ) from None
                what = "client_id and client_secret" if self.setting("client_id") else "username and password"
                raise SourceError(
                    f"[{self.name}] ServiceNow rejected the credentials ({exc.status}{_error_text(exc)}): check {what}"
                ) from None
            except HttpError as exc:
                raise SourceError(f"[{self.name}] {exc}{_error_text(exc)}") from None

    async def _enrich(self, http: Http, assets: list[Any]) -> list[Record | BadRecord]:
        ci_of: dict[int, str] = {}
        hardware_cis: set[str] = set()
        for i, asset in enumerate(assets):
            if not isinstance(asset, dict):
                continue
            ci = _value(asset.get("ci"))
            if ci:
                ci_of[i] = ci
                if _value(asset.get("sys_class_name")) == "alm_hardware":
                    hardware_cis.add(ci)
        cis = sorted(set(ci_of.values()))
        computers, hardware, software = await asyncio.gather(
            self._computers(http, cis), self._hardware(http, sorted(hardware_cis)), self._software(http, cis)
        )
        page: list[Record | BadRecord] = []
        for i, asset in enumerate(assets):
            if not isinstance(asset, dict):
                page.append(BadRecord("alm_asset row is not an object", asset))
                continue
            ci = ci_of.get(i, "")
            page.append(
                build_record(
                    asset,
                    computers.get(ci),
                    hardware.get(ci) if ci in hardware_cis else None,
                    software.get(ci, []),
                    self._extras,
                )
            )
        return page

    async def _rows(self, http: Http, table: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """All rows of one (paged) query, within the page's concurrency bound."""
        rows: list[dict[str, Any]] = []
        async with self._slots:
            async for response in http.paginate(table_pages(self.page_size), f"{TABLE}/{table}", params=params):
                result = _result(decode_json(response))
                if result is None:
                    raise SourceError(f"[{self.name}] ServiceNow's {table} answer has no 'result' list")
                rows += [r for r in result if isinstance(r, dict)]
        return rows

    async def _batched(
        self, http: Http, table: str, field: str, ids: list[str], params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        chunks = await asyncio.gather(
            *(
                self._rows(http, table, {**params, "sysparm_query": f"{field}IN{','.join(chunk)}^ORDERBYsys_id"})
                for chunk in _chunks(ids)
            )
        )
        return [row for chunk in chunks for row in chunk]

    async def _computers(self, http: Http, cis: list[str]) -> dict[str, dict[str, Any]]:
        if not cis:
            return {}
        rows = await self._batched(
            http,
            "cmdb_ci_computer",
            "sys_id",
            cis,
            {
                "sysparm_display_value": "all",
                "sysparm_exclude_reference_link": "true",
                "sysparm_fields": ",".join(("sys_id", *COMPUTER_FIELDS, *self._extras)),
            },
        )
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            found.setdefault(_value(row.pop("sys_id", None)), row)
        return found

    async def _hardware(self, http: Http, cis: list[str]) -> dict[str, dict[str, Any]]:
        if not cis:
            return {}
        rows = await self._batched(
            http, "alm_hardware", "ci", cis, {"sysparm_display_value": "all", "sysparm_exclude_reference_link": "true"}
        )
        found: dict[str, dict[str, Any]] = {}
        for row in rows:  # several alm_hardware rows on one CI: the first (by sys_id) wins
            found.setdefault(_value(row.get("ci")), row)
        return found

    async def _software(self, http: Http, cis: list[str]) -> dict[str, list[dict[str, Any]]]:
        if not cis:
            return {}
        table = await self._pick_software_table(http)
        if table == "cmdb_sam_sw_install":
            fields = "installed_on,display_name,version,publisher"
        else:
            fields = "installed_on,software.name,software.version"
        rows = await self._batched(
            http, table, "installed_on", cis, {"sysparm_fields": fields, "sysparm_exclude_reference_link": "true"}
        )
        found: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            entry: dict[str, Any]
            if table == "cmdb_sam_sw_install":
                entry = {
                    "name": _value(row.get("display_name")),
                    "version": _value(row.get("version")),
                    "publisher": _value(row.get("publisher")),
                    "path": None,
                }
            else:
                entry = {
                    "name": _value(row.get("software.name")),
                    "version": _value(row.get("software.version")),
                    "path": None,
                }
            if entry["name"].strip():
                found.setdefault(_value(row.get("installed_on")), []).append(entry)
        return found

    async def _pick_software_table(self, http: Http) -> str:
        if self._software_table != "auto":
            return self._software_table
        self._software_table = "cmdb_software_instance"
        async with self._slots:
            response = await http.request(
                "GET",
                f"{TABLE}/cmdb_sam_sw_install",
                params={"sysparm_limit": 1, "sysparm_fields": "sys_id"},
                ok_statuses=frozenset({400, 403, 404}),
            )
        if response.status_code == 200 and _result(decode_json(response)):
            self._software_table = "cmdb_sam_sw_install"
        log.info("[%s] reading installed software from %s", self.name, self._software_table)
        return self._software_table
