"""The Source contract and the registry of source modules.

A source declares its settings, record type and default mappings, and yields raw records page by
page as plain dicts shaped exactly as the user's ``mapping.X = {"source": "a.b"}`` paths address them.
The registry maps an INI section's module name (the text before the first dot) to a class that is
imported only when that section runs, so a missing optional library breaks only its own section.
"""

from __future__ import annotations

import difflib
import importlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError
from ..redact import Redactor
from ..settings import Setting

if TYPE_CHECKING:
    from ..config import SectionConfig
    from ..http import Http
    from ..mapping import RecordMapper
    from ..oomnitza.payload import RunInfo
    from ..oomnitza.sinks import Sink
    from ..sync import Options

Record = dict[str, Any]
# What pages() yields: raw records, each or a BadRecord (read but not understood: counted as failed).
# A Sequence, so a source whose pages are plain list[Record] fits it too.
Page = Sequence["Record | BadRecord"]
MappingSpecs = Mapping[str, Mapping[str, Any]]


def _frozen(specs: MappingSpecs) -> MappingSpecs:
    return MappingProxyType({name: MappingProxyType(dict(spec)) for name, spec in specs.items()})


async def _nothing_delivered() -> bool:
    return False


@dataclass(frozen=True)
class RunContext:
    """What one run gives its source: built by the pipeline (``sync.run_section``) and handed to
    ``Source.open()`` before ``pages()``. Read it; never change it. State flows one way: a source
    receives this and yields records, it never writes into the pipeline."""

    section: str
    # The merged mapping (defaults < Oomnitza's server-side mapping < INI), read-only: a source
    # asks its vendor for what it names (attribute lists, optional detail calls).
    mapping: MappingSpecs = field(default_factory=dict)
    # The run's --workers: sources that make per-record detail calls bound their concurrency by it.
    workers: int = 2
    options: Options | None = None  # the run's options (testmode, record_count, batch_size...)
    # The secrets of this run's configuration: register what the source learns (a session cookie,
    # a token) with ``redactor.add()`` and scrub what it puts in a message with ``redactor.scrub()``.
    redactor: Redactor = field(default_factory=Redactor)
    clock: Callable[[], float] = time.monotonic
    # See delivered(); the pipeline's, or "nothing was delivered" outside a run.
    checkpoint: Callable[[], Awaitable[bool]] = _nothing_delivered

    def __post_init__(self) -> None:
        object.__setattr__(self, "mapping", _frozen(self.mapping))

    @property
    def testmode(self) -> bool:
        return bool(self.options and self.options.testmode)

    def mapped_sources(self) -> list[str]:
        """The ``source`` paths the run maps, e.g. ``["general.serial", "apps"]``."""
        return [s for s in (spec.get("source") for spec in self.mapping.values()) if isinstance(s, str)]

    async def delivered(self) -> bool:
        """Send what is batched, wait for every send in flight, and say whether every record the
        source yielded so far reached Oomnitza (False in test mode, after any failure, or when the
        run is stopping). A source whose run is long may save progress with it between its own
        pages (Jasper saves each finished window); the final mark still belongs in ``commit()``."""
        return await self.checkpoint()


