from __future__ import annotations

import copy
import pickle
from collections.abc import Mapping

import pytest

from oomnitza_connector.converters import ConverterRegistry
from oomnitza_connector.errors import ConfigError, RecordError
from oomnitza_connector.paths import get_field_value
from oomnitza_connector.recordfilter import RecordView, compile_filter


def make(body: str, section: str = "[csv_assets]"):
    return compile_filter(body, section=section, registry=ConverterRegistry())


def test_attribute_access_as_in_the_seed_readme() -> None:
    f = make('    return record.asset_type == "computer"')
    assert f({"asset_type": "computer"}) is True
    assert f({"asset_type": "phone"}) is False
    assert f({}) is False  # missing attribute → None


def test_dict_access_as_in_the_reference() -> None:
    f = make('\n    return record.get("asset_type") == "computer" and record["serial"].startswith("C")')
    assert f({"asset_type": "computer", "serial": "C02"}) is True
    assert f({"asset_type": "computer", "serial": "X"}) is False


def test_missing_attribute_is_none_and_nested_attributes_work() -> None:
    f = make("    return record.nope is None and record.profile.login == 'jd' and record.profile.x is None")
    assert f({"profile": {"login": "jd"}}) is True


def test_no_return_is_false_and_result_is_a_bool() -> None:
    assert make("    x = record.a")({"a": 1}) is False
    assert make("    return record.n")({"n": 3}) is True
    assert make("    return record.n")({"n": []}) is False


def test_same_globals_as_converters() -> None:
    body = (
        "    import re\n"
        "    LOG.debug('filtering')\n"
        "    return (bool(re.match('C', get_field_value(record, 'hw.serial')))\n"
        "            and cae(record, 'Dept') == 'IT'\n"
        "            and converter(record, 'concat', values='a,b') == 'xy')\n"
    )
    f = make(body)
    rec = {"hw": {"serial": "C02"}, "a": "x", "b": "y", "extension_attributes": [{"name": "Dept", "value": "IT"}]}
    assert f(rec) is True
    assert f({**rec, "a": "z"}) is False


def test_raising_filter_is_a_record_error() -> None:
    f = make("    return record['missing'] == 1")
    with pytest.raises(RecordError) as err:
        f({})
    assert str(err.value) == "recordfilter raised KeyError: 'missing'"
    assert isinstance(err.value.__cause__, KeyError)


def test_record_is_read_only() -> None:
    with pytest.raises(RecordError, match="TypeError"):
        make("    record['x'] = 1")({})
    with pytest.raises(RecordError, match="AttributeError"):
        make("    record.x = 1")({})


@pytest.mark.parametrize(
    ("body", "line"),
    [("    return record.a ==", 1), ("    x = 1\n   return x", 2), ("    if x:\n    return 1", 2)],
)
def test_syntax_error_is_a_config_error(body: str, line: int) -> None:
    with pytest.raises(ConfigError) as err:
        make(body, section="c.ini: [csv_assets]")
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"c.ini: [csv_assets] recordfilter: line {line}: ")
    assert text.endswith("(each line of the body must be indented under recordfilter)")


def test_bare_section_name_is_bracketed() -> None:
    with pytest.raises(ConfigError, match=r"^\[csv_assets\] recordfilter: line 1: "):
        make("    return (", section="csv_assets")


def test_record_view_is_a_thin_mapping() -> None:
    data = {"a": 1, "b": {"c": 2}, "keys": "shadowed"}
    view = RecordView(data)
    assert isinstance(view, Mapping)
    assert view["a"] == 1 and view.get("zz", 5) == 5 and "a" in view and len(view) == 3
    assert list(view) == ["a", "b", "keys"]
    assert dict(view.items()) == data and list(view.keys()) == list(data) and next(iter(view.values())) == 1
    assert view == data
    assert view["b"] is data["b"]  # item access: raw values, no copies
    assert isinstance(view.b, RecordView) and view.b.c == 2
    assert view["keys"] == "shadowed"  # method names win for attributes
    assert get_field_value(view, "b.c") == 2
    data["late"] = "seen"  # a view, not a copy
    assert view.late == "seen"
    assert copy.copy(view) == data
    assert pickle.loads(pickle.dumps(view)) == data
    with pytest.raises(AttributeError):
        view.__missing_dunder__  # noqa: B018
