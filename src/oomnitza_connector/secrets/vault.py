"""HashiCorp Vault (KV version 1 and 2) through ``hvac``: one read per section, all keys from it."""

from __future__ import annotations

import logging
import re

from ..errors import ConfigError
from ..extras import install_hint
from .bootstrap import bootstrap, verify_option

log = logging.getLogger(__name__)


def _base_url(url: str) -> str:
    # The seed's docs stored https://vault/v1/secret/zendesk; only the server part is the base.
    base = re.sub(r"/v1(/.*)?$", "", url.rstrip("/"))
    if base != url.rstrip("/"):
        log.warning("vault_url %s: using %s (the path part is not needed)", url, base)
    return base


def read_vault(section: str, service: str, keys: list[str], settings: dict[str, str]) -> dict[str, str]:
    try:
        import hvac
        import hvac.exceptions as hx
        import requests
    except ImportError:
        raise ConfigError(f"vault_backend = vault needs the 'hvac' package: {install_hint('hvac')}") from None
    url = _base_url(bootstrap(section, service, settings, "vault_url", ("VAULT_ADDR",)))
    token = bootstrap(section, service, settings, "vault_token", ("VAULT_TOKEN",))
    mount = settings.get("vault_mount") or "secret"
    path = settings.get("vault_path") or service
    version = (settings.get("vault_kv_version") or "auto").strip().lower()
    if version not in ("auto", "1", "2"):
        raise ConfigError(f"[{section}] vault_kv_version = {version!r} must be 1, 2 or auto")
    client = hvac.Client(
        url=url,
        token=token,
        namespace=settings.get("vault_namespace") or None,
        verify=verify_option(settings, "vault_cacert"),
        timeout=30,
    )
    where = f"{mount}/{path}"
    try:
        if version == "auto":
            version = _detect(client, mount)
        if version == "2":
            data = client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True
            )["data"]["data"]
        else:
            data = client.secrets.kv.v1.read_secret(path=path, mount_point=mount)["data"]
    except hx.Forbidden:
        raise ConfigError(
            f"[{section}] Vault refused to read {where} (403): the token is wrong or its "
            "policy does not allow reading this path"
        ) from None
    except hx.InvalidPath:
        raise ConfigError(
            f"[{section}] Vault has no secret at {where} (KV v{version}); check "
            "vault_mount, vault_path and vault_kv_version"
        ) from None
    except hx.VaultError as exc:
        raise ConfigError(f"[{section}] Vault could not read {where}: {exc}") from None
    except requests.exceptions.SSLError:
        raise ConfigError(
            f"[{section}] cannot reach Vault at {url}: TLS certificate not trusted (set vault_cacert or cacert_file)"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise ConfigError(f"[{section}] cannot reach Vault at {url}: {type(exc).__name__}") from None
    return {k: str(data[k]) for k in keys if isinstance(data, dict) and data.get(k) not in (None, "")}


def _detect(client: object, mount: str) -> str:
    """KV version of ``mount`` from Vault's mount description; v1 when Vault does not say."""
    try:
        info = client.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}")  # type: ignore[attr-defined]
        options = (info or {}).get("data", {}).get("options") or {}
        return "2" if str(options.get("version", "1")) == "2" else "1"
    except Exception:  # the token may not see mount details; the read itself then tells
        return "1"
