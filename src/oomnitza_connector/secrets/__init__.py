"""Secrets for settings: OS keyring (``strongbox``), HashiCorp Vault, CyberArk Conjur, environment.

A section lists ``vault_keys``; each listed name is fetched from the section's ``vault_backend``
and becomes a setting, overriding the INI. Environment variables ``OOMNITZA__<SECTION>__<KEY>``
fill settings too, with lower precedence than the backend. Every value obtained here is
registered with the redactor before anything can print it.
"""

from __future__ import annotations

import os
import re

from .. import redact
from ..errors import ConfigError

BACKENDS = ("keyring", "vault", "cyberark")


def split_keys(text: str) -> list[str]:
    """``vault_keys``: whitespace-separated in the seed; commas are accepted too."""
    return [k.strip().lower() for k in re.split(r"[\s,]+", text) if k.strip()]


def env_name(section: str, key: str) -> str:
    def norm(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9]", "_", s).upper()

    return f"OOMNITZA__{norm(section)}__{norm(key)}"


def from_environment(section: str, keys: list[str]) -> dict[str, str]:
    """Settings given as ``OOMNITZA__<SECTION>__<KEY>`` environment variables (for containers)."""
    prefix = env_name(section, "")
    found: dict[str, str] = {}
    for name, value in os.environ.items():
        if name.startswith(prefix) and value != "":
            key = name[len(prefix) :].lower()
            if key in keys or keys == []:
                found[key] = value
    return found


def strongbox_hint(service: str, key: str) -> str:
    return f"python strongbox.py --connector={service} --key={key} --value="


def fetch(section: str, backend: str, service: str, keys: list[str], settings: dict[str, str]) -> dict[str, str]:
    """The values of ``keys`` from ``backend``; a missing or empty one is a one-line ConfigError."""
    if backend not in BACKENDS:
        raise ConfigError(f"[{section}] vault_backend = {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "keyring":
        from .keyring_store import KeyringStore

        values = KeyringStore().get_many(service, keys)
    elif backend == "vault":
        from .vault import read_vault

        values = read_vault(section, service, keys, settings)
    else:
        from .conjur import read_conjur

        values = read_conjur(section, service, keys, settings)
    for key in keys:
        value = values.get(key)
        if not value:
            where = {"keyring": "the OS keyring", "vault": "Vault", "cyberark": "Conjur"}[backend]
            hint = (
                f"; store it with: {strongbox_hint(service, key)}"
                if backend == "keyring"
                else f" (service '{service}')"
            )
            raise ConfigError(f"[{section}] the secret '{key}' was not found in {where}{hint}")
        redact.add_secret(value)
    return {k: values[k] for k in keys}
