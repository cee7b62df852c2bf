"""A fake SaaS for managed mode: cursor, Link-header and page-number listings, an XML listing,
detail and software calls, a session login.

It imitates no real product: "Fleetwise MDM" is the fictional SaaS of the managed-mode spec's
worked example (its ``X-Fleetwise-Key`` header, ``fw_live_123`` key and ``/v1/devices`` cursor
listing come from there), and the rest are the generic shapes a managed connector must handle:
a ``Link: <…>; rel="next"`` header (RFC 8288), ``?page=N`` with ``has_more``, a cursor in the
body, and a bearer session from ``POST /login``. Its errors (401 ``{"error": …}``, 404) are
likewise generic, not any vendor's.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

KEY = "fw_live_123"


def device(i: int) -> dict[str, Any]:
    return {
        "id": f"dv-{i}",
        "serial": f"C02XK{i}",
        "model": "MacBookPro18,3",
        "phone": f"555010{i}",
        "apps": [{"title": "Slack", "ver": "4.41"}, {"title": "Zoom", "ver": None}],
    }


class FakeSaas(FakeVendor):
    def __init__(self, count: int = 3, page_size: int = 2) -> None:
        self.devices = [device(i) for i in range(1, count + 1)]
        self.page_size = page_size
        self.sessions: set[str] = set()
        self.logins = 0
        self.detail_delay = 0.0  # seconds each detail answer takes (to observe concurrency)
        self.details_in_flight = 0
        self.max_details_in_flight = 0
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/login", self.login, methods=["POST"]),
            Route("/v1/devices", self.cursor_list),
            Route("/v1/devices/{id}", self.detail),
            Route("/v1/devices/{id}/apps", self.apps),
            Route("/v2/devices", self.link_list),
            Route("/v3/devices", self.page_list),
            Route("/xml/devices", self.xml_list),
        ]

    def expire_sessions(self) -> None:
        self.sessions.clear()

    def _authorized(self, request: Request) -> bool:
        if request.headers.get("x-fleetwise-key") == KEY or request.query_params.get("api_key") == KEY:
            return True
        return request.headers.get("authorization", "").removeprefix("Bearer ") in self.sessions

    def _denied(self, request: Request) -> Response | None:
        if not self._authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return None

    async def login(self, request: Request) -> Response:
        body = await request.json()
        if body != {"username": "svc", "password": "s3ss10n-pw"}:
            return JSONResponse({"error": "bad credentials"}, status_code=401)
        token = secrets.token_hex(8)
        self.sessions.add(token)
        self.logins += 1
        return JSONResponse({"access_token": token}, headers={"X-Session-Token": token})

    async def cursor_list(self, request: Request) -> Response:
        if denied := self._denied(request):
            return denied
        size = int(request.query_params.get("per_page", self.page_size))
        start = int(request.query_params.get("cursor", "c0")[1:])
        page = self.devices[start : start + size]
        nxt = f"c{start + size}" if start + size < len(self.devices) else None
        return JSONResponse(
            {"devices": [{"id": d["id"], "name": d["model"]} for d in page], "paging": {"next_cursor": nxt}}
        )

    async def link_list(self, request: Request) -> Response:
        if denied := self._denied(request):
            return denied
        page_no = int(request.query_params.get("page", "1"))
        start = (page_no - 1) * self.page_size
        page = self.devices[start : start + self.page_size]
        response = JSONResponse(page)
        if start + self.page_size < len(self.devices):
            response.headers["link"] = f'<{self.url}/v2/devices?page={page_no + 1}>; rel="next"'
        return response

    async def page_list(self, request: Request) -> Response:
        if denied := self._denied(request):
            return denied
        page_no = int(request.query_params.get("page", "1"))
        start = (page_no - 1) * self.page_size
        page = self.devices[start : start + self.page_size]
        return JSONResponse({"items": page, "has_more": start + self.page_size < len(self.devices)})

    async def xml_list(self, request: Request) -> Response:
        if denied := self._denied(request):
            return denied
        rows = "".join(
            f"<device><serial>{d['serial']}</serial><model>{d['model']}</model></device>" for d in self.devices
        )
        return Response(f"<devices>{rows}</devices>", media_type="application/xml")

    async def detail(self, request: Request) -> Response:
        if denied := self._denied(request):
            return denied
        found = next((d for d in self.devices if d["id"] == request.path_params["id"]), None)
        self.details_in_flight += 1
        self.max_details_in_flight = max(self.max_details_in_flight, self.details_in_flight)
        try:
            await asyncio.sleep(self.detail_delay)
        finally:
            self.details_in_flight -= 1
        if found is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(found)

    async def apps(self, request: Request) -> Response:
        if denied := self._denied(request):
            return denied
        return JSONResponse({"apps": [{"title": "Chrome", "ver": "130"}]})
