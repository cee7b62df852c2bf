"""Seed-compatible configuration: the INI file turned into typed, validated section settings.

Reading rules of the legacy dialect live in ``ini.py``; this module applies the connector's
semantics (config.md §2–§5): which sections are loaded, setting resolution and defaults, common
settings, mapping values, custom converters and record filters. Every problem found is reported,
each as one line naming the file, section and setting.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from . import __version__, redact
from .converters import ConverterRegistry
from .errors import ConfigError, ConnectorError
from .http import TlsOptions
from .ini import IniDocument, IniSection, parse_bool, read_ini, shown_key
from .ini import truthy as truthy  # re-exported: the lenient form of ini.parse_bool
from .recordfilter import compile_filter
from .settings import BOOL, COMMON_BY_NAME, SECRET, Float, Folder, Int, Json, Setting, Text, Url, looks_secret
from .sources.base import REGISTRY, Source, load_source_class, module_of

log = logging.getLogger(__name__)

OOMNITZA = "oomnitza"
CONVERTERS = "converters"
MANAGED_PREFIXES = ("managed.", "managed_reports.")
SPECIAL_KEYS = ("enable", "recordfilter")
LEGACY_TLS_WORDS = ("ssl", "sslv23", "sslv3", "tls", "tls1")

OOMNITZA_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "url",
        None,
        example="https://example.oomnitza.com",
        kind=Url(("https", "http", "sqlite")),
        help="your Oomnitza tenant, or sqlite:///./oomnitza-local.db for the embedded local store",
    ),
    Setting("api_token", "", secret=True, help="API token of the service account"),
    Setting("username", "", example="oomnitza-sa", help="service account login (when no api_token)"),
    Setting("password", "", example="ThePassword", secret=True, help="service account password"),
    Setting(
        "retry_budget",
        "300",
        kind=Float(min=0),
        help="seconds one batch may spend on retries (Retry-After honoured) before it fails",
    ),
    Setting(
        "stop_after_failed_batches",
        "3",
        kind=Int(min=0),
        help="stop sending after this many batches in a row failed; 0 = never stop",
    ),
    Setting(
        "cancel_check_interval",
        "2",
        kind=Float(min=0),
        help="seconds between checks whether the sync was canceled in Oomnitza",
    ),
    Setting(
        "stop_grace", "5", kind=Float(min=0), help="seconds in-flight uploads get to finish after Ctrl-C or SIGTERM"
    ),
    Setting(
        "state_dir",
        "",
        kind=Folder(must_exist=False),
        help="folder for what is kept between runs: locks, the webhook queue, export state "
        "(default: the working directory; the environment variable OOMNITZA_STATE_DIR wins)",
    ),
)


@dataclass
class SectionConfig:
    """One INI section, resolved: settings are strings, as the seed keeps them."""

    name: str
    ini_path: str
    settings: dict[str, str]
    source_cls: type[Source] | None = None
    mappings: dict[str, dict[str, Any]] = field(default_factory=dict)
    recordfilter: Callable[[dict[str, Any]], bool] | None = None
    recordfilter_text: str = ""  # the filter's code as written (change-aware sync notices edits)
    enabled: bool = True
    secret_names: frozenset[str] = frozenset()
    # The section's declarations (its own and the common settings); empty: the common ones only.
    declared: dict[str, Setting] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.declared and self.source_cls is not None:
            self.declared = declarations(self.source_cls.settings)

    @property
    def module(self) -> str:
        return module_of(self.name)

    def where(self, key: str | None = None) -> str:
        return f"[{self.name}] {key}" if key else f"[{self.name}]"

    def declaration(self, key: str) -> Setting | None:
        return self.declared.get(key) or COMMON_BY_NAME.get(key)

    def value(self, key: str, setting: Setting | None = None) -> Any:
        """The typed value of a declared setting (an int for ``Int``, a bool for ``Bool``...); an empty
        value is its default, else the kind's empty value (None, "", False or [])."""
        setting = setting or self.declaration(key)
        if setting is None:
            raise KeyError(f"[{self.name}] declares no setting {key!r}")
        return _typed(setting, self.settings.get(key, ""), where=f"{self.ini_path}: [{self.name}]")

    def flag(self, key: str) -> bool:
        setting = self.declaration(key) or Setting(key, "false", kind=BOOL, help=key)
        return _typed(setting, self.settings.get(key, ""), where=f"{self.ini_path}: [{self.name}]") is True

    @property
    def sync_fields(self) -> list[str]:
        return [f.strip() for f in self.settings.get("sync_field", "").split(",") if f.strip()]

    @property
    def insert_only(self) -> bool:
        return self.flag("insert_only")

    @property
    def update_only(self) -> bool:
        return self.flag("update_only")

    def tls(self) -> TlsOptions:
        return TlsOptions(
            verify=self.flag("verify_ssl"),
            cacert_file=self.settings.get("cacert_file", ""),
            cacert_dir=self.settings.get("cacert_dir", ""),
            client_cert=self.settings.get("user_pem_file", ""),
        )

    def http_timeout(self) -> httpx.Timeout:
        """``request_timeout`` for every phase of a request, connecting capped at 15 s (a host that does
        not answer a SYN in 15 s will not answer in 120)."""
        seconds = float(self.value("request_timeout"))
        return httpx.Timeout(seconds, connect=min(seconds, 15.0))

    def shown_settings(self) -> dict[str, str]:
        """Settings with secret values masked (for --show-mappings and diagnostics)."""
        return {k: (redact.MASK if k in self.secret_names and v else v) for k, v in self.settings.items()}


