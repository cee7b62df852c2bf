"""``[okta]``: Okta users via ``/api/v1/users``, following ``Link: rel="next"``.

Auth: the SSWS API token of the seed, or (recommended by Okta) an OAuth 2.0 API Services app with
``private_key_jwt`` client credentials (RS256 or ES256 by the key's type, ``kid`` when the app has
several keys) and the ``okta.users.read`` scope, with DPoP-bound tokens (RFC 9449) when the app
requires them. Such an app also needs an admin role (Read-only Administrator): without one every
call is 403 although the token was issued. The Admin Console host (``acme-admin.okta.com``) is
turned into the org host. Okta throttles with 429 and ``X-Rate-Limit-Reset`` (epoch seconds, no
``Retry-After``): requests wait until that reset, measured against the answer's ``Date`` as
Okta's SDKs do; ``X-Rate-Limit-Remaining: 0`` pauses them before the budget runs out.
"""

from __future__ import annotations

import email.utils
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..auth import DpopKey, HeaderToken, RefreshingToken
from ..errors import ConfigError, SourceError
from ..http import Http, HttpAuthError, HttpError, LinkHeader, RateLimiter, decode_json, error_body
from ..settings import BOOL, Bool, File, Int, Setting, Url
from .base import Record, UsersSource

log = logging.getLogger(__name__)

DEPROVISIONED_FILTER = 'status eq "DEPROVISIONED"'
# Okta's Admin Console hosts; the API lives on the org host without "-admin" (Okta SDKs refuse these).
ADMIN_SUFFIXES = ("-admin.okta.com", "-admin.oktapreview.com", "-admin.okta-emea.com")


def org_url(url: str) -> str:
    """The org URL: no trailing ``/``, no ``/api/v1``, and ``acme-admin.okta.com`` → ``acme.okta.com``."""
    parts = urlsplit(url.strip().rstrip("/"))
    host = parts.netloc
    for suffix in ADMIN_SUFFIXES:
        if host.lower().endswith(suffix):
            host = host[: -len(suffix)] + suffix.removeprefix("-admin")
    path = parts.path.rstrip("/").removesuffix("/api/v1")
    return urlunsplit((parts.scheme, host, path, "", ""))


def _server_now(response: httpx.Response) -> float:
    """The answer's ``Date`` as epoch seconds (Okta's reset is on its clock, not ours), else our clock."""
    try:
        return email.utils.parsedate_to_datetime(response.headers.get("date", "")).timestamp()
    except (TypeError, ValueError):
        return time.time()


def okta_pause(response: httpx.Response) -> float | None:
    """Seconds to hold requests: until ``X-Rate-Limit-Reset`` on a 429 (Okta sends no Retry-After) or
    when ``X-Rate-Limit-Remaining`` is 0; one second more for the header's whole-second precision."""
    resets: list[float] = []
    for value in response.headers.get_list("x-rate-limit-reset"):
        for part in value.split(","):
            try:
                resets.append(float(part))
            except ValueError:
                continue
    if not resets:
        return None
    if response.status_code != 429:
        try:
            if int(float(response.headers.get("x-rate-limit-remaining", "1"))) > 0:
                return None
        except ValueError:
            return None
    return max(0.0, min(resets) - _server_now(response)) + 1.0


