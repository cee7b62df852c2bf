"""LDAP servers for the [ldap] / [ldap_assets] tests.

``Slapd``: a REAL OpenLDAP ``slapd`` (Debian packages ``slapd ldap-utils``) started in a temp dir
on free loopback ports with an mdb database, the core/cosine/inetorgperson/nis schemas (plus a
few Active Directory attribute types, ``AD_LITE_SCHEMA``) and the test entries (loaded with
``slapadd`` before the start, or ``ldapadd`` after). It listens on ``ldap://`` (StartTLS available)
and, with a CA-signed certificate, ``ldaps://``. Its ``stats`` log tells the tests which searches
really reached it. Not an imitation: every answer is slapd's own (configuration per the OpenLDAP
Administrator's Guide, openldap.org/doc/admin26, and slapd.conf(5), slapd-mdb(5)).

``FakeActiveDirectory``: a tiny wire-level LDAP v3 server (BER over TCP: requests parsed by a
small BER reader, responses encoded with ldap3's RFC 4511 ASN.1 classes) for what neither slapd
nor a Samba DC (tests/fakes/samba_dc.py) does, but Windows AD does. It answers bind, search
(base/one/subtree, simple filters: and/or/not/equality/present) and unbind; nothing else.

- Range retrieval: a multi-valued attribute with more values than ``MaxValRange`` (1,500) comes
  back as ``member;range=0-1499``, the rest on request as ``member;range=1500-*`` …
  (learn.microsoft.com/windows/win32/adsi/attribute-range-retrieval). Samba returns every value
  at once, so only this fake exercises the ranged path.
- Paging: ``MaxPageSize`` (1,000) caps every page whatever size the client asks for, and an
  unpaged search stops there with 4 sizeLimitExceeded (learn.microsoft.com/troubleshoot/
  windows-server/active-directory/view-set-ldap-policy-using-ntdsutil, "MaxPageSize").
  Samba has no such cap.
- Bind errors: 49 invalidCredentials (RFC 4511 §4.1.9) with AD's diagnostic text
  ``80090308: LdapErr: DSID-…, comment: AcceptSecurityContext error, data 52e, v…``: 0x80090308 is
  SEC_E_INVALID_TOKEN (learn.microsoft.com/windows/win32/com/com-error-codes-4) and, after ``data``,
  0x52e = 1326 ERROR_LOGON_FAILURE (learn.microsoft.com/windows/win32/debug/system-error-codes--1300-1699-).
  Microsoft specifies the codes, not the whole string: its form is the one AD is reported to send
  (e.g. manageengine.com ad-manager KB "LDAP error code 49 80090308"). And 8 strongerAuthRequired with
  AD's ``00002028: … requires binds to turn on integrity checking …`` for a simple bind on plain
  ``ldap://`` when "Domain controller: LDAP server signing requirements" is "Require signing"
  ("LDAP simple binds not using SSL are rejected": learn.microsoft.com/windows/security/
  threat-protection/security-policy-settings/domain-controller-ldap-server-signing-requirements;
  KB 935834, learn.microsoft.com/troubleshoot/windows-server/active-directory/
  enable-ldap-signing-in-windows-server).
- Groups carry an ``objectSid`` like every AD security principal (MS-ADA3 objectSid).
- ``paging=False`` removes the paged-results control from the root DSE (and ignores it): a server
  that does not offer RFC 2696.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap", "/usr/libexec/openldap")
SCHEMAS = ("core", "cosine", "inetorgperson", "nis", "ad-lite")

# A few Active Directory attribute types with the matching rules AD gives them (the msuser.schema
# shipped with OpenLDAP declares none, so filters such as the bitwise userAccountControl test
# would never match), and AD's ``computer`` class, so asset tests can use AD-shaped entries.
AD_LITE_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.782 NAME 'objectCategory'
  EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.619 NAME 'dNSHostName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.363 NAME 'operatingSystem'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.365 NAME 'operatingSystemVersion'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.1696 NAME 'lastLogonTimestamp'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.2 NAME 'objectGUID'
  EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.146 NAME 'objectSid'
  EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.3.30 NAME 'computer' SUP top STRUCTURAL MUST cn
  MAY ( objectCategory $ sAMAccountName $ dNSHostName $ operatingSystem $ operatingSystemVersion $
        lastLogonTimestamp $ userAccountControl $ objectGUID $ objectSid $ serialNumber $ description $
        jpegPhoto ) )
"""


