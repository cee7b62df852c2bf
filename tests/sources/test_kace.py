"""[kace] end to end through the CLI against the fake KACE SMA and the fake Oomnitza."""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.kace import LOGIN, FakeKace, fixture_machines, machine
from tests.fakes.oomnitza import FakeOomnitza
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
    "NAME": '{"source": "Name"}',
    "SERIAL_NUMBER": '{"source": "Bios_serial_number"}',
    "MODEL": '{"source": "Cs_model"}',
    "NOTES": '{"source": "Notes"}',
    "LAST_INVENTORY": '{"source": "Last_inventory"}',
    "LAST_SYNC": '{"source": "Last_sync"}',
    "FIRST_APP": '{"source": "software.0.name"}',
}
APPS = [
    {"name": "Google Chrome", "version": "140.0.7339.80", "path": None},
    {"name": "7-Zip 24.08 (x64)", "version": "24.08", "path": None},
]


def epoch(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


LAPTOP_RECORD = {
    "NAME": "ACC-LT-0031",
    "SERIAL_NUMBER": "7H2KXY3",
    "MODEL": "Latitude 5440",
    "NOTES": "",  # "empty" is KACE's no-value marker
    "LAST_INVENTORY": epoch("2026-09-14 06:12:45"),  # default converter: timestamp
    "LAST_SYNC": epoch("2026-09-14 07:40:02"),
    "FIRST_APP": "Google Chrome",
    "APPLICATIONS": APPS,  # default mapping: APPLICATIONS <- software
}


def fleet() -> list[dict[str, Any]]:
    return fixture_machines() + [machine(i) for i in (2, 3)]  # 5 machines


def make(**kwargs: Any) -> Iterator[FakeKace]:
    fake = FakeKace(fleet(), **kwargs)
    with serving(fake):
        yield fake


@pytest.fixture
def kace() -> Iterator[FakeKace]:
    """SMA 12.1+ (no CSRF token; version header required on every request)."""
    yield from make()


@pytest.fixture
def old_kace() -> Iterator[FakeKace]:
    """SMA 12.0 or older (CSRF token to echo, x-dell-api-version)."""
    yield from make(legacy=True)


def run(tmp_path: Path, oomnitza: FakeOomnitza, kace: FakeKace, *args: str, **extra: str) -> Any:
    settings = {
        "url": kace.url,
        "username": kace.username,
        "password": kace.password,
        "organization_name": "Default",
        "api_version": "8",
        "page_size": "2",
        "sync_field": "NAME",
        **extra,
    }
    return upload(write_config(tmp_path, oomnitza, "kace", settings, MAPPINGS), "kace", *args)


def machine_calls(kace: FakeKace) -> list[Any]:
    return kace.calls("/api/inventory/machines")


def test_modern_appliance_several_pages(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, kace)
    assert result.code == 0, result.all
    assert_accounted(result, "kace", pulled=5, sent=5)
    calls = machine_calls(kace)
    assert [c.query["paging"] for c in calls] == ["limit 2 offset 0", "limit 2 offset 2", "limit 2 offset 4"]
    assert calls[0].query["shaping"] == "machine all,software standard"
    login = kace.calls(LOGIN)
    assert len(login) == 1 and login[0].headers["x-kace-api-version"] == "8"  # on the login too (12.1+)
    assert login[0].body == b'{"userName":"oomnitza","password":"s3cret","organizationName":"Default"}'
    assert calls[0].headers["x-kace-api-version"] == "8"
    assert calls[0].headers["accept"] == "application/json"
    assert "kboxid=" in calls[0].headers["cookie"]
    assert "x-dell-csrf-token" not in calls[0].headers
    assert fake_oomnitza.record("assets", NAME="ACC-LT-0031") == LAPTOP_RECORD
    desktop = fake_oomnitza.record("assets", NAME="ACC-DT-0007")
    # "0000-00-00 00:00:00" -> "" (then nothing for the timestamp converter to parse); no software -> []
    assert (desktop["LAST_INVENTORY"], desktop["LAST_SYNC"], desktop["APPLICATIONS"]) == (
        "",
        epoch("2026-09-10 12:00:00"),
        [],
    )
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "KACE"
    assert kace.logouts == 1  # the session is closed at the end
    assert kace.password not in result.all


def test_old_appliance_csrf_token_echoed(tmp_path: Path, old_kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, old_kace, url=f"{old_kace.url}/api/")  # with the API prefix too
    assert result.code == 0, result.all
    assert_accounted(result, "kace", pulled=5, sent=5)
    session = next(iter(old_kace.sessions.values()), None)
    assert session is None  # logged out
    calls = machine_calls(old_kace)
    assert len(calls) == 3
    assert all(c.headers["x-dell-api-version"] == "8" for c in calls)
    assert len({c.headers["x-dell-csrf-token"] for c in calls}) == 1  # the login's token, echoed
    assert fake_oomnitza.record("assets", NAME="ACC-LT-0031") == LAPTOP_RECORD


def test_api_version_setting(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, kace, api_version="14")
    assert_accounted(result, "kace", pulled=5, sent=5)
    assert all(c.headers["x-kace-api-version"] == "14" for c in kace.requests)


def test_bad_password(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, kace, password="Wr0ngPassw0rd")
    assert_one_line_error(
        result,
        "KACE rejected the login (401 Invalid user name or password)",
        "check username, password and organization_name",
    )
    assert "Wr0ngPassw0rd" not in result.all
    assert len(kace.calls()) == 1  # not retried
    assert all(p["error"] for p in fake_oomnitza.bulk_payloads)  # only the failure report


def test_wrong_organization(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, kace, organization_name="Finance")
    assert_one_line_error(result, "KACE rejected the login (401")
    assert b'"organizationName":"Finance"' in kace.calls(LOGIN)[0].body


def test_session_expiry_logs_in_again(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    kace.expire_after = 1  # each session serves one page
    result = run(tmp_path, fake_oomnitza, kace)
    assert result.code == 0, result.all
    assert_accounted(result, "kace", pulled=5, sent=5)
    assert kace.logins == 3
    assert [c.query["paging"] for c in machine_calls(kace)] == [
        "limit 2 offset 0",
        "limit 2 offset 2",
        "limit 2 offset 2",
        "limit 2 offset 4",
        "limit 2 offset 4",
    ]


def test_two_factor_account(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    kace.two_factor = True
    result = run(tmp_path, fake_oomnitza, kace)
    assert_one_line_error(
        result, "KACE refused access after logging in again (401 Two factor authentication", "without 2FA"
    )
    assert kace.logins == 2  # one re-login, then give up
    assert len(machine_calls(kace)) == 2


def test_429_with_retry_after(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    kace.fail(
        "GET",
        "/api/inventory/machines",
        429,
        headers={"Retry-After": "1"},
        body={"error": "Too many"},
        query={"paging": "limit 2 offset 2"},
    )
    started = time.monotonic()
    result = run(tmp_path, fake_oomnitza, kace)
    assert result.code == 0, result.all
    assert_accounted(result, "kace", pulled=5, sent=5)
    assert time.monotonic() - started >= 1.0
    assert len(machine_calls(kace)) == 4


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(kace, fault, "GET", "/api/inventory/machines", query={"paging": "limit 2 offset 2"})
    result = run(tmp_path, fake_oomnitza, kace, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "kace", pulled=5, sent=5)
    assert len(fake_oomnitza.records("assets")) == 5
    assert kace.logins == 1 and kace.logouts == 1


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_the_login(
    tmp_path: Path, old_kace: FakeKace, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(old_kace, fault, "POST", LOGIN)
    result = run(tmp_path, fake_oomnitza, old_kace, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "kace", pulled=5, sent=5)


def test_5xx_retried(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    kace.fail("GET", "/api/inventory/machines", 503, times=2)
    kace.fail("POST", LOGIN, 502)
    result = run(tmp_path, fake_oomnitza, kace)
    assert result.code == 0, result.all
    assert_accounted(result, "kace", pulled=5, sent=5)
    assert kace.logins == 1


def test_empty_inventory(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    kace.machines.clear()
    result = run(tmp_path, fake_oomnitza, kace)
    assert result.code == 0, result.all
    assert_accounted(result, "kace", pulled=0)
    assert len(machine_calls(kace)) == 1
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    kace.fail(
        "GET",
        "/api/inventory/machines",
        200,
        body="<html>KACE is restarting</html>",
        headers={"Content-Type": "text/html"},
    )
    result = run(tmp_path, fake_oomnitza, kace)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")


def test_capped_pages_and_count(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    for fake in make(max_page=2):
        result = run(tmp_path, fake_oomnitza, fake, page_size="100")
        assert_accounted(result, "kace", pulled=5, sent=5)
        # the appliance sent 2 of the 100 asked: offsets count what arrived; Count ends the listing
        assert [c.query["paging"] for c in machine_calls(fake)] == [
            "limit 100 offset 0",
            "limit 100 offset 2",
            "limit 100 offset 4",
        ]


def test_timezone_setting(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, kace, timezone="America/Chicago")
    assert_accounted(result, "kace", pulled=5, sent=5)
    laptop = fake_oomnitza.record("assets", NAME="ACC-LT-0031")
    assert laptop["LAST_INVENTORY"] == epoch("2026-09-14 06:12:45") + 5 * 3600  # CDT is UTC-5


def test_record_count_stops_early_and_logs_out(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, kace, "--record-count", "2")
    assert result.code == 0, result.all
    assert_accounted(result, "kace", pulled=2, sent=2)
    assert len(machine_calls(kace)) < 3  # the pipeline may read one page ahead, not the whole inventory
    assert kace.logouts == 1


def test_config_errors(tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, kace, timezone="Mars/Olympus")
    assert_one_line_error(result, "timezone 'Mars/Olympus' is not a known time zone")
    result = run(tmp_path, fake_oomnitza, kace, url="kace.example.com")
    assert_one_line_error(result, "url = 'kace.example.com' must start with https:// or http://")
    assert not kace.requests


def test_machine_without_software_and_a_broken_entry(
    tmp_path: Path, kace: FakeKace, fake_oomnitza: FakeOomnitza
) -> None:
    del kace.machines[2]["Software"]  # e.g. another shaping: the old connector crashed here
    kace.machines.append("not a machine")  # type: ignore[arg-type]
    result = run(tmp_path, fake_oomnitza, kace)
    counts = assert_accounted(result, "kace", pulled=6, sent=5)
    assert counts["failed_convert"] + counts["failed_send"] + counts["missing_required"] == 1
    assert fake_oomnitza.record("assets", NAME="ACC-VM-0001")["APPLICATIONS"] == []
    nested = fake_oomnitza.record("assets", NAME="ACC-LT-0031")
    assert nested == LAPTOP_RECORD
