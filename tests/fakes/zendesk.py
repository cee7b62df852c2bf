"""Fake Zendesk Support account: ``/api/v2/users`` and ``/api/v2/organizations`` (with or without
``.json``) and the OAuth token endpoint. Each behaviour and where it comes from:

- OAuth client credentials: ``POST /oauth/tokens`` with a JSON body (``grant_type=client_credentials``,
  ``client_id``, ``client_secret``, optional ``scope``) answers ``access_token``, ``token_type:
  bearer``, ``scope`` and ``expires_in`` (default 1800 s: access tokens expire, 30 minutes unless
  asked otherwise). developer.zendesk.com/api-reference/ticketing/oauth/grant_type_tokens/ ("Create
  Token for Grant Type", JSON parameters), the client-credentials announcement of 2025-03-04
  (support.zendesk.com/hc/articles/8983332483226), zendesk/zcli PR #407 (the same JSON body).
  An unknown client or a wrong secret is 401 ``invalid_client``; a scope outside the client's
  allowed scopes is 400 ``invalid_scope`` (developer.zendesk.com "Creating and using OAuth tokens
  with the API": "Allowed scopes define the maximum set of scopes").
- Bearer tokens on the API: an unknown, revoked or expired token answers 401 ``{"error":
  "invalid_token", "error_description": "The access token provided is expired, revoked, malformed
  or invalid for other reasons."}`` (the body Zendesk sends, quoted in zendesk/zendesk_api_client_rb
  #297, fprimex/zdesk #58, facetoe/zenpy #463).
- API tokens: HTTP Basic ``<email>/token:<token>``; a wrong one is 401 ``{"error": "Couldn't
  authenticate you"}`` (developer.zendesk.com "API token"; retired 2027-04-30, "Migrating from API
  tokens to OAuth access tokens").
- Paging, both styles (developer.zendesk.com "Pagination"): offset (``page``/``per_page``,
  ``next_page``; 400 ``InvalidPaginationParameter`` past 100 pages, i.e. 10,000 records) and cursor
  (``page[size]`` at most 100, ``page[after]``, ``meta.has_more``, ``links.next``). ``max_page``
  makes pages smaller than asked (the harder case).
- Role filters ``role`` / ``role[]`` (List Users).
- Rate limits: ``X-Rate-Limit`` / ``ratelimit-*`` headers on every answer; 429 carries
  ``Retry-After`` (developer.zendesk.com "Rate limits"; injected by the tests).
- A user without the right to list users: 403 ``{"error": "Forbidden", "description": ...}``.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

EMAIL = "it@acme.test"
TOKEN = "FaKeT0k3n"
CLIENT_ID = "oomnitza_connector"
CLIENT_SECRET = "zd-c0nfidential-s3cret"
INVALID_TOKEN = {
    "error": "invalid_token",
    "error_description": "The access token provided is expired, revoked, malformed or invalid for other reasons.",
}

GRACE = {
    "id": 3001,
    "url": "https://acme.zendesk.test/api/v2/users/3001.json",
    "name": "Grace Hopper",
    "email": "grace@acme.test",
    "phone": "+1 555 0100",
    "role": "admin",
    "active": True,
    "verified": True,
    "suspended": False,
    "organization_id": 9001,
    "external_id": "E-3001",
    "locale": "en-US",
    "time_zone": "Eastern Time (US & Canada)",
    "created_at": "2023-01-05T10:00:00Z",
    "updated_at": "2026-09-01T12:00:00Z",
    "last_login_at": "2026-09-30T08:00:00Z",
    "tags": ["vip"],
    "user_fields": {"employee_number": "3001"},
}
AN = {
    "id": 3002,
    "url": "https://acme.zendesk.test/api/v2/users/3002.json",
    "name": "Nguyễn Văn An",
    "email": None,
    "phone": None,
    "role": "end-user",
    "active": True,
    "verified": False,
    "suspended": False,
    "organization_id": None,
    "tags": [],
    "user_fields": {"employee_number": None},
}
MARY = {
    "id": 3003,
    "url": "https://acme.zendesk.test/api/v2/users/3003.json",
    "name": "Mary Ann van Dyke",
    "email": "mary@acme.test",
    "phone": None,
    "role": "agent",
    "active": True,
    "verified": True,
    "suspended": True,
    "organization_id": 9999,
    "tags": [],
    "user_fields": {"employee_number": "3003"},
}
ACME_HQ = {
    "id": 9001,
    "name": "Acme HQ",
    "external_id": "ORG-1",
    "domain_names": ["acme.test"],
    "tags": [],
    "organization_fields": {"region": "NA"},
    "created_at": "2023-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}


def user(i: int, role: str = "end-user", organization_id: int | None = None) -> dict[str, Any]:
    return {
        "id": 4000 + i,
        "url": f"https://acme.zendesk.test/api/v2/users/{4000 + i}.json",
        "name": f"User{i} Tester",
        "email": f"user{i}@acme.test",
        "phone": f"+1 555 1{i:03d}",
        "role": role,
        "active": True,
        "verified": True,
        "suspended": False,
        "organization_id": organization_id,
        "tags": [],
        "user_fields": {"employee_number": str(4000 + i)},
    }


def organization(i: int) -> dict[str, Any]:
    return {
        "id": 9100 + i,
        "name": f"Org {i}",
        "external_id": f"ORG-{100 + i}",
        "domain_names": [],
        "tags": [],
        "organization_fields": {"region": "EU"},
    }


def cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _offset(cursor: str) -> int:
    return int(json.loads(base64.urlsafe_b64decode(cursor.encode()))["o"])


class FakeZendesk(FakeVendor):
    def __init__(
        self,
        users: list[dict[str, Any]] | None = None,
        organizations: list[dict[str, Any]] | None = None,
        email: str = EMAIL,
        token: str = TOKEN,
        max_page: int = 100,
        offset_limit: int = 10_000,
    ) -> None:
        self.users = users if users is not None else [GRACE, AN, MARY]
        self.organizations = organizations if organizations is not None else [ACME_HQ]
        self.email = email
        self.token = token
        self.max_page = max_page
        self.offset_limit = offset_limit  # records reachable with offset pagination
        self.forbidden = False  # the credential is valid but may not list users (an end-user)
        self.remaining = 700
        self.clients = {CLIENT_ID: CLIENT_SECRET}  # OAuth clients of kind Confidential
        self.allowed_scopes = {"read", "write", "users:read", "organizations:read"}
        self.token_lifetime = 1800  # seconds; Zendesk's default for access tokens
        self.tokens: dict[str, float] = {}  # access token -> epoch it expires at
        self.issued: list[str] = []
        self.expire_after: int | None = None  # revoke every token once this many API calls succeeded
        self.served = 0
        super().__init__()

    def expire_tokens(self) -> None:
        for token in self.tokens:
            self.tokens[token] = 0.0

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/oauth/tokens", self.token_endpoint, methods=["POST"]),
            Route("/api/v2/users", self.list_users),
            Route("/api/v2/users.json", self.list_users),
            Route("/api/v2/organizations", self.list_organizations),
            Route("/api/v2/organizations.json", self.list_organizations),
        ]

    async def token_endpoint(self, request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return JSONResponse({"error": "invalid_request", "error_description": "JSON body expected"}, 400)
        try:
            form = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "invalid_request", "error_description": "Malformed JSON"}, 400)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if self.clients.get(str(form.get("client_id"))) != form.get("client_secret"):
            return JSONResponse(
                {
                    "error": "invalid_client",
                    "error_description": "Client authentication failed due to unknown client, no client "
                    "authentication included, or unsupported authentication method.",
                },
                401,
            )
        scopes = str(form.get("scope") or "read").split()
        if not set(scopes) <= self.allowed_scopes:
            return JSONResponse(
                {
                    "error": "invalid_scope",
                    "error_description": "The requested scope is invalid, unknown, or malformed.",
                },
                400,
            )
        token = f"zd-at-{len(self.issued) + 1}"
        self.issued.append(token)
        self.tokens[token] = time.time() + self.token_lifetime
        body = {"access_token": token, "token_type": "bearer", "scope": " ".join(scopes)}
        return JSONResponse({**body, "expires_in": self.token_lifetime})

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            expires = self.tokens.get(header.removeprefix("Bearer "))
            return expires is not None and time.time() < expires
        expected = base64.b64encode(f"{self.email}/token:{self.token}".encode()).decode()
        return header == f"Basic {expected}"

    def _headers(self) -> dict[str, str]:
        self.remaining = max(self.remaining - 1, 0)
        return {
            "X-Rate-Limit": "700",
            "X-Rate-Limit-Remaining": str(self.remaining),
            "ratelimit-limit": "700",
            "ratelimit-remaining": str(self.remaining),
            "ratelimit-reset": "1",
        }

    async def list_users(self, request: Request) -> Response:
        roles = request.query_params.getlist("role[]") or request.query_params.getlist("role")
        pool = [u for u in self.users if not roles or u.get("role") in roles]
        return self._listing(request, "users", pool)

    async def list_organizations(self, request: Request) -> Response:
        return self._listing(request, "organizations", self.organizations)

    def _listing(self, request: Request, key: str, pool: list[dict[str, Any]]) -> Response:
        if self.expire_after is not None and self.served >= self.expire_after:
            self.expire_tokens()
            self.expire_after = None
        if request.headers.get("authorization", "").startswith("Bearer ") and not self._authorized(request):
            return JSONResponse(INVALID_TOKEN, status_code=401)
        if not self._authorized(request):
            return JSONResponse(
                {"error": "Couldn't authenticate you"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="Web Password"'},
            )
        if self.forbidden:
            return JSONResponse(
                {
                    "error": "Forbidden",
                    "description": "You do not have access to this page. "
                    "Please contact the account owner of this help desk for further help.",
                },
                status_code=403,
            )
        self.served += 1
        q = request.query_params
        path = request.url.path
        if "page[size]" in q or "page[after]" in q:
            size = min(int(q.get("page[size]", 100)), 100, self.max_page)
            start = _offset(q["page[after]"]) if q.get("page[after]") else 0
            items = pool[start : start + size]
            more = start + size < len(pool)
            extra = [(k, v) for k, v in q.multi_items() if k not in ("page[size]", "page[after]", "page[before]")]
            after = cursor(start + size)
            body: dict[str, Any] = {
                key: items,
                "meta": {
                    "has_more": more,
                    "after_cursor": after if items else None,
                    "before_cursor": cursor(start) if items else None,
                },
                "links": {
                    "next": f"{self.url}{path}?{urlencode([('page[size]', size), ('page[after]', after), *extra])}"
                    if more
                    else None,
                    "prev": f"{self.url}{path}?{urlencode([('page[size]', size), ('page[before]', cursor(start))])}"
                    if start
                    else None,
                },
            }
            return JSONResponse(body, headers=self._headers())
        per_page = min(int(q.get("per_page", 100)), 100, self.max_page)
        page = int(q.get("page", 1))
        start = (page - 1) * per_page
        if start >= self.offset_limit:
            return JSONResponse(
                {
                    "error": "InvalidPaginationParameter",
                    "description": "Offset pagination is limited to the first 100 pages. "
                    "Use cursor based pagination instead.",
                },
                status_code=400,
            )
        items = pool[start : start + per_page]
        more = start + per_page < len(pool)
        body = {
            key: items,
            "next_page": f"{self.url}{path}?page={page + 1}&per_page={per_page}" if more else None,
            "previous_page": f"{self.url}{path}?page={page - 1}&per_page={per_page}" if page > 1 else None,
            "count": len(pool),
        }
        return JSONResponse(body, headers=self._headers())
