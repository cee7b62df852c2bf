"""The built-in converters (config.md §7).

Every converter has the signature ``conv(field, record, value, params) -> value``: ``field`` is
the mapping's source path (or the Oomnitza field id), ``record`` the raw source record, ``value``
the resolved value and ``params`` the converter parameters (strings, or ``True`` for flags).

They never raise on bad data: per the spec table they return the value unchanged or ``None``.
Problems are logged at DEBUG only, because they repeat for every record.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time
from typing import Any

log = logging.getLogger(__name__)

Converter = Callable[[str, Mapping[str, Any], Any, dict[str, Any]], Any]
MacModelLookup = Callable[[str], str | None]

_QUOTES = ("'", '"')
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
# Windows FILETIME: 100-ns ticks since 1601-01-01 UTC.
_FILETIME_EPOCH_OFFSET = 11_644_473_600
_FILETIME_TICKS = 10_000_000
# 9999-12-31T23:59:59Z: the largest time a date library (and Oomnitza) can represent.
MAX_EPOCH = 253_402_300_799
# FILETIME values AD uses for "never" (accountExpires, lastLogon, lastLogonTimestamp, pwdLastSet).
_FILETIME_NEVER = frozenset({0, 0x7FFF_FFFF_FFFF_FFFF})
_FILETIME_ZERO = datetime(1601, 1, 1, tzinfo=UTC)
# RFC 4517 GeneralizedTime: YYYYMMDDHH[MM[SS]][(.|,)fraction](Z|+hh[mm]|-hh[mm]); the zone is
# optional here since some servers omit it.
_GENERALIZED_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(?:(\d{2})(\d{2})?)?([.,]\d+)?(Z|[+-]\d{2}(?:\d{2})?)?")


def _top(record: Any, key: str, default: Any = None) -> Any:
    return record.get(key, default) if isinstance(record, Mapping) else default


def _csv(param: Any) -> list[str] | None:
    return param.split(",") if isinstance(param, str) and param else None


# --- dates -----------------------------------------------------------------------------------


def _epoch(dt: datetime) -> int:
    # Naive means UTC (never the local zone of whoever runs the connector).
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _parse_iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)  # 3.11: most ISO-8601, a trailing "Z" included
    except ValueError:
        return None


def _string_to_epoch(text: str) -> int | None:
    text = text.strip()
    if _NUMBER.fullmatch(text):
        return int(float(text))  # epoch seconds, as the reference's date library read them
    if " " in text:
        try:
            return _epoch(datetime.strptime(text, "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            pass  # e.g. fractions or an offset: fromisoformat accepts a space separator too
    dt = _parse_iso(text)
    return None if dt is None else _epoch(dt)


def _date_to_epoch(value: Any) -> int | None:
    if isinstance(value, datetime):
        return _epoch(value)
    if isinstance(value, date):
        return _epoch(datetime.combine(value, time()))
    return None


def _to_epoch(value: Any, *, numbers: bool) -> int | None:
    try:
        if isinstance(value, str):
            return _string_to_epoch(value)
        if numbers and isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        return _date_to_epoch(value)
    except (ValueError, OverflowError, OSError):  # NaN, inf, dates outside the platform's range
        return None


def date_format(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """datetime or date string → epoch seconds; numbers, null and garbage unchanged."""
    result = _to_epoch(value, numbers=False)
    if result is None:
        log.debug("date_format(%s): cannot parse a %s", field, type(value).__name__)
        return value
    return result


def timestamp(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """Any datetime, ISO-8601 or epoch number (or numeric string) → epoch seconds."""
    if value is None:
        return None
    result = _to_epoch(value, numbers=True)
    if result is None:
        log.debug("timestamp(%s): cannot parse a %s", field, type(value).__name__)
        return value
    return result


def ldap_timestamp(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """Windows FILETIME (int or digit string) → epoch seconds, capped at 9999-12-31.

    AD's "never" values become None: ``0`` (``lastLogon`` of an account that never logged on,
    ``accountExpires`` reset to never) and ``9223372036854775807`` (``accountExpires`` never set);
    learn.microsoft.com/windows/win32/adschema/a-accountexpires. An LDAP GeneralizedTime string
    (``whenCreated``) is read as ``ldap_generalized_time`` does.
    """
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        ticks = int(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        ticks = value
    elif isinstance(value, str) and _GENERALIZED_TIME.fullmatch(value.strip()):
        return ldap_generalized_time(field, record, value, params)
    else:
        return value
    if ticks in _FILETIME_NEVER:
        return None
    return min(ticks // _FILETIME_TICKS - _FILETIME_EPOCH_OFFSET, MAX_EPOCH)


def ldap_generalized_time(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """LDAP GeneralizedTime (RFC 4517 §3.3.13: ``20261201204412.0Z``, ``20261201204412Z``,
    ``202612012044+0100``) → epoch seconds. AD's placeholder ``16010101000000.0Z`` → None;
    anything else that is not a GeneralizedTime is returned unchanged. A time without a zone is
    read as UTC (AD and OpenLDAP always send ``Z``)."""
    if not isinstance(value, str):
        return value
    match = _GENERALIZED_TIME.fullmatch(value.strip())
    if match is None:
        log.debug("ldap_generalized_time(%s): not a GeneralizedTime", field)
        return value
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0), tzinfo=UTC)
    except ValueError:
        return value
    if moment == _FILETIME_ZERO:
        return None
    seconds = moment.timestamp()
    if fraction:  # a fraction of the last unit given: of an hour, a minute or a second
        unit = 1 if second else 60 if minute else 3600
        seconds += float("0." + fraction[1:]) * unit
    if zone and zone != "Z":
        offset = int(zone[1:3]) * 3600 + int(zone[3:5] or 0) * 60
        seconds -= offset if zone[0] == "+" else -offset
    return int(seconds)


def primary_smtp_address(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """The primary e-mail address among Exchange ``proxyAddresses``: the value whose prefix is the
    upper-case ``SMTP:`` (lower-case ``smtp:`` marks the other addresses; MS-OXOABK 2.2.3.23),
    without the prefix; None when there is none. The server sends the values in no particular
    order, so the first one is not reliably the primary one.

    Works on the list (``"source": "proxyAddresses*"``) or, from the plain attribute
    (``"source": "proxyAddresses"``), on all the values of the record's ``proxyAddresses*``.
    """
    values: Any = value
    if not isinstance(values, list | tuple) and isinstance(record, Mapping) and not field.endswith("*"):
        values = record.get(field.split(".", 1)[0] + "*", value)
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list | tuple):
        return None
    given = params.get("prefix")
    prefix = given if isinstance(given, str) else "SMTP:"
    for item in values:
        if isinstance(item, str) and item.startswith(prefix):
            return item[len(prefix) :]
    return None


# --- strings ---------------------------------------------------------------------------------


def capitalize(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """First character upper-case, the rest lower-case (``mcDONALD`` → ``Mcdonald``)."""
    if not value:
        return value
    if not isinstance(value, str):
        log.debug("capitalize(%s): not a string but a %s", field, type(value).__name__)
        return value
    return value[0].upper() + value[1:].lower()


def first_from_full(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    if value and isinstance(value, str):
        return value.split(" ", 1)[0]
    return value


def last_from_full(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    if value and isinstance(value, str):
        return value.rsplit(" ", 1)[-1]
    return value


def split_email(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    if value and isinstance(value, str):
        return value.split("@", 1)[0]
    return value


def split(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """The ``index``-th piece of the value split ``on`` a separator; any error → the value."""
    if not value:
        return value
    try:
        on = params.get("on")
        pieces = value.split(on) if isinstance(on, str) else value.split()
        return pieces[int(params.get("index", 0))]
    except Exception:  # the spec: out of range, bad index, non-string... all give the value back
        return value


def concat(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """Join top-level record keys and quoted literals (``values=givenName,' ',sn``)."""
    items = _csv(params.get("values"))
    if items is None:
        return None
    parts: list[str] = []
    for item in items:
        if not item:
            return None
        if item[0] in _QUOTES and item[0] == item[-1]:
            parts.append(item[1:-1])
            continue
        piece = _top(record, item, "")
        if not isinstance(piece, str):
            return None
        parts.append(piece.strip())
    return "".join(parts)


def first_field(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """The value if truthy, else the first non-blank of the listed top-level keys (trimmed)."""
    if value:
        return value
    for key in _csv(params.get("fields")) or ():
        candidate = _top(record, key, "")
        if not isinstance(candidate, str):
            return None
        if candidate.strip():
            return candidate.strip()
    return None


# --- record lookups --------------------------------------------------------------------------


def casper_extension_attribute(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """The ``value`` of the Jamf extension attribute named ``attr``, else ``default``."""
    attr = params.get("attr")
    attributes = _top(record, "extension_attributes")
    if isinstance(attributes, list):
        for entry in attributes:
            if isinstance(entry, Mapping) and entry.get("name") == attr:
                return entry.get("value")
    return params.get("default")


def ldap_user_field(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    return value if value else _top(record, "sAMAccountName")


def memberOf(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """The result of the first param key contained in the value (substring or list element)."""
    if value is None:
        return None
    for key, result in params.items():
        if key == "default":
            continue
        try:
            if key in value:
                return result
        except TypeError:  # e.g. a number: nothing can be "in" it
            break
    return params.get("default")


def uber_manager(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """``uid=<x>,ou=…`` → ``x`` (customer-specific, kept for compatibility)."""
    if isinstance(value, str) and value[:4].lower() == "uid=":
        return value[4:].split(",", 1)[0]
    return value


def uber_position(field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any]) -> Any:
    """``…@uber.com`` → ``Employee``, anything else → ``Contractor`` (customer-specific)."""
    if isinstance(value, str) and value.strip().lower().endswith("@uber.com"):
        return "Employee"
    return "Contractor"


def mac_model_from_sn(
    field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any], lookup: MacModelLookup | None = None
) -> Any:
    """Model name for the record's ``general.serial_number``, via an opt-in lookup.

    Without a ``lookup`` (the default) the value is returned unchanged: the reference called an
    unauthenticated Oomnitza web service with no timeout, whose availability is unverified.
    """
    if lookup is None:
        return value
    general = _top(record, "general")
    if not isinstance(general, Mapping):
        return None
    serial = general.get("serial_number")
    if not serial:
        return value
    try:
        model = lookup(str(serial))
    except Exception as exc:  # a lookup outage must not fail every record
        log.debug("mac_model_from_sn: lookup of %s failed: %s", serial, exc)
        return value
    if not model or model.startswith("Error"):
        return value
    return model


# --- location --------------------------------------------------------------------------------


class LocationIndex:
    """Oomnitza locations as label → id, plus a count of values that matched neither.

    Built by the caller from the locations it fetched (no I/O here); shared by all records and
    workers, hence the lock around the miss counter.
    """

    def __init__(
        self, items: Iterable[Mapping[str, Any]], *, id_field: str = "location_id", label_field: str = "name"
    ) -> None:
        self.id_field = id_field
        self.label_field = label_field
        self._by_label: dict[Any, Any] = {}
        self._ids: dict[str, Any] = {}  # lower-cased id → id
        for item in items:
            ident, label = item.get(id_field), item.get(label_field)
            if ident is None:
                continue
            self._ids[str(ident).lower()] = ident
            if label is not None:
                self._by_label[label] = ident
        self._misses: Counter[str] = Counter()
        self._lock = threading.Lock()

    def resolve(self, value: Any) -> Any:
        """A label → its id; an id (any case) → the id; anything else → unchanged, counted."""
        try:
            if value in self._by_label:
                return self._by_label[value]
        except TypeError:  # unhashable
            pass
        if isinstance(value, str) and value.lower() in self._ids:
            # The reference returned value.lower(); the stored id is the same for lower-case
            # ids and stays correct if a tenant's ids are not lower-case.
            return self._ids[value.lower()]
        with self._lock:
            self._misses[str(value)] += 1
        return value

    @property
    def misses(self) -> dict[str, int]:
        return dict(self._misses)

    def report(self) -> str | None:
        if not self._misses:
            return None
        listed = ", ".join(f"{v!r} ({n})" for v, n in self._misses.most_common())
        return f"Could not lookup Location values for the following values: {listed}"


def location(
    field: str, record: Mapping[str, Any], value: Any, params: dict[str, Any], index: LocationIndex | None = None
) -> Any:
    """Location label or id → Oomnitza location id (the registry supplies ``index``)."""
    if not value:
        return None
    if index is None:
        # A wiring bug, not bad data: the engine must call ConverterRegistry.set_locations().
        raise RuntimeError("Oomnitza locations were not loaded before the location converter ran")
    return index.resolve(value)


BUILTINS: dict[str, Converter] = {
    "capitalize": capitalize,
    "casper_extension_attribute": casper_extension_attribute,
    "concat": concat,
    "date_format": date_format,
    "first_field": first_field,
    "first_from_full": first_from_full,
    "last_from_full": last_from_full,
    "ldap_generalized_time": ldap_generalized_time,
    "ldap_timestamp": ldap_timestamp,
    "ldap_user_field": ldap_user_field,
    "location": location,
    "mac_model_from_sn": mac_model_from_sn,
    "memberOf": memberOf,
    "primary_smtp_address": primary_smtp_address,
    "split": split,
    "split_email": split_email,
    "timestamp": timestamp,
    "uber_manager": uber_manager,
    "uber_position": uber_position,
}
"""Keyed by the documented name; the registry looks names up case-insensitively.
``location`` and ``mac_model_from_sn`` take an extra argument that the registry binds."""
