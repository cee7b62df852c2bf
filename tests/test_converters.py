from __future__ import annotations

import logging
import traceback
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from oomnitza_connector.converters import (
    BUILTINS,
    ConverterRegistry,
    DynamicException,
    LocationIndex,
    parse_converter_spec,
)
from oomnitza_connector.errors import ConfigError, RecordError


def run(
    spec: str,
    value: Any = None,
    record: dict[str, Any] | None = None,
    registry: ConverterRegistry | None = None,
    field: str = "src",
) -> Any:
    reg = registry or ConverterRegistry()
    return reg.bind(spec, where="[t] mapping.X")(field, record or {}, value)


# --- spec parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("name:a=1|b=x|flag", ("name", {"a": "1", "b": "x", "flag": True})),
        ("split", ("split", {})),
        ("split:", ("split", {})),
        ("split:on=@|index=0", ("split", {"on": "@", "index": "0"})),
        ("concat:values=a,' ',b", ("concat", {"values": "a,' ',b"})),
        ("x:k=a=b", ("x", {"k": "a=b"})),  # split at the first "="
        ("x:on= ", ("x", {"on": " "})),  # values are not trimmed
        (" x : k=1 | j=2", ("x", {"k": "1 ", "j": "2"})),
        ("x:a=1||b=2", ("x", {"a": "1", "b": "2"})),
        ("x:u=http://h:80", ("x", {"u": "http://h:80"})),  # only the first ":" splits
    ],
)
def test_parse_converter_spec(spec: str, expected: tuple[str, dict[str, Any]]) -> None:
    assert parse_converter_spec(spec) == expected


# --- built-ins -------------------------------------------------------------------------------


def test_every_builtin_is_registered() -> None:
    assert set(BUILTINS) == {
        "capitalize",
        "casper_extension_attribute",
        "concat",
        "date_format",
        "first_field",
        "first_from_full",
        "last_from_full",
        "ldap_generalized_time",
        "ldap_timestamp",
        "ldap_user_field",
        "location",
        "mac_model_from_sn",
        "memberOf",
        "primary_smtp_address",
        "split",
        "split_email",
        "timestamp",
        "uber_manager",
        "uber_position",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mcDONALD", "Mcdonald"),
        ("a", "A"),
        ("éCOLE", "École"),
        ("", ""),
        (None, None),
        (0, 0),
        (12, 12),
        (["x"], ["x"]),
    ],
)
def test_capitalize(value: Any, expected: Any) -> None:
    assert run("capitalize", value) == expected


def test_casper_extension_attribute() -> None:
    rec = {
        "extension_attributes": [
            {"name": "Owner", "value": "ana"},
            {"name": "Dept", "value": "IT"},
            {"name": "Dept", "value": "second"},
            "junk",
        ]
    }
    assert run("casper_extension_attribute:attr=Dept", "ignored", rec) == "IT"
    assert run("casper_extension_attribute:attr=Nope|default=n/a", "ignored", rec) == "n/a"
    assert run("casper_extension_attribute:attr=Nope", "ignored", rec) is None
    assert run("casper_extension_attribute:attr=Dept", None, {}) is None
    assert run("casper_extension_attribute:attr=Dept", None, {"extension_attributes": "bad"}) is None


