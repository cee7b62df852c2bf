"""Config semantics on top of the INI dialect: sections, settings, mappings, errors a user can make."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from oomnitza_connector.config import load_config, parse_mapping_value, render_template
from oomnitza_connector.errors import ConfigError

from .helpers import run_cli, write_ini

BASE = """
[oomnitza]
url = https://acme.oomnitza.test   ; our tenant
api_token = tok%en-1234
"""


def ini(tmp_path: Path, body: str) -> Path:
    return write_ini(tmp_path / "config.ini", BASE + body)


def test_seed_style_file_loads(tmp_path: Path) -> None:
    path = ini(
        tmp_path,
        f"""
[csv_users.HR]
Enable = yes
filename = {tmp_path}/u.csv
default_role = 25
default_position = Employee
sync_field = USER, EMAIL ,
mapping.User = {{'source': "Email", 'required': 'True'}}
mapping.first_name = First Name
mapping.ROLE = {{"setting": "default_role"}}

[csv_assets]
enable = False
filename = x
""",
    )
    config = load_config(path)
    assert config.oomnitza.settings["url"] == "https://acme.oomnitza.test"
    assert config.oomnitza.settings["api_token"] == "tok%en-1234"
    section = config.sections["csv_users.HR"]
    assert section.module == "csv_users"
    assert section.sync_fields == ["USER", "EMAIL"]
    assert section.mappings["USER"] == {"source": "Email", "required": "True"}
    assert section.mappings["FIRST_NAME"] == {"source": "First Name"}
    assert config.disabled == ["csv_assets"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"source": "a.b", "converter": "split:on=@|index=0"}', {"source": "a.b", "converter": "split:on=@|index=0"}),
        ("{'hardcoded': []}", {"hardcoded": []}),
        ("{'source': 'x', 'required': True}", {"source": "x", "required": True}),
        ("general.asset_tag", {"source": "general.asset_tag"}),
        ('"quoted.path"', {"source": "quoted.path"}),
    ],
)
def test_mapping_values(text: str, expected: dict) -> None:
    assert parse_mapping_value(text, where="w") == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"source": "x"', "cannot read the mapping"),
        ('{"source": "x", "sauce": 1}', "unknown mapping key(s) sauce"),
        ("[1, 2]", "a mapping must be an object"),
    ],
)
def test_bad_mapping_values(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_mapping_value(text, where="w")


def run(tmp_path: Path, body: str, *args: str):
    path = ini(tmp_path, body)
    return run_cli("upload", *args, "--ini", str(path))


def csv_section(tmp_path: Path, extra: str = "", enable: str = "True") -> str:
    (tmp_path / "a.csv").write_text("serial,model\nS1,M1\n", encoding="utf-8")
    return f"""
