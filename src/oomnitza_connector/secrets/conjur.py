"""CyberArk Conjur: API-key authentication, access tokens reused while they are fresh, URL-encoded
login and variable ids, account and login as settings (the seed hard-coded both).

As CyberArk documents it (docs.conjur.org, Developer/Conjur_API_Authenticate.htm and
Conjur_API_Retrieve_Secret.htm) and its clients do it (conjur-api-go, conjur-api-python):
``POST /authn/{account}/{login}/authenticate`` with the API key as the body and
``Accept-Encoding: base64``; then ``GET /secrets/{account}/variable/{id}`` with
``Authorization: Token token="…"``. A token is reused until 85% of its life (from its own ``iat``
and ``exp``; 8 minutes when it does not say) as conjur-api-go's ``ShouldRefresh`` does, and once
more after a 401 (revoked, or the server's TTL is shorter). Through the shared HTTP layer's blocking
client: the same retry policy, TLS settings, ``request_timeout`` and redacted logging as every call.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from .. import redact
from ..errors import ConfigError
from ..http import classify_transport_error, retry_options, safe_url, sync_client
from .bootstrap import SECRETS_POLICY, bootstrap, http_timeout, tls_options

DEFAULT_LIFETIME = 8 * 60  # seconds: Conjur's default, for a token that does not carry iat/exp
REFRESH_AT = 0.85  # of a token's life, as conjur-api-go
_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}  # (url, account, login) -> (token, use until)
_lock = threading.Lock()


def _lifetime(token_json: dict[str, object]) -> float:
    """Seconds the token is valid for, from its payload's ``exp - iat`` (url-safe base64 JSON)."""
    try:
        payload = str(token_json["payload"])
        claims = json.loads(base64.urlsafe_b64decode(payload.replace("+", "-").replace("/", "_") + "=="))
        return max(0.0, float(claims["exp"]) - float(claims["iat"]))
    except (KeyError, TypeError, ValueError, binascii.Error):
        return DEFAULT_LIFETIME


