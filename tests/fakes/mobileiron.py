"""Fake Ivanti MobileIron: Cloud / Neurons for MDM (API v1) and Core / EPMM (API v2), both behind HTTP Basic.

Neurons for MDM, after Ivanti's "MDM Customer Integration API Guide" (help.ivanti.com/mi/help/en_US/
cld/8x/api/MDMCustomerIntegrationAPIGuide/, and the MobileIron Cloud 76 edition of it):
- Auth ("API Basics › Authentication"): Basic on every call. A refusal is ``401`` with the v1 error
  envelope ``{"errors": {"globalErrors": [...]}, "result": null}`` (its exact text is not documented).
- Limits ("API Basics › Rows Parameter Limit"): ``rows`` above 500 → ``400 {"errors": {"globalErrors":
  null, "fieldErrors": [{"code": "Range", "message": "must be between 1 and 500", "field": "rows"}]},
  "result": null}``; calls "against the database" (groups, partitions) may return only 50 rows, so the
  partition list pages by 50 here. No request-rate limit is documented for these calls; tests inject
  ``429``/``503`` with and without ``Retry-After``.
- Paging: ``start``/``rows`` with ``result.totalCount`` and ``result.searchResults``; pages may hold
  fewer rows than asked (``max_page``). ``sortFields[0].name=lastCheckin`` with ``order=DESC`` sorts;
  where never-checked-in devices (``lastCheckin`` null) sort is not documented (``nulls_first``).
- Record shape: camelCase devices (``id``, ``guid``, ``serialNumber``, ``lastCheckin`` in epoch ms,
  ``windowsDeviceType`` …) and ``/api/v1/device/{id}/hardwareinventory`` (``processor``, ``hardDrive``,
  ``physicalMemory``, ``computerSystemProduct.identifyingNumber``) follow our fact sheet; the guide
  confirms the ``{"errors", "result"}`` envelope and device ids/GUIDs ("Device API Calls").

EPMM, after "MobileIron Core / EPMM API v2 Guide" (help.ivanti.com/mi/help/en_us/CORE/11.x/api2/APIv2/
APIv2Devices.htm, "Search for devices"):
- ``/api/v2/devices`` needs ``adminDeviceSpaceId``, ``query`` or ``labelId``, and ``fields``: 1 to 512
  names, each one of the searchable fields (``/api/v2/device_spaces/criteria``). A name that is not
  searchable is refused with ``400`` here: the guide lists the valid values but not what happens
  otherwise (the harder case). Answers ``{"totalCount", "resultCount", "hasMore", "results"}`` with
  flat records whose keys are the dotted field names, only the fields asked for.
- A refused credential on Core answers an HTML error page (Tomcat), not JSON.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


def android(i: int, checkin: int | None) -> dict[str, Any]:
    return {
        "id": 730400 + i,
        "guid": f"57d9903c-aadf-4b40-aef3-{i:012d}",
        "displayName": f"DRV-TAB-{i:04d}",
        "platformType": "ANDROID",
        "platformVersion": "14",
        "manufacturer": "Samsung",
        "model": "SM-X200",
        "serialNumber": f"R9TT{i:07d}",
        "imei": "356938035643809",
        "wifiMacAddress": f"f4:f5:e8:11:22:{i:02x}",
        "emailAddress": f"driver{i}@example.com",
        "lastCheckin": checkin,
        "windowsDeviceType": None,
    }


def windows(i: int, checkin: int | None, serial: str | None = None) -> dict[str, Any]:
    return {
        "id": 730460 + i,
        "guid": f"0b1c2d3e-4f50-6172-8394-{i:012d}",
        "displayName": f"DRV-LAP-{i:04d}",
        "platformType": "WINDOWS",
        "platformVersion": "10.0.22631",
        "manufacturer": "Dell Inc.",
        "model": "Latitude 5440",
        "serialNumber": serial,
        "emailAddress": "dispatch@example.com",
        "lastCheckin": checkin,
        "windowsDeviceType": "DESKTOP",
    }


def hardware(serial: str | None = "7H2KXY3") -> dict[str, Any]:
    inventory: dict[str, Any] = {
        "processor": [{"name": "13th Gen Intel(R) Core(TM) i5-1345U", "cores": 10}],
        "hardDrive": [{"size": 512110190592}],
        "physicalMemory": [{"capacity": 17179869184}],
    }
    if serial is not None:
        inventory["computerSystemProduct"] = {"identifyingNumber": serial}
    return {"errors": None, "result": inventory}


def core_device(i: int) -> dict[str, Any]:
    return {
        "common.uuid": f"4239b999-46e3-423b-b808-{i:012d}",
        "common.serial_number": f"F9FXK{i:07d}",
        "common.model": "iPhone 15",
        "user.display_name": f"User {i}",
        "ios.DeviceName": f"iPhone {i}",
        "common.status": "ACTIVE",
    }


CORE_CRITERIA = [
    "common.uuid",
    "common.serial_number",
    "common.model",
    "user.display_name",
    "ios.DeviceName",
    "common.status",
]


class FakeMobileIron(FakeVendor):
    def __init__(
        self,
        *,
        partitions: dict[str, list[dict[str, Any]]] | None = None,
        spaces: dict[int, list[dict[str, Any]]] | None = None,
        username: str = "api-reader",
        password: str = "Ivanti-pa55",
        max_page: int = 500,
    ) -> None:
        fresh = now_ms() - 3_600_000
        self.partitions: dict[str, list[dict[str, Any]]] = (
            partitions
            if partitions is not None
            else {
                "Default Partition": [android(90, fresh)],
                "Drivers": [android(1, fresh), windows(1, fresh - 1000), android(2, fresh - 2000)],
            }
        )
        self.partition_ids = {name: 10021 + i for i, name in enumerate(self.partitions)}
        self.hardware: dict[int, dict[str, Any]] = {730461: hardware()}
        self.spaces = spaces if spaces is not None else {1: [core_device(i) for i in range(3)]}
        self.criteria = list(CORE_CRITERIA)
        self.username, self.password = username, password
        self.max_page = max_page
        self.nulls_first = False
        self.partition_page = 50
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v1/tenant/partition/device", self.v1_partitions),
            Route("/api/v1/device", self.v1_devices),
            Route("/api/v1/device/{device_id}/hardwareinventory", self.v1_hardware),
            Route("/api/v2/device_spaces/mine", self.v2_spaces),
            Route("/api/v2/device_spaces/criteria", self.v2_criteria),
            Route("/api/v2/devices", self.v2_devices),
        ]

    def _denied(self, request: Request) -> Response | None:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("authorization") == expected:
            return None
        if request.url.path.startswith("/api/v2/"):  # Core answers with an HTML page
            return HTMLResponse("<html><body><h1>HTTP Status 401 - Unauthorized</h1></body></html>", status_code=401)
        return JSONResponse(
            {"errors": {"globalErrors": [{"code": "Unauthorized", "message": "Bad credentials"}]}, "result": None},
            status_code=401,
        )

    async def v1_partitions(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        rows = [{"id": pid, "name": name} for name, pid in self.partition_ids.items()]
        start = int(request.query_params.get("start", 0))
        size = min(int(request.query_params.get("rows", 50)), self.partition_page)
        return JSONResponse(
            {
                "errors": None,
                "result": {
                    "searchResults": rows[start : start + size],
                    "totalCount": len(rows),
                    "offset": start,
                    "limit": size,
                },
            }
        )

    async def v1_devices(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        q = request.query_params
        rows = int(q.get("rows", 50))
        if not 1 <= rows <= 500:
            return JSONResponse(
                {
                    "errors": {
                        "globalErrors": None,
                        "fieldErrors": [{"code": "Range", "message": "must be between 1 and 500", "field": "rows"}],
                    },
                    "result": None,
                },
                status_code=400,
            )
        name = next((n for n, pid in self.partition_ids.items() if str(pid) == q.get("dmPartitionId")), None)
        if name is None:
            return JSONResponse(
                {"errors": {"globalErrors": [{"message": "Unknown partition"}]}, "result": None}, status_code=400
            )
        devices = list(self.partitions[name])
        if q.get("sortFields[0].name") == "lastCheckin":
            with_date = sorted(
                (d for d in devices if d.get("lastCheckin") is not None),
                key=lambda d: d["lastCheckin"],
                reverse=q.get("sortFields[0].order") == "DESC",
            )
            nulls = [d for d in devices if d.get("lastCheckin") is None]
            devices = nulls + with_date if self.nulls_first else with_date + nulls
        start = int(q.get("start", 0))
        size = min(rows, self.max_page)
        return JSONResponse(
            {
                "errors": None,
                "result": {
                    "totalCount": len(devices),
                    "offset": 0,
                    "limit": size,
                    "searchResults": devices[start : start + size],
                },
            }
        )

    async def v1_hardware(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        device_id = int(request.path_params["device_id"])
        if device_id not in self.hardware:
            return JSONResponse(
                {"errors": {"globalErrors": [{"message": "Device not found"}]}, "result": None}, status_code=404
            )
        return JSONResponse(self.hardware[device_id])

    async def v2_spaces(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        results = [{"id": sid, "name": "Global" if sid == 1 else f"Space {sid}"} for sid in self.spaces]
        return JSONResponse(
            {"results": results, "totalCount": len(results), "resultCount": len(results), "hasMore": False}
        )

    async def v2_criteria(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        return JSONResponse({"results": [{"name": n} for n in self.criteria]})

    async def v2_devices(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        q = request.query_params
        if "labelId" not in q and "query" not in q:
            return JSONResponse(
                {"messages": [{"type": "Error", "message": "query or labelId is required"}]}, status_code=400
            )
        fields = [f for f in q.get("fields", "").split(",") if f]
        if not fields or len(fields) > 512:
            return JSONResponse({"messages": [{"type": "Error", "message": "fields: 1 to 512 names"}]}, status_code=400)
        unknown = [f for f in fields if f not in self.criteria]
        if unknown:
            return JSONResponse(
                {"messages": [{"type": "Error", "message": f"Invalid field: {unknown[0]}"}]}, status_code=400
            )
        devices = self.spaces.get(int(q.get("adminDeviceSpaceId", 0)), [])
        offset = int(q.get("offset", 0))
        limit = min(int(q.get("limit", 50)), self.max_page)
        chunk = [{f: d.get(f) for f in fields} for d in devices[offset : offset + limit]]
        return JSONResponse(
            {
                "totalCount": len(devices),
                "resultCount": len(chunk),
                "hasMore": offset + len(chunk) < len(devices),
                "results": chunk,
            }
        )
