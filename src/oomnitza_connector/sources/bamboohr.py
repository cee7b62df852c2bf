"""``[bamboohr]``: BambooHR employees, one user record per employee.

Two URL forms reach the same API: the gateway, ``https://api.bamboohr.com/api/gateway.php/{company}/v1``
(the seed's ``url`` plus ``system_name``), and the company's own host,
``https://{company}.bamboohr.com/api/v1`` (BambooHR's current SDK, BambooHR/bhr-api-python).

Default (as the seed): the employee directory, ``GET …/employees/directory``, one call, current
employees only (BambooHR's ``onlyCurrent`` defaults to true there), the fields the company shows
in its directory. Opt-in (``mode = report``): a custom report, ``POST …/reports/custom?format=JSON``
with the fields in ``report_fields`` plus every field the merged mapping names (BambooHR leaves
out unknown ones). A custom report returns active and inactive (terminated) employees alike;
``only_current = false`` (the default in that mode) adds the future-dated hires.

Auth is HTTP Basic with the API key as user name and ``x`` as password. ``Accept:
application/json`` is always sent (BambooHR answers XML otherwise). Outcomes: 401 = wrong key (one
line, not retried); 403 = the directory is not shared with the key's user (one line, not retried);
404 = an error naming ``system_name`` and ``url`` (BambooHR answers 404 for an unknown company and
for an empty directory alike, and an unattended run must not report an empty success for a typo);
429 and 503 are retried honouring ``Retry-After`` (BambooHR's throttle signal), other 5xx with
backoff. BambooHR's ``X-BambooHR-Error-Message`` header is shown when present.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote, urlsplit

from ..auth import basic
from ..errors import SourceError
from ..http import HttpAuthError, HttpError, decode_json, safe_url
from ..settings import BOOL, List, Setting, Url
from .base import BadRecord, Record, UsersSource

log = logging.getLogger(__name__)

GATEWAY = "/api/gateway.php"
DEFAULT_URL = "https://api.bamboohr.com" + GATEWAY
MAX_FIELDS = 400  # bhr-api-python reports_api.py: "The maximum number of fields per request is 400"
REPORT_FIELDS = (
    "id,employeeNumber,displayName,firstName,lastName,preferredName,jobTitle,workEmail,homeEmail,workPhone,"
    "mobilePhone,department,division,location,supervisor,supervisorEmail,status,employmentHistoryStatus,"
    "hireDate,terminationDate"
)


def vendor_message(exc: HttpError) -> str:
    header = exc.response.headers.get("x-bamboohr-error-message", "") if exc.response is not None else ""
    return f": {header.strip()}" if header.strip() else ""


class BambooHR(UsersSource):
    module = "bamboohr"
    mapping_name = "BambooHR"
    summary = "BambooHR employees (directory or custom report)"
    settings = (
        Setting(
            "url",
            DEFAULT_URL,
            kind=Url(),
            help=(
                "the BambooHR API: the gateway `https://api.bamboohr.com/api/gateway.php` (with "
                "`system_name` appended: `…/gateway.php/acme/v1`), or your company's own host "
                "`https://acme.bamboohr.com/api/v1` (or just `https://acme.bamboohr.com`), the form "
                "BambooHR's current SDK uses; a proxy without a path gets the gateway path, one ending in"
                " `/api/v1` is used as it is"
            ),
        ),
        Setting(
            "system_name",
            None,
            example="YOUR BambooHR SYSTEM NAME",
            help="your company's BambooHR subdomain: `acme` for `acme.bamboohr.com`",
        ),
        Setting("api_token", None, example="YOUR BambooHR API TOKEN", secret=True, help="a BambooHR API key"),
        *UsersSource.role_settings,
        Setting(
            "mode",
            "directory",
            choices=("directory", "report"),
            help=(
                "`directory`: `GET …/employees/directory`, current employees, with the fields your "
                "company shows in its directory; `report`: `POST …/reports/custom?format=JSON` with "
                "`report_fields`"
            ),
        ),
        Setting(
            "report_fields",
            REPORT_FIELDS,
            kind=List(),
            help=(
                "`mode = report`: the BambooHR field names to request; every field a mapping reads (the "
                "mapping stored in Oomnitza included) is added, at most 400 fields; BambooHR leaves out "
                "names it does not know and fields the key may not read"
            ),
        ),
        Setting(
            "only_current",
            "false",
            kind=BOOL,
            help=(
                "`mode = report`: BambooHR's `onlyCurrent`. A custom report always returns active and "
                "terminated employees (with `status` and `terminationDate`); `false` also returns "
                "employees whose hire date is still to come, `true` leaves them out"
            ),
        ),
    )
    default_mappings = {
        "USER": {"source": "workEmail"},
        "FIRST_NAME": {"source": "firstName"},
        "LAST_NAME": {"source": "lastName"},
        "EMAIL": {"source": "workEmail"},
        "PHONE": {"source": "mobilePhone"},
        "POSITION": {"source": "jobTitle"},
        "PERMISSIONS_ID": {"setting": "default_role"},
    }

    def validate(self) -> Iterator[str]:
        company = self.setting("system_name").strip()
        if any(c in company for c in "./: "):
            yield f"[{self.name}] system_name is the company subdomain only (acme for acme.bamboohr.com)"
        if self.setting("mode") == "report" and not self.fields:
            yield f"[{self.name}] report_fields is empty; list the BambooHR fields to request"

    @property
    def fields(self) -> list[str]:
        return [f.strip() for f in self.setting("report_fields").split(",") if f.strip()]

    def report_fields(self) -> list[str]:
        """``report_fields`` plus the field each mapping (the merged one) reads; at most 400 (BambooHR's cap)."""
        wanted = list(self.fields)
        for source in self.mapped_sources():
            head = source.split(".", 1)[0].strip()
            if head:
                wanted.append(head)
        unique = list(dict.fromkeys(wanted))
        if len(unique) > MAX_FIELDS:
            log.warning(
                "[%s] %d report fields; BambooHR takes %d, the rest are left out", self.name, len(unique), MAX_FIELDS
            )
        return unique[:MAX_FIELDS]

    @property
    def base(self) -> str:
        """The API root: ``https://{company}.bamboohr.com/api/v1`` (the company's host, as the current SDK
        uses it) or ``…/api/gateway.php/{company}/v1`` (the gateway of the seed, also the form for
        proxies given without a path)."""
        url = self.setting("url").strip().rstrip("/")
        company = self.setting("system_name").strip()
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if url.endswith("/api/v1"):
            return url
        if GATEWAY not in parts.path and host.endswith(".bamboohr.com") and host != "api.bamboohr.com":
            return f"{url}/api/v1"  # https://acme.bamboohr.com
        if GATEWAY in parts.path:
            url = url[: url.index(GATEWAY) + len(GATEWAY)]
        else:
            url = url.removesuffix("/v1").removesuffix(f"/{company}") + GATEWAY
        return f"{url}/{quote(company)}/v1"

    async def pages(self) -> AsyncIterator[list[Record]]:
        name = f"[{self.name}]"
        report = self.setting("mode") == "report"
        headers = {"Accept": "application/json"}
        async with self.http(base_url=self.base, headers=headers, auth=basic(self.setting("api_token"), "x")) as http:
            try:
                if report:
                    query = {"format": "JSON", "onlyCurrent": str(self.section.flag("only_current")).lower()}
                    body = {"title": "Oomnitza connector", "fields": self.report_fields()}
                    response = await http.request("POST", "/reports/custom", params=query, json=body)
                else:
                    response = await http.request("GET", "/employees/directory")
            except HttpAuthError as exc:
                if exc.status == 403:
                    raise SourceError(
                        f"{name} BambooHR refused the employee directory (403{vendor_message(exc)}): "
                        "it is not shared company-wide and the API key's user has no access to it; "
                        "share the directory or use a key of a user who can see it"
                    ) from None
                raise SourceError(
                    f"{name} BambooHR rejected the API key ({exc.status}{vendor_message(exc)}): check api_token"
                ) from None
            except HttpError as exc:
                if exc.status == 404:
                    raise SourceError(
                        f"{name} BambooHR answered 404 for {safe_url(self.base)}{vendor_message(exc)}: check "
                        f"system_name ('{self.setting('system_name')}') and url; BambooHR also answers 404 "
                        "when the directory has no employees"
                    ) from None
                raise SourceError(f"{name} {exc}{vendor_message(exc)}") from None
            data = decode_json(response)
            employees = data.get("employees") if isinstance(data, dict) else None
            if not isinstance(employees, list):
                raise SourceError(f"{name} BambooHR answered {safe_url(response.url)} without an 'employees' list")
            if employees:
                yield [e if isinstance(e, dict) else BadRecord("employee is not a JSON object", e) for e in employees]  # type: ignore[misc]
