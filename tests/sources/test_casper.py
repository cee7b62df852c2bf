"""[casper] (Jamf Pro) end to end through the CLI against the fake Jamf Pro and the fake Oomnitza."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oomnitza_connector.config import load_config
from oomnitza_connector.sources.casper import DeviceNotFound
from tests.fakes.jamf import FakeJamf, computer, mobile
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serving
from tests.sourcekit import (
    STALL_TIMEOUT,
    STANDARD_FAULTS,
    assert_accounted,
    assert_one_line_error,
    forget_sync_state,
    inject_fault,
    upload,
    write_config,
)

SERIAL = {"SERIAL_NUMBER": "general.serial_number"}

# The seed's mappings, written with Classic API field names.
CLASSIC = {
    "SERIAL_NUMBER": '{"source": "general.serial_number"}',
    "NAME": '{"source": "general.name"}',
    "ASSET_TAG": '{"source": "general.asset_tag"}',
    "BARCODE": '{"source": "general.barcode_1"}',
    "IP": '{"source": "general.ip_address"}',
    "MAC": '{"source": "general.mac_address"}',
    "JAMF_VERSION": '{"source": "general.jamf_version"}',
    "MANAGED": '{"source": "general.remote_management.managed"}',
    "REPORT_DATE": '{"source": "general.report_date"}',
    "REPORT_EPOCH": '{"source": "general.report_date_epoch"}',
    "REPORT_UTC": '{"source": "general.report_date_utc"}',
    "CONTACT_EPOCH": '{"source": "general.last_contact_time_epoch"}',
    "ENTRY_DATE": '{"source": "general.initial_entry_date"}',
    "RAM": '{"source": "hardware.total_ram"}',
    "RAM_MB": '{"source": "hardware.total_ram_mb"}',
    "MODEL": '{"source": "hardware.model"}',
    "OS": '{"source": "hardware.os_version"}',
    "EMAIL": '{"source": "location.email_address"}',
    "REAL_NAME": '{"source": "location.real_name"}',
    "BUILDING": '{"source": "location.building"}',
    "DEPARTMENT": '{"source": "location.department"}',
    "WARRANTY": '{"source": "purchasing.warranty_expires"}',
    "PURCHASED": '{"source": "purchasing.is_purchased"}',
    "FIRST_APP": '{"source": "software.applications.0.name"}',
    "SERIAL_MODERN": '{"source": "hardware.serialNumber"}',
    "CYCLES": '{"source": "general.id", "converter": "casper_extension_attribute:attr=Battery Cycle Count|default=0"}',
    "COST_CENTER": '{"source": "general.id", "converter": "casper_extension_attribute:attr=Cost Center"}',
    "NO_SUCH_EA": '{"source": "general.id", "converter": "casper_extension_attribute:attr=Nope|default=n/a"}',
}


@pytest.fixture
def jamf() -> Iterator[FakeJamf]:
    fake = FakeJamf(computers=[computer(i) for i in range(101, 108)], max_page=3)
    with serving(fake):
        yield fake


def settings(jamf: FakeJamf, **extra: str) -> dict[str, str]:
    return {
        "url": jamf.url,
        "client_id": jamf.client_id,
        "client_secret": jamf.client_secret,
        "sync_field": "SERIAL_NUMBER",
        **extra,
    }


def user_settings(jamf: FakeJamf, **extra: str) -> dict[str, str]:
    return {
        "url": jamf.url,
        "username": jamf.username,
        "password": jamf.password,
        "sync_field": "SERIAL_NUMBER",
        **extra,
    }


def inventory_calls(jamf: FakeJamf) -> list[Any]:
    return [c for c in jamf.calls("/api/v4/computers-inventory") if c.query.get("page-size") != "1"]


def test_several_pages_classic_mappings(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(tmp_path, fake_oomnitza, "casper", settings(jamf, page_size="5"), CLASSIC)
    result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=7, sent=7)
    pages = inventory_calls(jamf)
    assert [c.query["page"] for c in pages] == ["0", "1", "2"]  # the server serves 3 of the 5 asked for
    assert pages[0].query["page-size"] == "5" and pages[0].query["sort"] == "id:asc"
    assert jamf.sections_seen[-1] == [
        "GENERAL",
        "HARDWARE",
        "OPERATING_SYSTEM",
        "USER_AND_LOCATION",
        "PURCHASING",
        "APPLICATIONS",
        "EXTENSION_ATTRIBUTES",
        "SECURITY",
        "STORAGE",
        "GROUP_MEMBERSHIPS",
    ]
    rec = fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK0103D6T")
    assert rec is not None
    assert {k: v for k, v in rec.items() if k != "APPLICATIONS"} == {
        "SERIAL_NUMBER": "C02ZK0103D6T",
        "NAME": "FIN-MBP-0103",
        "ASSET_TAG": "OOM-000103",
        "BARCODE": "BC1-103",
        "IP": "203.0.113.103",
        "MAC": "3C:22:FB:10:00:67",
        "JAMF_VERSION": "11.8.0-t1718810000",
        "MANAGED": True,
        "REPORT_DATE": 1789372931,  # "2026-09-14 08:02:11" through the default date_format converter
        "REPORT_EPOCH": 1789372931000,
        "REPORT_UTC": "2026-09-14T08:02:11.000+0000",
        "CONTACT_EPOCH": 1789372919000,
        "ENTRY_DATE": 1706745600,  # "2024-02-01"
        "RAM": 16384,
        "RAM_MB": 16384,
        "MODEL": "MacBook Pro (14-inch, 2023)",
        "OS": "15.6",
        "EMAIL": "user103@acme.test",
        "REAL_NAME": "User 103",
        "BUILDING": "HQ",  # buildingId 1 resolved through /api/v1/buildings
        "DEPARTMENT": "Finance",
        "WARRANTY": 1799971200,  # "2027-01-15"
        "PURCHASED": True,
        "FIRST_APP": "Safari.app",
        "SERIAL_MODERN": "C02ZK0103D6T",  # the Jamf Pro API paths work too
        "CYCLES": "303",
        "COST_CENTER": "CC-100, CC-200",
        "NO_SUCH_EA": "n/a",
    }
    # APPLICATIONS ← software.applications is added for computers when not mapped.
    assert rec["APPLICATIONS"] == [
        {"name": "Safari.app", "path": "/Applications/Safari.app", "version": "18.6", "bundle_id": "com.apple.Safari"},
        {
            "name": "Slack.app",
            "path": "/Applications/Slack.app",
            "version": "4.45.64",
            "bundle_id": "com.tinyspeck.slackmacgap",
        },
    ]
    payload = fake_oomnitza.bulk_payloads[0]
    assert payload["connector_name"] == "Casper"
    assert "Casper" in [r.query.get("name") for r in fake_oomnitza.find_requests("GET", "/api/v2/mappings")]
    # The API client's token was fetched once and sent as a bearer token.
    assert len(jamf.issued) == 1
    assert pages[0].headers["authorization"] == f"Bearer {jamf.issued[0]}"
    assert jamf.calls("/api/oauth/token")[0].headers["content-type"] == "application/x-www-form-urlencoded"


def test_requested_sections_and_version_discovery(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeJamf(versions=("v1", "v3"))  # an older server: v4 is not there yet
    with serving(fake):
        ini = write_config(
            tmp_path,
            fake_oomnitza,
            "casper",
            settings(fake, url=fake.url + "/api/"),
            {"SERIAL_NUMBER": "general.serial_number"},
        )
        result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=5, sent=5)
    probes = [c.path for c in fake.requests if c.path.endswith("/computers-inventory")]
    assert probes[:2] == ["/api/v4/computers-inventory", "/api/v3/computers-inventory"]  # 404, then found
    assert set(probes[2:]) == {"/api/v3/computers-inventory"}
    # Every section the Classic names need, repeated as Jamf expects (?section=A&section=B).
    sent = fake.calls("/api/v3/computers-inventory")[-1]
    assert sent.query["section"] == "GROUP_MEMBERSHIPS"  # the last of the repeated parameters
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK0101D6T") is not None


def test_pinned_api_version_and_sections(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    mappings = {
        "SERIAL_NUMBER": "general.serial_number",
        "OS": "hardware.os_version",
        "APPLICATIONS": '{"hardcoded": []}',
    }
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "casper",
        settings(jamf, api_version="v3", sections="general, hardware, operating_system"),
        mappings,
    )
    result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=7, sent=7)
    assert not jamf.calls("/api/v4")  # no probing when the version is pinned
    assert not jamf.calls("/api/v1/buildings")  # no USER_AND_LOCATION, no name lookups
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK0107D6T") == {
        "SERIAL_NUMBER": "C02ZK0107D6T",
        "OS": "15.6",
        "APPLICATIONS": [],
    }


def test_username_password_bearer_token(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(tmp_path, fake_oomnitza, "casper", user_settings(jamf), SERIAL)
    result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=7, sent=7)
    login = jamf.calls("/api/v1/auth/token")
    assert len(login) == 1 and login[0].headers["authorization"].startswith("Basic ")
    assert not jamf.calls("/api/oauth/token")
    assert jamf.invalidated == jamf.issued  # the user token does not outlive the run
    assert jamf.password not in result.all


def test_bad_client_secret(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "casper",
        settings(jamf, client_secret="Wr0ng-Secret-777"),
        {"SERIAL_NUMBER": "general.serial_number"},
    )
    result = upload(ini, "casper")
    assert_one_line_error(result, "Jamf Pro rejected the client_id and client_secret (401 invalid_client)")
    assert "Wr0ng-Secret-777" not in result.all
    assert len(jamf.calls("/api/oauth/token")) == 1  # a rejected credential is not retried
    assert not fake_oomnitza.records("assets")


def test_bad_password(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "casper",
        user_settings(jamf, password="n0t-the-pa$$word"),
        {"SERIAL_NUMBER": "general.serial_number"},
    )
    result = upload(ini, "casper")
    assert_one_line_error(result, "Jamf Pro rejected the username and password (401): check username and password")
    assert "n0t-the-pa$$word" not in result.all
    assert len(jamf.calls("/api/v1/auth/token")) == 1
    assert_accounted(result, "casper", pulled=0)


def test_token_expires_mid_run(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeJamf(computers=[computer(i) for i in range(101, 111)], max_page=2, token_uses=3)
    with serving(fake):
        ini = write_config(tmp_path, fake_oomnitza, "casper", settings(fake), SERIAL)
        result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=10, sent=10)
    assert len(fake.issued) >= 3  # refreshed after each 401 INVALID_TOKEN, the request then resent
    assert len(fake_oomnitza.records("assets")) == 10


def test_user_token_renewed_with_keep_alive(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeJamf(token_lifetime=10)  # shorter than the renewal margin: renewed before every request
    with serving(fake):
        ini = write_config(
            tmp_path,
            fake_oomnitza,
            "casper",
            user_settings(fake, page_size="2"),
            {"SERIAL_NUMBER": "general.serial_number"},
        )
        result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=5, sent=5)
    assert len(fake.calls("/api/v1/auth/token")) == 1  # one login; the rest were keep-alives
    assert fake.keepalives >= 3
    assert fake.invalidated == [fake.issued[-1]]


def test_429_with_retry_after(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    jamf.fail(
        "GET",
        "/api/v4/computers-inventory",
        429,
        headers={"Retry-After": "1"},
        body={"httpStatus": 429, "errors": [{"code": "TOO_MANY_REQUESTS"}]},
    )
    ini = write_config(tmp_path, fake_oomnitza, "casper", settings(jamf), {"SERIAL_NUMBER": "general.serial_number"})
    result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=7, sent=7)
    assert "answered 429; retrying in 1.0s" in result.err


def test_5xx_retried(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    jamf.fail("GET", "/api/v4/computers-inventory", 503, times=2, headers={"Retry-After": "0"})
    jamf.fail("GET", "/api/v1/departments", 502)
    ini = write_config(tmp_path, fake_oomnitza, "casper", settings(jamf), CLASSIC)
    result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=7, sent=7)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK0101D6T")["DEPARTMENT"] == "Finance"


def test_empty_inventory(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    jamf.computers.clear()
    ini = write_config(tmp_path, fake_oomnitza, "casper", settings(jamf), {"SERIAL_NUMBER": "general.serial_number"})
    result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    jamf.fail(
        "GET",
        "/api/v4/computers-inventory",
        200,
        times=2,
        body="<html>Jamf Pro is starting</html>",
        headers={"Content-Type": "text/html"},
    )
    ini = write_config(tmp_path, fake_oomnitza, "casper", settings(jamf), {"SERIAL_NUMBER": "general.serial_number"})
    result = upload(ini, "casper")
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert_accounted(result, "casper", pulled=0)


def test_unexpected_json_shape(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    jamf.fail("GET", "/api/v4/computers-inventory", 200, times=2, body={"totalCount": 1, "results": [7]})
    ini = write_config(tmp_path, fake_oomnitza, "casper", settings(jamf), {"SERIAL_NUMBER": "general.serial_number"})
    result = upload(ini, "casper")
    # The probe got the odd body (harmless); the first page's entry is counted as failed, not sent.
    assert result.code == 3, result.all
    assert_accounted(result, "casper", pulled=1, sent=0)
    assert "a computer entry is int, not an object" in result.err


def test_mobile_devices(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeJamf(mobiles=[mobile(i) for i in range(55, 60)], max_page=2)
    fake_oomnitza.mappings["Casper.MDM"] = {"general.serial_number": "SERIAL_NUMBER", "general.model_display": "MODEL"}
    with serving(fake):
        mappings = {
            "NAME": "general.name",
            "UPDATED": '{"source": "general.last_inventory_update_epoch"}',
            "USER": "location.real_name",
            "EMAIL": "location.email_address",
            "BUILDING": "location.building",
            "IMEI": "network.imei",
            "PASSCODE": "security.passcode_compliant",
            "OS": "general.os_version",
            "APP": "applications.0.application_name",
            "CART": '{"source": "general.id", "converter": "casper_extension_attribute:attr=Cart"}',
        }
        ini = write_config(tmp_path, fake_oomnitza, "casper.MDM", settings(fake, sync_type="mobiledevices"), mappings)
        result = upload(ini, "casper.MDM")
    assert result.code == 0, result.all
    assert_accounted(result, "casper.MDM", pulled=5, sent=5)
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Casper.MDM"
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="DMPXK0056CD") == {
        "SERIAL_NUMBER": "DMPXK0056CD",
        "MODEL": "iPad Air (5th generation)",
        "NAME": "Ana's iPad 56",
        "UPDATED": 1789321202000,
        "USER": "Ana Silva",
        "EMAIL": "ana.silva@example.com",
        "BUILDING": "HQ",
        "IMEI": "35 123456 789012 3",
        "PASSCODE": True,
        "OS": "18.6",
        "APP": "Pages",
        "CART": "Cart 0",
    }  # no APPLICATIONS default for mobile devices
    calls = fake.calls("/api/v2/mobile-devices/detail")
    assert [c.query["page"] for c in calls] == ["0", "1", "2"]
    assert {c.query["sort"] for c in calls} == {"mobileDeviceId:asc"}
    assert not fake.calls("/api/v4")
    assert fake.mobile_details == 0  # no mapping reads a detail-only field


def test_group_name_computers(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "casper",
        settings(jamf, group_name="Finance Macs"),
        {"SERIAL_NUMBER": "general.serial_number"},
    )
    result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=2, sent=2)
    assert sorted(r["SERIAL_NUMBER"] for r in fake_oomnitza.records("assets")) == ["C02ZK0101D6T", "C02ZK0103D6T"]
    assert [c.path for c in jamf.calls("/JSSResource")] == [
        "/JSSResource/computergroups",
        "/JSSResource/computergroups/id/7",
    ]
    assert jamf.calls("/JSSResource")[0].headers["authorization"].startswith("Bearer ")
    assert [c.query["filter"] for c in inventory_calls(jamf)] == ["id=in=(101,103)"]


def test_group_name_with_slash_and_mobile(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "casper",
        settings(jamf, group_name="Design/Video"),
        {"SERIAL_NUMBER": "general.serial_number"},
    )
    result = upload(ini, "casper")
    assert_accounted(result, "casper", pulled=1, sent=1)
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "casper.MDM",
        settings(jamf, sync_type="mobiledevices", group_name="finance ipads"),
        {"SERIAL_NUMBER": "general.serial_number"},
    )
    result = upload(ini, "casper.MDM")
    assert result.code == 0, result.all
    assert_accounted(result, "casper.MDM", pulled=1, sent=1)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="DMPXK0056CD") is not None
    assert jamf.calls("/api/v2/mobile-devices/detail")[-1].query["filter"] == "mobileDeviceId=in=(56)"


def test_unknown_group(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "casper",
        settings(jamf, group_name="Marketing"),
        {"SERIAL_NUMBER": "general.serial_number"},
    )
    result = upload(ini, "casper")
    assert_one_line_error(result, "Jamf Pro has no computer group named 'Marketing': check group_name")
    assert_accounted(result, "casper", pulled=0)


def test_group_members_fetched_concurrently_within_the_cap(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeJamf(computers=[computer(i) for i in range(101, 113)], delay=0.05)
    fake.computer_groups.append({"id": 9, "name": "Everyone", "is_smart": True, "members": list(range(101, 113))})
    with serving(fake):
        ini = write_config(
            tmp_path,
            fake_oomnitza,
            "casper",
            settings(fake, group_name="Everyone", page_size="1", max_connections="3"),
            {"SERIAL_NUMBER": "general.serial_number"},
        )
        result = upload(ini, "casper", "--workers", "8")
        assert result.code == 0, result.all
        assert_accounted(result, "casper", pulled=12, sent=12)
        assert fake.max_in_flight == 3  # --workers 8, but never more than max_connections
        fake.max_in_flight = 0
        result = upload(ini, "casper", "--workers", "1", "--full")
        assert_accounted(result, "casper", pulled=12, sent=12)
        assert fake.max_in_flight == 1
    assert len([c for c in fake.calls("/api/v4/computers-inventory") if "filter" in c.query]) == 24


def test_one_failed_chunk_skips_only_its_devices(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    jamf.computer_groups.append({"id": 9, "name": "Everyone", "is_smart": True, "members": list(range(101, 108))})
    jamf.fail("GET", "/api/v4/computers-inventory", 200)  # the version probe
    jamf.fail(
        "GET",
        "/api/v4/computers-inventory",
        400,
        body={"httpStatus": 400, "errors": [{"code": "INVALID_FILTER", "description": "bad"}]},
    )
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "casper",
        settings(jamf, group_name="Everyone", page_size="3"),
        {"SERIAL_NUMBER": "general.serial_number"},
    )
    result = upload(ini, "casper", "--workers", "1")
    assert result.code == 3, result.all  # the run completed, some records failed
    counts = assert_accounted(result, "casper", pulled=7, sent=4)
    assert counts["failed_convert"] == 3
    assert "computer 101:" in result.err


def test_missing_privilege(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    jamf.fail(
        "GET",
        "/api/v4/computers-inventory",
        403,
        times=2,
        body={"httpStatus": 403, "errors": [{"code": "FORBIDDEN", "description": "Forbidden"}]},
    )
    ini = write_config(tmp_path, fake_oomnitza, "casper", settings(jamf), {"SERIAL_NUMBER": "general.serial_number"})
    result = upload(ini, "casper")
    assert_one_line_error(
        result, "Jamf Pro refused access to", "(403 FORBIDDEN): give the API role or user", "'Read Computers'"
    )
    assert_accounted(result, "casper", pulled=0)


def test_settings_are_checked(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(
        tmp_path, fake_oomnitza, "casper", {"url": jamf.url, "sync_type": "printers", "max_connections": "0"}
    )
    result = upload(ini, "casper")
    assert_one_line_error(
        result,
        "sync_type = 'printers' must be one of: computers, mobiledevices",
        "set client_id and client_secret (a Jamf Pro API client), or username and password",
        "max_connections = '0' must be a whole number from 1 to 50",
    )
    assert not jamf.requests


def test_fetch_one_matches_pages(tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza) -> None:
    """The webhook server's entry point: one device, in exactly the shape pages() yields."""
    for section, extra in (("casper", {}), ("casper.MDM", {"sync_type": "mobiledevices"})):
        ini = write_config(tmp_path, fake_oomnitza, section, settings(jamf, **extra))
        source_cls = load_config(ini).sections[section].source_cls
        assert source_cls is not None

        async def run(
            section: str = section, source_cls: Any = source_cls, ini: Path = ini
        ) -> tuple[list[Any], dict[str, Any]]:
            source = source_cls(load_config(ini).sections[section])
            try:
                listed = [r for page in [p async for p in source.pages()] for r in page]
                one = await source.fetch_one(str(listed[1]["general"]["id"]))
                with pytest.raises(DeviceNotFound):
                    await source.fetch_one("999")
                return listed, one
            finally:
                await source.aclose()

        listed, one = asyncio.run(run())
        assert json.dumps(one, sort_keys=True) == json.dumps(listed[1], sort_keys=True)
        assert one["general"]["serial_number"] == listed[1]["general"]["serial_number"]
    assert not fake_oomnitza.bulk_payloads  # fetch_one only reads


