from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any

import pytest

from oomnitza_connector.paths import compile_path, get_field_value

SPEC_RECORD = {"profile": {"login": "jd", "emails": [{"v": "a@x"}]}, "os.name": "macOS"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("profile.login", "jd"),
        ("profile.emails.0.v", "a@x"),
        ("os.name", "macOS"),
        ("profile.phone", None),
        ("profile", SPEC_RECORD["profile"]),
        ("profile.emails", [{"v": "a@x"}]),
    ],
)
def test_spec_examples(path: str, expected: Any) -> None:
    assert get_field_value(SPEC_RECORD, path) == expected
    assert compile_path(path)(SPEC_RECORD) == expected


def test_literal_dotted_key_only_when_head_is_not_a_key() -> None:
    rec = {"os": {"version": "14"}, "os.version": "literal"}
    assert get_field_value(rec, "os.version") == "14"
    # head is a key, so no fallback to the literal key even when the nested lookup misses
    assert get_field_value({"os": {}, "os.version": "x"}, "os.version") is None
    assert get_field_value({"a.b": {"c": 1}}, "a.b.c") is None  # "a" is not a key → literal "a.b.c"
    assert get_field_value({"a.b.c": 1}, "a.b.c") == 1


def test_missing_and_default() -> None:
    assert get_field_value({}, "a") is None
    assert get_field_value({}, "a", "d") == "d"
    assert get_field_value(None, "a.b", 5) == 5
    assert get_field_value({"a": None}, "a.b", 5) == 5
    assert get_field_value({"a": None}, "a", 5) is None  # present: returned as is
    assert get_field_value({"a": 0}, "a", 5) == 0


def test_type_errors_give_default_and_log_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="oomnitza_connector.paths")
    assert get_field_value({"a": [1, 2]}, "a.5.x") is None  # index out of range
    assert get_field_value({"a": "text"}, "a.b") is None  # key on a string
    assert get_field_value({"a": [1, 2]}, "a.x") is None  # key on a list
    assert get_field_value({"a": [{"b": 1}]}, "a.-1.b") is None  # negative indices unsupported
    assert get_field_value({"a": 3}, "a.b", "d") == "d"
    assert caplog.records
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_trailing_index_indexes_a_list() -> None:
    # The reference gave null here; indexing is what a user of `emails.0` means.
    assert get_field_value({"e": ["x", "y"]}, "e.1") == "y"  # a trailing index indexes too
    assert get_field_value({"e": ["x"]}, "e.1") is None
    assert get_field_value({"e": [{"v": "x"}, {"v": "y"}]}, "e.1.v") == "y"


def test_lists_nested_and_non_dict_mappings() -> None:
    rec = {"a": [[{"b": "deep"}]]}
    assert get_field_value(rec, "a.0.0.b") == "deep"
    assert get_field_value({"a": ({"b": 1},)}, "a.0.b") == 1
    proxy = MappingProxyType({"x": MappingProxyType({"y": 2}), "p.q": 3})
    assert get_field_value(proxy, "x.y") == 2
    assert get_field_value(proxy, "p.q") == 3
    assert compile_path("x.y")(proxy) == 2
    assert compile_path("p.q")(proxy) == 3


def test_unicode_digit_head_is_not_an_index() -> None:
    assert get_field_value({"a": ["x"]}, "a.².b") is None
    assert compile_path("a.².b")({"a": ["x"]}) is None


def test_non_dict_records_give_none() -> None:
    for record in (None, "text", 42, [1, 2], [], {}, ("a",)):
        assert compile_path("a")(record) is None
        assert compile_path("a.b")(record) is None
        assert compile_path("0.b")(record) == get_field_value(record, "0.b")


_RECORDS: list[Any] = [
    SPEC_RECORD,
    {"os": {"version": "14"}, "os.version": "literal", "os.a": {"b": 1}},
    {"os": None, "os.version": "v"},
    {"os": "macOS", "os.version": "v"},
    {"os": [], "os.version": "v"},
    {"os": [{"version": "l0"}, {"version": "l1"}], "list": [[1, 2], [3]]},
    {"a": {"b": {"c": {"d": "deep"}}, "b.c": "lit"}, "a.b.c.d": "top"},
    {"a": {"0": "zero", "1": {"x": 1}}, "e": ["p", {"q": "r"}]},
    {"a": [{"b": None}, {"b": {"c": 0}}], "": {"": "empty"}},
    {"x.y.z": 1, "x": {"y.z": 2}},
    {"x": {"y": {}}, "x.y.z": 3},
    MappingProxyType({"os": {"version": "proxy"}}),
    [{"a": 1}, {"a": {"b": 2}}],
    ({"a": 1},),
    "string",
    0,
    None,
    {},
    [],
]

_PATHS = [
    "profile",
    "profile.login",
    "profile.emails.0.v",
    "profile.emails.1.v",
    "profile.emails.0",
    "os",
    "os.version",
    "os.name",
    "os.0.version",
    "os.1.version",
    "os.2.version",
    "os.a.b",
    "list.0.1",
    "list.1.0",
    "list.0",
    "a",
    "a.b",
    "a.b.c",
    "a.b.c.d",
    "a.b.c.d.e",
    "a.0",
    "a.1.x",
    "a.0.b",
    "a.1.b.c",
    "e.1.q",
    "e.0",
    "x.y.z",
    "x.y",
    "x.y.z.w",
    "0.a",
    "1.a.b",
    "0",
    ".",
    "",
    "a.",
    ".a",
    "..",
    "os..version",
    "nope",
    "nope.nope",
]


@pytest.mark.parametrize("path", _PATHS)
def test_compiled_matches_uncompiled(path: str) -> None:
    compiled = compile_path(path)
    for record in _RECORDS:
        assert compiled(record) == get_field_value(record, path), (path, record)
