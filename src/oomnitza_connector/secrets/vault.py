"""HashiCorp Vault (KV version 1 and 2): one read per section, all keys from it.

Plain ``GET``s through the shared HTTP layer's blocking client (retries, TLS settings,
``request_timeout``, redacted logging), the way ``vault kv get`` makes them: the mount's KV version
from ``/v1/sys/internal/ui/mounts/{mount}/{path}`` (``data.options.version``; a 404 there means a
Vault too old to have it, so KV v1, as the CLI decides), then ``/v1/{mount}/data/{path}`` (KV v2,
the secret under ``data.data``) or ``/v1/{mount}/{path}`` (KV v1, under ``data``), with the token
in ``X-Vault-Token``, the namespace in ``X-Vault-Namespace`` and ``X-Vault-Request: true`` as
Vault's own clients send it (developer.hashicorp.com/vault/api-docs: secret/kv/kv-v1,
secret/kv/kv-v2; hashicorp/vault command/kv_helpers.go). Each of Vault's refusals becomes one line
that says which setting to fix: an invalid token, a policy that does not cover the path, a
missing mount or secret, a deleted or destroyed version, a sealed Vault. No SDK: hvac would bring
a requests session of its own.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import quote

import httpx

from ..errors import ConfigError
from ..http import RETRY_EXTENSION, classify_transport_error, retry_options, safe_url, sync_client
from .bootstrap import SECRETS_POLICY, bootstrap, http_timeout, tls_options

log = logging.getLogger(__name__)


def _base_url(url: str) -> str:
    # The seed's docs stored https://vault/v1/secret/zendesk; only the server part is the base.
    base = re.sub(r"/v1(/.*)?$", "", url.rstrip("/"))
    if base != url.rstrip("/"):
        log.warning("vault_url %s: using %s (the path part is not needed)", url, base)
    return base


def _eventually_consistent(response: httpx.Response) -> bool:
    """412: a Vault Enterprise node has not caught up yet; Vault's docs say to retry it."""
    return response.status_code == 412


class _Vault:
    """One section's reads, and what each of Vault's answers means for the user."""

    def __init__(self, section: str, service: str, client: httpx.Client, url: str, settings: dict[str, str]) -> None:
        self.section, self.service, self.client, self.url = section, service, client, url
        self.mount = (settings.get("vault_mount") or "secret").strip("/")
        self.path = (settings.get("vault_path") or service).strip("/")
        self.namespace = (settings.get("vault_namespace") or "").strip("/")
        self.where = f"{self.mount}/{self.path}"

    def fail(self, text: str) -> ConfigError:
        return ConfigError(f"[{self.section}] Vault: {text}")

    def get(self, target: str) -> httpx.Response:
        extensions = retry_options(validate=_not_vault_json)
        try:
            response = self.client.get(target, extensions=extensions)
        except httpx.TransportError as exc:
            if "certificate" in str(exc).lower():
                raise ConfigError(
                    f"[{self.section}] cannot reach Vault at {self.url}: TLS certificate not trusted "
                    "(set vault_cacert or cacert_file)"
                ) from None
            raise ConfigError(f"[{self.section}] {classify_transport_error(exc, safe_url(self.url))}") from None
        if response.status_code < 300 and _not_vault_json(response):
            raise self.fail(
                f"{self.url} did not answer with Vault's JSON ({_looks_like(response)}); check vault_url, "
                "and the proxy settings if a proxy is in the way"
            )
        return response

    def kv_version(self) -> str:
        """``vault kv get``'s mount check: the engine and KV version of the mount holding the path."""
        response = self.get(f"/v1/sys/internal/ui/mounts/{quote(self.where)}")
        if response.status_code == 404:
            return "1"  # a Vault older than this endpoint, where KV was version 1
        if response.status_code == 403 and not _invalid_token(response):
            raise self.fail(
                f"no mount '{self.mount}' that this token may use{self._in_namespace()} (403 at the KV version "
                "check); check vault_mount and vault_namespace, or grant the token's policy read on "
                f"{self.mount}/…"
            )
        self.refuse(response, "")
        data = _json(response).get("data")
        info = data if isinstance(data, dict) else {}
        engine = str(info.get("type") or "kv")
        if engine not in ("kv", "generic"):
            raise self.fail(
                f"the mount '{self.mount}' is a '{engine}' secrets engine, not a KV store; check vault_mount"
            )
        options = info.get("options")
        return "2" if isinstance(options, dict) and str(options.get("version", "1")) == "2" else "1"

    def read(self, version: str) -> dict[str, Any]:
        target = f"/v1/{quote(self.mount)}/data/{quote(self.path)}" if version == "2" else f"/v1/{quote(self.where)}"
        response = self.get(target)
        if response.status_code == 404:
            raise self.fail(self._not_found(response, version))
        self.refuse(response, version)
        data = _json(response).get("data")
        if version == "2":
            data = data.get("data") if isinstance(data, dict) else None
        return data if isinstance(data, dict) else {}

    def refuse(self, response: httpx.Response, version: str) -> None:
        """The one-line error for a refusal (nothing for a 2xx)."""
        status = response.status_code
        if status < 300:
            return
        errors = _errors(response)
        if status == 403 and _invalid_token(response):
            raise self.fail(
                "the token was refused (403 invalid token: wrong, expired or revoked); store a valid one with: "
                f"python strongbox.py --connector={self.service} --key=vault_token --value= (or set VAULT_TOKEN)"
            )
        if status == 403:
            api_path = f"{self.mount}/data/{self.path}" if version == "2" else self.where
            raise self.fail(
                f"the token may not read {self.where}{self._in_namespace()} (403 permission denied); its policy "
                f'needs path "{api_path}" {{ capabilities = ["read"] }}, or check vault_mount and vault_path'
            )
        if status == 503 and "sealed" in errors.lower():
            raise self.fail(f"{self.url} is sealed (503); unseal it (vault operator unseal), then run again")
        if status == 503 and "active" in errors.lower():
            raise self.fail(f"{self.url} has no active node (503 {errors}); try again once the cluster has a leader")
        what = f"{status} {response.reason_phrase}".strip()
        gave_up = _gave_up(response)
        raise self.fail(f"could not read {self.where}: {what}{': ' + errors if errors else ''}{gave_up}")

    def _not_found(self, response: httpx.Response, version: str) -> str:
        body = _json(response)
        warnings = " ".join(str(w) for w in body.get("warnings") or [])
        errors = _errors(response)
        if "no handler for route" in errors:
            return f"no mount '{self.mount}'{self._in_namespace()} (404); check vault_mount and vault_namespace"
        if "versioned K/V" in warnings:
            return f"'{self.mount}' is a KV version 2 mount; set vault_kv_version = 2 (or auto)"
        data = body.get("data")
        metadata = data.get("metadata") if isinstance(data, dict) else None
        if isinstance(metadata, dict) and metadata.get("destroyed"):
            return (
                f"the latest version ({metadata.get('version')}) of {self.where} was destroyed; write a new one: "
                f"vault kv put -mount={self.mount} {self.path} …"
            )
        if isinstance(metadata, dict) and metadata.get("deletion_time"):
            return (
                f"the latest version ({metadata.get('version')}) of {self.where} was deleted; restore it: "
                f"vault kv undelete -mount={self.mount} -versions={metadata.get('version')} {self.path}"
            )
        return (
            f"no secret at {self.where} (KV v{version}){self._in_namespace()}; check vault_path, vault_mount "
            "and vault_kv_version"
        )

    def _in_namespace(self) -> str:
        return f" in namespace '{self.namespace}'" if self.namespace else ""


