"""Fake Open-AudIT: form login to ``/open-audit/index.php/logon`` setting ``ci_session`` (5.x) or
``PHPSESSID`` (legacy), the device list with ``limit``/``offset`` and ``meta.filtered``/``total``,
device details with ``?include=network,software`` (modern) or ``?sub_resource=`` (legacy; modern
servers ignore it), sessions that can expire after N requests, and the slow 401 of a bad password."""

from __future__ import annotations

import asyncio
import copy
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

API = "/open-audit/index.php"

WKS = {
    "id": 17,
    "uuid": "4C4C4544-0042-3510-8052-C4C04F4A4E32",
    "name": "WKS-0042",
    "ip": "192.168.1.42",
    "hostname": "wks-0042",
    "dns_hostname": "wks-0042",
    "domain": "corp.example",
    "fqdn": "wks-0042.corp.example",
    "dbus_identifier": "",
    "description": "Finance laptop",
    "type": "computer",
    "form_factor": "Laptop",
    "manufacturer": "Dell Inc.",
    "model": "Latitude 7440",
    "serial": "7XK2P93",
    "serial_imei": "",
    "serial_sim": "",
    "os_group": "Windows",
    "os_family": "Windows 11",
    "os_name": "Microsoft Windows 11 Enterprise",
    "os_version": "10.0.22631",
    "os_bit": 64,
    "os_installation_date": "2025-03-14",
    "memory_count": 33554432,
    "processor_count": 1,
    "storage_count": 1,
    "uptime": "345600",
    "environment": "production",
    "identification": "",
    "purchase_invoice": "",
    "purchase_order_number": "PO-88812",
    "warranty_expires": "2028-03-01",
    "end_of_life": "2000-01-01",
    "end_of_service": "2000-01-01",
    "first_seen": "2025-03-15 08:12:44",
    "last_seen": "2026-11-25 23:02:10",
}
WKS_NETWORK = [
    {
        "id": 300,
        "type": "network",
        "attributes": {
            "device_id": 17,
            "mac": "00:50:56:c0:00:08",
            "manufacturer": "VMware, Inc.",
            "description": "VMware Virtual Ethernet Adapter",
            "ip_enabled": "y",
        },
    },
    {
        "id": 301,
        "type": "network",
        "attributes": {
            "device_id": 17,
            "mac": "b0:7b:25:aa:bb:cc",
            "manufacturer": "Intel Corporate",
            "ip_enabled": "y",
        },
    },
]
WKS_SOFTWARE = [
    {
        "id": 9001,
        "type": "software",
        "attributes": {
            "name": "7-Zip 23.01 (x64)",
            "version": "23.01",
            "publisher": "Igor Pavlov",
            "location": "C:\\Program Files\\7-Zip\\",
        },
    },
    {"id": 9002, "type": "software", "attributes": {"name": "", "version": "1.0", "publisher": "", "location": ""}},
]


def device(i: int) -> dict[str, Any]:
    d = copy.deepcopy(WKS)
    d.update(
        id=i,
        name=f"SRV-{i:04d}",
        ip=f"10.0.0.{i % 250}",
        hostname=f"srv-{i:04d}",
        serial=f"SN{i:06d}",
        form_factor="",
        type="server",
        warranty_expires="2000-01-01",
        last_seen="2026-11-20 10:00:00",
    )
    return d


