"""Converter lookup, binding and custom ``[converters]`` compilation (config.md §7, §7.1).

Mappings bind their converter once, at config load (``registry.bind``): an unknown name is a
``ConfigError`` then, not a null field on every record. At run time a bound converter that raises
becomes a ``RecordError``: that record is counted as failed and the run goes on.

Custom converter bodies are arbitrary Python with the connector's privileges (by design, as in
the reference): the config file must be protected like a secret.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import linecache
import logging
import re
import textwrap
import types
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, RecordError
from ..paths import get_field_value
from . import builtin
from .builtin import BUILTINS, Converter, LocationIndex, MacModelLookup

CUSTOM_LOG = logging.getLogger("oomnitza_connector.custom")

DEFAULT_LOCATION_FIELD = "location_id"
DEFAULT_LOCATION_LABEL = "name"


class DynamicException(Exception):
    """Raised by custom code to fail a record on purpose (kept for reference-era configs)."""


def parse_converter_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:a=1|b=x|flag"`` → ``("name", {"a": "1", "b": "x", "flag": True})``.

    Values stay strings and are not trimmed (``on= `` means a space); names and keys are.
    """
    name, _, rest = spec.partition(":")
    params: dict[str, Any] = {}
    for part in rest.split("|") if rest else ():
        key, eq, val = part.partition("=")
        if key.strip():
            params[key.strip()] = val if eq else True
    return name.strip(), params


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in choices], n=1)
    if not close:
        return ""
    original = next(c for c in choices if c.lower() == close[0])
    return f" (did you mean '{original}'?)"


def compile_body(
    body: str, *, args: str, where: str, hint: str, globals_: dict[str, Any]
) -> tuple[types.FunctionType, ast.Module]:
    """Compile an INI multi-line value as the body of ``def _fn(<args>):``.

    Line numbers in errors count the body's lines (the first non-blank one is line 1); the
    generated source is put in ``linecache`` so tracebacks show the offending line.
    """
    lines = body.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    text = textwrap.dedent("\n".join(lines))
    if not text.strip():
        raise ConfigError(f"{where}: the body is empty ({hint})")
    filename = f"<{where}>"
    source = f"def _fn({args}):\n" + textwrap.indent(text, "    ") + "\n"
    try:
        tree = ast.parse(source, filename)
        code = compile(tree, filename, "exec")
    except SyntaxError as exc:
        # -1 everywhere: line 1 of the generated source is our "def" line.
        msg = re.sub(r"\bline (\d+)", lambda m: f"line {max(int(m[1]) - 1, 1)}", exc.msg)
        raise ConfigError(f"{where}: line {max((exc.lineno or 2) - 1, 1)}: {msg} ({hint})") from None
    except ValueError as exc:  # e.g. a NUL character
        raise ConfigError(f"{where}: {exc} ({hint})") from None
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(code, globals_)
    return globals_["_fn"], tree


def _location_calls(tree: ast.AST) -> list[tuple[str, str]]:
    """(field, label) of every literal ``converter(record, "location", ...)`` call in a body.

    Lets the registry know it must load Oomnitza locations for a custom converter that wraps
    the built-in one. Non-literal params cannot be known in advance and count as the defaults.
    """
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "converter"
            and len(node.args) >= 2
        ):
            continue
        name = node.args[1]
        if not (
            isinstance(name, ast.Constant) and isinstance(name.value, str) and name.value.strip().lower() == "location"
        ):
            continue
        kw = {
            k.arg: k.value.value
            for k in node.keywords
            if isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)
        }
        found.append((kw.get("field", DEFAULT_LOCATION_FIELD), kw.get("label", DEFAULT_LOCATION_LABEL)))
    return found


class BoundConverter:
    """A converter with its params, as attached to one mapping field."""

    __slots__ = ("_copy_params", "_func", "name", "params", "where")

    def __init__(
        self, name: str, params: dict[str, Any], func: Converter, *, where: str, copy_params: bool = False
    ) -> None:
        self.name = name
        self.params = params
        self.where = where
        self._func = func
        self._copy_params = copy_params  # custom code may mutate params; built-ins never do

    def __call__(self, field: str, record: Mapping[str, Any], value: Any) -> Any:
        params = dict(self.params) if self._copy_params else self.params
        try:
            return self._func(field, record, value, params)
        except RecordError:
            raise
        except Exception as exc:
            raise RecordError(f"converter '{self.name}' raised {type(exc).__name__}: {exc}") from exc

    def __repr__(self) -> str:
        return f"BoundConverter({self.name!r}, {self.params!r})"


