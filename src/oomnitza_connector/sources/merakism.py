"""``[merakism]``: Cisco Meraki Systems Manager devices of one SM network, Dashboard API v1.

``GET {url}/networks/{network_id}/sm/devices?fields[]=…&perPage=…`` with ``Authorization: Bearer <key>``;
the body is a JSON array; the next page is the ``Link`` header's ``rel=next`` URL, followed verbatim
(it carries the opaque ``startingAfter``). Dashboard API v0 (the seed's ``batchToken`` paging and
``X-Cisco-Meraki-API-Key`` header) is retired.

Meraki allows 10 requests per second per organization, shared with every other integration of that
organization: requests are spaced to ``requests_per_second`` and a 429 waits for its ``Retry-After``.
Dashboard hosts may redirect to another shard; the key is sent again to Meraki hosts only.

``fields[]`` lists the seed's fields plus every documented device field the merged mapping reads
(INI, defaults and the ``MerakiSM`` mapping stored in Oomnitza), so a field mapped only in Oomnitza
is asked for; names Meraki does not document are never sent (``extra_fields`` is sent as given).

Records are the device objects as returned, plus ``diskInfo``: ``diskInfoJson`` (a JSON *string*)
parsed, so ``diskInfo.…`` paths work while ``diskInfoJson`` keeps its old value.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from ..auth import HeaderToken
from ..errors import SourceError
from ..http import (
    Http,
    HttpAuthError,
    HttpError,
    LinkHeader,
    RateLimiter,
    decode_json,
    error_body,
    safe_url,
)
from ..settings import Int, List, Setting, Url
from .base import BadRecord, Page, Record, Source

log = logging.getLogger(__name__)

DEFAULT_URL = "https://api.meraki.com/api/v1"
# Returned for every device whatever fields[] asks (getNetworkSmDevices, dashboard-api-python meraki/api/sm.py).
DEFAULT_FIELDS = frozenset({"id", "name", "tags", "ssid", "wifiMac", "osName", "systemModel", "uuid", "serialNumber"})
# The "additional fields" fields[] accepts, as the official SDK documents them (meraki/api/sm.py).
KNOWN_FIELDS = frozenset(
    {
        "ip", "systemType", "availableDeviceCapacity", "kioskAppName", "biosVersion", "lastConnected",
        "missingAppsCount", "userSuppliedAddress", "location", "lastUser", "ownerEmail", "ownerUsername",
        "osBuild", "publicIp", "phoneNumber", "diskInfoJson", "deviceCapacity", "isManaged", "hadMdm",
        "isSupervised", "meid", "imei", "iccid", "simCarrierNetwork", "cellularDataUsed", "isHotspotEnabled",
        "createdAt", "batteryEstCharge", "quarantined", "avName", "avRunning", "asName", "fwName", "isRooted",
        "loginRequired", "screenLockEnabled", "screenLockDelay", "autoLoginDisabled", "autoTags", "hasMdm",
        "hasDesktopAgent", "diskEncryptionEnabled", "hardwareEncryptionCaps", "passCodeLock",
        "usesHardwareKeystore", "androidSecurityPatchVersion", "cellular", "url",
    }
)  # fmt: skip
# Always requested: the seed's list (its users' Oomnitza mappings rely on it) plus the owner and OS build
# fields; every other known field is requested when a mapping (INI, defaults or Oomnitza's) reads it.
FIELDS = (
    "ip",
    "systemType",
    "availableDeviceCapacity",
    "kioskAppName",
    "biosVersion",
    "lastConnected",
    "userSuppliedAddress",
    "location",
    "lastUser",
    "publicIp",
    "phoneNumber",
    "diskInfoJson",
    "deviceCapacity",
    "isManaged",
    "hadMdm",
    "isSupervised",
    "meid",
    "imei",
    "iccid",
    "simCarrierNetwork",
    "cellularDataUsed",
    "isHotspotEnabled",
    "createdAt",
    "batteryEstCharge",
    "quarantined",
    "avName",
    "avRunning",
    "asName",
    "fwName",
    "isRooted",
    "loginRequired",
    "screenLockEnabled",
    "screenLockDelay",
    "autoLoginDisabled",
    "hasMdm",
    "hasDesktopAgent",
    "diskEncryptionEnabled",
    "hardwareEncryptionCaps",
    "passCodeLock",
    "ownerEmail",
    "ownerUsername",
    "osBuild",
)
MAX_PER_PAGE = 1000
MAX_PER_SECOND = 10  # Meraki's per-organization budget


def _site(host: str) -> str:
    """The registrable part of a host (``n123.meraki.com`` → ``meraki.com``); the host itself for an IP."""
    if re.fullmatch(r"[\d.]+|\[?[0-9a-fA-F:]+\]?", host):
        return host
    return ".".join(host.split(".")[-2:])


def meraki_links(name: str, site: str) -> LinkHeader:
    """``Link: <…>; rel=next``, followed only within the dashboard's site (the API key goes along)."""

    def same_site(link: str) -> None:
        if _site(urlsplit(link).hostname or "") != site:
            raise SourceError(
                f"{name} Meraki's next-page link points to another site ({safe_url(link)}); "
                "not sending the API key there"
            )

    return LinkHeader(check=same_site)


