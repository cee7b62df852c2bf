"""A fake SQL Server that speaks enough TDS (the SQL Server wire protocol) for a real driver.

The SCCM tests run the real queries on SQLite; this fake exists for what SQLite cannot show: a
real driver (pymssql/FreeTDS, or FreeTDS's ODBC driver) negotiating PRELOGIN, sending LOGIN7 with
our user, database and application name, then what SQL Server answers. Behaviour follows
Microsoft's protocol specification [MS-TDS] (learn.microsoft.com/openspecs/windows_protocols/ms-tds);
the client on the other end is the real FreeTDS (freetds.org), so an answer it cannot parse fails:

- PRELOGIN (2.2.6.5): answered with "encryption not supported" (ENCRYPT_NOT_SUP), so a client
  that requires TLS gives up before sending a password.
- LOGIN7 (2.2.6.4): decoded into ``logins`` (the password de-obfuscated). A wrong login gets
  SQL Server's ERROR 18456, class 14, "Login failed for user '…'." and DONE (2.2.7.10, 2.2.7.6;
  the error: learn.microsoft.com/sql/relational-databases/errors-events/mssqlserver-18456-database-
  engine-error); with ``accept`` set, the right one gets LOGINACK (2.2.7.14) and DONE.
- SQL batches (2.2.6.7, ALL_HEADERS skipped for TDS 7.2+) and RPC requests (2.2.6.6: a query
  with parameters through sp_executesql, as the ODBC driver sends it) get DONE, except: the catalogue query
  (INFORMATION_SCHEMA.TABLES) → the ``present`` views; the hardware query (FROM
  dbo.v_GS_COMPUTER_SYSTEM) → ``hardware`` rows; the software query → ``software`` rows of the ids
  in its IN list. Result sets are COLMETADATA / ROW / DONE tokens (2.2.7.4, 2.2.7.19) with INTN,
  NVARCHAR (UTF-16LE, with a collation), BITN and DATETIMN values; NULL as zero length.
- Faults: ``query_error`` answers the hardware query with an ERROR token (e.g. 229 "The SELECT
  permission was denied …", as for a login without db_datareader: learn.microsoft.com/sql/
  relational-databases/errors-events/database-engine-events-and-errors-0-to-999), and
  ``drop_after`` closes the connection after that many hardware rows (a server restart or
  failover mid-read).
- A Transaction Manager request (2.2.6.9) gets DONE (BEGIN also an ENVCHANGE with a
  transaction descriptor); an ATTENTION (cancel, 2.2.1.7) is acknowledged with DONE_ATTN.
"""

from __future__ import annotations

import re
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

PRELOGIN, LOGIN7, REPLY, SQL_BATCH, RPC, ATTENTION, TRANSACTION = 0x12, 0x10, 0x04, 0x01, 0x03, 0x06, 0x0E
TDS72 = 0x72090002
HARDWARE_COLUMNS = (
    ("resource_id", int),
    ("computer_name", str),
    ("domain_name", str),
    ("make", str),
    ("model", str),
    ("platform", str),
    ("user_name", str),
    ("cpu", str),
    ("hdd_total_mb", int),
    ("ipv4_address", str),
    ("mac_address", str),
    ("memory_total_kb", int),
    ("serial_number", str),
    ("last_logon", datetime),
    ("c_drive_encrypted", int),
    ("antivirus_enabled", bool),
    ("primary_user", str),
    ("os_version", str),
)
SOFTWARE_COLUMNS = (("resource_id", int), ("name", str), ("version", str), ("publisher", str))


PACKET_SIZE = 4096  # FreeTDS's default; the fake never negotiates another


def _packet(kind: int, payload: bytes, *, last: bool = True) -> bytes:
    """A TDS message as packets of at most PACKET_SIZE bytes; ``last=False`` leaves it unfinished
    (no END OF MESSAGE), as a connection cut mid-result does."""
    size = PACKET_SIZE - 8
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    out = b""
    for n, chunk in enumerate(chunks, 1):
        status = 0x01 if last and n == len(chunks) else 0x00
        out += struct.pack(">BBHHBB", kind, status, len(chunk) + 8, 0, n % 256, 0) + chunk
    return out


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


def _us_varchar(s: str) -> bytes:
    return struct.pack("<H", len(s)) + s.encode("utf-16-le")


def _b_varchar(s: str) -> bytes:
    return struct.pack("<B", len(s)) + s.encode("utf-16-le")


def error_token(number: int, severity: int, message: str, tds_version: int) -> bytes:
    body = (
        struct.pack("<iBB", number, 1, severity)
        + _us_varchar(message)
        + _b_varchar("FAKESQL01")
        + _b_varchar("")
        + (struct.pack("<i", 1) if tds_version >= TDS72 else struct.pack("<H", 1))  # line number
    )
    return b"\xaa" + struct.pack("<H", len(body)) + body