class ConverterRegistry:
    """Built-in plus custom converters of one configuration; names are case-insensitive.

    ``mac_model_lookup`` (serial → model or None) enables ``mac_model_from_sn``; without it that
    converter returns the value unchanged. ``set_locations`` must be called (when
    ``uses_location``) before records are converted.
    """

    def __init__(self, *, mac_model_lookup: MacModelLookup | None = None) -> None:
        self.mac_model_lookup = mac_model_lookup
        self._locations: LocationIndex | None = None
        self._location_params: tuple[str, str] | None = None
        self._location_where = ""
        self._builtins: dict[str, Converter] = {name.lower(): fn for name, fn in BUILTINS.items()}
        self._builtins["location"] = self._location
        self._builtins["mac_model_from_sn"] = self._mac_model
        self._display = {name.lower(): name for name in BUILTINS}
        self._custom: dict[str, Converter] = {}
        self._custom_location_calls: dict[str, list[tuple[str, str]]] = {}

    # -- the two built-ins that need registry state --

    def _location(self, field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
        return builtin.location(field, record, value, params, self._locations)

    def _mac_model(self, field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
        return builtin.mac_model_from_sn(field, record, value, params, self.mac_model_lookup)

    # -- lookup --

    def names(self) -> list[str]:
        return sorted({**self._display, **{k: k for k in self._custom}}.values(), key=str.lower)

    def lookup(self, name: str) -> Converter | None:
        key = name.strip().lower()
        return self._custom.get(key) or self._builtins.get(key)

    def call(self, record: Mapping[str, Any], name: str, /, **params: Any) -> Any:
        """``converter(record, name, **params)`` inside custom code: run a converter on value None."""
        func = self.lookup(name)
        if func is None:
            raise LookupError(f"unknown converter '{name}'{_did_you_mean(name, self.names())}")
        return func(name, record, None, params)

    # -- custom converters --

    def make_globals(self, name: str) -> dict[str, Any]:
        """The module globals user code sees (config.md §7.1), fresh for each body."""
        return {
            "__builtins__": builtins,
            "__name__": f"oomnitza_connector.custom.{name}",
            "LOG": CUSTOM_LOG,
            "DynamicException": DynamicException,
            "converter": self.call,
            "cae": cae,
            "get_field_value": get_field_value,
        }

    def register_custom(self, name: str, body: str, *, origin: str | None = None) -> None:
        """Compile a ``[converters]`` entry; it shadows a built-in of the same (lower-case) name."""
        key = name.strip().lower()
        where = origin or f"[converters] {key}"
        func, tree = compile_body(
            body,
            args="field, record, value, params",
            where=where,
            hint="each line of the body must be indented under the name",
            globals_=self.make_globals(key),
        )
        self._custom[key] = func
        self._custom_location_calls[key] = _location_calls(tree)

    # -- binding --

    def bind(self, spec: str, *, where: str) -> BoundConverter:
        """Resolve a mapping's ``"converter"`` now, so a typo fails at start-up."""
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError(f'{where}: "converter" must be a name like "split:on=@|index=0"')
        name, params = parse_converter_spec(spec)
        func = self.lookup(name)
        if func is None:
            raise ConfigError(f"{where}: unknown converter '{name}'{_did_you_mean(name, self.names())}")
        key = name.lower()
        if func == self._location:
            self._use_location(
                str(params.get("field", DEFAULT_LOCATION_FIELD)),
                str(params.get("label", DEFAULT_LOCATION_LABEL)),
                where,
            )
        if key in self._custom and self.lookup("location") == self._location:
            for field, label in self._custom_location_calls.get(key, ()):
                self._use_location(field, label, where)
        return BoundConverter(name, params, func, where=where, copy_params=key in self._custom)

    # -- locations --

    def _use_location(self, field: str, label: str, where: str) -> None:
        # Locations are loaded once per run, keyed by one id field and one label field.
        if self._location_params is None:
            self._location_params, self._location_where = (field, label), where
        elif self._location_params != (field, label):
            f0, l0 = self._location_params
            raise ConfigError(
                f"{where}: location converter uses field={field!r}, label={label!r} but "
                f"{self._location_where} uses field={f0!r}, label={l0!r}; all must be the same"
            )

    @property
    def uses_location(self) -> bool:
        return self._location_params is not None

    @property
    def location_fields(self) -> tuple[str, str]:
        """(id field, label field) the location index is built with."""
        return self._location_params or (DEFAULT_LOCATION_FIELD, DEFAULT_LOCATION_LABEL)

    def set_locations(self, items: list[dict[str, Any]]) -> None:
        id_field, label_field = self.location_fields
        self._locations = LocationIndex(items, id_field=id_field, label_field=label_field)

    @property
    def locations(self) -> LocationIndex | None:
        return self._locations

    def cleanup_messages(self) -> list[str]:
        """End-of-run ERROR lines (the reference's cleanup hook): location values not found."""
        report = self._locations.report() if self._locations is not None else None
        return [report] if report else []


def cae(record: Mapping[str, Any], attr: str, default: Any = None) -> Any:
    """Shortcut for ``casper_extension_attribute`` inside custom code."""
    return builtin.casper_extension_attribute("", record, None, {"attr": attr, "default": default})
