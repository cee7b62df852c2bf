"""``[chef]``: Chef Infra Server nodes via the search index, reduced to a ``hardware`` dict.

Requests are signed (no token, no login): every request carries ``X-Ops-*`` headers with an RSA
signature made with the client's key. :class:`ChefSigner` is an ``httpx.Auth`` that signs each
request, retries included (a retry gets a fresh timestamp). Protocol 1.3 (SHA-256, PKCS#1 v1.5) is
the default; protocol 1.0 (SHA-1, raw RSA private-encrypt, what PyChef sent) is kept as an opt-in
for servers older than 12.4. Nodes are read with partial search (``POST /search/node``: only the
attributes the record needs) or full search (``GET``), ``rows``/``start`` paging, page by page.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Generator
from typing import Any

import httpx

from ..config import truthy
from ..errors import ConfigError, SourceError
from ..http import HttpAuthError, HttpError, PageRequest, Paginator, decode_json, error_body
from ..paths import get_field_value
from ..settings import BOOL, File, Int, Setting, Url
from .base import BadRecord, Record, Source

log = logging.getLogger(__name__)

PROTOCOLS = ("1.3", "1.0")
SERVER_API_VERSION = "1"
CHEF_VERSION = "18.5.0"
MAC, WINDOWS, DEFAULT = "mac_os_x", "windows", "__default__"
NODE_MAPPING_KEYS = ("serial_number", "model")

# Node attributes the built-in ``hardware`` keys read (requested by partial search).
BUILTIN_PATHS: tuple[tuple[str, ...], ...] = (
    ("name",),
    ("automatic", "ipaddress"),
    ("automatic", "macaddress"),
    ("automatic", "hostname"),
    ("automatic", "fqdn"),
    ("automatic", "domain"),
    ("automatic", "platform"),
    ("automatic", "platform_version"),
    ("automatic", "uptime_seconds"),
    ("automatic", "hardware", "serial_number"),
    ("automatic", "hardware", "machine_model"),
    ("automatic", "hardware", "number_processors"),
    ("automatic", "kernel", "os_info", "serial_number"),
    ("automatic", "kernel", "cs_info", "model"),
    ("automatic", "kernel", "cs_info", "number_of_processors"),
    ("automatic", "cpu", "0", "model_name"),
    ("automatic", "cpu", "model_name"),
    ("automatic", "cpu", "total"),
    ("automatic", "memory", "total"),
    ("automatic", "filesystem"),  # Windows takes the first entry; others by_mountpoint "/"
)


# -- request signing ---------------------------------------------------------------------------------


def canonical_path(path: str) -> str:
    """Path only; runs of ``/`` collapsed; no trailing ``/`` unless the path is ``/``."""
    path = re.sub("/+", "/", path or "/")
    return path.rstrip("/") if len(path) > 1 else path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def chef_timestamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def string_to_sign(
    protocol: str,
    method: str,
    path: str,
    body: bytes,
    timestamp: str,
    userid: str,
    server_api_version: str = SERVER_API_VERSION,
) -> str:
    """The canonical request of Chef's signing protocol ``protocol`` (mixlib-authentication)."""
    path = canonical_path(path)
    if protocol == "1.3":
        return "\n".join(
            (
                f"Method:{method.upper()}",
                f"Path:{path}",
                f"X-Ops-Content-Hash:{_b64(hashlib.sha256(body).digest())}",
                "X-Ops-Sign:version=1.3",
                f"X-Ops-Timestamp:{timestamp}",
                f"X-Ops-UserId:{userid}",
                f"X-Ops-Server-API-Version:{server_api_version}",
            )
        )
    return "\n".join(
        (
            f"Method:{method.upper()}",
            f"Hashed Path:{_b64(hashlib.sha1(path.encode()).digest())}",
            f"X-Ops-Content-Hash:{_b64(hashlib.sha1(body).digest())}",
            f"X-Ops-Timestamp:{timestamp}",
            f"X-Ops-UserId:{userid}",
        )
    )


def rsa_private_encrypt(key: Any, data: bytes) -> bytes:
    """Raw RSA "private encrypt" with PKCS#1 type-1 padding and no DigestInfo (protocol 1.0).

    Not a standard signature, so no high-level API offers it; it is m^d mod n on the padded block."""
    numbers = key.private_numbers()
    n, d = numbers.public_numbers.n, numbers.d
    k = (n.bit_length() + 7) // 8
    if len(data) > k - 11:
        raise SourceError(
            f"the {n.bit_length()}-bit key is too short for Chef signing protocol 1.0; "
            "use signing_protocol = 1.3 or a 2048-bit key"
        )
    block = b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data
    return pow(int.from_bytes(block, "big"), d, n).to_bytes(k, "big")


