"""Fake Chef Infra Server: ``/organizations/<org>/search/node``, as chef-server answers it.

- Auth: request signatures (protocols 1.3 and 1.0) verified with each client's public key, as
  mixlib-authentication's verifier does (lib/mixlib/authentication/signatureverification.rb): a bad
  signature, unknown client, wrong content hash or a clock more than 15 minutes off gets Chef's 401
  ``{"error": ["Failed to authenticate as '<client>'. ..."]}``.
- Full search (``GET``): rows are the stored node objects, precedence levels and all
  (chef-server ``oc_chef_wm/src/chef_wm_search.erl`` ``make_bulk_get_fun`` with no paths).
- Partial search (``POST``, body ``{"<name>": ["k1", "k2"], ...}``): each row is
  ``{"url": ..., "data": {"<name>": <value>}}`` where the value is read from the node *as indexed*:
  ``chef_wm_search.erl`` ``parse_item(node, …)`` calls ``chef_node.erl`` ``ejson_for_indexing``,
  which deep-merges default < normal < override < automatic (``chef_deep_merge.erl``: objects
  merge, anything else is replaced) and puts ``name``, ``chef_type``, ``chef_environment``,
  ``recipe``, ``role``, ``run_list`` on top. So ``["automatic", "ipaddress"]`` is null and
  ``["ipaddress"]`` is the address; a missing path or an empty one is null (``extract_path``).
  Docs example: github.com/chef-boneyard/partial_search_cookbook README
  (``'kernel_version' => ['kernel', 'version']``).
- Paging: ``rows``/``start``, ``{"total", "start", "rows"}``; ``max_rows`` plays a server that
  returns fewer rows than asked. Errors are ``{"error": ["..."]}`` (404 unknown organization).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

SKEW = dt.timedelta(minutes=15)


def new_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def pem(key: rsa.RSAPrivateKey, pkcs8: bool = False) -> bytes:
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def mac_node(name: str = "mbp-jdoe") -> dict[str, Any]:
    return {
        "name": name,
        "chef_environment": "_default",
        "json_class": "Chef::Node",
        "chef_type": "node",
        "run_list": ["role[workstation]"],
        "normal": {"tags": ["laptop"]},
        "default": {},
        "override": {},
        "automatic": {
            "platform": "mac_os_x",
            "platform_version": "15.1",
            "hostname": name,
            "fqdn": f"{name}.corp.example",
            "domain": "corp.example",
            "ipaddress": "10.20.30.41",
            "macaddress": "a4:83:e7:00:11:22",
            "uptime_seconds": 86400,
            "machinename": name,
            "memory": {"total": "32768MB"},
            "cpu": {"model_name": "Apple M3 Pro", "total": 12},
            "hardware": {"serial_number": "C02FAKE0MD6R", "machine_model": "Mac15,6", "number_processors": 1},
            "filesystem": {"by_mountpoint": {"/": {"kb_size": "971350180"}}},
        },
    }


def linux_node(name: str = "web-07", serial: str = "VMW-4221-FAKE") -> dict[str, Any]:
    return {
        "name": name,
        "chef_environment": "production",
        "json_class": "Chef::Node",
        "chef_type": "node",
        "run_list": ["role[web]"],
        "normal": {},
        "default": {},
        "override": {},
        "automatic": {
            "platform": "ubuntu",
            "platform_version": "24.04",
            "hostname": name,
            "fqdn": f"{name}.prod.example",
            "domain": "prod.example",
            "ipaddress": "10.1.0.7",
            "macaddress": "52:54:00:ab:cd:07",
            "uptime_seconds": 1209600,
            "kernel": {"name": "Linux"},
            "memory": {"total": "16314348kB"},
            "cpu": {"0": {"model_name": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"}, "total": 8},
            "dmi": {"system": {"serial_number": serial, "product_name": "VMware Virtual Platform"}},
            "filesystem": {"by_mountpoint": {"/": {"kb_size": "101430960"}}},
            "packages": {f"pkg{i}": {"version": "1.0"} for i in range(50)},  # bulk partial search skips
        },
    }


def windows_node(name: str = "win-042") -> dict[str, Any]:
    return {
        "name": name,
        "chef_environment": "_default",
        "json_class": "Chef::Node",
        "chef_type": "node",
        "run_list": [],
        "normal": {},
        "default": {},
        "override": {},
        "automatic": {
            "platform": "windows",
            "platform_version": "10.0.22631",
            "hostname": name.upper(),
            "fqdn": f"{name}.corp.example",
            "domain": "corp.example",
            "ipaddress": "10.20.30.42",
            "macaddress": "B0:7B:25:AA:BB:CC",
            "uptime_seconds": 3600,
            "memory": {"total": "33554432kB"},
            "cpu": {"0": {"model_name": "Intel(R) Core(TM) i7-1365U"}, "total": 12},
            "kernel": {
                "name": "Microsoft Windows 11 Enterprise",
                "os_info": {"serial_number": "00330-80000-00000-AA123"},
                "cs_info": {"model": "Latitude 7440", "number_of_processors": 1},
            },
            "filesystem": {"C:": {"kb_size": "498000000"}, "D:": {"kb_size": "1000"}},
        },
    }


def chef_error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": [message]}, status_code=status)


def _digest(kind: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(kind, data).digest()).decode()


def _ej_get(node: Any, path: list[str]) -> Any:
    """``ej:get(Path, Item, null)``: object keys only (a list or scalar in the way gives null)."""
    if not path:
        return None
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _deep_merge(low: Any, high: Any) -> Any:
    if isinstance(low, dict) and isinstance(high, dict):
        out = dict(low)
        for key, value in high.items():
            out[key] = _deep_merge(low[key], value) if key in low else value
        return out
    return high


def indexed_node(node: dict[str, Any]) -> dict[str, Any]:
    """``chef_node:ejson_for_indexing``: the node as search (and partial search) sees it."""
    merged: Any = {}
    for level in ("default", "normal", "override", "automatic"):
        merged = _deep_merge(merged, node.get(level) or {})
    run_list = node.get("run_list") or []
    top = {
        "name": node.get("name"),
        "chef_type": "node",
        "chef_environment": node.get("chef_environment"),
        "recipe": [i[7:-1] for i in run_list if i.startswith("recipe[")],
        "role": [i[5:-1] for i in run_list if i.startswith("role[")],
        "run_list": run_list,
    }
    return {**merged, **top}


def partial_row(node: dict[str, Any], wanted: dict[str, list[str]]) -> dict[str, Any]:
    """The ``data`` of one partial search row for the request body ``wanted``."""
    indexed = indexed_node(node)
    return {name: _ej_get(indexed, list(path)) for name, path in wanted.items()}


class FakeChef(FakeVendor):
    def __init__(
        self,
        nodes: list[dict[str, Any]] | None = None,
        *,
        org: str = "acme",
        clients: dict[str, rsa.RSAPublicKey] | None = None,
        max_rows: int = 1000,
        clock_offset: dt.timedelta = dt.timedelta(0),
    ) -> None:
        self.nodes = nodes if nodes is not None else [mac_node(), linux_node()]
        self.org = org
        self.clients = dict(clients or {})  # client name -> public key
        self.max_rows = max_rows  # a real server may return fewer rows than asked
        self.clock_offset = clock_offset  # the server's clock minus ours
        self.verified: list[str] = []  # protocol version of every accepted request
        self.broken_from: int | None = None  # answer 400 to pages starting at or after this row
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [Route("/organizations/{org}/search/node", self.search, methods=["GET", "POST"])]

    def _verify(self, request: Request, body: bytes) -> str | None:
        """None if the signature is good, else the reason (kept for debugging the fake)."""
        h = request.headers
        userid = h.get("x-ops-userid", "")
        key = self.clients.get(userid)
        if key is None:
            return "unknown client"
        sign = dict(part.split("=", 1) for part in h.get("x-ops-sign", "").split(";") if "=" in part)
        version = sign.get("version", "")
        try:
            when = dt.datetime.strptime(h.get("x-ops-timestamp", ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return "bad timestamp"
        if abs(dt.datetime.now(dt.UTC) + self.clock_offset - when) > SKEW:
            return "clock skew"
        signature = base64.b64decode("".join(h.get(f"x-ops-authorization-{i}", "") for i in range(1, 100)))
        path = request.url.path
        path = "/".join(p for p in path.split("/") if p) or "/"
        path = "/" + path if not path.startswith("/") else path
        method = request.method
        ts = h["x-ops-timestamp"]
        if version == "1.3":
            if sign.get("algorithm", "sha256") != "sha256" or h.get("x-ops-content-hash") != _digest("sha256", body):
                return "content hash"
            api = h.get("x-ops-server-api-version", "0")
            canonical = "\n".join(
                (
                    f"Method:{method}",
                    f"Path:{path}",
                    f"X-Ops-Content-Hash:{_digest('sha256', body)}",
                    "X-Ops-Sign:version=1.3",
                    f"X-Ops-Timestamp:{ts}",
                    f"X-Ops-UserId:{userid}",
                    f"X-Ops-Server-API-Version:{api}",
                )
            )
            try:
                key.verify(signature, canonical.encode(), padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return "bad signature"
            return None
        if version == "1.0":
            if h.get("x-ops-content-hash") != _digest("sha1", body):
                return "content hash"
            canonical = "\n".join(
                (
                    f"Method:{method}",
                    f"Hashed Path:{_digest('sha1', path.encode())}",
                    f"X-Ops-Content-Hash:{_digest('sha1', body)}",
                    f"X-Ops-Timestamp:{ts}",
                    f"X-Ops-UserId:{userid}",
                )
            )
            try:  # OpenSSL's RSA_public_decrypt: PKCS#1 type-1 padding, no DigestInfo
                recovered = key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
            except InvalidSignature:
                return "bad signature"
            return None if recovered == canonical.encode() else "bad signature"
        return f"unsupported signing version {version!r}"

    async def search(self, request: Request) -> Response:
        body = await request.body()
        userid = request.headers.get("x-ops-userid", "")
        reason = self._verify(request, body)
        if reason is not None:
            self.last_reject = reason
            response = chef_error(
                f"Failed to authenticate as '{userid}'. Ensure that your node_name and client key are correct.", 401
            )
            response.headers["date"] = (dt.datetime.now(dt.UTC) + self.clock_offset).strftime(
                "%a, %d %b %Y %H:%M:%S GMT"
            )
            return response
        self.verified.append(request.headers.get("x-ops-sign", ""))
        if request.path_params["org"] != self.org:
            return chef_error(f"organization '{request.path_params['org']}' does not exist.", 404)
        q = request.query_params
        rows = min(int(q.get("rows", 1000)), self.max_rows)
        start = int(q.get("start", 0))
        if self.broken_from is not None and start >= self.broken_from:
            return chef_error("Search index unavailable: query failed", 400)
        page = self.nodes[start : start + rows]
        if request.method == "POST":
            try:
                wanted = json.loads(body)
            except ValueError:
                return chef_error("invalid JSON", 400)
            out = [
                {
                    "url": f"{self.url}/organizations/{self.org}/nodes/{n['name']}",
                    "data": partial_row(n, wanted),
                }
                for n in page
            ]
        else:
            out = list(page)
        headers = {"X-Ops-Server-API-Info": "flavor=cs;version=1;min_version=0;max_version=2"}
        return JSONResponse({"total": len(self.nodes), "start": start, "rows": out}, headers=headers)