class Source:
    """Base class of every source. Subclasses set the class attributes and implement ``pages``.

    The pipeline calls, in order: the constructor (which calls ``validate()``: no I/O), ``run_info()``,
    ``mapper()``, ``open(ctx)``, ``pages()``, ``aclose()`` and, after a run in which every record
    reached Oomnitza, ``commit()``."""

    module: ClassVar[str]  # INI module name, e.g. "csv_assets"
    mapping_name: ClassVar[str]  # connector_name sent to Oomnitza, e.g. "CSV_assets"
    record_type: ClassVar[str]  # "assets" or "users"
    settings: ClassVar[tuple[Setting, ...]] = ()
    default_mappings: ClassVar[dict[str, dict[str, Any]]] = {}
    # Attached only where a field's source equals a key here and no converter is set (config.md §5.4).
    default_converters: ClassVar[dict[str, str]] = {}
    summary: ClassVar[str] = ""
    # Cloud-managed integrations (managed-mode.md §8): each failed record is reported to Oomnitza
    # in an error payload of its own, and a run that read nothing becomes a synthetic portion
    # (failed, or empty) instead of a sync session. Classic sections report a failed run only.
    cloud_reports: ClassVar[bool] = False
    _ctx: RunContext | None = None

    def __init__(self, section: SectionConfig) -> None:
        self.section = section
        problems = self.problems()
        if problems:
            raise ConfigError("\n".join(problems))

    @property
    def name(self) -> str:
        return self.section.name

    def setting(self, name: str) -> str:
        """The setting's text as the INI has it (defaults filled in); mappings see the same strings."""
        return self.section.settings.get(name, "")

    def value(self, name: str) -> Any:
        """The setting as its declaration types it: ``self.value("page_size") -> int``; a Bool gives a
        bool, a List a list of str, a Json the decoded value. Not set: the default, else None/""/False/[]."""
        own = next((s for s in self.settings if s.name == name), None)
        return self.section.value(name, own)

    # -- the run's context ---------------------------------------------------------------------------

    def open(self, ctx: RunContext) -> None:
        """Called by the pipeline before ``pages()`` with the run's context (kept as ``self.ctx``)."""
        self._ctx = ctx

    @property
    def ctx(self) -> RunContext:
        """The context of the run in progress; before ``open()``, one made of this section alone
        (the default and INI mappings; the server-side mapping is not known yet)."""
        if self._ctx is not None:
            return self._ctx
        return RunContext(section=self.name, mapping={**self.default_mappings, **self.section.mappings})

    def mapped_sources(self) -> list[str]:
        """The ``source`` paths the run maps (``self.ctx.mapped_sources()``)."""
        return self.ctx.mapped_sources()

    # -- what the pipeline asks ----------------------------------------------------------------------

    def validate(self) -> Iterable[str] | None:
        """Rules across settings that the declarations cannot express (called at config load, no I/O).
        Each single value was checked against its declaration already. Report every problem: yield
        (or return a list of) one line each, like ``[section] set both client_id and client_secret``;
        raising ConfigError works too but stops at that problem. Only validates: nothing the run
        needs is decided or stored here (the run's context comes with ``open()``)."""
        return None

    def problems(self) -> list[str]:
        found: list[str] = []
        try:
            for line in self.validate() or ():
                found.append(line)
        except ConfigError as exc:
            found.append(str(exc))
        return found

    def connector_name(self) -> str:
        return self.mapping_name

    def extra_mappings(self) -> dict[str, dict[str, Any]]:
        """Mappings added only when absent (after the user's), e.g. POSITION for user sources."""
        return {}

    async def mapper(self, sink: Sink) -> RecordMapper | None:
        """A mapper of the source's own (a managed integration maps with cloud templates); None,
        the default, means the section's merged mapping (defaults < server < INI)."""
        return None

    def run_info(self) -> RunInfo | None:
        """How this run's sync session is described to Oomnitza, when not by the section (its
        connector name, record type, sync_field, insert_only, update_only): a managed integration
        is named by its id. None, the default: by the section."""
        return None

    def http(self, **kwargs: Any) -> Http:
        """A client with this section's TLS settings and the shared retry policy."""
        from ..http import Http

        kwargs.setdefault("timeout", self.section.http_timeout())
        return Http(name=f"[{self.name}]", tls=self.section.tls(), **kwargs)

    async def check(self) -> None:
        """A cheap call that proves URL and credentials work (default: nothing to check)."""

    def pages(self) -> AsyncIterator[Page]:
        """Yield lists of raw records. Stop early when the consumer stops iterating."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections and files."""

    async def commit(self) -> None:
        """Called once after a run in which every record pulled reached Oomnitza (not in test mode):
        advance incremental state (a "modified since" mark) here, never while pages are read."""

    def reads_everything(self) -> bool:
        """Whether a run read to its end yields every record the source has (the default), so that
        a record it did not yield is gone from the source. Sources that read only what changed (a
        "modified since" mark) or consume their input (files moved away after the run) say False:
        change-aware sync then judges each record by its own last delivery and never counts one
        as missing (no retirement)."""
        return True


