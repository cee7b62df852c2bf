"""Typed settings: the kinds, the one validator that reports every bad setting at once, generate-ini
comments, and the declarations of every source (help present, defaults and examples valid)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oomnitza_connector import redact
from oomnitza_connector.config import (
    MANAGED_SETTINGS,
    OOMNITZA_SETTINGS,
    load_config,
    render_template,
)
from oomnitza_connector.errors import ConfigError
from oomnitza_connector.settings import (
    COMMON_SETTINGS,
    Bool,
    Choice,
    File,
    Float,
    Folder,
    Int,
    Json,
    List,
    Setting,
    Url,
)
from oomnitza_connector.sources.base import REGISTRY, load_source_class

from .helpers import run_cli, write_ini

BASE = "[oomnitza]\nurl = https://acme.oomnitza.test\napi_token = tok-1234\n"


def all_declarations() -> list[tuple[str, Setting]]:
    found = [("common", s) for s in COMMON_SETTINGS]
    found += [("oomnitza", s) for s in OOMNITZA_SETTINGS] + [("managed", s) for s in MANAGED_SETTINGS]
    for module in sorted(REGISTRY):
        found += [(module, s) for s in load_source_class(module).settings]
    return found


# -- kinds -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, text, expected",
    [
        (Int(1, 200), "200", 200),
        (Int(1, 200), " 7 ", 7),
        (Int(min=0), "0", 0),
        (Float(above=0), "0.5", 0.5),
        (Float(above=0, max=50), "50", 50.0),
        (Bool(), "Yes", True),
        (Bool(), "OFF", False),
        (Bool(also=("auto",)), "Auto", "auto"),
        (Choice(("computers", "mobiledevices")), "computers", "computers"),
        (Choice(("keyring", "vault"), ignore_case=True), "Vault", "vault"),
        (Url(), "https://x.example/api", "https://x.example/api"),
        (Url(), "HTTP://x.example", "HTTP://x.example"),
        (Json("object"), '{"a": [1]}', {"a": [1]}),
        (Json("array"), '["Drivers"]', ["Drivers"]),
        (List(), "USER, EMAIL,,", ["USER", "EMAIL"]),
        (List(sep="space"), "password  api_token", ["password", "api_token"]),
        (List(sep="any"), "password, api_token", ["password", "api_token"]),
        (List(choices=("agent", "admin")), "agent,admin", ["agent", "admin"]),
    ],
)
def test_kinds_read_good_values(kind, text: str, expected) -> None:
    assert kind.parse(text) == expected


@pytest.mark.parametrize(
    "kind, text, reason",
    [
        (Int(1, 200), "abc", "must be a whole number from 1 to 200"),
        (Int(1, 200), "201", "must be a whole number from 1 to 200"),
        (Int(1, 200), "1_0", "must be a whole number from 1 to 200"),
        (Int(1, 200), "2.5", "must be a whole number from 1 to 200"),
        (Int(min=1), "0", "must be a whole number of at least 1"),
        (Float(above=0), "0", "must be a number above 0"),
        (Float(above=0, max=50), "nan", "must be a number above 0 and at most 50"),
        (Float(above=0), "inf", "must be a number above 0"),
        (Bool(), "maybe", "must be true or false (yes/no, on/off and 1/0 work too)"),
        (Bool(also=("auto",)), "sometimes", "must be true, false or auto"),
        (Choice(("none", "move")), "Move", "must be one of: none, move"),
        (Url(), "example.com", "must start with https:// or http://"),
        (Url(("https",)), "http://x.example", "must start with https://"),
        (Url(), "https://", "must start with https:// or http://"),
        (Json("object"), "[1]", "must be a JSON object {...}"),
        (Json("object"), "{'a': 1}", "not valid JSON (line 1 column 2)"),
        (List(choices=("agent", "admin")), "agent, owner", "lists 'owner'; each item must be one of: agent, admin"),
    ],
)
def test_kinds_explain_bad_values(kind, text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        kind.parse(text)
    assert reason in str(info.value)


def test_paths_must_exist_and_be_of_their_kind(tmp_path: Path) -> None:
    (tmp_path / "f.pem").write_text("x")
    assert File().parse(str(tmp_path / "f.pem")) == str(tmp_path / "f.pem")
    assert Folder().parse(str(tmp_path)) == str(tmp_path)
    for kind, text, reason in (
        (File(), tmp_path / "nope.pem", "does not exist"),
        (File(), tmp_path, "is not a file"),
        (Folder(), tmp_path / "f.pem", "is not a folder"),
    ):
        with pytest.raises(ValueError, match=reason):
            kind.parse(str(text))
    assert File(must_exist=False).parse("later.pem") == "later.pem"


def test_empty_is_the_default_and_a_secret_is_never_repeated() -> None:
    size = Setting("page_size", "100", kind=Int(1, 200), help="records per request")
    assert size.parse("") == 100
    assert Setting("limit", "", kind=Int(1), help="at most this many").parse("") is None
    assert Setting("flag", "", kind=Bool(), help="a flag").parse("") is False
    assert (
        size.problem("abc", where="c.ini: [okta]")
        == "c.ini: [okta] page_size = 'abc' must be a whole number from 1 to 200"
    )
    key = Setting("json_key", "", secret=True, kind=Json("object"), help="a key")
    assert key.secret
    problem = key.problem('{"private_key": "s3cr3t"', where="c.ini: [x]")
    assert problem is not None and "s3cr3t" not in problem and problem.startswith("c.ini: [x] json_key must be")


def test_help_is_mandatory_and_choices_make_a_choice_kind() -> None:
    with pytest.raises(ValueError, match="no help"):
        Setting("x", "")
    mode = Setting("mode", "a", choices=("a", "b"), help="the mode")
    assert isinstance(mode.kind, Choice) and mode.kind.choices == ("a", "b")
    assert Setting("p", "", secret=True, help="a password").describe() == "secret"


# -- every declaration -------------------------------------------------------------------------------


@pytest.mark.parametrize("owner, setting", all_declarations(), ids=lambda v: getattr(v, "name", v))
def test_every_declaration_is_complete_and_its_values_valid(owner: str, setting: Setting) -> None:
    assert setting.help.strip(), f"[{owner}] {setting.name} has no help"
    if isinstance(setting.kind, File | Folder):
        return  # examples name paths of the user's machine
    for text in (setting.default, setting.example):
        if isinstance(text, str) and text:
            assert setting.problem(text, where=f"[{owner}]") is None


# -- the validator -----------------------------------------------------------------------------------


def test_every_bad_setting_of_a_section_is_reported_at_once(tmp_path: Path) -> None:
    body = BASE + (
        "[okta]\nenable = true\nurl = okta.example\napi_token = t\ndefault_role = 25\ndefault_position = E\n"
        "page_size = abc\ndeprovisioned = perhaps\nrequest_timeout = 0\nverify_ssl = nah\n"
        f"cacert_file = {tmp_path}/missing.pem\n"
    )
    path = write_ini(tmp_path / "config.ini", body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    where = f"{path}: [okta]"
    assert f"{where} url = 'okta.example' must start with https:// or http:// (e.g. https://example.okta.com)" in lines
    assert f"{where} page_size = 'abc' must be a whole number from 1 to 200" in lines
    assert f"{where} deprovisioned = 'perhaps' must be true or false (yes/no, on/off and 1/0 work too)" in lines
    assert f"{where} request_timeout = '0' must be a number above 0" in lines
    assert f"{where} verify_ssl = 'nah' must be true or false (yes/no, on/off and 1/0 work too)" in lines
    assert f"{where} cacert_file = '{tmp_path}/missing.pem' does not exist" in lines
    assert len(lines) == len(set(lines)) == 6, lines


def test_bad_settings_of_several_sections_are_one_line_each_on_the_command_line(tmp_path: Path) -> None:
    body = BASE + (
        "[okta]\nenable = true\nurl = https://o.example\napi_token = t\ndefault_role = 25\n"
        "default_position = E\npage_size = 500\n"
        "[netbox]\nenable = true\nurl = https://n.example\nauth_token = t\npage_size = 0\n"
    )
    result = run_cli("upload", "okta", "--ini", str(write_ini(tmp_path / "config.ini", body)))
    assert result.code == 1
    assert "[okta] page_size = '500' must be a whole number from 1 to 200" in result.err
    assert "[netbox] page_size = '0' must be a whole number from 1 to 1000" in result.err
    assert "Traceback" not in result.all
    assert all(line.startswith("error: ") for line in result.err.strip().splitlines()), result.err


def test_declared_and_cross_setting_problems_of_a_source_are_reported_together(tmp_path: Path) -> None:
    """A source's own rules (Source.validate) yield every problem, next to the declared ones."""
    body = BASE + (
        "[airwatch]\nenable = true\nurl = https://uem.example\nclient_id = app\npage_size = 0\nregion = mars\n"
    )
    path = write_ini(tmp_path / "config.ini", body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    where = f"{path}: [airwatch]"
    assert str(info.value).splitlines() == [
        f"{where} page_size = '0' must be a whole number from 1 to 500",
        f"{where} region = 'mars' must be one of: na, emea, apac, uat",
        f"{where} set both client_id and client_secret (an OAuth client)",
    ]


def test_secret_kinds_are_masked_and_scrubbed(tmp_path: Path) -> None:
    key = '{"type": "service_account", "client_email": "sa@acme.test", "private_key": "-----BEGIN-s3cr3t-----"}'
    body = BASE + (
        "[chromebooks]\nenable = true\nservice_account_impersonate = admin@acme.test\n"
        f"service_account_json_key = {key}\nsync_field = SERIAL_NUMBER\n"
    )
    config = load_config(write_ini(tmp_path / "config.ini", body))
    section = config.sections["chromebooks"]
    assert "service_account_json_key" in section.secret_names
    assert section.shown_settings()["service_account_json_key"] != key
    assert "s3cr3t" not in redact.scrub(f"oops: {key}")


def test_source_reads_typed_values(tmp_path: Path) -> None:
    body = BASE + (
        "[okta]\nenable = true\nurl = https://o.example\napi_token = t\ndefault_role = 25\n"
        "default_position = E\npage_size = 150\ndeprovisioned = yes\n"
    )
    config = load_config(write_ini(tmp_path / "config.ini", body))
    section = config.sections["okta"]
    source = load_source_class("okta")(section)
    assert source.value("page_size") == 150
    assert source.value("deprovisioned") is True
    assert source.value("request_timeout") == 120.0
    assert source.setting("page_size") == "150"  # mappings keep seeing strings
    assert section.settings["default_role"] == "25"


# -- generate-ini ------------------------------------------------------------------------------------


def test_template_comments_every_setting_with_its_help() -> None:
    text = render_template()
    assert text.startswith("# ")
    section = text[text.index("[okta]\n") :].split("\n\n", 1)[0]
    assert "# users per request (Okta's maximum) [whole number from 1 to 200; default 200]\npage_size = 200" in (
        section
    )
    assert "# the Oomnitza role ID put into `PERMISSIONS_ID` (e.g. `25`) [required]\ndefault_role = 25" in section
    for module in REGISTRY:
        block = text[text.index(f"[{module}]\n") :].split("\n\n", 1)[0]
        for setting in load_source_class(module).settings:
            line = re.search(rf"^{re.escape(setting.name)}( =|:)", block, flags=re.MULTILINE)
            assert line, f"[{module}] {setting.name} missing from the template"
            before = block[: line.start()].rstrip("\n").rsplit("\n", 1)[-1]
            assert before.startswith("# "), f"[{module}] {setting.name} has no comment above it"


# What a user fills in beyond the template's examples (those are the seed's, kept as they were).
FILLS: dict[str, dict[str, str]] = {
    "bamboohr": {"system_name": "acme"},
    "chromebooks": {"service_account_email": "sync@acme-project.iam.gserviceaccount.com"},
    "google_mobile_devices": {"service_account_email": "sync@acme-project.iam.gserviceaccount.com"},
    "csv_assets": {"directory": ""},
    "csv_users": {"directory": ""},
    "ldap": {"password": "change-me"},
    "ldap_assets": {"password": "change-me"},
    "onelogin": {"client_id": "0123abcd", "client_secret": "change-me"},
    "open_audit": {"username": "admin", "password": "change-me"},
    "servicenow": {"username": "oomnitza", "password": "change-me"},
    "tanium": {"session_token": "token-0123456789abcdef"},
    "zendesk": {"client_secret": "change-me"},
}


def _fill(block: str, tmp_path: Path, module: str) -> str:
    """Enable the section, fill in FILLS and point path settings at real files (the examples name
    the user's paths)."""
    kinds = {s.name: s.kind for s in load_source_class(module).settings}
    fills = FILLS.get(module, {})
    out = []
    for line in block.splitlines():
        key, sep, value = line.partition(" =")
        value = value.strip()
        if line == "enable = False":
            line = "enable = True"
        elif sep and key in fills:
            line = f"{key} = {fills[key]}"
        elif sep and isinstance(kinds.get(key), File | Folder) and value:
            target = tmp_path / f"{module}-{key}"
            if isinstance(kinds[key], Folder):
                target.mkdir(exist_ok=True)
            else:
                target.write_text("placeholder", encoding="utf-8")
            line = f"{key} = {target}"
        out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("module", sorted(REGISTRY))
def test_generated_template_loads_once_a_section_is_enabled(tmp_path: Path, module: str) -> None:
    text = render_template()
    start = text.index(f"[{module}]\n")
    end = text.find("\n\n", start)
    block = text[start:end]
    path = tmp_path / "config.ini"
    path.write_text(text[:start] + _fill(block, tmp_path, module) + text[end:], encoding="utf-8")
    config = load_config(path)
    assert list(config.sections) == [module]
