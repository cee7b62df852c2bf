"""Fake BambooHR API gateway: ``/api/gateway.php/{company}/v1/employees/directory`` and
``/reports/custom`` behind HTTP Basic (API key as user name, any non-empty password). JSON only with
``Accept: application/json`` (XML otherwise, as BambooHR does); 401 with ``WWW-Authenticate`` and
an empty body for a wrong key; 403 (empty body) when the directory is not shared; 404 for an empty
directory or an unknown company."""

from __future__ import annotations

import base64
import json
from typing import Any
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

COMPANY = "acme"
KEY = "k3yF4ke0123456789abcdef"

FIELDS = [
    {"id": "displayName", "type": "text", "name": "Display name"},
    {"id": "firstName", "type": "text", "name": "First name"},
    {"id": "lastName", "type": "text", "name": "Last name"},
    {"id": "jobTitle", "type": "list", "name": "Job title"},
    {"id": "mobilePhone", "type": "text", "name": "Mobile phone"},
    {"id": "workEmail", "type": "email", "name": "Work Email"},
    {"id": "department", "type": "list", "name": "Department"},
    {"id": "supervisor", "type": "text", "name": "Supervisor"},
]
DANA = {
    "id": "101",
    "displayName": "Dana Whitfield",
    "firstName": "Dana",
    "lastName": "Whitfield",
    "preferredName": None,
    "jobTitle": "IT Manager",
    "workPhone": "+1 801 555 0101",
    "mobilePhone": "+1 801 555 0199",
    "workEmail": "dana.whitfield@acme-fake.com",
    "department": "IT",
    "location": "Lindon, Utah",
    "division": None,
    "supervisor": "Morgan Lee",
    "photoUploaded": False,
    "photoUrl": "https://images.example/photo_placeholder.png",
    "canUploadPhoto": 0,
}
ZOE = {
    "id": "102",
    "displayName": "Zoë Ångström",
    "firstName": "Zoë",
    "lastName": "Ångström",
    "preferredName": "Zo",
    "jobTitle": "Engineer",
    "workPhone": None,
    "mobilePhone": None,
    "workEmail": None,
    "department": "R&D",
    "location": "Remote",
    "division": "Product",
    "supervisor": "Dana Whitfield",
    "photoUploaded": True,
    "photoUrl": "https://images.example/102.jpg",
    "canUploadPhoto": 1,
}


def employee(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(200 + i),
        "displayName": f"Emp{i} Park",
        "firstName": f"Emp{i}",
        "lastName": "Park",
        "preferredName": None,
        "jobTitle": "Analyst",
        "workPhone": None,
        "mobilePhone": f"+1 801 555 {i:04d}",
        "workEmail": f"emp{i}@acme-fake.com",
        "department": "Finance",
        "location": "Remote",
        "division": None,
        "supervisor": "Dana Whitfield",
        "photoUploaded": False,
        "photoUrl": None,
        "canUploadPhoto": 0,
        **extra,
    }


def _xml_directory(employees: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<employee id="{escape(str(e["id"]))}">'
        + "".join(f'<field id="{k}">{escape(str(v))}</field>' for k, v in e.items() if k != "id" and v is not None)
        + "</employee>"
        for e in employees
    )
    fields = "".join(f'<field id="{f["id"]}" type="{f["type"]}">{escape(f["name"])}</field>' for f in FIELDS)
    return f'<?xml version="1.0"?>\n<directory><fieldset>{fields}</fieldset><employees>{rows}</employees></directory>'


class FakeBambooHR(FakeVendor):
    def __init__(
        self,
        employees: list[dict[str, Any]] | None = None,
        company: str = COMPANY,
        key: str = KEY,
        terminated: list[dict[str, Any]] | None = None,
    ) -> None:
        self.employees = employees if employees is not None else [DANA, ZOE]
        self.terminated = terminated if terminated is not None else []  # only in reports with onlyCurrent=false
        self.company = company
        self.key = key
        self.directory_shared = True
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/gateway.php/{company}/v1/employees/directory", self.directory),
            Route("/api/gateway.php/{company}/v1/reports/custom", self.custom_report, methods=["POST"]),
        ]

    def _refusal(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        key, password = "", ""
        if header.startswith("Basic "):
            key, _, password = base64.b64decode(header[6:]).decode().partition(":")
        if key != self.key or not password:
            return Response(b"", status_code=401, headers={"WWW-Authenticate": 'Basic realm="BambooHR API"'})
        if request.path_params["company"] != self.company:
            return Response(b"", status_code=404, headers={"X-BambooHR-Error-Message": "Company not found"})
        return None

    async def directory(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if not self.directory_shared:
            return Response(b"", status_code=403)
        if not self.employees:
            return Response(b"", status_code=404)
        if "application/json" not in request.headers.get("accept", ""):
            return Response(_xml_directory(self.employees), media_type="text/xml")
        return JSONResponse({"fields": FIELDS, "employees": self.employees})

    async def custom_report(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        q = request.query_params
        if q.get("format", "").upper() != "JSON":
            return Response(b"", status_code=400, headers={"X-BambooHR-Error-Message": "Invalid format"})
        try:
            wanted = json.loads(await request.body())["fields"]
        except (ValueError, KeyError, TypeError):
            return Response(b"", status_code=400, headers={"X-BambooHR-Error-Message": "Invalid report request"})
        pool = [{**e, "status": "Active", "terminationDate": "0000-00-00"} for e in self.employees]
        if q.get("onlyCurrent", "true").lower() == "false":
            pool += self.terminated
        rows = [{"id": e["id"], **{f: e.get(f) for f in wanted}} for e in pool]
        fields = [{"id": f, "type": "text", "name": f} for f in wanted]
        return JSONResponse({"title": "Oomnitza connector", "fields": fields, "employees": rows})
