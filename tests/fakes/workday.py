"""Fake Workday Report-as-a-Service (RaaS). Each behaviour and where it comes from; Workday's own
reference is behind a Community login, so the public sources are Workday's open-source clients
and integrators' guides:

- Report: ``GET /ccx/service/customreport2/{tenant}/{owner}/{report}`` (the URL of *Actions → Web
  Service → View URLs*; Workday/raas-python ``raas/raas.py``). ``format=json`` answers
  ``{"Report_Entry": [...]}`` in one response, no paging (raas.py reads ``r.json()["Report_Entry"]``);
  no ``format`` answers the default XML ``<wd:Report_Data>``. Other query parameters are report
  prompts ("Prompts behave like request parameters", workato/docs ``connectors/workday/
  workday_raas.md``): they keep the rows whose column of that name has that value.
- Auth: HTTP Basic with an Integration System User (also as ``user@tenant``), or a Bearer token.
- Token: ``POST /ccx/oauth2/{tenant}/token``, form body ``grant_type=refresh_token``,
  ``refresh_token``, ``client_id``, ``client_secret`` (raas.py and Workday/prism-python
  ``prism/prism.py`` ``create_bearer_token``); the answer has ``access_token``, ``token_type`` and
  ``refresh_token`` but no ``expires_in`` (prism.py renews after 15 minutes, which suggests the
  lifetime is short and unstated). Tokens expire after ``token_lifetime`` seconds; ``expire_tokens()``
  ends them early. Errors follow RFC 6749 (``invalid_client`` 401, ``invalid_grant`` 400):
  unverified, as is the body of a refused Bearer token (401, empty here).
- Errors: a wrong password is 401 with an empty body; a report that does not exist or cannot run
  is 500 with an XML body (``error_style = "xml"``: ``<wd:Error><wd:Message>``; ``"soap"``: a SOAP
  fault with ``faultstring``, the shape of Workday's web services) or JSON (``"json"``: ``{"error",
  "errors": [{"error", "location"}]}``, Workday's REST API shape). Which one RaaS sends is not
  documented publicly; the source reads all three.
"""

from __future__ import annotations

import base64
import time
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


def workday_fault(message: str, status: int, style: str = "xml") -> Response:
    if style == "json":
        body = {"error": message, "errors": [{"error": message, "location": "report"}]}
        return JSONResponse(body, status_code=status)
    if style == "soap":
        text = (
            '<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope '
            'xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
            '<SOAP-ENV:Fault xmlns:wd="urn:com.workday/bsvc"><faultcode>SOAP-ENV:Client.validationError</faultcode>'
            f"<faultstring>{escape(message)}</faultstring></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        )
        return Response(text, status_code=status, media_type="text/xml;charset=UTF-8")
    text = (
        f'<?xml version="1.0" encoding="UTF-8"?><wd:Error xmlns:wd="urn:com.workday/bsvc">'
        f"<wd:Message>{escape(message)}</wd:Message></wd:Error>"
    )
    return Response(text, status_code=status, media_type="text/xml;charset=UTF-8")


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
        self.expires: dict[str, float] = {}  # access token -> epoch it stops working
        self.token_lifetime = 900.0
        self.error_style = "xml"
        super().__init__()

    def expire_tokens(self) -> None:
        self.expires = dict.fromkeys(self.expires, 0.0)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/ccx/service/customreport2/{tenant}/{owner}/{report}", self.report),
            Route("/ccx/oauth2/{tenant}/token", self.token, methods=["POST"]),
        ]

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            return time.time() < self.expires.get(header.removeprefix("Bearer "), 0.0)
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
        self.expires[token] = time.time() + self.token_lifetime
        return JSONResponse({"access_token": token, "token_type": "Bearer", "refresh_token": REFRESH_TOKEN})

    async def report(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response(b"", status_code=401, headers={"WWW-Authenticate": 'Basic realm="Workday"'})
        p = request.path_params
        if (p["tenant"], p["owner"], p["report"]) != (TENANT, OWNER, REPORT):
            return workday_fault("Invalid report", 500, self.error_style)
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
        return workday_fault(f"Invalid format: {fmt}", 400, self.error_style)