[csv_assets]
enable = {enable}
filename = {tmp_path}/a.csv
sync_field = SERIAL
mapping.SERIAL = {{"source": "serial"}}
{extra}
"""


@pytest.mark.parametrize(
    "extra, message",
    [
        ("insert_only = true\nupdate_only = yes", "insert_only and update_only are both true"),
        ("verify_ssl = maybe", "[csv_assets] verify_ssl = 'maybe' must be true or false"),
        ('mapping.BAD = {"source": "x"', "mapping.bad (line"),
        ('mapping.X = {"source": "x", "converter": "uppercase"}', "unknown converter 'uppercase'"),
        ('mapping.X = {"setting": "nope"}', "there is no setting 'nope'"),
        # Only without a server mapping: with one, the field may get its source from it (run time).
        ('mapping.X = {"required": true}\nuse_server_map = false', 'set one of "source", "setting" or "hardcoded"'),
        ("recordfilter:\n    return record[", "recordfilter"),
        ("ssl_protocol = sslv2", "ssl_protocol = 'sslv2' is not supported"),
    ],
)
def test_user_errors_are_one_clear_line(tmp_path: Path, extra: str, message: str) -> None:
    result = run(tmp_path, csv_section(tmp_path, extra), "csv_assets")
    assert result.code == 1, result.all
    assert message in result.err, result.err
    assert "Traceback" not in result.all
    assert all(line.startswith("error: ") for line in result.err.strip().splitlines()), result.err


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    body = csv_section(tmp_path, 'verify_ssl = maybe\nmapping.X = {"converter": "nope", "source": "a"}')
    body += "\n[csv_users]\nenable = true\nfilename = u.csv\n"
    result = run(tmp_path, body, "csv_assets")
    assert result.code == 1
    assert "verify_ssl" in result.err
    assert "unknown converter 'nope'" in result.err
    assert "[csv_users] default_role is required" in result.err
    assert "[csv_users] sync_field is required" in result.err


def test_unknown_and_disabled_sections(tmp_path: Path) -> None:
    body = csv_section(tmp_path) + "\n[csv_users]\nenable = false\n"
    result = run(tmp_path, body, "csv_asset")
    assert result.code == 1
    assert "there is no section [csv_asset] (did you mean 'csv_assets'?)" in result.err
    result = run(tmp_path, body, "csv_users")
    assert result.code == 1
    assert "section [csv_users] is disabled" in result.err


def test_unknown_connector_module(tmp_path: Path) -> None:
    result = run(tmp_path, "[csv_asets]\nenable = true\n", "csv_asets")
    assert result.code == 1
    assert "no connector named 'csv_asets' (did you mean [csv_assets]?)" in result.err


def test_bad_enable_value(tmp_path: Path) -> None:
    result = run(tmp_path, csv_section(tmp_path, enable="sure"), "csv_assets")
    assert result.code == 1
    assert "[csv_assets] enable: 'sure' is not a boolean" in result.err


def test_missing_and_malformed_ini(tmp_path: Path) -> None:
    result = run_cli("upload", "csv_assets", "--ini", str(tmp_path / "nope.ini"))
    assert result.code == 1 and "no such file" in result.err and "generate-ini" in result.err
    bad = write_ini(tmp_path / "bad.ini", "[oomnitza]\nurl = x\nthis line is wrong\n")
    result = run_cli("upload", "csv_assets", "--ini", str(bad))
    assert result.code == 1 and "line 3" in result.err


def test_missing_oomnitza_section_and_credentials(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "c.ini", csv_section(tmp_path))
    result = run_cli("upload", "csv_assets", "--ini", str(path))
    assert result.code == 1 and "no [oomnitza] section" in result.err
    path = write_ini(tmp_path / "c.ini", "[oomnitza]\nurl = https://x.test\n" + csv_section(tmp_path))
    result = run_cli("upload", "csv_assets", "--ini", str(path))
    assert result.code == 1 and "needs api_token, or username and password" in result.err


def test_custom_converter_syntax_error(tmp_path: Path) -> None:
    body = csv_section(tmp_path) + "\n[converters]\nbroken:\n    return (\n"
    result = run(tmp_path, body, "csv_assets")
    assert result.code == 1
    assert "[converters] broken" in result.err


def test_no_connectors_named(tmp_path: Path) -> None:
    result = run(tmp_path, csv_section(tmp_path))
    assert result.code == 0
    assert "No connectors specified" in result.err and "csv_assets" in result.err


def test_generate_ini_writes_template_and_keeps_backup(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_text("old", encoding="utf-8")
    result = run_cli("generate-ini", "--ini", str(path))
    assert result.code == 0
    assert (tmp_path / "config.ini.bak").read_text() == "old"
    text = path.read_text()
    assert text == render_template()
    values = [line for line in text.splitlines() if line and not line.startswith("#")]  # comments aside
    assert values[:4] == ["[oomnitza]", "url = https://example.oomnitza.com", "api_token =", "username = oomnitza-sa"]
    for section in ("[csv_assets]", "[csv_users]", "[json_assets]", "[json_users]"):
        assert f"{section}\nenable = False\n" in text
    assert "default_role = 25" in values and "sync_field = USER" in values


def test_generated_template_loads_once_filled(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    run_cli("generate-ini", "--ini", str(path))
    config = load_config(path)
    assert config.sections == {}  # every connector starts disabled
    assert "csv_assets" in config.disabled


def test_version(tmp_path: Path) -> None:
    result = run_cli("version")
    assert result.code == 0 and result.out.startswith("Connector version: ")


def test_unknown_mode_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli("ldap")
    assert exc.value.code == 2


def test_logging_config_missing(tmp_path: Path) -> None:
    result = run_cli("upload", "--logging-config", str(tmp_path / "nope.json"), "--ini", str(ini(tmp_path, "")))
    assert result.code == 1 and "logging config" in result.err
