"""[open_audit] end to end through the CLI against the fake Open-AudIT and the fake Oomnitza."""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.open_audit import API, WKS, FakeOpenAudit, device
from tests.fakes.server import serving
from tests.sourcekit import (
    STALL_TIMEOUT,
    STANDARD_FAULTS,
    assert_accounted,
    assert_one_line_error,
    inject_fault,
    upload,
    write_config,
)

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
    "MAC": "b0:7b:25:aa:bb:cc",  # the card whose MAC carries 192.168.1.42 in the ip table
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
    with serving(fake):
        yield fake


@pytest.fixture
def audit() -> Iterator[FakeOpenAudit]:
    yield from make()


@pytest.fixture
def legacy_audit() -> Iterator[FakeOpenAudit]:
    yield from make(legacy=True)


def run(
    tmp_path: Path, oomnitza: FakeOomnitza, audit: FakeOpenAudit, mappings: dict[str, str] | None = None, **extra: str
) -> Any:
    settings = {"url": audit.url, "username": audit.username, "password": audit.password, "sync_field": "NAME", **extra}
    return upload(write_config(tmp_path, oomnitza, "open_audit", settings, mappings or MAPPINGS), "open_audit")


def detail_calls(audit: FakeOpenAudit) -> list[Any]:
    return audit.calls(f"{API}/devices/")


