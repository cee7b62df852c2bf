"""``[zendesk]``: Zendesk Support users (end-users, agents and admins) via ``/api/v2/users`` with
cursor pagination (``page[size]``, ``meta.has_more``, ``page[after]``), so accounts with more than
10,000 users sync (Zendesk refuses offset pages past the 100th with 400).

Auth (recommended): an OAuth client of kind *Confidential* and the client credentials grant,
``POST {url}/oauth/tokens`` with a JSON body (``grant_type=client_credentials``, ``client_id``,
``client_secret``, ``scope``); Zendesk's access tokens expire (30 minutes by default), so the
token is renewed ahead of ``expires_in`` and once more when Zendesk answers 401. Legacy: an API
token, HTTP Basic ``<email>/token:<api_token>``, which Zendesk deactivates for good on 2027-04-30
(a warning says so on every run that uses one). With ``load_organizations`` (a real boolean:
``false`` means off), or when a mapping reads ``organization.*``, every organization is read
first and each user gets the whole ``organization`` object of its ``organization_id`` (``{}``
when it has none). ``url`` defaults to
``https://{system_name}.zendesk.com`` and may carry ``/api/v2``. Next pages are requested on the
configured ``url`` with the ``after_cursor`` (never on a host named by ``links.next``). 429 and
503 honour ``Retry-After``; ``ratelimit-remaining`` / ``ratelimit-reset`` pause requests before the
per-minute budget runs out.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from ..auth import RefreshingToken, basic
from ..errors import SourceError
from ..http import (
    Cursor,
    Http,
    HttpAuthError,
    HttpError,
    RateLimiter,
    decode_json,
    error_body,
    reset_pause,
    safe_url,
)
from ..settings import BOOL, Int, List, Setting, Url
from .base import BadRecord, Record, UsersSource

log = logging.getLogger(__name__)

USERS = "/api/v2/users"
ORGANIZATIONS = "/api/v2/organizations"
TOKENS = "/oauth/tokens"
API_TOKEN_END = "2027-04-30"  # Zendesk: "all remaining API tokens are permanently deactivated"
DEFAULT_LIFETIME = 1800.0  # Zendesk's default access token lifetime, when an answer omits expires_in
ROLES = ("end-user", "agent", "admin")
AFTER = "page[after]"


def after_cursor(name: str) -> Callable[[httpx.Response], str | None]:
    """Zendesk cursor pagination: while ``meta.has_more``, ``meta.after_cursor`` (or the one carried by
    ``links.next``) goes into ``page[after]``."""

    def extract(response: httpx.Response) -> str | None:
        body = decode_json(response)
        meta = body.get("meta") if isinstance(body, dict) else None
        if not isinstance(meta, dict) or not meta.get("has_more"):
            return None
        after = meta.get("after_cursor")
        if not after:  # fall back to the cursor carried by links.next
            links = body.get("links") if isinstance(body.get("links"), dict) else {}
            nxt = links.get("next")
            after = dict(parse_qsl(urlsplit(nxt).query)).get(AFTER) if isinstance(nxt, str) else None
        if not after:
            log.warning("%s Zendesk says there are more results but gave no cursor; stopping here", name)
            return None
        return str(after)

    return extract


def oauth_error(exc: HttpError) -> str:
    """`` <error>: <error_description>`` of an OAuth error body, or ``""``."""
    body = error_body(exc)
    parts = [str(body[k]).strip() for k in ("error", "error_description") if isinstance(body.get(k), str)]
    text = ": ".join(p for p in parts if p)
    return f" {text[:200]}" if text else ""


def zendesk_error(exc: HttpError) -> str:
    """`` <error>: <description>`` from Zendesk's error body, or ``""``."""
    body = error_body(exc)
    error, description = body.get("error"), body.get("description")
    if isinstance(error, dict):  # some endpoints nest {"title", "message"}
        nested = error
        error, description = nested.get("title"), description or nested.get("message")
    text = ": ".join(str(v).strip() for v in (error, description) if isinstance(v, str) and v.strip())
    return f" {text[:160]}" if text else ""


