"""Where the Vault / Conjur address and credential come from: INI, OS keyring, or environment."""

from __future__ import annotations

import os
import ssl

import httpx

from .. import redact
from ..errors import ConfigError
from ..http import RetryPolicy, TlsOptions


def bootstrap(section: str, service: str, settings: dict[str, str], key: str, env: tuple[str, ...]) -> str:
    """``vault_url`` / ``vault_token``: the INI (URL only), then the keyring under the service name as
    the seed did (``strongbox.py --key=vault_url``), then the standard environment variables."""
    value = settings.get(key, "") if key == "vault_url" else ""
    if not value:
        try:
            from .keyring_store import KeyringStore

            value = KeyringStore().get(service, key) or ""
        except ConfigError:
            value = ""  # no keyring here: the environment may still have it
    if not value:
        value = next((os.environ[name] for name in env if os.environ.get(name)), "")
    if not value:
        names = " or ".join(env)
        raise ConfigError(
            f"[{section}] {key} for the secret backend is not set; store it with: "
            f"python strongbox.py --connector={service} --key={key} --value= (or set {names})"
        )
    if key != "vault_url":
        redact.add_secret(value)
    return value


SECRETS_POLICY = RetryPolicy(attempts=3, connect_attempts=2, max_retry_after=10.0)  # read while the config loads
DEFAULT_TIMEOUT = 30.0  # seconds, unless the section sets request_timeout


def http_timeout(settings: dict[str, str]) -> httpx.Timeout:
    """The section's ``request_timeout`` (seconds) when it sets one, else 30 s; connecting at most 15 s.
    A bad value is reported by the settings check that follows; here it falls back to the default."""
    try:
        seconds = float(settings.get("request_timeout") or DEFAULT_TIMEOUT)
    except ValueError:
        seconds = DEFAULT_TIMEOUT
    if not seconds > 0:
        seconds = DEFAULT_TIMEOUT
    return httpx.Timeout(seconds, connect=min(seconds, 15.0))


def tls_options(section: str, settings: dict[str, str], ca_key: str) -> TlsOptions:
    """``verify_ssl`` and the CA of a secret store (``vault_cacert``/``conjur_cacert``, else ``cacert_file``:
    a bundle file or a hashed directory)."""
    from ..ini import parse_bool

    verify = parse_bool(settings.get("verify_ssl") or "true", setting="verify_ssl")
    ca = settings.get(ca_key) or settings.get("cacert_file") or ""
    tls = TlsOptions(
        verify=verify, cacert_dir=ca if os.path.isdir(ca) else "", cacert_file="" if os.path.isdir(ca) else ca
    )
    try:
        tls.context()  # a missing or unreadable CA file is a setting to fix, not a traceback
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"[{section}] {ca_key if settings.get(ca_key) else 'cacert_file'} {ca!r} cannot be used: {exc}"
        ) from None
    return tls
