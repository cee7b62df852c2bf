"""[simplemdm] end to end through the CLI against the fake SimpleMDM API and the fake Oomnitza."""

from __future__ import annotations

import base64
import calendar
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serving
from tests.fakes.simplemdm import CHROME, SLACK, FakeSimpleMDM, iphone, mac
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
    "SERIAL_NUMBER": '{"source": "serial_number"}',
    "NAME": "name",
    "DEVICE_ID": '{"source": "id"}',
    "LAST_SEEN": '{"source": "last_seen_at"}',
    "ETHERNET_MAC": '{"source": "ethernet_macs.0"}',
    "FV_KEY": '{"source": "filevault_recovery_key"}',
}


def apps(*items: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": a["attributes"]["name"], "version": a["attributes"]["short_version"], "path": None} for a in items]


def epoch(text: str) -> int:
    stamp, offset = text[:19], text[-6:]
    sign = 1 if offset[0] == "+" else -1
    shift = sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) - shift


@pytest.fixture
def smdm() -> Iterator[FakeSimpleMDM]:
    fake = FakeSimpleMDM(
        [iphone(121, group=1), mac(122, group=2), mac(130, group=None), iphone(131, group=3)], max_page=2
    )
    fake.apps[130] = []
    with serving(fake):
        yield fake


def run(
    tmp_path: Path, oomnitza: FakeOomnitza, smdm: FakeSimpleMDM, mappings: dict[str, str] | None = None, **extra: str
) -> Any:
    settings = {"secret_access_key": smdm.api_key, "url": f"{smdm.url}/api/v1", "sync_field": "SERIAL_NUMBER", **extra}
    return upload(
        write_config(tmp_path, oomnitza, "simplemdm", settings, MAPPINGS if mappings is None else mappings), "simplemdm"
    )


def test_several_pages_apps_and_defaults(tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, smdm)
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=4, sent=4)
    lists = smdm.calls("/api/v1/devices", "GET")
    device_pages = [c for c in lists if c.path == "/api/v1/devices"]
    assert [c.query.get("starting_after") for c in device_pages] == [None, "122"]
    assert device_pages[0].query["limit"] == "100"
    key = base64.b64encode(f"{smdm.api_key}:".encode()).decode()
    assert device_pages[0].headers["authorization"] == f"Basic {key}"  # key as user name, empty password
    # Installed apps for computers only, cursor-paged (3 apps, server pages of 2).
    app_calls = [c for c in lists if c.path.endswith("/installed_apps")]
    assert sorted((c.path, c.query.get("starting_after", "")) for c in app_calls) == [
        ("/api/v1/devices/122/installed_apps", ""),
        ("/api/v1/devices/122/installed_apps", "9002"),
        ("/api/v1/devices/130/installed_apps", ""),
    ]
    mbp = fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK1ABM122")
    assert mbp == {
        "SERIAL_NUMBER": "C02ZK1ABM122",
        "NAME": "Design-MBP-122",
        "DEVICE_ID": 122,
        "LAST_SEEN": epoch("2026-09-14T07:55:20-07:00"),
        "ETHERNET_MAC": "3c:22:fb:10:aa:02",
        "FV_KEY": None,  # secret attributes are dropped from the record
        "APPLICATIONS": apps(SLACK, CHROME, smdm.apps[122][2]),
    }
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="DNFJE9DNG121")["APPLICATIONS"] == []
    assert "ABCD-EFGH-IJKL-MNOP" not in str(fake_oomnitza.records("assets"))
    assert not smdm.calls("/api/v1/devices/121/")  # no per-device call for a phone
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "SimpleMDM"


def test_device_types(tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, smdm, device_types="Computers")
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=2, sent=2)
    assert {r["SERIAL_NUMBER"] for r in fake_oomnitza.records("assets")} == {"C02ZK1ABM122", "C02ZK1ABM130"}


def test_device_groups_and_devices_without_group(
    tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, smdm, device_groups="1, 3", device_types="bogus")  # bogus → both
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=2, sent=2)  # mac 130 has no device_group: skipped, no crash
    assert {r["SERIAL_NUMBER"] for r in fake_oomnitza.records("assets")} == {"DNFJE9DNG121", "DNFJE9DNG131"}


def custom_calls(smdm: FakeSimpleMDM) -> list[Any]:
    return [c for c in smdm.requests if c.path.endswith("/custom_attribute_values")]


def test_custom_attributes_from_the_device_list(
    tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza
) -> None:
    mappings = {
        **MAPPINGS,
        "OWNER": '{"source": "custom_attributes.asset_owner"}',
        "COST_CENTER": '{"source": "custom_attributes.cost center"}',
    }
    result = run(tmp_path, fake_oomnitza, smdm, mappings, custom_attributes="True")
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=4, sent=4)
    mbp = fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK1ABM122")
    assert (mbp["OWNER"], mbp["COST_CENTER"]) == ("design-team", "CC-42")
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="DNFJE9DNG121")["OWNER"] is None
    assert not custom_calls(smdm)  # the list already carries the values: no call per device


