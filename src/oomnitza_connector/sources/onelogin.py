"""``[onelogin]``: OneLogin users via the API v2 (``/api/2/users``), following the ``After-Cursor``
response header.

Auth is an API credential pair (``client_id``/``client_secret``, scope "Read users" or higher)
exchanged for a bearer token at ``/auth/oauth2/v2/token`` on the **same host as** ``url``, so EU
accounts (``api.eu.onelogin.com``) and subdomain hosts work. The token is reused until it expires
and fetched again once when OneLogin answers 401. The legacy API-key XML APIs (``api_token``) were
shut down by OneLogin and are not supported: such a configuration is a clear config error.

Compatibility with the seed: a ``url`` such as ``https://api.us.onelogin.com/api/1/users`` still
works (only its scheme, host and any proxy prefix are used), the records keep the v1 names
(``role_id``, ``locale_code``) next to the v2 ones, and the seed's lookup quirk is kept: a mapping
source that is not a standard user field reads the custom attribute of that name
(``{"source": "employee_id"}`` = ``custom_attributes.employee_id``).

Fields: without ``fields=`` the v2 list returns a reduced user (no title, department, company,
role_ids, manager, custom attributes…), and with it only the fields named, so the connector always
names every field of the v2 user (onelogin-python-sdk ``models/user.py``: ``samaccountname``, not
``samaccount_name``, which stays an alias) plus the standard fields the merged mapping uses. If
OneLogin refuses ``custom_attributes`` in ``fields`` the list is read without it; if it refuses
``fields`` altogether, without ``fields`` and a warning naming the mapped fields that are lost.
OneLogin's ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` (seconds) pause requests before the
hourly budget runs out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..auth import RefreshingToken, basic
from ..errors import SourceError
from ..http import Cursor, Http, HttpAuthError, HttpError, RateLimiter, decode_json, error_body, reset_pause, safe_url
from ..settings import BOOL, Int, Setting, Url
from .base import BadRecord, Record, UsersSource

log = logging.getLogger(__name__)

USERS = "/api/2/users"
TOKEN = "/auth/oauth2/v2/token"
DEFAULT_URL = "https://api.us.onelogin.com/api/1/users"

MAX_PAGE = 100  # onelogin-python-sdk users_v2_api.py list_users2: "limit ... (max 100)"
# Every field of a v2 user (onelogin-python-sdk models/user.py, passwords left out), asked for by
# name: ``fields`` limits the answer to what it names.
LIST_FIELDS = (
    "id",
    "username",
    "email",
    "firstname",
    "lastname",
    "title",
    "department",
    "company",
    "comment",
    "group_id",
    "role_ids",
    "phone",
    "state",
    "status",
    "directory_id",
    "trusted_idp_id",
    "manager_ad_id",
    "manager_user_id",
    "samaccountname",
    "member_of",
    "userprincipalname",
    "distinguished_name",
    "external_id",
    "activated_at",
    "last_login",
    "invitation_sent_at",
    "updated_at",
    "preferred_locale_code",
    "created_at",
    "invalid_login_attempts",
    "locked_until",
    "password_changed_at",
)
# What the v2 list returns without ``fields`` (developers.onelogin.com "List Users", sample answer).
DEFAULT_LIST_SHAPE = frozenset(
    {
        "activated_at",
        "created_at",
        "directory_id",
        "distinguished_name",
        "email",
        "external_id",
        "firstname",
        "group_id",
        "id",
        "invalid_login_attempts",
        "invitation_sent_at",
        "last_login",
        "lastname",
        "locked_until",
        "member_of",
        "password_changed_at",
        "phone",
        "samaccountname",
        "state",
        "status",
        "updated_at",
        "username",
    }
)
# Standard user fields: the seed's list plus the v2 names. Any other mapping source is read from
# custom_attributes, as the seed did.
STANDARD_FIELDS = frozenset(
    {
        "activated_at",
        "created_at",
        "email",
        "username",
        "firstname",
        "group_id",
        "id",
        "invalid_login_attempts",
        "invitation_sent_at",
        "last_login",
        "lastname",
        "locked_until",
        "comment",
        "openid_name",
        "locale_code",
        "password_changed_at",
        "phone",
        "status",
        "updated_at",
        "distinguished_name",
        "external_id",
        "directory_id",
        "member_of",
        "samaccountname",
        "userprincipalname",
        "manager_ad_id",
        "role_id",
        "company",
        "department",
        "title",
        "state",
        "trusted_idp_id",
        *LIST_FIELDS,
        "custom_attributes",
        "notes",
        "samaccount_name",
    }
)
# Older name -> v2 name: the older name is filled from the v2 one so existing mappings keep working
# (v1 names of the seed; ``samaccount_name``, the wrong v2 spelling earlier versions documented).
V1_NAMES = {"role_id": "role_ids", "locale_code": "preferred_locale_code", "samaccount_name": "samaccountname"}
API_SUFFIX = re.compile(r"/api(/\d+(/users(\.json)?)?)?$", re.IGNORECASE)
LEGACY_PATH = re.compile(r"(/api/v\d+(/|$))|(\.xml$)", re.IGNORECASE)


def api_base(url: str) -> str:
    """Scheme, host and any proxy prefix of ``url``, without the ``/api/N/users`` part."""
    parts = urlsplit(url.strip())
    path = API_SUFFIX.sub("", parts.path.rstrip("/"))
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def shape(user: Any) -> Record | BadRecord:
    """The v2 user plus the v1 names and, for non-standard names, the custom attributes at the top."""
    if not isinstance(user, dict):
        return BadRecord("user is not a JSON object", user)
    record = dict(user)
    for old, new in V1_NAMES.items():
        if old not in record and new in record:
            record[old] = record[new]
    custom = record.get("custom_attributes")
    if isinstance(custom, dict):
        for key, value in custom.items():
            if key not in STANDARD_FIELDS:
                record[key] = value
    return record


def onelogin_message(response: httpx.Response | None) -> str:
    """OneLogin's error text from a v1 envelope, a v2 error or an OAuth error body."""
    body = error_body(response)
    status = body.get("status")
    for value in (
        status.get("message") if isinstance(status, dict) else None,
        body.get("message"),
        body.get("error_description"),
        body.get("error"),
    ):
        if isinstance(value, str) and value.strip():
            return " " + value.strip()
    return ""