@dataclass
class Config:
    path: str
    doc: IniDocument
    oomnitza: SectionConfig
    sections: dict[str, SectionConfig]  # enabled connector sections, file order
    disabled: list[str]
    converters: ConverterRegistry
    # The secrets of this file (and of what its secret backends returned): every run of it scrubs
    # its output with this, and hands it to its sources in the RunContext.
    redactor: redact.Redactor = field(default_factory=redact.Redactor)

    def section(self, name: str) -> SectionConfig:
        if name in self.sections:
            return self.sections[name]
        if name in self.disabled:
            raise ConfigError(f"{self.path}: section [{name}] is disabled; set 'enable = True' in it to run it")
        import difflib

        known = list(self.sections) + self.disabled
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        listed = ", ".join(self.sections) or "none"
        raise ConfigError(f"{self.path}: there is no section [{name}]{hint}; enabled sections: {listed}")


def parse_mapping_value(text: str, *, where: str) -> dict[str, Any]:
    """A ``mapping.X`` value: JSON, a Python-dict literal as the seed's docs print them, or a bare path."""
    text = text.strip()
    if not text:
        raise ConfigError(f'{where}: empty mapping; write e.g. {{"source": "serial"}}')
    try:
        value = json.loads(text)
    except ValueError:
        value = None
        if text.startswith("{"):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise ConfigError(
                    f"{where}: cannot read the mapping {text!r}; write it as JSON, "
                    'e.g. {"source": "serial", "converter": "split_email"}'
                ) from None
            log.debug("%s: read as a Python literal; JSON is preferred", where)
        else:
            return {"source": text}  # seed shorthand: a bare source path
    if not isinstance(value, dict):
        if isinstance(value, str):
            return {"source": value}
        raise ConfigError(f'{where}: a mapping must be an object like {{"source": "serial"}}, not {text!r}')
    unknown = set(value) - {"source", "setting", "hardcoded", "converter", "required", "type"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown mapping key(s) {', '.join(sorted(unknown))}; "
            "use source, setting, hardcoded, converter, required or type"
        )
    return value


def field_id(key: str) -> str:
    """``mapping.serial_number`` → ``SERIAL_NUMBER``; only the part between the first two dots counts."""
    return key.split(".")[1].upper()


def _typed(setting: Setting, text: str, *, where: str) -> Any:
    try:
        return setting.parse(text)
    except ValueError:
        raise ConfigError(setting.problem(text, where=where) or where) from None


