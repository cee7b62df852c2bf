"""Fake Tanium Server: session login, API tokens and the Asset module's asset listing.

What it follows, per behaviour (Tanium's Asset API reference itself needs a customer login):

- auth: every call carries a ``session`` header, either an API token with its ``token-`` prefix or
  the session string of ``POST /api/v2/session/login`` (``{"data": {"session": ...}}``)
  (developer.tanium.com/site/global/docs/how_tos/auth/index.gsp "Authentication Methods";
  docs.tanium.com/platform_user/platform_user/console_api_tokens.html). A rejected session or token
  is 403 with a short JSON body; sessions expire after N calls here (Tanium expires idle sessions);
  ``/api/v2/session/logout`` ends one.
- paging: ``GET /plugin/products/asset/v1/assets?limit&minimumAssetId[&viewId]`` answers
  ``{"data": [...], "meta": {"nextAssetId": n, "endOfReader": bool}}``, keyset on the asset id,
  ``endOfReader`` true on the last page (as the Axonius ``tanium_asset_adapter`` reads it, in
  hshmilov/mongomock adapters/tanium_asset_adapter/connection.py, and a Tanium Cloud connector that
  reports checking it live). The server may send fewer than ``limit`` (``max_page``: the harder case).
  ``end_of_reader=False`` plays an older server without the flag (then an empty page ends the list).
- record shape: Asset attribute names at the top level (``computer_name``, ``os_platform``,
  ``ci_installed_application`` [{name, version, vendor}], ``ci_network_adapter`` [{mac_address}]),
  as the same integrations read them; a view (``viewId``) returns only its attributes, an unknown
  view is 404 (status unverified).
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

ASSETS = "/plugin/products/asset/v1/assets"
API_TOKEN = "token-0123456789abcdef"

WKS = {
    "id": 1001,
    "computer_name": "WKS-0042.corp.example",
    "serial_number": "7XK2P93",
    "manufacturer": "Dell Inc.",
    "model": "Latitude 7440",
    "os_platform": "Windows",
    "os_name": "Windows 11 Enterprise",
    "ip_address": "10.20.30.42",
    "last_logged_in_user": "CORP\\jdoe",
    "ram": "32768 MB",
    "ci_installed_application": [
        {"name": "7-Zip 23.01 (x64)", "version": "23.01", "vendor": "Igor Pavlov"},
        {"name": "Microsoft Edge", "version": "131.0.2903.70", "vendor": "Microsoft Corporation"},
        {"version": "1.0", "vendor": "nameless"},  # malformed: skipped, not fatal
    ],
    "ci_network_adapter": [{"mac_address": "b0:7b:25:aa:bb:cc", "name": "Intel(R) Wi-Fi 6E AX211"}],
}
DB = {
    "id": 1002,
    "computer_name": "srv-db-01.corp.example",
    "serial_number": "VMware-42 21 aa bb",
    "manufacturer": "VMware, Inc.",
    "model": "VMware7,1",
    "os_platform": "Linux",
    "os_name": "Red Hat Enterprise Linux 9.4",
    "ip_address": "10.1.0.21",
    "ci_installed_application": None,
}
MAC = {"id": 1003, "computer_name": "mac-0007.corp.example", "serial_number": "C02FAKE0MD6R", "os_platform": "Mac"}


def asset(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "computer_name": f"vm-{i}.corp.example",
        "serial_number": f"SN{i}",
        "os_platform": "Linux",
        "ci_installed_application": [{"name": "openssl", "version": "3.0.7"}],
    }


class FakeTanium(FakeVendor):
    def __init__(
        self,
        assets: list[dict[str, Any]] | None = None,
        *,
        username: str = "svc_oomnitza",
        password: str = "Passw0rd!",
        domain: str = "",
        max_page: int = 100,
        views: dict[str, tuple[str, ...]] | None = None,
        end_of_reader: bool = True,
    ) -> None:
        self.assets = (
            assets
            if assets is not None
            else [copy.deepcopy(WKS), copy.deepcopy(DB), copy.deepcopy(MAC), asset(1004), asset(1005)]
        )
        self.username, self.password, self.domain = username, password, domain
        self.max_page = max_page
        self.end_of_reader = end_of_reader
        self.views = views if views is not None else {"12": ("id", "computer_name", "serial_number")}
        self.sessions: dict[str, int] = {}  # session -> calls served
        self.expire_after: int | None = None
        self.issued = 0
        self.logged_out: list[str] = []
        self.next_id_override: Any = ...  # replace meta.nextAssetId (a broken server)
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v2/session/login", self.login, methods=["POST"]),
            Route("/api/v2/session/logout", self.logout, methods=["POST"]),
            Route(ASSETS, self.list_assets),
        ]

    async def login(self, request: Request) -> Response:
        body = await request.json()
        if (body.get("username"), body.get("password"), body.get("domain", "")) != (
            self.username,
            self.password,
            self.domain,
        ):
            return JSONResponse({"text": "Unauthorized: invalid username or password"}, status_code=401)
        self.issued += 1
        session = f"{self.issued}-2345-6789abcdef0123456789abcdef"
        self.sessions[session] = 0
        return JSONResponse({"data": {"session": session}})

    async def logout(self, request: Request) -> Response:
        session = request.headers.get("session", "")
        self.sessions.pop(session, None)
        self.logged_out.append(session)
        return JSONResponse({"data": {}})

    def _denied(self, request: Request) -> Response | None:
        session = request.headers.get("session", "")
        if session == API_TOKEN:
            return None
        if session not in self.sessions:
            return JSONResponse({"text": "Forbidden: invalid or expired session"}, status_code=403)
        self.sessions[session] += 1
        if self.expire_after is not None and self.sessions[session] > self.expire_after:
            del self.sessions[session]
            return JSONResponse({"text": "Forbidden: invalid or expired session"}, status_code=403)
        return None

    async def list_assets(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied:
            return denied
        q = request.query_params
        limit = min(int(q.get("limit", 100)), self.max_page)
        minimum = int(q.get("minimumAssetId", 1))
        view = q.get("viewId")
        if view is not None and view not in self.views:
            return JSONResponse({"text": f"view {view} not found"}, status_code=404)
        remaining = [copy.deepcopy(a) for a in sorted(self.assets, key=lambda a: a["id"]) if a["id"] >= minimum]
        page = remaining[:limit]
        if view is not None:
            page = [{k: v for k, v in a.items() if k in self.views[view]} for a in page]
        next_id = page[-1]["id"] + 1 if page else minimum
        meta: dict[str, Any] = {"nextAssetId": next_id}
        if self.end_of_reader:
            meta["endOfReader"] = len(remaining) <= limit
        if self.next_id_override is not ...:
            meta = {} if self.next_id_override is None else {"nextAssetId": self.next_id_override}
        return JSONResponse({"data": page, "meta": meta})