class Zendesk(UsersSource):
    module = "zendesk"
    mapping_name = "Zendesk"
    summary = "Zendesk Support users"
    settings = (
        Setting(
            "system_name", None, example="acme", help="your Zendesk subdomain: `acme` for `https://acme.zendesk.com`"
        ),
        Setting(
            "client_id",
            "",
            example="oomnitza_connector",
            help=("the Identifier of an OAuth client (see below); with `client_secret`, the recommended login"),
        ),
        Setting("client_secret", "", secret=True, help="the Secret of that OAuth client (kind Confidential)"),
        Setting(
            "scope",
            "read",
            kind=List(sep="space"),
            help=(
                "the scopes asked for, space-separated: `read` (all GET endpoints) or the narrower "
                "`users:read organizations:read`; they must be within the client's Allowed scopes"
            ),
        ),
        Setting(
            "api_token",
            "",
            secret=True,
            help=f"legacy: a Zendesk API token (Zendesk deactivates every API token on {API_TOKEN_END})",
        ),
        Setting(
            "username",
            "",
            help=(
                "legacy, with `api_token`: e-mail address of the admin (or agent) who owns the token; the"
                " connector adds `/token` itself"
            ),
        ),
        *UsersSource.role_settings,
        Setting(
            "load_organizations",
            "false",
            example="false",
            kind=BOOL,
            help=(
                '`true` attaches each user\'s organization object as `organization` (see "Record shape"); '
                "the organizations are also read when any mapping, the one stored in Oomnitza included, "
                "uses `organization.*`"
            ),
        ),
        Setting(
            "url",
            "",
            kind=Url(),
            help=(
                "the API base, default `https://{system_name}.zendesk.com`: set it for a host-mapped "
                "domain (`https://support.acme.com`) or a proxy; a trailing `/api/v2` is accepted"
            ),
        ),
        Setting(
            "role",
            "",
            kind=List(),
            help="only these roles, comma-separated: `end-user`, `agent`, `admin` (empty: all users)",
        ),
        Setting("page_size", "100", kind=Int(1, 100), help="records per request (`page[size]`; Zendesk's maximum)"),
    )
    default_mappings = {
        "USER": {"source": "email"},
        "FIRST_NAME": {"source": "name", "converter": "first_from_full"},
        "LAST_NAME": {"source": "name", "converter": "last_from_full"},
        "EMAIL": {"source": "email"},
        "PHONE": {"source": "phone"},
        "PERMISSIONS_ID": {"setting": "default_role"},
    }

    def validate(self) -> Iterator[str]:
        oauth = [self.setting("client_id").strip(), self.setting("client_secret")]
        if any(oauth) and not all(oauth):
            yield f"[{self.name}] set both client_id and client_secret (the OAuth client)"
        elif not all(oauth) and not (self.setting("api_token") and self.setting("username").strip()):
            yield (
                f"[{self.name}] set client_id and client_secret (an OAuth client, recommended), or username "
                f"and api_token (API tokens stop working on {API_TOKEN_END})"
            )
        sub = self.setting("system_name").strip()
        if not self.setting("url").strip() and any(c in sub for c in "./: "):
            yield (
                f"[{self.name}] system_name is the Zendesk subdomain only (acme for "
                "https://acme.zendesk.com); for another host set url"
            )
        unknown = [r for r in self.roles if r not in ROLES]
        if unknown:
            yield f"[{self.name}] role {', '.join(unknown)} is not one of {', '.join(ROLES)}"

    @property
    def roles(self) -> list[str]:
        return [r.strip().lower() for r in self.setting("role").split(",") if r.strip()]

    @property
    def base(self) -> str:
        url = self.setting("url").strip() or f"https://{self.setting('system_name').strip()}.zendesk.com"
        return url.rstrip("/").removesuffix("/api/v2").removesuffix("/api").rstrip("/")

    @property
    def oauth(self) -> bool:
        return bool(self.setting("client_id").strip() and self.setting("client_secret"))

    def _client(self) -> Http:
        limiter = RateLimiter(pause_from=reset_pause("ratelimit-remaining", "ratelimit-reset", epoch=False))
        http = self.http(base_url=self.base, headers={"Accept": "application/json"}, limiter=limiter)
        if self.oauth:
            http.client.auth = RefreshingToken(self._token_fetcher(http))
        else:
            log.warning(
                "[%s] uses a Zendesk API token: Zendesk deactivates every API token on %s; create an OAuth "
                "client (client_id, client_secret) before then",
                self.name,
                API_TOKEN_END,
            )
            user = self.setting("username").strip()
            login = user if user.endswith("/token") else f"{user}/token"
            http.client.auth = basic(login, self.setting("api_token"))
        return http

    def _token_fetcher(self, http: Http) -> Any:
        name = f"[{self.name}]"
        body = {
            "grant_type": "client_credentials",
            "client_id": self.setting("client_id").strip(),
            "client_secret": self.setting("client_secret"),
        }
        body["scope"] = " ".join(self.setting("scope").split()) or "read"

        async def fetch() -> tuple[str, float | None]:
            try:
                response = await http.request("POST", TOKENS, json=body, auth=None, idempotent=True)
            except HttpError as exc:
                if exc.status in (400, 401, 403):
                    hint = (
                        "check scope"
                        if error_body(exc).get("error") == "invalid_scope"
                        else ("check client_id and client_secret, and that the OAuth client's kind is Confidential")
                    )
                    raise SourceError(
                        f"{name} Zendesk refused the OAuth client ({exc.status}{oauth_error(exc)}): {hint}"
                    ) from None
                raise SourceError(f"{name} could not get a Zendesk access token: {exc}") from None
            data = decode_json(response)
            token = data.get("access_token") if isinstance(data, dict) else None
            if not isinstance(token, str) or not token:
                raise SourceError(f"{name} Zendesk's token answer ({safe_url(response.url)}) has no access_token")
            lifetime = data.get("expires_in")
            valid = isinstance(lifetime, (int, float)) and not isinstance(lifetime, bool) and lifetime > 0
            return token, float(lifetime) if valid else DEFAULT_LIFETIME

        return fetch

    async def _list(self, http: Http, path: str, key: str, params: dict[str, Any]) -> AsyncIterator[list[Any]]:
        name = f"[{self.name}]"
        query = {"page[size]": self.setting("page_size"), **params}
        try:
            async for response in http.paginate(Cursor(after_cursor(name), AFTER), path, params=query):
                body = decode_json(response)
                items = body.get(key) if isinstance(body, dict) else None
                if not isinstance(items, list):
                    raise SourceError(
                        f"{name} Zendesk answered {safe_url(response.url)} without a '{key}' list: "
                        "is url the Zendesk account URL?"
                    )
                yield items
        except HttpAuthError as exc:
            raise self._refused(exc) from None
        except HttpError as exc:
            if exc.status == 404:
                raise SourceError(f"{name} Zendesk answered 404 for {path}: check system_name (or url)") from None
            raise

    def _refused(self, exc: HttpError) -> SourceError:
        name = f"[{self.name}]"
        detail = oauth_error(exc) if "error_description" in error_body(exc) else zendesk_error(exc)
        if exc.status == 403:
            who = (
                "the OAuth client's scope must allow reading users (read or users:read) and the admin who "
                "created the client must be allowed to list users"
                if self.oauth
                else "the user in username must be an admin (or an agent allowed to list users)"
            )
            return SourceError(f"{name} Zendesk refused access (403{detail}): {who}")
        if self.oauth:
            return SourceError(
                f"{name} Zendesk rejected a fresh OAuth access token ({exc.status}{detail}): check that the "
                "OAuth client is active and belongs to this Zendesk account (url / system_name)"
            )
        return SourceError(
            f"{name} Zendesk rejected the credentials ({exc.status}{detail}): check username and api_token, "
            f"and that token access is enabled (API tokens stop working on {API_TOKEN_END})"
        )

    def wants_organizations(self) -> bool:
        """On with load_organizations, or when any mapping (server-side included) reads organization.*."""
        if self.section.flag("load_organizations"):
            return True
        return any(src == "organization" or src.startswith("organization.") for src in self.mapped_sources())

    async def _organizations(self, http: Http) -> dict[Any, dict[str, Any]]:
        orgs: dict[Any, dict[str, Any]] = {}
        async for items in self._list(http, ORGANIZATIONS, "organizations", {}):
            for org in items:
                if isinstance(org, dict) and org.get("id") is not None:
                    orgs[org["id"]] = org
        log.info("[%s] %d organizations loaded", self.name, len(orgs))
        return orgs

    async def pages(self) -> AsyncIterator[list[Record]]:
        params: dict[str, Any] = {"role[]": self.roles} if self.roles else {}
        async with self._client() as http:
            orgs = await self._organizations(http) if self.wants_organizations() else None
            async for users in self._list(http, USERS, "users", params):
                if not users:
                    continue
                page: list[Any] = []
                for user in users:
                    if not isinstance(user, dict):
                        page.append(BadRecord("user is not a JSON object", user))
                        continue
                    if orgs is not None:
                        user = {**user, "organization": orgs.get(user.get("organization_id"), {})}
                    page.append(user)
                yield page