class _Problems:
    """Every problem of the file, each one line, in the order found; a problem seen twice (a source
    reading a setting the validator already rejected) is reported once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, message: str | None) -> None:
        if message and message not in self.lines:
            self.lines.append(message)

    def guard(self, fn: Callable[..., Any]) -> Any:
        try:
            return fn()
        except ConnectorError as exc:
            self.add(str(exc))
            return None

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError("\n".join(self.lines))


def declarations(own: tuple[Setting, ...]) -> dict[str, Setting]:
    """A section's own settings and the common ones (an own setting wins over a common one)."""
    return {**COMMON_BY_NAME, **{s.name: s for s in own}}


def _resolve_settings(
    ini: IniSection, declared: tuple[Setting, ...], *, path: str, problems: _Problems
) -> tuple[dict[str, str], frozenset[str]]:
    """The section's settings as strings (defaults filled in), after every value was checked against
    its declaration; each bad or missing one is a problem ``<file>: [section] key ...``."""
    own = {s.name: s for s in declared}
    resolved: dict[str, str] = {}
    secrets: set[str] = {s.name for s in declared if s.secret}
    for key, value in ini.values.items():
        if key in SPECIAL_KEYS or key.startswith("mapping."):
            continue
        if key not in own and key not in COMMON_BY_NAME:
            log.warning(
                "%s: [%s] has an unknown setting '%s' (line %s); it is ignored",
                path,
                ini.name,
                shown_key(key) or "(not shown: it may be part of a value)",
                ini.key_lines.get(key, "?"),
            )
            continue
        resolved[key] = value
    _apply_secrets(ini.name, own, resolved, secrets, problems)
    setting: Setting | None
    for setting in declared:
        value = resolved.get(setting.name, "")
        if value == "":
            if setting.required:
                problems.add(
                    f"{path}: [{ini.name}] {setting.name} is required but not set"
                    + (f" (e.g. {setting.name} = {setting.example})" if setting.example else "")
                )
                continue
            value = setting.default or ""
        resolved[setting.name] = value
    known = declarations(declared)
    for key, value in resolved.items():
        setting = known.get(key)
        if setting is not None and not (value == "" and setting.required):
            problems.add(setting.problem(value, where=f"{path}: [{ini.name}]"))
    for key in resolved:
        if looks_secret(key):
            secrets.add(key)
    for key in secrets:
        redact.add_secret(resolved.get(key, ""))
    return resolved, frozenset(secrets)


def _apply_secrets(
    section: str, own: dict[str, Setting], resolved: dict[str, str], secret_names: set[str], problems: _Problems
) -> None:
    """Environment variables, then the section's secret backend, override the INI (secrets.md §1)."""
    from . import secrets

    keys = secrets.split_keys(resolved.get("vault_keys", ""))
    for key, value in secrets.from_environment(section, []).items():
        if key in own or key in COMMON_BY_NAME or key in keys:
            resolved[key] = value
            if looks_secret(key):
                redact.add_secret(value)
    if not keys:
        return
    backend = (resolved.get("vault_backend") or "keyring").strip().lower()
    service = resolved.get("vault_alias") or section
    values = problems.guard(lambda: secrets.fetch(section, backend, service, keys, resolved))
    if values:
        resolved.update(values)
    secret_names.update(keys)


def _check_common(sc: SectionConfig, problems: _Problems) -> None:
    """Rules across common settings; each single value was checked against its declaration already."""
    if sc.settings.get("insert_only") and sc.settings.get("update_only"):
        both = problems.guard(lambda: sc.insert_only and sc.update_only)
        if both:
            problems.add(
                f"{sc.ini_path}: [{sc.name}] insert_only and update_only are both true; set at most one of them"
            )
    proto = sc.settings.get("ssl_protocol", "").strip().lower()
    if proto and proto not in LEGACY_TLS_WORDS:
        problems.add(
            f"{sc.ini_path}: [{sc.name}] ssl_protocol = {proto!r} is not supported; remove it "
            "(TLS 1.2 or newer is always negotiated)"
        )
    elif proto:
        log.warning("[%s] ssl_protocol = %s is ignored: TLS 1.2 or newer is always negotiated", sc.name, proto)


