"""The one HTTP layer every source, sink and vendor SDK call goes through.

``RetryTransport`` wraps httpx's own transport and owns what happens to each request on the wire:
TLS from the common settings, the retry policy, the section's rate limit and request logging with
secrets redacted. ``SyncRetryTransport`` is its twin for the blocking libraries that run in worker
threads (zeep, MSAL, google-auth's ambient credentials, the secret stores): same policy, same table,
same log lines. ``Http`` is a thin async client on the transport: it turns the final answer into a
response or one ``HttpError`` line, and runs the one paging loop (``paginate``) that the paginators
at the end of this module drive. A source never writes a retry or a paging loop of its own.

Retry decisions are a table (``judge_error``, ``judge_response``): every answer or error is an
``Outcome`` whose ``Action`` is ACCEPT, FAIL, RETRY or RATE_LIMITED. RATE_LIMITED (429, a
``Retry-After``, a vendor's own throttle signal) and errors before the request reached the server
are retried for any method; other RETRY outcomes (5xx, a read timeout, a dropped connection) only
when repeating the request is safe: GET/HEAD/PUT/DELETE/OPTIONS, or a request flagged
``idempotent=True`` (a token request, a read-only search sent as POST, an Oomnitza bulk upsert).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import enum
import logging
import random
import ssl
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urljoin, urlsplit, urlunsplit

import httpx

from . import redact
from .errors import AuthError, ConfigError, ConnectorError

log = logging.getLogger(__name__)

USER_AGENT = "oomnitza-connector"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
RETRY_EXTENSION = "oomnitza.retry"  # request.extensions key of a request's RetryOptions
# request.extensions key of a callable(request) the transport calls before each repeat: auth that signs
# every request (Chef's signature, a DPoP proof) signs the repeat afresh instead of replaying it.
SIGN_EXTENSION = "oomnitza.sign"
_JSON_EXTENSION = "oomnitza.json"  # response.extensions key of the parsed body (decode_json)


class HttpError(ConnectorError):
    """A request failed for good (after retries where retrying made sense)."""

    def __init__(self, message: str, *, status: int | None = None, response: httpx.Response | None = None):
        super().__init__(message)
        self.status = status
        self.response = response


class HttpAuthError(HttpError, AuthError):
    """401/403: the credential was rejected. Never retried."""


# -- the policy ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Immutable retry policy: which outcomes are retried, and how long to wait.

    Without a ``budget`` the limits are counts (``attempts`` for retried statuses, ``connect_attempts``
    for connection errors). With a ``budget`` (seconds for every try of one request, waits included)
    time is the limit instead: ``Retry-After`` is honoured as long as it fits in what is left of the
    budget, so a throttling storm is ridden out rather than dropped after a fixed count. Either way a
    read timeout (the server took the request and never answered) is tried at most
    ``timeout_attempts`` times: a hung server must not cost the timeout once per connect retry.
    """

    attempts: int = 8  # total tries, first one included
    connect_attempts: int = 4  # fewer when the host cannot be reached: a typo should not stall a minute
    backoff: float = 0.5  # first wait; doubles each retry
    max_backoff: float = 30.0
    max_retry_after: float = 120.0  # a longer Retry-After fails the call instead of stalling the run
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    timeout_attempts: int = 2  # tries that may end in a read/write timeout
    budget: float | None = None  # seconds for all tries of one request; replaces the attempt counts

    def wait(
        self, attempt: int, response: httpx.Response | None, *, elapsed: float = 0.0, timeouts: int = 0
    ) -> float | None:
        """Seconds to wait before try ``attempt + 1``; None when we must give up.
        ``elapsed``: seconds since the first try began; ``timeouts``: tries that timed out so far."""
        if timeouts >= self.timeout_attempts:
            return None
        if self.budget is None:
            if attempt >= (self.attempts if response is not None else self.connect_attempts):
                return None
            left = float("inf")
            longest_retry_after = self.max_retry_after
        else:
            left = self.budget - elapsed
            if left <= 0:
                return None
            longest_retry_after = left
        if response is not None:
            after = retry_after(response)
            if after is not None:
                return after if after <= longest_retry_after else None
        base = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return min(left, base * (0.5 + random.random() / 2))  # jitter: spread clients that failed together

    def give_up_reason(self, response: httpx.Response | None, *, elapsed: float, timeouts: int) -> str:
        """Why ``wait`` said no, for the one error line."""
        if timeouts >= self.timeout_attempts:
            return f"tried {timeouts} times"
        after = retry_after(response) if response is not None else None
        if self.budget is not None:
            if after is not None and after > self.budget - elapsed:
                return f"asked to wait {after:g}s, beyond the retry budget of {self.budget:g}s"
            return f"retry budget of {self.budget:g}s spent"
        if after is not None and after > self.max_retry_after:
            return f"asked to wait {after:.0f}s, more than {self.max_retry_after:.0f}s"
        return ""


