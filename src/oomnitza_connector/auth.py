"""Authentication as ``httpx.Auth`` objects, so "on 401 refresh the token and resend" lives in one place.

Every token obtained here is registered with the redactor before it is used.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator

import httpx

from . import redact
from .http import SIGN_EXTENSION


class HeaderToken(httpx.Auth):
    """A fixed credential in a header, e.g. ``Authorization: SSWS <token>`` or ``X-Api-Key: <key>``."""

    def __init__(self, value: str, header: str = "Authorization", scheme: str = "") -> None:
        redact.add_secret(value)
        self.header = header
        self.value = f"{scheme} {value}" if scheme else value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.header] = self.value
        yield request


def basic(username: str, password: str) -> httpx.BasicAuth:
    redact.add_secret(password)
    auth = httpx.BasicAuth(username, password)
    redact.add_secret(auth._auth_header.split(" ", 1)[1])  # the base64 form must not leak either
    return auth


# A token fetcher returns (token, seconds until it expires or None).
TokenFetcher = Callable[[], Awaitable[tuple[str, float | None]]]


class DpopKey:
    """OAuth 2.0 Demonstrating Proof of Possession (RFC 9449): an ephemeral P-256 key for one run,
    and a fresh signed proof for every request, so a stolen token is useless without the key.
    Servers may demand a nonce (``DPoP-Nonce``); the latest one is kept and put in later proofs."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec
        from jwt.algorithms import ECAlgorithm

        self._key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = json.loads(ECAlgorithm.to_jwk(self._key.public_key()))
        self.nonce: str | None = None

    def proof(self, method: str, url: httpx.URL | str, token: str | None = None) -> str:
        import jwt

        target = httpx.URL(str(url))
        claims: dict[str, object] = {
            "htm": method.upper(),
            "htu": str(target.copy_with(query=None, fragment=None)),
            "iat": int(time.time()),
            "jti": str(uuid.uuid4()),
        }
        if self.nonce:
            claims["nonce"] = self.nonce
        if token is not None:  # binds the proof to the access token it accompanies
            digest = hashlib.sha256(token.encode("ascii")).digest()
            claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": self.jwk})

    def asks_for_nonce(self, response: httpx.Response) -> bool:
        """Remember a ``DPoP-Nonce`` the server sent; True when the request must be sent again with it.
        The body of a 400/401 must have been read."""
        nonce = response.headers.get("dpop-nonce")
        if not nonce or nonce == self.nonce:
            return False
        self.nonce = nonce
        if response.status_code not in (400, 401):
            return False
        if "use_dpop_nonce" in response.headers.get("www-authenticate", ""):
            return True
        try:
            body = json.loads(response.content)
        except ValueError:
            return False
        return response.status_code == 400 and isinstance(body, dict) and body.get("error") == "use_dpop_nonce"


class RefreshingToken(httpx.Auth):
    """A token obtained by a call (OAuth client credentials, a login), reused until it expires,
    fetched again ahead of expiry and once more when the server answers 401."""

    def __init__(
        self,
        fetch: TokenFetcher,
        *,
        header: str = "Authorization",
        scheme: str = "Bearer",
        leeway: float = 60.0,
        refresh_on: tuple[int, ...] = (401,),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetch = fetch
        self.clock = clock  # injectable: tests move time instead of waiting for expiry
        self.header, self.scheme, self.leeway = header, scheme, leeway
        self.refresh_on = refresh_on  # statuses meaning "session expired" (some vendors answer 403)
        self.token: str | None = None
        self.expires_at: float | None = None
        self.lock = asyncio.Lock()
        # Set (by the fetcher, once the server issued a DPoP-bound token): every request then
        # carries "Authorization: DPoP <token>" and a proof bound to that token.
        self.dpop: DpopKey | None = None

    def _value(self) -> str:
        assert self.token is not None
        scheme = "DPoP" if self.dpop is not None else self.scheme
        return f"{scheme} {self.token}" if scheme else self.token

    def _apply(self, request: httpx.Request) -> None:
        request.headers[self.header] = self._value()
        if self.dpop is not None:
            request.headers["DPoP"] = self.dpop.proof(request.method, request.url, self.token)
            request.extensions[SIGN_EXTENSION] = self._apply  # a repeat carries a fresh proof (new jti)

    async def _ensure(self, stale: str | None = None) -> None:
        async with self.lock:  # one refresh for many concurrent requests
            fresh = (
                self.token is not None
                and self.token != stale
                and (self.expires_at is None or self.clock() < self.expires_at - self.leeway)
            )
            if fresh:
                return
            token, expires_in = await self.fetch()
            redact.add_secret(token)
            self.token = token
            self.expires_at = self.clock() + expires_in if expires_in else None

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await self._ensure()
        used = self.token
        self._apply(request)
        response = yield request
        if self.dpop is not None and response.status_code in (400, 401):
            await response.aread()
        if self.dpop is not None and self.dpop.asks_for_nonce(response):
            self._apply(request)  # the same token, a new proof carrying the server's nonce
            response = yield request
        if response.status_code in self.refresh_on:
            await response.aread()
            await self._ensure(stale=used)
            self._apply(request)
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("the connector's HTTP layer is async only")