class ChefSigner(httpx.Auth):
    """Signs every request with the client's RSA key (``X-Ops-Authorization-1..N``)."""

    requires_request_body = True

    def __init__(self, userid: str, key: Any, protocol: str = "1.3") -> None:
        self.userid, self.key, self.protocol = userid, key, protocol

    def sign(self, request: httpx.Request) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        body = request.content or b""
        path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
        timestamp = chef_timestamp()
        canonical = string_to_sign(self.protocol, request.method, path, body, timestamp, self.userid)
        if self.protocol == "1.3":
            signature = self.key.sign(canonical.encode(), padding.PKCS1v15(), hashes.SHA256())
            content_hash = _b64(hashlib.sha256(body).digest())
            request.headers["X-Ops-Sign"] = "algorithm=sha256;version=1.3"
            request.headers["X-Ops-Server-API-Version"] = SERVER_API_VERSION
        else:
            signature = rsa_private_encrypt(self.key, canonical.encode())
            content_hash = _b64(hashlib.sha1(body).digest())
            request.headers["X-Ops-Sign"] = "algorithm=sha1;version=1.0;"
        request.headers["X-Ops-Userid"] = self.userid
        request.headers["X-Ops-Timestamp"] = timestamp
        request.headers["X-Ops-Content-Hash"] = content_hash
        encoded = _b64(signature)
        for i in range(0, len(encoded), 60):
            request.headers[f"X-Ops-Authorization-{i // 60 + 1}"] = encoded[i : i + 60]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request)
        yield request


def load_private_key(path: str, section: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"[{section}] key_file {path!r} cannot be read: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"[{section}] key_file {path!r} is not an unencrypted PEM private key "
            "(PKCS#1 'BEGIN RSA PRIVATE KEY' or PKCS#8 'BEGIN PRIVATE KEY')"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"[{section}] key_file {path!r} is not an RSA key; Chef signs with RSA")
    return key


# -- paging --------------------------------------------------------------------------------------------


class StartRows(Paginator):
    """Chef search paging: ``rows`` per page from ``start``; ends on an empty page or at ``total``
    (or, without a total, on a short page). A server may return fewer rows than asked."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def first(self, request: PageRequest) -> PageRequest:
        return PageRequest(request.url, {**request.params, "rows": self.rows, "start": 0})

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        body = decode_json(response)
        rows = body.get("rows") if isinstance(body, dict) else None
        n = len(rows) if isinstance(rows, list) else 0
        if n == 0:
            return None
        start = int(request.params["start"]) + n
        total = body.get("total")
        if isinstance(total, int) and not isinstance(total, bool):
            if start >= total:
                return None
        elif n < self.rows:
            return None
        return PageRequest(request.url, {**request.params, "start": start})


# -- record shape ---------------------------------------------------------------------------------------


def _digits(value: Any) -> int | None:
    """The leading run of digits of ``value``'s text as an int; none, or 0, gives None."""
    if value is None or isinstance(value, bool):
        return None
    match = re.match(r"\d+", str(value).strip())
    number = int(match.group()) if match else 0
    return number or None


def _per_1024(value: Any) -> float | None:
    number = _digits(value)
    return number / 1024 if number is not None else None


def _first_filesystem_kb(node: dict[str, Any]) -> Any:
    filesystem = get_field_value(node, "automatic.filesystem")
    if isinstance(filesystem, dict) and filesystem:
        first = next(iter(filesystem.values()))
        if isinstance(first, dict):
            return first.get("kb_size")
    return None