def _pages(fake: FakeJamf, path: str, **params: str) -> list[str]:
    """Every device ID a plain page-by-page walk of ``path`` returns (straight to the fake)."""
    token = httpx.post(
        f"{fake.url}/api/oauth/token",
        data={"grant_type": "client_credentials", "client_id": fake.client_id, "client_secret": fake.client_secret},
    ).json()["access_token"]
    ids: list[str] = []
    for page in range(10):
        body = httpx.get(
            f"{fake.url}{path}",
            params={"page": str(page), "page-size": "3", **params},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        ids += [r.get("mobileDeviceId", r.get("id")) for r in body["results"]]
        if (page + 1) * 3 >= body["totalCount"]:
            break
    return ids


def ipads(n: int) -> list[dict[str, Any]]:
    fleet = [mobile(i) for i in range(60, 60 + n)]
    for device in fleet:
        device["general"]["displayName"] = "iPad"  # what an unnamed fleet looks like
    return fleet


def test_mobile_paging_is_stable_with_equal_names(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeJamf(mobiles=ipads(10), max_page=3)
    with serving(fake):
        # The fake reproduces the vendor problem: by the default sort (displayName) pages overlap.
        walked = _pages(fake, "/api/v2/mobile-devices/detail")
        assert len(walked) == 10 and len(set(walked)) < 10
        assert len(set(_pages(fake, "/api/v2/mobile-devices/detail", sort="mobileDeviceId:asc"))) == 10
        ini = write_config(
            tmp_path, fake_oomnitza, "casper.MDM", settings(fake, sync_type="mobiledevices", page_size="3"), SERIAL
        )
        result = upload(ini, "casper.MDM")
    assert result.code == 0, result.all
    assert_accounted(result, "casper.MDM", pulled=10, sent=10)
    assert sorted(r["SERIAL_NUMBER"] for r in fake_oomnitza.records("assets")) == [
        f"DMPXK{i:04d}CD" for i in range(60, 70)
    ]
    assert set(fake.sorts_seen[-4:]) == {"mobileDeviceId:asc"}


def test_mobile_initial_entry_comes_from_the_per_device_detail(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeJamf(mobiles=[mobile(i) for i in range(55, 60)], max_page=2)
    fake.mobiles[1]["general"]["initialEntryTimestamp"] = None  # never recorded
    # Mapped only in Oomnitza: the merged mapping decides that the detail is needed.
    fake_oomnitza.set_mapping("Casper.MDM", {"general.initial_entry_date_utc": "ENTRY_UTC"})
    with serving(fake):
        fake.mobiles.append(mobile(99))  # listed ...
        fake.fail("GET", "/api/v2/mobile-devices/99/detail", 404, body={"httpStatus": 404, "errors": []})  # ... gone
        mappings = {
            "SERIAL_NUMBER": "general.serial_number",
            "ENTRY": "general.initial_entry_date_epoch",
            "BACKUP": "general.last_backup_time_utc",
        }
        ini = write_config(tmp_path, fake_oomnitza, "casper.MDM", settings(fake, sync_type="mobiledevices"), mappings)
        result = upload(ini, "casper.MDM")
    assert result.code == 0, result.all
    assert_accounted(result, "casper.MDM", pulled=6, sent=6)
    details = [c for c in fake.requests if c.path.endswith("/detail") and c.path != "/api/v2/mobile-devices/detail"]
    assert len(details) == 6  # one per device, only because a mapping reads those fields
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="DMPXK0055CD") == {
        "SERIAL_NUMBER": "DMPXK0055CD",
        "ENTRY": 1740729600000,  # 2025-02-28T08:00:00Z
        "ENTRY_UTC": "2025-02-28T08:00:00.000+0000",
        "BACKUP": "2026-09-12T22:00:00.000+0000",
    }
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="DMPXK0056CD")["ENTRY"] is None
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="DMPXK0099CD")["ENTRY"] is None


