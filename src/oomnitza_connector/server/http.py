"""The HTTP side of the webhook server: waitress, with limits that slow or idle clients cannot beat.

Waitress reads requests in one event loop and hands only complete ones to its threads, so a slow
client never holds a thread; what it can hold is a connection slot. So:

- slots are plentiful (``max_connections``, 1,000 by default: the process's file limit is raised
  to fit, and ``poll`` replaces ``select``, which cannot watch more than 1,024 sockets; on
  Windows, which has no ``poll``, 448);
- a request must deliver its headers within ``header_timeout`` seconds of its first byte (of the
  connection, for its first request), and its body within ``body_timeout`` of its headers;
- a kept-alive connection without a request is closed after ``idle_timeout``;
- headers and bodies are capped (waitress answers 431/413 itself).

Timeouts are checked every second; a connection over its time is closed without an answer.
"""

from __future__ import annotations

import logging
import select
import time
from dataclasses import dataclass
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger(__name__)

RESERVED_FILES = 64  # file descriptors left for everything but client connections
SELECT_LIMIT = 512  # FD_SETSIZE of CPython on Windows, where there is no poll()


@dataclass(frozen=True)
class Limits:
    max_connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_header_bytes: int = 32 * 1024
    max_body_bytes: int = 64 * 1024


class _Channel(HTTPChannel):
    """A connection that remembers when its current request began and when its headers ended."""

    request_started: float | None = None  # monotonic time of the first byte of the current request
    headers_done: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened = time.monotonic()
        self.heard = False  # any byte received yet

    def received(self, data: bytes) -> bool:
        now = time.monotonic()
        if data:
            self.heard = True
            if self.request is None:
                self.request_started, self.headers_done = now, None
        result = super().received(data)
        request = self.request
        if request is None:
            self.request_started = self.headers_done = None  # complete: being answered, or idle
        else:
            if self.request_started is None:
                self.request_started = now  # a pipelined request began in the same read
            if request.headers_finished and self.headers_done is None:
                self.headers_done = now
        return result

    def overdue(self, now: float, limits: Limits) -> str:
        """Why this connection must be closed now ("" when it may stay)."""
        if self.requests:  # complete requests being answered
            return ""
        if self.request_started is None:
            # Between requests idle_timeout applies (waitress); a new connection must start one.
            return "sent nothing" if not self.heard and now - self.opened > limits.header_timeout else ""
        if self.headers_done is None:
            return "headers too slow" if now - self.request_started > limits.header_timeout else ""
        return "body too slow" if now - self.headers_done > limits.body_timeout else ""


class _Server(TcpWSGIServer):
    channel_class = _Channel
    limits = Limits()

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle kept-alive connections (channel_timeout)
        mono = time.monotonic()
        for channel in list(self.active_channels.values()):
            reason = channel.overdue(mono, self.limits) if isinstance(channel, _Channel) else ""
            if reason and not channel.will_close:
                log.debug("closing the connection from %s: %s", channel.addr, reason)
                channel.will_close = True


def _raise_file_limit(wanted: int) -> int:
    """Raise the soft limit of open files towards ``wanted``; returns the limit now in force."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return wanted if soft == resource.RLIM_INFINITY else soft


def make_server(app: Any, *, host: str, port: int, threads: int, limits: Limits) -> Any:
    """A waitress server for ``app`` with ``limits``; ``run()`` serves, ``close()`` stops."""
    files = _raise_file_limit(limits.max_connections + RESERVED_FILES)
    if not hasattr(select, "poll"):  # Windows: select() watches at most 512 sockets
        files = min(files, SELECT_LIMIT)
    slots = max(10, min(limits.max_connections, files - RESERVED_FILES))
    if slots < limits.max_connections:
        message = "only %d connection slots are available (open-file or select limit %d); asked for %d"
        log.warning(message, slots, files, limits.max_connections)
    adj = Adjustments(
        host=host,
        port=port,
        threads=threads,
        connection_limit=slots,
        channel_timeout=int(max(1, limits.idle_timeout)),
        cleanup_interval=1,
        max_request_header_size=limits.max_header_bytes,
        max_request_body_size=limits.max_body_bytes,
        asyncore_use_poll=hasattr(select, "poll"),
        ident="oomnitza-connector",
        expose_tracebacks=False,
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    socket_map: dict[int, Any] = {}
    servers = []
    for sockinfo in adj.listen:
        server = _Server(app, socket_map, True, None, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)
        server.limits = limits
        servers.append(server)
    if len(servers) == 1:
        return servers[0]
    listening = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher)
