"""The retry transport: the outcome table, what is repeated for which method, the sync twin, the rate
limiter, closing what is discarded, redacted logging and environment proxies. Every wait goes through
an injected sleep and clock: nothing here really waits."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from oomnitza_connector import redact
from oomnitza_connector.http import (
    SIGN_EXTENSION,
    Action,
    Http,
    HttpAuthError,
    HttpError,
    RateLimiter,
    RetryPolicy,
    environment_proxies,
    judge_error,
    judge_response,
    retry_options,
    sync_client,
)
from tests.test_http_retry import FakeTime, answers, sync

POLICY = RetryPolicy()
REQUEST = httpx.Request("GET", "https://vendor.test/x")


def http_on(handler: Callable[[httpx.Request], httpx.Response], time: FakeTime, **kwargs: Any) -> Http:
    return Http(
        name="[test]",
        base_url="https://vendor.test",
        clock=time.clock,
        sleep=time.sleep,
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


# -- the table ------------------------------------------------------------------------------------


def google_quota(response: httpx.Response) -> bool:
    return response.status_code == 403 and b"rateLimitExceeded" in response.content


@pytest.mark.parametrize(
    ("status", "headers", "body", "validate", "expected"),
    [
        (200, {}, b"{}", None, Action.ACCEPT),
        (204, {}, b"", None, Action.ACCEPT),
        (302, {"Location": "/logon"}, b"", None, Action.ACCEPT),  # a redirect the caller handles
        (200, {}, b"<html>", lambda r: "a proxy page", Action.RETRY),
        (201, {}, b"{}", lambda r: None, Action.ACCEPT),
        (400, {}, b"{}", None, Action.FAIL),
        (401, {}, b"{}", None, Action.FAIL),
        (403, {}, b"{}", None, Action.FAIL),
        (403, {}, b'{"reason": "rateLimitExceeded"}', None, Action.RATE_LIMITED),  # a vendor's throttle signal
        (404, {}, b"{}", None, Action.FAIL),
        (413, {}, b"{}", None, Action.FAIL),
        (429, {}, b"{}", None, Action.RATE_LIMITED),
        (429, {"Retry-After": "3"}, b"{}", None, Action.RATE_LIMITED),
        (500, {}, b"{}", None, Action.RETRY),
        (501, {}, b"{}", None, Action.FAIL),
        (502, {}, b"{}", None, Action.RETRY),
        (503, {}, b"{}", None, Action.RETRY),
        (503, {"Retry-After": "30"}, b"{}", None, Action.RATE_LIMITED),  # "not now": safe for any method
        (504, {}, b"{}", None, Action.RETRY),
    ],
)
def test_answers_table(status: int, headers: dict[str, str], body: bytes, validate: Any, expected: Action) -> None:
    response = httpx.Response(status, headers=headers, content=body, request=REQUEST)
    assert judge_response(response, POLICY, retry_if=google_quota, validate=validate).action is expected


def test_retry_statuses_are_the_policys() -> None:
    soap = RetryPolicy(retry_statuses=frozenset({429, 502, 503, 504}))  # a SOAP fault is an HTTP 500
    assert judge_response(httpx.Response(500, request=REQUEST), soap).action is Action.FAIL


@pytest.mark.parametrize(
    ("error", "action", "reached", "timeout"),
    [
        (
            httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."),
            "fail",
            False,
            False,
        ),
        (httpx.LocalProtocolError("bad header"), "fail", False, False),
        (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "fail", False, False),
        (httpx.ConnectError("[Errno 111] Connection refused"), "retry", False, False),
        (httpx.ConnectTimeout("timed out"), "retry", False, False),
        (httpx.PoolTimeout("no connection"), "retry", False, False),
        (httpx.ProxyError("502 from the proxy"), "retry", False, False),
        (httpx.ReadTimeout("timed out"), "retry", True, True),
        (httpx.WriteTimeout("timed out"), "retry", True, True),
        (httpx.ReadError("connection reset"), "retry", True, False),
        (httpx.RemoteProtocolError("server disconnected"), "retry", True, False),
    ],
)
def test_errors_table(error: httpx.TransportError, action: str, reached: bool, timeout: bool) -> None:
    outcome = judge_error(error)
    assert (outcome.action.value, outcome.reached_server, outcome.timeout) == (action, reached, timeout)


# -- what is repeated ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "idempotent", "answer", "calls", "message"),
    [
        ("GET", None, httpx.Response(503), 8, "failed: 503 Service Unavailable after 8 attempts"),
        ("PUT", None, httpx.Response(502), 8, "after 8 attempts"),
        ("POST", None, httpx.Response(503), 1, "failed: 503 Service Unavailable (not repeated: a POST may have"),
        ("POST", True, httpx.Response(503), 8, "after 8 attempts"),
        ("POST", None, httpx.Response(429), 8, "429 Too Many Requests after 8 attempts"),  # never processed
        ("POST", None, httpx.Response(503, headers={"Retry-After": "1"}), 8, "after 8 attempts"),
        ("POST", None, httpx.ConnectError, 4, "cannot reach https://vendor.test/x"),  # never sent
        ("POST", None, httpx.ReadTimeout, 1, "did not answer in time (not repeated: a POST may have"),
        ("POST", True, httpx.ReadTimeout, 2, "did not answer in time (tried 2 times)"),
        ("POST", None, httpx.RemoteProtocolError, 1, "not repeated: a POST may have taken effect"),
        ("GET", None, httpx.RemoteProtocolError, 4, "request to https://vendor.test/x failed"),  # connect_attempts
        ("GET", None, httpx.Response(400), 1, "failed: 400 Bad Request"),
        ("PATCH", None, httpx.Response(500), 1, "not repeated: a PATCH may have taken effect"),
    ],
)
@sync
async def test_which_requests_are_repeated(
    method: str, idempotent: bool | None, answer: Any, calls: int, message: str
) -> None:
    time = FakeTime()
    handler, seen = answers(answer)
    with pytest.raises(HttpError) as caught:
        await http_on(handler, time).request(method, "/x", idempotent=idempotent)
    assert len(seen) == calls and len(time.sleeps) == calls - 1
    assert message in str(caught.value)


@sync
async def test_retry_false_sends_once() -> None:
    time = FakeTime()
    handler, seen = answers(httpx.Response(503))
    with pytest.raises(HttpError, match=r"failed: 503 Service Unavailable$"):
        await http_on(handler, time).request("GET", "/x", retry=False)
    assert len(seen) == 1 and time.sleeps == []


@sync
async def test_a_url_without_a_scheme_is_not_retried() -> None:
    time = FakeTime()
    http = Http(name="[test]", clock=time.clock, sleep=time.sleep)  # the real transport: it refuses locally
    async with http:
        with pytest.raises(HttpError, match=r"cannot request vendor\.test/api: the URL must start with https://"):
            await http.request("GET", "vendor.test/api")
    assert time.sleeps == []


@sync
async def test_an_untrusted_certificate_is_not_retried() -> None:
    time = FakeTime()
    seen: list[httpx.Request] = []

    def untrusted(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", request=request)

    with pytest.raises(HttpError, match="TLS certificate not trusted"):
        await http_on(untrusted, time).request("GET", "/x")
    assert len(seen) == 1 and time.sleeps == []


@sync
async def test_a_refusal_is_an_auth_error_unless_it_is_a_throttle_signal() -> None:
    time = FakeTime()
    handler, seen = answers(httpx.Response(403, json={"reason": "rateLimitExceeded"}), httpx.Response(200, json={}))
    assert (await http_on(handler, time, retry_if=google_quota).request("GET", "/x")).status_code == 200
    assert len(seen) == 2
    handler, seen = answers(httpx.Response(401))
    with pytest.raises(HttpAuthError, match="was refused with 401 Unauthorized: check the credentials"):
        await http_on(handler, time).request("GET", "/x")
    assert len(seen) == 1


@sync
async def test_ok_statuses_are_returned() -> None:
    handler, _ = answers(httpx.Response(404, json={"error": "gone"}))
    response = await http_on(handler, FakeTime()).request("GET", "/x", ok_statuses=frozenset({404}))
    assert response.status_code == 404 and response.json() == {"error": "gone"}


@sync
async def test_a_request_body_is_sent_again_whole() -> None:
    time = FakeTime()
    handler, seen = answers(httpx.Response(503), httpx.Response(200))

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a": '
        yield b"1}"

    await http_on(handler, time).request("POST", "/x", content=chunks(), idempotent=True)
    assert [r.content for r in seen] == [b'{"a": 1}', b'{"a": 1}']


# -- closing, logging -----------------------------------------------------------------------------


class TrackedStream(httpx.AsyncByteStream):
    def __init__(self, streams: list[TrackedStream]) -> None:
        self.closed = False
        streams.append(self)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"{}"

    async def aclose(self) -> None:
        self.closed = True


@sync
async def test_discarded_answers_are_closed() -> None:
    time = FakeTime()
    streams: list[TrackedStream] = []
    statuses = iter([503, 429, 502, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(statuses), stream=TrackedStream(streams))

    http = http_on(handler, time)
    async with http, http.client.stream("GET", "/x") as response:  # the answer kept by the caller: left open
        assert response.status_code == 200
        assert [s.closed for s in streams] == [True, True, True, False]
    assert streams[-1].closed


@sync
async def test_request_log_lines_carry_no_query_and_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    redact.add_secret("s3cr3t-t0ken-value")
    time = FakeTime()
    handler, _ = answers(httpx.Response(503), httpx.Response(200))
    with caplog.at_level(logging.DEBUG, logger="oomnitza_connector.http"):
        await http_on(handler, time).request("GET", "/x", params={"api_key": "s3cr3t-t0ken-value"})
    text = caplog.text
    assert "GET https://vendor.test/x answered 503; retrying in" in text
    assert "GET https://vendor.test/x → 200" in text
    assert "s3cr3t" not in text and "api_key" not in text


# -- the sync twin ------------------------------------------------------------------------------------


def test_the_sync_twin_follows_the_same_policy() -> None:
    time = FakeTime()
    sleeps: list[float] = []

    def blocking(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
        return sync_client(name="[test]", clock=time.clock, sleep=sleeps.append, transport=httpx.MockTransport(handler))

    handler, seen = answers(httpx.Response(503), httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(200))
    with blocking(handler) as client:
        assert client.get("https://vendor.test/x").status_code == 200
    assert len(seen) == 3 and sleeps[1] == 2.0
    handler, seen = answers(httpx.Response(503))
    with blocking(handler) as client:  # POSTs: flagged per request, as on the async client
        assert client.post("https://vendor.test/x", content=b"x").status_code == 503
        assert len(seen) == 1
        client.post("https://vendor.test/x", content=b"x", extensions=retry_options(idempotent=True))
        assert len(seen) == 1 + 8


# -- rate limits ----------------------------------------------------------------------------------------


def test_rate_limiter_spaces_requests_and_pauses_when_told() -> None:
    now = [100.0]
    limiter = RateLimiter(per_second=2, pause_from=lambda r: float(r.headers["x-wait"]), clock=lambda: now[0])
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.5, 1.0]
    now[0] += 1.0
    limiter.observe(httpx.Response(200, headers={"x-wait": "10"}))
    assert limiter.reserve() == pytest.approx(10.0)


@sync
async def test_the_transport_waits_for_the_limiter() -> None:
    time = FakeTime()
    limiter = RateLimiter(per_second=4, clock=time.clock)
    handler, seen = answers(httpx.Response(200))
    http = http_on(handler, time, limiter=limiter)
    for _ in range(3):
        await http.request("GET", "/x")
    assert len(seen) == 3 and time.sleeps == [0.25, 0.25]


# -- environment proxies --------------------------------------------------------------------------------


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    yield monkeypatch


def test_environment_proxies(clean_proxy_env: pytest.MonkeyPatch) -> None:
    assert environment_proxies() == {}
    clean_proxy_env.setenv("HTTPS_PROXY", "proxy.corp:3128")
    clean_proxy_env.setenv("NO_PROXY", "localhost,.internal.corp")
    assert environment_proxies() == {
        "https://": "http://proxy.corp:3128",
        "all://*localhost": None,
        "all://*internal.corp": None,
    }
    clean_proxy_env.setenv("NO_PROXY", "*")
    assert environment_proxies() == {}


def test_a_client_routes_through_an_environment_proxy(clean_proxy_env: pytest.MonkeyPatch) -> None:
    clean_proxy_env.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    clean_proxy_env.setenv("NO_PROXY", "vendor.internal")
    http = Http(name="[test]")
    proxied = http.client._transport_for_url(httpx.URL("https://vendor.test/"))
    direct = http.client._transport_for_url(httpx.URL("https://api.vendor.internal/"))
    assert proxied is not http.transport and type(proxied).__name__ == "RetryTransport"  # retried too
    assert direct is http.transport


class CountingSigner(httpx.Auth):
    """Signs each request with a new serial, as Chef's signature or a DPoP proof does."""

    def __init__(self) -> None:
        self.serial = 0

    def sign(self, request: httpx.Request) -> None:
        self.serial += 1
        request.headers["X-Signature"] = str(self.serial)

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        self.sign(request)
        request.extensions[SIGN_EXTENSION] = self.sign
        yield request


@sync
async def test_a_repeat_is_signed_afresh() -> None:
    time = FakeTime()
    statuses, signatures = iter([429, 503, 200]), []

    def handler(request: httpx.Request) -> httpx.Response:
        signatures.append(request.headers["x-signature"])  # the same request object, re-signed each time
        return httpx.Response(next(statuses))

    await http_on(handler, time, auth=CountingSigner()).request("GET", "/x")
    assert signatures == ["1", "2", "3"]
