"""The ``/api/v3/bulk`` payload (oomnitza-api.md §4.3) and how a run is described to a sink."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import repeat
from typing import Any

import orjson

from .. import __version__


@dataclass(frozen=True)
class RunInfo:
    """One sync session of one section: everything a bulk payload carries besides the records."""

    section: str
    connector_name: str
    data_type: str
    sync_field: list[str]
    insert_only: bool = False
    update_only: bool = False
    portion: str = field(default_factory=lambda: str(uuid.uuid4()))
    connector_id: int | str | None = None  # managed integrations are named by id, not by name
    test_run: bool | None = None
    multi_str_input_value: Any = None

    def envelope(self, error: str | None = None, fatal: bool = False) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "connector_version": __version__,
            "sync_field": self.sync_field,
            "portion": self.portion,
            "data_type": self.data_type,
            "insert_only": self.insert_only,
            "update_only": self.update_only,
            "error": error,
        }
        if self.connector_id is not None:
            payload["connector_id"] = self.connector_id
        else:
            payload["connector_name"] = self.connector_name
        if fatal:
            payload["error_type"] = "Fatal Error"
        if self.test_run is not None:
            payload["test_run"] = self.test_run
        if self.multi_str_input_value is not None:
            payload["multi_str_input_value"] = self.multi_str_input_value
        return payload


def _default(obj: Any) -> Any:
    # orjson handles datetimes, dataclasses and UUIDs itself; these are what sources add on top.
    if isinstance(obj, Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot send a value of type {type(obj).__name__} to Oomnitza")


def encode(obj: Any, *, pretty: bool = False) -> bytes:
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if pretty else 0)
    return orjson.dumps(obj, default=_default, option=option)


def encode_records(records: Sequence[Any]) -> list[bytes]:
    """``encode(record)`` of each record: the bytes a bulk body carries of it (change-aware sync
    digests them, see ``EncodedRecords``). At C speed: positional arguments (keywords cost a dict
    per call), and the option for keys that are not text only for a batch that has one (the
    result is the same for text keys)."""
    try:
        return list(map(orjson.dumps, records, repeat(_default)))
    except TypeError:  # a key that is not text, or a value Oomnitza cannot take (raised again here)
        return list(map(orjson.dumps, records, repeat(_default), repeat(orjson.OPT_NON_STR_KEYS)))


class EncodedRecords(list[dict[str, Any]]):
    """Records that come with their JSON already encoded (change-aware sync digests those bytes):
    ``encoded`` is ``encode(record)`` of each, in order, separated by commas (and whitespace, if
    any), in one or more pieces. A bulk body then joins them instead of encoding the records
    again. A slice of it is a plain list (encoded when sent)."""

    __slots__ = ("encoded",)

    def __init__(self, records: list[dict[str, Any]], encoded: list[bytes]) -> None:
        super().__init__(records)
        self.encoded = encoded


def bulk_body(run: RunInfo, records: list[dict[str, Any]], error: str | None = None, fatal: bool = False) -> bytes:
    payload = run.envelope(error, fatal)
    encoded = getattr(records, "encoded", None)
    if encoded and records:
        payload["records"] = []
        head = encode(payload)  # ...,"records":[]}
        return b"".join([head[:-2], b",".join(encoded), head[-2:]])
    payload["records"] = records
    return encode(payload)