def _token_json(body: str) -> dict[str, object] | None:
    """The access token, sent raw (JSON) or base64-encoded, as JSON; None when it is not one."""
    text = body.strip()
    if not text.startswith("{"):
        try:
            text = base64.b64decode(text, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
    try:
        token = json.loads(text)
    except ValueError:
        return None
    if isinstance(token, dict) and {"protected", "payload", "signature"} <= token.keys():
        return token
    return None


def _not_a_token(response: httpx.Response) -> str | None:
    return None if _token_json(response.text) is not None else f"not an access token ({_looks_like(response)})"


def _proxy_page(response: httpx.Response) -> str | None:
    """A variable's value is whatever bytes it holds; only an HTML page typed as HTML is taken for a
    proxy's answer (Conjur serves values as application/octet-stream unless annotated otherwise)."""
    html = response.headers.get("content-type", "").startswith("text/html")
    return f"not a secret value ({_looks_like(response)})" if html and response.text.lstrip().startswith("<") else None


def _looks_like(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return f"{response.status_code} {kind}" + (", an HTML page" if response.text.lstrip().startswith("<") else "")


def _conjur_message(response: httpx.Response) -> str:
    """Conjur's ``{"error": {"message": …}}`` or its plain-text reason, for the error line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or "")[:200]
    text = response.text.strip()
    return "" if text.startswith("<") else text[:200]


@dataclass
class _Conjur:
    section: str
    service: str
    client: httpx.Client
    url: str
    account: str
    login: str
    api_key: str

    def fail(self, text: str) -> ConfigError:
        return ConfigError(f"[{self.section}] Conjur: {text}")

    def call(self, method: str, target: str, **options: Any) -> httpx.Response:
        try:
            return self.client.request(method, target, **options)
        except httpx.TransportError as exc:
            raise ConfigError(f"[{self.section}] {classify_transport_error(exc, safe_url(self.url))}") from None

    def authenticate(self) -> str:
        response = self.call(
            "POST",
            f"{self.url}/authn/{quote(self.account, safe='')}/{quote(self.login, safe='')}/authenticate",
            content=self.api_key.encode(),
            headers={"Accept-Encoding": "base64", "Content-Type": "text/plain"},
            # asking again only issues another token; a 2xx that is no token (a proxy's page) is retried
            extensions=retry_options(idempotent=True, validate=_not_a_token),
        )
        if response.status_code == 401:
            raise ConfigError(
                f"[{self.section}] Conjur rejected the API key of '{self.login}' in account '{self.account}' (401); "
                "check conjur_login and conjur_account, and store the login's API key with: python strongbox.py "
                f"--connector={self.service} --key=vault_token --value= (or set CONJUR_AUTHN_API_KEY)"
            )
        if response.status_code >= 300:
            raise self.fail(self._unexpected(response, "authenticating"))
        token_json = _token_json(response.text)
        if token_json is None:
            raise self.fail(
                f"{self.url} did not answer with an access token ({_looks_like(response)}); check vault_url, "
                "and the proxy settings if a proxy is in the way"
            )
        text = response.text.strip()  # base64 as asked, or raw JSON from a server that ignored the header
        token = base64.b64encode(text.encode()).decode() if text.startswith("{") else text
        redact.add_secret(token)
        with _lock:
            _tokens[self.cache_key] = (token, time.monotonic() + REFRESH_AT * _lifetime(token_json))
        return token

    @property
    def cache_key(self) -> tuple[str, str, str]:
        return (self.url, self.account, self.login)

    def token(self, stale: str | None = None) -> str:
        with _lock:
            cached = _tokens.get(self.cache_key)
        if cached and cached[0] != stale and time.monotonic() < cached[1]:
            return cached[0]
        return self.authenticate()

    def read(self, key: str, variable: str) -> str:
        target = f"{self.url}/secrets/{quote(self.account, safe='')}/variable/{quote(variable, safe='')}"
        token = self.token()
        response = self.get(target, token)
        if response.status_code == 401:  # revoked, or a server TTL shorter than the token said
            response = self.get(target, self.token(stale=token))
            if response.status_code == 401:
                raise self.fail(
                    f"a fresh access token for '{self.login}' was refused (401 {_conjur_message(response)}); "
                    "check that vault_url names one Conjur cluster and that this machine's clock is right"
                )
        if response.status_code == 404:
            raise ConfigError(
                f"[{self.section}] the secret '{key}' was not found in Conjur: the variable '{variable}' in account "
                f"'{self.account}' does not exist, has no value yet, or '{self.login}' may not see it (404); check "
                "conjur_variable_prefix, and permit the login read and execute on it"
            )
        if response.status_code == 403:
            reason = _conjur_message(response)
            if "IP address" in reason:
                raise self.fail(
                    f"'{self.login}' may not connect from this machine (403 {reason}); add its address to the "
                    "login's restricted_to in the Conjur policy"
                )
            raise self.fail(
                f"'{self.login}' may not read the variable '{variable}' (403); permit it execute on that variable"
            )
        if response.status_code >= 300:
            raise self.fail(self._unexpected(response, f"reading '{variable}'"))
        if _proxy_page(response):
            raise self.fail(
                f"{self.url} did not answer with the value of '{variable}' ({_looks_like(response)}); check "
                "vault_url, and the proxy settings if a proxy is in the way"
            )
        return response.text

    def get(self, target: str, token: str) -> httpx.Response:
        return self.call(
            "GET",
            target,
            headers={"Authorization": f'Token token="{token}"'},
            extensions=retry_options(validate=_proxy_page),
        )

    def _unexpected(self, response: httpx.Response, doing: str) -> str:
        what = f"{response.status_code} {response.reason_phrase}".strip()
        said = _conjur_message(response)
        return f"{what} while {doing}{': ' + said if said else ''} (at {safe_url(response.request.url)})"


def read_conjur(section: str, service: str, keys: list[str], settings: dict[str, str]) -> dict[str, str]:
    url = bootstrap(section, service, settings, "vault_url", ("CONJUR_APPLIANCE_URL",)).rstrip("/")
    api_key = bootstrap(section, service, settings, "vault_token", ("CONJUR_AUTHN_API_KEY",)).strip()
    account = settings.get("conjur_account") or service
    login = settings.get("conjur_login") or "admin"
    prefix = settings.get("conjur_variable_prefix") or ""
    tls = tls_options(section, settings, "conjur_cacert")
    with sync_client(
        name=f"[{section}] Conjur", tls=tls, timeout=http_timeout(settings), policy=SECRETS_POLICY
    ) as client:
        conjur = _Conjur(section, service, client, url, account, login, api_key)
        return {key: conjur.read(key, prefix + key) for key in keys}