DEFAULT_POLICY = RetryPolicy()


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# -- the outcome table ----------------------------------------------------------------------------------


class Action(enum.Enum):
    ACCEPT = "accept"  # the answer goes to the caller
    FAIL = "fail"  # asking again will not help (a 4xx, an untrusted certificate, a URL without a scheme)
    RETRY = "retry"  # transient; repeated only when repeating the request is safe
    RATE_LIMITED = "rate limited"  # the server said "not now": repeated for any method


@dataclass(frozen=True)
class Outcome:
    action: Action
    what: str  # for messages: "503 Service Unavailable", "a proxy page", the error's text
    reached_server: bool = True  # False: nothing was processed, so repeating is safe for any method
    timeout: bool = False  # counted against RetryPolicy.timeout_attempts


# First match wins (httpx's error tree: httpx/_exceptions.py). An untrusted certificate, a ConnectError
# too, is sorted out before this table.
ERROR_TABLE: tuple[tuple[type[httpx.TransportError], Action, bool, bool], ...] = (
    # (error, action, reached the server, is a timeout)
    (httpx.UnsupportedProtocol, Action.FAIL, False, False),  # no http(s):// in the URL: it will not grow one
    (httpx.LocalProtocolError, Action.FAIL, False, False),  # a request HTTP cannot carry
    (httpx.ConnectTimeout, Action.RETRY, False, False),
    (httpx.PoolTimeout, Action.RETRY, False, False),
    (httpx.ProxyError, Action.RETRY, False, False),
    (httpx.ConnectError, Action.RETRY, False, False),
    (httpx.ReadTimeout, Action.RETRY, True, True),
    (httpx.WriteTimeout, Action.RETRY, True, True),
    (httpx.TransportError, Action.RETRY, True, False),  # read/write errors, a dropped connection
)


def _untrusted_certificate(exc: Exception) -> bool:
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower()


def judge_error(exc: httpx.TransportError) -> Outcome:
    what = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and _untrusted_certificate(exc):
        return Outcome(Action.FAIL, what, reached_server=False)
    for kind, action, reached, timeout in ERROR_TABLE:
        if isinstance(exc, kind):
            return Outcome(action, what, reached_server=reached, timeout=timeout)
    return Outcome(Action.RETRY, what)  # pragma: no cover - the last row catches every TransportError


def judge_response(
    response: httpx.Response,
    policy: RetryPolicy,
    *,
    retry_if: Callable[[httpx.Response], bool] | None = None,
    validate: Callable[[httpx.Response], str | None] | None = None,
) -> Outcome:
    """Sort an answer. ``retry_if``: a vendor's throttle signal that is not a 429 (Google's 403
    quota reasons, Control Center's 400 errorCode 40000029). ``validate``: why a 2xx is not the
    API's answer (a proxy's HTML page), or None. The body of a 4xx/5xx has been read."""
    status = response.status_code
    if status < 400:
        problem = validate(response) if validate is not None and status < 300 else None
        return Outcome(Action.ACCEPT, "") if problem is None else Outcome(Action.RETRY, problem)
    what = f"{status} {response.reason_phrase}".strip()
    if retry_if is not None and retry_if(response):
        return Outcome(Action.RATE_LIMITED, what)
    if status in policy.retry_statuses:
        limited = status == 429 or retry_after(response) is not None
        return Outcome(Action.RATE_LIMITED if limited else Action.RETRY, what)
    return Outcome(Action.FAIL, what)