def read_vault(section: str, service: str, keys: list[str], settings: dict[str, str]) -> dict[str, str]:
    url = _base_url(bootstrap(section, service, settings, "vault_url", ("VAULT_ADDR",)))
    token = bootstrap(section, service, settings, "vault_token", ("VAULT_TOKEN",)).strip()
    version = (settings.get("vault_kv_version") or "auto").strip().lower()
    if version not in ("auto", "1", "2"):
        raise ConfigError(f"[{section}] vault_kv_version = {version!r} must be 1, 2 or auto")
    headers = {"X-Vault-Token": token, "X-Vault-Request": "true", "Accept": "application/json"}
    if settings.get("vault_namespace"):
        headers["X-Vault-Namespace"] = settings["vault_namespace"].strip("/")
    tls = tls_options(section, settings, "vault_cacert")
    with sync_client(
        name=f"[{section}] Vault",
        base_url=url,
        tls=tls,
        headers=headers,
        timeout=http_timeout(settings),
        policy=SECRETS_POLICY,
        retry_if=_eventually_consistent,
    ) as client:
        vault = _Vault(section, service, client, url, settings)
        if version == "auto":
            version = vault.kv_version()
        secret = vault.read(version)
    missing = [k for k in keys if secret.get(k) in (None, "")]
    if missing:
        present = ", ".join(sorted(str(k) for k in secret)) or "no keys"
        add = (
            f"add it with: vault kv patch -mount={vault.mount} {vault.path} {missing[0]}=…"
            if version == "2"
            else "add it to that secret (a KV v1 write replaces all its keys: give them all)"
        )
        raise ConfigError(
            f"[{section}] the secret '{missing[0]}' was not found in Vault: {vault.where} (KV v{version}) has "
            f"{present}; {add}"
        )
    return {k: _text(secret[k]) for k in keys}


def _text(value: Any) -> str:
    """A KV value as a setting: strings as they are, numbers, booleans and objects as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _not_vault_json(response: httpx.Response) -> str | None:
    """Why a 2xx is not Vault's answer (a proxy's or portal's page), or None."""
    return None if "data" in _json(response) else f"not Vault's JSON ({_looks_like(response)})"


def _looks_like(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return f"{response.status_code} {kind}" + (", an HTML page" if response.text.lstrip().startswith("<") else "")


def _errors(response: httpx.Response) -> str:
    """Vault's ``{"errors": [...]}`` as one line, multierror texts ("2 errors occurred: * a * b")
    flattened to "a; b"; nothing when there is none."""
    errors = _json(response).get("errors")
    if not isinstance(errors, list):
        return ""
    lines = (line.strip().lstrip("*").strip() for error in errors for line in str(error).splitlines())
    items = [line for line in lines if line and not re.fullmatch(r"\d+ errors? occurred:", line)]
    return "; ".join(items)[:200]


def _invalid_token(response: httpx.Response) -> bool:
    return "invalid token" in _errors(response)


def _gave_up(response: httpx.Response) -> str:
    options = response.request.extensions.get(RETRY_EXTENSION)
    reason = getattr(options, "gave_up", "")
    attempts = getattr(options, "attempts", 1)
    return f" ({reason or f'tried {attempts} times'})" if attempts > 1 else ""
