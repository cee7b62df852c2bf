"""Fake Jamf Pro server: the Jamf Pro API as the connector uses it, plus the Classic group endpoints.

Per behaviour, what it follows:

- Auth: ``POST /api/oauth/token`` (API client, form ``grant_type=client_credentials``) →
  ``access_token`` / ``expires_in``; ``POST /api/v1/auth/token`` (Basic) → ``token`` / ``expires``;
  ``/api/v1/auth/keep-alive`` (new token, old one invalidated) and ``/api/v1/auth/invalidate-token``
  (developer.jamf.com/jamf-pro/docs/client-credentials, …/classic-api-authentication-changes).
  Tokens may be limited to ``token_uses`` requests (then ``401 INVALID_TOKEN``, as an expired one).
- ``GET /api/{version}/computers-inventory`` for the ``versions`` served (others 404), with
  ``section`` (only those sections are filled, the others null), ``page`` (0-based),
  ``page-size`` (capped at ``max_page``: the harder case of a server serving fewer than asked),
  ``sort``, RSQL ``filter=id=in=(…)``; envelope ``{"totalCount", "results"}`` (Jamf-Concepts/jamf-cli
  ``specs/ComputersInventoryV3.yaml``: default sort ``general.name:asc``). Under ``/v4`` the
  check-in time is ``general.lastCheckIn`` (v3 and older: ``general.lastContactTime``): Jamf
  11.30 added v4 and deprecated v3 (developer.jamf.com/jamf-pro/changelog/11300-deprecations), and
  jamf-cli's v4 smoke test asserts ``results.0.general.lastCheckIn``.
- ``GET /api/v2/mobile-devices/detail``: same parameters, RSQL on ``mobileDeviceId``, default sort
  ``displayName:asc`` (Jamf Pro API reference, "Return paginated Mobile Device Inventory
  records"); its ``general`` section has no ``initialEntry…`` field. ``GET
  /api/v2/mobile-devices/{id}/detail`` (MobileDeviceDetailsGetV2) carries ``initialEntryTimestamp``
  at the top level and ``ios.lastBackupTimestamp``.
- Sorting: rows whose sort key is equal come back in an order that differs from one request to the
  next (a database without a tie-breaker), so paging by a non-unique key (``displayName``,
  ``general.name``) skips and repeats devices, as on a real server with many "iPad"s. ``sort=id:asc``
  / ``sort=mobileDeviceId:asc`` is stable.
- ``GET /api/v1/buildings`` and ``/api/v1/departments`` (same envelope).
- ``GET /JSSResource/{computergroups,mobiledevicegroups}`` and ``…/id/{id}`` (Classic JSON): Basic
  auth is refused with the HTML 401 of a modern Jamf Pro (Basic off since 11.5); a lone member comes
  as an object, not a one-element list.
- Errors: ``{"httpStatus", "errors": [{"code", "description", "id", "field"}]}``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

COMPUTER_SECTIONS = {
    "GENERAL": "general",
    "HARDWARE": "hardware",
    "OPERATING_SYSTEM": "operatingSystem",
    "USER_AND_LOCATION": "userAndLocation",
    "PURCHASING": "purchasing",
    "APPLICATIONS": "applications",
    "EXTENSION_ATTRIBUTES": "extensionAttributes",
    "SECURITY": "security",
    "STORAGE": "storage",
    "GROUP_MEMBERSHIPS": "groupMemberships",
    "DISK_ENCRYPTION": "diskEncryption",
}
MOBILE_SECTIONS = {
    "GENERAL": "general",
    "HARDWARE": "hardware",
    "USER_AND_LOCATION": "userAndLocation",
    "PURCHASING": "purchasing",
    "SECURITY": "security",
    "NETWORK": "network",
    "APPLICATIONS": "applications",
    "EXTENSION_ATTRIBUTES": "extensionAttributes",
    "CERTIFICATES": "certificates",
}
UNAUTHORIZED_HTML = "<html><body><p>Unauthorized</p></body></html>"
NOT_FOUND_HTML = "<html><body><p>The server has not found anything matching the request URI</p></body></html>"


def computer(i: int) -> dict[str, Any]:
    """A full ``computers-inventory`` record (every section), after the fact sheet's fixture."""
    return {
        "id": str(i),
        "udid": f"5E1A9C40-7B1D-5F0E-9A11-3C22FB10{i:04X}",
        "general": {
            "name": f"FIN-MBP-{i:04d}",
            "lastIpAddress": f"203.0.113.{i % 250}",
            "lastReportedIp": "10.1.2.3",
            "jamfBinaryVersion": "11.8.0-t1718810000",
            "platform": "Mac",
            "barcode1": f"BC1-{i}",
            "barcode2": "",
            "assetTag": f"OOM-{i:06d}",
            "supervised": True,
            "remoteManagement": {"managed": True, "managementUsername": "jamfmgmt"},
            "mdmCapable": {"capable": True, "capableUsers": ["jdoe"]},
            "reportDate": "2026-09-14T08:02:11.000Z",
            "lastContactTime": "2026-09-14T08:01:59Z",
            "lastCloudBackupDate": None,
            "lastEnrolledDate": "2024-02-01T10:00:00.000Z",
            "initialEntryDate": "2024-02-01",
            "distributionPoint": "",
            "itunesStoreAccountActive": False,
            "enrolledViaAutomatedDeviceEnrollment": True,
            "userApprovedMdm": True,
            "site": {"id": "-1", "name": "None"},
            "extensionAttributes": [
                {
                    "definitionId": "3",
                    "name": "Battery Cycle Count",
                    "enabled": True,
                    "multiValue": False,
                    "values": [str(200 + i)],
                    "dataType": "INTEGER",
                    "options": None,
                    "inputType": "SCRIPT",
                }
            ],
        },
        "hardware": {
            "make": "Apple",
            "model": "MacBook Pro (14-inch, 2023)",
            "modelIdentifier": "Mac14,9",
            "serialNumber": f"C02ZK{i:04d}D6T",
            "processorSpeedMhz": 0,
            "processorCount": 1,
            "coreCount": 10,
            "processorType": "Apple M2 Pro",
            "processorArchitecture": "arm64",
            "busSpeedMhz": 0,
            "cacheSizeKilobytes": 0,
            "macAddress": f"3C:22:FB:10:{i // 256:02X}:{i % 256:02X}",
            "altMacAddress": "",
            "totalRamMegabytes": 16384,
            "openRamSlots": 0,
            "batteryCapacityPercent": 91,
            "smcVersion": "",
            "nicSpeed": "n/a",
            "opticalDrive": "",
            "bootRom": "10151.140.19",
            "appleSilicon": True,
            "extensionAttributes": [],
        },
        "operatingSystem": {
            "name": "macOS",
            "version": "15.6",
            "build": "24G84",
            "activeDirectoryStatus": "Not Bound",
            "fileVault2Status": "ALL_ENCRYPTED",
            "extensionAttributes": [],
        },
        "userAndLocation": {
            "username": f"user{i}",
            "realname": f"User {i}",
            "email": f"user{i}@acme.test",
            "position": "Analyst",
            "phone": "+1 555 0100",
            "departmentId": "2",
            "buildingId": "1",
            "room": "3.14",
            "extensionAttributes": [
                {
                    "definitionId": "9",
                    "name": "Cost Center",
                    "multiValue": True,
                    "values": ["CC-100", "CC-200"],
                    "dataType": "STRING",
                }
            ],
        },
        "purchasing": {
            "leased": False,
            "purchased": True,
            "poNumber": f"PO-{i}",
            "poDate": "2024-01-15",
            "vendor": "Apple",
            "warrantyDate": "2027-01-15",
            "appleCareId": "",
            "leaseDate": None,
            "purchasePrice": "2499",
            "lifeExpectancy": 4,
            "purchasingAccount": "",
            "purchasingContact": "",
            "extensionAttributes": [],
        },
        "applications": [
            {
                "name": "Safari.app",
                "path": "/Applications/Safari.app",
                "version": "18.6",
                "macAppStore": False,
                "sizeMegabytes": 12,
                "bundleId": "com.apple.Safari",
                "updateAvailable": False,
                "externalVersionId": "0",
            },
            {
                "name": "Slack.app",
                "path": "/Applications/Slack.app",
                "version": "4.45.64",
                "macAppStore": True,
                "sizeMegabytes": 300,
                "bundleId": "com.tinyspeck.slackmacgap",
                "updateAvailable": False,
                "externalVersionId": "0",
            },
        ],
        "extensionAttributes": [],
        "security": {
            "sipStatus": "ENABLED",
            "gatekeeperStatus": "APP_STORE_AND_IDENTIFIED_DEVELOPERS",
            "activationLockEnabled": False,
            "firewallEnabled": True,
            "secureBootLevel": "FULL_SECURITY",
        },
        "storage": {
            "bootDriveAvailableSpaceMegabytes": 300000,
            "disks": [
                {
                    "id": "1",
                    "device": "disk0",
                    "model": "APPLE SSD AP0512Z",
                    "revision": "874",
                    "serialNumber": "0ba0",
                    "sizeMegabytes": 500277,
                    "smartStatus": "Verified",
                    "type": "SSD",
                    "partitions": [],
                }
            ],
        },
        "groupMemberships": [{"groupId": "1", "groupName": "All Managed Clients", "smartGroup": True}],
        "diskEncryption": {
            "bootPartitionEncryptionDetails": {
                "partitionName": "Macintosh HD (Boot Partition)",
                "partitionFileVault2State": "ENCRYPTED",
                "partitionFileVault2Percent": 100,
            },
            "individualRecoveryKeyValidityStatus": "VALID",
            "institutionalRecoveryKeyPresent": False,
            "diskEncryptionConfigurationName": "",
            "fileVault2EnabledUserNames": [f"user{i}"],
        },
    }


