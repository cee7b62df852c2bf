"""HashiCorp Vault (KV version 1 and 2): one read per section, all keys from it.

Three plain ``GET``s through the shared HTTP layer's blocking client (retries, TLS settings, redacted
logging), the way the ``vault kv get`` CLI does them: the mount's KV version from
``/v1/sys/internal/ui/mounts/{mount}`` (``options.version``), then ``/v1/{mount}/data/{path}`` (KV v2,
the secret under ``data.data``) or ``/v1/{mount}/{path}`` (KV v1, under ``data``), with the token in
``X-Vault-Token`` and the namespace in ``X-Vault-Namespace`` (developer.hashicorp.com/vault/api-docs:
secret/kv/kv-v1, secret/kv/kv-v2, system/internal-ui-mounts). A deleted or destroyed KV v2 version
answers 404 like a missing one. No SDK: hvac would bring a requests session of its own.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

import httpx

from ..errors import ConfigError
from ..http import classify_transport_error, safe_url, sync_client
from .bootstrap import SECRETS_POLICY, bootstrap, tls_options

log = logging.getLogger(__name__)


def _base_url(url: str) -> str:
    # The seed's docs stored https://vault/v1/secret/zendesk; only the server part is the base.
    base = re.sub(r"/v1(/.*)?$", "", url.rstrip("/"))
    if base != url.rstrip("/"):
        log.warning("vault_url %s: using %s (the path part is not needed)", url, base)
    return base


def read_vault(section: str, service: str, keys: list[str], settings: dict[str, str]) -> dict[str, str]:
    url = _base_url(bootstrap(section, service, settings, "vault_url", ("VAULT_ADDR",)))
    token = bootstrap(section, service, settings, "vault_token", ("VAULT_TOKEN",))
    mount = (settings.get("vault_mount") or "secret").strip("/")
    path = (settings.get("vault_path") or service).strip("/")
    version = (settings.get("vault_kv_version") or "auto").strip().lower()
    if version not in ("auto", "1", "2"):
        raise ConfigError(f"[{section}] vault_kv_version = {version!r} must be 1, 2 or auto")
    headers = {"X-Vault-Token": token, "Accept": "application/json"}
    if settings.get("vault_namespace"):
        headers["X-Vault-Namespace"] = settings["vault_namespace"]
    where = f"{mount}/{path}"
    tls = tls_options(section, settings, "vault_cacert")
    with sync_client(
        name=f"[{section}] Vault", base_url=url, tls=tls, headers=headers, timeout=30.0, policy=SECRETS_POLICY
    ) as client:
        try:
            if version == "auto":
                version = _detect(client, mount)
            target = f"/v1/{quote(mount)}/data/{quote(path)}" if version == "2" else f"/v1/{quote(mount)}/{quote(path)}"
            response = client.get(target)
        except httpx.TransportError as exc:
            if "certificate" in str(exc).lower():
                raise ConfigError(
                    f"[{section}] cannot reach Vault at {url}: TLS certificate not trusted (set vault_cacert or "
                    "cacert_file)"
                ) from None
            raise ConfigError(f"[{section}] {classify_transport_error(exc, safe_url(url))}") from None
    if response.status_code == 403:
        raise ConfigError(
            f"[{section}] Vault refused to read {where} (403): the token is wrong or its "
            "policy does not allow reading this path"
        )
    if response.status_code == 404:
        raise ConfigError(
            f"[{section}] Vault has no secret at {where} (KV v{version}); check "
            "vault_mount, vault_path and vault_kv_version"
        )
    if response.status_code >= 400:
        raise ConfigError(f"[{section}] Vault could not read {where}: {response.status_code}{_errors(response)}")
    data = _json(response).get("data")
    if version == "2":
        data = data.get("data") if isinstance(data, dict) else None
    return {k: str(data[k]) for k in keys if isinstance(data, dict) and data.get(k) not in (None, "")}


def _detect(client: httpx.Client, mount: str) -> str:
    """KV version of ``mount`` from Vault's mount description; v1 when Vault does not say (the token
    may not see mount details: the read itself then tells)."""
    response = client.get(f"/v1/sys/internal/ui/mounts/{quote(mount)}")
    if response.status_code >= 400:
        return "1"
    data = _json(response).get("data")
    options = (data.get("options") if isinstance(data, dict) else None) or {}
    return "2" if isinstance(options, dict) and str(options.get("version", "1")) == "2" else "1"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _errors(response: httpx.Response) -> str:
    """Vault's ``{"errors": [...]}`` as ": a; b", or nothing."""
    errors = _json(response).get("errors")
    text = "; ".join(str(e) for e in errors if e) if isinstance(errors, list) else ""
    return f": {text[:200]}" if text else ""
