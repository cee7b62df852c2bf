"""A fake SQL Server that speaks just enough TDS (the SQL Server wire protocol) to refuse a login.

The SCCM tests run the real queries on SQLite; this fake exists for what SQLite cannot show: a
real driver (pymssql/FreeTDS) negotiating PRELOGIN, sending LOGIN7 with our user, database and
application name, and getting SQL Server's ``Login failed for user '...'. (18456)`` error back.
It answers PRELOGIN with "encryption not supported" (so the client must not require TLS), decodes
the LOGIN7 packet into ``logins`` and answers with an ERROR token (18456, class 14) and DONE.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PRELOGIN, LOGIN7, REPLY = 0x12, 0x10, 0x04


def _packet(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBHHBB", kind, 0x01, len(payload) + 8, 0, 1, 0) + payload


def _read_message(conn: socket.socket) -> tuple[int, bytes] | None:
    """One TDS message (its packets joined) or None when the client went away."""
    kind, data = 0, b""
    while True:
        header = _recv(conn, 8)
        if header is None:
            return None
        kind, status, length = header[0], header[1], struct.unpack(">H", header[2:4])[0]
        body = _recv(conn, length - 8)
        if body is None:
            return None
        data += body
        if status & 0x01:
            return kind, data


def _recv(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def prelogin_reply() -> bytes:
    options = [
        (0x00, bytes([15, 0, 0x07, 0xD0, 0, 0])),  # VERSION 15.0.2000
        (0x01, b"\x02"),  # ENCRYPTION: ENCRYPT_NOT_SUP
        (0x02, b"\x00"),  # INSTOPT
        (0x03, b""),  # THREADID
        (0x04, b"\x00"),
    ]  # MARS off
    offset = len(options) * 5 + 1
    head, data = b"", b""
    for token, value in options:
        head += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    return head + b"\xff" + data


def decode_login7(data: bytes) -> dict[str, Any]:
    tds_version = struct.unpack("<I", data[4:8])[0]

    def text(at: int, password: bool = False) -> str:
        offset, chars = struct.unpack("<HH", data[at : at + 4])
        raw = bytearray(data[offset : offset + chars * 2])
        if password:  # XOR 0xA5, then swap the nibbles back
            raw = bytearray((((b ^ 0xA5) & 0x0F) << 4) | ((b ^ 0xA5) >> 4) for b in raw)
        return raw.decode("utf-16-le")

    return {
        "tds_version": tds_version,
        "host": text(36),
        "user": text(40),
        "password": text(44, True),
        "app": text(48),
        "server": text(52),
        "database": text(68),
    }


def login_failed(user: str, tds_version: int) -> bytes:
    modern = tds_version >= 0x72090002  # TDS 7.2+: 4-byte line number and row count

    def us_varchar(s: str) -> bytes:
        return struct.pack("<H", len(s)) + s.encode("utf-16-le")

    def b_varchar(s: str) -> bytes:
        return struct.pack("<B", len(s)) + s.encode("utf-16-le")

    body = (
        struct.pack("<iBB", 18456, 1, 14)
        + us_varchar(f"Login failed for user '{user}'.")
        + b_varchar("FAKESQL01")
        + b_varchar("")
        + (struct.pack("<i", 1) if modern else struct.pack("<H", 1))
    )
    error = b"\xaa" + struct.pack("<H", len(body)) + body
    done = b"\xfd" + struct.pack("<HH", 0x0002, 0) + (struct.pack("<Q", 0) if modern else struct.pack("<I", 0))
    return error + done


class FakeSqlServer:
    """Refuses every login the way SQL Server does; ``logins`` holds what the clients sent."""

    def __init__(self) -> None:
        self.logins: list[dict[str, Any]] = []
        self.prelogins = 0

    def handle(self, conn: socket.socket) -> None:
        while True:
            message = _read_message(conn)
            if message is None:
                return
            kind, data = message
            if kind == PRELOGIN:
                self.prelogins += 1
                conn.sendall(_packet(REPLY, prelogin_reply()))
            elif kind == LOGIN7:
                login = decode_login7(data)
                self.logins.append(login)
                conn.sendall(_packet(REPLY, login_failed(login["user"], login["tds_version"])))
                return
            else:
                return

    @contextmanager
    def serve(self) -> Iterator[int]:
        """Listen on 127.0.0.1; yield the port."""
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    fake.handle(self.request)
                except OSError:
                    pass

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
