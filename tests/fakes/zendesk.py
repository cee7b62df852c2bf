"""Fake Zendesk Support account: ``/api/v2/users`` and ``/api/v2/organizations`` (with or without
``.json``) behind API-token Basic auth (``<email>/token:<token>``), in both pagination styles:
offset (``page``/``per_page``, ``next_page``; 400 past the offset limit, 10,000 records on the real
service) and cursor (``page[size]``, ``page[after]``, ``meta.has_more``, ``links.next``). Role
filters ``role`` / ``role[]``, the ``X-Rate-Limit`` and ``ratelimit-*`` headers, Zendesk's error
bodies."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

EMAIL = "it@acme.test"
TOKEN = "FaKeT0k3n"

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


def _cursor(offset: int) -> str:
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
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v2/users", self.list_users),
            Route("/api/v2/users.json", self.list_users),
            Route("/api/v2/organizations", self.list_organizations),
            Route("/api/v2/organizations.json", self.list_organizations),
        ]

    def _authorized(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.email}/token:{self.token}".encode()).decode()
        return request.headers.get("authorization", "") == f"Basic {expected}"

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
        q = request.query_params
        path = request.url.path
        if "page[size]" in q or "page[after]" in q:
            size = min(int(q.get("page[size]", 100)), 100, self.max_page)
            start = _offset(q["page[after]"]) if q.get("page[after]") else 0
            items = pool[start : start + size]
            more = start + size < len(pool)
            extra = [(k, v) for k, v in q.multi_items() if k not in ("page[size]", "page[after]", "page[before]")]
            after = _cursor(start + size)
            body: dict[str, Any] = {
                key: items,
                "meta": {
                    "has_more": more,
                    "after_cursor": after if items else None,
                    "before_cursor": _cursor(start) if items else None,
                },
                "links": {
                    "next": f"{self.url}{path}?{urlencode([('page[size]', size), ('page[after]', after), *extra])}"
                    if more
                    else None,
                    "prev": f"{self.url}{path}?{urlencode([('page[size]', size), ('page[before]', _cursor(start))])}"
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
