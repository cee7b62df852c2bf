"""Fake CyberArk Conjur: API-key authentication returning an access token (base64 on request),
``Token token="…"`` authorization, URL-encoded variable ids, token expiry."""

from __future__ import annotations

import base64
import json
import secrets

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor


class FakeConjur(FakeVendor):
    def __init__(self, account: str = "zendesk", login: str = "admin", api_key: str = "3x4mpl3-ap1-k3y") -> None:
        self.account, self.login, self.api_key = account, login, api_key
        self.variables: dict[str, str] = {}
        self.tokens: dict[str, int] = {}  # base64 token -> uses left
        self.uses_per_token = 1000
        self.authentications = 0
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/authn/{account}/{login:path}/authenticate", self.authenticate, methods=["POST"]),
            Route("/secrets/{account}/variable/{identifier:path}", self.variable),
        ]

    async def authenticate(self, request: Request) -> Response:
        body = (await request.body()).decode()
        if (request.path_params["account"], request.path_params["login"], body) != (
            self.account,
            self.login,
            self.api_key,
        ):
            return PlainTextResponse("", status_code=401)
        self.authentications += 1
        raw = json.dumps(
            {
                "protected": "eyJhbGciOiJjb25qdXIub3JnL3Nsb3NpbG8vdjIifQ==",
                "payload": secrets.token_urlsafe(16),
                "signature": "c2ln",
            }
        )
        token = base64.b64encode(raw.encode()).decode()
        self.tokens[token] = self.uses_per_token
        if request.headers.get("accept-encoding") == "base64":
            return PlainTextResponse(token)
        return PlainTextResponse(raw, media_type="application/json")

    async def variable(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix('Token token="').removesuffix('"')
        if self.tokens.get(token, 0) <= 0:
            return PlainTextResponse("", status_code=401)
        self.tokens[token] -= 1
        if request.path_params["account"] != self.account:
            return PlainTextResponse("", status_code=403)
        identifier = request.path_params["identifier"]  # starlette has decoded %2F
        if identifier not in self.variables:
            return PlainTextResponse(f"variable {identifier} not found", status_code=404)
        return Response(self.variables[identifier], media_type="application/octet-stream")
