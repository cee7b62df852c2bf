"""``recordfilter``: a per-section Python body deciding which raw records are processed (§7.2).

The body's only argument is ``record``; it sees the same globals as custom converters. Truthy
→ the record is processed; falsy or no ``return`` → skipped. The record is passed as a read-only
``RecordView`` so both the reference's ``record.get("x")`` and the seed README's
``record.asset_type`` work (a missing attribute is ``None``).
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any

from .converters.registry import ConverterRegistry, compile_body
from .errors import RecordError


class RecordView(Mapping[str, Any]):
    """A read-only, non-copying view of a record with attribute access to its top-level keys.

    Attribute access returns nested dicts as views too (``record.profile.login``); item access
    returns the raw values. Keys that clash with mapping methods (``get``, ``items``, ``keys``,
    ``values``) are reachable only as ``record["keys"]``.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> KeysView[str]:  # the dict's own read-only view: no copy
        return self._data.keys()

    def items(self) -> ItemsView[str, Any]:
        return self._data.items()

    def values(self) -> ValuesView[Any]:
        return self._data.values()

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails. Dunders must keep raising (copy, pickle probe
        # them), and "_data" too, or an uninitialised view would recurse forever.
        if name.startswith("__") or name == "_data":
            raise AttributeError(name)
        value = self._data.get(name)
        return RecordView(value) if type(value) is dict else value

    def __repr__(self) -> str:
        return f"RecordView({self._data!r})"


def compile_filter(body: str, *, section: str, registry: ConverterRegistry) -> Callable[[dict[str, Any]], bool]:
    """Compile a section's ``recordfilter`` body into ``record -> bool``.

    ``section`` names the section in messages (``"[csv_assets]"``, possibly prefixed by the
    file). A syntax error is a ``ConfigError``; an exception at run time is a ``RecordError``
    (the record counts as failed, the run goes on).
    """
    label = section if "[" in section else f"[{section}]"
    func, _ = compile_body(
        body,
        args="record",
        where=f"{label} recordfilter",
        hint="each line of the body must be indented under recordfilter",
        globals_=registry.make_globals("recordfilter"),
    )

    def run(record: dict[str, Any]) -> bool:
        try:
            return bool(func(RecordView(record)))
        except RecordError:
            raise
        except Exception as exc:
            raise RecordError(f"recordfilter raised {type(exc).__name__}: {exc}") from exc

    return run
