"""Fake Workday RaaS: ``GET /ccx/service/customreport2/{tenant}/{owner}/{report}`` with HTTP Basic
(or a Bearer token from ``POST /ccx/oauth2/{tenant}/token``, refresh-token grant).

``format=json`` answers ``{"Report_Entry": [...]}`` (``application/json;charset=UTF-8``); no
``format`` answers the default XML (``<wd:Report_Data>``), as Workday does. Other query parameters
are report prompts: they keep the rows whose column of that name has that value. A wrong password
answers 401 with an empty body; an unknown report answers 500 with an XML ``wd:Error``.
"""

from __future__ import annotations

import base64
from typing import Any
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

TENANT = "acme"
OWNER = "ISU_Oomnitza"
REPORT = "Oomnitza_Workers"
REPORT_PATH = f"/ccx/service/customreport2/{TENANT}/{OWNER}/{REPORT}"
USERNAME = "ISU_Oomnitza"
PASSWORD = "Secr3t!"
CLIENT_ID = "NzY0ZmFrZS1jbGllbnQ"
CLIENT_SECRET = "wd-client-secret-value"
REFRESH_TOKEN = "wd-refresh-token-value"


def fixture_entries() -> list[dict[str, Any]]:
    """The fact sheet's emulator report."""
    return [
        {
            "Employee_ID": "21001",
            "Legal_Name_First_Name": "Priya",
            "Legal_Name_Last_Name": "Raman",
            "Email_-_Work": "priya.raman@acme.test",
            "Business_Title": "HR Partner",
            "Worker_Status": "Active",
            "Hire_Date": "2022-04-04",
            "Manager": "Dana Whitfield",
            "Work_Phones": [{"Phone": "+1 (415) 555-0142"}],
        },
        {
            "Employee_ID": "21002",
            "Legal_Name_First_Name": "Søren",
            "Legal_Name_Last_Name": "Kierkegård",
            "Email_-_Work": "soren.k@acme.test",
            "Business_Title": "Engineer",
            "Worker_Status": "Terminated",
            "Hire_Date": "2019-09-01",
            "Termination_Date": "2026-06-30",
        },
        {
            "Employee_ID": "21003",
            "Legal_Name_First_Name": "Tomás",
            "Legal_Name_Last_Name": "Ortega",
            "Worker_Status": "Active",
            "Hire_Date": "2026-10-01",
            "Work_Phones": [{"Phone": "+34 600 000 003"}, {"Phone": "+34 600 000 004"}],
        },
    ]


def workday_fault(message: str, status: int) -> Response:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><wd:Error xmlns:wd="urn:com.workday/bsvc">'
        f"<wd:Message>{escape(message)}</wd:Message></wd:Error>"
    )
    return Response(body, status_code=status, media_type="text/xml;charset=UTF-8")


def report_xml(entries: list[dict[str, Any]]) -> str:
    rows = "".join(
        "<wd:Report_Entry>"
        + "".join(f"<wd:{k}>{escape(str(v))}</wd:{k}>" for k, v in e.items() if not isinstance(v, list))
        + "</wd:Report_Entry>"
        for e in entries
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><wd:Report_Data xmlns:wd="urn:com.workday.report/{REPORT}">'
        f"{rows}</wd:Report_Data>"
    )


class FakeWorkday(FakeVendor):
    def __init__(self, entries: list[dict[str, Any]] | None = None) -> None:
        self.entries = entries if entries is not None else fixture_entries()
        self.username, self.password = USERNAME, PASSWORD
        self.issued: list[str] = []
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/ccx/service/customreport2/{tenant}/{owner}/{report}", self.report),
            Route("/ccx/oauth2/{tenant}/token", self.token, methods=["POST"]),
        ]

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            return header.removeprefix("Bearer ") in self.issued
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user in (self.username, f"{self.username}@{TENANT}") and password == self.password

    async def token(self, request: Request) -> Response:
        form = await request.form()
        if request.path_params["tenant"] != TENANT or form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("refresh_token") != REFRESH_TOKEN:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        token = f"wd-access-{len(self.issued)}"
        self.issued.append(token)
        return JSONResponse({"access_token": token, "token_type": "Bearer", "refresh_token": REFRESH_TOKEN})

    async def report(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(b"", status_code=401, headers={"WWW-Authenticate": 'Basic realm="Workday"'})
        p = request.path_params
        if (p["tenant"], p["owner"], p["report"]) != (TENANT, OWNER, REPORT):
            return workday_fault("Invalid report", 500)
        q = request.query_params
        rows = self.entries
        for prompt, value in q.items():
            if prompt != "format":
                rows = [r for r in rows if r.get(prompt) == value]
        fmt = q.get("format")
        if fmt == "json":
            return JSONResponse({"Report_Entry": rows}, media_type="application/json;charset=UTF-8")
        if fmt in (None, "simplexml"):
            return Response(report_xml(rows), media_type="text/xml;charset=UTF-8")
        return workday_fault(f"Invalid format: {fmt}", 400)
