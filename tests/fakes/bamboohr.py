"""Fake BambooHR API. Each behaviour and where it comes from (BambooHR/bhr-api-python, the official
SDK generated from BambooHR's OpenAPI description, unless said otherwise):

- Two URL forms: ``/api/gateway.php/{company}/v1/...`` (the gateway; ``api/manual_api.py``
  examples) and ``/api/v1/...`` on the company's own host (``README.md``: "All URIs are relative to
  https://companySubDomain.bamboohr.com"; ``employees_api.py`` resource paths).
- Auth: HTTP Basic, the API key as user name and any password (``AUTHENTICATION.md``: "the API key
  as an HTTP Basic Auth username with x as the password"); a wrong key is 401 with an empty body.
- ``GET …/employees/directory`` (``employees_api.py`` get_employees_directory): "By default only
  current (active) employees are returned; pass onlyCurrent=false to include terminated
  employees"; "Returns 403 if neither directory nor org-chart sharing is enabled"; "Returns 404 if
  the directory is empty" (an unknown company is 404 too here: BambooHR's answer to that is not
  documented, this is the harder reading since it looks like an empty directory); JSON only with
  ``Accept: application/json``, XML otherwise ("The response format is controlled by the Accept
  header").
- ``POST …/reports/custom`` (``reports_api.py`` request_custom_report): "The report includes all
  employees regardless of status (both Active and Inactive)"; ``onlyCurrent`` (default true):
  "Set to false to include future-dated employees"; the JSON body is recognised only with
  ``Content-Type: application/json`` exactly (else "400 Malformed XML"); ``format`` is
  case-insensitive; "Field IDs in the request that are unknown or that the caller does not have
  permission to view are silently omitted"; at most 400 fields.
- Errors carry ``X-BambooHR-Error-Message`` when BambooHR has a reason (documentation.bamboohr.com
  "Technical Overview", errors).
"""

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
        future: list[dict[str, Any]] | None = None,
    ) -> None:
        self.employees = employees if employees is not None else [DANA, ZOE]
        self.terminated = terminated if terminated is not None else []  # directory: only with onlyCurrent=false
        self.future = future if future is not None else []  # future-dated hires: reports with onlyCurrent=false
        self.company = company
        self.key = key
        self.directory_shared = True
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/gateway.php/{company}/v1/employees/directory", self.directory),
            Route("/api/gateway.php/{company}/v1/reports/custom", self.custom_report, methods=["POST"]),
            # The company's own host (acme.bamboohr.com): the company is the host name, any here.
            Route("/api/v1/employees/directory", self.directory),
            Route("/api/v1/reports/custom", self.custom_report, methods=["POST"]),
        ]

    def _refusal(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        key, password = "", ""
        if header.startswith("Basic "):
            key, _, password = base64.b64decode(header[6:]).decode().partition(":")
        if key != self.key or not password:
            return Response(b"", status_code=401, headers={"WWW-Authenticate": 'Basic realm="BambooHR API"'})
        if request.path_params.get("company", self.company) != self.company:
            return Response(b"", status_code=404, headers={"X-BambooHR-Error-Message": "Company not found"})
        return None

    async def directory(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if not self.directory_shared:
            return Response(b"", status_code=403)
        pool = list(self.employees)
        if request.query_params.get("onlyCurrent", "true").lower() == "false":
            pool += self.terminated
        if not pool:
            return Response(b"", status_code=404)
        if "application/json" not in request.headers.get("accept", ""):
            return Response(_xml_directory(pool), media_type="text/xml")
        return JSONResponse({"fields": FIELDS, "employees": pool})

    async def custom_report(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        q = request.query_params
        if q.get("format", "").upper() != "JSON":
            return Response(b"", status_code=400, headers={"X-BambooHR-Error-Message": "Invalid format"})
        if request.headers.get("content-type", "") != "application/json":
            return Response(b"", status_code=400, headers={"X-BambooHR-Error-Message": "Malformed XML"})
        try:
            wanted = json.loads(await request.body())["fields"]
        except (ValueError, KeyError, TypeError):
            return Response(b"", status_code=400, headers={"X-BambooHR-Error-Message": "Invalid report request"})
        if not isinstance(wanted, list) or len(wanted) > 400:
            return Response(b"", status_code=400, headers={"X-BambooHR-Error-Message": "Too many fields"})
        pool = [{**e, "status": "Active", "terminationDate": "0000-00-00"} for e in self.employees]
        pool += self.terminated  # active and inactive alike
        if q.get("onlyCurrent", "true").lower() == "false":
            pool += self.future
        known = {k for e in [*self.employees, *self.terminated, *self.future] for k in e} | {
            "status",
            "terminationDate",
        }
        wanted = [f for f in wanted if f in known]  # unknown field ids are silently left out
        rows = [{"id": e["id"], **{f: e.get(f) for f in wanted}} for e in pool]
        fields = [{"id": f, "type": "text", "name": f} for f in wanted]
        return JSONResponse({"title": "Oomnitza connector", "fields": fields, "employees": rows})
