"""RetryPolicy and Http.request's retry loop with an injected clock and sleep: a time budget instead
of a fixed count, Retry-After beyond the per-request cap, read timeouts not multiplied by the
connect-retry count, and 2xx answers that are not the API's. No real waiting. The bulk POSTs are
flagged ``idempotent`` as the sink flags them (an upsert by sync key within one portion)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from oomnitza_connector.http import DEFAULT_POLICY, Http, HttpError, RetryPolicy


def sync(test: Callable[..., Any]) -> Callable[..., Any]:
    """Run an async test body on a fresh event loop (the suite has no async test plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps (or a handler says so)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_http(
    handler: Callable[[httpx.Request], httpx.Response], time: FakeTime, policy: RetryPolicy = DEFAULT_POLICY
) -> Http:
    return Http(
        name="[test]",
        base_url="https://oomnitza.test",
        policy=policy,
        clock=time.clock,
        sleep=time.sleep,
        transport=httpx.MockTransport(handler),
    )


def answers(*responses: httpx.Response | type[Exception]) -> tuple[Callable[[httpx.Request], httpx.Response], list]:
    """A handler that plays ``responses`` in order (the last one repeats); exception classes are raised."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        item = responses[min(len(calls), len(responses)) - 1]
        if isinstance(item, type):
            raise item("simulated", request=request)
        return item

    return handler, calls


def throttled(after: str) -> httpx.Response:
    return httpx.Response(429, headers={"Retry-After": after})


OK = httpx.Response(200, json={"portion": "p", "received": 1})


# -- the policy as a table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy, attempt, after, elapsed, timeouts, expected",
    [
        (RetryPolicy(), 1, "5", 0.0, 0, 5.0),
        (RetryPolicy(), 8, "5", 0.0, 0, None),  # count mode: 8 tries
        (RetryPolicy(), 1, "600", 0.0, 0, None),  # count mode: beyond max_retry_after
        (RetryPolicy(budget=900), 1, "600", 0.0, 0, 600.0),  # budget mode: fits in the budget
        (RetryPolicy(budget=900), 50, "1", 10.0, 0, 1.0),  # no count limit in budget mode
        (RetryPolicy(budget=900), 1, "600", 400.0, 0, None),  # does not fit in what is left
        (RetryPolicy(budget=900), 1, "1", 900.0, 0, None),  # budget spent
        (RetryPolicy(budget=900), 1, "1", 0.0, 2, None),  # read timeouts: at most 2 tries
        (RetryPolicy(), 1, "1", 0.0, 2, None),
    ],
)
def test_policy_wait(
    policy: RetryPolicy, attempt: int, after: str, elapsed: float, timeouts: int, expected: float | None
) -> None:
    response = throttled(after)
    assert policy.wait(attempt, response, elapsed=elapsed, timeouts=timeouts) == expected


def test_backoff_is_jittered_and_capped_by_what_is_left_of_the_budget() -> None:
    policy = RetryPolicy(budget=10, backoff=4, max_backoff=30)
    for _ in range(50):
        assert 2.0 <= policy.wait(1, None) <= 4.0
        assert policy.wait(3, None, elapsed=9.5) == pytest.approx(0.5)


def test_old_callers_keep_working() -> None:
    # Sources call wait(attempt, response) and build RetryPolicy(attempts=...) as before.
    assert RetryPolicy(attempts=2).wait(2, httpx.Response(503)) is None
    assert RetryPolicy(connect_attempts=2).wait(1, None) is not None


# -- the request loop -----------------------------------------------------------------------------


@sync
async def test_a_retry_after_beyond_the_per_request_cap_is_honoured_within_the_budget() -> None:
    time = FakeTime()
    handler, calls = answers(throttled("180"), throttled("180"), throttled("180"), OK)
    http = make_http(handler, time, RetryPolicy(budget=900))
    response = await http.request("POST", "/api/v3/bulk", idempotent=True)
    assert response.status_code == 200 and len(calls) == 4
    assert time.sleeps == [180.0, 180.0, 180.0]


@sync
async def test_a_429_storm_ends_when_the_budget_is_spent_with_one_clear_reason() -> None:
    time = FakeTime()
    handler, calls = answers(throttled("180"))
    http = make_http(handler, time, RetryPolicy(budget=300))
    with pytest.raises(HttpError) as caught:
        await http.request("POST", "/api/v3/bulk", idempotent=True)
    assert len(calls) == 2 and time.sleeps == [180.0]
    assert "429 Too Many Requests after 2 attempts (asked to wait 180s, beyond the retry budget of 300s)" in str(
        caught.value
    )


@sync
async def test_more_than_eight_429s_are_ridden_out_in_budget_mode() -> None:
    time = FakeTime()
    handler, calls = answers(*[throttled("2")] * 20, OK)
    http = make_http(handler, time, RetryPolicy(budget=300))
    assert (await http.request("POST", "/api/v3/bulk", idempotent=True)).status_code == 200
    assert len(calls) == 21 and sum(time.sleeps) == 40.0


@pytest.mark.parametrize("policy", [RetryPolicy(), RetryPolicy(budget=3600, connect_attempts=10)])
@sync
async def test_a_read_timeout_is_not_multiplied_by_the_connect_retries(policy: RetryPolicy) -> None:
    time = FakeTime()
    calls = []

    def hung(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        time.now += 120  # the request timeout passes
        raise httpx.ReadTimeout("timed out", request=request)

    http = make_http(hung, time, policy)
    with pytest.raises(HttpError, match=r"did not answer in time \(tried 2 times\)"):
        await http.request("POST", "/api/v3/bulk", idempotent=True)
    assert len(calls) == 2 and time.now < 2 * 120 + 5  # two timeouts, not four or eight


@sync
async def test_connection_errors_are_retried_for_the_whole_budget() -> None:
    time = FakeTime()
    handler, calls = answers(httpx.ConnectError)
    http = make_http(handler, time, RetryPolicy(budget=60, backoff=1, max_backoff=8))
    with pytest.raises(HttpError, match=r"retry budget of 60s spent"):
        await http.request("POST", "/api/v3/bulk", idempotent=True)
    assert len(calls) > 4 and time.now == pytest.approx(60)  # an outage of a minute is ridden out


@sync
async def test_an_answer_the_validator_refuses_is_retried_then_accepted() -> None:
    time = FakeTime()
    page = httpx.Response(200, text="<html>blocked</html>", headers={"content-type": "text/html"})
    handler, calls = answers(page, OK)
    http = make_http(handler, time, RetryPolicy(budget=60))

    def proves(response: httpx.Response) -> str | None:
        return None if response.headers.get("content-type") == "application/json" else "not the API's JSON"

    assert (await http.request("POST", "/api/v3/bulk", idempotent=True, validate=proves)).status_code == 200
    assert len(calls) == 2 and len(time.sleeps) == 1


@sync
async def test_an_answer_the_validator_always_refuses_fails_with_its_reason() -> None:
    time = FakeTime()
    handler, calls = answers(httpx.Response(200, text="<html>blocked</html>"))
    http = make_http(handler, time, RetryPolicy(attempts=3))
    with pytest.raises(HttpError, match="failed: a proxy page after 3 attempts"):
        await http.request("POST", "/api/v3/bulk", idempotent=True, validate=lambda r: "a proxy page")
    assert len(calls) == 3


@sync
async def test_a_per_call_policy_replaces_the_clients() -> None:
    time = FakeTime()
    handler, calls = answers(httpx.Response(503))
    http = make_http(handler, time, RetryPolicy(attempts=8))
    with pytest.raises(HttpError):
        await http.request("GET", "/x", policy=RetryPolicy(attempts=2))
    assert len(calls) == 2
