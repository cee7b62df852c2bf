"""The OS keyring through the ``keyring`` library, plus an encrypted-file keyring for headless servers.

Which store is used is explicit: by default the platform's keyring (macOS Keychain, Windows
Credential Manager, Secret Service on a Linux desktop). On a server without one, set
``OOMNITZA_KEYRING=cryptfile`` and ``OOMNITZA_KEYRING_PASSWORD`` (or
``OOMNITZA_KEYRING_PASSWORD_FILE``) to use an encrypted file (``keyrings.cryptfile``), at
``OOMNITZA_KEYRING_FILE`` or the library's default path.

Keyrings cannot list their entries, so the names of the keys stored for a service are kept in one
extra entry (``__keys__``) that ``strongbox --list`` reads.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import ConfigError
from ..extras import install_hint

INDEX_KEY = "__keys__"
SETUP_HINT = (
    "set OOMNITZA_KEYRING=cryptfile and OOMNITZA_KEYRING_PASSWORD (or OOMNITZA_KEYRING_PASSWORD_FILE) "
    "to use an encrypted file keyring, or run a Secret Service (GNOME Keyring) session"
)


def _open() -> Any:
    choice = os.environ.get("OOMNITZA_KEYRING", "").strip().lower()
    if choice in ("cryptfile", "file"):
        return _cryptfile()
    if choice not in ("", "system", "os"):
        raise ConfigError(f"OOMNITZA_KEYRING = {choice!r}: use 'system' or 'cryptfile'")
    try:
        import keyring
        from keyring.backends import chainer, fail
    except ImportError:
        raise ConfigError("the 'keyring' package is not installed (pip install keyring)") from None
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring) or (isinstance(backend, chainer.ChainerBackend) and not backend.backends):
        raise ConfigError(f"no usable OS keyring on this machine; {SETUP_HINT}")
    return backend


def _cryptfile() -> Any:
    try:
        from keyrings.cryptfile.cryptfile import CryptFileKeyring
    except ImportError:
        raise ConfigError(
            f"OOMNITZA_KEYRING=cryptfile needs the 'keyrings.cryptfile' package: {install_hint('keyrings')}"
        ) from None
    password = os.environ.get("OOMNITZA_KEYRING_PASSWORD", "")
    password_file = os.environ.get("OOMNITZA_KEYRING_PASSWORD_FILE", "")
    if not password and password_file:
        try:
            with open(password_file, encoding="utf-8") as fh:
                password = fh.read().strip()
        except OSError as exc:
            raise ConfigError(f"OOMNITZA_KEYRING_PASSWORD_FILE {password_file}: {exc.strerror}") from None
    if not password:
        raise ConfigError(
            "OOMNITZA_KEYRING=cryptfile needs OOMNITZA_KEYRING_PASSWORD or "
            "OOMNITZA_KEYRING_PASSWORD_FILE (the file keyring's unlock password)"
        )
    path = os.environ.get("OOMNITZA_KEYRING_FILE", "")

    class FileKeyring(CryptFileKeyring):
        @property
        def file_path(self) -> str:
            return path or super().file_path

    store = FileKeyring()
    try:
        store.keyring_key = password  # unlocks (or creates) the file
    except ValueError:
        raise ConfigError(
            f"cannot unlock the file keyring {store.file_path}: OOMNITZA_KEYRING_PASSWORD is not its password"
        ) from None
    return store


class KeyringStore:
    def __init__(self) -> None:
        self.backend = _open()

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ConfigError:
            raise
        except Exception as exc:  # keyring backends raise many kinds; the message says which store failed
            name = type(self.backend).__name__
            message = str(exc) or type(exc).__name__
            if "decrypt" in message.lower() or type(exc).__name__ in ("ValueError",):
                message += " (is OOMNITZA_KEYRING_PASSWORD right?)"
            raise ConfigError(f"the keyring ({name}) could not {what}: {message}") from None

    def get(self, service: str, key: str) -> str | None:
        return self._call("read a secret", self.backend.get_password, service, key)

    def get_many(self, service: str, keys: list[str]) -> dict[str, str]:
        return {k: v for k in keys if (v := self.get(service, k))}

    def keys(self, service: str) -> list[str]:
        raw = self.get(service, INDEX_KEY)
        try:
            names = json.loads(raw) if raw else []
        except ValueError:
            names = []
        return sorted(n for n in names if isinstance(n, str))

    def set(self, service: str, key: str, value: str) -> None:
        self._call("store the secret", self.backend.set_password, service, key, value)
        names = set(self.keys(service)) | {key}
        self._call("store the key index", self.backend.set_password, service, INDEX_KEY, json.dumps(sorted(names)))

    def delete(self, service: str, key: str) -> bool:
        if self.get(service, key) is None:
            return False
        self._call("delete the secret", self.backend.delete_password, service, key)
        names = set(self.keys(service)) - {key}
        self._call("store the key index", self.backend.set_password, service, INDEX_KEY, json.dumps(sorted(names)))
        return True
