"""Mapping merge order and record conversion (config.md §5)."""

from __future__ import annotations

import pytest

from oomnitza_connector.config import SectionConfig
from oomnitza_connector.converters import ConverterRegistry
from oomnitza_connector.errors import ConfigError, RecordError
from oomnitza_connector.mapping import Mapper, MissingRequired, merge_mappings


def section(**settings: str) -> SectionConfig:
    return SectionConfig(
        name="csv_users",
        ini_path="config.ini",
        settings={"default_role": "25", "default_position": "Employee", **settings},
    )


def test_merge_order() -> None:
    merged = merge_mappings(
        defaults={"USER": {"source": "uid", "converter": "ldap_user_field"}, "EMAIL": {"source": "mail"}},
        server={"general.serial": "SERIAL", "mail2": ["EMAIL", "ALT_EMAIL"]},
        ini={"USER": {"required": True}, "EMAIL": {"converter": "split_email"}},
        default_converters={"general.serial": "date_format"},
        extras={"POSITION": {"setting": "default_position"}, "EMAIL": {"hardcoded": "never"}},
    )
    assert merged["USER"] == {"source": "uid", "converter": "ldap_user_field", "required": True}
    assert merged["EMAIL"] == {"source": "mail2", "converter": "split_email"}  # server source + INI converter
    assert merged["ALT_EMAIL"] == {"source": "mail2"}
    assert merged["SERIAL"] == {"source": "general.serial", "converter": "date_format"}
    assert merged["POSITION"] == {"setting": "default_position"}  # extras only when absent


def test_convert_sources_settings_hardcoded_converters_and_types() -> None:
    specs = {
        "USER": {"source": "login"},
        "EMAIL": {"source": "emails.0.value"},
        "OS": {"source": "os.version"},  # literal dotted key
        "ROLE": {"setting": "default_role"},
        "TYPE": {"hardcoded": "Laptop"},
        "APPS": {"hardcoded": []},
        "FIRST": {"source": "name", "converter": "first_from_full"},
        "MEM": {"source": "ram", "type": "int"},
    }
    mapper = Mapper(specs, section(), ConverterRegistry())
    record = {"login": "jd", "emails": [{"value": "jd@x"}], "os.version": "14.4", "name": "Jane Doe", "ram": "16"}
    assert mapper.convert(record) == {
        "USER": "jd",
        "EMAIL": "jd@x",
        "OS": "14.4",
        "ROLE": "25",
        "TYPE": "Laptop",
        "APPS": [],
        "FIRST": "Jane",
        "MEM": 16,
    }


def test_required_fields() -> None:
    mapper = Mapper(
        {"USER": {"source": "u", "required": "True"}, "X": {"source": "x", "required": "no"}},
        section(),
        ConverterRegistry(),
    )
    assert mapper.convert({"u": "a"}) == {"USER": "a", "X": None}
    for empty in (None, "", 0, [], {}):
        with pytest.raises(MissingRequired) as exc:
            mapper.convert({"u": empty})
        assert exc.value.bucket == "missing_required" and exc.value.fields == ["USER"]


def test_raising_custom_converter_is_a_record_error() -> None:
    registry = ConverterRegistry()
    registry.register_custom("boom", "    raise ValueError('bad ' + value)", origin="[converters] boom")
    mapper = Mapper({"X": {"source": "x", "converter": "boom"}}, section(), registry)
    with pytest.raises(RecordError, match=r"boom.*ValueError: bad v"):
        mapper.convert({"x": "v"})


def test_bad_type_and_bad_cast() -> None:
    with pytest.raises(ConfigError, match="type 'long'"):
        Mapper({"X": {"source": "x", "type": "long"}}, section(), ConverterRegistry())
    mapper = Mapper({"X": {"source": "x", "type": "int"}}, section(), ConverterRegistry())
    with pytest.raises(RecordError, match="cannot make int"):
        mapper.convert({"x": "twelve"})


def test_a_new_value_source_replaces_the_default() -> None:
    merged = merge_mappings(
        defaults={"APPLICATIONS": {"source": "software.applications"}},
        server={},
        ini={"APPLICATIONS": {"hardcoded": []}},
        default_converters={},
        extras={},
    )
    assert merged["APPLICATIONS"] == {"hardcoded": []}
    mapper = Mapper(merged, section(), ConverterRegistry())
    assert mapper.convert({"software": {"applications": [{"name": "x"}]}}) == {"APPLICATIONS": []}
