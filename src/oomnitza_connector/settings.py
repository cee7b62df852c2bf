"""Setting declarations: each setting is declared once and that declaration drives INI parsing,
validation, ``generate-ini``, ``--show-mappings`` masking and the secret scrubber."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None = None  # None: required (an empty value counts as missing, as in the seed)
    example: Any = None  # written by generate-ini instead of the default
    secret: bool = False
    choices: tuple[str, ...] | None = None
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is None

    def template_value(self) -> Any:
        if self.example is not None:
            return self.example
        return self.default if self.default is not None else ""


# Accepted in every section (config.md §3). Values are interpreted in config.SectionConfig.
COMMON_SETTINGS: tuple[Setting, ...] = (
    Setting("verify_ssl", "true", help="verify TLS certificates of this section's servers"),
    Setting("cacert_file", "", help="CA bundle (PEM) to trust, for HTTPS and LDAP"),
    Setting("cacert_dir", "", help="directory of CA certificates to trust"),
    Setting("ssl_protocol", "", help="legacy; TLS 1.2 or newer is always negotiated"),
    Setting(
        "request_timeout", "120", help="seconds to wait for an HTTP answer before it counts as failed (and is retried)"
    ),
    Setting("use_server_map", "true", help="merge the mapping stored in Oomnitza"),
    Setting("only_if_filled", "", help="accepted for compatibility; no effect"),
    Setting("dont_overwrite", "", help="accepted for compatibility; no effect"),
    Setting("insert_only", "false", help="only create records in Oomnitza"),
    Setting("update_only", "false", help="only update existing records in Oomnitza"),
    Setting("sync_field", "", help="Oomnitza field id(s) that identify a record, comma-separated"),
    Setting("vault_keys", "", help="settings whose values come from the secret backend"),
    Setting("vault_backend", "keyring", help="keyring, vault or cyberark"),
    Setting("vault_alias", "", help="name under which this section's secrets are stored"),
    Setting("vault_url", "", help="Vault/Conjur base URL (else from the keyring or VAULT_ADDR)"),
    Setting("vault_mount", "", help="Vault KV mount (default secret)"),
    Setting("vault_path", "", help="Vault secret path (default: the vault alias or section name)"),
    Setting("vault_kv_version", "", help="1, 2 or auto (default)"),
    Setting("vault_namespace", "", help="Vault Enterprise namespace"),
    Setting("vault_cacert", "", help="CA bundle for Vault's certificate"),
    Setting("conjur_account", "", help="Conjur account (default: the vault alias or section name)"),
    Setting("conjur_login", "", help="Conjur login, e.g. host/oomnitza-connector (default admin)"),
    Setting("conjur_variable_prefix", "", help="prefix of the Conjur variable ids, e.g. oomnitza/zendesk/"),
    Setting("conjur_cacert", "", help="CA bundle for Conjur's certificate"),
    Setting("user_pem_file", "", help="PEM file with client certificate and key"),
    Setting("connector_bulk_mode", "", help="accepted for compatibility; every connector batches"),
    Setting("webhook_token", "", secret=True, help="server.py: the token webhook callers must send"),
    Setting("webhook_header", "", help="server.py: header carrying webhook_token (default Authorization)"),
    Setting("webhook_username", "", help="server.py: basic-auth user webhook callers must send"),
    Setting("webhook_password", "", secret=True, help="server.py: basic-auth password webhook callers must send"),
    Setting("webhook_insecure", "", help="server.py: accept unauthenticated webhooks (not recommended)"),
    Setting("test_run", "false", help="managed runs: process at most 10 records"),
    Setting("is_custom", "false", help="managed runs: custom connector flag"),
)
COMMON_BY_NAME = {s.name: s for s in COMMON_SETTINGS}

# Words in setting names that mark their values as secrets even when a source forgot to say so.
SECRET_HINTS = ("password", "secret", "token", "api_key", "apikey", "private_key", "json_key")


def looks_secret(name: str) -> bool:
    lowered = name.lower()
    return any(h in lowered for h in SECRET_HINTS)
