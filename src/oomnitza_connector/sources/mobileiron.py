"""``[mobileiron]``: Ivanti (MobileIron) devices, from one of two different back ends.

``api_version = 1``: MobileIron Cloud, today Ivanti Neurons for MDM. The tenant's device partitions
(``/api/v1/tenant/partition/device``, paged by 50 like Ivanti's other database-backed lists) are
matched by name against ``partitions``; each partition's devices come from ``/api/v1/device`` newest
check-in first, paged with ``start``/``rows`` (500 at most) until ``totalCount``. With
``include_checkin_devices_only`` only devices that checked in within ``last_checkin_date_threshold``
seconds are kept, and paging stops at the first page with none left (the list is sorted by check-in).
Windows devices get four hardware fields and their serial number from
``/api/v1/device/{id}/hardwareinventory`` (concurrent within a page, bounded).

``api_version = 2``: MobileIron Core, today Ivanti EPMM. For every device space the API user administers
(``/api/v2/device_spaces/mine``) the searchable fields are read from ``/api/v2/device_spaces/criteria``
and the devices from ``/api/v2/devices`` (``offset``/``limit``, ``hasMore``). ``fields`` (1-512 names,
all searchable) is every searchable field by default, or with ``fields = mapped``/an explicit list the
ones named there plus every searchable field the merged mapping reads (INI, defaults and the
``MobileIron`` mapping in Oomnitza); mapped fields go first when the 512 cap cuts. Records are flat dicts
whose keys contain dots (``common.serial_number``); mappings address them verbatim (the path resolver
falls back to the literal key).

Auth: HTTP Basic, or the managed mode's ``authorization_settings`` ``Authorization`` value verbatim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from ..auth import HeaderToken, basic
from ..errors import ConfigError, SourceError
from ..http import Http, HttpAuthError, HttpError, PageRequest, Paginator, decode_json, error_body
from ..settings import BOOL, Int, Setting, Url
from .base import BadRecord, Record, Source

log = logging.getLogger(__name__)

V1_MAX_ROWS = 500  # Ivanti's hard limit: more is a 400
V1_PARTITION_ROWS = 50
V2_PAGE = 50
V2_MAX_FIELDS = 512
V2_ID_FIELD = "common.uuid"
HARDWARE_KEYS = ("primaryHDDSize", "primaryProcessorName", "primaryProcessorCores", "primaryMemoryCapacity")
SORT = {"sortFields[0].name": "lastCheckin", "sortFields[0].order": "DESC"}


def parse_partitions(text: str) -> list[str] | None:
    """``All`` → None (every partition); a JSON list (``["A", "B"]``), a JSON string or a comma list → names."""
    text = text.strip()
    if text.lower() == "all":
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = [part.strip().strip("'\"") for part in text.strip("[]").split(",")]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("not a list of names")
    names = [str(v).strip() for v in value if str(v).strip()]
    if not names:
        raise ValueError("no partition names")
    return names


class StartRows(Paginator):
    """v1: ``start`` advances by the devices received until ``result.totalCount`` (read on every page)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def first(self, request: PageRequest) -> PageRequest:
        return PageRequest(request.url, {**request.params, "rows": self.rows, "start": 0})

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        result = _v1_result(decode_json(response))
        devices = result.get("searchResults") if result else None
        if not isinstance(devices, list) or not devices:
            return None
        start = int(request.params["start"]) + len(devices)
        total = result.get("totalCount") if result else None
        if isinstance(total, int) and start >= total:
            return None
        return PageRequest(request.url, {**request.params, "start": start})


class OffsetHasMore(Paginator):
    """v2: ``offset`` advances by the devices received while ``hasMore`` is true."""

    def first(self, request: PageRequest) -> PageRequest:
        return PageRequest(request.url, {**request.params, "limit": V2_PAGE, "offset": 0})

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        body = decode_json(response)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list) or not results or body.get("hasMore") is not True:
            return None
        return PageRequest(request.url, {**request.params, "offset": int(request.params["offset"]) + len(results)})


def _v1_result(body: Any) -> dict[str, Any] | None:
    result = body.get("result") if isinstance(body, dict) else None
    return result if isinstance(result, dict) else None


