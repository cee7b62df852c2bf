"""Building blocks for fake vendor APIs: a request log and fault injection around any Starlette app.

A fake vendor subclasses ``FakeVendor``, sets ``routes()`` speaking the vendor's real wire shapes
(auth headers, pagination, error bodies), and tests drive it with ``fail()`` for 429/5xx/malformed
answers and ``stall()`` for a server that keeps a request waiting. Serve it with ``tests.fakes.server.serve(fake.app)``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from .server import client_left_within


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Fault:
    method: str | None
    path_prefix: str
    status: int | None  # None: answer normally, after ``stall`` seconds
    times: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # dict/list → JSON; str/bytes → raw
    query: dict[str, str] = field(default_factory=dict)  # only requests carrying these parameters
    stall: float = 0.0  # seconds of silence before the answer (a hung backend, a slow proxy)

    def matches(self, method: str, path: str, query: dict[str, str]) -> bool:
        return (
            (self.method is None or self.method == method)
            and path.startswith(self.path_prefix)
            and all(query.get(k) == v for k, v in self.query.items())
        )


class FakeVendor:
    """Base of every fake vendor server: subclasses implement ``routes()``."""

    def __init__(self) -> None:
        self.url = ""  # set by whoever serves the app
        self.requests: list[Seen] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.app: ASGIApp = _Gate(Starlette(routes=self.routes()), self)

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def fail(
        self,
        method: str | None,
        path_prefix: str,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (and headers/body); with ``query``,
        only requests that carry those parameters."""
        with self._lock:
            self._faults.append(Fault(method, path_prefix, status, times, dict(headers or {}), body, dict(query or {})))

    def stall(
        self,
        method: str | None,
        path_prefix: str,
        seconds: float,
        *,
        times: int = 1,
        query: dict[str, str] | None = None,
    ) -> None:
        """Keep the next ``times`` matching requests waiting ``seconds`` before answering them normally:
        a client with a shorter ``request_timeout`` gives up and must retry."""
        with self._lock:
            self._faults.append(Fault(method, path_prefix, None, times, {}, None, dict(query or {}), seconds))

    def calls(self, path_prefix: str = "", method: str | None = None) -> list[Seen]:
        return [r for r in self.requests if r.path.startswith(path_prefix) and (method is None or r.method == method)]

    def _take_fault(self, method: str, path: str, query: dict[str, str] | None = None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path, query or {}):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None


def fault_response(fault: Fault) -> Response:
    assert fault.status is not None, "a stall answers normally"
    if isinstance(fault.body, (dict, list)):
        return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
    return Response(fault.body or b"", status_code=fault.status, headers=fault.headers)


class _Gate:
    """ASGI middleware: log the request, then answer an injected fault or pass it on."""

    def __init__(self, app: ASGIApp, fake: FakeVendor) -> None:
        self.inner, self.fake = app, fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        request = Request(scope, receive)
        body = await request.body()
        self.fake.requests.append(
            Seen(
                request.method,
                request.url.path,
                dict(request.query_params),
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        fault = self.fake._take_fault(request.method, request.url.path, dict(request.query_params))
        if fault is not None and fault.stall and await client_left_within(receive, fault.stall):
            return  # the client gave up: nobody hears the late answer
        if fault is not None and fault.status is not None:
            await fault_response(fault)(scope, replay, send)
            return
        await self.inner(scope, replay, send)