def _oomnitza_section(doc: IniDocument, problems: _Problems) -> SectionConfig | None:
    if OOMNITZA not in doc:
        problems.add(
            f"{doc.path}: there is no [oomnitza] section; add one with url and api_token "
            "(or run generate-ini for a template)"
        )
        return None
    ini = doc[OOMNITZA]
    settings, secrets = _resolve_settings(ini, OOMNITZA_SETTINGS, path=doc.path, problems=problems)
    sc = SectionConfig(
        name=OOMNITZA,
        ini_path=doc.path,
        settings=settings,
        secret_names=secrets,
        declared=declarations(OOMNITZA_SETTINGS),
    )
    url = settings.get("url", "")
    # A secret that could not be read is reported already; no second complaint about credentials.
    secrets_listed = bool(settings.get("vault_keys", "").strip())
    if url.lower().startswith(("http://", "https://")) and not (
        settings.get("api_token")
        or (settings.get("username") and settings.get("password"))
        or settings.get("user_pem_file")
        or secrets_listed
    ):
        problems.add(f"{doc.path}: [oomnitza] needs api_token, or username and password, or user_pem_file")
    _check_common(sc, problems)
    return sc


def _connector_section(
    doc: IniDocument, ini: IniSection, registry: ConverterRegistry, problems: _Problems
) -> SectionConfig | None:
    cls = problems.guard(lambda: load_source_class(ini.name))
    if cls is None:
        return None
    declared = tuple(cls.settings)
    settings, secrets = _resolve_settings(ini, declared, path=doc.path, problems=problems)
    settings.setdefault("VERSION", __version__)
    sc = SectionConfig(
        name=ini.name,
        ini_path=doc.path,
        settings=settings,
        source_cls=cls,
        secret_names=secrets,
        declared=declarations(declared),
    )
    for key, value in ini.values.items():
        if key.startswith("mapping."):
            where = f"{doc.path}: [{ini.name}] {key} (line {ini.key_lines.get(key, '?')})"
            if key.count(".") < 1 or not key.split(".")[1]:
                problems.add(f"{where}: the key must be mapping.<FIELD>")
                continue
            spec = problems.guard(lambda value=value, where=where: parse_mapping_value(value, where=where))
            if spec is not None:
                sc.mappings[field_id(key)] = spec
    try:
        source = cls(sc)  # sources check rules across their settings in the constructor (no I/O there)
    except ConnectorError as exc:
        for line in str(exc).splitlines():  # Source.validate may report several problems, one a line
            problems.add(line if line.startswith(f"{doc.path}: ") else f"{doc.path}: {line}")
    else:
        _check_mappings(sc, source, registry, problems)
    body = ini.values.get("recordfilter", "")
    if body.strip():
        sc.recordfilter_text = body.strip()
        sc.recordfilter = problems.guard(
            lambda: compile_filter(body, section=f"{doc.path}: [{ini.name}]", registry=registry)
        )
    _check_common(sc, problems)
    _check_change_settings(sc, registry, problems)
    return sc


def retire_specs(sc: SectionConfig) -> dict[str, dict[str, Any]]:
    """``retire_mapping`` as mapping specs (field ids upper-cased); {} when not set."""
    value = accepted_value(sc, "retire_mapping")
    return {str(name).upper(): spec for name, spec in (value or {}).items()}


def accepted_value(sc: SectionConfig, key: str) -> Any:
    """The typed value of a setting the validator accepted already (None if it did not)."""
    try:
        return sc.value(key)
    except ConfigError:
        return None


