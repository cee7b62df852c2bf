"""The legacy INI dialect (config.md §1): every rule, the spec example, and the error messages."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from oomnitza_connector import ini
from oomnitza_connector.errors import ConfigError
from oomnitza_connector.ini import IniDocument, parse_bool, parse_ini, read_ini, shown_key


def values(text: str, section: str = "s") -> dict[str, str]:
    return parse_ini(text)[section].values


def one(text: str, key: str = "k") -> str:
    """Value of ``key`` in ``[s]`` whose body is ``text``."""
    return values(f"[s]\n{text}")[key]


def parse_error(text: str, path: str = "config.ini") -> str:
    with pytest.raises(ConfigError) as info:
        parse_ini(text, path)
    message = str(info.value)
    assert "\n" not in message
    return message


SPEC_EXAMPLE = """\
[oomnitza]
url = https://acme.oomnitza.com   ; our tenant
api_token = ""
username = svc-connector
password = Summer%2024#1

[converters]
fullname:
    first = record.get("givenName") or ""

    # blank line above and this comment are fine
    return (first + " " + (value or "")).strip()
"""


# --- the spec example ---------------------------------------------------------------------------


def test_spec_example() -> None:
    doc = parse_ini(SPEC_EXAMPLE)
    assert doc.names() == ["oomnitza", "converters"]
    assert doc["oomnitza"].values == {
        "url": "https://acme.oomnitza.com",
        "api_token": "",
        "username": "svc-connector",
        "password": "Summer%2024#1",
    }
    assert doc["converters"].values == {
        "fullname": '    first = record.get("givenName") or ""\n'
        "    # blank line above and this comment are fine\n"
        '    return (first + " " + (value or "")).strip()'
    }


def test_spec_example_lines() -> None:
    doc = parse_ini(SPEC_EXAMPLE)
    assert doc["oomnitza"].line == 1
    assert doc["converters"].line == 7
    assert doc["oomnitza"].key_lines == {"url": 2, "api_token": 3, "username": 4, "password": 5}
    assert doc["converters"].key_lines == {"fullname": 8}


def test_converter_body_is_runnable_python() -> None:
    body = parse_ini(SPEC_EXAMPLE)["converters"].values["fullname"]
    source = "def fullname(record, value):\n" + body
    namespace: dict[str, object] = {}
    exec(source, namespace)
    assert namespace["fullname"]({"givenName": "Ada"}, "Lovelace") == "Ada Lovelace"  # type: ignore[operator]


# --- interpolation, keys, delimiters -----------------------------------------------------------


@pytest.mark.parametrize("raw", ["p%ss", "100%", "%(x)s", "%%", "a%"])
def test_percent_is_literal(raw: str) -> None:
    assert one(f"k = {raw}") == raw


def test_keys_are_lower_cased() -> None:
    assert values("[s]\nEnable = yes\nmapping.User = uid\nURL: x\n") == {
        "enable": "yes",
        "mapping.user": "uid",
        "url": "x",
    }


def test_key_variants_collapse_to_one() -> None:
    assert values("[s]\nEnable = 1\nENABLE = 0\nenable = 2\n") == {"enable": "2"}


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        ("k = v", "k", "v"),
        ("k: v", "k", "v"),
        ("k=v", "k", "v"),
        ("k:v", "k", "v"),
        ("url = https://host:8443/x", "url", "https://host:8443/x"),  # first delimiter wins
        ("url: https://host/?a=b", "url", "https://host/?a=b"),
        ("a = b = c", "a", "b = c"),
        ("a : b : c", "a", "b : c"),
        ("k   =    spaced value   ", "k", "spaced value"),
        ("k\t=\tv\t", "k", "v"),
        ("my key = v", "my key", "v"),
    ],
)
def test_delimiter_and_trimming(line: str, key: str, value: str) -> None:
    assert values(f"[s]\n{line}\n") == {key: value}


def test_section_values_keep_insertion_order() -> None:
    assert list(values("[s]\nz = 1\na = 2\nm = 3\n")) == ["z", "a", "m"]


def test_get_is_case_insensitive_with_default() -> None:
    section = parse_ini("[s]\nKey = v\n")["s"]
    assert section.get("key") == "v"
    assert section.get("KEY") == "v"
    assert section.get("missing") is None
    assert section.get("missing", "d") == "d"


# --- comments ------------------------------------------------------------------------------------


def test_full_line_comments() -> None:
    text = "# top\n; top\n[s]\n# hash\n; semi\nk = v\n#k = x\n;k = y\n"
    assert values(text) == {"k": "v"}


@pytest.mark.parametrize("line", ["rem a remark", "REM = 1", "Rem : x", "rem", "rEm\tsomething"])
def test_rem_lines_are_comments(line: str) -> None:
    assert values(f"[s]\n{line}\nk = v\n") == {"k": "v"}


def test_key_literally_named_rem_is_ignored() -> None:
    assert values("[s]\nrem = 5\nk = v\n") == {"k": "v"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("rem=5", {"rem": "5"}),  # the first word is "rem=5", not "rem"
        ("remote = x", {"remote": "x"}),
        ("remark: y", {"remark": "y"}),
        ("rem: x", {"rem": "x"}),  # "rem:" is not the word "rem" either (as 2.3.3)
    ],
)
def test_words_merely_starting_with_rem_are_keys(line: str, expected: dict[str, str]) -> None:
    assert values(f"[s]\n{line}\n") == expected


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("https://acme.oomnitza.com   ; our tenant", "https://acme.oomnitza.com"),
        ("https://x ; note", "https://x"),
        ("x\t; tab before", "x"),
        ("a;b", "a;b"),  # no whitespace before ";"
        ("a;b ;c", "a;b ;c"),  # 2.3.3 looks at the first ";" only
        (";secret", ";secret"),  # nothing precedes it inside the value
        ("b #c", "b #c"),  # "#" is never an inline comment
        ("x #", "x #"),
        ("a ; b ; c", "a"),
    ],
)
def test_inline_comments(raw: str, value: str) -> None:
    assert one(f"k = {raw}") == value


def test_inline_comment_leaving_nothing_is_empty() -> None:
    assert one('k = "" ; empty on purpose') == ""


# --- empty values and quoting --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("k =", ""),
        ("k:", ""),
        ("k =    ", ""),
        ('k = ""', ""),
        ('k=""', ""),
        ('k = "abc"', '"abc"'),
        ("k = ''", "''"),
        ("k = 'abc'", "'abc'"),
        ('k = """"', '""""'),
        ('k = " "', '" "'),
    ],
)
def test_empty_values_and_quoting(line: str, value: str) -> None:
    assert one(line) == value


# --- multi-line values ---------------------------------------------------------------------------


def test_continuation_keeps_leading_whitespace() -> None:
    assert one("k = first\n  second\n\tthird\n") == "first\n  second\n\tthird"


def test_empty_first_line_has_no_leading_newline() -> None:
    text = "recordfilter:\n    return record.get('x')\n"
    assert one(text, "recordfilter") == "    return record.get('x')"


def test_quoted_empty_first_line_then_body() -> None:
    assert one('k = ""\n    body\n') == "    body"


def test_blank_and_comment_lines_inside_value_are_dropped() -> None:
    text = "k:\n    a = 1\n\n   \n\t\n# column-0 comment\n; another\nrem also a comment\n    return a\n"
    assert one(text) == "    a = 1\n    return a"


def test_indented_comment_is_part_of_the_body() -> None:
    assert one("k:\n    # keep me\n    x\n") == "    # keep me\n    x"


def test_no_inline_comment_rule_in_continuation_lines() -> None:
    assert one("k:\n    a = 1 ; b = 2\n    c = 3 ;\n") == "    a = 1 ; b = 2\n    c = 3 ;"


def test_continuation_trailing_whitespace_is_trimmed() -> None:
    assert one("k:\n    x   \n    y\t\n") == "    x\n    y"


def test_value_ends_at_next_key_or_section() -> None:
    doc = parse_ini("[s]\na:\n    one\nb = two\n    more\n[t]\nc:\n  three\n")
    assert doc["s"].values == {"a": "    one", "b": "two\n    more"}
    assert doc["t"].values == {"c": "  three"}


def test_rem_is_not_a_comment_when_indented() -> None:
    assert one("k:\n    rem = 1\n") == "    rem = 1"


def test_repeated_key_replaces_multiline_value() -> None:
    assert one("k:\n    old\nk:\n    new\n") == "    new"


def test_two_converters() -> None:
    text = "[converters]\nupper:\n    return value.upper()\nlower:\n    return value.lower()\n"
    assert values(text, "converters") == {
        "upper": "    return value.upper()",
        "lower": "    return value.lower()",
    }


# --- sections ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("[oomnitza]", "oomnitza"),
        ("[ldap.Contractors]", "ldap.Contractors"),
        ("[casper.MDM.v2]", "casper.MDM.v2"),
        ("[a]b]", "a]b"),
        ("[[x]]", "[x]"),
        ("[]]", "]"),
        ("[a] ; trailing comment", "a"),
        ("[a]   ", "a"),
        ("[ spaced ]", " spaced "),
        ("[managed.12]", "managed.12"),
    ],
)
def test_section_names(header: str, name: str) -> None:
    assert parse_ini(f"{header}\nk = v\n").names() == [name]


def test_section_names_are_case_sensitive() -> None:
    doc = parse_ini("[LDAP]\na = 1\n[ldap]\nb = 2\n")
    assert doc.names() == ["LDAP", "ldap"]
    assert "ldap" in doc
    assert "Ldap" not in doc
    with pytest.raises(KeyError):
        doc["Ldap"]


def test_repeated_section_merges_into_first() -> None:
    doc = parse_ini("[a]\nx = 1\ny = 1\n[b]\nz = 1\n[a]\ny = 2\nw = 3\n")
    assert doc.names() == ["a", "b"]
    assert doc["a"].line == 1
    assert doc["a"].values == {"x": "1", "y": "2", "w": "3"}
    assert doc["a"].key_lines == {"x": 2, "y": 7, "w": 8}


def test_empty_sections_and_empty_file() -> None:
    assert parse_ini("[a]\n[b]\n").names() == ["a", "b"]
    assert parse_ini("").names() == []
    assert parse_ini("# only a comment\n\n").names() == []


def test_document_path_is_kept() -> None:
    assert parse_ini("[a]\n", "/etc/x.ini").path == "/etc/x.ini"


# --- [DEFAULT] -----------------------------------------------------------------------------------


def test_default_is_inherited_without_overriding() -> None:
    doc = parse_ini("[DEFAULT]\nverify_ssl = false\nx = d\n[a]\nx = own\n[b]\ny = 1\n")
    assert doc.names() == ["a", "b"]
    assert "DEFAULT" not in doc
    assert doc.defaults == {"verify_ssl": "false", "x": "d"}
    assert doc["a"].values == {"verify_ssl": "false", "x": "own"}
    assert doc["b"].values == {"verify_ssl": "false", "x": "d", "y": "1"}
    assert doc["a"].key_lines == {"verify_ssl": 2, "x": 5}
    assert doc["b"].key_lines == {"verify_ssl": 2, "x": 3, "y": 7}


def test_default_later_in_file_still_applies_even_to_converters() -> None:
    doc = parse_ini("[converters]\nc:\n    return 1\n[DEFAULT]\nshared:\n    return 2\n")
    assert doc["converters"].values == {"shared": "    return 2", "c": "    return 1"}


def test_no_default_section() -> None:
    assert parse_ini("[a]\nk = v\n").defaults == {}


# --- line endings, BOM ---------------------------------------------------------------------------


def test_crlf_and_cr_line_endings() -> None:
    crlf = SPEC_EXAMPLE.replace("\n", "\r\n")
    assert parse_ini(crlf).sections == parse_ini(SPEC_EXAMPLE).sections
    cr = SPEC_EXAMPLE.replace("\n", "\r")
    assert parse_ini(cr).sections == parse_ini(SPEC_EXAMPLE).sections


def test_bom_is_accepted() -> None:
    assert parse_ini("\ufeff[oomnitza]\nurl = x\n")["oomnitza"].values == {"url": "x"}


def test_form_feed_is_not_a_line_break() -> None:
    assert one("k = a\fb") == "a\fb"


def test_no_trailing_newline() -> None:
    assert one("k = v") == "v"


# --- parse errors --------------------------------------------------------------------------------


def test_error_lists_all_bad_lines() -> None:
    message = parse_error("[s]\nk = v\nfoo bar\n\n[t]\njust words\n")
    assert message == ('config.ini: cannot parse line 3, line 6: expected "key = value" or a [section] header')


def test_error_names_the_given_path() -> None:
    assert parse_error("[s]\nnope\n", "/etc/oomnitza/site.ini").startswith(
        "/etc/oomnitza/site.ini: cannot parse line 2:"
    )


def test_content_before_first_section() -> None:
    message = parse_error("# fine\nurl = x\n  indented\n[s]\nk = v\n")
    assert message == ('config.ini: cannot parse line 2 (key "url"), line 3: must come after a [section] header')


def test_indented_line_directly_after_header() -> None:
    message = parse_error("[s]\n    k = v\n")
    assert message == (
        'config.ini: cannot parse line 2 (key "k"): indented, but no key line above it (remove the leading whitespace)'
    )


def test_indented_line_after_header_even_when_previous_section_had_keys() -> None:
    message = parse_error("[s]\nk:\n    body\n[t]\n    orphan\n")
    assert "cannot parse line 5:" in message


def test_indented_comment_without_key_is_dropped() -> None:
    assert values("[s]\n    # a note\n\t; another\nk = v\n") == {"k": "v"}


def test_all_kinds_of_errors_in_one_message() -> None:
    message = parse_error("stray = 1\n[s]\n  orphan\nbad\n")
    assert message == (
        'config.ini: cannot parse line 1 (key "stray"): must come after a [section] header; '
        'cannot parse line 4: expected "key = value" or a [section] header; '
        "cannot parse line 3: indented, but no key line above it (remove the leading whitespace)"
    )


@pytest.mark.parametrize("line", ["= value", ": value", "[]", "[unterminated", "[]x"])
def test_lines_that_are_neither_key_nor_header(line: str) -> None:
    assert "cannot parse line 2" in parse_error(f"[s]\n{line}\n")


def test_a_bad_line_never_shows_its_value() -> None:
    # Half of a wrapped secret, a token pasted without its key, a value before any section: the
    # error names the line, and the key when there is one, never the text.
    secret = "Zx9-Sup3rSecretV4lue=="
    text = f"password = {secret}\n[s]\n  {secret}\n{secret}\napi_token: {secret}\n  pw = {secret}\n"
    message = parse_error(text)
    assert "Zx9" not in message and "Sup3r" not in message and "V4lue" not in message
    assert 'line 1 (key "password")' in message and "line 3:" in message
    assert shown_key("zx9-sup3rsecretv4lue") is None  # line 4 reads as a key: never printed either
    assert shown_key("api_token") == "api_token" and shown_key("mapping.SERIAL_NUMBER") == "mapping.SERIAL_NUMBER"
    message = parse_error(f"[s]\n{'x' * 200}\n")
    assert message.startswith("config.ini: cannot parse line 2:") and "xxx" not in message


def test_crlf_line_numbers_in_errors() -> None:
    assert "cannot parse line 3:" in parse_error("[s]\r\nk = v\r\noops\r\n")


def test_bracket_line_with_delimiter_but_no_closing_bracket_is_a_key() -> None:
    assert values("[s]\n[odd = 1\n") == {"[odd": "1"}


# --- read_ini ------------------------------------------------------------------------------------


def test_read_ini(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_bytes(b"\xef\xbb\xbf" + SPEC_EXAMPLE.replace("\n", "\r\n").encode())
    doc = read_ini(path)
    assert isinstance(doc, IniDocument)
    assert doc.path == str(path)
    assert doc["oomnitza"].values["password"] == "Summer%2024#1"
    assert doc["converters"].values == parse_ini(SPEC_EXAMPLE)["converters"].values


def test_read_ini_keeps_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("x.ini").write_text("[a]\n", encoding="utf-8")
    assert read_ini("x.ini").path == "x.ini"


def test_read_ini_non_ascii_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.ini"
    path.write_text("[s]\nname = Zoë Müller ✓\n", encoding="utf-8")
    assert read_ini(path)["s"].values == {"name": "Zoë Müller ✓"}


def test_read_ini_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        read_ini("x.ini")
    assert str(info.value) == (
        "cannot open config file 'x.ini': no such file (create one with: oomnitza-connector generate-ini --ini x.ini)"
    )


def test_read_ini_missing_file_with_space_is_quoted_in_hint(tmp_path: Path) -> None:
    path = tmp_path / "my config.ini"
    with pytest.raises(ConfigError, match=r"generate-ini --ini '.*my config\.ini'\)$"):
        read_ini(path)


def test_read_ini_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_ini(tmp_path)
    assert str(info.value).startswith(f"cannot open config file '{tmp_path}': it is a directory")


@pytest.mark.skipif(
    sys.platform == "win32" or (hasattr(os, "geteuid") and os.geteuid() == 0),
    reason="root (and Windows) ignore file permission bits",
)
def test_read_ini_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "secret.ini"
    path.write_text("[a]\n", encoding="utf-8")
    path.chmod(0)
    try:
        with pytest.raises(ConfigError, match="permission denied"):
            read_ini(path)
    finally:
        path.chmod(0o600)


def test_read_ini_invalid_utf8_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.ini"
    path.write_bytes("[s]\r\nk = v\r\nname = Zoë\r\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        read_ini(path)
    message = str(info.value)
    assert message == (
        f"cannot read config file '{path}': line 3 is not valid UTF-8 (byte 0xeb); save the file with UTF-8 encoding"
    )


def test_read_ini_parse_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.ini"
    path.write_text("[s]\nbroken\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^.*bad\.ini: cannot parse line 2: "):
        read_ini(path)


# --- parse_bool ----------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["1", "yes", "y", "true", "t", "on", "YES", "True", "TRUE", "On", "Y", "T", " true "])
def test_parse_bool_true(word: str) -> None:
    assert parse_bool(word, setting="[s] enable") is True


@pytest.mark.parametrize("word", ["0", "no", "n", "false", "f", "off", "NO", "False", "FALSE", "Off", "N", "F"])
def test_parse_bool_false(word: str) -> None:
    assert parse_bool(word, setting="[s] enable") is False


@pytest.mark.parametrize("word", ["", "2", "enabled", "disable", "tru", "yess", "none", '"true"', "-1"])
def test_parse_bool_rejects_other_words(word: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_bool(word, setting="[csv_assets] enable")
    assert str(info.value) == f"[csv_assets] enable: '{word}' is not a boolean (use true or false)"


def test_read_ini_permission_denied_even_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ini, "open", refuse, raising=False)  # root ignores chmod, so force the error
    with pytest.raises(ConfigError) as info:
        read_ini(tmp_path / "c.ini")
    assert str(info.value) == (
        f"cannot open config file '{tmp_path / 'c.ini'}': permission denied (check the file's owner and permissions)"
    )
