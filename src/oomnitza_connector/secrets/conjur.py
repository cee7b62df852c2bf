"""CyberArk Conjur: API-key authentication, access tokens reused until they expire, URL-encoded
variable ids, account and login as settings (the seed hard-coded both). Through the shared HTTP
layer's blocking client: the same retry policy, TLS settings and redacted logging as every call."""

from __future__ import annotations

import base64
import threading
import time
from urllib.parse import quote

import httpx

from .. import redact
from ..errors import ConfigError
from ..http import classify_transport_error, retry_options, safe_url, sync_client
from .bootstrap import SECRETS_POLICY, bootstrap, tls_options

TOKEN_LIFETIME = 8 * 60  # Conjur access tokens live 8 minutes
_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
_lock = threading.Lock()


def read_conjur(section: str, service: str, keys: list[str], settings: dict[str, str]) -> dict[str, str]:
    url = bootstrap(section, service, settings, "vault_url", ("CONJUR_APPLIANCE_URL",)).rstrip("/")
    api_key = bootstrap(section, service, settings, "vault_token", ("CONJUR_AUTHN_API_KEY",))
    account = settings.get("conjur_account") or service
    login = settings.get("conjur_login") or "admin"
    prefix = settings.get("conjur_variable_prefix") or ""
    cache_key = (url, account, login)
    tls = tls_options(section, settings, "conjur_cacert")
    with sync_client(name=f"[{section}] Conjur", tls=tls, timeout=30.0, policy=SECRETS_POLICY) as client:

        def authenticate() -> str:
            response = client.post(
                f"{url}/authn/{quote(account, safe='')}/{quote(login, safe='')}/authenticate",
                content=api_key.encode(),
                headers={"Accept-Encoding": "base64"},
                extensions=retry_options(idempotent=True),  # asking again only issues another token
            )
            if response.status_code == 401:
                raise ConfigError(f"[{section}] Conjur rejected the API key of '{login}' in account '{account}' (401)")
            response.raise_for_status()
            text = response.text.strip()
            token = text if not text.startswith("{") else base64.b64encode(text.encode()).decode()
            redact.add_secret(token)
            with _lock:
                _tokens[cache_key] = (token, time.monotonic() + TOKEN_LIFETIME - 30)
            return token

        def token(stale: str | None = None) -> str:
            with _lock:
                cached = _tokens.get(cache_key)
            if cached and cached[0] != stale and time.monotonic() < cached[1]:
                return cached[0]
            return authenticate()

        values: dict[str, str] = {}
        try:
            current = token()
            for key in keys:
                variable = quote(prefix + key, safe="")
                target = f"{url}/secrets/{quote(account, safe='')}/variable/{variable}"
                response = client.get(target, headers={"Authorization": f'Token token="{current}"'})
                if response.status_code == 401:  # expired early or revoked: authenticate once more
                    current = token(stale=current)
                    response = client.get(target, headers={"Authorization": f'Token token="{current}"'})
                if response.status_code == 404:
                    continue  # reported as missing by the caller
                if response.status_code == 403:
                    raise ConfigError(f"[{section}] Conjur: '{login}' may not read the variable '{prefix + key}' (403)")
                response.raise_for_status()
                values[key] = response.text
        except httpx.HTTPStatusError as exc:
            raise ConfigError(
                f"[{section}] Conjur answered {exc.response.status_code} at {exc.request.url.path}"
            ) from None
        except httpx.TransportError as exc:
            raise ConfigError(f"[{section}] {classify_transport_error(exc, safe_url(url))}") from None
    return values
