"""Fake Cisco Meraki Dashboard API v1, ``GET /api/v1/networks/{id}/sm/devices`` (getNetworkSmDevices).

What it does and where that comes from:

- Auth: ``Authorization: Bearer <key>`` (the legacy ``X-Cisco-Meraki-API-Key`` is still accepted);
  no key → ``401 {"errors": ["Missing API key"]}``, a wrong key → 401 (or 404 with ``bad_key_status``:
  Meraki hides whether a resource exists). https://developer.cisco.com/meraki/api-v1/authorization
  (Troubleshooting: 401 "Missing API key"); the SDK sends ``Authorization: Bearer`` in
  meraki/dashboard-api-python ``meraki/session/base.py`` ``_build_headers``.
- Paging: a bare JSON array; ``perPage`` 3-1000 (default 1000), a page may be smaller than asked
  (``max_page``); the next page is ``Link: <…startingAfter=…>; rel=next``, absent on the last page, and
  ``startingAfter`` "should not be defined by client applications". SDK docstring of
  ``getNetworkSmDevices`` in ``meraki/api/sm.py``; link following in ``meraki/session/sync.py`` ``get_pages``.
- Fields: ``fields[]`` array parameters; ``id, name, tags, ssid, wifiMac, osName, systemModel, uuid,
  serialNumber`` always come back, every other field only when asked for, and only the documented
  additional fields are accepted (``meraki/api/sm.py``). Whether Meraki rejects an undocumented name is
  not documented: the fake does the harder thing and answers ``400 {"errors": [...]}``.
- Limits: 10 requests per second per organization (token bucket, shared with every other integration),
  exceeded → ``429`` with ``Retry-After`` and ``{"errors": ["API rate limit exceeded for organization"]}``.
  https://developer.cisco.com/meraki/api-v1/rate-limit . The SDK also copes with a 429 *without*
  ``Retry-After`` (``NGINX_429_RETRY_WAIT_TIME`` in ``meraki/config.py``, ``_handle_rate_limit`` in
  ``meraki/session/base.py``); tests inject that with ``fail()``.
- Errors: ``{"errors": ["…"]}`` bodies (rate-limit page above; ``_handle_client_error`` in
  ``meraki/session/base.py`` reads ``message["errors"][0]``).
- Redirects: a dashboard host may answer 3xx to another shard (``handle_3xx`` in
  ``meraki/response_handler.py``; the docs' curl examples use ``-L``); ``redirect_to`` does that.
- Record shape: camelCase device objects; ``tags`` is a list; ``lastConnected``/``createdAt`` epoch
  seconds; ``diskInfoJson`` a JSON *string* (SDK docstring; response model
  ``GetNetworkSmDevices200ResponseInner`` in meraki/dashboard-api-go ``client/docs``).
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

NETWORK = "N_24329156"
DEFAULT_FIELDS = ("id", "name", "tags", "ssid", "wifiMac", "osName", "systemModel", "uuid", "serialNumber")
ADDITIONAL_FIELDS = frozenset(
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
DISK_INFO = [{"name": "Macintosh HD", "mountPoint": "/", "size": 494384795648, "freeSpace": 301234567890}]


def macbook() -> dict[str, Any]:
    return {
        "id": "1284392014810",
        "name": "Ana's MacBook Air",
        "tags": ["finance", "recently-added"],
        "ssid": "ACME-CORP",
        "wifiMac": "3c:22:fb:10:aa:01",
        "osName": "macOS 15.6",
        "systemModel": "MacBookAir10,1",
        "uuid": "8E6F2A34-9A11-4D57-B0A7-3C22FB10AA01",
        "serialNumber": "FVFXK2ABCD12",
        "ip": "10.20.30.41",
        "systemType": "mac",
        "lastConnected": 1789372920,
        "ownerEmail": "ana.silva@example.com",
        "diskInfoJson": json.dumps(DISK_INFO),
        "isManaged": True,
        "androidSecurityPatchVersion": None,
        "autoTags": ["macos", "laptop"],
    }


def scanner() -> dict[str, Any]:
    return {
        "id": "1284392014819",
        "name": "Warehouse Scanner 7",
        "tags": [],
        "ssid": None,
        "wifiMac": "f4:f5:e8:11:22:33",
        "osName": "Android 13",
        "systemModel": "Zebra TC52",
        "uuid": "b7c2e9d4a1f03e55",
        "serialNumber": "",
        "ip": "10.40.0.17",
        "systemType": "android",
        "lastConnected": 1789369011,
        "ownerEmail": None,
        "diskInfoJson": "",
    }


def device(i: int) -> dict[str, Any]:
    return {
        "id": str(1284392015000 + i),
        "name": f"Laptop {i}",
        "tags": ["fleet"],
        "ssid": "ACME-CORP",
        "wifiMac": f"3c:22:fb:10:bb:{i:02x}",
        "osName": "Windows 11",
        "systemModel": "Latitude 5440",
        "uuid": f"UUID-{i:04d}",
        "serialNumber": f"MRK{i:05d}",
        "ip": f"10.20.31.{i}",
        "systemType": "windows",
        "lastConnected": 1789370000 + i,
        "ownerEmail": f"user{i}@example.com",
        "diskInfoJson": "not json {",
    }


class FakeMeraki(FakeVendor):
    def __init__(
        self,
        devices: list[dict[str, Any]] | None = None,
        *,
        api_key: str = "0123456789abcdef0123meraki",
        max_page: int = 1000,
        per_second: int = 10,
    ) -> None:
        self.devices = devices if devices is not None else [macbook(), scanner(), device(1)]
        self.api_key = api_key
        self.max_page = max_page
        self.per_second = per_second  # the organization's budget, over a sliding second
        self.recent: deque[float] = deque()
        self.throttled = 0
        self.bad_key_status = 401
        self.redirect_to: str | None = None
        self.queries: list[str] = []  # raw query strings of answered device requests (fields[] repeats)
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [Route("/api/v1/networks/{network}/sm/devices", self.sm_devices)]

    def _over_budget(self) -> bool:
        now = time.monotonic()
        while self.recent and now - self.recent[0] >= 1.0:
            self.recent.popleft()
        if len(self.recent) >= self.per_second:
            return True
        self.recent.append(now)
        return False

    async def sm_devices(self, request: Request) -> Response:
        if self.redirect_to:
            return RedirectResponse(f"{self.redirect_to}{request.url.path}?{request.url.query}", status_code=307)
        header = request.headers.get("authorization", "")
        key = (
            header.removeprefix("Bearer ")
            if header.startswith("Bearer ")
            else request.headers.get("x-cisco-meraki-api-key")
        )
        if not key:
            return JSONResponse({"errors": ["Missing API key"]}, status_code=401)
        if key != self.api_key:
            return JSONResponse({"errors": ["Invalid API key"]}, status_code=self.bad_key_status)
        if self._over_budget():
            self.throttled += 1
            return JSONResponse(
                {"errors": ["API rate limit exceeded for organization"]}, status_code=429, headers={"Retry-After": "1"}
            )
        if request.path_params["network"] != NETWORK:
            return JSONResponse({"errors": ["Not found"]}, status_code=404)
        self.queries.append(request.url.query)
        q = request.query_params
        per_page = int(q.get("perPage", 1000))
        if not 3 <= per_page <= 1000:
            return JSONResponse({"errors": ["'perPage' must be between 3 and 1000"]}, status_code=400)
        unknown = [f for f in q.getlist("fields[]") if f not in ADDITIONAL_FIELDS and f not in DEFAULT_FIELDS]
        if unknown:
            return JSONResponse({"errors": [f"Invalid field(s): {', '.join(unknown)}"]}, status_code=400)
        size = min(per_page, self.max_page)
        wanted = set(DEFAULT_FIELDS) | set(q.getlist("fields[]"))
        after = q.get("startingAfter")
        start = next((i + 1 for i, d in enumerate(self.devices) if d["id"] == after), 0) if after else 0
        chunk = [{k: v for k, v in d.items() if k in wanted} for d in self.devices[start : start + size]]
        base = f"{self.url}{request.url.path}"
        fields = [("fields[]", f) for f in q.getlist("fields[]")]
        links = [f"<{base}?{urlencode([*fields, ('perPage', per_page)])}>; rel=first"]
        if start + size < len(self.devices):
            query = urlencode([*fields, ("perPage", per_page), ("startingAfter", chunk[-1]["id"])])
            links.append(f"<{base}?{query}>; rel=next")
        return JSONResponse(chunk, headers={"Link": ", ".join(links)})
