"""``[simplemdm]``: SimpleMDM (PDQ) devices, with installed apps and custom attribute values.

``GET {url}/devices?limit=100`` with HTTP Basic (the API key as user name, empty password), cursor-paged
with ``starting_after=<last id>`` while ``has_more`` (https://api.simplemdm.com, Authentication and
Pagination). Devices are kept by type (computer = no ``cellular_technology``) and by legacy device group
(``device_groups``), then enriched concurrently within a page, bounded:
- computers: ``/devices/{id}/installed_apps`` (cursor-paged too) → ``software`` ``[{name, version, path}]``,
  only when the merged mapping (``APPLICATIONS ← software`` by default, the Oomnitza one included)
  reads it;
- ``custom_attributes`` ``{name: value}``: from the device list's own
  ``relationships.custom_attribute_values`` (no extra call); only a device listed without that
  relationship costs ``/devices/{id}/custom_attribute_values``, and only with ``custom_attributes`` on or
  a mapping that reads ``custom_attributes.…``. Values marked secret are never kept.

The record is the device's ``attributes`` (as the seed) plus ``id`` and ``relationships``; secret
attributes (FileVault recovery key, firmware and recovery-lock passwords) are removed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from ..auth import basic
from ..errors import SourceError
from ..http import Cursor, Http, HttpAuthError, HttpError, decode_json, error_body, safe_url
from ..settings import BOOL, Int, List, Setting, Url
from .base import BadRecord, Page, Record, Source

log = logging.getLogger(__name__)

DEFAULT_URL = "https://a.simplemdm.com/api/v1"
PAGE = 100  # SimpleMDM's maximum limit
DEVICE_TYPES = ("computers", "mobiledevices")
SECRET_ATTRIBUTES = frozenset(
    {"filevault_recovery_key", "firmware_password", "recovery_lock_password", "activation_lock_bypass_code"}
)
MOBILE_PRODUCTS = ("iphone", "ipad", "ipod", "appletv", "watch", "audioaccessory", "realitydevice")


def after_last_id(name: str) -> Cursor:
    """``starting_after=<id of the last object>`` while ``has_more``; an empty page ends it too."""

    def extract(response: httpx.Response) -> Any:
        body = decode_json(response)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or body.get("has_more") is not True:
            return None
        last = data[-1].get("id") if data and isinstance(data[-1], dict) else None
        if last is None:
            where = safe_url(response.request.url)
            log.warning("%s %s said has_more with no object to continue after; stopping", name, where)
        return last

    return Cursor(extract, "starting_after")


def is_computer(attributes: dict[str, Any]) -> bool:
    if "cellular_technology" in attributes:
        return attributes["cellular_technology"] is None
    product = str(attributes.get("product_name") or attributes.get("model") or "").lower().replace(" ", "")
    return not product.startswith(MOBILE_PRODUCTS)


def group_id(device: dict[str, Any]) -> str | None:
    rel = device.get("relationships")
    group = rel.get("device_group") if isinstance(rel, dict) else None
    data = group.get("data") if isinstance(group, dict) else None
    gid = data.get("id") if isinstance(data, dict) else None
    return None if gid is None else str(gid)


class SimpleMDM(Source):
    module = "simplemdm"
    mapping_name = "SimpleMDM"
    record_type = "assets"
    summary = "SimpleMDM devices"
    settings = (
        Setting(
            "secret_access_key",
            "",
            example="***",
            secret=True,
            help="the API key (Settings > API), required; keep it in the secrets backend",
        ),
        Setting(
            "device_groups",
            "",
            kind=List(),
            help="only devices of these (legacy) device group IDs, comma-separated (`1,2,3`); empty = all",
        ),
        Setting(
            "device_types",
            "computers,mobiledevices",
            kind=List(),
            help=(
                "`computers`, `mobiledevices` or both (any case); unknown words are ignored, and if none is left, both"
            ),
        ),
        Setting(
            "custom_attributes",
            "0",
            kind=BOOL,
            help=(
                "`true`: always fill `custom_attributes`, even for devices the list gives without their "
                'values (see "Record shape")'
            ),
        ),
        Setting(
            "url", DEFAULT_URL, kind=Url(), help="the API base (a proxy, a test server); `/api/v1` may be left out"
        ),
        Setting("max_connections", "4", kind=Int(1, 16), help="per-device requests in flight at most"),
    )
    default_mappings = {"APPLICATIONS": {"source": "software"}}
    default_converters = {"last_seen_at": "timestamp"}

    def validate(self) -> Iterator[str]:
        where = f"[{self.name}]"
        if not self.setting("secret_access_key").strip():
            yield f"{where} secret_access_key is required (SimpleMDM > Settings > API)"
        bad = [g for g in self._groups_text() if not g.isdigit()]
        if bad:
            yield f"{where} device_groups must be numeric group IDs, comma-separated (not {', '.join(bad)})"

    def _groups_text(self) -> list[str]:
        return [g.strip() for g in self.setting("device_groups").split(",") if g.strip()]

    @property
    def groups(self) -> set[str]:
        return {str(int(g)) for g in self._groups_text()}

    @property
    def types(self) -> set[str]:
        wanted = {t.strip().lower() for t in self.setting("device_types").split(",")} & set(DEVICE_TYPES)
        return wanted or set(DEVICE_TYPES)

    @property
    def base(self) -> str:
        url = (self.setting("url") or DEFAULT_URL).rstrip("/")
        return re.sub(r"/api(/v\d+)?$", "", url, flags=re.IGNORECASE) + "/api/v1"

    def wants_software(self) -> bool:
        return self._maps("software")

    def wants_custom(self) -> bool:
        return self.value("custom_attributes") or self._maps("custom_attributes")

    def _maps(self, key: str) -> bool:
        return any(src == key or src.startswith(f"{key}.") for src in self.mapped_sources())

    async def pages(self) -> AsyncIterator[Page]:
        auth = basic(self.setting("secret_access_key").strip(), "")
        cap = self.value("max_connections")
        groups, types = self.groups, self.types
        software = self.wants_software()
        custom = self.wants_custom()
        async with self.http(
            base_url=self.base, headers={"Accept": "application/json"}, auth=auth, max_connections=cap
        ) as http:
            slots = asyncio.Semaphore(cap)
            try:
                listing = http.paginate(after_last_id(f"[{self.name}]"), "/devices", params={"limit": PAGE})
                async for response in listing:
                    body = decode_json(response)
                    data = body.get("data") if isinstance(body, dict) else None
                    if not isinstance(data, list):
                        raise SourceError(f"[{self.name}] SimpleMDM's device list has no 'data' list")
                    page: list[Any] = []
                    for device in data:
                        attrs = device.get("attributes") if isinstance(device, dict) else None
                        if not isinstance(attrs, dict) or device.get("id") is None:
                            page.append(BadRecord("device entry without id or attributes", device))
                            continue
                        kind = "computers" if is_computer(attrs) else "mobiledevices"
                        if kind not in types or (groups and group_id(device) not in groups):
                            continue
                        page.append(device)
                    records = await asyncio.gather(
                        *(self._enrich(http, slots, d, software, custom) for d in page if isinstance(d, dict))
                    )
                    out = [p for p in page if isinstance(p, BadRecord)] + list(records)
                    if out:
                        yield out
            except HttpAuthError as exc:
                raise SourceError(
                    f"[{self.name}] SimpleMDM rejected the API key ({exc.status}{_error_text(exc)}): "
                    "check secret_access_key"
                ) from None

    async def _enrich(
        self, http: Http, slots: asyncio.Semaphore, device: dict[str, Any], software: bool, custom: bool
    ) -> Record:
        attrs = device["attributes"]
        record: Record = {k: v for k, v in attrs.items() if k not in SECRET_ATTRIBUTES}
        record.setdefault("id", device["id"])
        if "relationships" in device:
            record.setdefault("relationships", device["relationships"])
        device_id = device["id"]
        inline = _inline_custom(device)
        if inline is not None:
            record["custom_attributes"] = inline
        async with slots:
            if software:
                record["software"] = await self._apps(http, device_id) if is_computer(attrs) else []
            if custom and inline is None:
                record["custom_attributes"] = await self._custom(http, device_id)
        return record

    async def _apps(self, http: Http, device_id: Any) -> list[dict[str, Any]]:
        apps: list[dict[str, Any]] = []
        pages = http.paginate(
            after_last_id(f"[{self.name}]"),
            f"/devices/{device_id}/installed_apps",
            params={"limit": PAGE},
            ok_statuses=frozenset({404}),
        )
        async for response in pages:
            if response.status_code == 404:
                return []  # the device was deleted since it was listed
            body = decode_json(response)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise SourceError(f"[{self.name}] SimpleMDM's installed apps of device {device_id} have no 'data'")
            for item in data:
                attrs = item.get("attributes") if isinstance(item, dict) else None
                if isinstance(attrs, dict) and attrs.get("name"):
                    apps.append({"name": attrs.get("name"), "version": attrs.get("short_version"), "path": None})
        return apps

    async def _custom(self, http: Http, device_id: Any) -> dict[str, Any]:
        response = await http.request(
            "GET", f"/devices/{device_id}/custom_attribute_values", ok_statuses=frozenset({404})
        )
        if response.status_code == 404:
            return {}  # the device was deleted since it was listed
        body = decode_json(response)
        return _values(body.get("data") if isinstance(body, dict) else None)


def _inline_custom(device: dict[str, Any]) -> dict[str, Any] | None:
    """The values the device list carries in ``relationships.custom_attribute_values`` (None: not there)."""
    rel = device.get("relationships")
    values = rel.get("custom_attribute_values") if isinstance(rel, dict) else None
    data = values.get("data") if isinstance(values, dict) else None
    return _values(data) if isinstance(data, list) else None


def _values(data: Any) -> dict[str, Any]:
    """``[{"id": name, "attributes": {"value", "secret"}}]`` → ``{name: value}``, secret ones left out."""
    values: dict[str, Any] = {}
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and item.get("id") is not None:
            attrs = found if isinstance(found := item.get("attributes"), dict) else {}
            if attrs.get("secret") is True:
                continue
            values[str(item["id"])] = attrs.get("value")
    return values


def _error_text(exc: HttpError) -> str:
    errors = error_body(exc).get("errors")
    titles = [str(e.get("title")) for e in errors or [] if isinstance(e, dict) and e.get("title")]
    return f" {'; '.join(titles)}" if titles else ""