class FakeOpenAudit(FakeVendor):
    def __init__(
        self,
        devices: list[dict[str, Any]] | None = None,
        *,
        legacy: bool = False,
        username: str = "admin",
        password: str = "s3cret!",
        max_page: int = 1000,
        bad_password_delay: float = 0.0,
        cookie_name: str | None = None,
    ) -> None:
        self.devices = devices if devices is not None else [copy.deepcopy(WKS), device(23)]
        self.network: dict[int, list[dict[str, Any]]] = {17: copy.deepcopy(WKS_NETWORK)}
        self.software: dict[int, list[dict[str, Any]]] = {17: copy.deepcopy(WKS_SOFTWARE)}
        self.legacy = legacy  # PHPSESSID, no include=; sub_resource honoured
        self.cookie_name = cookie_name  # overrides the cookie the generation would set
        self.username, self.password = username, password
        self.max_page = max_page
        self.bad_password_delay = bad_password_delay  # the real server sleeps 5 s
        self.sessions: dict[str, int] = {}  # session id -> requests served with it
        self.expire_after: int | None = None  # a session dies after serving this many requests
        self.logins = 0
        self.vanish: set[int] = set()  # listed, but their detail is gone (404)
        super().__init__()

    @property
    def cookie(self) -> str:
        return self.cookie_name or ("PHPSESSID" if self.legacy else "ci_session")

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{API}/logon", self.logon, methods=["POST"]),
            Route(f"{API}/devices", self.list_devices),
            Route(f"{API}/devices/{{id:int}}", self.read_device),
        ]

    async def logon(self, request: Request) -> Response:
        form = await request.form()
        user = str(form.get("username") or request.headers.get("username") or "")
        password = str(form.get("password") or request.headers.get("password") or "")
        if not user or not password:
            return JSONResponse({"message": "Credentials required"}, status_code=401)
        if (user, password) != (self.username, self.password):
            await asyncio.sleep(self.bad_password_delay)
            return JSONResponse({"message": "Credentials required"}, status_code=401)
        self.logins += 1
        session = secrets.token_hex(6)
        self.sessions[session] = 0
        response = JSONResponse(
            {"id": 1, "name": "admin", "full_name": "Administrator", "org_id": 1, "roles": ["admin", "org_admin"]}
        )
        response.set_cookie(self.cookie, session, path="/", httponly=True)
        return response

    def _unauthorized(self, request: Request) -> Response | None:
        session = request.cookies.get(self.cookie)
        if session not in self.sessions:
            return JSONResponse({"message": "Not logged in"}, status_code=401)
        self.sessions[session] += 1
        if self.expire_after is not None and self.sessions[session] > self.expire_after:
            del self.sessions[session]
            return JSONResponse({"message": "Session expired"}, status_code=401)
        return None

    async def list_devices(self, request: Request) -> Response:
        denied = self._unauthorized(request)
        if denied:
            return denied
        q = request.query_params
        limit = min(int(q.get("limit", 1000)), self.max_page)
        offset = int(q.get("offset", 0))
        page = self.devices[offset : offset + limit]
        data = [
            {
                "id": d["id"],
                "type": "devices",
                "attributes": {"devices.id": d["id"], "devices.name": d["name"], "devices.ip": d["ip"]},
                "links": {"self": f"{API}/devices/{d['id']}"},
            }
            for d in page
        ]
        meta = {
            "collection": "devices",
            "action": "collection",
            "limit": limit,
            "offset": offset,
            "filtered": len(data),
            "total": len(self.devices),
            "access_token": "f00dfeedcafe",
        }
        return JSONResponse({"meta": meta, "data": data})

    async def read_device(self, request: Request) -> Response:
        denied = self._unauthorized(request)
        if denied:
            return denied
        device_id = request.path_params["id"]
        found = next((d for d in self.devices if d["id"] == device_id and device_id not in self.vanish), None)
        if found is None:
            return JSONResponse({"errors": [{"code": "ERR-0007", "title": "Resource not found"}]}, status_code=404)
        q = request.query_params
        sub = q.get("sub_resource")
        if self.legacy and sub in ("network", "software"):
            rows = (self.network if sub == "network" else self.software).get(device_id, [])
            return JSONResponse({"meta": {"collection": "devices", "sub_resource": sub}, "data": rows})
        body: dict[str, Any] = {
            "meta": {
                "collection": "devices",
                "action": "read",
                "id": device_id,
                "filtered": 1,
                "total": len(self.devices),
            },
            "data": [{"id": device_id, "type": "devices", "attributes": found}],
        }
        if not self.legacy and "include" in q:
            wanted = q["include"].split(",")
            body["included"] = {
                kind: [
                    row["attributes"]
                    for row in (self.network if kind == "network" else self.software).get(device_id, [])
                ]
                for kind in wanted
                if kind in ("network", "software")
            }
        return JSONResponse(body)