def mobile(i: int) -> dict[str, Any]:
    """A full ``mobile-devices/detail`` record, after the fact sheet's mobile fixture."""
    return {
        "mobileDeviceId": str(i),
        "deviceType": "iOS",
        "general": {
            "udid": f"00008103-001A2B3C4D5E{i:04X}",
            "displayName": f"Ana's iPad {i}",
            "assetTag": f"IPAD-{i}",
            "siteId": "-1",
            "lastInventoryUpdateDate": "2026-09-13T17:40:02.000Z",
            "osVersion": "18.6",
            "osBuild": "22G86",
            "ipAddress": "203.0.113.77",
            "managed": True,
            "supervised": True,
            "deviceOwnershipType": "Institutional",
            "lastEnrolledDate": "2025-03-01T09:00:00Z",
            "initialEntryTimestamp": f"2025-02-{i % 28 + 1:02d}T08:00:00.000Z",  # per-device detail only
            "lastBackupTimestamp": "2026-09-12T22:00:00Z",  # per-device detail only
            "timeZone": "UTC",
            "extensionAttributes": [{"id": "5", "name": "Cart", "type": "STRING", "value": [f"Cart {i % 2}"]}],
        },
        "hardware": {
            "capacityMb": 65536,
            "availableSpaceMb": 40000,
            "usedSpacePercentage": 39,
            "batteryLevel": 87,
            "serialNumber": f"DMPXK{i:04d}CD",
            "wifiMacAddress": "A4:83:E7:00:00:01",
            "bluetoothMacAddress": "A4:83:E7:00:00:02",
            "modemFirmwareVersion": "",
            "model": "iPad Air (5th generation)",
            "modelIdentifier": "iPad13,16",
            "modelNumber": "MM9E3LL",
            "deviceId": "J407AP",
            "extensionAttributes": [],
        },
        "userAndLocation": {
            "username": "ana.silva",
            "realName": "Ana Silva",
            "emailAddress": "ana.silva@example.com",
            "position": "Analyst",
            "phoneNumber": "",
            "departmentId": "2",
            "buildingId": "1",
            "room": "3.14",
            "building": "HQ",
            "department": "Finance",
            "extensionAttributes": [],
        },
        "purchasing": {
            "purchased": True,
            "leased": False,
            "poNumber": f"PO-M{i}",
            "vendor": "Apple",
            "appleCareId": "",
            "purchasePrice": "699",
            "purchasingAccount": "",
            "poDate": "2025-02-20",
            "warrantyExpiresDate": "2026-02-20",
            "leaseExpiresDate": None,
            "lifeExpectancy": 3,
            "purchasingContact": "",
            "extensionAttributes": [],
        },
        "security": {
            "dataProtected": True,
            "blockLevelEncryptionCapable": True,
            "fileLevelEncryptionCapable": True,
            "passcodePresent": True,
            "passcodeCompliant": True,
            "passcodeCompliantWithProfile": True,
        },
        "network": {
            "cellularTechnology": "Unknown",
            "voiceRoamingEnabled": False,
            "imei": "35 123456 789012 3",
            "iccid": "",
            "carrierSettingsVersion": "",
            "currentCarrierNetwork": "",
            "homeCarrierNetwork": "",
            "dataRoamingEnabled": False,
            "roaming": False,
            "phoneNumber": "",
        },
        "applications": [
            {
                "identifier": "com.apple.Pages",
                "name": "Pages",
                "version": "14.4",
                "shortVersion": "14.4",
                "managementStatus": "Managed",
                "validationStatus": True,
            }
        ],
        "extensionAttributes": [],
        "certificates": [],
    }