def test_concat() -> None:
    rec = {"givenName": " Ana ", "sn": "Ruiz", "n": 5}
    assert run("concat:values=givenName,' ',sn", "ignored", rec) == "Ana Ruiz"
    assert run('concat:values=sn,"-",givenName', None, rec) == "Ruiz-Ana"
    assert run("concat:values=givenName,missing,sn", None, rec) == "AnaRuiz"  # missing → ""
    assert run("concat:values=givenName, sn", None, rec) == "Ana"  # items are not trimmed: " sn" is missing
    assert run("concat:values=givenName,,sn", None, rec) is None  # empty item
    assert run("concat:values=", None, rec) is None
    assert run("concat", None, rec) is None
    assert run("concat:values", None, rec) is None  # a flag is not a list
    assert run("concat:values=givenName,n", None, rec) is None  # non-string value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-05 10:00:00", 1704448800),
        ("2024-01-05T10:00:00", 1704448800),
        ("2024-01-05T10:00:00Z", 1704448800),
        ("2024-01-05T12:00:00+02:00", 1704448800),
        ("2024-01-05T10:00:00.123456Z", 1704448800),
        ("2024-01-05 10:00:00.5+00:00", 1704448800),  # not the strict format: ISO fallback
        ("2024-01-05", 1704412800),
        ("1704448800", 1704448800),
        ("1704448800.9", 1704448800),
        (datetime(2024, 1, 5, 10, 0, 0), 1704448800),  # naive = UTC
        (datetime(2024, 1, 5, 11, 0, 0, tzinfo=timezone(timedelta(hours=1))), 1704448800),
        (date(2024, 1, 5), 1704412800),
        ("not a date", "not a date"),
        ("2024-13-45 99:00:00", "2024-13-45 99:00:00"),
        ("", ""),
        (None, None),
        (1704448800, 1704448800),  # numbers unchanged
        (True, True),
    ],
)
def test_date_format(value: Any, expected: Any) -> None:
    assert run("date_format", value) == expected


def test_first_field() -> None:
    rec = {"a": "  ", "b": " bee ", "c": "sea", "n": 3}
    assert run("first_field:fields=a,b,c", "given", rec) == "given"
    assert run("first_field:fields=a,b,c", "", rec) == "bee"
    assert run("first_field:fields=missing,c", None, rec) == "sea"
    assert run("first_field:fields=a,missing", None, rec) is None
    assert run("first_field:fields=n,c", None, rec) is None  # a non-string candidate
    assert run("first_field", None, rec) is None


def test_first_and_last_from_full() -> None:
    assert run("first_from_full", "Ana Lu Ruiz") == "Ana"
    assert run("last_from_full", "Ana Lu Ruiz") == "Ruiz"
    assert run("first_from_full", "Cher") == "Cher"
    assert run("last_from_full", "Cher") == "Cher"
    assert run("first_from_full", "") == ""
    assert run("last_from_full", None) is None
    assert run("first_from_full", 7) == 7


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # AD's "never" (corrections 2026-12): lastLogon 0, accountExpires 0 or 2**63-1.
        (0, None),
        ("0", None),
        (9223372036854775807, None),
        ("9223372036854775807", None),
        (9223372036854775806, 253402300799),  # beyond 9999-12-31: capped
        (133497216000000000, 1705248000),  # 2024-01-14T16:00:00Z
        ("133497216000000000", 1705248000),
        (116444736000000000, 0),
        ("12.5", "12.5"),
        ("abc", "abc"),
        (1.5, 1.5),
        (None, None),
        (True, True),
    ],
)
def test_ldap_timestamp(value: Any, expected: Any) -> None:
    assert run("ldap_timestamp", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20261201204412.0Z", 1796157852),  # Active Directory (whenCreated)
        ("20261201204412Z", 1796157852),  # OpenLDAP (modifyTimestamp)
        ("20261201204412.5Z", 1796157852),
        ("20261201214412+0100", 1796157852),
        ("20261201194412-0100", 1796157852),
        ("202612012044Z", 1796157840),
        ("2026120120.5Z", 1796157000),  # a fraction of an hour
        ("20261201204412", 1796157852),  # no zone: UTC
        ("16010101000000.0Z", None),  # AD's placeholder (dSCorePropagationData)
        ("20261341204412.0Z", "20261341204412.0Z"),  # month 13
        ("2026-12-01", "2026-12-01"),
        ("", ""),
        (None, None),
        (5, 5),
    ],
)
def test_ldap_generalized_time(value: Any, expected: Any) -> None:
    assert run("ldap_generalized_time", value) == expected
    if isinstance(value, str) and value[:1].isdigit() and not value.isdigit():  # all digits: a FILETIME
        assert run("ldap_timestamp", value) == expected  # ldap_timestamp reads both forms


