"""Fake Okta org: ``/api/v1/users`` and the org authorization server's token endpoint. Each
behaviour and where it comes from:

- Auth: ``Authorization: SSWS <api token>`` (developer.okta.com "Create an API token"), or an
  OAuth 2.0 API Services app: ``POST /oauth2/v1/token`` with ``grant_type=client_credentials``,
  ``scope=okta.users.read`` and a ``private_key_jwt`` client assertion (``iss`` = ``sub`` = client
  id, ``aud`` = the token URL, a ``jti`` never seen before). The assertion's signature is checked
  against the app's registered public keys; with several keys the JWT header must name one in
  ``kid``, else 401 ``invalid_client`` "The client_assertion JWT kid is invalid." (developer.okta.com
  "Implement OAuth for Okta with a service app"; support.okta.com "Creating a Private Key JWT when a
  Client Has Multiple Public/Private Key Pairs"). RSA and EC keys are accepted.
- Admin role: an app's token without an admin role assigned to the app is refused on every call
  with 403 ``E0000006`` "You do not have permission to perform the requested action"
  (developer.okta.com "Assign admin roles to the OAuth 2.0 service app"; support.okta.com "How to
  Assign the Correct Admin Role to a Service Application").
- Paging: ``limit`` (at most 200; ``max_page`` caps it lower, the harder case) and ``Link:
  <…?after=…>; rel="next"`` headers, one per link (developer.okta.com "Pagination"). Users with
  status DEPROVISIONED only come with ``filter=status eq "DEPROVISIONED"`` (List all users).
- Rate limits: every answer carries ``X-Rate-Limit-Limit``, ``-Remaining`` and ``-Reset`` (UTC
  epoch seconds) (developer.okta.com "Rate limit best practices"). ``throttle()`` opens a window
  in which every request is 429 ``E0000047`` with those headers and a ``Date``, and no
  ``Retry-After``, until the reset time: a client that retries sooner is throttled again (okta
  /okta-sdk-python ``request_executor.py`` waits ``X-Rate-Limit-Reset - Date + 1`` and demands both
  headers on a 429).
- Errors: Okta's body ``{"errorCode", "errorSummary", "errorLink", "errorId", "errorCauses"}``; a bad
  token is 401 ``E0000011`` "Invalid token provided".

With ``require_dpop`` the OAuth app behaves as one with "Require DPoP header in token requests"
(RFC 9449 as Okta implements it): a token request without a proof gets ``invalid_dpop_proof``, a
proof without the server's nonce gets ``use_dpop_nonce`` and a ``DPoP-Nonce`` header, tokens are
issued as ``token_type: DPoP`` bound to the proof's key, and ``/api/v1/users`` then wants
``Authorization: DPoP <token>`` with a fresh proof (method, URL, ``ath``) signed by that key."""

from __future__ import annotations

