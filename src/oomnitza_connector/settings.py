"""Setting declarations: each setting is declared once, typed, and that declaration drives INI parsing,
validation, ``generate-ini``, the generated settings tables of the docs, ``--show-mappings`` masking
and the secret scrubber.

Values stay strings in ``SectionConfig.settings`` (mappings read them with ``{"setting": ...}``, and the
seed sends ``default_role = 25`` as ``"25"``); a kind only checks the text and turns it into a Python
value on request (``Source.value(name)``). As in the seed, an empty value counts as not set: the
default applies, and a setting without a default is required.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from .errors import ConfigError
from .ini import parse_bool

# -- kinds ----------------------------------------------------------------------------------------------


class Kind:
    """How a setting's text is read. ``parse`` raises ValueError with the end of a sentence that starts
    with the setting, e.g. ``must be a whole number from 1 to 200``."""

    empty: ClassVar[Any] = ""  # the value of a setting that is not set and has no default
    secret: ClassVar[bool] = False

    def parse(self, text: str) -> Any:
        return text

    def describe(self) -> str:
        """A few words for generate-ini comments and the docs tables."""
        return "text"


@dataclass(frozen=True)
class Text(Kind):
    def describe(self) -> str:
        return "text"


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20}
_SIZE_UNITS |= {"mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
_SIZE = re.compile(r"\s*(\d+)\s*([a-z]*)\s*\Z", re.IGNORECASE)


@dataclass(frozen=True)
class Size(Kind):
    """A size in bytes: ``8M`` is 8388608; plain numbers are bytes; K, M and G (or KB, MiB, ...) are
    powers of 1024."""

    empty: ClassVar[Any] = None

    def parse(self, text: str) -> int:
        match = _SIZE.match(text or "")
        unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None or int(match.group(1)) == 0:
            raise ValueError("is not a size (write e.g. 512K, 8M or 1G)")
        return int(match.group(1)) * unit

    def describe(self) -> str:
        return "size (K, M, G)"


@dataclass(frozen=True)
class Secret(Kind):
    """Text that is never shown: masked by --show-mappings and scrubbed from every log line."""

    secret: ClassVar[bool] = True

    def describe(self) -> str:
        return "secret"


_WHOLE = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Int(Kind):
    min: int | None = None
    max: int | None = None
    empty: ClassVar[Any] = None

    def parse(self, text: str) -> int:
        text = text.strip()
        if not _WHOLE.fullmatch(text):
            raise ValueError(f"must be {self._range('a whole number')}")
        value = int(text)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise ValueError(f"must be {self._range('a whole number')}")
        return value

    def _range(self, noun: str) -> str:
        if self.min is not None and self.max is not None:
            return f"{noun} from {self.min} to {self.max}"
        if self.min is not None:
            return f"{noun} of at least {self.min}"
        if self.max is not None:
            return f"{noun} of at most {self.max}"
        return noun

    def describe(self) -> str:
        return self._range("whole number")


@dataclass(frozen=True)
class Float(Kind):
    """A number; ``above`` is an exclusive lower bound (a timeout of 0 makes no sense)."""

    min: float | None = None
    max: float | None = None
    above: float | None = None
    empty: ClassVar[Any] = None

    def parse(self, text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            value = math.nan
        if (
            not math.isfinite(value)
            or (self.min is not None and value < self.min)
            or (self.max is not None and value > self.max)
            or (self.above is not None and value <= self.above)
        ):
            raise ValueError(f"must be {self._range()}")
        return value

    def _range(self) -> str:
        if self.min is not None and self.max is not None and self.above is None:
            return f"a number from {self.min:g} to {self.max:g}"
        parts = []
        if self.above is not None:
            parts.append(f"above {self.above:g}")
        if self.min is not None:
            parts.append(f"of at least {self.min:g}")
        if self.max is not None:
            parts.append(("at most " if parts else "of at most ") + f"{self.max:g}")
        return "a number" + (" " + " and ".join(parts) if parts else "")

    def describe(self) -> str:
        return self._range().removeprefix("a ")


@dataclass(frozen=True)
class Bool(Kind):
    """A boolean in the words the seed accepted anywhere (``ini.parse_bool``), plus ``also`` words such
    as ``auto`` that the source tells apart itself (returned lower-cased)."""

    also: tuple[str, ...] = ()
    empty: ClassVar[Any] = False

    def parse(self, text: str) -> bool | str:
        word = text.strip().lower()
        if word in self.also:
            return word
        try:
            return parse_bool(word, setting="")
        except ConfigError:
            raise ValueError(f"must be {self._words()} (yes/no, on/off and 1/0 work too)") from None

    def _words(self) -> str:
        words = ("true", "false", *self.also)
        return ", ".join(words[:-1]) + f" or {words[-1]}"

    def describe(self) -> str:
        return "/".join(("true", "false", *self.also))


@dataclass(frozen=True)
class Choice(Kind):
    """One word of a fixed list, compared exactly as the seed did (``ignore_case`` where the consumer
    lower-cases the value anyway)."""

    choices: tuple[str, ...] = ()
    ignore_case: bool = False

    def parse(self, text: str) -> str:
        if text in self.choices:
            return text
        if self.ignore_case:
            for choice in self.choices:
                if choice.lower() == text.strip().lower():
                    return choice
        raise ValueError(f"must be one of: {', '.join(self.choices)}")

    def describe(self) -> str:
        return "one of: " + ", ".join(self.choices)


@dataclass(frozen=True)
class File(Kind):
    """The path of a file; ``must_exist`` is checked when the configuration is loaded."""

    must_exist: bool = True

    def parse(self, text: str) -> str:
        if self.must_exist and not os.path.isfile(text):
            raise ValueError("is not a file" if os.path.exists(text) else "does not exist")
        return text

    def describe(self) -> str:
        return "file path"


@dataclass(frozen=True)
class Folder(Kind):
    must_exist: bool = True

    def parse(self, text: str) -> str:
        if self.must_exist and not os.path.isdir(text):
            raise ValueError("is not a folder" if os.path.exists(text) else "does not exist")
        return text

    def describe(self) -> str:
        return "folder path"


@dataclass(frozen=True)
class Url(Kind):
    """An absolute URL with a host; the schemes are listed most preferred first."""

    schemes: tuple[str, ...] = ("https", "http")

    def parse(self, text: str) -> str:
        text = text.strip()
        scheme, sep, rest = text.partition("://")
        if not sep or scheme.lower() not in self.schemes or not rest.strip("/"):
            raise ValueError(f"must start with {self._starts()}")
        return text

    def _starts(self) -> str:
        starts = [f"{s}://" for s in self.schemes]
        return starts[0] if len(starts) == 1 else ", ".join(starts[:-1]) + f" or {starts[-1]}"

    def describe(self) -> str:
        return f"URL ({self._starts()})"


@dataclass(frozen=True)
class Json(Kind):
    """A JSON text; ``shape`` = "object", "array" or "" (anything)."""

    shape: str = ""
    empty: ClassVar[Any] = None

    def parse(self, text: str) -> Any:
        try:
            value = json.loads(text)
        except ValueError as exc:
            where = f" (line {exc.lineno} column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            raise ValueError(f"must be {self._noun()}; it is not valid JSON{where}") from None
        wanted = {"object": dict, "array": list}.get(self.shape)
        if wanted is not None and not isinstance(value, wanted):
            raise ValueError(f"must be {self._noun()}")
        return value

    def _noun(self) -> str:
        return {"object": "a JSON object {...}", "array": "a JSON array [...]"}.get(self.shape, "JSON")

    def describe(self) -> str:
        return f"JSON {self.shape}".strip()


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*\Z", re.IGNORECASE)


@dataclass(frozen=True)
class Duration(Kind):
    """A length of time: ``7d``, ``12h``, ``30m``, ``45s``, ``2w``, or plain seconds; a ``timedelta``."""

    empty: ClassVar[Any] = None

    def parse(self, text: str) -> timedelta:
        match = _DURATION.match(text or "")
        if match is None:
            raise ValueError("is not a duration (write e.g. 7d, 12h, 30m or a number of seconds)")
        return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()])

    def describe(self) -> str:
        return "duration (s, m, h, d, w)"


_COUNT_OR_PERCENT = re.compile(r"\s*(\d+)\s*\Z|\s*(\d+(?:\.\d+)?)\s*%\s*\Z")


@dataclass(frozen=True)
class CountOrPercent(Kind):
    """A whole number (``50``) or a percentage from 0 to 100 (``5%``); the text, checked."""

    def parse(self, text: str) -> str:
        match = _COUNT_OR_PERCENT.match(text or "")
        if match is None or (match.group(2) is not None and float(match.group(2)) > 100):
            raise ValueError("must be a number of records (50) or a percentage (5%)")
        return text.strip()

    def describe(self) -> str:
        return "count or percentage"


_SEPARATORS = {"comma": r"\s*,\s*", "space": r"\s+", "any": r"[\s,]+"}


@dataclass(frozen=True)
class List(Kind):
    """Items separated by commas (``sep="comma"``), whitespace (``"space"``) or either (``"any"``);
    empty items are dropped. ``choices`` limits the items."""

    sep: str = "comma"
    choices: tuple[str, ...] = ()
    empty: ClassVar[Any] = []

    def parse(self, text: str) -> list[str]:
        items = [item for item in re.split(_SEPARATORS[self.sep], text.strip()) if item]
        wrong = [item for item in items if self.choices and item not in self.choices]
        if wrong:
            raise ValueError(
                f"lists {', '.join(map(repr, wrong))}; each item must be one of: {', '.join(self.choices)}"
            )
        return items

    def describe(self) -> str:
        kind = {"comma": "comma-separated", "space": "space-separated", "any": "comma/space-separated"}[self.sep]
        return f"{kind} list" + (f" of: {', '.join(self.choices)}" if self.choices else "")


TEXT = Text()
SECRET = Secret()
BOOL = Bool()

# -- the declaration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting of a section. ``default=None`` makes it required; ``help`` is mandatory: it becomes
    the setting's comment in ``generate-ini`` and its line in the docs."""

    name: str
    default: str | None = None  # None: required (an empty value counts as missing, as in the seed)
    example: Any = None  # written by generate-ini instead of the default
    secret: bool = False
    choices: tuple[str, ...] | None = None  # shorthand for kind=Choice(choices)
    help: str = ""
    kind: Kind = field(default=TEXT, kw_only=True)

    def __post_init__(self) -> None:
        if not self.help.strip():
            raise ValueError(f"setting {self.name!r} has no help text")
        kind = self.kind
        if self.choices and isinstance(kind, Text):
            kind = Choice(tuple(self.choices))
        if self.secret and isinstance(kind, Text):
            kind = SECRET
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "secret", self.secret or kind.secret)
        if isinstance(kind, Choice):
            object.__setattr__(self, "choices", kind.choices)

    @property
    def required(self) -> bool:
        return self.default is None

    def template_value(self) -> Any:
        if self.example is not None:
            return self.example
        return self.default if self.default is not None else ""

    def parse(self, text: str) -> Any:
        """The typed value of ``text`` (empty: the default, else the kind's empty value); ValueError if bad."""
        text = text if isinstance(text, str) else str(text)  # a value some caller put in as a number
        if text == "":
            text = self.default or ""
        if text == "":
            empty = self.kind.empty
            return list(empty) if isinstance(empty, list) else empty  # never the shared class-level list
        return self.kind.parse(text)

    def problem(self, text: str, *, where: str) -> str | None:
        """``<where> key = 'value' must be ...`` when ``text`` is not valid, else None. A secret's value
        is never repeated."""
        try:
            self.parse(text)
        except ValueError as exc:
            shown = self.name if self.secret else f"{self.name} = {text!r}"
            hint = f" (e.g. {self.example})" if isinstance(self.kind, Url | Json) and self.example else ""
            return f"{where} {shown} {exc}{hint}"
        return None

    def describe(self) -> str:
        return self.kind.describe()


