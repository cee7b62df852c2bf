"""Fake HashiCorp Vault: KV v1 and v2 mounts, X-Vault-Token, namespaces, Vault's error bodies."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor


def errors(status: int, *messages: str) -> JSONResponse:
    return JSONResponse({"errors": list(messages)}, status_code=status)


class FakeVault(FakeVendor):
    def __init__(self, token: str = "hvs.FAKE-vault-token", namespace: str | None = None) -> None:
        self.token = token
        self.namespace = namespace
        self.mounts: dict[str, int] = {"secret": 2, "kv1": 1}  # mount -> KV version
        self.data: dict[tuple[str, str], dict[str, Any]] = {}  # (mount, path) -> secret
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/sys/internal/ui/mounts/{mount}", self.mount_info),
            Route("/v1/{mount}/{path:path}", self.read),
        ]

    def _denied(self, request: Request) -> Response | None:
        if request.headers.get("x-vault-token") != self.token:
            return errors(403, "permission denied")
        if self.namespace and request.headers.get("x-vault-namespace") != self.namespace:
            return errors(403, "permission denied")
        return None

    async def mount_info(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied:
            return denied
        mount = request.path_params["mount"]
        if mount not in self.mounts:
            return errors(400, f"no mount at {mount}")
        version = self.mounts[mount]
        return JSONResponse(
            {
                "data": {
                    "path": f"{mount}/",
                    "type": "kv",
                    "options": {"version": str(version)} if version == 2 else None,
                }
            }
        )

    async def read(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied:
            return denied
        mount, path = request.path_params["mount"], request.path_params["path"]
        version = self.mounts.get(mount)
        if version is None:
            return errors(404)
        if version == 2:
            if not path.startswith("data/"):
                return errors(404)  # a v1-style read on a v2 mount
            secret = self.data.get((mount, path.removeprefix("data/")))
            if secret is None:
                return errors(404)
            return JSONResponse(
                {"data": {"data": secret, "metadata": {"version": 1, "destroyed": False, "deletion_time": ""}}}
            )
        secret = self.data.get((mount, path))
        if secret is None:
            return errors(404)
        return JSONResponse({"data": secret, "lease_duration": 2764800, "renewable": False})