def test_modern_server_several_pages(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    lists = audit.calls(f"{API}/devices", "GET")
    lists = [c for c in lists if c.path == f"{API}/devices"]
    assert [c.query for c in lists] == [{"limit": "1000", "offset": str(o)} for o in (0, 2, 4)]  # capped at 2
    details = detail_calls(audit)
    # 5.x takes one table per include=; the MAC needs network + ip, APPLICATIONS needs software.
    assert sorted(c.query["include"] for c in details) == ["ip"] * 5 + ["network"] * 5 + ["software"] * 5
    assert audit.all_tables_served == 0  # never the ~70 KB "every table" answer
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
        "ip",
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
    assert_one_line_error(result, "ignored include=network; set api_style = sub_resource")


def test_bad_password(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, audit, password="Wr0ng-Passw0rd")
    assert_one_line_error(
        result, "[open_audit] Open-AudIT rejected the login (401 Credentials required): check username and password"
    )
    assert "Wr0ng-Passw0rd" not in result.all
    assert len(audit.calls(f"{API}/logon")) == 1  # not retried
    assert fake_oomnitza.records("assets") == []


def test_session_expiry_logs_in_again(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    audit.expire_after = 3  # then 5.x waits and redirects to /logon, JSON requests included
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    assert audit.logins >= 2
    assert not audit.calls(f"{API}/logon", "GET")  # the redirect is never followed as data
    assert fake_oomnitza.record("assets", NAME="WKS-0042") == WKS_RECORD


def test_a_session_that_will_not_stick_is_one_clear_line(
    tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    audit.expire_after = 0  # every session dies at once (a proxy dropping the cookie)
    result = run(tmp_path, fake_oomnitza, audit)
    assert_one_line_error(result, "again right after logging in", "the session is not kept")
    assert audit.logins == 2  # logged in again once, not in a loop
    assert not audit.calls(f"{API}/logon", "GET")


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


def test_vanished_or_forbidden_device_is_skipped(
    tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    audit.vanish.add(24)  # deleted after the list: 5.x answers 200 with errors and meta.header 403
    audit.forbidden.add(26)  # another organisation's device that the list still showed
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=3, sent=3)
    assert "device 24 was listed but may not be read (User permission denied" in result.err
    assert "device 26 was listed but may not be read" in result.err
    assert fake_oomnitza.record("assets", NAME="SRV-0024") is None
    assert fake_oomnitza.record("assets", NAME="WKS-0042") == WKS_RECORD  # the style was not switched


def test_legacy_device_vanished(tmp_path: Path, legacy_audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    legacy_audit.vanish.add(24)  # older servers answer 404
    result = run(tmp_path, fake_oomnitza, legacy_audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=4, sent=4)
    assert "device 24 disappeared between the list and its details; skipped" in result.err


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


def test_fake_include_takes_one_table(audit: FakeOpenAudit) -> None:
    """The fake answers include= like 5.6.5's response_get_include: a comma list is invalid and
    gets every table; one name gets that table (when it has rows) and the blank rack row."""
    with httpx.Client(base_url=f"{audit.url}{API}", follow_redirects=False) as client:
        assert client.get("/devices").status_code == 302  # no session: off to /logon
        logon = client.post("/logon", data={"username": audit.username, "password": audit.password})
        assert logon.headers["content-type"].startswith("text/html") and logon.json()["name"] == "admin"
        both = client.get("/devices/17", params={"include": "network,software"}).json()["included"]
        assert {"network", "software", "ip", "bios", "disk"} <= set(both)
        one = client.get("/devices/17", params={"include": "software"}).json()["included"]
        assert set(one) == {"software", "rack_devices"}
        none = client.get("/devices/23", params={"include": "network"}).json()["included"]
        assert set(none) == {"rack_devices"}  # no network rows: no "network" key at all
        ignored = client.get("/devices/17", params={"sub_resource": "network"}).json()
        assert ignored["data"][0]["type"] == "devices"
    assert audit.all_tables_served == 2


def test_only_the_tables_the_mapping_needs(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    mappings = {"NAME": "hardware.name", "APPLICATIONS": '{"source": "", "hardcoded": []}'}
    result = run(tmp_path, fake_oomnitza, audit, mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    assert [c.query for c in detail_calls(audit)] == [{"include": "network"}] * 5  # one table, never all
    assert audit.all_tables_served == 0


def test_field_mapped_only_in_oomnitza_is_requested(
    tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    fake_oomnitza.set_mapping("Open_Audit", {"hardware.mac_vendor": "MAC_VENDOR"})
    mappings = {"NAME": "hardware.name", "APPLICATIONS": '{"source": "", "hardcoded": []}'}
    result = run(tmp_path, fake_oomnitza, audit, mappings)
    assert result.code == 0, result.all
    assert sorted({c.query["include"] for c in detail_calls(audit)}) == ["ip", "network"]
    assert fake_oomnitza.record("assets", NAME="WKS-0042") == {
        "NAME": "WKS-0042",
        "APPLICATIONS": [],
        "MAC_VENDOR": "Intel Corporate",
    }


def test_empty_included_array_means_no_components(
    tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    body = {"meta": {"header": 200}, "data": [{"id": 17, "type": "devices", "attributes": dict(WKS)}], "included": []}
    audit.fail("GET", f"{API}/devices/17", 200, body=body, times=3)  # PHP's empty array: [] not {}
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    wks = fake_oomnitza.record("assets", NAME="WKS-0042")
    assert (wks["MAC"], wks["MAC_VENDOR"], wks["APPLICATIONS"]) == ("", "", [])
    assert "sub_resource" not in result.err and not any("sub_resource" in c.query for c in detail_calls(audit))


def test_mac_without_an_ip_match_is_the_first_physical_card(
    tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    audit.tables["ip"][17] = []  # no address rows: fall back to the first card that is not virtual
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert fake_oomnitza.record("assets", NAME="WKS-0042")["MAC"] == "f4:8c:50:11:22:33"


def test_total_that_overcounts_ends_at_an_empty_page(
    tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    audit.hidden = 3  # meta.total counts devices of organisation 1 the user cannot see
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    lists = [c for c in audit.calls(f"{API}/devices") if c.path == f"{API}/devices"]
    assert [c.query["offset"] for c in lists] == ["0", "2", "4", "5"]  # the last one answers "data": false


def test_user_without_device_permission(tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza) -> None:
    audit.may_list = False  # HTTP 200, no data, meta.header 403
    result = run(tmp_path, fake_oomnitza, audit)
    assert_one_line_error(
        result, "Open-AudIT refused to list devices (User Administrator", "give the user a role that may read devices"
    )
    assert fake_oomnitza.records("assets") == []


def test_sub_resource_on_a_5x_server_is_refused(
    tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, audit, api_style="sub_resource")
    assert_one_line_error(result, "answered sub_resource=network with the device itself", "set api_style = include")
    assert fake_oomnitza.records("assets") == []


def test_generation_4_flat_included_list(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    audit = FakeOpenAudit(fleet(), max_page=2, generation="4")  # included: one flat list of typed rows
    with serving(audit):
        result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    assert fake_oomnitza.record("assets", NAME="WKS-0042") == WKS_RECORD


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
@pytest.mark.parametrize("where", ["list", "detail"])
def test_transient_faults(
    tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza, fault: str, where: str
) -> None:
    if where == "list":
        inject_fault(audit, fault, "GET", f"{API}/devices", query={"offset": "2"})
    else:
        inject_fault(audit, fault, "GET", f"{API}/devices/24", query={"include": "software"})
    result = run(tmp_path, fake_oomnitza, audit, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "open_audit", pulled=5, sent=5)
    assert fake_oomnitza.record("assets", NAME="WKS-0042") == WKS_RECORD


def test_an_odd_answer_mid_run_does_not_switch_the_api_style(
    tmp_path: Path, audit: FakeOpenAudit, fake_oomnitza: FakeOomnitza
) -> None:
    # After the first device proved include= works, a device answered without "included" (a
    # proxy's cached page, say) fails alone; the run stays on include= (never sub_resource on 5.x).
    body = {"meta": {"header": 200}, "data": [{"id": 25, "type": "devices", "attributes": device(25)}]}
    audit.fail("GET", f"{API}/devices/25", 200, body=body)
    result = run(tmp_path, fake_oomnitza, audit)
    assert result.code == 3, result.all
    counts = assert_accounted(result, "open_audit", pulled=5, sent=4)
    assert counts["failed_convert"] == 1
    assert "device 25: Open-AudIT answered include=network without 'included'" in result.err
    assert not any("sub_resource" in c.query for c in detail_calls(audit))