# Accepted in every section (config.md §3). Values are interpreted in config.SectionConfig.
COMMON_SETTINGS: tuple[Setting, ...] = (
    Setting("verify_ssl", "true", kind=BOOL, help="verify TLS certificates of this section's servers"),
    Setting("cacert_file", "", kind=File(), help="CA bundle (PEM) to trust, for HTTPS and LDAP"),
    Setting("cacert_dir", "", kind=Folder(), help="directory of CA certificates to trust"),
    Setting("ssl_protocol", "", help="legacy; TLS 1.2 or newer is always negotiated"),
    Setting(
        "request_timeout",
        "120",
        kind=Float(above=0),
        help="seconds to wait for an HTTP answer before it counts as failed (and is retried)",
    ),
    Setting("use_server_map", "true", kind=BOOL, help="merge the mapping stored in Oomnitza"),
    Setting("only_if_filled", "", help="accepted for compatibility; no effect"),
    Setting("dont_overwrite", "", help="accepted for compatibility; no effect"),
    Setting("insert_only", "false", kind=BOOL, help="only create records in Oomnitza"),
    Setting("update_only", "false", kind=BOOL, help="only update existing records in Oomnitza"),
    Setting("sync_field", "", kind=List(), help="Oomnitza field id(s) that identify a record, comma-separated"),
    Setting(
        "vault_keys",
        "",
        kind=List(sep="any"),
        help="settings whose values come from the secret backend, space-separated",
    ),
    Setting(
        "vault_backend",
        "keyring",
        kind=Choice(("keyring", "vault", "cyberark"), ignore_case=True),
        help="where the vault_keys are stored",
    ),
    Setting("vault_alias", "", help="name under which this section's secrets are stored"),
    Setting("vault_url", "", kind=Url(), help="Vault/Conjur base URL (else from the keyring or VAULT_ADDR)"),
    Setting("vault_mount", "", help="Vault KV mount (default secret)"),
    Setting("vault_path", "", help="Vault secret path (default: the vault alias or section name)"),
    Setting("vault_kv_version", "", kind=Choice(("1", "2", "auto"), ignore_case=True), help="Vault KV engine version"),
    Setting("vault_namespace", "", help="Vault Enterprise namespace"),
    Setting("vault_cacert", "", kind=File(), help="CA bundle for Vault's certificate"),
    Setting("conjur_account", "", help="Conjur account (default: the vault alias or section name)"),
    Setting("conjur_login", "", help="Conjur login, e.g. host/oomnitza-connector (default admin)"),
    Setting("conjur_variable_prefix", "", help="prefix of the Conjur variable ids, e.g. oomnitza/zendesk/"),
    Setting("conjur_cacert", "", kind=File(), help="CA bundle for Conjur's certificate"),
    Setting("user_pem_file", "", kind=File(), help="PEM file with client certificate and key"),
    Setting("connector_bulk_mode", "", help="accepted for compatibility; every connector batches"),
    Setting("webhook_token", "", secret=True, help="server.py: the token webhook callers must send"),
    Setting("webhook_header", "", help="server.py: header carrying webhook_token (default Authorization)"),
    Setting("webhook_username", "", help="server.py: basic-auth user webhook callers must send"),
    Setting("webhook_password", "", secret=True, help="server.py: basic-auth password webhook callers must send"),
    Setting("webhook_insecure", "", kind=BOOL, help="server.py: accept unauthenticated webhooks (not recommended)"),
    Setting(
        "change_aware",
        "true",
        kind=BOOL,
        help="send only records that changed since Oomnitza last confirmed them (needs sync_field); "
        "false sends every record every run",
    ),
    Setting(
        "full_sync_interval",
        "7d",
        kind=Duration(),
        help="change-aware sync: send every record again when the last full push is older than this "
        "(restores edits made by hand in Oomnitza); 0 = every run",
    ),
    Setting(
        "retire_after_runs",
        "0",
        kind=Int(min=0),
        help="change-aware sync: retire a record missing from the source for this many complete runs "
        "(sends retire_mapping); 0 = never",
    ),
    Setting(
        "retire_max",
        "5%",
        kind=CountOrPercent(),
        help="retire nothing when more records than this (a count, or a percentage of those known) "
        "would be retired in one run",
    ),
    Setting(
        "retire_mapping",
        "",
        example='{"STATUS": {"hardcoded": "Retired"}}',
        kind=Json("object"),
        help='the fields sent to retire a record, in the mapping syntax: {"FIELD": {"hardcoded": ...}} '
        'or {"FIELD": {"setting": "..."}}',
    ),
    Setting("test_run", "false", kind=BOOL, help="managed runs: process at most 10 records"),
    Setting("is_custom", "false", kind=BOOL, help="managed runs: custom connector flag"),
)
COMMON_BY_NAME = {s.name: s for s in COMMON_SETTINGS}

# Words in setting names that mark their values as secrets even when a source forgot to say so.
SECRET_HINTS = ("password", "secret", "token", "api_key", "apikey", "private_key", "json_key")


def looks_secret(name: str) -> bool:
    lowered = name.lower()
    return any(h in lowered for h in SECRET_HINTS)
