"""[open_audit] end to end through the CLI against the fake Open-AudIT and the fake Oomnitza."""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.open_audit import API, WKS, FakeOpenAudit, device
from tests.fakes.server import serve
from tests.sourcekit import assert_accounted, assert_one_line_error, upload, write_config

MAPPINGS = {
    "NAME": "hardware.name",
    "SERIAL_NUMBER": '{"source": "hardware.serial"}',
    "MODEL": '{"source": "hardware.model"}',
    "MAC": '{"source": "hardware.mac"}',
    "MAC_VENDOR": '{"source": "hardware.mac_vendor"}',
    "WARRANTY": '{"source": "hardware.warranty_expires"}',
    "END_OF_LIFE": '{"source": "hardware.end_of_life"}',
    "LAST_SEEN": '{"source": "hardware.last_seen"}',
    "OS_BIT": '{"source": "hardware.os_bit"}',
}
SEVEN_ZIP = {
    "name": "7-Zip 23.01 (x64)",
    "version": "23.01",
    "publisher": "Igor Pavlov",
    "path": "C:\\Program Files\\7-Zip\\",
}


def epoch(text: str) -> int:
    fmt = "%Y-%m-%d %H:%M:%S" if " " in text else "%Y-%m-%d"
    import time

    return calendar.timegm(time.strptime(text, fmt))


WKS_RECORD = {
    "NAME": "WKS-0042",
    "SERIAL_NUMBER": "7XK2P93",
    "MODEL": "Latitude 7440",
    "MAC": "b0:7b:25:aa:bb:cc",  # the physical card, not the VMware virtual adapter listed first
    "MAC_VENDOR": "Intel Corporate",
    "WARRANTY": epoch("2028-03-01"),
    "END_OF_LIFE": None,  # 2000-01-01 means "unknown" in Open-AudIT
    "LAST_SEEN": epoch("2026-11-25 23:02:10"),
    "OS_BIT": 64,
    "APPLICATIONS": [SEVEN_ZIP],  # the nameless software row is dropped
}


def fleet() -> list[dict[str, Any]]:
    return [dict(WKS)] + [device(i) for i in (23, 24, 25, 26)]


def make(**kwargs: Any) -> Iterator[FakeOpenAudit]:
    fake = FakeOpenAudit(fleet(), max_page=2, **kwargs)
    with serve(fake.app) as url:
        fake.url = url
        yield fake


@pytest.fixture
def audit() -> Iterator[FakeOpenAudit]:
    yield from make()


@pytest.fixture
def legacy_audit() -> Iterator[FakeOpenAudit]:
    yield from make(legacy=True)


def run(tmp_path: Path, oomnitza: FakeOomnitza, audit: FakeOpenAudit, **extra: str) -> Any:
    settings = {"url": audit.url, "username": audit.username, "password": audit.password, "sync_field": "NAME", **extra}
    return upload(write_config(tmp_path, oomnitza, "open_audit", settings, MAPPINGS), "open_audit")


