"""Fake Cisco IoT Control Center REST API (``/rws/api/v1``), as the fact sheet and Cisco's developer
documentation describe it:

- HTTP Basic ``username:api_key`` on every request; anything else is 401 with Control Center's error
  body ``{"errorMessage": ..., "errorCode": ...}`` (fictional codes);
- ``GET /devices``: ``modifiedSince`` (ISO-8601) is required (400 without it or when unreadable);
  optional ``accountId`` (400 for an account the user cannot see), ``status``, ``pageSize`` (default
  and maximum 50; 400 above), ``pageNumber`` (default 1). Devices changed strictly after
  ``modifiedSince``, oldest change first, as ``{"devices": [...], "pageNumber": n, "lastPage": bool}``;
- ``GET /devices/{iccid}``: the device's details, 404 for an ICCID it does not know.

Dates in detail answers use Control Center's ``yyyy-MM-dd HH:mm:ss.SSS+0000`` form.
"""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

BASE = "/rws/api/v1"
MAX_PAGE = 50
LIST_FIELDS = ("iccid", "status", "ratePlan", "communicationPlan")


def device(i: int, updated: str, **extra: Any) -> dict[str, Any]:
    """One SIM's detail answer; ``updated`` like ``2026-11-02 14:22:31.000+0000``."""
    return {
        "iccid": f"890117042789300{i:05d}",
        "imsi": f"31017{i:010d}",
        "msisdn": f"88235{i:010d}",
        "imei": f"3569380356{i:05d}",
        "status": "ACTIVATED",
        "ratePlan": "IOT-1GB-POOL",
        "communicationPlan": "CP-Data-Only",
        "customer": "Fleet East",
        "endConsumerId": None,
        "dateActivated": "2025-02-03 09:15:00.000+0000",
        "dateAdded": "2025-01-20 00:00:00.000+0000",
        "dateUpdated": updated,
        "dateShipped": "2025-01-21 00:00:00.000+0000",
        "accountId": "100045",
        "fixedIPAddress": f"10.200.1.{i}",
        "fixedIpv6Address": None,
        "deviceID": f"TRUCK-{i:04d}",
        "modemID": f"MDM-{i}",
        "globalSimType": "",
        "simNotes": None,
        "accountCustom1": f"Depot {i}",
        **{f"accountCustom{n}": "" for n in range(2, 11)},
        **{f"operatorCustom{n}": "" for n in range(1, 6)},
        **{f"customerCustom{n}": "" for n in range(1, 6)},
        **extra,
    }


def _parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def error(status: int, message: str, code: str) -> Response:
    return JSONResponse({"errorMessage": message, "errorCode": code}, status_code=status)


class FakeJasperRest(FakeVendor):
    def __init__(
        self,
        *,
        username: str = "api-user@example.com",
        api_key: str = "cc-api-key-0000-fake",
        accounts: tuple[str, ...] = ("100045",),
        max_page: int = MAX_PAGE,
    ) -> None:
        self.username, self.api_key, self.accounts, self.max_page = username, api_key, accounts, max_page
        self.devices: list[dict[str, Any]] = []
        self.seen_since: list[str] = []
        self.times: list[float] = []  # monotonic arrival time of every authenticated request
        self.detail_delay = 0.0  # seconds each detail answer takes (to observe concurrency)
        self.in_flight = self.max_in_flight = 0
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{BASE}/devices", self.search_devices),
            Route(f"{BASE}/devices/{{iccid}}", self.device_details),
        ]

    def _denied(self, request: Request) -> Response | None:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.api_key}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return error(401, "Invalid credentials", "10000001")
        self.times.append(time.monotonic())
        return None

    async def search_devices(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        q = request.query_params
        since_text = q.get("modifiedSince")
        if not since_text:
            return error(400, "modifiedSince is required", "10000024")
        since = _parse_time(since_text)
        if since is None:
            return error(400, "modifiedSince is not a valid ISO 8601 date", "10000025")
        self.seen_since.append(since_text)
        try:
            size = int(q.get("pageSize", MAX_PAGE))
            number = int(q.get("pageNumber", 1))
        except ValueError:
            return error(400, "pageSize and pageNumber must be numbers", "10000026")
        if not 1 <= size <= MAX_PAGE or number < 1:
            return error(400, f"pageSize must be from 1 to {MAX_PAGE}", "10000027")
        account = q.get("accountId")
        if account is not None and account not in self.accounts:
            return error(400, "Invalid accountId", "10000010")
        size = min(size, self.max_page)
        changed = [
            d
            for d in self.devices
            if self._updated(d) > since
            and (account is None or str(d.get("accountId")) == account)
            and ("status" not in q or d.get("status") == q["status"])
        ]
        changed.sort(key=self._updated)
        chosen = changed[(number - 1) * size : number * size]
        return JSONResponse(
            {
                "devices": [{k: d.get(k) for k in LIST_FIELDS} for d in chosen],
                "pageNumber": number,
                "lastPage": number * size >= len(changed),
            }
        )

    async def device_details(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.detail_delay:
                await asyncio.sleep(self.detail_delay)
            iccid = request.path_params["iccid"]
            found = next((d for d in self.devices if d["iccid"] == iccid), None)
            if found is None:
                return error(404, "Resource not found - Invalid ICCID", "10000003")
            return JSONResponse(found)
        finally:
            self.in_flight -= 1

    @staticmethod
    def _updated(d: dict[str, Any]) -> datetime:
        value = _parse_time(str(d["dateUpdated"]))
        assert value is not None
        return value
