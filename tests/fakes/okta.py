"""Fake Okta org: ``/api/v1/users`` with SSWS or Bearer auth, ``Link`` pagination, rate-limit
headers, the ``filter`` for DEPROVISIONED users, and the OAuth token endpoint."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor


def okta_error(code: str, summary: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"errorCode": code, "errorSummary": summary, "errorLink": code, "errorId": "oaeFAKE", "errorCauses": []}
    return JSONResponse(body, status_code=status, headers=headers)


def user(i: int, status: str = "ACTIVE") -> dict[str, Any]:
    return {
        "id": f"00u{i:017d}",
        "status": status,
        "created": "2025-01-10T09:00:00.000Z",
        "type": {"id": "oty1"},
        "profile": {
            "login": f"user{i}@acme.test",
            "email": f"user{i}@acme.test",
            "firstName": f"Ana{i}",
            "lastName": "Silva",
            "mobilePhone": None if i % 2 else f"+351 91{i:07d}",
        },
        "credentials": {"provider": {"type": "OKTA", "name": "OKTA"}},
        "_links": {"self": {"href": f"/api/v1/users/00u{i:017d}"}},
    }


class FakeOkta(FakeVendor):
    def __init__(
        self,
        users: list[dict[str, Any]] | None = None,
        token: str = "00fAkEt0k3n",
        max_page: int = 200,
        client_id: str | None = None,
    ) -> None:
        self.users = users if users is not None else [user(i) for i in range(5)]
        self.token = token
        self.max_page = max_page  # a real server may cap below what the client asks for
        self.client_id = client_id
        self.issued: list[str] = []
        self.remaining = 600
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v1/users", self.list_users),
            Route("/oauth2/v1/token", self.token_endpoint, methods=["POST"]),
        ]

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return header == f"SSWS {self.token}" or header.removeprefix("Bearer ") in self.issued

    async def token_endpoint(self, request: Request) -> Response:
        form = await request.form()
        assertion = str(form.get("client_assertion", ""))
        if form.get("grant_type") != "client_credentials" or not assertion or self.client_id is None:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        import jwt

        claims = jwt.decode(assertion, options={"verify_signature": False})
        if claims.get("iss") != self.client_id or claims.get("aud") != f"{self.url}/oauth2/v1/token":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        token = f"at-{len(self.issued)}-okta"
        self.issued.append(token)
        return JSONResponse(
            {"token_type": "Bearer", "expires_in": 3600, "access_token": token, "scope": "okta.users.read"}
        )

    async def list_users(self, request: Request) -> Response:
        if not self._authorized(request):
            return okta_error("E0000011", "Invalid token provided", 401)
        q = request.query_params
        limit = min(int(q.get("limit", 200)), self.max_page)
        if q.get("filter") == 'status eq "DEPROVISIONED"':
            pool = [u for u in self.users if u["status"] == "DEPROVISIONED"]
        else:
            pool = [u for u in self.users if u["status"] != "DEPROVISIONED"]
        after = q.get("after")
        start = next((i + 1 for i, u in enumerate(pool) if u["id"] == after), 0) if after else 0
        page = pool[start : start + limit]
        self.remaining -= 1
        links = [f'<{self.url}/api/v1/users?limit={limit}>; rel="self"']
        if start + limit < len(pool):
            extra = f"&filter={q['filter']}" if q.get("filter") else ""
            links.append(f'<{self.url}/api/v1/users?after={page[-1]["id"]}&limit={limit}{extra}>; rel="next"')
        headers = {
            "X-Rate-Limit-Limit": "600",
            "X-Rate-Limit-Remaining": str(max(self.remaining, 1)),
            "X-Rate-Limit-Reset": str(int(time.time()) + 60),
        }
        response = JSONResponse(page, headers=headers)
        for link in links:
            response.headers.append("link", link)
        return response
