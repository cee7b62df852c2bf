"""Field mappings: from a raw source record to an Oomnitza record.

Each field is compiled once into a small function (path lookup, setting, constant, converter,
type), so converting a record costs a handful of calls per field: this is the hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError, RecordError
from .ini import truthy
from .paths import compile_path

if TYPE_CHECKING:
    from .config import SectionConfig
    from .converters import ConverterRegistry
log = logging.getLogger(__name__)

MappingSpecs = dict[str, dict[str, Any]]
VALUE_KEYS = ("source", "setting", "hardcoded")


class RecordMapper(Protocol):
    """The mapping stage of the pipeline: ``Mapper`` (the section's merged mapping), or a source's
    own (managed integrations map with cloud templates, a page at a time off the event loop)."""

    @property
    def specs(self) -> Mapping[str, Mapping[str, Any]]:
        """The merged mapping, as the source sees it (RunContext.mapping)."""
        ...

    async def map_page(self, records: Sequence[Any]) -> list[dict[str, Any] | RecordError]:
        """Each record mapped, or the RecordError that failed it (a record fails alone)."""
        ...


def merge_mappings(
    *,
    defaults: Mapping[str, Mapping[str, Any]],
    server: Mapping[str, Any],
    ini: Mapping[str, Mapping[str, Any]],
    default_converters: Mapping[str, str],
    extras: Mapping[str, Mapping[str, Any]],
) -> MappingSpecs:
    """The seed's merge order (config.md §5): defaults < server < INI (key by key) < converters < extras."""
    merged: MappingSpecs = {name.upper(): dict(spec) for name, spec in defaults.items()}
    # Legacy server mapping: {source_path: FIELD | [FIELDS]} sets only the source of each field.
    for source, fields in server.items():
        for name in [fields] if isinstance(fields, str) else list(fields or []):
            merged.setdefault(name, {})["source"] = source
    for name, spec in ini.items():
        target = merged.setdefault(name, {})
        if any(spec.get(k) not in (None, "") for k in VALUE_KEYS):
            # A new value source replaces the old one (mapping.APPLICATIONS = {"hardcoded": []} turns
            # software off); a spec with only a converter or "required" refines the existing field.
            for key in VALUE_KEYS:
                target.pop(key, None)
        target.update(spec)
    for spec in merged.values():
        src = spec.get("source")
        if isinstance(src, str) and src in default_converters and not spec.get("converter"):
            spec["converter"] = default_converters[src]
    for name, spec in extras.items():
        merged.setdefault(name, dict(spec))
    return merged


def has_value(spec: Mapping[str, Any]) -> bool:
    """Does the spec say where the value comes from (source, setting or hardcoded)?"""
    return (
        spec.get("source") not in (None, "")
        or spec.get("setting") not in (None, "")
        or spec.get("hardcoded") is not None
    )


def incomplete_fields(specs: MappingSpecs) -> list[str]:
    """Fields whose merged spec still has no value source (e.g. an INI line with only a converter,
    for a field the server mapping does not name)."""
    return [name for name, spec in specs.items() if not has_value(spec)]


_TYPES: dict[str, Callable[[Any], Any]] = {"str": str, "int": int, "float": float, "bool": truthy}


def _make_field(
    name: str, spec: Mapping[str, Any], section: SectionConfig, registry: ConverterRegistry
) -> Callable[[dict[str, Any]], Any]:
    where = f"{section.ini_path}: [{section.name}] mapping.{name}"
    source = spec.get("source")
    setting = spec.get("setting")
    if source not in (None, ""):
        if not isinstance(source, str):
            raise ConfigError(f'{where}: "source" must be a text path like "general.serial"')
        getter: Callable[[Any], Any] = compile_path(source)
        field_arg = source
    elif setting not in (None, ""):
        if setting not in section.settings:
            raise ConfigError(f"{where}: there is no setting '{setting}' in [{section.name}]")
        constant = section.settings[setting]
        getter, field_arg = (lambda _r: constant), name
    elif spec.get("hardcoded") is not None:
        constant = spec["hardcoded"]
        getter, field_arg = (lambda _r: constant), name
    else:
        raise ConfigError(f'{where}: set one of "source", "setting" or "hardcoded"')
    conv_spec = spec.get("converter")
    type_name = spec.get("type")
    if not conv_spec and not type_name:
        return getter
    convert = registry.bind(conv_spec, where=where) if conv_spec else None
    cast = None
    if type_name:
        cast = _TYPES.get(str(type_name))
        if cast is None:
            raise ConfigError(f"{where}: type {type_name!r} is not one of str, int, float, bool")

    def compute(record: dict[str, Any]) -> Any:
        value = getter(record)
        if convert is not None:
            value = convert(field_arg, record, value)
        if cast is not None and value is not None:
            try:
                value = cast(value)
            except (TypeError, ValueError) as exc:
                raise RecordError(f"field {name}: cannot make {type_name} of {value!r}: {exc}") from None
        return value

    return compute


class MissingRequired(RecordError):
    def __init__(self, fields: list[str]) -> None:
        super().__init__(f"missing required field(s): {', '.join(fields)}", bucket="missing_required")
        self.fields = fields


class Mapper:
    """Converts raw records to Oomnitza records with the merged mapping of one section."""

    def __init__(self, specs: MappingSpecs, section: SectionConfig, registry: ConverterRegistry) -> None:
        self.specs = specs
        errors = []
        self._fields: list[tuple[str, Callable[[dict[str, Any]], Any]]] = []
        for name, spec in specs.items():
            try:
                self._fields.append((name, _make_field(name, spec, section, registry)))
            except ConfigError as exc:
                errors.append(str(exc))
        if errors:
            raise ConfigError("\n".join(errors))
        self._required = [name for name, spec in specs.items() if truthy(spec.get("required"))]

    async def map_page(self, records: Sequence[Any]) -> list[dict[str, Any] | RecordError]:
        out: list[dict[str, Any] | RecordError] = []
        for record in records:
            try:
                out.append(self.convert(record))
            except RecordError as exc:
                out.append(exc)
        return out

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        out = {name: fn(record) for name, fn in self._fields}
        if self._required:
            missing = [name for name in self._required if not out.get(name)]
            if missing:
                raise MissingRequired(missing)
        return out
