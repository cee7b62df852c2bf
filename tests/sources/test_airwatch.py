"""[airwatch] end to end through the CLI against the fake Workspace ONE UEM and the fake Oomnitza."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.airwatch import DEP_GROUP, FakeAirWatch, device, ipad, windows_device
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
    "SERIAL_NUMBER": '{"source": "SerialNumber"}',
    "MODEL": "Model",
    "ASSIGNED_TO": '{"source": "UserName"}',
    "DEVICE_ID": '{"source": "Id.Value"}',
    "LOCATION": '{"source": "LocationGroupId.Name"}',
}


@pytest.fixture
def uem() -> Iterator[FakeAirWatch]:
    fake = FakeAirWatch([windows_device(), ipad(), *(device(i) for i in range(1, 4))], max_page=2)
    with serving(fake):
        yield fake


def basic_settings(uem: FakeAirWatch, **extra: str) -> dict[str, str]:
    return {
        "url": uem.url,
        "username": uem.username,
        "password": uem.password,
        "api_token": uem.tenant_code,
        "sync_field": "SERIAL_NUMBER",
        **extra,
    }


def oauth_settings(uem: FakeAirWatch, **extra: str) -> dict[str, str]:
    return {
        "url": uem.url,
        "client_id": uem.client_id,
        "client_secret": uem.client_secret,
        "token_url": f"{uem.url}/connect/token",
        "api_token": uem.tenant_code,
        "sync_field": "SERIAL_NUMBER",
        **extra,
    }


def run(
    tmp_path: Path, oomnitza: FakeOomnitza, settings: dict[str, str], mappings: dict[str, str] | None = None
) -> Any:
    return upload(
        write_config(tmp_path, oomnitza, "airwatch", settings, MAPPINGS if mappings is None else mappings), "airwatch"
    )


def test_several_pages_basic_auth(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, basic_settings(uem))
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)
    searches = uem.calls("/api/mdm/devices/search")
    # The server capped pagesize 250 to 2: pages 0, 1, 2, then Total (5) says stop (no extra 204 call).
    assert [c.query["page"] for c in searches] == ["0", "1", "2"]
    assert searches[0].query["pagesize"] == "250"
    first = searches[0].headers
    assert first["accept"] == "application/json;version=1"
    assert first["aw-tenant-code"] == uem.tenant_code
    assert first["authorization"] == "Basic " + base64.b64encode(f"{uem.username}:{uem.password}".encode()).decode()
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="5CG1234XYZ") == {
        "SERIAL_NUMBER": "5CG1234XYZ",
        "MODEL": "HP EliteBook 840 G8",
        "ASSIGNED_TO": "jdoe",
        "DEVICE_ID": 5614,
        "LOCATION": "Acme Corp",
    }
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "AirWatch"
    assert not uem.calls("/api/mdm/devices/5614/network")  # no network.* mapping, no network calls


def test_without_total_stops_on_204(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    uem.send_total = False
    result = run(tmp_path, fake_oomnitza, basic_settings(uem, url=f"{uem.url}/api/"))  # /api suffix accepted
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)
    assert [c.query["page"] for c in uem.calls("/api/mdm/devices/search")] == ["0", "1", "2", "3"]


def test_network_details_only_when_mapped_by_the_server_mapping(
    tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza
) -> None:
    fake_oomnitza.set_mapping(
        "AirWatch", {"network.WifiInfo.WifiMacAddress": "WIFI_MAC", "network.DeviceNetworkInfo.0.Vendor": "NIC_VENDOR"}
    )
    result = run(tmp_path, fake_oomnitza, basic_settings(uem))
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)
    assert len(uem.calls("/api/mdm/devices/", "GET")) - len(uem.calls("/api/mdm/devices/search")) == 5
    win = fake_oomnitza.record("assets", SERIAL_NUMBER="5CG1234XYZ")
    assert win["WIFI_MAC"] == "A4:B1:C1:22:33:45" and win["NIC_VENDOR"] == "Intel"
    # The other devices' network calls answered 404: logged, the device is still sent with network {}.
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="F9FXK2ABCD12")["WIFI_MAC"] is None
    assert "network details of device 5620 not read" in result.err


def test_dep_list_merged_by_serial(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    mappings = {**MAPPINGS, "DEP_PROFILE": "dep.profileName", "DEP_ASSIGNED": '{"source": "dep.deviceAssignedDate"}'}
    result = run(tmp_path, fake_oomnitza, basic_settings(uem, dep_uuid=DEP_GROUP), mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)
    assert len(uem.calls("/api/mdm/dep/groups/")) == 1  # fetched once for the whole run
    ipad_rec = fake_oomnitza.record("assets", SERIAL_NUMBER="F9FXK2ABCD12")
    assert ipad_rec["DEP_PROFILE"] == "Corporate ADE"
    assert ipad_rec["DEP_ASSIGNED"] == "2025-02-03T10:00:00Z"
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="5CG1234XYZ")["DEP_PROFILE"] is None


def test_dep_read_only_when_a_mapping_reads_it(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, basic_settings(uem, dep_uuid=DEP_GROUP))
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)
    assert not uem.calls("/api/mdm/dep/groups/")  # nothing maps dep.*: no call, nothing that could abort
    assert "no mapping reads dep.*" in result.err


def test_dep_requested_by_the_server_side_mapping(
    tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza
) -> None:
    fake_oomnitza.set_mapping("AirWatch", {"dep.profileName": "DEP_PROFILE"})
    result = run(tmp_path, fake_oomnitza, basic_settings(uem, dep_uuid=DEP_GROUP))
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)
    assert len(uem.calls("/api/mdm/dep/groups/")) == 1
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="F9FXK2ABCD12")["DEP_PROFILE"] == "Corporate ADE"


def test_dep_failure_aborts(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    mappings = {**MAPPINGS, "DEP_PROFILE": "dep.profileName"}
    result = run(tmp_path, fake_oomnitza, basic_settings(uem, dep_uuid="no-such-group"), mappings)
    assert_one_line_error(result, "the DEP device list of group no-such-group could not be read", "404")
    assert not uem.calls("/api/mdm/devices/search")
    assert fake_oomnitza.records("assets") == []


def test_oauth_client_credentials(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, oauth_settings(uem))
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)
    assert uem.issued == ["uem-at-0"]  # one token for the whole run
    token_call = uem.calls("/connect/token")[0]
    expected = base64.b64encode(f"{uem.client_id}:{uem.client_secret}".encode()).decode()
    assert token_call.headers["authorization"] == f"Basic {expected}"
    assert b"grant_type=client_credentials" in token_call.body
    search = uem.calls("/api/mdm/devices/search")[0]
    assert search.headers["authorization"] == "Bearer uem-at-0"
    assert search.headers["aw-tenant-code"] == uem.tenant_code


def test_oauth_bad_client_secret(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, oauth_settings(uem, client_secret="wrong-oauth-secret"))
    assert_one_line_error(
        result,
        "token service refused the OAuth client (400 invalid_client)",
        "check client_id, client_secret and region/token_url",
    )
    assert "wrong-oauth-secret" not in result.all
    assert len(uem.calls("/connect/token")) == 1
    assert not uem.calls("/api/mdm/devices/search")


def test_bad_password(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, basic_settings(uem, password="wrong-pa55word"))
    assert_one_line_error(
        result,
        "Workspace ONE UEM rejected the credentials (401 1005 ",
        "user not found : jdoe",
        "check username, password and api_token",
    )
    assert "wrong-pa55word" not in result.all
    assert len(uem.calls()) == 1  # a rejected credential is not retried


def test_bad_tenant_code_is_not_printed(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, basic_settings(uem, api_token="WrongTenantXYZ"))
    assert_one_line_error(result, "rejected the credentials (403 1013 Tenant code ")
    assert "WrongTenantXYZ" not in result.all  # the tenant code is the API key: redacted even in UEM's message
    assert len(uem.calls()) == 1


def test_429_with_retry_after(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    uem.fail(
        "GET",
        "/api/mdm/devices/search",
        429,
        headers={"Retry-After": "1"},
        body={"errorCode": 429, "message": "API request quota exceeded"},
        query={"page": "1"},
    )
    result = run(tmp_path, fake_oomnitza, basic_settings(uem))
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)
    assert [c.query["page"] for c in uem.calls("/api/mdm/devices/search")] == ["0", "1", "1", "2"]


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(uem, fault, "GET", "/api/mdm/devices/search", query={"page": "1"})
    result = run(tmp_path, fake_oomnitza, oauth_settings(uem, request_timeout=STALL_TIMEOUT))
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)
    assert len(fake_oomnitza.records("assets")) == 5
    assert len(uem.issued) == 1  # the token is reused across the retry


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_the_token_service(
    tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(uem, fault, "POST", "/connect/token")
    result = run(tmp_path, fake_oomnitza, oauth_settings(uem, request_timeout=STALL_TIMEOUT))
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)


def test_expired_token_is_renewed_once(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    uem.fail(
        "GET",
        "/api/mdm/devices/search",
        401,
        body={"errorCode": 1005, "message": "Invalid or expired token"},
        query={"page": "1"},
    )
    result = run(tmp_path, fake_oomnitza, oauth_settings(uem))
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)
    assert len(uem.issued) == 2


def test_5xx_retried(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    uem.fail("GET", "/api/mdm/devices/search", 503, times=2)
    result = run(tmp_path, fake_oomnitza, basic_settings(uem))
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=5, sent=5)


def test_empty_tenant_answers_204(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    uem.devices.clear()
    result = run(tmp_path, fake_oomnitza, basic_settings(uem))
    assert result.code == 0, result.all
    assert_accounted(result, "airwatch", pulled=0)
    assert len(uem.calls("/api/mdm/devices/search")) == 1
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    uem.fail(
        "GET", "/api/mdm/devices/search", 200, body="<html>maintenance</html>", headers={"Content-Type": "text/html"}
    )
    result = run(tmp_path, fake_oomnitza, basic_settings(uem))
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("assets") == []


def test_200_without_devices_key(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    uem.fail("GET", "/api/mdm/devices/search", 200, body={"Page": 1, "PageSize": 2}, query={"page": "1"})
    result = run(tmp_path, fake_oomnitza, basic_settings(uem))
    assert_one_line_error(result, "the device search answered without a 'Devices' list")
    assert_accounted(result, "airwatch", pulled=2, sent=2)  # the first page was already sent


def test_settings_validated(tmp_path: Path, uem: FakeAirWatch, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, {"url": uem.url, "username": "jdoe", "sync_field": "SERIAL_NUMBER"})
    assert_one_line_error(
        result,
        "set client_id and client_secret (OAuth), or username, password and api_token",
        "missing: password, api_token",
    )
    result = run(
        tmp_path, fake_oomnitza, {"url": uem.url, "client_id": "x", "client_secret": "y", "sync_field": "SERIAL_NUMBER"}
    )
    assert_one_line_error(result, "set region (na, emea, apac, uat) or token_url")
    assert not uem.requests
