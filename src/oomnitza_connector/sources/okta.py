"""``[okta]``: Okta users via ``/api/v1/users``, following ``Link: rel="next"``.

Auth: the SSWS API token of the seed, or (recommended by Okta) an OAuth 2.0 API Services app with
``private_key_jwt`` client credentials and the ``okta.users.read`` scope, with DPoP-bound tokens
(RFC 9449) when the app requires them. Okta's rate-limit headers (``X-Rate-Limit-Remaining`` /
``-Reset``) pause requests before the budget runs out.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..auth import DpopKey, HeaderToken, RefreshingToken
from ..config import truthy
from ..errors import ConfigError, SourceError
from ..http import Http, HttpAuthError, HttpError, LinkHeader, RateLimiter, decode_json, error_body, reset_pause
from ..ini import parse_bool
from ..settings import Setting
from .base import Record, UsersSource

log = logging.getLogger(__name__)

DEPROVISIONED_FILTER = 'status eq "DEPROVISIONED"'


class Okta(UsersSource):
    module = "okta"
    mapping_name = "Okta"
    summary = "Okta users"
    settings = (
        Setting("url", None, example="https://example.okta.com", help="your Okta org URL"),
        Setting("api_token", "", example="YOUR Okta API TOKEN", secret=True, help="SSWS API token"),
        *UsersSource.role_settings,
        Setting("deprovisioned", "false", help="also sync DEPROVISIONED users"),
        Setting("client_id", "", help="OAuth API Services app client id (instead of api_token)"),
        Setting("private_key_file", "", help="PEM private key of that app (private_key_jwt)"),
        Setting("page_size", "200", help="users per request (Okta's maximum is 200)"),
        Setting("dpop", "auto", help="OAuth app: DPoP-bound tokens: auto (when the app requires them), true or false"),
    )
    default_mappings = {
        "USER": {"source": "profile.login"},
        "FIRST_NAME": {"source": "profile.firstName"},
        "LAST_NAME": {"source": "profile.lastName"},
        "EMAIL": {"source": "profile.email"},
        "PHONE": {"source": "profile.mobilePhone"},
        "PERMISSIONS_ID": {"setting": "default_role"},
    }

    def validate(self) -> None:
        if not self.setting("api_token") and not (self.setting("client_id") and self.setting("private_key_file")):
            raise ConfigError(f"[{self.name}] set api_token, or client_id and private_key_file (OAuth app)")
        if not self.setting("page_size").isdigit() or not 1 <= int(self.setting("page_size")) <= 200:
            raise ConfigError(f"[{self.name}] page_size must be a number from 1 to 200")
        if self.setting("dpop").strip().lower() != "auto":
            parse_bool(self.setting("dpop"), setting=f"[{self.name}] dpop (true, false or auto)")

    @property
    def base(self) -> str:
        return self.setting("url").rstrip("/").removesuffix("/api/v1")

    def _client(self) -> Http:
        limiter = RateLimiter(pause_from=reset_pause("x-rate-limit-remaining", "x-rate-limit-reset"))
        return self.http(
            base_url=self.base,
            headers={"Accept": "application/json"},
            limiter=limiter,
            auth=None if not self.setting("api_token") else HeaderToken(self.setting("api_token"), scheme="SSWS"),
        )

    async def _oauth(self, http: Http) -> None:
        token_url = f"{self.base}/oauth2/v1/token"
        mode = self.setting("dpop").strip().lower()
        want_dpop = mode != "auto" and parse_bool(mode, setting=f"[{self.name}] dpop")

        async def fetch() -> tuple[str, float | None]:
            dpop = auth.dpop or (DpopKey() if want_dpop else None)
            for _ in range(3):  # at most: without DPoP, with it, with the server's nonce
                body = {
                    "grant_type": "client_credentials",
                    "scope": "okta.users.read",
                    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": self._assertion(token_url),  # a new jti each time: Okta refuses replays
                }
                headers = {"DPoP": dpop.proof("POST", token_url)} if dpop is not None else {}
                try:
                    response = await http.request(
                        "POST",
                        token_url,
                        data=body,
                        headers=headers,
                        auth=None,
                        retry=False,
                        ok_statuses=frozenset({400}),
                    )
                except HttpError as exc:
                    raise SourceError(f"[{self.name}] Okta refused the OAuth client credentials: {exc}") from None
                if response.status_code == 400:
                    error = error_body(response)
                    if dpop is None and mode == "auto" and error.get("error") == "invalid_dpop_proof":
                        log.info("[%s] the Okta app requires DPoP: tokens are bound to a key of this run", self.name)
                        dpop = DpopKey()
                        continue
                    if dpop is not None and dpop.asks_for_nonce(response):
                        continue
                    detail = ": ".join(str(v) for v in (error.get("error"), error.get("error_description")) if v)
                    hint = " (set dpop = auto or true)" if error.get("error") == "invalid_dpop_proof" else ""
                    raise SourceError(
                        f"[{self.name}] Okta refused the OAuth client credentials (400 {detail or 'Bad Request'}){hint}"
                    )
                data = decode_json(response)
                auth.dpop = dpop if str(data.get("token_type", "")).lower() == "dpop" else None
                return str(data.get("access_token", "")), float(data.get("expires_in") or 3600)
            raise SourceError(f"[{self.name}] Okta kept refusing the DPoP proof of the token request")

        auth = RefreshingToken(fetch)
        http.client.auth = auth

    def _assertion(self, audience: str) -> str:
        import jwt  # PyJWT, imported only for OAuth apps

        try:
            key = open(self.setting("private_key_file"), encoding="utf-8").read()
        except OSError as exc:
            raise ConfigError(f"[{self.name}] private_key_file: {exc.strerror}") from None
        now = int(time.time())
        claims = {
            "iss": self.setting("client_id"),
            "sub": self.setting("client_id"),
            "aud": audience,
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, key, algorithm="RS256")

    async def pages(self) -> AsyncIterator[list[Record]]:
        async with self._client() as http:
            if not self.setting("api_token"):
                await self._oauth(http)
            passes: list[dict[str, Any]] = [{"limit": self.setting("page_size")}]
            if truthy(self.setting("deprovisioned")):
                passes.append({"limit": self.setting("page_size"), "filter": DEPROVISIONED_FILTER})
            for params in passes:
                try:
                    async for response in http.paginate(LinkHeader(), "/api/v1/users", params=params):
                        users = decode_json(response)
                        if not isinstance(users, list):
                            raise SourceError(
                                f"[{self.name}] Okta answered with {type(users).__name__}, not a list of users"
                            )
                        if not users:
                            break
                        yield users
                except HttpAuthError as exc:
                    raise SourceError(
                        f"[{self.name}] Okta rejected the credentials ({exc.status}{_okta_error(exc)}): check api_token"
                    ) from None


def _okta_error(exc: HttpError) -> str:
    body = error_body(exc)
    code = body.get("errorCode")
    return f" {code} {body.get('errorSummary', '')}".rstrip() if code else ""