class Okta(UsersSource):
    module = "okta"
    mapping_name = "Okta"
    summary = "Okta users"
    settings = (
        Setting(
            "url",
            None,
            example="https://example.okta.com",
            kind=Url(),
            help=(
                "the org URL (`https://acme.okta.com` or a custom domain); `/api/v1` may be included. The"
                " Admin Console URL (`https://acme-admin.okta.com`, also on `oktapreview.com` and "
                "`okta-emea.com`) is turned into the org URL"
            ),
        ),
        Setting(
            "api_token",
            "",
            example="YOUR Okta API TOKEN",
            secret=True,
            help="an SSWS API token (acts with the permissions of the admin who created it)",
        ),
        *UsersSource.role_settings,
        Setting("deprovisioned", "false", kind=BOOL, help="also sync `DEPROVISIONED` users"),
        Setting(
            "client_id",
            "",
            help=(
                "instead of `api_token`: the client ID of an OAuth 2.0 API Services app with "
                "`private_key_jwt` and the `okta.users.read` scope (recommended by Okta)"
            ),
        ),
        Setting(
            "private_key_file",
            "",
            kind=File(),
            help=("that app's private key: PEM, unencrypted, RSA (signed RS256) or EC P-256/384/521 (ES256/384/512)"),
        ),
        Setting(
            "kid",
            "",
            help=(
                "OAuth app: the Key ID of that key as registered in the app; needed when the app has more"
                " than one public key (Okta then answers `The client_assertion JWT kid is invalid`)"
            ),
        ),
        Setting("page_size", "200", kind=Int(1, 200), help="users per request (Okta's maximum)"),
        Setting(
            "dpop",
            "auto",
            kind=Bool(also=("auto",)),
            help=(
                "OAuth app: use DPoP-bound tokens (RFC 9449): `auto` does when the app requires them "
                '("Require Demonstrating Proof of Possession (DPoP) header in token requests"), `true` '
                "always, `false` never"
            ),
        ),
    )
    default_mappings = {
        "USER": {"source": "profile.login"},
        "FIRST_NAME": {"source": "profile.firstName"},
        "LAST_NAME": {"source": "profile.lastName"},
        "EMAIL": {"source": "profile.email"},
        "PHONE": {"source": "profile.mobilePhone"},
        "PERMISSIONS_ID": {"setting": "default_role"},
    }

    def validate(self) -> Iterator[str]:
        if not self.setting("api_token") and not (self.setting("client_id") and self.setting("private_key_file")):
            yield f"[{self.name}] set api_token, or client_id and private_key_file (OAuth app)"

    @property
    def base(self) -> str:
        return org_url(self.setting("url"))

    def _client(self) -> Http:
        if self.base != self.setting("url").strip().rstrip("/").removesuffix("/api/v1"):
            log.info("[%s] using the org URL %s (the -admin host is the Admin Console's)", self.name, self.base)
        limiter = RateLimiter(pause_from=okta_pause)
        return self.http(
            base_url=self.base,
            headers={"Accept": "application/json"},
            limiter=limiter,
            auth=None if not self.setting("api_token") else HeaderToken(self.setting("api_token"), scheme="SSWS"),
        )

    async def _oauth(self, http: Http) -> None:
        token_url = f"{self.base}/oauth2/v1/token"
        mode = self.value("dpop")  # True, False or "auto"
        want_dpop = mode is True

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
                    error = error_body(exc)
                    detail = ": ".join(str(v) for v in (error.get("error"), error.get("error_description")) if v)
                    hint = ""
                    if "kid" in str(error.get("error_description", "")):
                        hint = " (set kid to the key ID of the app's public key)"
                    elif exc.status == 401:
                        hint = ": check client_id, private_key_file and that the app's public key matches"
                    raise SourceError(
                        f"[{self.name}] Okta refused the OAuth client credentials "
                        f"({exc.status or ''}{' ' + detail if detail else ''}){hint}"
                    ) from None
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

    def _signing_key(self) -> tuple[Any, str]:
        """The app's private key and its JWS algorithm (Okta accepts RSA and EC keys)."""
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            pem = open(self.setting("private_key_file"), "rb").read()
        except OSError as exc:
            raise ConfigError(f"[{self.name}] private_key_file: {exc.strerror}") from None
        try:
            key = load_pem_private_key(pem, None)
        except (ValueError, TypeError):
            raise ConfigError(
                f"[{self.name}] private_key_file is not an unencrypted PEM private key (RSA or EC)"
            ) from None
        if isinstance(key, rsa.RSAPrivateKey):
            return key, "RS256"
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in EC_ALGORITHMS:
            return key, EC_ALGORITHMS[key.curve.name]
        raise ConfigError(f"[{self.name}] private_key_file: Okta signs with RSA or EC (P-256/384/521) keys only")

    def _assertion(self, audience: str) -> str:
        import jwt  # PyJWT, imported only for OAuth apps

        key, algorithm = self._signing_key()
        now = int(time.time())
        claims = {
            "iss": self.setting("client_id"),
            "sub": self.setting("client_id"),
            "aud": audience,
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        kid = self.setting("kid").strip()
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)

    async def pages(self) -> AsyncIterator[list[Record]]:
        async with self._client() as http:
            if not self.setting("api_token"):
                await self._oauth(http)
            passes: list[dict[str, Any]] = [{"limit": self.setting("page_size")}]
            if self.value("deprovisioned"):
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
                    raise self._refused(exc) from None

    def _refused(self, exc: HttpError) -> SourceError:
        detail = f"{exc.status}{_okta_error(exc)}"
        if exc.status == 403 and not self.setting("api_token"):
            return SourceError(
                f"[{self.name}] Okta refused to list users with the app's token ({detail}): assign the API "
                "Services app an admin role (Applications → the app → Admin roles: Read-only Administrator) "
                "and grant it the okta.users.read scope"
            )
        if exc.status == 403:
            return SourceError(
                f"[{self.name}] Okta refused to list users ({detail}): the admin who created api_token "
                "may not read users (use a Read-only Administrator or higher)"
            )
        what = "the OAuth app (client_id, private_key_file)" if not self.setting("api_token") else "api_token"
        return SourceError(f"[{self.name}] Okta rejected the credentials ({detail}): check {what}")


EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def _okta_error(exc: HttpError) -> str:
    body = error_body(exc)
    code = body.get("errorCode")
    return f" {code} {body.get('errorSummary', '')}".rstrip() if code else ""
