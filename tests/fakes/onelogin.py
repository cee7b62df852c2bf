"""Fake OneLogin account: the v2 token endpoint (HTTP Basic ``client_id:client_secret``, the
``client_id:…, client_secret:…`` header or form fields), ``/api/2/users`` with ``Authorization:
Bearer``, page cursors in the ``After-Cursor`` response header, the ``fields`` parameter (the list
leaves ``custom_attributes`` out unless asked), ``X-RateLimit-*`` headers (reset in seconds) and the
v1 error envelope."""

from __future__ import annotations

import base64
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

# The fields a v2 list entry carries when no ``fields`` parameter is given.
DEFAULT_FIELDS = (
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
    "samaccount_name",
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


def envelope_error(code: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"status": {"error": True, "code": code, "type": kind, "message": message}}
    return JSONResponse(body, status_code=code, headers=headers)


def full_user(**fields: Any) -> dict[str, Any]:
    """A user as OneLogin stores it: every default list field (null unless given) + custom attributes."""
    base: dict[str, Any] = dict.fromkeys(DEFAULT_FIELDS)
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
    samaccount_name="kmensah",
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
        reject_fields: bool = False,
    ) -> None:
        self.users = users if users is not None else [KWAME, LEA, user(3)]
        self.client_id = client_id
        self.client_secret = client_secret
        self.max_page = max_page
        self.reject_fields = reject_fields  # answer 400 to a fields parameter naming custom_attributes
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
        if fields and self.reject_fields and "custom_attributes" in fields:
            return JSONResponse(
                {"message": "Invalid field: custom_attributes", "name": "BadRequestError", "statusCode": 400},
                status_code=400,
            )
        if q.get("cursor"):
            offset, limit = _offset(q["cursor"])
        else:
            offset, limit = 0, int(q.get("limit", 50))
        limit = min(limit, self.max_page)
        page = self.users[offset : offset + limit]
        shown = fields or list(DEFAULT_FIELDS)
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