def _check_change_settings(sc: SectionConfig, registry: ConverterRegistry, problems: _Problems) -> None:
    """Change-aware sync: retirement needs a sync key, updates and a retire_mapping that names its
    values (hardcoded or a setting: a record missing from the source has nothing to map)."""
    from .mapping import Mapper

    where = f"{sc.ini_path}: [{sc.name}]"
    after = accepted_value(sc, "retire_after_runs") or 0
    specs = accepted_value(sc, "retire_mapping") or {}
    for name, spec in specs.items():
        if (
            not isinstance(spec, dict)
            or spec.get("source") not in (None, "")
            or (spec.get("hardcoded") is None and spec.get("setting") in (None, ""))
        ):
            problems.add(
                f'{where} retire_mapping: {name} must be {{"hardcoded": ...}} or {{"setting": "..."}} '
                "(a retired record is gone from the source: there is nothing to read a value from)"
            )
            return
    if specs:
        problems.guard(lambda: Mapper(retire_specs(sc), sc, registry))
    if not after:
        return
    if not specs:
        problems.add(
            f"{where} retire_after_runs is set but retire_mapping is not "
            '(e.g. retire_mapping = {"STATUS": {"hardcoded": "Retired"}})'
        )
    if not sc.sync_fields:
        problems.add(f"{where} retire_after_runs needs sync_field (records are recognised by it)")
    if problems.guard(lambda: sc.insert_only):
        problems.add(f"{where} retire_after_runs needs updates, but insert_only is true")
    if problems.guard(lambda: sc.flag("change_aware")) is False:
        problems.add(f"{where} retire_after_runs needs change_aware = true (it remembers what was sent)")


def _check_mappings(sc: SectionConfig, source: Source, registry: ConverterRegistry, problems: _Problems) -> None:
    """Compile the section's mapping now (without the server part) so mistakes surface before any I/O.

    The server mapping is merged key by key (config.md §6): an INI line with only a converter (or
    ``required``) may get its source from it. Such a field is checked here with a stand-in source,
    and once more at run time, after the merge (sync.build_mapper)."""
    from .mapping import Mapper, has_value, merge_mappings

    specs = merge_mappings(
        defaults=source.default_mappings,
        server={},
        ini=sc.mappings,
        default_converters=source.default_converters,
        extras=source.extra_mappings(),
    )
    if problems.guard(lambda: sc.flag("use_server_map")):
        specs = {name: spec if has_value(spec) else {**spec, "source": name} for name, spec in specs.items()}
    problems.guard(lambda: Mapper(specs, sc, registry))


def _redactor_for(redactor: redact.Redactor | None) -> redact.Redactor:
    """The redactor a file is read with: the one given, else the one in force here (the CLI and
    the server make one per invocation; with none, logging's own, so nothing escapes the logs)."""
    return redactor or redact.current()


def _read_with(
    load: Callable[[str | os.PathLike[str]], Config], path: str | os.PathLike[str], redactor: redact.Redactor | None
) -> Config:
    """``load(path)`` with its secrets registered with ``redactor`` (see _redactor_for)."""
    redactor = _redactor_for(redactor)
    with redact.using(redactor):
        config = load(path)
    config.redactor = redactor
    return config


def load_config(path: str | os.PathLike[str], *, redactor: redact.Redactor | None = None) -> Config:
    """Read and validate the whole file; raise one ConfigError listing every problem found. Its
    secrets (settings, secret backends) are registered with ``redactor`` (see _redactor_for)."""
    return _read_with(_load_config, path, redactor)


def _load_config(path: str | os.PathLike[str]) -> Config:
    doc = read_ini(path)
    problems = _Problems()
    registry = ConverterRegistry()
    if CONVERTERS in doc:
        conv = doc[CONVERTERS]
        for name, body in conv.values.items():
            problems.guard(
                lambda name=name, body=body: registry.register_custom(
                    name, body, origin=f"{doc.path}: [converters] {name}"
                )
            )
    oomnitza = _oomnitza_section(doc, problems)
    sections: dict[str, SectionConfig] = {}
    disabled: list[str] = []
    for name in doc.names():
        if name in (OOMNITZA, CONVERTERS) or name.startswith(MANAGED_PREFIXES):
            continue
        ini = doc[name]
        raw_enable = ini.values.get("enable", "")
        enabled = problems.guard(
            lambda raw=raw_enable, name=name: (
                parse_bool(raw, setting=f"{doc.path}: [{name}] enable") if raw.strip() else False
            )
        )
        if not enabled:
            disabled.append(name)
            continue
        sc = _connector_section(doc, ini, registry, problems)
        if sc is not None:
            sections[name] = sc
    problems.raise_if_any()
    assert oomnitza is not None
    return Config(path=str(path), doc=doc, oomnitza=oomnitza, sections=sections, disabled=disabled, converters=registry)


