"""Fake CyberArk Conjur (Open Source / Enterprise REST API): API-key authentication, access
tokens that expire, and variable reads with Conjur's own statuses and bodies.

What it follows, per behaviour (CyberArk's docs at docs.conjur.org/Latest/en/Content/Developer/ —
Conjur_API_Authenticate.htm, Conjur_API_Retrieve_Secret.htm, Conjur_Auth_REST_APIs.htm — and the
server source github.com/cyberark/conjur, gem github.com/cyberark/slosilo):

- Routes are matched on the RAW path, as Rails does (config/routes.rb): the login is ONE path
  segment (``id: /[^\\/?]+/``), so ``host/app`` must arrive as ``host%2Fapp``; an unencoded slash
  lands on another route and fails authentication (401). The account may not contain an encoded
  slash (``ExcludeEncodedSlash``). A variable id is a glob (``*identifier``): encoded or not,
  it is decoded before lookup.
- Authenticate: ``POST /authn/{account}/{login}/authenticate``, body = the API key. Any failure
  (unknown account or login, wrong key) is 401 with an EMPTY body (authenticate_controller.rb
  ``error_response`` → ``head response.status``; authn_api_key/v2/strategy.rb). Success: the
  access token as JSON (``{"protected", "payload", "signature"}``, each url-safe base64; the
  payload holds ``sub``, ``iat``, ``exp``: slosilo lib/slosilo/jwt.rb, app/domain/token_factory.rb)
  with ``Content-Type: application/json``; with ``Accept-Encoding: base64`` the same JSON
  base64-encoded, ``Content-Type: text/plain`` and ``Content-Encoding: base64``
  (``render_authn_token``, ``encoded_response?``).
- Token lifetime: 8 minutes by default (lib/conjur/conjur_config.rb
  ``host/user_authorization_token_ttl: 480``; docs "Access tokens expire after 8 minutes");
  ``token_ttl`` changes it (an admin may). Tokens are checked against ``clock`` (a test moves it
  forward instead of waiting). An expired, malformed or unknown token is 401 ``text/plain``
  ``Unauthorized: Invalid token`` (gems/conjur-rack authenticator.rb ``error``; slosilo key.rb
  "token expired"); no Authorization header is 401 ``Authorization missing``.
- Use: ``Authorization: Token token="<base64 token>"`` (Conjur_Auth_REST_APIs.htm).
- Retrieve: ``GET /secrets/{account}/variable/{id}`` → 200, the raw value,
  ``application/octet-stream`` unless the variable's ``conjur/mime_type`` annotation says
  otherwise (secrets_controller.rb ``show``). A variable that does not exist, is not visible to
  the role (no ``read``), or has no value yet is 404
  ``{"error": {"code": "not_found", "message": "CONJ00076E Variable <account>:variable:<id> is
  empty or not found."}}`` (``show`` turns every RecordNotFound into
  ``Errors::Conjur::MissingSecretValue``, app/domain/errors.rb; application_controller.rb
  ``render_secret_not_found``). Visible without ``execute``: 403 with an empty body
  (``authorize(:execute)`` → ``head(:forbidden)``). ``restricted_to`` (CIDR) not matching the
  client: 403 ``IP address rejected`` (conjur-rack). A variable of another account is looked up
  as ``<other>:variable:<id>`` and so is a 404.
- ``roles``: who may do what (``{"login": {"read", "execute"}}``); a login missing from it may
  read and execute everything.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

DEFAULT_TTL = 480  # seconds: Conjur's default access-token lifetime


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()  # Ruby's urlsafe_encode64 keeps the padding


def _unauthorized(message: str) -> Response:
    return PlainTextResponse(message, status_code=401)


class FakeConjur(FakeVendor):
    def __init__(self, account: str = "zendesk", login: str = "admin", api_key: str = "3x4mpl3-ap1-k3y") -> None:
        self.account, self.login, self.api_key = account, login, api_key
        self.variables: dict[str, str] = {}  # id -> value (absent: no such variable)
        self.empty: set[str] = set()  # variables that exist but have no value yet
        self.mime_types: dict[str, str] = {}  # id -> conjur/mime_type annotation
        self.roles: dict[str, set[str]] = {}  # login -> privileges on every variable
        self.restricted = False  # the host's restricted_to excludes the client (403)
        self.token_ttl = DEFAULT_TTL
        self.clock: Callable[[], float] = time.time
        self.tokens: dict[str, tuple[str, float]] = {}  # base64 token -> (login, expiry)
        self.authentications = 0
        self.read_statuses: list[int] = []  # the status of every variable read, in order
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [Route("/{rest:path}", self.dispatch, methods=["GET", "POST"])]

    def expire_tokens(self) -> None:
        """Every token issued so far is past its ``exp`` (as 8 minutes later)."""
        self.tokens = {token: (login, 0.0) for token, (login, _) in self.tokens.items()}

    async def dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path", request.url.path.encode()).split(b"?")[0].decode()
        parts = raw.strip("/").split("/")
        if request.method == "POST" and len(parts) == 4 and parts[0] == "authn" and parts[3] == "authenticate":
            return await self.authenticate(request, parts[1], parts[2])
        if request.method == "POST" and len(parts) > 4 and parts[0] == "authn" and parts[-1] == "authenticate":
            return Response(status_code=401)  # "host/app" unencoded: another authenticator's route, refused
        if request.method == "GET" and len(parts) >= 4 and parts[0] == "secrets" and parts[2] == "variable":
            response = self.variable(request, parts[1], "/".join(parts[3:]))
            self.read_statuses.append(response.status_code)
            return response
        return JSONResponse({"error": {"code": "not_found", "message": "route not found"}}, status_code=404)

    async def authenticate(self, request: Request, account_raw: str, login_raw: str) -> Response:
        body = (await request.body()).decode()
        if "%2f" in account_raw.lower():
            return Response(status_code=404)
        account, login = unquote(account_raw), unquote(login_raw)
        if (account, login, body) != (self.account, self.login, self.api_key):
            return Response(status_code=401)
        self.authentications += 1
        now = self.clock()
        claims = {"sub": login, "iat": int(now), "exp": int(now) + self.token_ttl}
        token_json = json.dumps(
            {
                "protected": _b64url(json.dumps({"alg": "conjur.org/slosilo/v2", "kid": "9a0b"}).encode()),
                "payload": _b64url(json.dumps(claims, separators=(",", ":")).encode()),
                "signature": _b64url(secrets.token_bytes(64)),
            }
        )
        token = base64.b64encode(token_json.encode()).decode()
        self.tokens[token] = (login, now + self.token_ttl)
        encodings = [e.strip().lower() for e in request.headers.get("accept-encoding", "").split(",")]
        if "base64" in encodings:
            return PlainTextResponse(token, headers={"Content-Encoding": "base64"})
        return Response(token_json, media_type="application/json")

    def variable(self, request: Request, account_raw: str, identifier_raw: str) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth:
            return _unauthorized("Authorization missing")
        if not (auth.startswith('Token token="') and auth.endswith('"')):
            return _unauthorized("Unauthorized: Invalid token")
        login, expiry = self.tokens.get(auth[len('Token token="') : -1].strip(), ("", 0.0))
        if not login or self.clock() >= expiry:
            return _unauthorized("Unauthorized: Invalid token")
        if self.restricted:
            return PlainTextResponse("IP address rejected", status_code=403)
        account, identifier = unquote(account_raw), unquote(identifier_raw)
        privileges = self.roles.get(login, {"read", "execute"})
        exists = account == self.account and (identifier in self.variables or identifier in self.empty)
        if not exists or "read" not in privileges:
            return self._missing(account, identifier)
        if "execute" not in privileges:
            return Response(status_code=403)
        if identifier in self.empty:
            return self._missing(account, identifier)
        return Response(
            self.variables[identifier], media_type=self.mime_types.get(identifier, "application/octet-stream")
        )

    @staticmethod
    def _missing(account: str, identifier: str) -> Response:
        message = f"CONJ00076E Variable {account}:variable:{identifier} is empty or not found."
        return JSONResponse({"error": {"code": "not_found", "message": message}}, status_code=404)
