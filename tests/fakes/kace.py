"""Fake Quest KACE Systems Management Appliance (SMA) API, after Quest's "API Reference Guide"
(support.quest.com, KACE SMA 12.1-14.1 Common Documents; 11.1 for the pre-12.1 headers).

- Login ("Authentication and organization selection"): ``POST /ams/shared/api/security/login`` with
  a JSON body ``{"userName", "password", "organizationName"}``; the session lives in a cookie (the
  cookie's name, ``kboxid`` here, and the body of the answer are not documented). Two generations:
  - ``legacy=True`` (SMA 12.0 and older, guide 11.1 "Headers › CSRF"): the login answers
    ``x-dell-csrf-token``; every later request must echo it (checked against the token kept with the
    cookie) and carry ``x-dell-api-version``;
  - ``legacy=False`` (12.1+, the NOTE atop the 12.1-14.1 guides): no CSRF token; ``x-kace-api-version``
    on every request, the login included; an old client sending ``x-dell-api-version`` on the login
    is still served.
- Two-factor ("Authentication": ``/ams/shared/api/security/verify_2factor``): without the code every
  API call answers ``401``; ``two_factor=True`` does that.
- Headers ("Headers › Accept"): ``Accept`` is mandatory and selects JSON or XML; without
  ``application/json`` the fake answers XML (the harder case).
- Paging ("Paging"): ``paging=limit N offset M`` in either order, default limit 50, ``limit 0``/``ALL``
  returns everything; a page may hold fewer than asked (``max_page``, the harder case).
  ("Shaping"): ``shaping=machine all,software standard``; sub-entities not named are left out.
  ("Counts"): ``Count`` (total matches) is in the payload unless ``use_count=false``.
- Record shape: ``{"Count", "Warnings", "Machines": [...]}`` with Capitalised_snake_case machine keys
  and a ``Software`` list of UPPER_CASE entries (``DISPLAY_NAME``, ``DISPLAY_VERSION``); KACE's "no
  value" markers ``"empty"`` and ``"0000-00-00 00:00:00"`` (our fact sheet; the guide shows no full
  machine).
- Limits: the guide documents no rate limit; sessions expire (``expire_after``), then ``401``. Error
  bodies are not documented; the fake answers ``{"error": "…"}``.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

LOGIN = "/ams/shared/api/security/login"
COOKIE = "kboxid"

LAPTOP = {
    "Id": 1042,
    "Name": "ACC-LT-0031",
    "Mac": "A4:B1:C1:22:33:44",
    "Ip": "10.20.1.15",
    "User": "jdoe",
    "User_fullname": "John Doe",
    "Os_name": "Microsoft Windows 11 Enterprise x64",
    "Os_version": "10.0.22631",
    "Cs_manufacturer": "Dell Inc.",
    "Cs_model": "Latitude 5440",
    "Bios_serial_number": "7H2KXY3",
    "Ram_total": "16384",
    "Last_inventory": "2026-09-14 06:12:45",
    "Last_sync": "2026-09-14 07:40:02",
    "Notes": "empty",
    "Software": [
        {"ID": 5531, "DISPLAY_NAME": "Google Chrome", "DISPLAY_VERSION": "140.0.7339.80", "PUBLISHER": "Google LLC"},
        {"ID": 5602, "DISPLAY_NAME": "7-Zip 24.08 (x64)", "DISPLAY_VERSION": "24.08", "PUBLISHER": "Igor Pavlov"},
    ],
}
DESKTOP = {
    "Id": 1043,
    "Name": "ACC-DT-0007",
    "Bios_serial_number": "5CD1234ABC",
    "Last_inventory": "0000-00-00 00:00:00",
    "Last_sync": "2026-09-10 12:00:00",
    "Software": [],
}


def machine(i: int) -> dict[str, Any]:
    return {
        "Id": 2000 + i,
        "Name": f"ACC-VM-{i:04d}",
        "Bios_serial_number": f"VMW{i:06d}",
        "Os_name": "Ubuntu 24.04 LTS",
        "Last_inventory": "2026-09-12 10:00:00",
        "Last_sync": "2026-09-12 10:05:00",
        "Notes": "",
        "User": "empty",
        "Software": [{"ID": 1, "DISPLAY_NAME": "openssh-server", "DISPLAY_VERSION": "9.6p1"}],
    }


def fixture_machines() -> list[dict[str, Any]]:
    return [copy.deepcopy(LAPTOP), copy.deepcopy(DESKTOP), machine(1)]


def kace_error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class FakeKace(FakeVendor):
    def __init__(
        self,
        machines: list[dict[str, Any]] | None = None,
        *,
        legacy: bool = False,
        username: str = "oomnitza",
        password: str = "s3cret",
        organization: str = "Default",
        max_page: int = 1000,
        two_factor: bool = False,
    ) -> None:
        self.machines = machines if machines is not None else fixture_machines()
        self.legacy = legacy
        self.username, self.password, self.organization = username, password, organization
        self.max_page = max_page
        self.two_factor = two_factor
        self.sessions: dict[str, dict[str, Any]] = {}  # cookie value -> {"csrf", "served"}
        self.expire_after: int | None = None  # a session dies after serving this many requests
        self.logins = 0
        self.logouts = 0
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route(LOGIN, self.login, methods=["POST"]),
            Route("/ams/shared/api/security/logout", self.logout, methods=["GET", "POST"]),
            Route("/api/inventory/machines", self.list_machines),
        ]

    def _version(self, request: Request) -> str | None:
        return request.headers.get("x-kace-api-version") or request.headers.get("x-dell-api-version")

    async def login(self, request: Request) -> Response:
        if not self.legacy and not self._version(request):
            # 12.1+: a client without a version header on the login is a pre-12.1 client expecting CSRF
            return kace_error("Missing required header x-kace-api-version", 400)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return kace_error("Invalid request body", 400)
        if (body.get("userName"), body.get("password")) != (self.username, self.password) or body.get(
            "organizationName", "Default"
        ) != self.organization:
            return kace_error("Invalid user name or password", 401)
        self.logins += 1
        sid = secrets.token_hex(12)
        csrf = secrets.token_hex(16) if self.legacy else None
        self.sessions[sid] = {"csrf": csrf, "served": 0}
        headers = {"x-dell-csrf-token": csrf} if csrf else {}
        response = JSONResponse({"result": "success"}, headers=headers)
        response.set_cookie(COOKIE, sid, path="/", secure=True, httponly=True)
        return response

    async def logout(self, request: Request) -> Response:
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        self.logouts += 1
        return JSONResponse({"result": "success"})

    def _session_problem(self, request: Request) -> Response | None:
        session = self.sessions.get(request.cookies.get(COOKIE, ""))
        if session is None:
            return kace_error("Session expired or invalid", 401)
        if self.legacy:
            if request.headers.get("x-dell-csrf-token") != session["csrf"]:
                return kace_error("Invalid CSRF token", 401)
            if not request.headers.get("x-dell-api-version"):
                return kace_error("Missing x-dell-api-version header", 400)
        elif not self._version(request):
            return kace_error("Missing required header x-kace-api-version", 400)
        if self.two_factor:
            return kace_error("Two factor authentication is required", 401)
        session["served"] += 1
        if self.expire_after is not None and session["served"] > self.expire_after:
            self.sessions.pop(request.cookies.get(COOKIE, ""), None)
            return kace_error("Session expired or invalid", 401)
        return None

    async def list_machines(self, request: Request) -> Response:
        problem = self._session_problem(request)
        if problem is not None:
            return problem
        if "json" not in request.headers.get("accept", ""):
            return Response("<Machines><Count>0</Count></Machines>", media_type="application/xml")
        q = request.query_params
        paging = q.get("paging", "")
        limit_m = re.search(r"limit (\d+)", paging)
        offset_m = re.search(r"offset (\d+)", paging)
        limit = int(limit_m.group(1)) if limit_m else 50
        offset = int(offset_m.group(1)) if offset_m else 0
        limit = min(limit or len(self.machines), self.max_page)
        with_software = "software" in q.get("shaping", "").lower()
        page = []
        for m in self.machines[offset : offset + limit]:
            m = copy.deepcopy(m)
            if not with_software:
                m.pop("Software", None)
            page.append(m)
        return JSONResponse({"Count": len(self.machines), "Warnings": [], "Machines": page})