def default_ini_path(program_dir: Path | None) -> Path:
    return (program_dir or Path.cwd()) / "config.ini"


# -- generate-ini -----------------------------------------------------------------------------------


def _template_line(setting: Setting) -> str:
    value = setting.template_value()
    if not isinstance(value, str):
        value = json.dumps(value)
    if "\n" in value:
        return f"{setting.name}:\n" + "\n".join("    " + line for line in value.splitlines())
    return f"{setting.name} = {value}".rstrip() if value == "" else f"{setting.name} = {value}"


def setting_facts(setting: Setting) -> str:
    """Kind, range and default in a few words ("whole number from 1 to 200; default 200"), for the
    template's comments."""
    facts = [] if isinstance(setting.kind, Text) else [setting.describe()]
    if setting.required:
        facts.append("required")
    elif setting.default:
        facts.append(f"default {setting.default}")
    return "; ".join(facts)


def _commented(setting: Setting, *, width: int = 100) -> list[str]:
    """The setting's help (and facts) as ``# `` comment lines, then its line."""
    facts = setting_facts(setting)
    text = setting.help + (f" [{facts}]" if facts else "")
    return [f"# {line}" for line in textwrap.wrap(text, width - 2, break_on_hyphens=False)] + [_template_line(setting)]


def render_template() -> str:
    """The generate-ini template: [oomnitza], then every connector alphabetically, disabled. Every
    setting is preceded by its help; the settings every section accepts are listed once, commented."""
    lines = [
        "# Oomnitza Connector configuration, written by generate-ini.",
        "# Set enable = True in the sections you use and fill in their settings; delete the others.",
        "# An empty value means the default; [required] settings must be filled in.",
        "",
        "[oomnitza]",
    ]
    for setting in OOMNITZA_SETTINGS:
        lines += _commented(setting)
    lines += [
        "# To try the connector without a tenant, use the embedded local store:",
        "# url = sqlite:///./oomnitza-local.db",
        "",
        "# Settings every section accepts (add them to a section to change them):",
    ]
    for setting in COMMON_BY_NAME.values():
        facts = setting_facts(setting)
        text = f"{setting.name}: {setting.help}" + (f" [{facts}]" if facts else "")
        lines += textwrap.wrap(text, 98, initial_indent="#   ", subsequent_indent="#       ", break_on_hyphens=False)
    lines.append("")
    for module in sorted(REGISTRY):
        try:
            cls = load_source_class(module)
        except ConfigError as exc:
            lines += [f"[{module}]", "enable = False", f"# Missing Required Package: {exc}", ""]
            continue
        if cls.summary:
            lines.append(f"# {cls.summary}")
        lines += [f"[{module}]", "enable = False"]
        for setting in cls.settings:
            lines += _commented(setting)
        lines.append("")
    return "\n".join(lines)


def generate_ini(path: Path) -> Path | None:
    """Write the template to ``path``; an existing file is kept as ``<path>.bak``. Returns the backup."""
    backup = None
    if path.exists():
        backup = path.with_name(path.name + ".bak")
        os.replace(path, backup)
    path.write_text(render_template(), encoding="utf-8")
    return backup


# -- managed sections -------------------------------------------------------------------------------