def jamf_error(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"httpStatus": status, "errors": [{"code": code, "description": description, "id": "0", "field": None}]},
        status_code=status,
    )


class FakeJamf(FakeVendor):
    def __init__(
        self,
        computers: list[dict[str, Any]] | None = None,
        mobiles: list[dict[str, Any]] | None = None,
        *,
        client_id: str = "b5c4f3e2-client",
        client_secret: str = "Cl1entS3cret-xyz",
        username: str = "oomnitza-api",
        password: str = "p%ss*w0rd!",
        versions: tuple[str, ...] = ("v3", "v4"),
        max_page: int = 100,
        token_uses: int | None = None,
        token_lifetime: float = 599,
        delay: float = 0.0,
    ) -> None:
        self.computers = computers if computers is not None else [computer(i) for i in range(101, 106)]
        self.mobiles = mobiles if mobiles is not None else [mobile(i) for i in range(55, 58)]
        self.client_id, self.client_secret = client_id, client_secret
        self.username, self.password = username, password
        self.versions = versions
        self.max_page = max_page
        self.token_uses = token_uses  # a token stops working after this many requests (an expiry)
        self.token_lifetime = token_lifetime
        self.delay = delay  # seconds each inventory answer takes (to observe concurrency)
        self.tokens: dict[str, int] = {}  # live token → requests left
        self.issued: list[str] = []
        self.keepalives = 0
        self.invalidated: list[str] = []
        self.sections_seen: list[list[str]] = []  # the repeated ?section= values of each inventory request
        self.sorts_seen: list[str] = []
        self.requests_served = 0
        self.mobile_details = 0  # per-device /api/v2/mobile-devices/{id}/detail calls
        self.in_flight = 0
        self.max_in_flight = 0
        self.buildings = [{"id": "1", "name": "HQ", "city": "Lisbon"}, {"id": "3", "name": "Annex"}]
        self.departments = [{"id": "2", "name": "Finance"}, {"id": "4", "name": "Legal"}]
        self.computer_groups: list[dict[str, Any]] = [
            {"id": 7, "name": "Finance Macs", "is_smart": True, "members": [101, 103]},
            {"id": 8, "name": "Design/Video", "is_smart": False, "members": [104]},
        ]
        self.mobile_groups: list[dict[str, Any]] = [
            {"id": 3, "name": "Finance iPads", "is_smart": False, "members": [56]},
        ]
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/oauth/token", self.oauth_token, methods=["POST"]),
            Route("/api/v1/auth/token", self.user_token, methods=["POST"]),
            Route("/api/v1/auth/keep-alive", self.keep_alive, methods=["POST"]),
            Route("/api/v1/auth/invalidate-token", self.invalidate, methods=["POST"]),
            Route("/api/v2/mobile-devices/detail", self.mobile_inventory),
            Route("/api/v2/mobile-devices/{id}/detail", self.mobile_detail),
            Route("/api/v1/buildings", self.named("buildings")),
            Route("/api/v1/departments", self.named("departments")),
            Route("/api/{version}/computers-inventory", self.computer_inventory),
            Route("/JSSResource/computergroups", self.classic_groups("computer")),
            Route("/JSSResource/computergroups/id/{id}", self.classic_group("computer")),
            Route("/JSSResource/mobiledevicegroups", self.classic_groups("mobile")),
            Route("/JSSResource/mobiledevicegroups/id/{id}", self.classic_group("mobile")),
        ]

    # -- auth ---------------------------------------------------------------------------------------

    def _issue(self) -> str:
        token = f"eyJhbGciOi.jamf-{len(self.issued)}"
        self.issued.append(token)
        self.tokens[token] = self.token_uses if self.token_uses is not None else 10**9
        return token

    def _bearer(self, request: Request) -> str | None:
        """The request's bearer token if it is live (and spend one use of it)."""
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        if token is None or self.tokens.get(token, 0) <= 0:
            return None
        self.tokens[token] -= 1
        return token

    async def oauth_token(self, request: Request) -> Response:
        form = await request.form()
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        return JSONResponse(
            {
                "access_token": self._issue(),
                "scope": "api-role:2",
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
            }
        )

    def _expires(self) -> str:
        when = datetime.fromtimestamp(time.time() + self.token_lifetime, UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"

    async def user_token(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if header != f"Basic {expected}":
            return JSONResponse({"httpStatus": 401, "errors": []}, status_code=401)
        return JSONResponse({"token": self._issue(), "expires": self._expires()})

    async def keep_alive(self, request: Request) -> Response:
        old = self._bearer(request)
        if old is None:
            return jamf_error(401, "INVALID_TOKEN", "Unauthorized")
        self.keepalives += 1
        del self.tokens[old]  # Jamf invalidates the token that was renewed
        return JSONResponse({"token": self._issue(), "expires": self._expires()})

    async def invalidate(self, request: Request) -> Response:
        token = self._bearer(request)
        if token is None:
            return jamf_error(401, "INVALID_TOKEN", "Unauthorized")
        del self.tokens[token]
        self.invalidated.append(token)
        return Response(status_code=204)

    # -- Jamf Pro API ---------------------------------------------------------------------------------

    async def computer_inventory(self, request: Request) -> Response:
        version = request.path_params["version"]
        if version not in self.versions:
            return Response(status_code=404)
        pool = [_as_v4(c) for c in self.computers] if version >= "v4" else self.computers
        return await self._inventory(
            request, pool, COMPUTER_SECTIONS, "id", ("id", "udid"), ("general.name", _general_name)
        )

    async def mobile_inventory(self, request: Request) -> Response:
        pool = [_inventory_mobile(m) for m in self.mobiles]
        return await self._inventory(
            request,
            pool,
            MOBILE_SECTIONS,
            "mobileDeviceId",
            ("mobileDeviceId", "deviceType"),
            ("displayName", _display_name),
        )

    async def mobile_detail(self, request: Request) -> Response:
        """``/api/v2/mobile-devices/{id}/detail``: one device, every section, its own shape."""
        if self._bearer(request) is None:
            return jamf_error(401, "INVALID_TOKEN", "Unauthorized")
        self.mobile_details += 1
        found = next((m for m in self.mobiles if m["mobileDeviceId"] == request.path_params["id"]), None)
        if found is None:
            return jamf_error(404, "INVALID_ID", "Mobile device not found")
        return JSONResponse(_mobile_detail(found))

    async def _inventory(
        self,
        request: Request,
        pool: list[dict[str, Any]],
        sections: dict[str, str],
        id_field: str,
        always: tuple[str, ...],
        default_sort: tuple[str, Any],
    ) -> Response:
        if self._bearer(request) is None:
            return jamf_error(401, "INVALID_TOKEN", "Unauthorized")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            q = request.query_params
            wanted = q.getlist("section") or ["GENERAL"]
            self.sections_seen.append(wanted)
            unknown = [s for s in wanted if s not in sections]
            if unknown:
                return jamf_error(400, "INVALID_FIELD", f"Unknown section {unknown[0]}")
            rows = pool
            rsql = q.get("filter", "")
            if rsql:
                match = re.fullmatch(rf"{id_field}=in=\(([\d,]*)\)|{id_field}==\"?(\d+)\"?", rsql)
                if match is None:
                    return jamf_error(400, "INVALID_FILTER", f"Unsupported filter {rsql}")
                ids = set((match.group(1) or match.group(2) or "").split(","))
                rows = [r for r in pool if r[id_field] in ids]
            size = min(int(q.get("page-size", 100)), self.max_page)
            page = int(q.get("page", 0))
            self.sorts_seen.append(q.get("sort", ""))
            sort = q.get("sort", f"{default_sort[0]}:asc").split(":")[0]
            if sort == id_field:
                rows = sorted(rows, key=lambda r: int(r[id_field]))
            else:  # equal keys in a different order on every request: no tie-breaker
                name_of = default_sort[1]
                self.requests_served += 1
                salt = self.requests_served
                rows = sorted(rows, key=lambda r: (name_of(r), (int(r[id_field]) + 13) * (2 * salt + 1) * 7919 % 1009))
            keys = {sections[s] for s in wanted}
            results = [
                {k: (v if k in keys or k in always else None) for k, v in r.items()}
                for r in rows[page * size : (page + 1) * size]
            ]
            return JSONResponse({"totalCount": len(rows), "results": results})
        finally:
            self.in_flight -= 1

    def named(self, what: str) -> Any:
        async def endpoint(request: Request) -> Response:
            if self._bearer(request) is None:
                return jamf_error(401, "INVALID_TOKEN", "Unauthorized")
            rows = getattr(self, what)
            size = min(int(request.query_params.get("page-size", 100)), self.max_page)
            page = int(request.query_params.get("page", 0))
            return JSONResponse({"totalCount": len(rows), "results": rows[page * size : (page + 1) * size]})

        return endpoint

    # -- Classic API ----------------------------------------------------------------------------------

    def _classic_ok(self, request: Request) -> bool:
        return request.headers.get("accept") == "application/json" and self._bearer(request) is not None

    def classic_groups(self, kind: str) -> Any:
        async def endpoint(request: Request) -> Response:
            if not self._classic_ok(request):
                return HTMLResponse(UNAUTHORIZED_HTML, status_code=401)
            groups = self.computer_groups if kind == "computer" else self.mobile_groups
            listed = [{"id": g["id"], "name": g["name"], "is_smart": g["is_smart"]} for g in groups]
            return JSONResponse({"computer_groups" if kind == "computer" else "mobile_device_groups": listed})

        return endpoint

    def classic_group(self, kind: str) -> Any:
        async def endpoint(request: Request) -> Response:
            if not self._classic_ok(request):
                return HTMLResponse(UNAUTHORIZED_HTML, status_code=401)
            groups = self.computer_groups if kind == "computer" else self.mobile_groups
            group = next((g for g in groups if str(g["id"]) == request.path_params["id"]), None)
            if group is None:
                return HTMLResponse(NOT_FOUND_HTML, status_code=404)
            body: dict[str, Any] = {
                "id": group["id"],
                "name": group["name"],
                "is_smart": group["is_smart"],
                "site": {"id": -1, "name": "None"},
                "criteria": [],
            }
            if kind == "computer":
                body["computers"] = [
                    {
                        "id": m,
                        "name": f"FIN-MBP-{m:04d}",
                        "mac_address": "",
                        "alt_mac_address": "",
                        "serial_number": f"C02ZK{m:04d}D6T",
                    }
                    for m in group["members"]
                ]
                return JSONResponse({"computer_group": body})
            members = [{"id": m, "name": f"Ana's iPad {m}", "udid": "", "serial_number": ""} for m in group["members"]]
            # Classic JSON sends a lone member as an object rather than a one-element list.
            body["mobile_devices"] = members[0] if len(members) == 1 else members
            return JSONResponse({"mobile_device_group": body})

        return endpoint


def _general_name(row: dict[str, Any]) -> str:
    return str((row.get("general") or {}).get("name") or "")


def _display_name(row: dict[str, Any]) -> str:
    return str((row.get("general") or {}).get("displayName") or "")


def _as_v4(row: dict[str, Any]) -> dict[str, Any]:
    """computers-inventory v4: ``general.lastContactTime`` is ``general.lastCheckIn``."""
    general = dict(row.get("general") or {})
    if "lastContactTime" in general:
        general["lastCheckIn"] = general.pop("lastContactTime")
    return {**row, "general": general}


# Fields of a mobile device that only the per-device detail shows (top level / under "ios").
DETAIL_ONLY = ("initialEntryTimestamp", "lastBackupTimestamp")


def _inventory_mobile(row: dict[str, Any]) -> dict[str, Any]:
    """``mobile-devices/detail`` rows: no initial entry or backup time in ``general``."""
    general = {k: v for k, v in (row.get("general") or {}).items() if k not in DETAIL_ONLY}
    return {**row, "general": general}


def _mobile_detail(row: dict[str, Any]) -> dict[str, Any]:
    """The MobileDeviceDetailsGetV2 shape of a device (the fields the connector reads from it)."""
    general = row.get("general") or {}
    hardware = row.get("hardware") or {}
    return {
        "id": row["mobileDeviceId"],
        "name": general.get("displayName"),
        "serialNumber": hardware.get("serialNumber"),
        "udid": general.get("udid"),
        "initialEntryTimestamp": general.get("initialEntryTimestamp"),
        "lastEnrollmentTimestamp": general.get("lastEnrolledDate"),
        "type": "ios",
        "ios": {
            "model": hardware.get("model"),
            "lastBackupTimestamp": general.get("lastBackupTimestamp"),
            "capacityMb": hardware.get("capacityMb"),
        },
    }
