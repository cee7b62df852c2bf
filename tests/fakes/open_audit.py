"""Fake Open-AudIT, after Open-AudIT's own source (github.com/Opmantek/open-audit, tag
Open-AudIT_5.6.5, and Open-AudIT_4.4.2 for the older generation), checked against a real 5.6.5:

- Logon (``app/Controllers/Logon.php`` ``create``): form fields or ``username``/``password``
  headers; success prints the user as JSON with ``print_r`` and exits, so the body is JSON sent as
  ``text/html`` with the session cookie (``ci_session`` on 5.x, ``PHPSESSID`` on the oldest
  servers); missing or wrong credentials are an immediate 401 ``{"message":"Credentials required"}``.
- Sessions (``app/Filters/Session.php`` ``before``): a request without a live session sleeps 5 s
  (``expired_pause`` here, shortened) and redirects (302) to ``/logon``, JSON requests included;
  ``GET /logon`` is the HTML logon page. CodeIgniter's session file lock serves one session's
  requests one after another (a lock per session here).
- Device list (``Collections::collection``): ``limit``/``offset``, ``meta.filtered``/``total``; a
  page past the end is ``"data": false``; ``meta.total`` counts organisation-1 devices the user may
  not see (``hidden``), so it can overcount.
- Refusals (``app/Helpers/response_helper.php``): no permission on the collection, or a device of
  another organisation (or one deleted since), is answered with HTTP 200 and a body with no
  ``data``, ``"included": []``, ``"errors": "<text>"`` and ``meta.header`` 403 (the code echoes and
  exits before the status is sent).
- Device read (``Collections::read`` + ``DevicesModel::includedRead``): ``include`` takes ONE valid
  table name (``response_get_include``); anything else (``network,software`` included) is dropped
  and every table comes back (counted in ``all_tables_served``). ``included`` is keyed by table and
  holds only tables with rows, plus a blank ``rack_devices`` row that is always there. 5.x network
  rows have no IP: the ``ip`` table links ``mac``, ``ip`` and ``net_index``. ``sub_resource`` is
  ignored by 5.x: the device itself comes back.
- Generation "4" (``code_igniter/application/controllers/devices.php``): ``include`` takes a comma
  list and ``included`` is one flat list of rows typed ``network``, ``software`` …; ``sub_resource``
  works. Generation "3" (``legacy=True``): ``PHPSESSID``, no ``include``, ``sub_resource`` only,
  404 for an unknown device.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

API = "/open-audit/index.php"
VALID_INCLUDES = ("application", "bios", "disk", "ip", "memory", "network", "rack_devices", "software", "windows")
BLANK_RACK = {"rack_id": 0, "position": 0, "racks.name": "Not in a rack", "locations.name": "", "locations.id": 0}
FILLER_TABLES = ("bios", "disk", "memory", "windows")  # what "every table" adds (~70 KB on a real server)

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
# Network cards as 5.x stores them: no IP column (the ip table below carries the addresses).
WKS_NETWORK = [
    {
        "id": 299,
        "device_id": 17,
        "mac": "00:50:56:c0:00:08",
        "manufacturer": "VMware, Inc.",
        "description": "VMware Virtual Ethernet Adapter",
        "ip_enabled": "y",
        "net_index": "3",
    },
    {
        "id": 300,
        "device_id": 17,
        "mac": "f4:8c:50:11:22:33",
        "manufacturer": "Intel Corporate",
        "description": "Intel(R) Wi-Fi 6E AX211 160MHz",
        "ip_enabled": "y",
        "net_index": "7",
    },
    {
        "id": 301,
        "device_id": 17,
        "mac": "b0:7b:25:aa:bb:cc",
        "manufacturer": "Intel Corporate",
        "description": "Intel(R) Ethernet Connection (16) I219-LM",
        "ip_enabled": "y",
        "net_index": "12",
    },
]
WKS_IP = [
    {"id": 500, "device_id": 17, "mac": "00:50:56:c0:00:08", "net_index": "3", "ip": "192.168.56.1", "version": 4},
    {"id": 501, "device_id": 17, "mac": "f4:8c:50:11:22:33", "net_index": "7", "ip": "10.9.8.7", "version": 4},
    {"id": 502, "device_id": 17, "mac": "b0:7b:25:aa:bb:cc", "net_index": "12", "ip": "192.168.1.42", "version": 4},
]
WKS_SOFTWARE = [
    {
        "id": 9001,
        "device_id": 17,
        "name": "7-Zip 23.01 (x64)",
        "version": "23.01",
        "publisher": "Igor Pavlov",
        "location": "C:\\Program Files\\7-Zip\\",
    },
    {"id": 9002, "device_id": 17, "name": "", "version": "1.0", "publisher": "", "location": ""},
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


def refusal(message: str, collection: str = "devices", action: str = "read") -> dict[str, Any]:
    """response_helper.php's refusal body (sent with HTTP 200)."""
    return {
        "meta": {"collection": collection, "action": action, "header": 403},
        "links": {},
        "included": [],
        "logs": [],
        "errors": message,
    }