import base64
import hashlib
import json
import math
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
        require_dpop: bool = False,
        resource_nonce: bool = False,
    ) -> None:
        self.users = users if users is not None else [user(i) for i in range(5)]
        self.token = token
        self.max_page = max_page  # a real server may cap below what the client asks for
        self.client_id = client_id
        self.issued: list[str] = []
        self.remaining = 600
        self.require_dpop = require_dpop
        self.resource_nonce = resource_nonce  # /api/v1/users also wants the nonce in proofs (RFC 9449 §9)
        self.nonce = "n-0"  # the token endpoint's
        self.resource_nonce_value = "rs-1"  # /api/v1/users' own (when resource_nonce)
        self.bound: dict[str, str] = {}  # DPoP token -> thumbprint of the key it is bound to
        self.proof_ids: set[str] = set()  # jti of every proof seen (a replay is refused)
        self.client_assertion_ids: set[str] = set()
        self.app_keys: dict[str, Any] = {}  # kid -> the app's registered public key (empty: not checked)
        self.admin_role = True  # the API Services app has an admin role assigned
        self.throttle_next: float = 0.0  # seconds of throttling that the next users request starts
        self.throttled_until = 0.0
        self.throttled: list[float] = []  # when each 429 was answered
        super().__init__()

    def throttle(self, seconds: float = 1.0) -> None:
        """The next users request hits the rate limit for ``seconds`` (rounded up to Okta's whole seconds)."""
        self.throttle_next = seconds

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v1/users", self.list_users),
            Route("/oauth2/v1/token", self.token_endpoint, methods=["POST"]),
        ]

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("DPoP "):
            token = header.removeprefix("DPoP ")
            claims = self._proof(request, token=token, nonce=self.resource_nonce_value if self.resource_nonce else None)
            return claims is not None and self.bound.get(token) == claims["_jkt"]
        token = header.removeprefix("Bearer ")
        return header == f"SSWS {self.token}" or (token in self.issued and token not in self.bound)

    def _proof(self, request: Request, *, token: str | None = None, nonce: str | None = None) -> dict[str, Any] | None:
        """The verified claims of the request's DPoP proof (plus ``_jkt``, its key's thumbprint), or None."""
        import jwt

        proof = request.headers.get("dpop", "")
        try:
            header = jwt.get_unverified_header(proof)
            if header.get("typ") != "dpop+jwt" or header.get("alg") != "ES256":
                return None
            key = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(header["jwk"]))
            claims = jwt.decode(proof, key, algorithms=["ES256"])  # type: ignore[arg-type]
        except (jwt.PyJWTError, KeyError, ValueError):
            return None
        url = str(request.url).split("?", 1)[0]
        if claims.get("htm") != request.method or claims.get("htu") != url or claims.get("jti") in self.proof_ids:
            return None
        if abs(time.time() - float(claims.get("iat", 0))) > 300:
            return None
        if nonce is not None and claims.get("nonce") != nonce:
            return None
        if token is not None:
            ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
            if claims.get("ath") != ath:
                return None
        self.proof_ids.add(claims["jti"])
        jwk = header["jwk"]
        canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
        claims["_jkt"] = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).decode()
        return claims

    async def token_endpoint(self, request: Request) -> Response:
        form = await request.form()
        assertion = str(form.get("client_assertion", ""))
        if form.get("grant_type") != "client_credentials" or not assertion or self.client_id is None:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        import jwt

        claims = jwt.decode(assertion, options={"verify_signature": False})
        if self.app_keys:
            kid = jwt.get_unverified_header(assertion).get("kid")
            key = self.app_keys.get(kid) if kid else next(iter(self.app_keys.values()))
            if key is None or (not kid and len(self.app_keys) > 1):
                return JSONResponse(
                    {"error": "invalid_client", "error_description": "The client_assertion JWT kid is invalid."}, 401
                )
            try:
                jwt.decode(assertion, key, algorithms=["RS256", "ES256", "ES384", "ES512"], audience=claims.get("aud"))
            except jwt.PyJWTError:
                return JSONResponse(
                    {
                        "error": "invalid_client",
                        "error_description": "The client_assertion signature is invalid.",
                    },
                    401,
                )
        if claims.get("iss") != self.client_id or claims.get("aud") != f"{self.url}/oauth2/v1/token":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if claims.get("jti") in self.client_assertion_ids:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "The client_assertion token has already been used."},
                401,
            )
        self.client_assertion_ids.add(claims.get("jti"))
        token_type, jkt = "Bearer", None
        if self.require_dpop:
            if "dpop" not in request.headers:
                return JSONResponse(
                    {"error": "invalid_dpop_proof", "error_description": "The DPoP proof JWT header is missing."}, 400
                )
            proof = self._proof(request)
            if proof is None:
                return JSONResponse(
                    {"error": "invalid_dpop_proof", "error_description": "The DPoP proof JWT is invalid."}, 400
                )
            if proof.get("nonce") != self.nonce:
                return JSONResponse(
                    {
                        "error": "use_dpop_nonce",
                        "error_description": "Authorization server requires nonce in DPoP proof.",
                    },
                    400,
                    headers={"DPoP-Nonce": self.nonce},
                )
            token_type, jkt = "DPoP", proof["_jkt"]
        token = f"at-{len(self.issued)}-okta"
        self.issued.append(token)
        if jkt is not None:
            self.bound[token] = jkt
        return JSONResponse(
            {"token_type": token_type, "expires_in": 3600, "access_token": token, "scope": "okta.users.read"}
        )

    def _rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        return {
            "X-Rate-Limit-Limit": "600",
            "X-Rate-Limit-Remaining": str(remaining),
            "X-Rate-Limit-Reset": str(int(reset)),
        }  # the server (uvicorn) adds Date to every answer, as Okta's does

    async def list_users(self, request: Request) -> Response:
        now = time.time()
        if self.throttle_next:
            self.throttled_until, self.throttle_next = math.ceil(now + self.throttle_next), 0.0
        if now < self.throttled_until:
            self.throttled.append(now)
            body = {
                "errorCode": "E0000047",
                "errorSummary": "API call exceeded rate limit due to too many requests.",
                "errorLink": "E0000047",
                "errorId": "oaeFAKE47",
                "errorCauses": [],
            }
            return JSONResponse(body, status_code=429, headers=self._rate_headers(0, self.throttled_until))
        if not self._authorized(request):
            if self.resource_nonce and request.headers.get("authorization", "").startswith("DPoP "):
                return okta_error(
                    "E0000011",
                    "Invalid token provided",
                    401,
                    headers={
                        "WWW-Authenticate": 'DPoP error="use_dpop_nonce", error_description="Resource server requires '
                        'nonce in DPoP proof"',
                        "DPoP-Nonce": self.resource_nonce_value,
                    },
                )
            return okta_error("E0000011", "Invalid token provided", 401)
        if not self.admin_role and not request.headers.get("authorization", "").startswith("SSWS "):
            return okta_error("E0000006", "You do not have permission to perform the requested action", 403)
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
        response = JSONResponse(page, headers=self._rate_headers(max(self.remaining, 1), now + 60))
        for link in links:
            response.headers.append("link", link)
        return response