class MobileIron(Source):
    module = "mobileiron"
    mapping_name = "MobileIron"
    record_type = "assets"
    summary = "Ivanti Neurons for MDM (MobileIron Cloud) or Ivanti EPMM (MobileIron Core) devices"
    settings = (
        Setting(
            "url",
            "https://na1.mobileiron.com",
            kind=Url(),
            help="the tenant (Cloud) or Core server; `/api/v1` or `/api/v2` may be included",
        ),
        Setting(
            "username",
            "",
            example="username@example.com",
            help="the API user (HTTP Basic), required unless `authorization_settings` is set",
        ),
        Setting("password", "", example="change-me", secret=True, help="that user's password"),
        Setting(
            "partitions",
            "",
            example='["Drivers"]',
            help=(
                '`api_version = 1` (required): device partition names: a JSON list (`["Drivers"]`), a '
                "comma list (`Drivers, Warehouse`), or `All`"
            ),
        ),
        Setting(
            "api_version",
            "1",
            help=(
                "`1` = MobileIron Cloud / Neurons for MDM, `2` = MobileIron Core / EPMM (any other value "
                "is read as `1`, with a warning)"
            ),
        ),
        Setting(
            "include_checkin_devices_only",
            "True",
            kind=BOOL,
            help="v1: keep only devices whose `lastCheckin` is within `last_checkin_date_threshold`",
        ),
        Setting(
            "last_checkin_date_threshold",
            "129600",
            kind=Int(min=0),
            help="v1: that window in seconds (129600 = 36 hours; 604800 = 7 days)",
        ),
        Setting(
            "authorization_settings",
            "",
            secret=True,
            help='managed mode: `{"Authorization": "..."}` sent verbatim instead of `username`/`password`',
        ),
        Setting(
            "page_size",
            str(V1_MAX_ROWS),
            kind=Int(1, V1_MAX_ROWS),
            help="v1: devices per request (Ivanti's maximum is 500)",
        ),
        Setting(
            "fields",
            "",
            help=(
                "v2: empty = every searchable field (as before); `mapped` = only the fields a mapping "
                "reads (plus `common.uuid`); or an explicit comma list, to which every searchable field a"
                ' mapping reads is added ("a mapping" includes the one stored in Oomnitza; names not '
                "searchable in a device space are not sent)"
            ),
        ),
        Setting(
            "max_connections", "4", kind=Int(1, 32), help="concurrent requests at most (the Windows hardware calls)"
        ),
    )

    def validate(self) -> Iterator[str]:
        where = f"[{self.name}]"
        if self.authorization is None and not (self.setting("username") and self.setting("password")):
            yield f"{where} set username and password (an API user)"
        if not self.v2:
            if self.setting("api_version").strip() not in ("", "1"):
                log.warning(
                    "%s api_version %r is read as 1 (MobileIron Cloud); use 1 or 2", where, self.setting("api_version")
                )
            if not self.setting("partitions").strip():
                yield f'{where} partitions is required with api_version 1: e.g. ["Drivers"] or All'
            else:
                try:
                    parse_partitions(self.setting("partitions"))
                except ValueError:
                    yield f'{where} partitions must be a JSON list of names like ["Drivers"], a comma list, or All'

    @property
    def v2(self) -> bool:
        return self.setting("api_version").strip() == "2"

    @property
    def checkin_only(self) -> bool:
        return bool(self.value("include_checkin_devices_only"))

    @property
    def authorization(self) -> str | None:
        text = self.setting("authorization_settings").strip()
        if not text or text == "{}":
            return None
        try:
            value = json.loads(text)
        except ValueError:
            raise ConfigError(
                f'[{self.name}] authorization_settings must be JSON like {{"Authorization": "..."}}'
            ) from None
        auth = value.get("Authorization") if isinstance(value, dict) else None
        return auth if isinstance(auth, str) and auth else None

    @property
    def base(self) -> str:
        return re.sub(r"/api(/v[12])?/?$", "", self.setting("url").rstrip("/"), flags=re.IGNORECASE)

    def _client(self) -> Http:
        authorization = self.authorization
        auth: httpx.Auth = (
            HeaderToken(authorization)
            if authorization is not None
            else basic(self.setting("username"), self.setting("password"))
        )
        return self.http(
            base_url=self.base,
            headers={"Accept": "application/json"},
            auth=auth,
            max_connections=self.value("max_connections"),
        )

    async def pages(self) -> AsyncIterator[list[Record]]:
        async with self._client() as http:
            try:
                pages = self._v2(http) if self.v2 else self._v1(http)
                async for page in pages:
                    yield page
            except HttpAuthError as exc:
                check = "authorization_settings" if self.authorization is not None else "username and password"
                raise SourceError(
                    f"[{self.name}] MobileIron rejected the credentials ({exc.status}"
                    f"{_error_text(exc)}): check {check} and the user's API role"
                ) from None

    # -- v1: MobileIron Cloud / Ivanti Neurons for MDM ---------------------------------------------

    async def _partitions(self, http: Http) -> list[tuple[Any, str]]:
        rows: list[Any] = []
        # Ivanti: calls "against the database" (groups, partitions) may return 50 rows a page.
        async for response in http.paginate(StartRows(V1_PARTITION_ROWS), "/api/v1/tenant/partition/device"):
            page = (_v1_result(decode_json(response)) or {}).get("searchResults")
            if not isinstance(page, list):
                raise SourceError(f"[{self.name}] MobileIron's partition list has no result.searchResults")
            rows += page
        found = [(row.get("id"), str(row.get("name"))) for row in rows if isinstance(row, dict) and "id" in row]
        wanted = parse_partitions(self.setting("partitions"))
        if wanted is None:
            return found
        chosen = [(pid, name) for pid, name in found if name in wanted]
        missing = [name for name in wanted if name not in {n for _, n in found}]
        if not chosen:
            raise SourceError(
                f"[{self.name}] no device partition named {', '.join(wanted)}; the tenant has: "
                f"{', '.join(n for _, n in found) or 'none'}"
            )
        if missing:
            log.warning("[%s] no device partition named %s; skipped", self.name, ", ".join(missing))
        return chosen

    async def _v1(self, http: Http) -> AsyncIterator[list[Record]]:
        checkin_only = self.checkin_only
        window = self.value("last_checkin_date_threshold")
        slots = asyncio.Semaphore(self.value("max_connections"))
        for partition_id, name in await self._partitions(http):
            cutoff = (time.time() - window) * 1000
            params = {"dmPartitionId": partition_id, **SORT}
            paginator = StartRows(self.value("page_size"))
            async for response in http.paginate(paginator, "/api/v1/device", params=params):
                result = _v1_result(decode_json(response))
                devices = result.get("searchResults") if result else None
                if not isinstance(devices, list):
                    raise SourceError(
                        f"[{self.name}] MobileIron's device list of partition {name} has no result.searchResults"
                    )
                if not devices:
                    break
                page: list[Any] = []
                for device in devices:
                    if not isinstance(device, dict):
                        page.append(BadRecord("device entry is not an object", device))
                    elif not checkin_only or _checked_in_since(device.get("lastCheckin"), cutoff):
                        page.append(device)
                kept = [d for d in page if isinstance(d, dict)]
                if (
                    checkin_only
                    and not kept
                    and any(_older(d.get("lastCheckin"), cutoff) for d in devices if isinstance(d, dict))
                ):
                    log.info(
                        "[%s] partition %s: the remaining devices did not check in within %ss", self.name, name, window
                    )
                    break  # sorted by check-in, newest first: the rest are older
                await asyncio.gather(*(self._windows(http, d, slots) for d in kept))
                if page:
                    yield page

    async def _windows(self, http: Http, device: dict[str, Any], slots: asyncio.Semaphore) -> None:
        for key in HARDWARE_KEYS:
            device.setdefault(key, None)
        if not device.get("windowsDeviceType") or device.get("id") is None:
            return
        async with slots:
            try:
                body = decode_json(await http.request("GET", f"/api/v1/device/{device['id']}/hardwareinventory"))
            except HttpError as exc:
                log.warning("[%s] hardware inventory of device %s not read: %s", self.name, device["id"], exc)
                return
        inventory = _v1_result(body)
        if inventory is None:
            return
        device["primaryProcessorName"] = _first(inventory, "processor", "name")
        device["primaryProcessorCores"] = _first(inventory, "processor", "cores")
        device["primaryHDDSize"] = _first(inventory, "hardDrive", "size")
        device["primaryMemoryCapacity"] = _first(inventory, "physicalMemory", "capacity")
        product = inventory.get("computerSystemProduct")
        serial = product.get("identifyingNumber") if isinstance(product, dict) else None
        if serial not in (None, ""):  # the seed overwrote a good serial with null here
            device["serialNumber"] = serial

    # -- v2: MobileIron Core / Ivanti EPMM ---------------------------------------------------------

    async def _v2(self, http: Http) -> AsyncIterator[list[Record]]:
        body = decode_json(await http.request("GET", "/api/v2/device_spaces/mine"))
        spaces = body.get("results") if isinstance(body, dict) else None
        if not isinstance(spaces, list):
            raise SourceError(f"[{self.name}] MobileIron Core's device space list has no 'results'")
        seen: set[str] = set()
        for space in spaces:
            space_id = space.get("id") if isinstance(space, dict) else None
            if space_id is None:
                continue
            fields = await self._fields(http, space_id)
            params = {"adminDeviceSpaceId": space_id, "fields": ",".join(fields), "labelId": -1}
            async for response in http.paginate(OffsetHasMore(), "/api/v2/devices", params=params):
                body = decode_json(response)
                results = body.get("results") if isinstance(body, dict) else None
                if not isinstance(results, list):
                    raise SourceError(f"[{self.name}] MobileIron Core's device list has no 'results'")
                page: list[Any] = []
                for device in results:
                    if not isinstance(device, dict):
                        page.append(BadRecord("device entry is not an object", device))
                        continue
                    key = device.get(V2_ID_FIELD)
                    if isinstance(key, str) and key:
                        if key in seen:
                            continue  # a device visible in two device spaces is sent once
                        seen.add(key)
                    page.append(device)
                if page:
                    yield page

    async def _fields(self, http: Http, space_id: Any) -> list[str]:
        body = decode_json(
            await http.request("GET", "/api/v2/device_spaces/criteria", params={"adminDeviceSpaceId": space_id})
        )
        rows = body.get("results") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise SourceError(f"[{self.name}] MobileIron Core's field list (criteria) has no 'results'")
        available = [str(r["name"]) for r in rows if isinstance(r, dict) and r.get("name")]
        known = set(available)
        choice = self.setting("fields").strip()
        # The merged mapping (INI, defaults and Oomnitza's MobileIron mapping) names the fields it reads.
        mapped = [s for s in self.mapped_sources() if s in known]
        ids = [V2_ID_FIELD] if V2_ID_FIELD in known else []
        if choice.lower() == "mapped":
            fields = [*ids, *mapped]
        elif choice:
            listed = [f.strip() for f in choice.split(",") if f.strip()]
            unknown = [f for f in listed if f not in known]
            if unknown:
                log.warning(
                    "[%s] device space %s has no searchable field %s; not requested",
                    self.name,
                    space_id,
                    ", ".join(unknown),
                )
            fields = [*ids, *(f for f in listed if f in known), *mapped]
        else:
            fields = available
        fields = list(dict.fromkeys(fields))
        if len(fields) > V2_MAX_FIELDS:
            # Ivanti accepts 512 fields at most: the mapped ones (and the id) first, then the rest in order.
            fields = list(dict.fromkeys([*ids, *mapped, *fields]))[:V2_MAX_FIELDS]
            log.warning(
                "[%s] device space %s has %d searchable fields; requesting %d (mapped ones first); "
                "set fields = mapped to request only those",
                self.name,
                space_id,
                len(available),
                V2_MAX_FIELDS,
            )
        if not fields:
            raise SourceError(
                f"[{self.name}] nothing to request from MobileIron Core for device space {space_id}: none of "
                "the fields chosen (fields, mappings) is searchable there"
            )
        return fields


def _checked_in_since(value: Any, cutoff_ms: float) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= cutoff_ms


def _older(value: Any, cutoff_ms: float) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value < cutoff_ms


def _first(inventory: dict[str, Any], collection: str, key: str) -> Any:
    items = inventory.get(collection)
    if isinstance(items, list) and items and isinstance(items[0], dict):
        return items[0].get(key)
    return None


def _error_text(exc: HttpError) -> str:
    body = error_body(exc)
    errors = body.get("errors")
    messages: list[str] = []
    if isinstance(errors, dict):
        for group in ("globalErrors", "fieldErrors"):
            for item in errors.get(group) or []:
                if isinstance(item, dict) and item.get("message"):
                    messages.append(str(item["message"]))
    elif isinstance(body.get("messages"), list):  # Core's v2 error shape
        messages += [str(m.get("message")) for m in body["messages"] if isinstance(m, dict) and m.get("message")]
    return f" {'; '.join(messages)}" if messages else ""
