"""``RefreshingToken`` over the retry transport: a token is reused until shortly before it expires,
fetched again once when the server answers 401, and fetched once for many concurrent requests.
The clock is injected; nothing waits for a real expiry."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from oomnitza_connector.auth import RefreshingToken
from oomnitza_connector.http import Http, HttpAuthError
from tests.test_http_retry import FakeTime, sync


class Issuer:
    """A token endpoint stand-in: hands out tok-1, tok-2, …; ``gate`` holds each fetch until opened."""

    def __init__(self, lifetime: float | None = 3600.0) -> None:
        self.issued: list[str] = []
        self.lifetime = lifetime
        self.gate: asyncio.Event | None = None

    async def fetch(self) -> tuple[str, float | None]:
        if self.gate is not None:
            await self.gate.wait()
        self.issued.append(f"tok-{len(self.issued) + 1}")
        return self.issued[-1], self.lifetime


class Api:
    """The vendor API stand-in: accepts the tokens in ``valid``, answers 401 otherwise."""

    def __init__(self, *valid: str) -> None:
        self.valid = set(valid)
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.seen.append(token)
        return httpx.Response(200, json={}) if token in self.valid else httpx.Response(401)


def client(api: Api, auth: RefreshingToken, time: FakeTime) -> Http:
    return Http(
        name="[test]",
        base_url="https://vendor.test",
        auth=auth,
        clock=time.clock,
        sleep=time.sleep,
        transport=httpx.MockTransport(api),
    )


@sync
async def test_a_token_is_reused_until_shortly_before_it_expires() -> None:
    time, issuer = FakeTime(), Issuer(lifetime=600.0)
    api = Api("tok-1", "tok-2")
    http = client(api, RefreshingToken(issuer.fetch, leeway=60.0, clock=time.clock), time)
    await http.request("GET", "/a")
    time.now = 539.0  # 61 s before expiry: still good
    await http.request("GET", "/a")
    assert issuer.issued == ["tok-1"]
    time.now = 541.0  # within the leeway: fetched ahead of expiry, not after a 401
    await http.request("GET", "/a")
    assert issuer.issued == ["tok-1", "tok-2"] and api.seen == ["tok-1", "tok-1", "tok-2"]


@sync
async def test_a_token_without_expiry_lasts_until_refused() -> None:
    time, issuer = FakeTime(), Issuer(lifetime=None)
    http = client(Api("tok-1"), RefreshingToken(issuer.fetch, clock=time.clock), time)
    time.now = 10**6
    await http.request("GET", "/a")
    await http.request("GET", "/a")
    assert issuer.issued == ["tok-1"]


@sync
async def test_one_refresh_on_401() -> None:
    time, issuer = FakeTime(), Issuer()
    api = Api("tok-2")  # tok-1 was revoked server-side
    http = client(api, RefreshingToken(issuer.fetch, clock=time.clock), time)
    assert (await http.request("GET", "/a")).status_code == 200
    assert issuer.issued == ["tok-1", "tok-2"] and api.seen == ["tok-1", "tok-2"]


@sync
async def test_a_second_401_is_the_answer() -> None:
    time, issuer = FakeTime(), Issuer()
    api = Api()  # no token is good: the credential itself is wrong
    http = client(api, RefreshingToken(issuer.fetch, clock=time.clock), time)
    with pytest.raises(HttpAuthError, match="401"):
        await http.request("GET", "/a")
    assert issuer.issued == ["tok-1", "tok-2"] and len(api.seen) == 2  # one refresh, no loop, no retry


@sync
async def test_concurrent_requests_fetch_once() -> None:
    time, issuer = FakeTime(), Issuer()
    issuer.gate = asyncio.Event()
    api = Api("tok-1")
    http = client(api, RefreshingToken(issuer.fetch, clock=time.clock), time)
    requests = [asyncio.create_task(http.request("GET", f"/a/{n}")) for n in range(10)]
    await asyncio.sleep(0)  # every request is now waiting on the one fetch
    issuer.gate.set()
    await asyncio.gather(*requests)
    assert issuer.issued == ["tok-1"] and api.seen == ["tok-1"] * 10


@sync
async def test_concurrent_401s_refresh_once() -> None:
    time, issuer = FakeTime(), Issuer()
    api = Api("tok-1")
    auth = RefreshingToken(issuer.fetch, clock=time.clock)
    http = client(api, auth, time)
    await http.request("GET", "/a")
    api.valid = {"tok-2"}  # the session ended server-side: every request in flight meets a 401
    await asyncio.gather(*(http.request("GET", f"/b/{n}") for n in range(5)))
    assert issuer.issued == ["tok-1", "tok-2"]  # the requests that saw tok-1 refused share one refresh
    assert api.seen.count("tok-2") == 5