def done_token(status: int, rows: int, tds_version: int, command: int = 0) -> bytes:
    count = struct.pack("<Q", rows) if tds_version >= TDS72 else struct.pack("<I", rows)
    return b"\xfd" + struct.pack("<HH", status, command) + count


def login_failed(user: str, tds_version: int) -> bytes:
    return error_token(18456, 14, f"Login failed for user '{user}'.", tds_version) + done_token(0x0002, 0, tds_version)


def login_ack(tds_version: int) -> bytes:
    body = (
        b"\x01"
        + struct.pack(">I", _ack_version(tds_version))
        + _b_varchar("Microsoft SQL Server")
        + bytes([16, 0, 0x10, 0x2D])
    )
    return b"\xad" + struct.pack("<H", len(body)) + body + done_token(0, 0, tds_version)


def _ack_version(login_version: int) -> int:
    """LOGINACK's TDS version (big-endian on the wire) for LOGIN7's (little-endian)."""
    return {0x71000001: 0x71000001, 0x72090002: 0x72090002, 0x730B0003: 0x730B0003}.get(login_version, 0x74000004)


def transaction_reply(data: bytes, tds_version: int) -> bytes:
    """A Transaction Manager request (2.2.6.9; FreeTDS's ODBC driver sends TM_BEGIN_XACT when
    autocommit is off): BEGIN gets ENVCHANGE "begin transaction" (2.2.7.9) with a descriptor."""
    request = struct.unpack("<H", data[struct.unpack("<I", data[:4])[0] :][:2])[0]
    envchange = b""
    if request == 5:  # TM_BEGIN_XACT
        body = b"\x08" + b"\x08" + struct.pack("<Q", 1) + b"\x00"
        envchange = b"\xe3" + struct.pack("<H", len(body)) + body
    return envchange + done_token(0, 0, tds_version)


# SQL_Latin1_General_CP1_CI_AS, as a TDS collation (LCID 0x0409, flags, sort id 52).
COLLATION = bytes([0x09, 0x04, 0xD0, 0x00, 0x34])
SQL_EPOCH = datetime(1900, 1, 1)


def result_set(
    columns: tuple[tuple[str, type], ...], rows: list[dict[str, Any]], tds_version: int, *, rpc: bool = False
) -> bytes:
    """COLMETADATA, one ROW per row, and the final DONE (with its row count); for an RPC
    (sp_executesql) DONEINPROC, RETURNSTATUS 0 and DONEPROC instead (2.2.7.7, 2.2.7.18, 2.2.7.8)."""
    body = columns_token(columns, tds_version) + b"".join(row_token(columns, row) for row in rows)
    return body + end_tokens(0x0010, len(rows), tds_version, rpc=rpc)


def end_tokens(status: int, rows: int, tds_version: int, *, rpc: bool) -> bytes:
    if not rpc:
        return done_token(status, rows, tds_version, command=0xC1)
    in_proc = done_token(status | 0x0001, rows, tds_version, command=0xC1)  # DONE_MORE: the procedure goes on
    returned = b"\x79" + struct.pack("<i", 0)
    return b"\xff" + in_proc[1:] + returned + b"\xfe" + done_token(status & 0x0002, 0, tds_version)[1:]


def columns_token(columns: tuple[tuple[str, type], ...], tds_version: int) -> bytes:
    out = b"\x81" + struct.pack("<H", len(columns))
    for name, kind in columns:
        out += struct.pack("<I", 0) if tds_version >= TDS72 else struct.pack("<H", 0)  # UserType
        out += struct.pack("<H", 0x0001)  # nullable
        if kind is int:
            out += b"\x26\x08"  # INTN(8): bigint
        elif kind is bool:
            out += b"\x68\x01"  # BITN
        elif kind is datetime:
            out += b"\x6f\x08"  # DATETIMN(8)
        else:
            out += b"\xe7" + struct.pack("<H", 8000) + COLLATION  # NVARCHAR(4000)
        out += _b_varchar(name)
    return out


def row_token(columns: tuple[tuple[str, type], ...], row: dict[str, Any]) -> bytes:
    out = b"\xd1"
    for name, kind in columns:
        value = row.get(name)
        if kind is int:
            out += b"\x00" if value is None else b"\x08" + struct.pack("<q", int(value))
        elif kind is bool:
            out += b"\x00" if value is None else b"\x01" + bytes([1 if value else 0])
        elif kind is datetime:
            if value is None:
                out += b"\x00"
            else:
                delta = value - SQL_EPOCH
                ticks = round((delta.seconds + delta.microseconds / 1e6) * 300)
                out += b"\x08" + struct.pack("<iI", delta.days, ticks)
        else:
            raw = None if value is None else str(value).encode("utf-16-le")
            out += b"\xff\xff" if raw is None else struct.pack("<H", len(raw)) + raw
    return out