def test_modern_server_several_pages(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    lists = audit.calls(f"{API}/devices", "GET")
    lists = [c for c in lists if c.path == f"{API}/devices"]
    assert [c.query for c in lists] == [{"limit": "1000", "offset": str(o)} for o in (0, 2, 4)]  # capped at 2
    details = [c for c in audit.calls(f"{API}/devices/")]
    assert len(details) == 5 and all(c.query == {"include": "network,software"} for c in details)
    logon = audit.calls(f"{API}/logon")
    assert len(logon) == 1 and logon[0].body == b"username=admin&password=s3cret%21"
    assert "ci_session=" in details[0].headers["cookie"]
    assert fake_oomnitza.record("assets", NAME="WKS-0042") == WKS_RECORD
    srv = fake_oomnitza.record("assets", NAME="SRV-0023")
    assert (srv["MAC"], srv["MAC_VENDOR"], srv["WARRANTY"], srv["APPLICATIONS"]) == ("", "", None, [])
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Open_Audit"
    assert "unencrypted" in result.err  # http:// url warned about
    assert audit.password not in result.all


def test_legacy_server_phpsessid_and_sub_resource(
    tmp_path: Path, legacy_audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    url = f"{legacy_audit.url}/open-audit/index.php/"  # with the API prefix works too
    result = run(tmp_path, fake_oomnitza, legacy_audit, url=url)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    details = legacy_audit.calls(f"{API}/devices/")
    assert sorted(c.query.get("sub_resource", "") for c in details if c.path.endswith("/17")) == [
        "",
        "network",
        "software",
    ]
    assert not any("include" in c.query for c in details)
    assert "PHPSESSID=" in details[0].headers["cookie"]
    assert fake_oomnitza.record("assets", NAME="WKS-0042") == WKS_RECORD


def test_auto_falls_back_when_include_is_ignored(
    tmp_path: Path, legacy_audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    legacy_audit.cookie_name = "ci_session"  # an old API behind a new cookie name: detected by the answer
    result = run(tmp_path, fake_oomnitza, legacy_audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    assert result.err.count("does not answer include=") == 1
    tried = {c.path for c in legacy_audit.calls(f"{API}/devices/") if "include" in c.query}
    assert tried <= {f"{API}/devices/17", f"{API}/devices/23"}  # only within the first page
    assert fake_oomnitza.record("assets", NAME="WKS-0042") == WKS_RECORD


def test_forced_include_on_an_old_server_is_one_clear_line(
    tmp_path: Path, legacy_audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, legacy_audit, api_style="include")
    assert_one_line_error(result, "ignored include=network,software; set api_style = sub_resource")


def test_bad_password(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    audit.bad_password_delay = 0.2
    result = run(tmp_path, fake_oomnitza, audit, password="Wr0ng-Passw0rd")
    assert_one_line_error(
        result, "[open_audit] Open-AudIT rejected the login (401 Credentials required): check username and password"
    )
    assert "Wr0ng-Passw0rd" not in result.all
    assert len(audit.calls(f"{API}/logon")) == 1  # not retried
    assert fake_oomnitza.records("assets") == []


def test_session_expiry_logs_in_again(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    audit.expire_after = 3
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    assert audit.logins >= 2
    assert fake_oomnitza.record("assets", NAME="WKS-0042") == WKS_RECORD


def test_429_on_list_and_5xx_on_detail(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    audit.fail("GET", f"{API}/devices", 429, headers={"Retry-After": "1"})
    audit.fail("GET", f"{API}/devices/17", 503)
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    assert fake_oomnitza.record("assets", NAME="WKS-0042") == WKS_RECORD


def test_empty(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    audit.devices.clear()
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=0)
    assert len(audit.calls(f"{API}/devices")) == 1
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_list(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    audit.fail("GET", f"{API}/devices", 200, body="<html>PHP Fatal error</html>", headers={"Content-Type": "text/html"})
    result = run(tmp_path, fake_oomnitza, audit)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("assets") == []


def test_device_vanished_between_list_and_detail(
    tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    audit.vanish.add(24)
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=4, sent=4)
    assert "device 24 disappeared between the list and its details; skipped" in result.err
    assert fake_oomnitza.record("assets", NAME="SRV-0024") is None


def test_applications_can_be_switched_off(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    settings = {"url": audit.url, "username": audit.username, "password": audit.password, "sync_field": "NAME"}
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "open_audit",
        settings,
        {
            "NAME": "hardware.name",
            "APPLICATIONS": '{"source": "", "hardcoded": []}',
            "FIRST_SEEN": '{"source": "hardware.first_seen", "converter": "date_format"}',
        },
    )
    result = upload(ini, "open_audit")
    assert result.code == 0, result.all
    assert fake_oomnitza.record("assets", NAME="WKS-0042") == {
        "NAME": "WKS-0042",
        "APPLICATIONS": [],
        "FIRST_SEEN": epoch("2025-03-15 08:12:44"),
    }