def test_computer_check_in_time_v4_and_v3(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    """v4 calls it general.lastCheckIn, v3 general.lastContactTime; the seed's name reads both."""
    mappings = {
        "SERIAL_NUMBER": "general.serial_number",
        "CONTACT": "general.last_contact_time",
        "CONTACT_UTC": "general.last_contact_time_utc",
        "NETBOOT": "general.netboot_server",  # seed fields Jamf Pro no longer has: null, not an error
        "SUS": "general.sus",
        "SERVICE_PACK": "hardware.service_pack",
        "OS_APPLECARE": "purchasing.os_applecare_id",
        "OS_MAINTENANCE": "purchasing.os_maintence_expires",
    }
    for version in ("v4", "v3"):
        fake_oomnitza.reset()
        forget_sync_state()  # a new Oomnitza: send everything again
        fake = FakeJamf(versions=(version,))
        with serving(fake):
            token = httpx.post(f"{fake.url}/api/v1/auth/token", auth=(fake.username, fake.password)).json()["token"]
            raw = httpx.get(
                f"{fake.url}/api/{version}/computers-inventory",
                params={"section": "GENERAL"},
                headers={"Authorization": f"Bearer {token}"},
            ).json()["results"][0]["general"]
            assert ("lastCheckIn" in raw, "lastContactTime" in raw) == (version == "v4", version == "v3")
            ini = write_config(tmp_path, fake_oomnitza, "casper", settings(fake), mappings)
            result = upload(ini, "casper")
        assert result.code == 0, result.all
        record = fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK0102D6T")
        assert {k: v for k, v in record.items() if k != "APPLICATIONS"} == {
            "SERIAL_NUMBER": "C02ZK0102D6T",
            "CONTACT": 1789372919,  # "2026-09-14 08:01:59" through the default date_format converter
            "CONTACT_UTC": "2026-09-14T08:01:59.000+0000",
            "NETBOOT": None,
            "SUS": None,
            "SERVICE_PACK": None,
            "OS_APPLECARE": None,
            "OS_MAINTENANCE": None,
        }


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(jamf, fault, "GET", "/api/v4/computers-inventory", query={"page": "1"})
    ini = write_config(tmp_path, fake_oomnitza, "casper", settings(jamf, request_timeout=STALL_TIMEOUT), SERIAL)
    result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=7, sent=7)
    assert len(fake_oomnitza.records("assets")) == 7


def test_section_mapped_only_in_oomnitza_is_requested(
    tmp_path: Path, jamf: FakeJamf, fake_oomnitza: FakeOomnitza
) -> None:
    # DISK_ENCRYPTION is not in the default list: a server-side mapping of diskEncryption.* adds it.
    fake_oomnitza.set_mapping("Casper", {"diskEncryption.individualRecoveryKeyValidityStatus": "FV_KEY"})
    ini = write_config(tmp_path, fake_oomnitza, "casper", settings(jamf), SERIAL)
    result = upload(ini, "casper")
    assert result.code == 0, result.all
    assert_accounted(result, "casper", pulled=7, sent=7)
    assert "DISK_ENCRYPTION" in jamf.sections_seen[-1]
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK0104D6T")["FV_KEY"] == "VALID"
