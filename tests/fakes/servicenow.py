"""Fake ServiceNow instance: the Table API and the OAuth token endpoint.

What it follows, per behaviour:

- Table API ``GET /api/now/table/{table}`` (servicenow.com/docs "Table API", Table - GET): the
  envelope ``{"result": [...]}``; ``sysparm_limit``/``sysparm_offset`` paging with the
  ``X-Total-Count`` header and a ``Link`` header of ``first``/``next``/``last`` URLs (ServiceNow's
  sample response, gist bryanbarnard/ee1d952604a11e0f0342; ServiceNow's own client PySNC
  ``pysnc/record.py`` reads X-Total-Count and pages by offset); a page may hold fewer rows than
  asked (``max_page``: the harder case); encoded queries (``a=b``, ``aINx,y``, ``^ORDERBYfield``);
  ``sysparm_fields`` (dot-walked names included; a name the table lacks is left out of the row,
  unverified); ``sysparm_display_value`` (``all``: every field as ``{"display_value", "value"}``,
  reference fields with ``link`` unless ``sysparm_exclude_reference_link=true``).
- errors: ``{"error": {"message", "detail"}, "status": "failure"}`` (401 "User Not Authenticated" /
  "Required to provide Auth information", 400 for an unknown table), as ServiceNow's REST API
  answers ("REST API HTTP response codes"; the same bodies quoted by integrators, e.g. Tangoe's
  ServiceNow API page). 429 is sent by the tests with ``Retry-After`` and ``X-RateLimit-*``
  headers (servicenow.com/docs "Inbound REST API rate limiting").
- auth: Basic, or ``POST /oauth_token.do`` (form: client_credentials or password grant) answering
  ``{"access_token", "refresh_token", "token_type": "Bearer", "expires_in"}``; a refused grant is
  401 ``{"error_description": "access_denied", "error": "server_error"}``, ServiceNow's own (odd)
  error body (servicenow.com/docs "OAuth inbound", "Client credentials").
"""

from __future__ import annotations

import base64
import itertools
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

LINK_TABLES = {
    "model": "cmdb_model",
    "assigned_to": "sys_user",
    "ci": "cmdb_ci",
    "location": "cmn_location",
    "manufacturer": "core_company",
    "model_id": "cmdb_model",
    "installed_on": "cmdb_ci",
}


def sn_error(status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"message": message, "detail": detail}, "status": "failure"}, status_code=status, headers=headers
    )


def field(value: str, shown: str | None = None) -> dict[str, str]:
    return {"value": value, "display_value": value if shown is None else shown}


def sys_id(n: int) -> str:
    return f"{n:032x}"


def laptop(n: int, ci: str | None = None) -> dict[str, Any]:
    """An alm_hardware asset (stored as field → {value, display_value})."""
    return {
        "sys_id": field(sys_id(n)),
        "sys_class_name": field("alm_hardware", "Hardware"),
        "asset_tag": field(f"P{1000000 + n}"),
        "serial_number": field(f"SN{n:05d}"),
        "display_name": field(f"P{1000000 + n} - Dell Inc. Latitude 7440"),
        "model": field("5f5520c9c0a8010e00a9714f2a172815", "Dell Inc. Latitude 7440"),
        "model_id": field("5f5520c9c0a8010e00a9714f2a172815", "Dell Inc. Latitude 7440"),
        "install_status": field("1", "In use"),
        "assigned_to": field("46d44a5fa9fe198101d3b5a9b8f6e4a1", "Jane Doe"),
        "cost": field("1299.0", "1,299.00"),
        "sys_created_on": field("2025-03-10 08:00:00", "2025-03-10 09:00:00"),
        "ci": field(ci, f"WKS-{n:04d}") if ci else field("", ""),
    }


def consumable(n: int) -> dict[str, Any]:
    return {
        "sys_id": field(sys_id(n)),
        "sys_class_name": field("alm_consumable", "Consumable"),
        "asset_tag": field(""),
        "display_name": field("USB-C Charger 65W"),
        "install_status": field("6", "In stock"),
        "ci": field(""),
    }


def computer(ci: str, n: int) -> dict[str, Any]:
    return {
        "sys_id": field(ci),
        "manufacturer": field("b7e7d7d8c0a8016900a5d7f291acce5c", "Dell Inc."),
        "model_number": field("Latitude 7440"),
        "operational_status": field("1", "Operational"),
        "hardware_status": field("installed", "Installed"),
        "ip_address": field(f"10.20.30.{n}"),
        "cpu_name": field("13th Gen Intel(R) Core(TM) i7-1365U"),
        "cpu_speed": field("1800", "1,800"),
        "cpu_count": field("1"),
        "os": field("Windows 11 Enterprise"),
        "os_version": field("10.0.22631"),
        "disk_space": field("476.94"),
        "ram": field("32768", "32,768"),
        "sys_created_on": field("2025-03-12 09:15:00", "2025-03-12 10:15:00"),
        "mac_address": field("b0:7b:25:aa:bb:cc"),
        "warranty_expiration": field("2028-03-01"),
        "model_id": field("5f5520c9c0a8010e00a9714f2a172815", "Dell Inc. Latitude 7440"),
        "name": field(f"WKS-{n:04d}"),
    }