def test_primary_smtp_address() -> None:
    proxies = ["smtp:a.fabre@example.com", "X500:/o=Example/cn=afabre", "SMTP:alice@example.com"]
    assert run("primary_smtp_address", proxies, field="proxyAddresses*") == "alice@example.com"
    # From the plain attribute (its first value): the record's list is read.
    record = {"proxyAddresses": proxies[0], "proxyAddresses*": proxies}
    assert run("primary_smtp_address", proxies[0], record, field="proxyAddresses") == "alice@example.com"
    assert run("primary_smtp_address:prefix=X500:", proxies, field="x*") == "/o=Example/cn=afabre"
    assert run("primary_smtp_address", ["smtp:only@example.com"], field="x*") is None
    assert run("primary_smtp_address", None, {}, field="proxyAddresses") is None
    assert run("primary_smtp_address", "SMTP:a@b.c", {}, field="proxyAddresses") == "a@b.c"


def test_ldap_user_field() -> None:
    assert run("ldap_user_field", "jd", {"sAMAccountName": "other"}) == "jd"
    assert run("ldap_user_field", "", {"sAMAccountName": "jdoe"}) == "jdoe"
    assert run("ldap_user_field", None, {}) is None


def test_memberof() -> None:
    groups = ["CN=Admins,OU=x", "Staff"]
    spec = "memberOf:Admins=admin|Staff=staff|default=none"
    assert run(spec, "CN=Admins,OU=Groups") == "admin"  # substring of a string
    assert run(spec, "CN=Staff,OU=Groups") == "staff"
    assert run(spec, groups) == "staff"  # element of a list (not a substring of an element)
    assert run(spec, "CN=Other") == "none"
    assert run("memberOf:Admins=admin", "Other") is None
    assert run("memberOf:Admins", "Admins") is True  # a flag returns true
    assert run(spec, None) is None
    assert run(spec, 42) == "none"
    # parameter order decides
    assert run("memberOf:Staff=first|Admins=second", "Admins Staff") == "first"


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ("split:on=@|index=0", "jd@example.com", "jd"),
        ("split:on=@|index=1", "jd@example.com", "example.com"),
        ("split", "  a  b c ", "a"),
        ("split:index=-1", "a b c", "c"),
        ("split:index=-2", "a b c", "b"),
        ("split:on=,|index=5", "a,b", "a,b"),  # out of range → original
        ("split:on=,|index=-3", "a,b", "a,b"),
        ("split:on=,|index=x", "a,b", "a,b"),  # bad index → original
        ("split:on=|index=0", "a,b", "a,b"),  # empty separator → original
        ("split", "", ""),
        ("split", None, None),
        ("split", 12, 12),
    ],
)
def test_split(spec: str, value: Any, expected: Any) -> None:
    assert run(spec, value) == expected


def test_split_email() -> None:
    assert run("split_email", "jd@example.com") == "jd"
    assert run("split_email", "nobody") == "nobody"
    assert run("split_email", "") == ""
    assert run("split_email", None) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-05T10:00:00Z", 1704448800),
        ("2024-01-05 10:00:00", 1704448800),
        ("1704448800", 1704448800),
        (1704448800, 1704448800),
        (1704448800.7, 1704448800),
        (datetime(2024, 1, 5, 10, tzinfo=UTC), 1704448800),
        ("garbage", "garbage"),
        (float("nan"), float("nan")),
        ("9" * 400, "9" * 400),  # overflows to inf: unchanged
        (None, None),
    ],
)
def test_timestamp(value: Any, expected: Any) -> None:
    result = run("timestamp", value)
    if isinstance(expected, float) and expected != expected:
        assert result != result
    else:
        assert result == expected


