"""Fake HashiCorp Vault: the KV v1/v2 reads and the mount check that ``vault kv get`` makes, with
Vault's own status codes and error bodies.

What it follows, per behaviour (HashiCorp's docs at developer.hashicorp.com/vault/api-docs, and the
source of github.com/hashicorp/vault and github.com/hashicorp/vault-plugin-secrets-kv):

- Envelope: every 2xx body is Vault's response envelope (``request_id``, ``lease_id``,
  ``renewable``, ``lease_duration``, ``data``, ``wrap_info``, ``warnings``, ``auth``,
  ``mount_type``); every error is ``{"errors": [...]}`` with ``Content-Type: application/json``
  (sdk/logical/response_util.go ``RespondError``; api-docs "Error response"). A read that finds
  nothing is 404 with ``{"errors": []}`` (``RespondErrorCommon``: a nil read response is 404).
- Token: ``X-Vault-Token``. An unknown (wrong, expired, revoked) token is 403 with both
  ``permission denied`` and ``invalid token`` in one multierror text (vault/request_handling.go
  ``fetchACLTokenEntryAndEntity``, tests ``TestCore_HandleRequest_TokenErrInvalidToken``; docs
  concepts/tokens "Error responses", hashicorp/vault PR 26687). A valid token whose policy does not
  cover the path is 403 ``permission denied`` alone; the ACL is checked before routing, so a
  restricted token gets 403, not 404, for a mount that does not exist. ``policy``: the API paths
  the token may read (None: every path, like a root token).
- Mount check: ``GET /v1/sys/internal/ui/mounts/<mount>/<path>``, as the CLI's
  ``kvPreflightVersionRequest`` sends it (command/kv_helpers.go), answered from the longest mount
  prefix with the mount's description (``type``, ``options`` — ``{"version": "2"}`` on a v2
  mount, null on a v1 mount created without options — ``path``, ``accessor``, ``config`` …).
  No such mount, or a token whose policy grants nothing under it: 403 ``preflight capability
  check returned 403, please ensure client's policies grant access to path "<path>/"``
  (vault/logical_system.go ``pathInternalUIMountRead``, ``hasMountAccess``).
- Unknown mount, token allowed: 404 ``no handler for route "<path>". route entry not found.``
  (vault/router.go).
- KV v1: ``GET /v1/<mount>/<path>`` → ``data`` is the secret, ``lease_duration`` 2764800 (32 days,
  the default TTL) (api-docs secret/kv/kv-v1).
- KV v2: ``GET /v1/<mount>/data/<path>`` → ``data.data`` and ``data.metadata``
  (``created_time``, ``custom_metadata``, ``deletion_time``, ``destroyed``, ``version``). A
  soft-deleted or destroyed latest version is 404 WITH the envelope: ``data.data`` null and the
  metadata saying so (vault-plugin-secrets-kv path_data.go ``pathDataRead``; api-docs
  secret/kv/kv-v2 "Read secret version"). A v1-style path on a v2 mount is 404 with only a warning
  ``Invalid path for a versioned K/V secrets engine. … use 'vault kv get' for this operation.``
  (backend.go ``pathInvalid``).
- Namespaces (Enterprise): ``namespace`` set → the token and mounts live there; a request whose
  ``X-Vault-Namespace`` names another namespace sees neither (403 ``permission denied``). Trailing
  slashes are ignored as Vault does. (Enterprise source is closed: the exact answer is not
  confirmed; see docs/secrets.md "Limits".)
- Sealed: 503 ``{"errors": ["Vault is sealed"]}`` for every request (``consts.ErrSealed``,
  ``AdjustErrorStatusCode``; api-docs "503 … sealed").
- Standby: ``active_url`` set → 307 to the same path on the active node; ``standby`` without an
  active node → 503 ``no active Vault instance found`` (http/handler.go ``respondStandby``).
- ``X-Vault-Request: true`` is recorded (``requests``); the official clients send it
  (api/client.go, hvac adapters.py) and Vault Agent/Proxy listeners may require it.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

INVALID_TOKEN = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
PERMISSION_DENIED = "1 error occurred:\n\t* permission denied\n\n"
CREATED = "2026-01-05T09:30:00.000000Z"
V2_PREFIXES = ("data/", "metadata/", "delete/", "undelete/", "destroy/", "subkeys/")


def errors(status: int, *messages: str) -> JSONResponse:
    return JSONResponse({"errors": list(messages)}, status_code=status)


def envelope(data: Any, *, status: int = 200, warnings: list[str] | None = None, **extra: Any) -> JSONResponse:
    body = {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": warnings,
        "auth": None,
        "mount_type": "kv",
        **extra,
    }
    return JSONResponse(body, status_code=status)


class FakeVault(FakeVendor):
    def __init__(self, token: str = "hvs.FAKE-vault-token", namespace: str | None = None) -> None:
        self.token = token
        self.namespace = namespace
        # mount -> KV version (1 or 2), or another engine's type ("pki") for a mount that is not KV
        self.mounts: dict[str, int | str] = {"secret": 2, "kv1": 1}
        self.data: dict[tuple[str, str], dict[str, Any]] = {}  # (mount, path) -> the latest version
        self.versions: dict[tuple[str, str], int] = {}  # current version number of a KV v2 secret
        self.deleted: set[tuple[str, str]] = set()  # latest v2 version soft-deleted (vault kv delete)
        self.destroyed: set[tuple[str, str]] = set()  # latest v2 version destroyed (vault kv destroy)
        self.policy: set[str] | None = None  # readable API paths ("secret/data/x"); None: every path
        self.sealed = False
        self.standby = False
        self.active_url = ""  # with standby: where the active node is (307 there)
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/sys/internal/ui/mounts/{path:path}", self.mount_info),
            Route("/v1/{path:path}", self.read),
        ]

    # -- the gate every request passes (sealed, standby, token, namespace) ----------------------------

    def _refused(self, request: Request) -> Response | None:
        if self.sealed:
            return errors(503, "Vault is sealed")
        if self.standby:
            if not self.active_url:
                return errors(503, "no active Vault instance found")
            target = self.active_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(target, status_code=307)
        if request.headers.get("x-vault-token") != self.token:
            return errors(403, INVALID_TOKEN)
        asked = (request.headers.get("x-vault-namespace") or "").strip("/")
        if (self.namespace or "").strip("/") != asked:
            return errors(403, PERMISSION_DENIED)
        return None

    def _allowed(self, api_path: str) -> bool:
        return self.policy is None or api_path in self.policy

    def _mount_of(self, path: str) -> str | None:
        candidates = [m for m in self.mounts if path == m or path.startswith(m + "/")]
        return max(candidates, key=len) if candidates else None

    # -- sys/internal/ui/mounts -----------------------------------------------------------------------

    async def mount_info(self, request: Request) -> Response:
        if refused := self._refused(request):
            return refused
        path = request.path_params["path"].strip("/")
        mount = self._mount_of(path)
        has_access = mount is not None and (self.policy is None or any(p.startswith(mount + "/") for p in self.policy))
        if mount is None or not has_access:
            return errors(
                403,
                "preflight capability check returned 403, please ensure client's policies grant access "
                f'to path "{path}/"',
            )
        kind = self.mounts[mount]
        engine = "kv" if isinstance(kind, int) else kind
        options = {"version": "2"} if kind == 2 else None
        return envelope(
            {
                "accessor": f"{engine}_1f2e3d4c",
                "config": {"default_lease_ttl": 0, "force_no_cache": False, "max_lease_ttl": 0},
                "description": "key/value secret storage" if engine == "kv" else "",
                "external_entropy_access": False,
                "local": False,
                "options": options,
                "path": f"{mount}/",
                "plugin_version": "",
                "running_plugin_version": "v0.25.0+builtin" if engine == "kv" else "v1.21.0+builtin.vault",
                "running_sha256": "",
                "seal_wrap": False,
                "type": engine,
                "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, mount)),
            },
            mount_type="system",
        )

    # -- reads ------------------------------------------------------------------------------------------

    async def read(self, request: Request) -> Response:
        if refused := self._refused(request):
            return refused
        path = request.path_params["path"].strip("/")
        if not self._allowed(path):
            return errors(403, PERMISSION_DENIED)
        mount = self._mount_of(path)
        if mount is None:
            return errors(404, f'no handler for route "{path}". route entry not found.')
        kind = self.mounts[mount]
        rest = path[len(mount) :].strip("/")
        if kind == 2:
            return self._read_v2(mount, rest)
        if kind == 1:
            secret = self.data.get((mount, rest))
            if secret is None:
                return errors(404)
            return envelope(secret, lease_duration=2764800)
        return errors(405, "unsupported operation")  # another engine: not a KV read

    def _read_v2(self, mount: str, rest: str) -> Response:
        if rest in ("data", "metadata", "delete", "undelete", "destroy"):
            return envelope(
                None, status=404, warnings=["Non-listing operations on the root of a K/V v2 mount are not supported."]
            )
        if not rest.startswith(V2_PREFIXES):
            return envelope(
                None,
                status=404,
                warnings=[
                    "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API "
                    "endpoints to use. If using the Vault CLI, use 'vault kv get' for this operation."
                ],
            )
        if not rest.startswith("data/"):
            return errors(404)  # metadata/subkeys reads are not needed by the connector
        key = (mount, rest.removeprefix("data/"))
        secret = self.data.get(key)
        if secret is None:
            return errors(404)
        deleted, destroyed = key in self.deleted, key in self.destroyed
        metadata = {
            "created_time": CREATED,
            "custom_metadata": None,
            "deletion_time": "2026-02-01T10:00:00.000000Z" if deleted else "",
            "destroyed": destroyed,
            "version": self.versions.get(key, 1),
        }
        if deleted or destroyed:
            return envelope({"data": None, "metadata": metadata}, status=404)
        return envelope({"data": secret, "metadata": metadata})
