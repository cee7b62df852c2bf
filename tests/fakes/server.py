"""Serve any ASGI app on loopback with uvicorn: in a background thread for tests, or in the
foreground for command-line fakes. Shared by every fake (Oomnitza and vendor APIs).

Plumbing, not an imitation of a product: the vendor behaviour lives in each fake's app, and the
HTTP server itself is real uvicorn (uvicorn.org; its ``Config``/``Server`` API as documented there).

``serve(app)`` lends the app one of the process's running servers (same TLS and uvicorn options)
rather than starting one: a fresh fake per test keeps the tests apart, while stopping a uvicorn
server costs ~0.2 s of idle waiting (its main loop and its shutdown each poll every 0.1 s), which a
suite of a thousand fakes would otherwise spend. ``serve(app, dedicated=True)`` or a fixed
``port`` starts a server of the app's own, stopped when the block ends (for a test that needs
the port to go dead). ``serving(fake)`` is ``serve(fake.app)`` with ``fake.url`` set, what each
vendor fake's fixture does. ``close_shared_servers()`` stops the lent ones (the test session's end).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn

__all__ = ["client_left_within", "close_shared_servers", "serve", "serve_forever", "serving", "wait_for_port"]

ASGIApp = Callable[..., Any]


class _Server(uvicorn.Server):
    """uvicorn.Server that reports when its listening sockets are up."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started()


def _bind(host: str, port: int) -> socket.socket:
    # Binding ourselves makes port 0 usable: the real port is known before uvicorn starts.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio enables TCP_NODELAY on accepted sockets only when
    # it is, and without it small responses stall ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _config(app: ASGIApp, host: str, port: int, **options: Any) -> uvicorn.Config:
    # loop/http stay "auto": uvicorn takes uvloop and httptools when installed, else asyncio and h11.
    defaults: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        # Bounded, so a hung client (or a deliberately slow fake response) cannot block shutdown.
        "timeout_graceful_shutdown": 5,
        "backlog": 4096,
    }
    defaults.update(options)
    return uvicorn.Config(app, host=host, port=port, **defaults)


def _url(host: str, port: int, tls: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


class _Switch:
    """ASGI app forwarding to the app currently lent the server; 503 while none is."""

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        target = self.target  # a request in flight stays with the app it started on
        if target is not None:
            await target(scope, receive, send)
        elif scope["type"] == "http":
            body = b"no fake is served here now"
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})


@dataclass
class _Running:
    url: str
    stop: Callable[[], None]
    switch: _Switch | None = None


_Fake = TypeVar("_Fake")

_idle: dict[tuple[Any, ...], list[_Running]] = {}
_lent: list[_Running] = []
_pool_lock = threading.Lock()


@contextlib.contextmanager
def serve(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    ssl_ca_certs: str | None = None,
    ssl_cert_reqs: int = ssl.CERT_NONE,
    startup_timeout: float = 10.0,
    dedicated: bool = False,
    **uvicorn_options: Any,
) -> Iterator[str]:
    """Serve `app` on loopback and yield its base URL (no trailing slash), once it accepts connections.

    Port 0 picks a free port. By default the app is lent a running server of this process with the
    same options (see the module docstring); with ``dedicated=True`` or a fixed port it gets its own,
    shut down gracefully when the block ends. For mutual TLS pass `ssl_ca_certs` and
    `ssl_cert_reqs=ssl.CERT_REQUIRED`.
    """
    options: dict[str, Any] = {
        "ssl_certfile": ssl_certfile,
        "ssl_keyfile": ssl_keyfile,
        "ssl_ca_certs": ssl_ca_certs,
        "ssl_cert_reqs": ssl_cert_reqs,
        **uvicorn_options,
    }
    if dedicated or port != 0:
        own = _start(app, host, port, startup_timeout, options)
        try:
            yield own.url
        finally:
            own.stop()
        return
    key = (host, *sorted(options.items()))
    try:
        hash(key)
    except TypeError:  # an option value that cannot key the pool: a server of its own
        with serve(app, host=host, startup_timeout=startup_timeout, dedicated=True, **options) as url:
            yield url
        return
    running: _Running | None
    with _pool_lock:
        idle = _idle.setdefault(key, [])
        running = idle.pop() if idle else None
    if running is None:
        switch = _Switch()
        running = _start(switch, host, port, startup_timeout, options)
        running.switch = switch
        with _pool_lock:
            _lent.append(running)
    assert running.switch is not None
    running.switch.target = app
    try:
        yield running.url
    finally:
        running.switch.target = None
        with _pool_lock:
            _idle[key].append(running)


@contextlib.contextmanager
def serving(fake: _Fake, **options: Any) -> Iterator[_Fake]:
    """``serve(fake.app)`` with ``fake.url`` set: what a fixture of a fake vendor does."""
    served: Any = fake
    with serve(served.app, **options) as url:
        served.url = url
        yield fake


def close_shared_servers() -> None:
    """Stop every server ``serve`` lends (idle or not)."""
    with _pool_lock:
        servers = list(_lent)
        _lent.clear()
        _idle.clear()
    for running in servers:
        running.stop()


def _start(app: ASGIApp, host: str, port: int, startup_timeout: float, options: dict[str, Any]) -> _Running:
    """Run `app` in a background thread; returns once the server accepts connections."""
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    config = _config(app, host, bound_port, **options)
    started = threading.Event()
    server = _Server(config, on_started=started.set)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit included: uvicorn exits on startup failure
            failure.append(exc)
        finally:
            started.set()  # unblock the waiter if startup failed

    thread = threading.Thread(target=run, name=f"asgi-serve-{bound_port}", daemon=True)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=(config.timeout_graceful_shutdown or 5) + 5)
        if thread.is_alive():  # graceful shutdown stuck: drop remaining connections
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()

    thread.start()
    if not started.wait(startup_timeout) or not server.started:
        stop()
        raise RuntimeError(f"ASGI server on port {bound_port} failed to start: {failure or 'timeout'}")
    return _Running(_url(host, bound_port, tls=options.get("ssl_certfile") is not None), stop)


async def client_left_within(receive: Callable[[], Awaitable[Mapping[str, Any]]], seconds: float) -> bool:
    """Wait `seconds` unless the client disconnects first (True then). For a fake's stall: a client
    that gave up is not answered, and the request ends with it (not seconds later, keeping the
    server's shutdown waiting). The request body must be read already: the next message is then
    the disconnect."""

    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait_for(asyncio.shield(watcher), seconds)
        return True
    except TimeoutError:
        return False
    finally:
        watcher.cancel()


def serve_forever(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_listening: Callable[[str], None] | None = None,
    **uvicorn_options: Any,
) -> None:
    """Serve `app` in the foreground until SIGTERM/SIGINT, then return normally.

    `on_listening(base_url)` runs once the socket accepts connections (print the URL, write a
    port file...). Returning instead of dying on the signal lets the caller dump state and exit 0.
    """
    sock = _bind(host, port)
    tls = uvicorn_options.get("ssl_certfile") is not None
    base_url = _url(host, sock.getsockname()[1], tls)
    config = _config(app, host, sock.getsockname()[1], **uvicorn_options)
    server = _Server(config, on_started=(lambda: on_listening(base_url)) if on_listening else None)

    # uvicorn re-raises the captured signal after its graceful shutdown, into whatever handler
    # was installed before it started; this one turns that into a normal return (and, for a
    # signal arriving before uvicorn installs its own handlers, still stops the server).
    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on host:port (for subprocess fakes)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