def test_uber_converters() -> None:
    assert run("uber_manager", "uid=jdoe,ou=people,dc=uber,dc=com") == "jdoe"
    assert run("uber_manager", "jdoe") == "jdoe"
    assert run("uber_position", "a@uber.com") == "Employee"
    assert run("uber_position", "a@ext.com") == "Contractor"
    assert run("uber_position", None) == "Contractor"


def test_mac_model_from_sn_is_opt_in() -> None:
    rec = {"general": {"serial_number": "C02XYZ"}}
    assert run("mac_model_from_sn", "orig", rec) == "orig"  # no lookup configured: no I/O at all
    calls: list[str] = []

    def lookup(sn: str) -> str | None:
        calls.append(sn)
        return {"C02XYZ": "MacBook Pro", "ERR": "Error: unknown"}.get(sn)

    reg = ConverterRegistry(mac_model_lookup=lookup)
    assert run("mac_model_from_sn", "orig", rec, reg) == "MacBook Pro"
    assert run("mac_model_from_sn", "orig", {"general": {"serial_number": "ERR"}}, reg) == "orig"
    assert run("mac_model_from_sn", "orig", {"general": {"serial_number": "NONE"}}, reg) == "orig"
    assert run("mac_model_from_sn", "orig", {"general": {"serial_number": ""}}, reg) == "orig"
    assert run("mac_model_from_sn", "orig", {}, reg) is None  # missing general
    assert calls == ["C02XYZ", "ERR", "NONE"]

    def broken(sn: str) -> str | None:
        raise OSError("timeout")

    assert run("mac_model_from_sn", "orig", rec, ConverterRegistry(mac_model_lookup=broken)) == "orig"


# --- location --------------------------------------------------------------------------------

LOCATIONS = [
    {"location_id": "abc123", "name": "HQ", "code": "hq-1"},
    {"location_id": "def456", "name": "Remote", "code": "rem"},
    {"name": "no id"},
]


def test_location_hit_miss_and_id() -> None:
    reg = ConverterRegistry()
    conv = reg.bind("location", where="[t] mapping.LOCATION")
    assert reg.uses_location
    reg.set_locations(LOCATIONS)
    assert conv("loc", {}, "HQ") == "abc123"  # label → id
    assert conv("loc", {}, "ABC123") == "abc123"  # id, any case
    assert conv("loc", {}, "def456") == "def456"
    assert conv("loc", {}, "") is None
    assert conv("loc", {}, None) is None
    assert conv("loc", {}, "Mars") == "Mars"  # miss: unchanged, counted
    assert conv("loc", {}, "Mars") == "Mars"
    assert conv("loc", {}, "Moon") == "Moon"
    assert reg.locations is not None and reg.locations.misses == {"Mars": 2, "Moon": 1}
    [message] = reg.cleanup_messages()
    assert message == "Could not lookup Location values for the following values: 'Mars' (2), 'Moon' (1)"


def test_location_custom_field_and_label() -> None:
    reg = ConverterRegistry()
    conv = reg.bind("location:field=code|label=name", where="[t] mapping.LOCATION")
    reg.bind("location:field=code|label=name", where="[u] mapping.LOCATION")  # same: fine
    reg.set_locations(LOCATIONS)
    assert conv("loc", {}, "Remote") == "rem"
    assert reg.cleanup_messages() == []
    with pytest.raises(ConfigError, match=r"^\[v\] mapping.L: location converter uses field='location_id'"):
        reg.bind("location", where="[v] mapping.L")


def test_location_not_used_and_not_loaded() -> None:
    reg = ConverterRegistry()
    reg.bind("split", where="w")
    assert not reg.uses_location
    assert reg.cleanup_messages() == []
    conv = reg.bind("location", where="w")
    with pytest.raises(RecordError, match="locations were not loaded"):
        conv("loc", {}, "HQ")