class FakeOpenAudit(FakeVendor):
    def __init__(
        self,
        devices: list[dict[str, Any]] | None = None,
        *,
        legacy: bool = False,
        generation: str = "5",
        username: str = "admin",
        password: str = "s3cret!",
        max_page: int = 1000,
        cookie_name: str | None = None,
        expired_pause: float = 0.2,
    ) -> None:
        self.devices = devices if devices is not None else [copy.deepcopy(WKS), device(23)]
        self.tables: dict[str, dict[int, list[dict[str, Any]]]] = {
            "network": {17: copy.deepcopy(WKS_NETWORK)},
            "ip": {17: copy.deepcopy(WKS_IP)},
            "software": {17: copy.deepcopy(WKS_SOFTWARE)},
        }
        self.generation = "3" if legacy else generation
        self.cookie_name = cookie_name  # overrides the cookie the generation would set
        self.username, self.password = username, password
        self.max_page = max_page
        self.expired_pause = expired_pause  # the real server sleeps 5 s before redirecting
        self.sessions: dict[str, int] = {}  # session id -> requests served with it
        self.locks: dict[str, asyncio.Lock] = {}
        self.expire_after: int | None = None  # a session dies after serving this many requests
        self.logins = 0
        self.vanish: set[int] = set()  # listed, but deleted before their detail is read
        self.forbidden: set[int] = set()  # listed (org 1 counts), but of an organisation the user cannot read
        self.hidden = 0  # devices meta.total counts that the user cannot see
        self.may_list = True  # the user's role may read devices
        self.all_tables_served = 0  # reads answered with every table (include missing or invalid)
        super().__init__()

    @property
    def legacy(self) -> bool:
        return self.generation == "3"

    @property
    def cookie(self) -> str:
        return self.cookie_name or ("PHPSESSID" if self.legacy else "ci_session")

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{API}/logon", self.logon, methods=["POST"]),
            Route(f"{API}/logon", self.logon_page, methods=["GET"]),
            Route(f"{API}/devices", self.list_devices),
            Route(f"{API}/devices/{{id:int}}", self.read_device),
        ]

    # -- session ------------------------------------------------------------------------------------

    async def logon(self, request: Request) -> Response:
        form = await request.form()
        user = str(form.get("username") or request.headers.get("username") or "")
        password = str(form.get("password") or request.headers.get("password") or "")
        if not user or not password or (user, password) != (self.username, self.password):
            return Response('{"message":"Credentials required"}', status_code=401, media_type="application/json")
        self.logins += 1
        session = secrets.token_hex(6)
        self.sessions[session] = 0
        user_json = '{"id":1,"name":"admin","full_name":"Administrator","org_id":1,"roles":["admin","org_admin"]}'
        response = HTMLResponse(user_json)  # print_r(json_encode($user)); exit; → text/html
        response.set_cookie(self.cookie, session, path="/", httponly=True)
        return response

    async def logon_page(self, request: Request) -> Response:
        return HTMLResponse("<!DOCTYPE html><html><body><form action='logon' method='post'></form></body></html>")

    async def _expired(self, request: Request) -> Response | None:
        session = request.cookies.get(self.cookie)
        if session in self.sessions:
            self.sessions[session] += 1
            if self.expire_after is None or self.sessions[session] <= self.expire_after:
                return None
            del self.sessions[session]
        if self.legacy:
            return JSONResponse({"message": "Not logged in"}, status_code=401)
        await asyncio.sleep(self.expired_pause)
        return RedirectResponse(f"{self.url}{API}/logon", status_code=302)

    async def _serialized(self, request: Request, handler: Any) -> Response:
        expired = await self._expired(request)
        if expired is not None:
            return expired
        lock = self.locks.setdefault(request.cookies.get(self.cookie, ""), asyncio.Lock())
        async with lock:  # CodeIgniter's session file lock
            return await handler(request)

    # -- devices ------------------------------------------------------------------------------------

    async def list_devices(self, request: Request) -> Response:
        return await self._serialized(request, self._list)

    async def _list(self, request: Request) -> Response:
        if not self.may_list:
            return JSONResponse(
                refusal(
                    "User Administrator requested to perform collection on devices, but has no permission to do so.",
                    action="collection",
                )
            )
        q = request.query_params
        limit = min(int(q.get("limit", 1000)), self.max_page)
        offset = int(q.get("offset", 0))
        page = self.devices[offset : offset + limit]
        data: Any = [
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
            "header": 200,
            "limit": limit,
            "offset": offset,
            "filtered": len(data),
            "total": len(self.devices) + self.hidden,
            "access_token": "f00dfeedcafe",
        }
        return JSONResponse({"meta": meta, "links": {}, "data": data or False, "included": [], "logs": []})

    async def read_device(self, request: Request) -> Response:
        return await self._serialized(request, self._read)

    async def _read(self, request: Request) -> Response:
        device_id = request.path_params["id"]
        found = next((d for d in self.devices if d["id"] == device_id and device_id not in self.vanish), None)
        q = request.query_params
        if self.legacy:
            if found is None:
                return JSONResponse({"errors": [{"code": "ERR-0007", "title": "Resource not found"}]}, status_code=404)
            sub = q.get("sub_resource")
            if sub in self.tables:
                rows = [self._typed(sub, r) for r in self.tables[sub].get(device_id, [])]
                return JSONResponse({"meta": {"collection": "devices", "sub_resource": sub}, "data": rows})
            return JSONResponse(self._device_body(found))
        if found is None or device_id in self.forbidden:
            return JSONResponse(refusal("User permission denied for devices to perform read on item because of OrgID."))
        if self.generation == "4":
            return JSONResponse(self._read_v4(found, q))
        body = self._device_body(found)
        include = q.get("include", "")
        if include not in VALID_INCLUDES:  # invalid or missing: '' → every table
            self.all_tables_served += 1
            wanted: tuple[str, ...] = (*self.tables, *FILLER_TABLES)
        else:
            wanted = (include,)
        included: dict[str, Any] = {}
        for table in wanted:
            rows = self._rows(table, device_id)
            if rows:
                included[table] = rows
        included["rack_devices"] = [dict(BLANK_RACK)]
        body["included"] = included
        return JSONResponse(body)

    def _read_v4(self, found: dict[str, Any], q: Any) -> dict[str, Any]:
        sub = q.get("sub_resource")
        if sub in self.tables:
            return {"meta": {"sub_resource": sub}, "data": [self._typed(sub, r) for r in self._rows(sub, found["id"])]}
        body = self._device_body(found)
        body["included"] = [
            self._typed(table, row)
            for table in q.get("include", "").split(",")
            if table in self.tables
            for row in self._rows(table, found["id"])
        ]
        return body

    def _rows(self, table: str, device_id: int) -> list[dict[str, Any]]:
        if table in FILLER_TABLES:
            return [{"id": i, "device_id": device_id, "padding": "x" * 400} for i in range(40)]
        return copy.deepcopy(self.tables.get(table, {}).get(device_id, []))

    @staticmethod
    def _typed(table: str, row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row.get("id"), "type": table, "attributes": dict(row)}

    def _device_body(self, found: dict[str, Any]) -> dict[str, Any]:
        return {
            "meta": {
                "collection": "devices",
                "action": "read",
                "header": 200,
                "id": found["id"],
                "filtered": 1,
                "total": len(self.devices),
            },
            "links": {},
            "data": [{"id": found["id"], "type": "devices", "attributes": copy.deepcopy(found)}],
        }