@dataclass
class RetryOptions:
    """What one request asks of the retry transport, and how it went (filled in by the transport).
    It travels in ``request.extensions[RETRY_EXTENSION]``; a request without one (a vendor SDK's)
    gets the transport's defaults."""

    retry: bool = True
    idempotent: bool | None = None  # None: by method (IDEMPOTENT_METHODS)
    policy: RetryPolicy | None = None  # replaces the client's policy for this request
    validate: Callable[[httpx.Response], str | None] | None = None
    attempts: int = 0
    outcome: Outcome | None = None  # of the last try
    exhausted: bool = False  # the last outcome was retriable but the policy said stop
    gave_up: str = ""  # why it was not tried again, for the one error line


def retry_options(**options: Any) -> dict[str, RetryOptions]:
    """``extensions=`` for an httpx call on a client of this module: ``retry_options(idempotent=True)``."""
    return {RETRY_EXTENSION: RetryOptions(**options)}


# -- TLS, proxies, URLs -----------------------------------------------------------------------------------


def safe_url(url: str | httpx.URL) -> str:
    """The URL without query string and credentials: safe to print (queries may carry tokens)."""
    parts = urlsplit(str(url))
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class TlsOptions:
    verify: bool = True
    cacert_file: str = ""
    cacert_dir: str = ""
    client_cert: str = ""  # PEM with certificate and unencrypted key (user_pem_file)

    def context(self) -> ssl.SSLContext | bool:
        if not self.verify and not self.client_cert:
            return False
        ctx = ssl.create_default_context(cafile=self.cacert_file or None, capath=self.cacert_dir or None)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.client_cert:
            try:
                ctx.load_cert_chain(self.client_cert)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"user_pem_file '{self.client_cert}' cannot be used: {exc}") from None
        return ctx


def environment_proxies() -> dict[str, str | None]:
    """``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY`` as httpx mount patterns (pattern → proxy URL, or
    None for "direct"). httpx reads them itself only for clients without their own transport."""
    found = urllib.request.getproxies()
    bypass = [host.strip() for host in (found.get("no") or "").split(",") if host.strip()]
    proxies: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        url = found.get(scheme)
        if url:
            proxies[f"{scheme}://"] = url if "://" in url else f"http://{url}"
    if not proxies or "*" in bypass:
        return {}
    for host in bypass:
        proxies[f"all://*{host.lstrip('*').lstrip('.')}"] = None  # the host and its subdomains go direct
    return proxies


def classify_transport_error(exc: Exception, url: str) -> str:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return f"cannot reach {url}: connection timed out"
    if isinstance(exc, httpx.ReadTimeout):
        return f"{url} did not answer in time"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return f"cannot request {url or 'an empty URL'}: the URL must start with https:// (or http://)"
    if isinstance(exc, httpx.ConnectError):
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            return (
                f"cannot reach {url}: TLS certificate not trusted ({reason}); "
                "set cacert_file to its CA bundle, or verify_ssl = false"
            )
        return f"cannot reach {url}: {reason}"
    return f"request to {url} failed: {reason}"


# -- rate limits ----------------------------------------------------------------------------------------