def test_location_index_directly() -> None:
    index = LocationIndex(LOCATIONS, id_field="location_id", label_field="name")
    assert index.resolve("HQ") == "abc123"
    assert index.resolve(["unhashable"]) == ["unhashable"]
    assert index.report() == "Could not lookup Location values for the following values: \"['unhashable']\" (1)"
    assert LocationIndex([]).report() is None


# --- registry: binding, custom converters -----------------------------------------------------


def test_unknown_converter_suggests_a_close_name() -> None:
    reg = ConverterRegistry()
    with pytest.raises(ConfigError) as err:
        reg.bind("splt:on=@", where="[csv_assets] mapping.FULLNAME")
    assert str(err.value) == "[csv_assets] mapping.FULLNAME: unknown converter 'splt' (did you mean 'split'?)"
    with pytest.raises(ConfigError) as err:
        reg.bind("memberof_x", where="w")
    assert str(err.value) == "w: unknown converter 'memberof_x' (did you mean 'memberOf'?)"
    with pytest.raises(ConfigError) as err:
        reg.bind("zzzzzz", where="w")
    assert str(err.value) == "w: unknown converter 'zzzzzz'"
    with pytest.raises(ConfigError, match="must be a name"):
        reg.bind("", where="w")


def test_unknown_converter_suggests_custom_names() -> None:
    reg = ConverterRegistry()
    reg.register_custom("fullname", "    return value", origin="c.ini: [converters] fullname")
    with pytest.raises(ConfigError, match=r"did you mean 'fullname'\?"):
        reg.bind("fulname", where="w")


def test_builtin_names_are_case_insensitive() -> None:
    assert run("MEMBEROF:a=1", "xa") == "1"
    assert run("Capitalize", "aB") == "Ab"


def test_custom_converter_globals() -> None:
    reg = ConverterRegistry()
    body = (
        "\n"
        "    import re\n"
        "    first = record.get('givenName') or ''\n"
        "    dept = cae(record, 'Dept', default='none')\n"
        "    sep = params.get('sep', ' ')\n"
        "    owner = get_field_value(record, 'owner.login')\n"
        "    upper = converter(record, 'concat', values=\"'<',givenName,'>'\")\n"
        "    LOG.debug('converting %s', field)\n"
        "    assert DynamicException is not None and re.sub\n"
        "    return sep.join([first, value or '', dept, owner, upper, field])\n"
    )
    reg.register_custom("fullname", body, origin="c.ini: [converters] fullname")
    rec = {"givenName": "Ana", "owner": {"login": "jd"}, "extension_attributes": [{"name": "Dept", "value": "IT"}]}
    conv = reg.bind("fullname:sep=/", where="w")
    assert conv("sn", rec, "Ruiz") == "Ana/Ruiz/IT/jd/<Ana>/sn"
    assert reg.bind("fullname", where="w")("sn", {"owner": {"login": "x"}}, None) == " " + " none x <> sn"


def test_custom_converter_params_are_not_shared_between_records() -> None:
    reg = ConverterRegistry()
    reg.register_custom("pop", "    return params.pop('k', 'gone')", origin="o")
    conv = reg.bind("pop:k=v", where="w")
    assert conv("f", {}, None) == "v"
    assert conv("f", {}, None) == "v"


def test_custom_no_return_is_none() -> None:
    reg = ConverterRegistry()
    reg.register_custom("nothing", "    x = 1", origin="o")
    assert reg.bind("nothing", where="w")("f", {}, "v") is None


def test_custom_shadows_builtin_and_is_case_insensitive() -> None:
    reg = ConverterRegistry()
    reg.register_custom("Split", "    return 'custom:' + value", origin="o")
    assert reg.bind("split:on=@", where="w")("f", {}, "a@b") == "custom:a@b"
    assert reg.bind("SPLIT", where="w")("f", {}, "x") == "custom:x"
    assert "Split" not in reg.names() and "split" in reg.names()


