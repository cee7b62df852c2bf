"""Fake Cisco IoT Control Center REST API (``/rws/api/v1``).

What it follows, per behaviour (Cisco's REST catalog, developer.cisco.com/docs/control-center, is
only partly public; where it is silent this fake follows a public integration that encodes it:
juanm-bismark/app-suscriptions-back, ``app/providers/tele2/adapter.py``, its tests and
``docs/architecture/PROVIDER_SPEC_GAPS.md``, "Implemented Cisco/Jasper Contract Details"):

- auth: HTTP Basic ``username:api_key`` on every request (developer.cisco.com/docs/control-center
  "Getting Started"); anything else is 401 with Control Center's error body
  ``{"errorMessage": ..., "errorCode": ...}``.
- ``GET /devices`` ("Search Devices", developer.cisco.com/docs/control-center/search-devices):
  ``modifiedSince`` is required (400 ``10000003`` "ModifiedSince is required."), strictly
  ``yyyy-MM-ddTHH:mm:ssZ`` (400 otherwise), not in the future (400 ``10002119``) and not more than
  one year old (400 ``10000045`` "ModifiedSince cannot be more than one year old"), the codes the
  integration quotes. ``modifiedTill`` is optional, same format, at most a year after
  ``modifiedSince`` (the integration's rule; this fake's 400 code for it, ``10000046``, is made up).
  Both bounds are exclusive here: the catalog does not say, and exclusive is the harder case.
  ``pageSize`` default and maximum 50 (400 above), ``pageNumber`` from 1, optional ``accountId``
  (400 for an account the user cannot see) and ``status``. Answers the SIMs changed in the window,
  oldest change first, as ``{"devices": [{iccid, status, ratePlan, communicationPlan}],
  "pageNumber": n, "lastPage": bool}``.
- ``GET /devices/{iccid}`` ("Get Device Details"): the device's details (``dateUpdated``,
  ``fixedIPAddress``, ``accountCustom1..10``, ...), 404 for an ICCID it does not know. Dates use
  Control Center's ``yyyy-MM-dd HH:mm:ss.SSS+0000`` form (as in the integration's fixtures).
- throttling: the catalog asks for one call at a time; a call that arrives while another is being
  answered, or sooner than ``1/tps`` seconds after the previous one when ``tps`` is set, is refused
  with HTTP 400 ``{"errorCode": "40000029", "errorMessage": "Rate Limit Exceeded"}`` (the
  integration maps this code, not a 429, to a rate limit).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

BASE = "/rws/api/v1"
MAX_PAGE = 50
LIST_FIELDS = ("iccid", "status", "ratePlan", "communicationPlan")
REQUEST_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
ONE_YEAR = timedelta(days=365)
THROTTLED = {"errorCode": "40000029", "errorMessage": "Rate Limit Exceeded"}


def cc_date(value: datetime) -> str:
    """A date as Control Center writes it in answers: ``2026-11-02 14:22:31.000+0000``."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.000+0000")


def days_ago(days: float, now: datetime | None = None) -> str:
    """``dateUpdated`` of a SIM changed ``days`` ago (Control Center's answer form)."""
    return cc_date((now or datetime.now(UTC)) - timedelta(days=days))


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
        tps: float | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.username, self.api_key, self.accounts, self.max_page = username, api_key, accounts, max_page
        self.tps = tps  # calls per second before Control Center throttles (None: only concurrency)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.devices: list[dict[str, Any]] = []
        self.seen_since: list[str] = []
        self.times: list[float] = []  # monotonic arrival time of every authenticated request
        self.detail_delay = 0.0  # seconds each detail answer takes (to observe concurrency)
        self.in_flight = self.max_in_flight = 0
        self.throttled = 0  # calls refused with 40000029
        self._last_call = 0.0
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
        now = time.monotonic()
        # (a 50 ms tolerance for the jitter of two clocks on one machine)
        too_soon = self.tps is not None and self.times and now - self._last_call < 1.0 / self.tps - 0.05
        if self.in_flight > 0 or too_soon:
            self.throttled += 1
            return JSONResponse(THROTTLED, status_code=400)
        self.times.append(now)
        self._last_call = now
        return None

    async def search_devices(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._search(request)
        finally:
            self.in_flight -= 1

    def _window(self, q: Any) -> tuple[datetime, datetime | None] | Response:
        since_text, till_text = q.get("modifiedSince"), q.get("modifiedTill")
        if not since_text:
            return error(400, "ModifiedSince is required.", "10000003")
        for name, text in (("modifiedSince", since_text), ("modifiedTill", till_text)):
            if text is not None and not REQUEST_DATE.fullmatch(text):
                return error(400, f"{name} must use yyyy-MM-ddTHH:mm:ssZ format", "10000003")
        since = _parse_time(since_text)
        till = _parse_time(till_text) if till_text else None
        assert since is not None
        now = self.clock()
        if since > now:
            return error(400, "ModifiedSince cannot be a future date", "10002119")
        if now - since > ONE_YEAR:
            return error(400, "ModifiedSince cannot be more than one year old", "10000045")
        if till is not None and (till < since or till - since > ONE_YEAR):
            return error(400, "ModifiedTill must be within one year after ModifiedSince", "10000046")
        self.seen_since.append(since_text)
        return since, till

    def _search(self, request: Request) -> Response:
        q = request.query_params
        window = self._window(q)
        if isinstance(window, Response):
            return window
        since, till = window
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
            if since < self._updated(d)
            and (till is None or self._updated(d) < till)
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