def test_custom_attributes_per_device_when_the_list_lacks_them(
    tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza
) -> None:
    smdm.inline_custom = False
    mappings = {
        **MAPPINGS,
        "OWNER": '{"source": "custom_attributes.asset_owner"}',
        "PIN": "custom_attributes.admin_pin",
    }
    result = run(tmp_path, fake_oomnitza, smdm, mappings, custom_attributes="True")
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=4, sent=4)
    mbp = fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK1ABM122")
    assert mbp["OWNER"] == "design-team"
    assert mbp["PIN"] is None  # a secret value is never kept
    assert len(custom_calls(smdm)) == 4


def test_server_side_mapping_decides_the_extra_calls(
    tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza
) -> None:
    smdm.inline_custom = False
    # The INI turns APPLICATIONS off and custom_attributes is off; only Oomnitza's mapping reads them.
    fake_oomnitza.set_mapping("SimpleMDM", {"software": "SOFTWARE", "custom_attributes.asset_owner": "OWNER"})
    result = run(tmp_path, fake_oomnitza, smdm, {**MAPPINGS, "APPLICATIONS": '{"hardcoded": []}'})
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=4, sent=4)
    mbp = fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK1ABM122")
    assert mbp["OWNER"] == "design-team"
    assert [a["name"] for a in mbp["SOFTWARE"]] == ["Slack", "Google Chrome", "Xcode"]
    assert [c for c in smdm.requests if c.path.endswith("/installed_apps")]
    assert len(custom_calls(smdm)) == 4


def test_no_app_calls_when_applications_unmapped(
    tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, smdm, {**MAPPINGS, "APPLICATIONS": '{"hardcoded": []}'})
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=4, sent=4)
    assert not [c for c in smdm.requests if c.path.endswith("/installed_apps")]


def test_bad_api_key(tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, smdm, secret_access_key="WrongKey0000000000")
    assert_one_line_error(result, "SimpleMDM rejected the API key (401): check secret_access_key")
    assert "WrongKey0000000000" not in result.all
    assert len(smdm.requests) == 1


def test_429_with_retry_after(tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza) -> None:
    smdm.fail(
        "GET",
        "/api/v1/devices/122/installed_apps",
        429,
        headers={"Retry-After": "1"},
        body={"errors": [{"title": "too many requests"}]},
    )
    smdm.fail("GET", "/api/v1/devices", 429, headers={"Retry-After": "1"}, query={"starting_after": "122"})
    result = run(tmp_path, fake_oomnitza, smdm)
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=4, sent=4)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK1ABM122")["APPLICATIONS"][0]["name"] == "Slack"


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(smdm, fault, "GET", "/api/v1/devices", query={"starting_after": "122"})
    result = run(tmp_path, fake_oomnitza, smdm, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=4, sent=4)
    assert len(fake_oomnitza.records("assets")) == 4


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_detail_call(
    tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(smdm, fault, "GET", "/api/v1/devices/122/installed_apps")
    result = run(tmp_path, fake_oomnitza, smdm, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=4, sent=4)
    assert len(fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK1ABM122")["APPLICATIONS"]) == 3


def test_5xx_retried(tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza) -> None:
    smdm.fail("GET", "/api/v1/devices", 500, times=2)
    result = run(tmp_path, fake_oomnitza, smdm)
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=4, sent=4)


def test_empty_account(tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza) -> None:
    smdm.devices.clear()
    result = run(tmp_path, fake_oomnitza, smdm, url=smdm.url)  # url without /api/v1
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza) -> None:
    smdm.fail("GET", "/api/v1/devices", 200, body="<html>502 Bad Gateway</html>", headers={"Content-Type": "text/html"})
    result = run(tmp_path, fake_oomnitza, smdm)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("assets") == []


def test_has_more_with_empty_data_stops(tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza) -> None:
    smdm.fail("GET", "/api/v1/devices", 200, body={"data": [], "has_more": True}, query={"starting_after": "122"})
    result = run(tmp_path, fake_oomnitza, smdm)
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=2, sent=2)
    assert "has_more with no object to continue after" in result.err


def test_device_deleted_between_list_and_details(
    tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza
) -> None:
    smdm.inline_custom = False
    smdm.fail("GET", "/api/v1/devices/122/", 404, times=2, body={"errors": [{"title": "object not found"}]})
    result = run(tmp_path, fake_oomnitza, smdm, custom_attributes="yes")
    assert result.code == 0, result.all
    assert_accounted(result, "simplemdm", pulled=4, sent=4)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="C02ZK1ABM122")["APPLICATIONS"] == []


def test_settings_validated(tmp_path: Path, smdm: FakeSimpleMDM, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, smdm, device_groups="1,two")
    assert_one_line_error(result, "device_groups must be numeric group IDs")
    result = run(tmp_path, fake_oomnitza, smdm, secret_access_key="")
    assert_one_line_error(result, "secret_access_key is required")
    assert not smdm.requests
