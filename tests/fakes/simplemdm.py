"""Fake SimpleMDM API v1 (JSON:API shapes), following https://api.simplemdm.com (the published reference).

- Auth ("Authentication"): HTTP Basic with the API key as user name and an empty password. The body of
  a refusal is not documented; the fake answers like a Rails app's Basic-auth refusal, ``401`` with
  plain text ``HTTP Basic: Access denied.`` and ``WWW-Authenticate`` (not JSON: the harder case).
- Paging ("Pagination"): ``limit`` 1-100 (default 10), ``starting_after=<id of the last object>``,
  ``{"data": [...], "has_more": bool}``; a page may be smaller than ``limit`` (``max_page``). A limit
  out of range is refused with SimpleMDM's error shape (the exact message is not documented).
- Errors ("Errors"): ``{"errors": [{"title": "object not found"}]}`` with the HTTP status, e.g. ``404``
  for a device deleted since it was listed.
- Limits: no account-wide rate limit is documented; ``429`` is documented for some endpoints
  (Devices › Refresh; Assignment Groups › Sync profiles, with ``X-RateLimit-Reset`` and no
  ``Retry-After``); tests inject ``429`` with and without ``Retry-After``.
- Record shape ("Devices › List all"): ``{"type": "device", "id", "attributes": {...snake_case...},
  "relationships": {"device_group": {"data": {...}}, "custom_attribute_values": {"data": [...]}}}``;
  ``cellular_technology`` is an integer on iPhones, ``null`` on Macs; secret-bearing attributes
  (``filevault_recovery_key``, ``firmware_password``, ``recovery_lock_password``) exist. The list carries
  only non-secret custom attribute values (``include_secret_custom_attributes`` defaults to false);
  ``inline_custom = False`` serves devices without that relationship (accounts or API versions that
  omit it; the harder case).
- ``/devices/{id}/installed_apps`` ("Devices › List installed apps"): paged like the list; items
  ``{"type": "installed_app", "attributes": {"name", "identifier", "version", "short_version", ...}}``.
- ``/devices/{id}/custom_attribute_values`` ("Custom Attributes › Get values for device"): not paged,
  ``{"data": [{"type": "custom_attribute_value", "id": <name>, "attributes": {"value", "secret",
  "source"}}]}``; a secret value comes back as ``""``.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor


def iphone(i: int = 121, group: int | None = 1) -> dict[str, Any]:
    dev: dict[str, Any] = {
        "type": "device",
        "id": i,
        "attributes": {
            "name": "Mike's iPhone",
            "device_name": "Mike's iPhone",
            "serial_number": f"DNFJE9DNG{i:03d}",
            "unique_identifier": "4A08359C-1D3A-5D3E-939E-FFA6A561321D",
            "status": "enrolled",
            "last_seen_at": "2026-09-13T16:00:54.000-07:00",
            "os_version": "18.6",
            "model_name": "iPhone 15",
            "product_name": "iPhone15,4",
            "imei": "35 445506 652132 5",
            "wifi_mac": "f0:db:e2:df:e9:2f",
            "cellular_technology": 3,
            "is_supervised": True,
        },
    }
    if group is not None:
        dev["relationships"] = {"device_group": {"data": {"type": "device_group", "id": group}}}
    return dev


def mac(i: int = 122, group: int | None = 2) -> dict[str, Any]:
    dev: dict[str, Any] = {
        "type": "device",
        "id": i,
        "attributes": {
            "name": f"Design-MBP-{i}",
            "device_name": f"Design-MBP-{i}",
            "serial_number": f"C02ZK1ABM{i:03d}",
            "unique_identifier": f"5E1A9C40-7B1D-5F0E-9A11-3C22FB10A{i:03d}",
            "status": "enrolled",
            "last_seen_at": "2026-09-14T07:55:20.000-07:00",
            "os_version": "15.6",
            "model_name": "MacBook Pro",
            "product_name": "Mac14,9",
            "wifi_mac": "3c:22:fb:10:aa:01",
            "ethernet_macs": ["3c:22:fb:10:aa:02"],
            "cellular_technology": None,
            "filevault_enabled": True,
            "filevault_recovery_key": "ABCD-EFGH-IJKL-MNOP",
            "firmware_password": "fw-pa55",
        },
    }
    if group is not None:
        dev["relationships"] = {"device_group": {"data": {"type": "device_group", "id": group}}}
    return dev


def app(i: int, name: str, short: str) -> dict[str, Any]:
    return {
        "type": "installed_app",
        "id": i,
        "attributes": {
            "name": name,
            "identifier": f"com.example.{i}",
            "version": short.replace(".", ""),
            "short_version": short,
            "managed": False,
        },
    }


SLACK = app(9001, "Slack", "4.45.64")
CHROME = app(9002, "Google Chrome", "140.0.7339.80")
XCODE = app(9003, "Xcode", "26.0")


class FakeSimpleMDM(FakeVendor):
    def __init__(
        self,
        devices: list[dict[str, Any]] | None = None,
        *,
        api_key: str = "SMDMkey0123456789abcdef",
        max_page: int = 100,
    ) -> None:
        self.devices = devices if devices is not None else [iphone(), mac()]
        self.api_key = api_key
        self.max_page = max_page
        self.apps: dict[int, list[dict[str, Any]]] = {122: [SLACK, CHROME, XCODE]}
        self.custom: dict[int, dict[str, Any]] = {122: {"asset_owner": "design-team", "cost center": "CC-42"}}
        self.secret_custom: dict[int, dict[str, Any]] = {122: {"admin_pin": "4711"}}
        self.inline_custom = True
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v1/devices", self.list_devices),
            Route("/api/v1/devices/{device_id:int}/installed_apps", self.installed_apps),
            Route("/api/v1/devices/{device_id:int}/custom_attribute_values", self.custom_values),
        ]

    def _denied(self, request: Request) -> Response | None:
        expected = "Basic " + base64.b64encode(f"{self.api_key}:".encode()).decode()
        if request.headers.get("authorization") != expected:
            return Response(
                "HTTP Basic: Access denied.\n",
                status_code=401,
                media_type="text/html",
                headers={"WWW-Authenticate": 'Basic realm="Application"'},
            )
        return None

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        q = request.query_params
        limit = int(q.get("limit", 10))
        if not 1 <= limit <= 100:
            return JSONResponse({"errors": [{"title": "limit must be between 1 and 100"}]}, status_code=400)
        size = min(limit, self.max_page)
        after = q.get("starting_after")
        start = next((i + 1 for i, it in enumerate(items) if str(it["id"]) == after), 0) if after else 0
        chunk = items[start : start + size]
        return JSONResponse({"data": chunk, "has_more": start + size < len(items)})

    def _device(self, device_id: int) -> dict[str, Any] | None:
        return next((d for d in self.devices if d["id"] == device_id), None)

    async def list_devices(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        return self._page(request, [self._listed(d) for d in self.devices])

    def _listed(self, device: dict[str, Any]) -> dict[str, Any]:
        if not self.inline_custom:
            return device
        values = [
            {"type": "custom_attribute_value", "id": k, "attributes": {"secret": False, "value": v}}
            for k, v in self.custom.get(device["id"], {}).items()
        ]
        rel = {**device.get("relationships", {}), "custom_attribute_values": {"data": values}}
        return {**device, "relationships": rel}

    async def installed_apps(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        device_id = request.path_params["device_id"]
        if self._device(device_id) is None:
            return JSONResponse({"errors": [{"title": "object not found"}]}, status_code=404)
        return self._page(request, self.apps.get(device_id, []))

    async def custom_values(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        device_id = request.path_params["device_id"]
        if self._device(device_id) is None:
            return JSONResponse({"errors": [{"title": "object not found"}]}, status_code=404)
        plain = [
            {"type": "custom_attribute_value", "id": k, "attributes": {"value": v, "secret": False, "source": "device"}}
            for k, v in self.custom.get(device_id, {}).items()
        ]
        secret = [
            {"type": "custom_attribute_value", "id": k, "attributes": {"value": "", "secret": True, "source": "device"}}
            for k in self.secret_custom.get(device_id, {})
        ]
        return JSONResponse({"data": plain + secret})