def test_custom_converter_called_from_another() -> None:
    reg = ConverterRegistry()
    reg.register_custom("base", "    return ('base', value, params)", origin="o")
    reg.register_custom("outer", "    return converter(record, 'BASE', a='1')", origin="o")
    assert reg.bind("outer", where="w")("f", {}, "ignored") == ("base", None, {"a": "1"})
    reg.register_custom("bad", "    return converter(record, 'nope')", origin="o")
    with pytest.raises(RecordError, match="converter 'bad' raised LookupError: unknown converter 'nope'"):
        reg.bind("bad", where="w")("f", {}, None)


def test_custom_wrapping_location_makes_the_registry_load_locations() -> None:
    reg = ConverterRegistry()
    reg.register_custom("loc", "    return converter(record, 'location', field='code', label='name')", origin="o")
    assert not reg.uses_location  # registering is not using
    conv = reg.bind("loc", where="w")
    assert reg.uses_location and reg.location_fields == ("code", "name")
    reg.set_locations(LOCATIONS)
    assert conv("f", {}, None) is None  # converter() passes value None


@pytest.mark.parametrize(
    ("body", "line", "msg"),
    [
        ("    x = 1\n    return x +\n", 2, "invalid syntax"),
        ("    x = 1\n      y = 2\n", 2, "unexpected indent"),
        ("\n    if value:\n    return 1\n", 2, "expected an indented block after 'if' statement on line 1"),
        ("    x = (1,\n", 1, "'(' was never closed"),
    ],
)
def test_custom_syntax_errors(body: str, line: int, msg: str) -> None:
    reg = ConverterRegistry()
    with pytest.raises(ConfigError) as err:
        reg.register_custom("myconv", body, origin="c.ini: [converters] myconv")
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"c.ini: [converters] myconv: line {line}: {msg}")
    assert text.endswith("(each line of the body must be indented under the name)")


def test_custom_error_default_origin_and_empty_body() -> None:
    reg = ConverterRegistry()
    with pytest.raises(ConfigError, match=r"^\[converters\] myconv: line 1: "):
        reg.register_custom("MyConv", "    return )")
    with pytest.raises(ConfigError, match=r"^\[converters\] empty: the body is empty"):
        reg.register_custom("empty", "   \n  \n")


def test_raising_converter_is_a_record_error_with_a_useful_traceback() -> None:
    reg = ConverterRegistry()
    reg.register_custom(
        "boom", "    x = 1\n    raise ValueError('bad value ' + str(value))", origin="c.ini: [converters] boom"
    )
    conv = reg.bind("boom", where="w")
    with pytest.raises(RecordError) as err:
        conv("f", {}, 7)
    assert str(err.value) == "converter 'boom' raised ValueError: bad value 7"
    assert err.value.bucket == "failed_convert"
    assert isinstance(err.value.__cause__, ValueError)
    tb = "".join(traceback.format_exception(err.value.__cause__))
    assert 'File "<c.ini: [converters] boom>"' in tb
    assert "raise ValueError('bad value ' + str(value))" in tb


def test_dynamic_exception_and_record_error_pass_through() -> None:
    reg = ConverterRegistry()
    reg.register_custom("dyn", "    raise DynamicException('nope')", origin="o")
    with pytest.raises(RecordError, match="converter 'dyn' raised DynamicException: nope"):
        reg.bind("dyn", where="w")("f", {}, None)
    assert issubclass(DynamicException, Exception)


def test_custom_log_name(caplog: pytest.LogCaptureFixture) -> None:
    reg = ConverterRegistry()
    reg.register_custom("logs", "    LOG.warning('hello %s', value)", origin="o")
    with caplog.at_level(logging.WARNING):
        reg.bind("logs", where="w")("f", {}, "v")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("oomnitza_connector.custom", "hello v")]
