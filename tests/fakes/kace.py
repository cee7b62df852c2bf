"""Fake Quest KACE SMA: the JSON login at ``/ams/shared/api/security/login`` setting the ``kboxid``
session cookie, in both generations:

- ``legacy=True`` (SMA 12.0 and older): the login answers ``x-dell-csrf-token``; every API call must
  echo it and carry ``x-dell-api-version`` (the cookie holds the token the header is checked against);
- ``legacy=False`` (SMA 12.1+): the login itself must carry ``x-kace-api-version`` (or, for old
  clients, ``x-dell-api-version``), no CSRF token is returned, and every call needs the version header.

``/api/inventory/machines`` understands ``shaping`` and ``paging=limit N offset M`` and answers
``{"Count", "Warnings", "Machines"}``. Sessions can expire after N requests; an account can be
flagged as needing two-factor verification (every call then answers 401).
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
