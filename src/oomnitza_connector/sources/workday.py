"""``[workday]``: the rows of a Workday custom report exposed as a web service (RaaS), as users.

``GET {report_url}`` with ``format=json`` answers ``{"Report_Entry": [{...}, ...]}`` in one response
(RaaS has no paging); each entry is one user record, keyed by the report columns' XML aliases.
Auth is HTTP Basic with an Integration System User, or optionally OAuth 2.0 with the refresh token
of a Workday "API Client for Integrations": ``POST https://<host>/ccx/oauth2/<tenant>/token`` with a
form body ``grant_type=refresh_token``, ``refresh_token``, ``client_id``, ``client_secret``, as
Workday's own clients do (Workday/raas-python ``raas/raas.py``, Workday/prism-python
``prism/prism.py``). The access token is short-lived; when the answer has no ``expires_in`` it is
renewed after 15 minutes, as prism-python does, and once more when Workday answers 401.
``report_url`` may list several URLs (one per line), e.g. the same report with different prompt
values, read one after the other. Errors are read from Workday's XML (``wd:Message``,
``faultstring``) or JSON (``error``, ``errors[].error``) bodies.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from ..auth import RefreshingToken, basic
from ..errors import SourceError
from ..http import Http, HttpAuthError, HttpError, RetryPolicy, decode_json, error_body, safe_url
from ..settings import Float, Setting, Url
from .base import BadRecord, Record, UsersSource

log = logging.getLogger(__name__)

CHUNK = 1000  # entries handed to the pipeline at a time (the report itself arrives in one response)
# Workday answers report errors (a bad prompt value, a report that is not web-service enabled) with
# a 500 and an XML fault, so a few quick tries are enough; 503 during maintenance is retried too.
WORKDAY_RETRIES = RetryPolicy(attempts=4)
TOKEN_LIFETIME = 900.0  # Workday/prism-python renews its bearer token after 15 minutes


def report_urls(value: str) -> list[str]:
    return [part for part in value.split() if part]


def with_json_format(url: str) -> tuple[str, str | None]:
    """``url`` asking for ``format=json``, and the format it asked for before (None if none)."""
    parsed = httpx.URL(url)
    before = parsed.params.get("format")
    if before == "json":
        return url, before
    return str(parsed.copy_set_param("format", "json")), before


def workday_message(body: str) -> str:
    """The text of a Workday error: ``<wd:Message>`` / ``<faultstring>`` in XML, or ``error`` /
    ``errors[].error`` in JSON; '' when there is none."""
    match = re.search(r"<(?:\w+:)?(?:Message|faultstring)[^>]*>(.*?)</", body, re.S)
    if match:
        return " ".join(html.unescape(match.group(1)).split())[:200]
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    texts = [data.get("error")]
    errors = data.get("errors")
    if isinstance(errors, list):
        texts += [e.get("error") for e in errors if isinstance(e, dict)]
    found = [" ".join(str(t).split()) for t in texts if isinstance(t, str) and t.strip()]
    return "; ".join(dict.fromkeys(found))[:200]


def token_url_for(report_url: str) -> str:
    """``https://host/ccx/service/customreport2/<tenant>/...`` → ``https://host/ccx/oauth2/<tenant>/token``."""
    parsed = httpx.URL(report_url)
    parts = parsed.path.split("/")
    try:
        tenant = parts[parts.index("customreport2") + 1]
    except (ValueError, IndexError):
        return ""
    prefix = parsed.path[: parsed.path.index("/ccx/")] if "/ccx/" in parsed.path else ""
    return str(parsed.copy_with(path=f"{prefix}/ccx/oauth2/{tenant}/token", query=None))