class FakeServiceNow(FakeVendor):
    def __init__(
        self,
        *,
        username: str = "svc_oomnitza",
        password: str = "Passw0rd!",
        max_page: int = 10000,
        client_id: str = "oomnitza-client",
        client_secret: str = "s3cr3t-client",
        client_credentials_enabled: bool = True,
    ) -> None:
        self.username, self.password = username, password
        self.client_id, self.client_secret = client_id, client_secret
        self.client_credentials_enabled = client_credentials_enabled
        self.max_page = max_page
        self.tables: dict[str, list[dict[str, Any]]] = {
            "alm_asset": [],
            "alm_hardware": [],
            "cmdb_ci_computer": [],
            "cmdb_software_instance": [],
        }
        self.issued: list[str] = []
        self._ids = itertools.count(1)
        super().__init__()

    # -- data helpers ---------------------------------------------------------------------------
    def add_asset(self, asset: dict[str, Any], u_fields: dict[str, str] | None = None) -> None:
        self.tables["alm_asset"].append(asset)
        if asset["sys_class_name"]["value"] == "alm_hardware":
            row = dict(asset)
            row["sys_id"] = field(asset["sys_id"]["value"])
            for key, value in (u_fields or {}).items():
                row[key] = field(value)
            self.tables["alm_hardware"].append(row)

    def add_software(self, ci: str, name: str, version: str, table: str = "cmdb_software_instance") -> None:
        n = next(self._ids)
        if table == "cmdb_sam_sw_install":
            row = {
                "sys_id": field(sys_id(10**6 + n)),
                "installed_on": field(ci),
                "display_name": field(name),
                "version": field(version),
                "publisher": field("Acme"),
            }
        else:
            row = {
                "sys_id": field(sys_id(10**6 + n)),
                "installed_on": field(ci),
                "software.name": field(name),
                "software.version": field(version),
            }
        self.tables.setdefault(table, []).append(row)

    # -- routes ---------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/now/table/{table}", self.table),
            Route("/oauth_token.do", self.token, methods=["POST"]),
        ]

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            return header.removeprefix("Bearer ") in self.issued
        if header.startswith("Basic "):
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return header.removeprefix("Basic ") == expected
        return False

    async def token(self, request: Request) -> Response:
        form = await request.form()
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return JSONResponse({"error_description": "access_denied", "error": "server_error"}, status_code=401)
        grant = form.get("grant_type")
        if grant == "client_credentials" and not self.client_credentials_enabled:
            return JSONResponse({"error_description": "access_denied", "error": "server_error"}, status_code=401)
        if grant == "password" and (form.get("username"), form.get("password")) != (self.username, self.password):
            return JSONResponse({"error_description": "access_denied", "error": "server_error"}, status_code=401)
        if grant not in ("client_credentials", "password"):
            return JSONResponse(
                {"error_description": "unsupported_grant_type", "error": "server_error"}, status_code=400
            )
        token = f"sn-at-{len(self.issued)}"
        self.issued.append(token)
        return JSONResponse(
            {
                "access_token": token,
                "refresh_token": "sn-rt",
                "scope": "useraccount",
                "token_type": "Bearer",
                "expires_in": 1799,
            }
        )

    async def table(self, request: Request) -> Response:
        if not self._authorized(request):
            return sn_error(401, "User Not Authenticated", "Required to provide Auth information")
        name = request.path_params["table"]
        if name not in self.tables:
            return sn_error(400, f"Invalid table {name}")
        q = request.query_params
        rows = self._query(self.tables[name], q.get("sysparm_query", ""))
        total = len(rows)
        limit = min(int(q.get("sysparm_limit", 10000)), self.max_page)
        offset = int(q.get("sysparm_offset", 0))
        page = rows[offset : offset + limit]
        fields = [f for f in q.get("sysparm_fields", "").split(",") if f]
        mode = q.get("sysparm_display_value", "false")
        links = q.get("sysparm_exclude_reference_link", "false") != "true"
        body = [self._render(row, fields, mode, links) for row in page]
        headers = {"X-Total-Count": str(total)}
        base = f"{self.url}{request.url.path}"
        params = dict(q)
        parts = []
        for rel, off in (("first", 0), ("next", offset + limit), ("last", max(0, total - limit))):
            if rel == "next" and off >= total:
                continue
            parts.append(f'<{base}?{urlencode({**params, "sysparm_offset": off})}>;rel="{rel}"')
        headers["Link"] = ",".join(parts)
        return JSONResponse({"result": body}, headers=headers)

    def _render(self, row: dict[str, Any], fields: list[str], mode: str, links: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in fields or list(row):
            if key not in row:
                continue  # a field the table does not have
            cell = row[key]
            if mode == "all":
                value: Any = dict(cell)
                if links and key in LINK_TABLES and cell["value"]:
                    value["link"] = f"{self.url}/api/now/table/{LINK_TABLES[key]}/{cell['value']}"
            elif mode == "true":
                value = cell["display_value"]
            else:
                value = cell["value"]
                if links and key in LINK_TABLES and cell["value"]:
                    value = {
                        "link": f"{self.url}/api/now/table/{LINK_TABLES[key]}/{cell['value']}",
                        "value": cell["value"],
                    }
            out[key] = value
        return out

    @staticmethod
    def _query(rows: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
        order: str | None = None
        for term in [t for t in query.split("^") if t]:
            if term.startswith("ORDERBY"):
                order = term.removeprefix("ORDERBY")
            elif "IN" in term and "=" not in term:
                key, _, values = term.partition("IN")
                wanted = set(values.split(","))
                rows = [r for r in rows if r.get(key, field(""))["value"] in wanted]
            elif "=" in term:
                key, _, value = term.partition("=")
                rows = [r for r in rows if r.get(key, field(""))["value"] == value]
            else:
                raise ValueError(f"fake ServiceNow cannot read the query term {term!r}")
        if order:
            rows = sorted(rows, key=lambda r: r.get(order, field(""))["value"])
        return rows
