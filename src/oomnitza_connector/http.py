"""The one HTTP layer every source and sink uses.

It owns timeouts, TLS options from the common settings, retries (exponential backoff with jitter on
connection errors, 5xx and 429, honouring ``Retry-After``), request logging with secrets redacted,
and the pagination loop. Sources describe *what* to fetch; they never write a retry or paging loop.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from . import redact
from .errors import AuthError, ConfigError, ConnectorError

log = logging.getLogger(__name__)

USER_AGENT = "oomnitza-connector"


class HttpError(ConnectorError):
    """A request failed for good (after retries where retrying made sense)."""

    def __init__(self, message: str, *, status: int | None = None, response: httpx.Response | None = None):
        super().__init__(message)
        self.status = status
        self.response = response


class HttpAuthError(HttpError, AuthError):
    """401/403: the credential was rejected. Never retried."""


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


def classify_transport_error(exc: Exception, url: str) -> str:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return f"cannot reach {url}: connection timed out"
    if isinstance(exc, httpx.ReadTimeout):
        return f"{url} did not answer in time"
    if isinstance(exc, httpx.ConnectError):
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            return (
                f"cannot reach {url}: TLS certificate not trusted ({reason}); "
                "set cacert_file to its CA bundle, or verify_ssl = false"
            )
        return f"cannot reach {url}: {reason}"
    return f"request to {url} failed: {reason}"


class RateLimiter:
    """Keeps a source within a vendor's limits: a cap on requests per second, and a pause when the
    vendor says the budget is spent (``X-Rate-Limit-Remaining: 0`` until ``X-Rate-Limit-Reset``)."""

    def __init__(
        self, per_second: float | None = None, pause_from: Callable[[httpx.Response], float | None] | None = None
    ) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self.pause_from = pause_from
        self._next = 0.0
        self._resume = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next, self._resume)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)

    def observe(self, response: httpx.Response) -> None:
        if self.pause_from is None:
            return
        pause = self.pause_from(response)
        if pause and pause > 0:
            self._resume = max(self._resume, time.monotonic() + min(pause, 120.0))
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
    ) -> None:
        self.name = name
        self.policy = policy
        self.clock, self.sleep = clock, sleep  # injectable: tests run back-off without waiting
        self.limiter = limiter
        self.retry_if = retry_if  # vendor throttle signals that are not 429 (e.g. a 403 "rate limit")
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.client = httpx.AsyncClient(
            base_url=base_url,
            verify=(tls or TlsOptions()).context(),
            headers={"User-Agent": USER_AGENT, **(headers or {})},
            auth=auth,
            timeout=timeout or httpx.Timeout(120.0, connect=15.0),
            limits=limits,
            follow_redirects=True,
        )

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
        ok_statuses: frozenset[int] = frozenset(),
        policy: RetryPolicy | None = None,
        validate: Callable[[httpx.Response], str | None] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with retries; return a 2xx response (or one in ``ok_statuses``) or raise HttpError.

        ``policy`` replaces the client's policy for this call. ``validate`` inspects a 2xx answer and
        returns why it is not the answer the API gives (e.g. a proxy's HTML page with status 200),
        or None: such an answer is a failure and is retried like a 5xx."""
        policy = policy or self.policy
        started = self.clock()
        attempt = timeouts = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            where = safe_url(self.client.build_request(method, url).url)
            try:
                if self.limiter is not None:
                    await self.limiter.acquire()
                response = await self.client.request(method, url, **kwargs)
                if self.limiter is not None:
                    self.limiter.observe(response)
            except httpx.TransportError as exc:
                message = redact.scrub(classify_transport_error(exc, where))
                # An untrusted certificate will not become trusted by asking again.
                fatal = "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in str(exc).lower()
                if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
                    timeouts += 1
                elapsed = self.clock() - started
                wait = policy.wait(attempt, None, elapsed=elapsed, timeouts=timeouts) if retry and not fatal else None
                if wait is None:
                    reason = (
                        policy.give_up_reason(None, elapsed=elapsed, timeouts=timeouts) if retry and not fatal else ""
                    )
                    raise HttpError(f"{message} ({reason})" if reason else message) from None
                log.warning("%s: %s; retrying in %.1fs (attempt %d)", self.name, message, wait, attempt)
                await self.sleep(wait)
                continue
            status = response.status_code
            problem = None
            if status < 400 or status in ok_statuses:
                problem = validate(response) if validate is not None and status < 300 else None
                if problem is None:
                    return response
            throttled = self.retry_if is not None and self.retry_if(response)
            if problem is None and status in (401, 403) and not throttled:
                raise HttpAuthError(
                    f"{method} {where} was refused with {status} {response.reason_phrase}: check the credentials",
                    status=status,
                    response=response,
                )
            retriable = problem is not None or throttled or status in policy.retry_statuses
            elapsed = self.clock() - started
            wait = policy.wait(attempt, response, elapsed=elapsed, timeouts=timeouts) if retry and retriable else None
            what = problem or f"{status} {response.reason_phrase}"
            if wait is None:
                detail = what
                if retry and retriable:
                    detail += f" after {attempt} attempts"
                    reason = policy.give_up_reason(response, elapsed=elapsed, timeouts=timeouts)
                    if reason:
                        detail += f" ({reason})"
                raise HttpError(f"{method} {where} failed: {detail}", status=status, response=response)
            if problem is not None:
                log.warning(
                    "%s: %s %s: %s; retrying in %.1fs (attempt %d)", self.name, method, where, problem, wait, attempt
                )
            else:
                log.warning(
                    "%s: %s %s answered %d; retrying in %.1fs (attempt %d)",
                    self.name,
                    method,
                    where,
                    status,
                    wait,
                    attempt,
                )
            await response.aclose()
            await self.sleep(wait)

    async def get_json(self, url: str | httpx.URL, **kwargs: Any) -> Any:
        response = await self.request("GET", url, **kwargs)
        return decode_json(response)

    async def paginate(
        self, paginator: Paginator, url: str, *, method: str = "GET", **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        """Yield each page's response; the paginator decides the next request. The one paging loop.
        ``method`` is for search APIs that page a POST (same body on every page, e.g. Chef)."""
        request: PageRequest | None = paginator.first(PageRequest(url, dict(kwargs.pop("params", {}) or {})))
        pages = 0
        seen: set[str] = set()
        while request is not None:
            url_obj = httpx.URL(request.url)
            if request.params:
                url_obj = url_obj.copy_merge_params(request.params)
            key = str(url_obj)
            if key in seen:  # a server repeating a token would loop forever
                raise HttpError(f"{self.name}: pagination repeated the request {safe_url(request.url)}; stopping")
            seen.add(key)
            response = await self.request(method, url_obj, **kwargs)
            pages += 1
            yield response
            request = paginator.next(response, request)


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
    try:
        return response.json()
    except ValueError:
        ctype = response.headers.get("content-type", "?")
        raise HttpError(
            f"{safe_url(response.request.url)} returned a body that is not JSON (content-type {ctype})",
            status=response.status_code,
        ) from None


# -- pagination -------------------------------------------------------------------------------------


@dataclass
class PageRequest:
    url: str
    params: dict[str, Any]


class Paginator:
    """Computes the next request from a response. Holds only its token."""

    def first(self, request: PageRequest) -> PageRequest:
        return request

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        raise NotImplementedError


class SinglePage(Paginator):
    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        return None


class LinkHeader(Paginator):
    """RFC 8288 ``Link: <...>; rel="next"`` (Okta, Meraki, GitHub-style APIs)."""

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        nxt = response.links.get("next", {}).get("url")
        return PageRequest(nxt, {}) if nxt else None


class NextUrlInBody(Paginator):
    """The body names the next page's absolute URL (``@odata.nextLink``, NetBox ``next``)."""

    def __init__(self, extract: Callable[[Any], str | None]) -> None:
        self.extract = extract

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        nxt = self.extract(decode_json(response))
        return PageRequest(nxt, {}) if nxt else None


class OffsetLimit(Paginator):
    """``offset``/``limit`` parameters; a short page ends the listing."""

    def __init__(
        self,
        count: Callable[[Any], int],
        limit: int,
        *,
        offset_param: str = "offset",
        limit_param: str = "limit",
        start: int = 0,
    ) -> None:
        self.count, self.limit, self.start = count, limit, start
        self.offset_param, self.limit_param = offset_param, limit_param

    def first(self, request: PageRequest) -> PageRequest:
        return PageRequest(request.url, {**request.params, self.offset_param: self.start, self.limit_param: self.limit})

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        n = self.count(decode_json(response))
        if n <= 0 or n < self.limit:
            return None
        offset = int(request.params[self.offset_param]) + n
        return PageRequest(request.url, {**request.params, self.offset_param: offset})


class PageNumber(Paginator):
    """``page`` numbering; stops when ``has_more`` says so (or on an empty page)."""

    def __init__(
        self,
        has_more: Callable[[Any, int], bool],
        *,
        page_param: str = "page",
        start: int = 1,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.has_more, self.page_param, self.start, self.extra = has_more, page_param, start, dict(extra or {})

    def first(self, request: PageRequest) -> PageRequest:
        return PageRequest(request.url, {**request.params, **self.extra, self.page_param: self.start})

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        page = int(request.params[self.page_param])
        if not self.has_more(decode_json(response), page):
            return None
        return PageRequest(request.url, {**request.params, self.page_param: page + 1})


class Cursor(Paginator):
    """An opaque cursor from the body (or headers) placed into a query parameter."""

    def __init__(self, extract: Callable[[httpx.Response], str | None], param: str) -> None:
        self.extract, self.param = extract, param

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        token = self.extract(response)
        if not token:
            return None
        return PageRequest(request.url, {**request.params, self.param: token})
