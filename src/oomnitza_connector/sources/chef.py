"""``[chef]``: Chef Infra Server nodes via the search index, reduced to a ``hardware`` dict.

Requests are signed (no token, no login): every request carries ``X-Ops-*`` headers with an RSA
signature made with the client's key. :class:`ChefSigner` is an ``httpx.Auth`` that signs each
request, retries included (a retry gets a fresh timestamp). Protocol 1.3 (SHA-256, PKCS#1 v1.5) is
the default; protocol 1.0 (SHA-1, raw RSA private-encrypt, what PyChef sent) is kept as an opt-in
for servers older than 12.4. Nodes are read with partial search (``POST /search/node``: only the
attributes the record needs) or full search (``GET``), ``rows``/``start`` paging, page by page.

Chef Infra Server answers partial search from the node as it indexes it (chef-server
``chef_wm_search.erl`` ``parse_item`` → ``chef_node.erl`` ``ejson_for_indexing``): the attributes
deep-merged (default < normal < override < automatic) plus the top-level ``name``,
``chef_environment``, ``run_list``, ``recipe``, ``role``. ``["automatic", "ipaddress"]`` is null
there; ``["ipaddress"]`` is the address. Paths written the seed's way (``automatic.kernel.name``)
are therefore read without their precedence level, and full search reads the same merged view
(built here the way the server builds it), so both modes give the same records.
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
from functools import cached_property
from typing import Any, ClassVar

import httpx

from ..errors import ConfigError, SourceError
from ..http import SIGN_EXTENSION, HttpAuthError, HttpError, OffsetLimit, at, decode_json, error_body
from ..ini import truthy
from ..paths import get_field_value
from ..settings import BOOL, File, Int, Setting, Url
from .base import BadRecord, Record, Source

log = logging.getLogger(__name__)

PROTOCOLS = ("1.3", "1.0")
SERVER_API_VERSION = "1"
CHEF_VERSION = "18.5.0"
MAC, WINDOWS, DEFAULT = "mac_os_x", "windows", "__default__"
NODE_MAPPING_KEYS = ("serial_number", "model")

# Attribute precedence levels of a node, lowest first; the merged view drops them from paths.
PRECEDENCE = ("default", "normal", "override", "automatic")
# Keys ejson_for_indexing puts at the top of the merged view, over any attribute of that name.
TOP_LEVEL = ("name", "chef_type", "chef_environment", "recipe", "role", "run_list", "policy_name", "policy_group")

# Node attributes the built-in ``hardware`` keys read, in the seed's spelling (requested by partial
# search without the precedence level).
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
        request.extensions[SIGN_EXTENSION] = self.sign  # a repeat (after a 429, a 503) is signed afresh
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


def start_rows(rows: int) -> OffsetLimit:
    """Chef search paging: ``rows`` per page from ``start``; ends on an empty page or at ``total``
    (or, without a total, on a short page). A server may return fewer rows than asked."""
    return OffsetLimit(rows, items=at("rows"), total=at("total"), offset_param="start", limit_param="rows")


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


def merged_path(path: tuple[str, ...]) -> tuple[str, ...]:
    """A node path as the merged view spells it: ``("automatic", "kernel", "name")`` → ``("kernel", "name")``."""
    if len(path) > 1 and path[0] in PRECEDENCE:
        return path[1:]
    return path


def merged_dotted(path: str) -> str:
    head, dot, rest = path.partition(".")
    return rest if dot and rest and head in PRECEDENCE else path


def deep_merge(low: Any, high: Any) -> Any:
    """chef-server ``chef_deep_merge:merge``: objects merge key by key, anything else is replaced."""
    if isinstance(low, dict) and isinstance(high, dict):
        merged = dict(low)
        for key, value in high.items():
            merged[key] = deep_merge(low[key], value) if key in low else value
        return merged
    return high


def _recipes_and_roles(run_list: Any, kind: str) -> list[str]:
    items = run_list if isinstance(run_list, list) else []
    prefix = f"{kind}["
    return [i[len(prefix) : -1] for i in items if isinstance(i, str) and i.startswith(prefix) and i.endswith("]")]


def merged_view(node: dict[str, Any]) -> dict[str, Any]:
    """The node as Chef Infra Server indexes it (``chef_node:ejson_for_indexing``): the four
    attribute levels deep-merged, then the top-level keys over them."""
    merged: Any = {}
    for level in PRECEDENCE:
        attrs = node.get(level)
        merged = deep_merge(merged, attrs if isinstance(attrs, dict) else {})
    run_list = node.get("run_list") if isinstance(node.get("run_list"), list) else []
    top = {
        "name": node.get("name"),
        "chef_type": "node",
        "chef_environment": node.get("chef_environment"),
        "recipe": _recipes_and_roles(run_list, "recipe"),
        "role": _recipes_and_roles(run_list, "role"),
        "run_list": run_list,
    }
    top.update({k: node[k] for k in ("policy_name", "policy_group") if node.get(k) is not None})
    return {**merged, **top}


def _first_filesystem_kb(get: Any) -> Any:
    filesystem = get("automatic.filesystem")
    if isinstance(filesystem, dict) and filesystem:
        first = next(iter(filesystem.values()))
        if isinstance(first, dict):
            return first.get("kb_size")
    return None


def hardware_of(
    view: dict[str, Any], extension: dict[str, dict[str, str]], node_mappings: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """The reference's derived ``hardware`` keys, then node_mappings, then attribute_extension.

    ``view`` is the merged node; every path (the built-in ones and the user's, written with or
    without a precedence level) is read from it without its level."""

    def get(path: str) -> Any:
        return get_field_value(view, merged_dotted(path))

    platform = get("automatic.platform")
    hw: dict[str, Any] = {
        "name": view.get("name"),
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
        hw["total_hdd_mb"] = _per_1024(_first_filesystem_kb(get))
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
    """Put a value where ``path`` lives in ``node`` (parents placed first win)."""
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
    """A mapping path as a node key path, cut before a list index (lists come whole)."""
    parts: list[str] = []
    for part in dotted.split("."):
        if part.isascii() and part.isdigit() and parts:
            break
        parts.append(part)
    return tuple(p for p in parts if p) or (dotted,)


def _full_view(row: Any) -> dict[str, Any] | None:
    return merged_view(row) if isinstance(row, dict) else None


def _json_setting(section: str, name: str, text: str) -> dict[str, dict[str, str]]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
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
                'downloads whole nodes (`GET`); both give the same records (see "Which attribute a path reads")'
            ),
        ),
        Setting("page_size", "1000", kind=Int(1, 10000), help="nodes per search request (`rows`)"),
    )
    default_mappings: ClassVar[dict[str, dict[str, Any]]] = {}

    def validate(self) -> None:
        _json_setting(self.name, "attribute_extension", self.setting("attribute_extension"))
        for block in _json_setting(self.name, "node_mappings", self.setting("node_mappings")).values():
            unknown = set(block) - set(NODE_MAPPING_KEYS)
            if unknown:
                raise ConfigError(
                    f"[{self.name}] node_mappings can set only serial_number and model, "
                    f"not {', '.join(sorted(unknown))}"
                )

    # Parsed per section: [chef] and [chef.other] never share extension config. A bad JSON value
    # raises ConfigError from validate(), which reads node_mappings first.
    @cached_property
    def extension(self) -> dict[str, Any]:
        return _json_setting(self.name, "attribute_extension", self.setting("attribute_extension"))

    @cached_property
    def node_mappings(self) -> dict[str, Any]:
        return _json_setting(self.name, "node_mappings", self.setting("node_mappings"))

    @property
    def base(self) -> str:
        return self.setting("url").rstrip("/")

    def _mapped_node_paths(self) -> list[tuple[str, ...]]:
        """Node paths the merged mapping reads directly (not through ``hardware``), as written."""
        paths: dict[tuple[str, ...], None] = {}
        for source in self.mapped_sources():
            if source and source != "hardware" and not source.startswith("hardware."):
                paths.setdefault(_request_path(source), None)
        return list(paths)

    def _wanted(self) -> list[tuple[str, ...]]:
        """Every path the record needs, in the merged view's spelling, parents before children."""
        paths: dict[tuple[str, ...], None] = {merged_path(p): None for p in BUILTIN_PATHS}
        for block in (*self.extension.values(), *self.node_mappings.values()):
            for path in block.values():
                paths.setdefault(merged_path(_request_path(path)), None)
        for node_path in self._mapped_node_paths():
            paths.setdefault(merged_path(node_path), None)
        return sorted(paths, key=len)  # _place keeps a whole parent over its children

    def _search_body(self) -> tuple[bytes, list[tuple[str, tuple[str, ...]]]]:
        keys = [(".".join(p), p) for p in self._wanted()]
        return json.dumps({k: list(p) for k, p in keys}).encode(), keys

    def _record(self, view: dict[str, Any], node_paths: list[tuple[str, ...]]) -> Record:
        record: Record = {"hardware": hardware_of(view, self.extension, self.node_mappings)}
        for path in node_paths:  # a mapping naming a node attribute directly gets it where it points
            if path[0] != "hardware":
                _place(record, path, get_field_value(view, ".".join(merged_path(path))))
        return record

    async def pages(self) -> AsyncIterator[list[Record]]:
        key = load_private_key(self.setting("key_file"), self.name)
        signer = ChefSigner(self.setting("client"), key, self.setting("signing_protocol"))
        headers = {"Accept": "application/json", "X-Chef-Version": CHEF_VERSION}
        partial = truthy(self.setting("partial_search"))
        kwargs: dict[str, Any] = {"params": {"q": "name:*"}}
        keys: list[tuple[str, tuple[str, ...]]] = []
        if partial:
            body, keys = self._search_body()
            kwargs.update(method="POST", content=body, idempotent=True)  # a search only reads
            headers["Content-Type"] = "application/json"
        node_paths = self._mapped_node_paths()
        warned = False
        async with self.http(base_url=self.base, headers=headers, auth=signer) as http:
            try:
                async for response in http.paginate(
                    start_rows(int(self.setting("page_size"))), "/search/node", **kwargs
                ):
                    data = decode_json(response)
                    rows = data.get("rows") if isinstance(data, dict) else None
                    if not isinstance(rows, list):
                        raise SourceError(f"[{self.name}] Chef search answered without a 'rows' list")
                    page: list[Record | BadRecord] = []
                    for row in rows:
                        view = self._partial_view(row, keys) if partial else _full_view(row)
                        if view is None:
                            page.append(BadRecord("search row is not a node object", row))
                            continue
                        record = self._record(view, node_paths)
                        hw = record["hardware"]
                        if not warned and hw["platform"] not in (MAC, WINDOWS) and hw["serial_number"] is None:
                            warned = True
                            log.info(
                                "[%s] nodes on platforms other than mac_os_x/windows (e.g. %s) have no "
                                'serial_number/model; set node_mappings, e.g. {"__default__": '
                                '{"serial_number": "automatic.dmi.system.serial_number"}}',
                                self.name,
                                hw["platform"],
                            )
                        page.append(record)
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
    def _partial_view(row: Any, keys: list[tuple[str, tuple[str, ...]]]) -> dict[str, Any] | None:
        """The merged view rebuilt from a partial search row's ``data``."""
        data = row.get("data") if isinstance(row, dict) else None
        if not isinstance(data, dict):
            return None
        view: dict[str, Any] = {}
        for name, path in keys:
            _place(view, path, data.get(name))
        return view

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
