"""Dotted source paths (config.md §6): ``profile.emails.0.value`` against a raw record.

Rules, applied to the remaining path at each level:

1. an empty or null container → ``default``;
2. the path has a dot: split at the first one into ``head``/``rest``; a list with an all-digit
   ``head`` continues with that element, a mapping holding the key ``head`` continues with its
   value;
3. otherwise (or without a dot) the whole remaining path is looked up as a literal key, so
   ``{"os.version": …}`` is reachable as ``os.version`` when ``os`` is not itself a key.

A missing key gives ``default``; a type error (key on a list or string, index out of range) too,
logged at DEBUG only: a mapping naming a field some records lack is normal, not an error.
A trailing index (``emails.0``) also indexes a list; the reference gave null there, which only
made such mappings useless (Google's ``emails.0`` lists), so no working config changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)


def _index(head: str) -> int | None:
    # isascii() first: str.isdigit() also accepts "²", which int() rejects.
    return int(head) if head.isascii() and head.isdigit() else None


def _literal(data: Any, key: str, default: Any, path: str) -> Any:
    if isinstance(data, Mapping):
        return data.get(key, default)
    idx = _index(key)
    if idx is not None and isinstance(data, list | tuple):
        return data[idx] if idx < len(data) else default
    log.debug("path %r: cannot look up key %r in a %s", path, key, type(data).__name__)
    return default


def get_field_value(data: Any, path: str, default: Any = None) -> Any:
    """Resolve ``path`` in ``data``; missing or not addressable → ``default``."""
    remaining = path
    while True:
        if not data:
            return default
        head, dot, rest = remaining.partition(".")
        if not dot:
            return _literal(data, remaining, default, path)
        idx = _index(head)
        if idx is not None and isinstance(data, list | tuple):
            if idx >= len(data):
                log.debug("path %r: index %d out of range (%d items)", path, idx, len(data))
                return default
            data, remaining = data[idx], rest
        elif isinstance(data, Mapping) and head in data:
            data, remaining = data[head], rest
        else:
            return _literal(data, remaining, default, path)


def compile_path(path: str) -> Callable[[Any], Any]:
    """A function equivalent to ``lambda record: get_field_value(record, path)``, but faster.

    Plain dicts take the fast route; anything else falls back to ``get_field_value`` for the
    remaining path, so the semantics (literal dotted keys included) stay identical.
    """
    if "." not in path:

        def get_flat(record: Any) -> Any:
            if type(record) is dict:
                return record.get(path)
            return get_field_value(record, path)

        return get_flat

    # Per level: the head key, its list index (if all digits) and the whole remaining path.
    steps: list[tuple[str, int | None, str]] = []
    remaining = path
    while "." in remaining:
        head, _, rest = remaining.partition(".")
        steps.append((head, _index(head), remaining))
        remaining = rest
    last = remaining

    def get_dotted(record: Any) -> Any:
        data = record
        for head, idx, rem in steps:
            if not data:
                return None
            tp = type(data)
            if tp is dict:
                if head in data:
                    data = data[head]
                    continue
                return data.get(rem)
            if tp is list and idx is not None:
                if idx >= len(data):
                    return None
                data = data[idx]
                continue
            return get_field_value(data, rem)
        if type(data) is dict:
            return data.get(last)
        return get_field_value(data, last) if data else None

    return get_dotted