class Onelogin(UsersSource):
    module = "onelogin"
    mapping_name = "OneLogin"
    summary = "OneLogin users (API v2)"
    settings = (
        Setting(
            "url",
            DEFAULT_URL,
            example=DEFAULT_URL,
            kind=Url(),
            help=(
                "the OneLogin API host: `https://api.us.onelogin.com`, `https://api.eu.onelogin.com` or "
                "`https://<subdomain>.onelogin.com`; only its scheme, host and any proxy prefix are used,"
                " so a path such as `/api/1/users`, `/api/2` or `/api/2/users` (the old form) is accepted"
                " and ignored"
            ),
        ),
        Setting(
            "client_id", "", help="client ID of the API credential (Read users scope or higher); required in practice"
        ),
        Setting("client_secret", "", secret=True, help="client secret of the API credential; required in practice"),
        Setting(
            "api_token",
            "",
            secret=True,
            help=(
                "the legacy API key: OneLogin shut down the APIs that used it, so a section with only "
                "`api_token` stops with a clear error; ignored when `client_id` and `client_secret` are "
                "set"
            ),
        ),
        *UsersSource.role_settings,
        Setting(
            "page_size",
            str(MAX_PAGE),
            kind=Int(min=1),
            help=(
                f"users per request (`limit`); OneLogin's maximum is {MAX_PAGE} (a larger value is lowered"
                " to it), and the connector follows the cursor either way"
            ),
        ),
        Setting(
            "custom_attributes",
            "true",
            kind=BOOL,
            help=(
                "ask for the users' custom attributes (see below); this adds no extra calls, `false` leaves them out"
            ),
        ),
    )
    default_mappings = {
        "USER": {"source": "username"},
        "FIRST_NAME": {"source": "firstname"},
        "LAST_NAME": {"source": "lastname"},
        "EMAIL": {"source": "email"},
        "PHONE": {"source": "phone"},
        "PERMISSIONS_ID": {"setting": "default_role"},
    }

    def validate(self) -> Iterator[str]:
        url = self.setting("url").strip()
        if LEGACY_PATH.search(urlsplit(url).path.rstrip("/")):
            yield (
                f"[{self.name}] url {url} is OneLogin's retired XML API; set url to "
                "https://api.us.onelogin.com (EU: https://api.eu.onelogin.com) and use "
                "client_id/client_secret"
            )
        if not (self.setting("client_id") and self.setting("client_secret")):
            if self.setting("api_token"):
                yield (
                    f"[{self.name}] api_token is OneLogin's legacy API key, whose APIs OneLogin "
                    "shut down; create an API credential (Administration > Developers > API "
                    "Credentials, Read users) and set client_id and client_secret"
                )
            else:
                yield f"[{self.name}] OneLogin connector configured improperly: set client_id and client_secret"

    @property
    def base(self) -> str:
        return api_base(self.setting("url"))

    def _client(self) -> Http:
        limiter = RateLimiter(pause_from=reset_pause("x-ratelimit-remaining", "x-ratelimit-reset", epoch=False))
        return self.http(base_url=self.base, headers={"Accept": "application/json"}, limiter=limiter)

    def _token(self, http: Http) -> RefreshingToken:
        name = f"[{self.name}]"
        credentials = basic(self.setting("client_id"), self.setting("client_secret"))

        async def fetch() -> tuple[str, float | None]:
            try:
                response = await http.request(
                    "POST", TOKEN, json={"grant_type": "client_credentials"}, auth=credentials
                )
                data = decode_json(response)
            except HttpError as exc:
                if exc.status in (400, 401, 403):
                    raise SourceError(
                        f"{name} OneLogin rejected the API credentials ({exc.status}"
                        f"{onelogin_message(exc.response)}): check client_id and client_secret"
                    ) from None
                raise SourceError(f"{name} could not get a OneLogin access token: {exc}") from None
            token = data.get("access_token") if isinstance(data, dict) else None
            if not isinstance(token, str) or not token:
                raise SourceError(f"{name} OneLogin's token answer ({safe_url(response.url)}) has no access_token")
            expires = data.get("expires_in")
            return token, float(expires) if isinstance(expires, (int, float)) and expires > 0 else 36000.0

        return RefreshingToken(fetch)

    def fields(self, with_custom: bool) -> list[str]:
        """Every v2 user field, the standard ones the merged mapping names, and custom_attributes."""
        wanted = list(LIST_FIELDS)
        for source in self.mapped_sources():
            head = source.split(".", 1)[0]
            head = V1_NAMES.get(head, head)
            if head in STANDARD_FIELDS and head != "custom_attributes":
                wanted.append(head)
        if with_custom:
            wanted.append("custom_attributes")
        return list(dict.fromkeys(wanted))

    def _lost_without_fields(self) -> list[str]:
        """Mapped standard fields that the reduced default answer does not carry."""
        lost = []
        for source in self.mapped_sources():
            head = source.split(".", 1)[0]
            head = V1_NAMES.get(head, head)
            if head in STANDARD_FIELDS and head not in DEFAULT_LIST_SHAPE:
                lost.append(source)
            elif head not in STANDARD_FIELDS or head == "custom_attributes":
                lost.append(source)  # custom attributes come only when fields names them
        return sorted(set(lost))

    async def pages(self) -> AsyncIterator[list[Record]]:
        name = f"[{self.name}]"
        size = self.value("page_size")
        if size > MAX_PAGE:
            log.info("[%s] page_size %d lowered to OneLogin's maximum of %d", self.name, size, MAX_PAGE)
        params: dict[str, Any] = {"limit": min(size, MAX_PAGE)}
        # The fields asked for: all + custom_attributes, then without custom_attributes, then none.
        attempts: list[list[str] | None] = [self.fields(with_custom=False), None]
        if self.section.flag("custom_attributes"):
            attempts.insert(0, self.fields(with_custom=True))
        async with self._client() as http:
            http.client.auth = self._token(http)
            while True:
                fields = attempts[0]
                query = {**params, "fields": ",".join(fields)} if fields is not None else params
                answered = 0
                try:
                    async for response in http.paginate(Cursor(_after_cursor, "cursor"), USERS, params=query):
                        users = decode_json(response)
                        if not isinstance(users, list):
                            raise SourceError(
                                f"{name} OneLogin answered {safe_url(response.url)} with "
                                f"{type(users).__name__}, not a list of users: is url the API host?"
                            )
                        answered += 1
                        if users:
                            yield [shape(u) for u in users]  # type: ignore[misc]
                    return
                except HttpAuthError as exc:
                    raise SourceError(
                        f"{name} OneLogin rejected the access token ({exc.status}"
                        f"{onelogin_message(exc.response)}): check that the API credential has "
                        "the Read users (or higher) scope"
                    ) from None
                except HttpError as exc:
                    if fields is None or answered or exc.status not in (400, 422):
                        raise
                    attempts.pop(0)
                    reason = f"{exc.status}{onelogin_message(exc.response)}"
                    if attempts[0] is not None:
                        log.warning(
                            "%s OneLogin refused the fields parameter (%s); listing users without custom_attributes",
                            name,
                            reason,
                        )
                    else:
                        lost = self._lost_without_fields()
                        log.warning(
                            "%s OneLogin refused the fields parameter (%s); listing users without it, so OneLogin "
                            "leaves out title, department, company, role_ids, managers and custom attributes%s",
                            name,
                            reason,
                            f" (mapped here and lost: {', '.join(lost)})" if lost else "",
                        )


def _after_cursor(response: httpx.Response) -> str | None:
    value = response.headers.get("after-cursor", "").strip()
    return value or None