def hardware_of(
    node: dict[str, Any], extension: dict[str, dict[str, str]], node_mappings: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """The reference's derived ``hardware`` keys, then node_mappings, then attribute_extension."""

    def get(path: str) -> Any:
        return get_field_value(node, path)

    platform = get("automatic.platform")
    hw: dict[str, Any] = {
        "name": node.get("name"),
        "ip_address": get("automatic.ipaddress"),
        "mac_address": get("automatic.macaddress"),
        "hostname": get("automatic.hostname"),
        "fqdn": get("automatic.fqdn"),
        "domain": get("automatic.domain"),
        "platform": platform,
        "platform_version": get("automatic.platform_version"),
        "serial_number": None,
        "model": None,
        "total_memory_mb": _per_1024(get("automatic.memory.total")),
        "total_hdd_mb": _per_1024(get("automatic.filesystem.by_mountpoint./.kb_size")),
        "cpu": get("automatic.cpu.0.model_name"),
        "cpu_count": get("automatic.cpu.total"),
        "uptime_seconds": get("automatic.uptime_seconds"),
    }
    if platform == MAC:
        hw["serial_number"] = get("automatic.hardware.serial_number")
        hw["model"] = get("automatic.hardware.machine_model")
        hw["cpu"] = get("automatic.cpu.model_name")
        hw["cpu_count"] = get("automatic.hardware.number_processors")
        hw["total_memory_mb"] = _digits(get("automatic.memory.total"))  # already MB on macOS
    elif platform == WINDOWS:
        hw["serial_number"] = get("automatic.kernel.os_info.serial_number")  # the OS product id
        hw["model"] = get("automatic.kernel.cs_info.model")
        hw["cpu_count"] = get("automatic.kernel.cs_info.number_of_processors")
        hw["total_hdd_mb"] = _per_1024(_first_filesystem_kb(node))
    for key in NODE_MAPPING_KEYS:
        for block in (node_mappings.get(str(platform)), node_mappings.get(DEFAULT)):
            if block and block.get(key):
                value = get(block[key])
                if value is not None:
                    hw[key] = value
                    break
    for block_name, block in extension.items():  # JSON order: a later block wins a clash
        if block_name in (DEFAULT, platform):
            for key, path in block.items():
                hw[key] = get(path)
    return hw


def _place(node: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Put a partial-search value back where it lives in a node (parents placed first win)."""
    cur = node
    for key in path[:-1]:
        nxt = cur.get(key)
        if nxt is None:
            if value is None:
                return
            nxt = cur[key] = {}
        elif not isinstance(nxt, dict):
            return
        cur = nxt
    cur.setdefault(path[-1], value)


def _request_path(dotted: str) -> tuple[str, ...]:
    """A mapping path as a partial-search key path, cut before a list index (lists come whole)."""
    parts: list[str] = []
    for part in dotted.split("."):
        if part.isascii() and part.isdigit() and parts:
            break
        parts.append(part)
    return tuple(p for p in parts if p) or (dotted,)


def _json_setting(section: str, name: str, text: str) -> dict[str, dict[str, str]]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"[{section}] {name} is not valid JSON ({exc.msg} at char {exc.pos}); "
            'write e.g. {"__default__": {"kernel_name": "automatic.kernel.name"}}'
        ) from None
    ok = isinstance(value, dict) and all(
        isinstance(block, dict) and all(isinstance(k, str) and isinstance(p, str) and p for k, p in block.items())
        for block in value.values()
    )
    if not ok:
        raise ConfigError(
            f"[{section}] {name} must be a JSON object of objects: "
            '{"<platform or __default__>": {"<hardware key>": "<dotted node path>"}}'
        )
    return value


class Chef(Source):
    module = "chef"
    mapping_name = "Chef"
    record_type = "assets"
    summary = "Chef Infra Server nodes"
    settings = (
        Setting(
            "url",
            None,
            example="https://example.com/organizations/org",
            kind=Url(),
            help="the organization URL, `https://<host>/organizations/<org>` (a trailing `/` is fine)",
        ),
        Setting(
            "client",
            None,
            example="user",
            help="the Chef user or API client the connector signs requests as (`X-Ops-UserId`)",
        ),
        Setting(
            "key_file",
            None,
            example="/path/to/user.pem",
            kind=File(),
            help=(
                "the PEM RSA private key of that client, PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8 "
                "(`BEGIN PRIVATE KEY`), not encrypted"
            ),
        ),
        Setting(
            "attribute_extension",
            "",
            help=(
                'JSON that adds keys to `hardware`: `{"<platform or __default__>": {"<new hardware key>":'
                ' "<dotted node path>"}}` (see "Record shape")'
            ),
        ),
        Setting(
            "node_mappings",
            "",
            help=(
                'JSON that says where `serial_number` and `model` come from, per platform: `{"<platform '
                'or __default__>": {"serial_number": "<dotted node path>"}}` (see "Record shape")'
            ),
        ),
        Setting(
            "signing_protocol",
            "1.3",
            choices=PROTOCOLS,
            help=(
                "`1.3` signs with SHA-256 (Chef Infra Server 12.4 or newer); `1.0` signs with SHA-1, for "
                "older servers only"
            ),
        ),
        Setting(
            "partial_search",
            "true",
            kind=BOOL,
            help=(
                "ask the server only for the attributes the record needs (`POST /search/node`); `false` "
                "downloads whole nodes (`GET`)"
            ),
        ),
        Setting("page_size", "1000", kind=Int(1, 10000), help="nodes per search request (`rows`)"),
    )
    default_mappings: dict[str, dict[str, Any]] = {}

    def validate(self) -> None:
        # Parsed here, per section: [chef] and [chef.other] never share extension config.
        self.extension = _json_setting(self.name, "attribute_extension", self.setting("attribute_extension"))
        self.node_mappings = _json_setting(self.name, "node_mappings", self.setting("node_mappings"))
        for block in self.node_mappings.values():
            unknown = set(block) - set(NODE_MAPPING_KEYS)
            if unknown:
                raise ConfigError(
                    f"[{self.name}] node_mappings can set only serial_number and model, "
                    f"not {', '.join(sorted(unknown))}"
                )

    @property
    def base(self) -> str:
        return self.setting("url").rstrip("/")

    def _search_body(self) -> tuple[bytes, list[tuple[str, tuple[str, ...]]]]:
        paths = {p: None for p in BUILTIN_PATHS}
        for block in (*self.extension.values(), *self.node_mappings.values()):
            for path in block.values():
                paths.setdefault(_request_path(path), None)
        ordered = sorted(paths, key=len)  # parents before children: _place keeps the whole parent
        keys = [(".".join(p), p) for p in ordered]
        return json.dumps({k: list(p) for k, p in keys}).encode(), keys

    async def pages(self) -> AsyncIterator[list[Record]]:
        key = load_private_key(self.setting("key_file"), self.name)
        signer = ChefSigner(self.setting("client"), key, self.setting("signing_protocol"))
        headers = {"Accept": "application/json", "X-Chef-Version": CHEF_VERSION}
        partial = truthy(self.setting("partial_search"))
        kwargs: dict[str, Any] = {"params": {"q": "name:*"}}
        keys: list[tuple[str, tuple[str, ...]]] = []
        if partial:
            body, keys = self._search_body()
            kwargs.update(method="POST", content=body)
            headers["Content-Type"] = "application/json"
        warned = False
        async with self.http(base_url=self.base, headers=headers, auth=signer) as http:
            try:
                async for response in http.paginate(
                    StartRows(int(self.setting("page_size"))), "/search/node", **kwargs
                ):
                    data = decode_json(response)
                    rows = data.get("rows") if isinstance(data, dict) else None
                    if not isinstance(rows, list):
                        raise SourceError(f"[{self.name}] Chef search answered without a 'rows' list")
                    page: list[Record | BadRecord] = []
                    for row in rows:
                        node = self._node(row, keys) if partial else row
                        if not isinstance(node, dict):
                            page.append(BadRecord("search row is not a node object", row))
                            continue
                        hw = hardware_of(node, self.extension, self.node_mappings)
                        if not warned and hw["platform"] not in (MAC, WINDOWS) and hw["serial_number"] is None:
                            warned = True
                            log.info(
                                "[%s] nodes on platforms other than mac_os_x/windows (e.g. %s) have no "
                                'serial_number/model; set node_mappings, e.g. {"__default__": '
                                '{"serial_number": "automatic.dmi.system.serial_number"}}',
                                self.name,
                                hw["platform"],
                            )
                        page.append({"hardware": hw})
                    if page:
                        yield page  # type: ignore[misc]
            except HttpAuthError as exc:
                raise SourceError(self._auth_message(exc)) from None
            except HttpError as exc:
                if exc.status == 404:
                    raise SourceError(
                        f"[{self.name}] Chef Infra Server answered 404 for {self.base}/search/node: "
                        "check the organization in url (https://<host>/organizations/<org>)"
                    ) from None
                if exc.status == 413:
                    raise SourceError(
                        f"[{self.name}] the partial search request is too large (413); "
                        "use fewer attribute_extension paths or partial_search = false"
                    ) from None
                raise

    @staticmethod
    def _node(row: Any, keys: list[tuple[str, tuple[str, ...]]]) -> dict[str, Any] | None:
        data = row.get("data") if isinstance(row, dict) else None
        if not isinstance(data, dict):
            return None
        node: dict[str, Any] = {}
        for name, path in keys:
            _place(node, path, data.get(name))
        return node

    def _auth_message(self, exc: HttpError) -> str:
        detail = ""
        skew = ""
        if exc.response is not None:
            errors = error_body(exc).get("error")
            if isinstance(errors, list) and errors:
                detail = f": {errors[0]}"
            elif isinstance(errors, str):
                detail = f": {errors}"
            date = exc.response.headers.get("date")
            if date:
                try:
                    offset = email.utils.parsedate_to_datetime(date).timestamp() - dt.datetime.now(dt.UTC).timestamp()
                    if abs(offset) > 60:
                        skew = (
                            f"; this machine's clock differs from the server's by about "
                            f"{abs(offset) / 60:.0f} min (Chef allows 15)"
                        )
                except (TypeError, ValueError):
                    pass
        if exc.status == 403:
            return (
                f"[{self.name}] Chef Infra Server refused access (403{detail}): "
                f"client '{self.setting('client')}' needs read access to the node search index"
            )
        return (
            f"[{self.name}] Chef Infra Server rejected the signed request ({exc.status}{detail}): "
            f"check client, key_file and signing_protocol{skew}"
        )