def slapd_binary() -> str | None:
    """Path of ``slapd`` (it lives in /usr/sbin, often not on a user's PATH), or None."""
    found = shutil.which("slapd") or next(
        (p for p in ("/usr/sbin/slapd", "/usr/local/sbin/slapd", "/usr/libexec/slapd") if os.path.exists(p)), None
    )
    if found and shutil.which("slapadd") is None and not os.path.exists("/usr/sbin/slapadd"):
        return None
    return found


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Slapd:
    """A throw-away slapd. ``start()`` / ``stop()``; URLs in ``url`` and ``ldaps_url``."""

    workdir: Path
    suffix: str = "dc=example,dc=test"
    admin_password: str = "admin-secret"
    tls: dict[str, str] | None = None  # {"ca", "server_cert", "server_key"} PEM paths
    schemas: tuple[str, ...] = SCHEMAS
    port: int = 0
    ldaps_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    extra_conf: list[str] = field(default_factory=list)

    @property
    def admin_dn(self) -> str:
        return f"cn=admin,{self.suffix}"

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "slapd.log"

    def _conf(self) -> Path:
        modules = next((d for d in MODULE_DIRS if os.path.exists(os.path.join(d, "back_mdb.so"))), None)
        (self.workdir / "ad-lite.schema").write_text(AD_LITE_SCHEMA, encoding="utf-8")
        lines = [
            f"include {self.workdir / 'ad-lite.schema' if name == 'ad-lite' else SCHEMA_DIR / (name + '.schema')}"
            for name in self.schemas
        ]
        if modules:  # Debian builds back_mdb as a module; other builds link it in
            lines += [f"modulepath {modules}", "moduleload back_mdb"]
        lines += [f"pidfile {self.workdir / 'slapd.pid'}", f"argsfile {self.workdir / 'slapd.args'}"]
        if self.tls:
            lines += [
                f"TLSCACertificateFile {self.tls['ca']}",
                f"TLSCertificateFile {self.tls['server_cert']}",
                f"TLSCertificateKeyFile {self.tls['server_key']}",
            ]
        lines += [
            "sizelimit unlimited",
            *self.extra_conf,
            "database mdb",
            "maxsize 33554432",
            f'suffix "{self.suffix}"',
            f'rootdn "{self.admin_dn}"',
            f"rootpw {self.admin_password}",
            f"directory {self.workdir / 'db'}",
            "access to attrs=userPassword by anonymous auth by self read by * none",
            "access to * by * read",
        ]
        path = self.workdir / "slapd.conf"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def load(self, ldif: str) -> None:
        """Bulk-load entries offline (before ``start``)."""
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        path = self.workdir / "data.ldif"
        path.write_text(ldif, encoding="utf-8")
        done = subprocess.run(
            [_tool("slapadd"), "-f", str(self._conf()), "-l", str(path)], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"slapadd failed: {done.stderr.strip()}")

    def add(self, ldif: str) -> None:
        """Add entries to the running server with ``ldapadd``."""
        done = subprocess.run(
            ["ldapadd", "-x", "-H", self.url, "-D", self.admin_dn, "-w", self.admin_password],
            input=ldif,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ldapadd failed: {done.stderr.strip()}")

    def start(self) -> None:
        binary = slapd_binary()
        if binary is None:
            raise RuntimeError("slapd is not installed (apt-get install slapd ldap-utils)")
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        conf = self._conf()
        for _ in range(5):  # a free port can be taken between the probe and slapd's bind
            self.port = free_port()
            urls = [self.url]
            if self.tls:
                self.ldaps_port = free_port()
                urls.append(f"{self.ldaps_url}/")
            log = open(self.log_path, "wb")
            # -d stats: stay in the foreground and log every operation (the tests read it).
            self.proc = subprocess.Popen(
                [binary, "-d", "stats", "-h", " ".join(urls), "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
            log.close()
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"slapd did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    # what reached the server ------------------------------------------------------------------

    def mark(self) -> int:
        """A position in the log; ``searches(since=mark)`` then sees only later operations."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def searches(self, base: str | None = None, since: int = 0) -> list[int]:
        """The number of entries each search (optionally only those under ``base``) returned, in order."""
        time.sleep(0.05)  # slapd logs the result just after sending it
        text = self.log_path.read_bytes()[since:].decode("utf-8", "replace")
        bases: dict[tuple[str, str], str] = {}
        counts: list[int] = []
        for line in text.splitlines():
            m = re.search(r"(conn=\d+) (op=\d+) SRCH base=\"([^\"]*)\"", line)
            if m:
                bases[(m.group(1), m.group(2))] = m.group(3)
                continue
            m = re.search(r"(conn=\d+) (op=\d+) SEARCH RESULT .*nentries=(\d+)", line)
            op = (m.group(1), m.group(2)) if m else None
            if m and op in bases and (base is None or bases[op].lower() == base.lower()):
                counts.append(int(m.group(3)))
        return counts

    def search_attributes(self, since: int = 0) -> list[str]:
        """The attribute lists of the searches since ``since`` (slapd logs ``SRCH attr=a b c``)."""
        text = self.log_path.read_bytes()[since:].decode("utf-8", "replace")
        return [line.split("SRCH attr=", 1)[1] for line in text.splitlines() if "SRCH attr=" in line]

    def binds(self, since: int = 0) -> list[str]:
        """Result lines of the binds since ``since`` (``err=49`` for a rejected password)."""
        text = self.log_path.read_bytes()[since:].decode("utf-8", "replace")
        return [line for line in text.splitlines() if "RESULT tag=97" in line]


# --- a tiny Active Directory lookalike -------------------------------------------------------


AD_BAD_PASSWORD = "80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563"
PAGED_OID = "1.2.840.113556.1.4.319"
AD_MAX_PAGE_SIZE = 1000
_RANGE_REQ = re.compile(r"^(.*);range=(\d+)-(\d+|\*)$", re.IGNORECASE)


class FakeActiveDirectory:
    """Entries in ``entries`` ({dn: {attr: [str|bytes, ...]}}), served over LDAP on ``url``.

    Multi-valued attributes with more than ``max_values`` values are returned AD-style in ranges.
    ``paging=False`` removes the paged-results control from the root DSE (and ignores it).
    ``require_signing=True`` answers simple binds with 8 strongerAuthRequired, as hardened AD does.
    ``size_limit`` cuts an unpaged search after that many entries with 4 sizeLimitExceeded, and is
    the largest page of a paged one (AD's MaxPageSize, 1000 by default).
    """

    def __init__(
        self,
        entries: dict[str, dict[str, list[Any]]],
        *,
        bind_dn: str,
        password: str,
        max_values: int = 1500,
        paging: bool = True,
        require_signing: bool = False,
        size_limit: int = AD_MAX_PAGE_SIZE,
    ) -> None:
        self.entries = {dn: attrs for dn, attrs in entries.items()}
        self.bind_dn, self.password = bind_dn, password
        self.max_values, self.paging, self.require_signing = max_values, paging, require_signing
        self.size_limit = size_limit  # AD's MaxPageSize for an unpaged search: more → 4 sizeLimitExceeded
        self.requests: list[dict[str, Any]] = []  # every search: base, scope, attributes
        self.url = ""
        self._index: dict[str, str] = {}
        self._server: socketserver.ThreadingTCPServer | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeActiveDirectory]:
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                fake._serve(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"ldap://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()

    def searches(self, attribute_prefix: str = "") -> list[dict[str, Any]]:
        return [
            r
            for r in self.requests
            if not attribute_prefix or any(a.lower().startswith(attribute_prefix.lower()) for a in r["attributes"])
        ]

    # protocol --------------------------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        buffer = b""
        while True:
            message, buffer = _read_message(sock, buffer)
            if message is None:
                return
            parts = _children(_tlv(message, 0)[1])  # LDAPMessage ::= SEQUENCE { id, op, controls? }
            msg_id = int.from_bytes(parts[0][1], "big")
            op_tag, op = parts[1]
            controls = dict(_control(c) for _, c in _children(parts[2][1])) if len(parts) > 2 else {}
            if op_tag == 0x60:  # bindRequest
                sock.sendall(self._bind(msg_id, op))
            elif op_tag == 0x63:  # searchRequest
                sock.sendall(self._search(msg_id, op, controls))
            elif op_tag == 0x42:  # unbindRequest
                return
            else:
                sock.sendall(_result(msg_id, "extendedResp", 2, "operation not supported by the fake"))

    def _bind(self, msg_id: int, op: bytes) -> bytes:
        fields = _children(op)  # version, name, authentication
        name = fields[1][1].decode()
        password = fields[2][1].decode() if fields[2][0] == 0x80 else ""  # simple [0]
        if not name and not password:
            return _result(msg_id, "bindResponse", 0)
        if self.require_signing:
            return _result(
                msg_id,
                "bindResponse",
                8,
                "00002028: LdapErr: DSID-0C090259, comment: The server "
                "requires binds to turn on integrity checking if SSL\\TLS are not already active on "
                "the connection, data 0, v4563",
            )
        if name.lower() == self.bind_dn.lower() and password == self.password:
            return _result(msg_id, "bindResponse", 0)
        return _result(msg_id, "bindResponse", 49, AD_BAD_PASSWORD)

    def _search(self, msg_id: int, op: bytes, controls: dict[str, bytes]) -> bytes:
        fields = _children(op)  # base, scope, deref, sizeLimit, timeLimit, typesOnly, filter, attributes
        base = fields[0][1].decode()
        scope = int.from_bytes(fields[1][1], "big")
        flt = _filter(*fields[6])
        attrs = [value.decode() for _, value in _children(fields[7][1])]
        paged = self.paging and PAGED_OID in controls
        request: dict[str, Any] = {"base": base, "scope": scope, "attributes": attrs, "paged": paged, "sent": 0}
        self.requests.append(request)
        if not base and scope == 0:  # root DSE
            supported = ["1.2.840.113556.1.4.417", "1.2.840.113556.1.4.473"] + ([PAGED_OID] if self.paging else [])
            root = {
                "supportedControl": supported,
                "supportedLDAPVersion": ["3", "2"],
                "defaultNamingContext": ["DC=example,DC=test"],
            }
            return _entry(msg_id, "", self._select(root, attrs)) + _result(msg_id, "searchResDone", 0)
        if len(self._index) != len(self.entries):
            self._index = {dn.lower(): dn for dn in self.entries}
        if base.lower() not in self._index:
            return _result(msg_id, "searchResDone", 32, "0000208D: NameErr: DSID-03100241, problem 2001 (NO_OBJECT)")
        candidates = [self._index[base.lower()]] if scope == 0 else list(self.entries)
        matched = [dn for dn in candidates if _in_scope(dn, base, scope) and _matches(flt, self.entries[dn])]
        if paged:
            size, cookie = _paged_request(controls[PAGED_OID])
            offset = int(cookie or b"0")
            size = min(size or self.size_limit, self.size_limit) if self.size_limit else size
            chunk = matched[offset : offset + size]
            request["sent"] = len(chunk)
            rest = offset + len(chunk)
            out = b"".join(_entry(msg_id, dn, self._select(self.entries[dn], attrs)) for dn in chunk)
            next_cookie = str(rest).encode() if rest < len(matched) else b""
            return out + _result(msg_id, "searchResDone", 0, cookie=next_cookie)
        out, sent = b"", 0
        for dn in matched:
            if self.size_limit and sent >= self.size_limit:
                request["sent"] = sent
                return out + _result(msg_id, "searchResDone", 4)
            out += _entry(msg_id, dn, self._select(self.entries[dn], attrs))
            sent += 1
        request["sent"] = sent
        return out + _result(msg_id, "searchResDone", 0)

    def _select(self, attributes: dict[str, list[Any]], requested: list[str]) -> dict[str, list[Any]]:
        wanted = [a.lower() for a in requested]
        out: dict[str, list[Any]] = {}
        for name, values in attributes.items():
            ranged = next(
                (m for m in map(_RANGE_REQ.match, requested) if m and m.group(1).lower() == name.lower()), None
            )
            if ranged:
                low = int(ranged.group(2))
            elif not wanted or "*" in wanted or name.lower() in wanted:
                low = 0
            else:
                continue
            if len(values) > self.max_values or ranged:
                chunk = values[low : low + self.max_values]
                last = low + len(chunk) >= len(values)
                out[f"{name};range={low}-{'*' if last else low + len(chunk) - 1}"] = chunk
            else:
                out[name] = values
        return out


def _read_message(sock: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes]:
    def need(n: int) -> bool:
        nonlocal buffer
        while len(buffer) < n:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            buffer += chunk
        return True

    if not need(2):
        return None, b""
    length, header = buffer[1], 2
    if length & 0x80:
        octets = length & 0x7F
        if not need(2 + octets):
            return None, b""
        length, header = int.from_bytes(buffer[2 : 2 + octets], "big"), 2 + octets
    if not need(header + length):
        return None, b""
    return buffer[: header + length], buffer[header + length :]


def _message(msg_id: int, op_name: str, op: Any, cookie: bytes | None = None) -> bytes:
    from ldap3.protocol.convert import build_controls_list
    from ldap3.protocol.rfc2696 import paged_search_control
    from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp
    from pyasn1.codec.ber import encoder

    message = LDAPMessage()
    message["messageID"] = MessageID(msg_id)
    message["protocolOp"] = ProtocolOp().setComponentByName(op_name, op)
    if cookie is not None:  # RFC 2696: the response control, with the cookie of the next page ("" = done)
        message["controls"] = build_controls_list([paged_search_control(False, 0, cookie)])
    return bytes(encoder.encode(message))


def _result(msg_id: int, op_name: str, code: int, text: str = "", cookie: bytes | None = None) -> bytes:
    from ldap3.protocol.rfc4511 import BindResponse, ExtendedResponse, ResultCode, SearchResultDone

    op = {"bindResponse": BindResponse, "searchResDone": SearchResultDone, "extendedResp": ExtendedResponse}[op_name]()
    op["resultCode"] = ResultCode(code)
    op["matchedDN"] = ""
    op["diagnosticMessage"] = text
    return _message(msg_id, op_name, op, cookie)


def _control(contents: bytes) -> tuple[str, bytes]:
    """One request Control (RFC 4511 §4.1.11): (controlType, controlValue or b"")."""
    parts = _children(contents)
    value = next((v for tag, v in parts[1:] if tag == 0x04), b"")
    return parts[0][1].decode(), value


def _paged_request(value: bytes) -> tuple[int, bytes]:
    """RFC 2696 realSearchControlValue ::= SEQUENCE { size INTEGER, cookie OCTET STRING }."""
    size, cookie = _children(_tlv(value, 0)[1])
    return int.from_bytes(size[1], "big"), cookie[1]


def _entry(msg_id: int, dn: str, attributes: dict[str, list[Any]]) -> bytes:
    from ldap3.protocol.rfc4511 import PartialAttribute, PartialAttributeList, SearchResultEntry, Vals

    entry = SearchResultEntry()
    entry["object"] = dn
    attrs = PartialAttributeList()
    for i, (name, values) in enumerate(attributes.items()):
        attr = PartialAttribute()
        attr["type"] = name
        vals = Vals()
        for j, value in enumerate(values):
            vals.setComponentByPosition(j, value if isinstance(value, bytes) else str(value).encode())
        attr["vals"] = vals
        attrs.setComponentByPosition(i, attr)
    entry["attributes"] = attrs
    return _message(msg_id, "searchResEntry", entry)


def _in_scope(dn: str, base: str, scope: int) -> bool:
    dn_l, base_l = dn.lower(), base.lower()
    if scope == 0:
        return dn_l == base_l
    if not dn_l.endswith("," + base_l):
        return scope == 2 and dn_l == base_l
    return scope == 2 or "," not in dn_l[: -len(base_l) - 1]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One BER element at ``pos``: (tag byte, contents, position after it)."""
    tag, length, pos = data[pos], data[pos + 1], pos + 2
    if length & 0x80:
        octets = length & 0x7F
        length, pos = int.from_bytes(data[pos : pos + octets], "big"), pos + octets
    return tag, data[pos : pos + length], pos + length


def _children(contents: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(contents):
        tag, value, pos = _tlv(contents, pos)
        out.append((tag, value))
    return out


def _filter(tag: int, contents: bytes) -> tuple[Any, ...]:
    """An RFC 4511 Filter as a small tuple tree (and/or/not/eq/present; anything else never matches)."""
    if tag in (0xA0, 0xA1):
        return ("and" if tag == 0xA0 else "or", [_filter(*c) for c in _children(contents)])
    if tag == 0xA2:
        return ("not", _filter(*_children(contents)[0]))
    if tag == 0xA3:
        (_, attr), (_, value) = _children(contents)
        return ("eq", attr.decode().lower(), value.decode("utf-8", "replace").lower())
    if tag == 0x87:
        return ("present", contents.decode().lower())
    return ("other",)


def _matches(flt: tuple[Any, ...], attributes: dict[str, list[Any]]) -> bool:
    kind = flt[0]
    if kind == "and":
        return all(_matches(f, attributes) for f in flt[1])
    if kind == "or":
        return any(_matches(f, attributes) for f in flt[1])
    if kind == "not":
        return not _matches(flt[1], attributes)
    lowered = {k.lower(): v for k, v in attributes.items()}
    if kind == "present":
        return flt[1] == "objectclass" or flt[1] in lowered
    if kind == "eq":
        return any(_text(v).lower() == flt[2] for v in lowered.get(flt[1], []))
    return False
