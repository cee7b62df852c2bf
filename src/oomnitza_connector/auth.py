"""Authentication as ``httpx.Auth`` objects, so "on 401 refresh the token and resend" lives in one place.

Every token obtained here is registered with the redactor before it is used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import httpx

from . import redact


class HeaderToken(httpx.Auth):
    """A fixed credential in a header, e.g. ``Authorization: SSWS <token>`` or ``X-Api-Key: <key>``."""

    def __init__(self, value: str, header: str = "Authorization", scheme: str = "") -> None:
        redact.add_secret(value)
        self.header = header
        self.value = f"{scheme} {value}" if scheme else value

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        request.headers[self.header] = self.value
        yield request


def basic(username: str, password: str) -> httpx.BasicAuth:
    redact.add_secret(password)
    auth = httpx.BasicAuth(username, password)
    redact.add_secret(auth._auth_header.split(" ", 1)[1])  # the base64 form must not leak either
    return auth


# A token fetcher returns (token, seconds until it expires or None).
TokenFetcher = Callable[[], Awaitable[tuple[str, float | None]]]


class RefreshingToken(httpx.Auth):
    """A token obtained by a call (OAuth client credentials, a login), reused until it expires,
    fetched again ahead of expiry and once more when the server answers 401."""

    def __init__(self, fetch: TokenFetcher, *, header: str = "Authorization", scheme: str = "Bearer",
                 leeway: float = 60.0, refresh_on: tuple[int, ...] = (401,)) -> None:
        self.fetch = fetch
        self.header, self.scheme, self.leeway = header, scheme, leeway
        self.refresh_on = refresh_on  # statuses meaning "session expired" (some vendors answer 403)
        self.token: str | None = None
        self.expires_at: float | None = None
        self.lock = asyncio.Lock()

    def _value(self) -> str:
        assert self.token is not None
        return f"{self.scheme} {self.token}" if self.scheme else self.token

    async def _ensure(self, stale: str | None = None) -> None:
        async with self.lock:  # one refresh for many concurrent requests
            fresh = self.token is not None and self.token != stale and (
                self.expires_at is None or time.monotonic() < self.expires_at - self.leeway)
            if fresh:
                return
            token, expires_in = await self.fetch()
            redact.add_secret(token)
            self.token = token
            self.expires_at = time.monotonic() + expires_in if expires_in else None

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await self._ensure()
        used = self.token
        request.headers[self.header] = self._value()
        response = yield request
        if response.status_code in self.refresh_on:
            await response.aread()
            await self._ensure(stale=used)
            request.headers[self.header] = self._value()
            yield request

    def sync_auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        raise RuntimeError("the connector's HTTP layer is async only")
