"""Serve any ASGI app on loopback with uvicorn: in a background thread for tests, or in the
foreground for command-line fakes. Shared by every fake (Oomnitza and vendor APIs).

Plumbing, not an imitation of a product: the vendor behaviour lives in each fake's app, and the
HTTP server itself is real uvicorn (uvicorn.org; its ``Config``/``Server`` API as documented there).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

__all__ = ["serve", "serve_forever", "wait_for_port"]

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
    **uvicorn_options: Any,
) -> Iterator[str]:
    """Run `app` in a background thread and yield its base URL (no trailing slash).

    Port 0 picks a free port. Returns only once the server accepts connections; on exit the
    server shuts down gracefully and the thread is joined. For mutual TLS pass `ssl_ca_certs`
    and `ssl_cert_reqs=ssl.CERT_REQUIRED`.
    """
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    config = _config(
        app,
        host,
        bound_port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        ssl_ca_certs=ssl_ca_certs,
        ssl_cert_reqs=ssl_cert_reqs,
        **uvicorn_options,
    )
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
    thread.start()
    try:
        if not started.wait(startup_timeout) or not server.started:
            raise RuntimeError(f"ASGI server on port {bound_port} failed to start: {failure or 'timeout'}")
        yield _url(host, bound_port, tls=ssl_certfile is not None)
    finally:
        server.should_exit = True
        thread.join(timeout=(config.timeout_graceful_shutdown or 5) + 5)
        if thread.is_alive():  # graceful shutdown stuck: drop remaining connections
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()


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