class Workday(UsersSource):
    module = "workday"
    mapping_name = "Workday"
    summary = "Workday workers from a custom report (RaaS)"
    settings = (
        Setting(
            "report_url",
            None,
            example="https://wd2-impl-services1.workday.com/ccx/service/customreport2/acme/ISU_Oomnitza/"
            "Oomnitza_Workers?format=json",
            help=(
                "the report's JSON URL as Workday shows it (Actions → Web Service → View URLs → JSON): "
                "`https://<host>/ccx/service/customreport2/<tenant>/<owner>/<report>?format=json`; report"
                " prompts go in as query parameters (`&Company=ACME_US`). Several URLs may be listed, one"
                ' per line (see "Large reports")'
            ),
        ),
        Setting(
            "username",
            "",
            example="ISU_Oomnitza",
            help=(
                "the Workday account, usually an Integration System User (required with Basic auth); use "
                "the plain user name, and if Workday answers 401, try `user@tenant`"
            ),
        ),
        Setting("password", "", example="ThePassword", secret=True, help="its password (required with Basic auth)"),
        *UsersSource.role_settings,
        Setting(
            "client_id",
            "",
            help="OAuth (instead of `username`/`password`): client ID of the API Client for Integrations",
        ),
        Setting("client_secret", "", secret=True, help="OAuth: its client secret"),
        Setting("refresh_token", "", secret=True, help="OAuth: the refresh token generated for the ISU"),
        Setting(
            "token_url",
            "",
            kind=Url(),
            help=(
                "OAuth token endpoint; by default `https://<host>/ccx/oauth2/<tenant>/token`, built from `report_url`"
            ),
        ),
        Setting(
            "timeout",
            "600",
            kind=Float(above=0),
            help="seconds to wait for the report to run and answer (big reports can take minutes)",
        ),
    )
    default_mappings = {
        "PERMISSIONS_ID": {"setting": "default_role"},
    }

    def validate(self) -> Iterator[str]:
        urls = report_urls(self.setting("report_url"))
        for url in urls:
            try:
                parsed = httpx.URL(url)
            except httpx.InvalidURL:
                parsed = None
            if parsed is None or parsed.scheme not in ("https", "http") or not parsed.host:
                yield (
                    f"[{self.name}] report_url '{url}' is not a URL; copy the report's JSON URL "
                    "from Workday (Actions → Web Service → View URLs)"
                )
        oauth = [self.setting(n) for n in ("client_id", "client_secret", "refresh_token")]
        if any(oauth) and not all(oauth):
            yield f"[{self.name}] OAuth needs client_id, client_secret and refresh_token together"
        if not all(oauth) and not (self.setting("username") and self.setting("password")):
            yield f"[{self.name}] set username and password (or client_id, client_secret and refresh_token for OAuth)"
        if all(oauth) and not self.setting("token_url") and not all(token_url_for(u) for u in urls):
            yield f"[{self.name}] set token_url: it cannot be derived from report_url"

    @property
    def oauth(self) -> bool:
        return bool(self.setting("refresh_token"))

    def _client(self) -> Http:
        auth: httpx.Auth | None = None
        if not self.oauth:
            auth = basic(self.setting("username"), self.setting("password"))
        seconds = self.value("timeout")
        return self.http(
            headers={"Accept": "application/json"},
            auth=auth,
            policy=WORKDAY_RETRIES,
            timeout=httpx.Timeout(seconds, connect=15.0),
        )

    def _use_oauth(self, http: Http, report_url: str) -> None:
        token_url = self.setting("token_url") or token_url_for(report_url)

        async def fetch() -> tuple[str, float | None]:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": self.setting("refresh_token"),
                "client_id": self.setting("client_id"),
                "client_secret": self.setting("client_secret"),
            }
            try:
                data = decode_json(await http.request("POST", token_url, data=form, auth=None, retry=False))
            except HttpError as exc:
                reason = _oauth_error(exc)
                raise SourceError(
                    f"[{self.name}] Workday refused the OAuth refresh token ({exc.status}{reason}): "
                    "check client_id, client_secret and refresh_token"
                ) from None
            token = data.get("access_token") if isinstance(data, dict) else None
            if not token:
                raise SourceError(f"[{self.name}] Workday's token endpoint answered without an access_token")
            lifetime = data.get("expires_in")
            valid = isinstance(lifetime, (int, float)) and not isinstance(lifetime, bool) and lifetime > 0
            return str(token), float(lifetime) if valid else TOKEN_LIFETIME

        http.client.auth = RefreshingToken(fetch)

    def _refused(self, exc: HttpError) -> SourceError:
        what = "client_id, client_secret and refresh_token" if self.oauth else "username and password"
        message = workday_message(exc.response.text) if exc.response is not None else ""
        return SourceError(
            f"[{self.name}] Workday rejected the credentials ({exc.status}{': ' + message if message else ''}): "
            f"check {what}; the account must be "
            "allowed to run the report, and an expired or locked ISU password also gives this"
            + ("" if self.oauth else " (if the plain user name fails, try user@tenant)")
        )

    async def _fetch(self, http: Http, url: str) -> list[Any]:
        try:
            response = await http.request("GET", url)
        except HttpAuthError as exc:
            raise self._refused(exc) from None
        except HttpError as exc:
            if exc.response is None:
                raise
            message = workday_message(exc.response.text)
            raise SourceError(
                f"[{self.name}] Workday could not run the report at {safe_url(url)} ({exc.status}"
                + (f": {message}" if message else f" {exc.response.reason_phrase}")
                + "): check report_url and the report's prompts; the report must be enabled as a web "
                "service and shared with the account"
            ) from None
        ctype = response.headers.get("content-type", "").lower()
        head = response.content[:200].lstrip()
        if "xml" in ctype or head.startswith(b"<?xml") or head.startswith(b"<wd:"):
            raise SourceError(
                f"[{self.name}] Workday answered with XML instead of JSON ({ctype or 'no content-type'}) "
                f"at {safe_url(url)}: use the report's JSON URL (format=json)"
            )
        if "html" in ctype or head[:1] == b"<":
            raise SourceError(
                f"[{self.name}] Workday answered with an HTML page, not the report, at "
                f"{safe_url(url)}: check report_url (a sign-in or error page?)"
            )
        body = decode_json(response)
        if not isinstance(body, dict):
            raise SourceError(
                f"[{self.name}] the report answered with a JSON {type(body).__name__}, not an object with Report_Entry"
            )
        entries = body.get("Report_Entry")
        if entries is None:
            log.info("[%s] the report at %s has no Report_Entry: no rows", self.name, safe_url(url))
            return []
        return entries if isinstance(entries, list) else [entries]

    async def pages(self) -> AsyncIterator[list[Record | BadRecord]]:
        urls = []
        for raw in report_urls(self.setting("report_url")):
            url, before = with_json_format(raw)
            if before not in (None, "json"):
                log.warning("[%s] report_url asks for format=%s; the connector reads format=json", self.name, before)
            urls.append(url)
        async with self._client() as http:
            if self.oauth:
                self._use_oauth(http, urls[0])
            for url in urls:
                entries = await self._fetch(http, url)
                for page in _chunks(entries):
                    yield page


def _chunks(entries: list[Any]) -> Iterator[list[Record | BadRecord]]:
    for start in range(0, len(entries), CHUNK):
        yield [
            entry
            if isinstance(entry, dict)
            else BadRecord(f"a Report_Entry that is not an object: {str(entry)[:80]!r}", entry)
            for entry in entries[start : start + CHUNK]
        ]


def _oauth_error(exc: HttpError) -> str:
    body = error_body(exc)
    parts = [str(body[k]) for k in ("error", "error_description") if isinstance(body.get(k), str) and body[k]]
    return f" {': '.join(parts)}" if parts else ""
