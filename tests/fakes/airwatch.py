"""Fake Omnissa (formerly VMware) Workspace ONE UEM REST API (AirWatch).

- Auth: HTTP Basic + ``aw-tenant-code`` (VMware blog "AirWatch 101: AirWatch REST APIs", 2017: both
  headers on every call), or ``Authorization: Bearer`` from the OAuth token service. Token service:
  ``POST https://{region}.uemauth.workspaceone.com/connect/token``, form ``grant_type=client_credentials``,
  the client in Basic (or the form), answer ``{"access_token", "expires_in": 3600, "token_type":
  "Bearer"}``; SaaS only (UEM Console Basics, "Datacenter and Token URLs for OAuth 2.0 Support",
  docs.vmware.com …/UEM_ConsoleBasics/GUID-BF20C949-5065-4DCF-889D-1E0151016B5A.html and its
  docs.omnissa.com successor). A bad client: ``400 {"error": "invalid_client"}`` (RFC 6749 §5.2).
- Errors: ``{"errorCode", "message", "activityId"}``: 1005 for a bad user/password (401), 1013
  "Tenant code … does not identify an Organization Group." for a bad tenant code (demisto/content
  Packs/VMwareWorkspaceONEUEM test_data ``invalid_username_password_error_msg.json`` and
  ``invalid_api_key_error_msg.json``). An unknown device's sub-resource answers the IIS HTML 404 page
  "Server Error in '/Api/Mdm' Application" (same pack, ``get_device_404_no_records_found_message.html``).
- Paging: ``GET /api/mdm/devices/search?page=N&pagesize=M``, ``page`` 0-based, the body has ``Total``
  and the client must use it to know how many pages to ask for (Tech Zone blog "Using paginated
  requests with Workspace ONE UEM REST APIs", 2022); a page past the end or an empty tenant answers
  ``204 No Content``. The server may cap ``pagesize`` below what was asked (``max_page``): the cap is
  not documented, so the fake does the harder thing.
- Limits: UEM's API quota and its throttle signal are not documented in material we could check;
  tests inject ``429`` with and without ``Retry-After``.
- Record shape: version 1 of the search (``Accept: application/json;version=1``), PascalCase, ``Id.Value``,
  ``LocationGroupId.Name`` … (same pack, ``devices_search_resp.json``); ``/api/mdm/devices/{id}/network``
  and the DEP list ``/api/mdm/dep/groups/{uuid}/devices`` (a JSON array keyed by
  ``deviceSerialNumber``) follow our fact sheet: their field sets are not confirmed by vendor material.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

DEP_GROUP = "2d9e5a1c-7b0f-4c3e-9d1a-5e6f7a8b9cc1"
NOT_FOUND_PAGE = (
    "<!DOCTYPE html><html><head><title>The resource cannot be found.</title></head><body>"
    "<span><H1>Server Error in '/Api/Mdm' Application.<hr></H1><h2><em>The resource cannot be found.</em></h2>"
    "</span><strong>Description: </strong>HTTP 404.</body></html>"
)


def uem_error(code: int, message: str, status: int) -> JSONResponse:
    return JSONResponse({"errorCode": code, "message": message, "activityId": "8bcc0752-fake"}, status_code=status)


def windows_device() -> dict[str, Any]:
    return {
        "Id": {"Value": 5614},
        "Uuid": "8f0b6c1e-3d2a-4c55-9a0e-1b2c3d4e5f60",
        "Udid": "A1B2C3D4E5F60718293A4B5C6D7E8F90",
        "SerialNumber": "5CG1234XYZ",
        "MacAddress": "A4:B1:C1:22:33:44",
        "Imei": "",
        "AssetNumber": "OOM-7781",
        "DeviceFriendlyName": "jdoe EliteBook 840 Windows Desktop 11",
        "LocationGroupId": {"Id": {"Value": 1142}, "Name": "Acme Corp", "Uuid": DEP_GROUP},
        "LocationGroupName": "Acme Corp",
        "UserId": {"Id": {"Value": 90211}, "Name": "jdoe"},
        "UserName": "jdoe",
        "UserEmailAddress": "jdoe@example.com",
        "Ownership": "C",
        "PlatformId": {"Id": {"Value": 12}, "Name": "WinRT"},
        "Platform": "WinRT",
        "Model": "HP EliteBook 840 G8",
        "OperatingSystem": "10.0.22631",
        "PhoneNumber": "",
        "LastSeen": "2026-09-14T07:55:20.150",
        "EnrollmentStatus": "Enrolled",
        "ComplianceStatus": "Compliant",
        "CompromisedStatus": False,
        "LastEnrolledOn": "2025-01-10T12:44:21.720",
        "IsSupervised": False,
        "OEMInfo": "HP",
    }


def ipad() -> dict[str, Any]:
    return {
        "Id": {"Value": 5620},
        "Uuid": "0c7d2e1f-0000-4000-8000-00000000009a",
        "SerialNumber": "F9FXK2ABCD12",
        "MacAddress": "",
        "Platform": "Apple",
        "Model": "iPad Air (5th generation)",
        "UserName": "asilva",
        "LastSeen": "2026-09-13T17:40:02.000",
        "Ownership": "C",
    }


def device(i: int) -> dict[str, Any]:
    return {
        "Id": {"Value": 6000 + i},
        "Uuid": f"00000000-0000-4000-8000-{i:012d}",
        "SerialNumber": f"SN{i:06d}",
        "MacAddress": f"00:11:22:33:44:{i:02X}",
        "Platform": "AppleOsX",
        "Model": "MacBook Pro",
        "UserName": f"user{i}",
        "LastSeen": "2026-09-12T10:00:00.000",
        "Ownership": "E",
    }


def network(mac: str = "A4:B1:C1:22:33:45") -> dict[str, Any]:
    return {
        "IPAddress": {"WifiIPAddress": "10.20.30.41", "CellularIPAddress": "", "EthernetIPAddress": "10.20.1.15"},
        "PublicIPAddress": "203.0.113.24",
        "WifiInfo": {"WifiMacAddress": mac, "SSID": "ACME-CORP", "SignalStrength": 0},
        "DeviceNetworkInfo": [
            {
                "ConnectionType": "Ethernet",
                "IPAddress": "10.20.1.15",
                "MACAddress": "A4:B1:C1:22:33:44",
                "Name": "Ethernet",
                "Vendor": "Intel",
            }
        ],
        "RoamingStatus": False,
        "DataRoamingEnabled": False,
        "VoiceRoamingEnabled": False,
    }


def dep_entry(serial: str = "F9FXK2ABCD12") -> dict[str, Any]:
    return {
        "deviceSerialNumber": serial,
        "model": "iPad Air",
        "description": "IPAD AIR WI-FI 64GB",
        "color": "SPACE GRAY",
        "assetNumber": "",
        "profileName": "Corporate ADE",
        "profileUuid": "7a1c0000-0000-4000-8000-000000000001",
        "deviceAssignedDate": "2025-02-03T10:00:00Z",
        "deviceAssignedBy": "it@example.com",
        "enrollmentStatus": "Enrolled",
    }


class FakeAirWatch(FakeVendor):
    def __init__(
        self,
        devices: list[dict[str, Any]] | None = None,
        *,
        username: str = "jdoe",
        password: str = "s3cr3t-pa55",
        tenant_code: str = "TeNaNtC0dE123",
        client_id: str = "0a1b2c3d-oauth-client",
        client_secret: str = "oauth-s3cr3t-value",
        max_page: int = 500,
    ) -> None:
        self.devices = devices if devices is not None else [windows_device(), ipad(), device(1)]
        self.username, self.password, self.tenant_code = username, password, tenant_code
        self.client_id, self.client_secret = client_id, client_secret
        self.max_page = max_page  # a real server may cap below what the client asks for
        self.networks: dict[int, dict[str, Any]] = {5614: network()}
        self.dep: dict[str, list[dict[str, Any]]] = {DEP_GROUP: [dep_entry()]}
        self.issued: list[str] = []
        self.send_total = True
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/mdm/devices/search", self.search),
            Route("/api/mdm/devices/{device_id}/network", self.network),
            Route("/api/mdm/dep/groups/{uuid}/devices", self.dep_devices),
            Route("/connect/token", self.token, methods=["POST"]),
        ]

    def _denied(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        tenant = request.headers.get("aw-tenant-code")
        if header.startswith("Bearer "):
            if header.removeprefix("Bearer ") not in self.issued:
                return uem_error(1005, "An error occurred while validating remote service client credentials", 401)
            if tenant is not None and tenant != self.tenant_code:
                return uem_error(1013, f"Tenant code {tenant} does not identify an Organization Group.", 401)
            return None
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if header != expected:
            user = ""
            if header.startswith("Basic "):
                user = base64.b64decode(header[6:]).decode(errors="replace").split(":", 1)[0]
            return uem_error(
                1005,
                f"An error occurred while validating remote service client credentials or user not found : {user}",
                401,
            )
        if tenant != self.tenant_code:
            return uem_error(1013, f"Tenant code {tenant} does not identify an Organization Group.", 403)
        return None

    async def search(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        q = request.query_params
        size = min(int(q.get("pagesize", 500)), self.max_page)
        page = int(q.get("page", 0))
        chunk = self.devices[page * size : (page + 1) * size]
        if not chunk:
            return Response(status_code=204)
        body: dict[str, Any] = {"Devices": chunk, "Page": page, "PageSize": size}
        if self.send_total:
            body["Total"] = len(self.devices)
        return JSONResponse(body)

    async def network(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        device_id = int(request.path_params["device_id"])
        if device_id not in self.networks:
            return HTMLResponse(NOT_FOUND_PAGE, status_code=404)
        return JSONResponse(self.networks[device_id])

    async def dep_devices(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        uuid = request.path_params["uuid"]
        if uuid not in self.dep:
            return uem_error(400, "Organization group not found", 404)
        return JSONResponse(self.dep[uuid])

    async def token(self, request: Request) -> Response:
        form = await request.form()
        header = request.headers.get("authorization", "")
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode(errors="replace").partition(":")
        valid = (client_id, secret) == (self.client_id, self.client_secret)
        if form.get("grant_type") != "client_credentials" or not valid:
            return JSONResponse({"error": "invalid_client"}, status_code=400)
        token = f"uem-at-{len(self.issued)}"
        self.issued.append(token)
        return JSONResponse({"access_token": token, "expires_in": 3600, "token_type": "Bearer", "scope": "api"})
