"""A loopback TCP proxy that can cut a connection, to test what a client does when a server goes away.

``DroppingProxy(target_port, drop_at=n)`` relays every connection to ``127.0.0.1:target_port``;
the FIRST connection (every one with ``every=True``) is closed, both ways, when the client sends
its ``n``-th chunk, before that chunk is relayed. Later connections are relayed untouched. ``chunks`` records what each
connection's client sent, in order (one entry per ``recv``), for assertions.

It imitates no particular product: it stands for anything between the connector and a server
that ends a TCP connection mid-request (a load balancer's idle timeout, a restarting server, a
proxy that gives up). "Closed both ways" is ``shutdown(SHUT_RDWR)`` on both sockets, so each side
reads end-of-file at once, as after a peer's FIN (socket(7), shutdown(2)).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class DroppingProxy:
    def __init__(self, target_port: int, *, drop_at: int, every: bool = False) -> None:
        self.target_port = target_port
        self.drop_at = drop_at
        self.every = every
        self.connections = 0
        self.dropped = False
        self.chunks: list[list[bytes]] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.port = self._listener.getsockname()[1]

    @contextmanager
    def serve(self) -> Iterator[DroppingProxy]:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            chunks: list[bytes] = []
            self.chunks.append(chunks)
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            first = self.connections == 1 or self.every
            threading.Thread(target=self._client_to_server, args=(client, upstream, chunks, first), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _client_to_server(
        self, client: socket.socket, upstream: socket.socket, chunks: list[bytes], first: bool
    ) -> None:
        try:
            while data := client.recv(65536):
                chunks.append(data)
                if first and len(chunks) == self.drop_at:
                    self.dropped = True
                    break
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, upstream)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source, sink)


def _close(*socks: socket.socket) -> None:
    """Shut both directions down (so the peer sees the end at once), then release."""
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