MANAGED_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "saas_authorization",
        "",
        secret=True,
        kind=Json("object"),
        help='headers and/or query parameters for the SaaS API: {"headers": {...}, "params": {...}}',
    ),
    Setting("oomnitza_authorization", "", kind=SECRET, help="Oomnitza API token for this integration"),
    Setting("local_inputs", "", secret=True, kind=Json("object"), help="JSON object of inputs kept on-premise"),
    Setting("enable", "", help="ignored in managed sections"),
    Setting("state_dir", "", help="[managed_reports.<id>]: folder of its state.db (default: the working directory)"),
    Setting(
        "template_cpu_seconds", "", example="2", kind=Float(min=0.01), help="CPU seconds one template render may use"
    ),
    Setting(
        "template_output_kib", "", example="1024", kind=Int(min=1), help="KiB of text one template render may produce"
    ),
    Setting(
        "template_memory_mib",
        "",
        example="1024",
        kind=Int(min=64),
        help="MiB of memory a template worker process may use",
    ),
)
_PERCENT_KEYS = ("saas_authorization", "oomnitza_authorization", "local_inputs")


def load_managed_section(
    path: str | os.PathLike[str], name: str, registry: ConverterRegistry, *, redactor: redact.Redactor | None = None
) -> SectionConfig | None:
    """``[managed.<id>]`` / ``[managed_reports.<id>]``, re-read for every run (edits apply without a
    restart). None when the file has no such section: the run goes on with the cloud config alone.
    Its secrets are registered with ``redactor`` (the run's)."""
    with redact.using(_redactor_for(redactor)):
        return _load_managed_section(path, name, registry)


def _load_managed_section(path: str | os.PathLike[str], name: str, registry: ConverterRegistry) -> SectionConfig | None:
    doc = read_ini(path)
    if name not in doc:
        return None
    ini = doc[name]
    for key in _PERCENT_KEYS:  # files written for the reference's interpolating parser doubled "%"
        if "%%" in ini.values.get(key, ""):
            ini.values[key] = ini.values[key].replace("%%", "%")
    problems = _Problems()
    settings, secrets = _resolve_settings(ini, MANAGED_SETTINGS, path=doc.path, problems=problems)
    from .secrets import split_keys

    keys = set(ini.values) | set(split_keys(ini.values.get("vault_keys", "")))
    # Only keys the section really has replace the cloud's values (not their empty defaults).
    settings = {k: v for k, v in settings.items() if k in keys}
    sc = SectionConfig(
        name=name, ini_path=doc.path, settings=settings, secret_names=secrets, declared=declarations(MANAGED_SETTINGS)
    )
    for key, value in ini.values.items():
        if key.startswith("mapping.") and key.count(".") >= 1 and key.split(".")[1]:
            where = f"{doc.path}: [{name}] {key}"
            spec = problems.guard(lambda value=value, where=where: parse_mapping_value(value, where=where))
            if spec is not None:
                sc.mappings[field_id(key)] = spec
    body = ini.values.get("recordfilter", "")
    if body.strip():
        sc.recordfilter_text = body.strip()
        sc.recordfilter = problems.guard(
            lambda: compile_filter(body, section=f"{doc.path}: [{name}]", registry=registry)
        )
    problems.raise_if_any()
    return sc


def load_oomnitza(path: str | os.PathLike[str], *, redactor: redact.Redactor | None = None) -> Config:
    """Only what managed mode needs: [oomnitza] and [converters]; upload sections are not validated."""
    return _read_with(_load_oomnitza, path, redactor)


def _load_oomnitza(path: str | os.PathLike[str]) -> Config:
    doc = read_ini(path)
    problems = _Problems()
    registry = ConverterRegistry()
    if CONVERTERS in doc:
        for name, body in doc[CONVERTERS].values.items():
            problems.guard(
                lambda name=name, body=body: registry.register_custom(
                    name, body, origin=f"{doc.path}: [converters] {name}"
                )
            )
    oomnitza = _oomnitza_section(doc, problems)
    problems.raise_if_any()
    assert oomnitza is not None
    return Config(path=str(path), doc=doc, oomnitza=oomnitza, sections={}, disabled=[], converters=registry)
