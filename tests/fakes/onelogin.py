"""Fake OneLogin account (API v2). Each behaviour and where it comes from:

- Token: ``POST /auth/oauth2/v2/token`` with ``{"grant_type": "client_credentials"}`` and the
  credential pair as HTTP Basic, the ``client_id:…, client_secret:…`` header or body fields;
  answer ``access_token``, ``expires_in`` 36000, ``token_type: bearer`` (developers.onelogin.com
  api-docs/2/oauth20-tokens/generate-tokens-2). A wrong pair is 401 in the v1 envelope
  ``{"status": {"error": true, "code": 401, "type": "Unauthorized", "message": "Authentication
  Failure"}}``.
- Users: ``GET /api/2/users`` with ``Authorization: Bearer`` (developers.onelogin.com api-docs/2/
  users/list-users). The answer is a bare JSON array; paging metadata is in headers
  (``Total-Count``, ``Total-Pages``, ``Current-Page``, ``Page-Items``, ``Before-Cursor``,
  ``After-Cursor``; next page with ``cursor=``) (api-docs/2/getting-started/using-query-parameters).
- ``limit``: at most 100 (onelogin-python-sdk ``api/users_v2_api.py``: "How many items to return at
  one time (max 100)"; more is refused here, the harder reading); pages of at most ``max_page``
  (50 by default: the List Users page says "This call returns up to 50 users per page").
- ``fields``: "Comma delimited list of fields to return" (users_v2_api.py): only the named fields
  come back, and a name OneLogin does not know is silently left out, which is how a misspelt field
  (``samaccount_name`` for ``samaccountname``, models/user.py) loses data. Without ``fields`` the
  list returns the reduced shape of the documented sample (no title, department, company,
  role_ids, managers, userprincipalname, preferred_locale_code or custom attributes);
  ``custom_attributes`` only when named. ``reject_fields`` makes the server refuse ``fields``
  (400, "custom_attributes" or "all"): not documented, the harder case.
- Errors of the v2 API: ``{"message", "name", "statusCode"}`` (List Custom Attributes samples).
- Rate limit: ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (seconds left, not an epoch)
  (api-docs/1/oauth20-tokens/get-rate-limit).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

# Every field of a v2 user (onelogin-python-sdk models/user.py, passwords left out).
ALL_FIELDS = (
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
# What a list entry carries when no ``fields`` parameter is given (the List Users sample answer).
DEFAULT_FIELDS = (
    "activated_at",
    "distinguished_name",
    "external_id",
    "firstname",
    "last_login",
    "lastname",
    "directory_id",
    "invitation_sent_at",
    "member_of",
    "updated_at",
    "created_at",
    "id",
    "invalid_login_attempts",
    "locked_until",
    "username",
    "email",
    "phone",
    "state",
    "group_id",
    "password_changed_at",
    "status",
    "samaccountname",
)


def envelope_error(code: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"status": {"error": True, "code": code, "type": kind, "message": message}}
    return JSONResponse(body, status_code=code, headers=headers)


def full_user(**fields: Any) -> dict[str, Any]:
    """A user as OneLogin stores it: every default list field (null unless given) + custom attributes."""
    base: dict[str, Any] = dict.fromkeys(ALL_FIELDS)
    base.update({"role_ids": [], "custom_attributes": {"employee_id": None, "cost_center": None}})
    base.update(fields)
    return base


KWAME = full_user(
    id=40001,
    username="kwame.mensah",
    email="kwame@acme.test",
    firstname="Kwame",
    lastname="Mensah",
    phone="+233 20 000 0001",
    status=1,
    state=1,
    title="Technician",
    department="IT",
    company="Acme",
    role_ids=[123],
    group_id=77,
    last_login="2026-09-29T07:00:00.000Z",
    created_at="2024-03-01T10:00:00.000Z",
    updated_at="2026-09-29T07:00:00.000Z",
    samaccountname="kmensah",
    preferred_locale_code="en",
    manager_user_id="40009",
    custom_attributes={"employee_id": "E-40001", "cost_center": "CC-9"},
)
LEA = full_user(
    id=40002,
    username=None,
    email="lea.muller@acme.test",
    firstname="Léa",
    lastname="Müller",
    phone=None,
    status=2,
    state=1,
    role_ids=[],
    custom_attributes={"employee_id": None, "cost_center": None},
)


def user(i: int) -> dict[str, Any]:
    return full_user(
        id=50000 + i,
        username=f"user{i}",
        email=f"user{i}@acme.test",
        firstname=f"Ama{i}",
        lastname="Owusu",
        phone=f"+233 20 100 {i:04d}",
        status=1,
        state=1,
        role_ids=[200 + i],
        custom_attributes={"employee_id": f"E-{50000 + i}", "cost_center": None},
    )


def _cursor(offset: int, limit: int) -> str:
    return base64.b64encode(f"limit={limit}&offset={offset}".encode()).decode()


def _offset(cursor: str) -> tuple[int, int]:
    text = base64.b64decode(cursor.encode()).decode()
    parts = dict(p.split("=", 1) for p in text.split("&"))
    return int(parts["offset"]), int(parts["limit"])


class FakeOnelogin(FakeVendor):
    def __init__(
        self,
        users: list[dict[str, Any]] | None = None,
        client_id: str = "0a1b2c3d4e5f",
        client_secret: str = "s3cr3t-OneLogin-v2",
        max_page: int = 50,
        reject_fields: str = "",
    ) -> None:
        self.users = users if users is not None else [KWAME, LEA, user(3)]
        self.client_id = client_id
        self.client_secret = client_secret
        self.max_page = max_page
        self.reject_fields = reject_fields  # "custom_attributes": refuse it in fields; "all": refuse fields
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.remaining = 5000
        self.reset = 832
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/auth/oauth2/v2/token", self.token, methods=["POST"]),
            Route("/api/2/users", self.list_users),
        ]

    def expire_tokens(self) -> None:
        self.revoked.update(self.issued)

    def _client_credentials(self, request: Request, body: bytes) -> tuple[str, str]:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return user, password
        if "client_id:" in header:  # the v1 style "client_id:<id>, client_secret:<secret>"
            parts = dict(p.strip().split(":", 1) for p in header.split(","))
            return parts.get("client_id", ""), parts.get("client_secret", "")
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = {}
        return str(data.get("client_id", "")), str(data.get("client_secret", ""))

    async def token(self, request: Request) -> Response:
        body = await request.body()
        try:
            grant = json.loads(body or b"{}").get("grant_type")
        except ValueError:
            grant = None
        if grant != "client_credentials":
            return envelope_error(400, "bad request", "grant_type is incorrect/absent")
        if self._client_credentials(request, body) != (self.client_id, self.client_secret):
            return envelope_error(401, "Unauthorized", "Authentication Failure")
        token = f"fake-at-{len(self.issued) + 1}"
        self.issued.append(token)
        return JSONResponse(
            {
                "access_token": token,
                "created_at": "2026-10-01T08:00:00.000Z",
                "expires_in": 36000,
                "refresh_token": f"rt-{token}",
                "token_type": "bearer",
                "account_id": 555555,
            }
        )

    def _rate_headers(self) -> dict[str, str]:
        self.remaining = max(self.remaining - 1, 0)
        return {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }

    async def list_users(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token not in self.issued or token in self.revoked:
            return JSONResponse(
                {"message": "Unauthorized", "statusCode": 401, "name": "UnauthorizedError"}, status_code=401
            )
        q = request.query_params
        fields = [f.strip() for f in q.get("fields", "").split(",") if f.strip()]
        refused = (self.reject_fields == "all" and fields) or (
            self.reject_fields == "custom_attributes" and "custom_attributes" in fields
        )
        if refused:
            bad = "custom_attributes" if "custom_attributes" in fields else fields[0]
            return JSONResponse(
                {"message": f"Invalid field: {bad}", "name": "BadRequestError", "statusCode": 400},
                status_code=400,
            )
        if int(q.get("limit", 50)) > 100:
            return JSONResponse(
                {"message": "limit must be less than or equal to 100", "name": "BadRequestError", "statusCode": 400},
                status_code=400,
            )
        if q.get("cursor"):
            offset, limit = _offset(q["cursor"])
        else:
            offset, limit = 0, int(q.get("limit", 50))
        limit = min(limit, self.max_page)
        page = self.users[offset : offset + limit]
        known = {*ALL_FIELDS, "custom_attributes"}
        shown = [f for f in fields if f in known] or list(DEFAULT_FIELDS)  # unknown names: silently left out
        body = [{k: u.get(k) for k in ("id", *shown) if k in u} for u in page]
        total = len(self.users)
        headers = {
            "Total-Count": str(total),
            "Total-Pages": str(max(1, -(-total // limit))),
            "Current-Page": str(offset // limit + 1),
            "Page-Items": str(limit),
            **self._rate_headers(),
        }
        if offset > 0:
            headers["Before-Cursor"] = _cursor(max(0, offset - limit), limit)
        if offset + limit < total:
            headers["After-Cursor"] = _cursor(offset + limit, limit)
        return JSONResponse(body, headers=headers)