class RateLimiter:
    """Keeps a source within a vendor's limits: a cap on requests per second, and a pause when the
    vendor says the budget is spent (``X-Rate-Limit-Remaining: 0`` until ``X-Rate-Limit-Reset``).
    Thread-safe: the async transport and its sync twin may share one."""

    def __init__(
        self,
        per_second: float | None = None,
        pause_from: Callable[[httpx.Response], float | None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self.pause_from = pause_from
        self.clock = clock
        self._next = 0.0
        self._resume = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; seconds to wait before sending."""
        with self._lock:
            now = self.clock()
            start = max(now, self._next, self._resume)
            self._next = start + self.interval
        return start - now

    def observe(self, response: httpx.Response) -> None:
        if self.pause_from is None:
            return
        pause = self.pause_from(response)
        if pause and pause > 0:
            with self._lock:
                self._resume = max(self._resume, self.clock() + min(pause, 120.0))
            log.info("rate limit budget spent; pausing requests for %.1fs", pause)


def reset_pause(
    remaining_header: str, reset_header: str, *, epoch: bool = True
) -> Callable[[httpx.Response], float | None]:
    """A ``pause_from`` for the common "remaining / reset" header pair (reset as epoch or seconds)."""

    def pause(response: httpx.Response) -> float | None:
        remaining = response.headers.get(remaining_header)
        reset = response.headers.get(reset_header)
        if remaining is None or reset is None:
            return None
        try:
            if int(float(remaining)) > 0:
                return None
            value = float(reset)
        except ValueError:
            return None
        return value - time.time() if epoch else value

    return pause


# -- the retry transports ---------------------------------------------------------------------------------


@dataclass
class RetryConfig:
    """What the retry transports of one client share."""

    name: str
    policy: RetryPolicy = DEFAULT_POLICY
    limiter: RateLimiter | None = None
    retry_if: Callable[[httpx.Response], bool] | None = None
    clock: Callable[[], float] = time.monotonic


class _Tries:
    """The retry decisions for one request, shared by both transports: count, classify, decide."""

    def __init__(self, config: RetryConfig, request: httpx.Request) -> None:
        options = request.extensions.get(RETRY_EXTENSION)
        self.options = options if isinstance(options, RetryOptions) else RetryOptions()
        self.options.attempts, self.options.outcome, self.options.exhausted, self.options.gave_up = 0, None, False, ""
        self.config = config
        self.policy = self.options.policy or config.policy
        self.method = request.method
        self.where = safe_url(request.url)
        idempotent = self.options.idempotent
        self.replay_safe = request.method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        self.started = config.clock()
        self.timeouts = 0

    def begin(self, request: httpx.Request) -> float:
        self.options.attempts += 1
        sign = request.extensions.get(SIGN_EXTENSION)
        if self.options.attempts > 1 and callable(sign):
            sign(request)
        return time.perf_counter()

    def reads_body(self, response: httpx.Response) -> bool:
        """Error bodies are read (vendor throttle signals live there); a 2xx only to validate it."""
        return response.status_code >= 400 or (self.options.validate is not None and response.status_code < 300)

    def after_error(self, exc: httpx.TransportError, began: float) -> float | None:
        outcome = judge_error(exc)
        if outcome.timeout:
            self.timeouts += 1
        message = redact.scrub(classify_transport_error(exc, self.where))
        log.debug("%s: %s %s: %s (%.2fs)", self.config.name, self.method, self.where, message, _since(began))
        wait = self._decide(outcome, None)
        if wait is not None:
            log.warning(
                "%s: %s; retrying in %.1fs (attempt %d)", self.config.name, message, wait, self.options.attempts
            )
        return wait

    def after_response(self, response: httpx.Response, began: float) -> float | None:
        if self.config.limiter is not None:
            self.config.limiter.observe(response)
        response.elapsed = dt.timedelta(seconds=_since(began))
        outcome = judge_response(response, self.policy, retry_if=self.config.retry_if, validate=self.options.validate)
        log.debug(
            "%s: %s %s → %d (%.2fs)",
            self.config.name,
            self.method,
            self.where,
            response.status_code,
            _since(began),
        )
        wait = self._decide(outcome, response)
        if wait is not None:
            said = f" answered {response.status_code}" if response.status_code >= 400 else f": {outcome.what}"
            log.warning(
                "%s: %s %s%s; retrying in %.1fs (attempt %d)",
                self.config.name,
                self.method,
                self.where,
                said,
                wait,
                self.options.attempts,
            )
        return wait

    def _decide(self, outcome: Outcome, response: httpx.Response | None) -> float | None:
        self.options.outcome = outcome
        if outcome.action in (Action.ACCEPT, Action.FAIL) or not self.options.retry:
            return None
        if outcome.action is Action.RETRY and outcome.reached_server and not self.replay_safe:
            self.options.gave_up = f"not repeated: a {self.method} may have taken effect"
            return None
        elapsed = self.config.clock() - self.started
        wait = self.policy.wait(self.options.attempts, response, elapsed=elapsed, timeouts=self.timeouts)
        if wait is None:
            self.options.exhausted = True
            self.options.gave_up = self.policy.give_up_reason(response, elapsed=elapsed, timeouts=self.timeouts)
        return wait


def _since(began: float) -> float:
    return time.perf_counter() - began


class RetryTransport(httpx.AsyncBaseTransport):
    """httpx's transport (TLS, pool, proxy) wrapped with the retry policy, the rate limit and
    redacted request logging. Discarded answers are closed; the final one is returned as it came
    (its body already read when it is an error)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        config: RetryConfig,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.inner, self.config, self.sleep = inner, config, sleep

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        tries = _Tries(self.config, request)
        await request.aread()  # a body that can be sent again
        while True:
            if self.config.limiter is not None:
                pause = self.config.limiter.reserve()
                if pause > 0:
                    await self.sleep(pause)
            began = tries.begin(request)
            try:
                response = await self.inner.handle_async_request(request)
            except httpx.TransportError as exc:
                wait = tries.after_error(exc, began)
                if wait is None:
                    raise
                await self.sleep(wait)
                continue
            if tries.reads_body(response):
                await response.aread()
            wait = tries.after_response(response, began)
            if wait is None:
                return response
            await response.aclose()
            await self.sleep(wait)

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncRetryTransport(httpx.BaseTransport):
    """The blocking twin of ``RetryTransport``, for libraries that run in worker threads."""

    def __init__(
        self, inner: httpx.BaseTransport, config: RetryConfig, *, sleep: Callable[[float], Any] = time.sleep
    ) -> None:
        self.inner, self.config, self.sleep = inner, config, sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        tries = _Tries(self.config, request)
        request.read()
        while True:
            if self.config.limiter is not None:
                pause = self.config.limiter.reserve()
                if pause > 0:
                    self.sleep(pause)
            began = tries.begin(request)
            try:
                response = self.inner.handle_request(request)
            except httpx.TransportError as exc:
                wait = tries.after_error(exc, began)
                if wait is None:
                    raise
                self.sleep(wait)
                continue
            if tries.reads_body(response):
                response.read()
            wait = tries.after_response(response, began)
            if wait is None:
                return response
            response.close()
            self.sleep(wait)

    def close(self) -> None:
        self.inner.close()


def _async_mounts(
    config: RetryConfig, verify: ssl.SSLContext | bool, limits: httpx.Limits, sleep: Callable[[float], Awaitable[Any]]
) -> dict[str, httpx.AsyncBaseTransport | None]:
    return {
        pattern: None
        if proxy is None
        else RetryTransport(httpx.AsyncHTTPTransport(verify=verify, limits=limits, proxy=proxy), config, sleep=sleep)
        for pattern, proxy in environment_proxies().items()
    }


def _sync_mounts(
    config: RetryConfig, verify: ssl.SSLContext | bool, limits: httpx.Limits, sleep: Callable[[float], Any]
) -> dict[str, httpx.BaseTransport | None]:
    return {
        pattern: None
        if proxy is None
        else SyncRetryTransport(httpx.HTTPTransport(verify=verify, limits=limits, proxy=proxy), config, sleep=sleep)
        for pattern, proxy in environment_proxies().items()
    }


DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=15.0)


def sync_client(
    *,
    name: str,
    base_url: str = "",
    tls: TlsOptions | None = None,
    headers: Mapping[str, str] | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    timeout: httpx.Timeout | float | None = None,
    max_connections: int = 4,
    limiter: RateLimiter | None = None,
    retry_if: Callable[[httpx.Response], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """A blocking ``httpx.Client`` on ``SyncRetryTransport``, for libraries run in worker threads and
    for the secret stores read while the configuration loads. ``transport``: the wire (tests)."""
    verify = (tls or TlsOptions()).context()
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    config = RetryConfig(name=name, policy=policy, limiter=limiter, retry_if=retry_if, clock=clock)
    inner = transport or httpx.HTTPTransport(verify=verify, limits=limits)
    return httpx.Client(
        base_url=base_url,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        transport=SyncRetryTransport(inner, config, sleep=sleep),
        mounts=_sync_mounts(config, verify, limits, sleep) if transport is None else None,
        trust_env=False,  # environment proxies: the mounts above, so they get the retry transport too
        follow_redirects=True,
    )


# -- the async client -------------------------------------------------------------------------------------


class Http:
    """An async HTTP client with the connector's policies. One per section (and one for Oomnitza)."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str = "",
        tls: TlsOptions | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        policy: RetryPolicy = DEFAULT_POLICY,
        timeout: httpx.Timeout | None = None,
        max_connections: int = 10,
        limiter: RateLimiter | None = None,
        retry_if: Callable[[httpx.Response], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``retry_if``: a vendor's throttle signal that is not a 429. ``clock``/``sleep``: injectable,
        so tests run back-off without waiting. ``transport``: the wire under the retry transport (tests)."""
        self.name = name
        self.config = RetryConfig(name=name, policy=policy, limiter=limiter, retry_if=retry_if, clock=clock)
        verify = (tls or TlsOptions()).context()
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        inner = transport or httpx.AsyncHTTPTransport(verify=verify, limits=limits)
        self.transport = RetryTransport(inner, self.config, sleep=sleep)
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
            auth=auth,
            timeout=timeout or DEFAULT_TIMEOUT,
            transport=self.transport,
            mounts=_async_mounts(self.config, verify, limits, sleep) if transport is None else None,
            trust_env=False,  # environment proxies: the mounts above
            follow_redirects=True,
        )

    @property
    def policy(self) -> RetryPolicy:
        return self.config.policy

    async def __aenter__(self) -> Http:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        retry: bool = True,
        idempotent: bool | None = None,
        ok_statuses: frozenset[int] = frozenset(),
        policy: RetryPolicy | None = None,
        validate: Callable[[httpx.Response], str | None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send through the retry transport; return a 2xx/3xx response (or one in ``ok_statuses``)
        or raise HttpError (HttpAuthError for a 401/403 that is not a throttle signal).

        ``idempotent=True``: repeating this POST is safe (see the module docstring). ``policy``
        replaces the client's policy for this call. ``validate`` inspects a 2xx answer and returns
        why it is not the answer the API gives (e.g. a proxy's HTML page with status 200), or None:
        such an answer is a failure and is retried like a 5xx."""
        options = RetryOptions(retry=retry, idempotent=idempotent, policy=policy, validate=validate)
        extensions = {**(kwargs.pop("extensions", None) or {}), RETRY_EXTENSION: options}
        try:
            response = await self.client.request(method, url, extensions=extensions, **kwargs)
        except httpx.TransportError as exc:
            message = redact.scrub(classify_transport_error(exc, self._where(exc, method, url)))
            raise HttpError(f"{message} ({options.gave_up})" if options.gave_up else message) from None
        outcome = options.outcome
        status = response.status_code
        if status in ok_statuses or outcome is None or outcome.action is Action.ACCEPT:
            return response
        where = safe_url(response.request.url)
        if status in (401, 403) and outcome.action is Action.FAIL:
            raise HttpAuthError(
                f"{method} {where} was refused with {status} {response.reason_phrase}: check the credentials",
                status=status,
                response=response,
            )
        detail = outcome.what
        if options.exhausted:
            detail += f" after {options.attempts} attempts"
        if options.gave_up:
            detail += f" ({options.gave_up})"
        raise HttpError(f"{method} {where} failed: {detail}", status=status, response=response)

    def _where(self, exc: httpx.TransportError, method: str, url: str | httpx.URL) -> str:
        if isinstance(exc, httpx.UnsupportedProtocol):  # the URL as given: it has no scheme to show
            return str(url).split("?", 1)[0]
        try:
            return safe_url(exc.request.url)
        except RuntimeError:  # raised before httpx attached the request
            try:
                return safe_url(self.client.build_request(method, url).url)
            except httpx.HTTPError:
                return safe_url(str(url))

    async def get_json(self, url: str | httpx.URL, **kwargs: Any) -> Any:
        response = await self.request("GET", url, **kwargs)
        return decode_json(response)

    async def paginate(
        self,
        paginator: Paginator,
        url: str | httpx.URL,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[httpx.Response]:
        """Yield each page's response; the paginator decides the next request. The one paging loop.
        ``method`` is for search APIs that page a POST (the same body on every page, e.g. Chef).
        A page that is not a 2xx with a body (a 404 in ``ok_statuses``, a 204) ends the listing."""
        first = PageRequest(str(url), dict(params or {}))
        while True:
            page = paginator.request(first)
            response = await self.request(method, page.url, params=page.params or None, **kwargs)
            yield response
            if not 200 <= response.status_code < 300 or response.status_code == 204 or not response.content.strip():
                return
            try:
                paginator.advance(response)
            except RepeatedToken:
                raise HttpError(
                    f"{self.name}: the server gave the same next page again after {safe_url(page.url)}; stopping"
                ) from None
            if paginator.finished:
                return


def error_body(error: HttpError | httpx.Response | None) -> dict[str, Any]:
    """The JSON object an error response carries, or {} (no response, not JSON, not an object).
    Sources read their vendor's error text from it for one-line messages."""
    response = error.response if isinstance(error, HttpError) else error
    if response is None:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def decode_json(response: httpx.Response) -> Any:
    """The parsed body, parsed once per response (the source and its paginator both read it)."""
    if _JSON_EXTENSION in response.extensions:
        return response.extensions[_JSON_EXTENSION]
    try:
        body = response.json()
    except ValueError:
        ctype = response.headers.get("content-type", "?")
        try:
            where = safe_url(response.request.url)
        except RuntimeError:  # a response built by hand
            where = "the server"
        raise HttpError(
            f"{where} returned a body that is not JSON (content-type {ctype})", status=response.status_code
        ) from None
    response.extensions[_JSON_EXTENSION] = body
    return body


# -- pagination -------------------------------------------------------------------------------------------
#
# Singer's shape (singer_sdk/pagination.py): a paginator holds only its token, ``advance(response)``
# asks the strategy (``next_token``) for the next one, None ends the listing and the same token again
# raises. Airbyte's split (requesters/request_option.py): a placement puts the token into the next
# request (a query parameter, the whole URL, or the query of a URL). Vendor quirks are extractor
# functions (``at``, ``header_int``) and small placements, never another loop.


@dataclass
class PageRequest:
    url: str
    params: dict[str, Any] = field(default_factory=dict)


class RepeatedToken(Exception):
    """The server named the page just read as the next one: following it would loop forever."""


Extract = Callable[[httpx.Response], Any]
Placement = Callable[[PageRequest, Any], PageRequest]


def at(*path: str) -> Extract:
    """An extractor: the value at ``path`` in the JSON body (None where the path is missing)."""

    def extract(response: httpx.Response) -> Any:
        value: Any = decode_json(response)
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    return extract


def header_int(name: str) -> Extract:
    """An extractor: a header's value as a count (``X-Total-Count``), None when absent or not a number."""

    def extract(response: httpx.Response) -> int | None:
        value = response.headers.get(name, "").strip()
        return int(value) if value.isdigit() else None

    return extract


def in_query(param: str, **fixed: Any) -> Placement:
    """The token in query parameter ``param`` (none on a first request without a token), with ``fixed``
    parameters on every request (a page size)."""

    def place(request: PageRequest, token: Any) -> PageRequest:
        params = {**request.params, **fixed}
        if token is not None:
            params[param] = token
        return PageRequest(request.url, params)

    return place


def as_url(request: PageRequest, token: Any) -> PageRequest:
    """The token is the next request's whole URL (its query included)."""
    return request if token is None else PageRequest(str(token), {})


def query_of_url(request: PageRequest, token: Any) -> PageRequest:
    """Only the query of the token URL, on our own endpoint (a host named by the server is not followed)."""
    if token is None:
        return request
    return PageRequest(request.url, dict(parse_qsl(urlsplit(str(token)).query, keep_blank_values=True)))


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _size(items: Any) -> int:
    return len(items) if isinstance(items, list) else 0


class Paginator:
    """One listing's position: the token, and whether the listing is done."""

    start: Any = None

    def __init__(self, place: Placement, start: Any = None) -> None:
        self.place = place
        self.token: Any = self.start if start is None else start
        self.finished = False

    def next_token(self, response: httpx.Response) -> Any:
        """The token of the page after ``response``; None when it was the last."""
        raise NotImplementedError

    def placed(self) -> Any:
        """What the placement puts into the request (the token, unless the token is richer)."""
        return self.token

    def request(self, first: PageRequest) -> PageRequest:
        return self.place(first, self.placed())

    def advance(self, response: httpx.Response) -> None:
        token = self.next_token(response)
        if token is None:
            self.finished = True
            return
        if token == self.token:
            raise RepeatedToken(str(token))
        self.token = token


class OffsetLimit(Paginator):
    """``offset`` grows by the records that arrived (a server may send fewer than asked). The listing
    ends on an empty page, at ``total`` when the vendor gives one, when ``more`` says no, or, where the
    vendor promises full pages (``short_page_ends``), on a short page."""

    start = 0

    def __init__(
        self,
        size: int,
        *,
        items: Extract,
        total: Extract | None = None,
        more: Extract | None = None,
        short_page_ends: bool = True,
        offset_param: str = "offset",
        limit_param: str = "limit",
        place: Placement | None = None,
    ) -> None:
        super().__init__(place or in_query(offset_param, **{limit_param: size}))
        self.size, self.items, self.total, self.more, self.short_page_ends = size, items, total, more, short_page_ends

    def next_token(self, response: httpx.Response) -> int | None:
        n = _size(self.items(response))
        if n == 0:
            return None
        offset = int(self.token) + n
        total = _count(self.total(response)) if self.total is not None else None
        if total is not None:
            return offset if offset < total else None
        if self.more is not None:
            return offset if self.more(response) is True else None
        if self.short_page_ends and n < self.size:
            return None
        return offset


class Page(NamedTuple):
    number: int
    seen: int  # records read so far, for a vendor's total


class PageNumber(Paginator):
    """Page ``number`` from ``first``; ends on an empty page, on ``last`` (a vendor's ``lastPage``
    flag), once ``total`` records arrived (counted: a server may cap the page size below ours), or,
    where the vendor promises full pages, on a short page."""

    def __init__(
        self,
        size: int,
        *,
        items: Extract,
        first: int = 1,
        total: Extract | None = None,
        last: Extract | None = None,
        short_page_ends: bool = False,
        page_param: str = "page",
        size_param: str = "per_page",
    ) -> None:
        super().__init__(in_query(page_param, **{size_param: size}), Page(first, 0))
        self.size, self.items, self.total, self.last, self.short_page_ends = size, items, total, last, short_page_ends

    def placed(self) -> int:
        return int(self.token.number)

    def next_token(self, response: httpx.Response) -> Page | None:
        n = _size(self.items(response))
        if n == 0 or (self.last is not None and _true(self.last(response))):
            return None
        seen = self.token.seen + n
        total = _count(self.total(response)) if self.total is not None else None
        if (total is not None and seen >= total) or (self.short_page_ends and n < self.size):
            return None
        return Page(self.token.number + 1, seen)


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


class Cursor(Paginator):
    """An opaque cursor (from the body or a header, by ``extract``) sent back in query parameter
    ``param``. ``extract`` carries the vendor's quirks (a ``has_more`` flag, a cursor hidden in a
    link) and returns None at the end."""

    def __init__(self, extract: Extract, param: str, *, start: Any = None) -> None:
        super().__init__(in_query(param), start)
        self.extract = extract

    def next_token(self, response: httpx.Response) -> Any:
        token = self.extract(response)
        return token if token not in (None, "") else None


class LinkHeader(Paginator):
    """RFC 8288 ``Link: <...>; rel="next"``, resolved against the request URL (Okta, Meraki). ``check``
    may refuse a link (raise) before a credential travels to it."""

    def __init__(self, check: Callable[[str], None] | None = None) -> None:
        super().__init__(as_url)
        self.check = check

    def next_token(self, response: httpx.Response) -> str | None:
        link = response.links.get("next", {}).get("url")
        if not link:
            return None
        link = urljoin(str(response.url), link)
        if self.check is not None:
            self.check(link)
        return link


class NextUrlInBody(Paginator):
    """The body names the next page's URL (``@odata.nextLink``, NetBox ``next``). ``rebase`` moves it
    onto the configured host; ``place=query_of_url`` keeps only its query (NetBox)."""

    def __init__(
        self,
        extract: Extract,
        *,
        rebase: Callable[[str], str] | None = None,
        place: Placement = as_url,
    ) -> None:
        super().__init__(place)
        self.extract, self.rebase = extract, rebase

    def next_token(self, response: httpx.Response) -> str | None:
        link = self.extract(response)
        if not isinstance(link, str) or not link:
            return None
        return self.rebase(link) if self.rebase is not None else link