class MerakiSM(Source):
    module = "merakism"
    mapping_name = "MerakiSM"
    record_type = "assets"
    summary = "Cisco Meraki Systems Manager devices"
    settings = (
        Setting(
            "meraki_api_key",
            "",
            example="YOUR Meraki API KEY",
            secret=True,
            help=(
                "a Dashboard API key (My Profile > API access), required; keep it in the secrets backend "
                "(`vault_keys = meraki_api_key`)"
            ),
        ),
        Setting(
            "network_id",
            "",
            example="N_**************",
            help="the Systems Manager network (`N_…`, or `L_…` for a combined network), required",
        ),
        Setting(
            "url",
            DEFAULT_URL,
            kind=Url(),
            help=(
                "the Dashboard API base: `https://api.meraki.cn/api/v1` (China), "
                "`https://api.gov-meraki.com/api/v1` (US government), a proxy; `/api/v1` may be left out"
            ),
        ),
        Setting("page_size", str(MAX_PER_PAGE), kind=Int(3, MAX_PER_PAGE), help="devices per request (`perPage`)"),
        Setting(
            "extra_fields",
            "",
            kind=List(),
            help=(
                "more device fields to request, comma-separated, sent as written (rarely needed: mapped "
                'fields are requested on their own, see "Record shape")'
            ),
        ),
        Setting(
            "requests_per_second",
            str(MAX_PER_SECOND),
            kind=Int(1, MAX_PER_SECOND),
            help="requests per second at most (the organization's budget of 10 is shared)",
        ),
    )

    def validate(self) -> Iterator[str]:
        where = f"[{self.name}]"
        if not self.setting("meraki_api_key").strip():
            yield f"{where} meraki_api_key is required (Dashboard > My Profile > API access)"
        if not self.setting("network_id").strip():
            yield f"{where} network_id is required (the Systems Manager network, N_… or L_…)"

    @property
    def base(self) -> str:
        """The v1 API root, whether ``url`` was given with ``/api/v1`` (or the retired ``/api/v0``) or not."""
        url = (self.setting("url") or DEFAULT_URL).rstrip("/")
        root = re.sub(r"/api(/v\d+)?$", "", url, flags=re.IGNORECASE)
        if re.search(r"/api/v0$", url, flags=re.IGNORECASE):
            log.warning("[%s] Dashboard API v0 is retired; using %s/api/v1", self.name, root)
        return f"{root}/api/v1"

    def _client(self) -> Http:
        key = self.setting("meraki_api_key").strip()
        per_second = self.value("requests_per_second")
        http = self.http(
            base_url=self.base,
            headers={"Accept": "application/json"},
            auth=HeaderToken(key, scheme="Bearer"),
            limiter=RateLimiter(per_second=per_second),
            max_connections=2,
        )
        site = _site(urlsplit(self.base).hostname or "")

        async def keep_key_on_redirect(request: httpx.Request) -> None:
            # httpx drops Authorization when a redirect changes host; dashboards redirect between shards.
            if (
                "authorization" not in request.headers
                and _site(request.url.host) == site
                and request.url.scheme == urlsplit(self.base).scheme
            ):
                request.headers["Authorization"] = f"Bearer {key}"

        http.client.event_hooks["request"].append(keep_key_on_redirect)
        return http

    def requested_fields(self) -> list[str]:
        """fields[]: the base list, the known fields the merged mapping reads, then ``extra_fields``."""
        mapped: list[str] = []
        for source in self.mapped_sources():
            top = source.split(".", 1)[0]
            top = "diskInfoJson" if top == "diskInfo" else top  # diskInfo is parsed from diskInfoJson
            if top in KNOWN_FIELDS:
                mapped.append(top)
        extra = [f.strip() for f in self.setting("extra_fields").split(",") if f.strip()]
        return [f for f in dict.fromkeys([*FIELDS, *mapped, *extra]) if f not in DEFAULT_FIELDS]

    def _params(self) -> list[tuple[str, Any]]:
        params: list[tuple[str, Any]] = [("fields[]", f) for f in self.requested_fields()]
        params.append(("perPage", self.setting("page_size") or str(MAX_PER_PAGE)))
        return params

    async def pages(self) -> AsyncIterator[Page]:
        network = self.setting("network_id").strip()
        path = f"/networks/{quote(network, safe='')}/sm/devices"
        site = _site(urlsplit(self.base).hostname or "")
        first = True
        async with self._client() as http:
            try:
                url = str(httpx.URL(self.base + path).copy_merge_params(self._params()))
                async for response in http.paginate(meraki_links(f"[{self.name}]", site), url):
                    first = False
                    devices = decode_json(response)
                    if not isinstance(devices, list):
                        raise SourceError(
                            f"[{self.name}] Meraki answered with {type(devices).__name__}, not a list "
                            f"of devices{_errors(devices)}"
                        )
                    if not devices:
                        break
                    yield [_record(d) for d in devices]
            except HttpAuthError as exc:
                raise SourceError(
                    f"[{self.name}] Meraki rejected the API key ({exc.status}{_error_text(exc)}): check meraki_api_key"
                ) from None
            except HttpError as exc:
                if first and exc.status == 400:
                    raise SourceError(
                        f"[{self.name}] Meraki refused the device request (400{_error_text(exc)}) for network "
                        f"{network}: check network_id (a Systems Manager network) and extra_fields"
                    ) from None
                if first and exc.status == 404:
                    # Meraki answers 404 for an invalid key as well as for a network the key cannot see.
                    raise SourceError(
                        f"[{self.name}] Meraki answered {exc.status}{_error_text(exc)} for network "
                        f"{network}: check network_id (a Systems Manager network) and that "
                        "meraki_api_key's admin can access it"
                    ) from None
                raise


def _record(device: Any) -> Record | BadRecord:
    if not isinstance(device, dict):
        return BadRecord("device entry is not an object", device)
    raw = device.get("diskInfoJson")
    if isinstance(raw, str) and raw.strip():
        try:
            device["diskInfo"] = json.loads(raw)
        except ValueError:
            device["diskInfo"] = None
    elif isinstance(raw, dict | list):
        device["diskInfo"] = raw
    return device


def _errors(body: Any) -> str:
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        return f": {'; '.join(map(str, errors))}"
    return ""


def _error_text(exc: HttpError) -> str:
    text = _errors(error_body(exc))
    return f" {text[2:]}" if text else ""