class UsersSource(Source):
    """Sources of user records get POSITION and PERMISSIONS_ID from settings unless mapped."""

    record_type = "users"
    role_settings: ClassVar[tuple[Setting, ...]] = (
        Setting("default_role", None, example="25", help="the Oomnitza role ID put into `PERMISSIONS_ID` (e.g. `25`)"),
        Setting("default_position", None, example="Employee", help="put into `POSITION` unless you map it"),
    )

    def extra_mappings(self) -> dict[str, dict[str, Any]]:
        return {
            "POSITION": {"setting": "default_position"},
            "PERMISSIONS_ID": {"setting": "default_role"},
        }


# module name -> (python module, class). Imported lazily.
REGISTRY: dict[str, tuple[str, str]] = {
    "casper": ("oomnitza_connector.sources.casper", "Casper"),
    "csv_assets": ("oomnitza_connector.sources.csv_files", "CsvAssets"),
    "csv_users": ("oomnitza_connector.sources.csv_files", "CsvUsers"),
    "json_assets": ("oomnitza_connector.sources.json_files", "JsonAssets"),
    "json_users": ("oomnitza_connector.sources.json_files", "JsonUsers"),
    "azureusers": ("oomnitza_connector.sources.azureusers", "Azureusers"),
    "okta": ("oomnitza_connector.sources.okta", "Okta"),
    "onelogin": ("oomnitza_connector.sources.onelogin", "Onelogin"),
    "zendesk": ("oomnitza_connector.sources.zendesk", "Zendesk"),
    "workday": ("oomnitza_connector.sources.workday", "Workday"),
    "bamboohr": ("oomnitza_connector.sources.bamboohr", "BambooHR"),
    "chef": ("oomnitza_connector.sources.chef", "Chef"),
    "netbox": ("oomnitza_connector.sources.netbox", "Netbox"),
    "open_audit": ("oomnitza_connector.sources.open_audit", "OpenAudit"),
    "tanium": ("oomnitza_connector.sources.tanium", "Tanium"),
    "servicenow": ("oomnitza_connector.sources.servicenow", "ServiceNow"),
    "sccm": ("oomnitza_connector.sources.sccm", "Sccm"),
    "airwatch": ("oomnitza_connector.sources.airwatch", "AirWatch"),
    "mobileiron": ("oomnitza_connector.sources.mobileiron", "MobileIron"),
    "merakism": ("oomnitza_connector.sources.merakism", "MerakiSM"),
    "simplemdm": ("oomnitza_connector.sources.simplemdm", "SimpleMDM"),
    "jasper": ("oomnitza_connector.sources.jasper", "Jasper"),
    "ldap": ("oomnitza_connector.sources.ldap", "Ldap"),
    "ldap_assets": ("oomnitza_connector.sources.ldap", "LdapAssets"),
    "kace": ("oomnitza_connector.sources.kace", "Kace"),
    "chromebooks": ("oomnitza_connector.sources.google_devices", "Chromebooks"),
    "google_mobile_devices": ("oomnitza_connector.sources.google_devices", "GoogleMobileDevices"),
}


def module_of(section_name: str) -> str:
    return section_name.split(".", 1)[0]


def load_source_class(section_name: str) -> type[Source]:
    module = module_of(section_name)
    entry = REGISTRY.get(module)
    if entry is None:
        close = difflib.get_close_matches(module, REGISTRY, n=1)
        hint = f" (did you mean [{close[0]}]?)" if close else ""
        raise ConfigError(
            f"[{section_name}]: no connector named '{module}'{hint}; known connectors: {', '.join(sorted(REGISTRY))}"
        )
    from ..extras import install_hint, missing_for

    missing = missing_for(module)
    try:
        if missing:
            raise ModuleNotFoundError(name=missing)
        mod = importlib.import_module(entry[0])
    except ImportError as exc:
        name = exc.name or missing or "?"
        raise ConfigError(
            f"[{section_name}]: the '{module}' connector needs the Python package '{name.split('.')[0]}', "
            f"which is not installed: {install_hint(name)}"
        ) from None
    cls: type[Source] = getattr(mod, entry[1])
    return cls


class BadRecord:
    """A record a source could read but not make sense of; counted as failed, never sent."""

    __slots__ = ("message", "raw")

    def __init__(self, message: str, raw: Any = None) -> None:
        self.message = message
        self.raw = raw