class FakeSqlServer:
    """Refuses every login the way SQL Server does, unless ``accept`` = (user, password): then it
    serves ``hardware`` / ``software`` / ``present`` to the SCCM queries. ``logins`` and
    ``batches`` hold what the clients sent."""

    def __init__(
        self,
        *,
        accept: tuple[str, str] | None = None,
        hardware: list[dict[str, Any]] | None = None,
        software: dict[int, list[dict[str, Any]]] | None = None,
        present: tuple[str, ...] = ("v_GS_ENCRYPTABLE_VOLUME", "v_GS_AntimalwareHealthStatus"),
        query_error: tuple[int, str] | None = None,
        drop_after: int | None = None,
    ) -> None:
        self.logins: list[dict[str, Any]] = []
        self.batches: list[str] = []
        self.prelogins = 0
        self.accept = accept
        self.hardware = hardware or []
        self.software = software or {}
        self.present = present
        self.query_error = query_error
        self.drop_after = drop_after

    def handle(self, conn: socket.socket) -> None:
        tds_version = 0
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
                tds_version = login["tds_version"]
                if self.accept != (login["user"], login["password"]):
                    conn.sendall(_packet(REPLY, login_failed(login["user"], tds_version)))
                    return
                conn.sendall(_packet(REPLY, login_ack(tds_version)))
            elif kind == SQL_BATCH and tds_version:
                if not self._batch(conn, _batch_text(data, tds_version), tds_version, rpc=False):
                    return
            elif kind == RPC and tds_version:  # a query with parameters, through sp_executesql
                if not self._batch(conn, _rpc_text(data), tds_version, rpc=True):
                    return
            elif kind == TRANSACTION and tds_version:
                conn.sendall(_packet(REPLY, transaction_reply(data, tds_version)))
            elif kind == ATTENTION:
                conn.sendall(_packet(REPLY, done_token(0x0020, 0, tds_version)))
            else:
                return

    def _batch(self, conn: socket.socket, sql: str, tds_version: int, *, rpc: bool) -> bool:
        """Answer one batch or RPC; False when the connection was dropped on purpose. The values
        of an RPC's parameters are not decoded: it gets every present view and all software."""
        self.batches.append(sql)
        if "INFORMATION_SCHEMA.TABLES" in sql:
            rows = [{"TABLE_NAME": name} for name in self.present if rpc or name in sql]
            conn.sendall(_packet(REPLY, result_set((("TABLE_NAME", str),), rows, tds_version, rpc=rpc)))
        elif "FROM dbo.v_GS_COMPUTER_SYSTEM" in sql:
            if self.query_error:
                number, text = self.query_error
                reply = error_token(number, 14, text, tds_version) + end_tokens(0x0002, 0, tds_version, rpc=rpc)
                conn.sendall(_packet(REPLY, reply))
            elif self.drop_after is not None:
                head = columns_token(HARDWARE_COLUMNS, tds_version)
                rows = b"".join(row_token(HARDWARE_COLUMNS, r) for r in self.hardware[: self.drop_after])
                conn.sendall(_packet(REPLY, head + rows, last=False))
                conn.shutdown(socket.SHUT_RDWR)  # mid-result: no DONE, no end of message
                return False
            else:
                conn.sendall(_packet(REPLY, result_set(HARDWARE_COLUMNS, self.hardware, tds_version, rpc=rpc)))
        elif "ADD_REMOVE_PROGRAMS" in sql:
            ids = set(self.software)
            if not rpc:  # pymssql interpolates the parameters into the text
                ids = {int(n) for n in re.findall(r"\d+", sql.split("IN (", 1)[1].split(")", 1)[0])}
            rows = [{"resource_id": rid, **app} for rid in sorted(ids) for app in self.software.get(rid, [])]
            conn.sendall(_packet(REPLY, result_set(SOFTWARE_COLUMNS, rows, tds_version, rpc=rpc)))
        else:  # SET options, BEGIN TRAN, ROLLBACK …
            conn.sendall(_packet(REPLY, end_tokens(0, 0, tds_version, rpc=rpc)))
        return True

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


def _rpc_text(data: bytes) -> str:
    """The readable text of an RPC request (2.2.6.6): its statement parameter is UTF-16LE, at an
    offset of either parity, so both alignments are decoded."""
    return data.decode("utf-16-le", "replace") + data[1:].decode("utf-16-le", "replace")


def _batch_text(data: bytes, tds_version: int) -> str:
    if tds_version >= TDS72:  # ALL_HEADERS: its total length comes first
        data = data[struct.unpack("<I", data[:4])[0] :]
    return data.decode("utf-16-le", "replace")
