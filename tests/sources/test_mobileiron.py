"""[mobileiron] end to end through the CLI against the fake Ivanti MobileIron (Cloud v1 and Core v2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.mobileiron import DAY_MS, FakeMobileIron, android, core_device, hardware, now_ms, windows
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

V1_MAPPINGS = {
    "SERIAL_NUMBER": '{"source": "serialNumber"}',
    "NAME": "displayName",
    "CPU": '{"source": "primaryProcessorName"}',
    "CORES": '{"source": "primaryProcessorCores"}',
    "DISK": '{"source": "primaryHDDSize"}',
    "MEMORY": '{"source": "primaryMemoryCapacity"}',
}
V2_MAPPINGS = {
    "SERIAL_NUMBER": '{"source": "common.serial_number"}',
    "MODEL": '{"source": "common.model"}',
    "ASSIGNED_TO": "user.display_name",
}


def drivers() -> list[dict[str, Any]]:
    fresh = now_ms() - 3_600_000
    return [
        android(1, fresh),
        windows(1, fresh - 1000),
        android(2, fresh - 2000),
        android(3, now_ms() - 5 * DAY_MS),
        android(4, now_ms() - 6 * DAY_MS),
    ]


@pytest.fixture
def ivanti() -> Iterator[FakeMobileIron]:
    fake = FakeMobileIron(
        partitions={"Default Partition": [android(90, now_ms())], "Drivers": drivers()},
        spaces={1: [core_device(i) for i in range(3)], 2: [core_device(7), core_device(0)]},
        max_page=2,
    )
    with serving(fake):
        yield fake


def run(
    tmp_path: Path, oomnitza: FakeOomnitza, ivanti: FakeMobileIron, mappings: dict[str, str] | None = None, **extra: str
) -> Any:
    settings = {
        "url": ivanti.url,
        "username": ivanti.username,
        "password": ivanti.password,
        "partitions": '["Drivers"]',
        "sync_field": "SERIAL_NUMBER",
        **extra,
    }
    ini = write_config(tmp_path, oomnitza, "mobileiron", settings, V1_MAPPINGS if mappings is None else mappings)
    return upload(ini, "mobileiron")


def starts(ivanti: FakeMobileIron) -> list[str]:
    return [c.query["start"] for c in ivanti.calls("/api/v1/device", "GET") if c.path == "/api/v1/device"]


def test_v1_pages_checkin_window_and_windows_hardware(
    tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, ivanti)
    assert result.code == 0, result.all
    # 3 devices checked in within 36 h; page 3 holds only older ones, so paging stops there.
    assert_accounted(result, "mobileiron", pulled=3, sent=3)
    assert starts(ivanti) == ["0", "2", "4"]
    first = ivanti.calls("/api/v1/device")[0]
    assert first.query["dmPartitionId"] == str(ivanti.partition_ids["Drivers"])  # only the named partition
    assert first.query["rows"] == "500"
    assert first.query["sortFields[0].name"] == "lastCheckin" and first.query["sortFields[0].order"] == "DESC"
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="7H2KXY3") == {
        "SERIAL_NUMBER": "7H2KXY3",
        "NAME": "DRV-LAP-0001",
        "CPU": "13th Gen Intel(R) Core(TM) i5-1345U",
        "CORES": 10,
        "DISK": 512110190592,
        "MEMORY": 17179869184,
    }
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="R9TT0000001") == {
        "SERIAL_NUMBER": "R9TT0000001",
        "NAME": "DRV-TAB-0001",
        "CPU": None,
        "CORES": None,
        "DISK": None,
        "MEMORY": None,
    }
    assert [c.path for c in ivanti.calls("/api/v1/device/")] == ["/api/v1/device/730461/hardwareinventory"]
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "MobileIron"


def test_v1_without_checkin_filter_reads_to_total_count(
    tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, ivanti, include_checkin_devices_only="false")
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=5, sent=5)
    assert starts(ivanti) == ["0", "2", "4"]  # totalCount 5: no request past the end


def test_v1_threshold_is_seconds(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, ivanti, last_checkin_date_threshold="475200")  # 5.5 days
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=4, sent=4)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="R9TT0000003") is not None
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="R9TT0000004") is None


def test_v1_all_partitions(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, ivanti, partitions="All")
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=4, sent=4)
    assert {c.query["dmPartitionId"] for c in ivanti.calls("/api/v1/device") if c.path == "/api/v1/device"} == {
        str(pid) for pid in ivanti.partition_ids.values()
    }


def test_v1_partition_list_is_paged(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    ivanti.partition_page = 1  # Ivanti's database-backed lists page (by 50); here by one
    result = run(tmp_path, fake_oomnitza, ivanti, partitions='["Drivers"]')
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=3, sent=3)
    listing = ivanti.calls("/api/v1/tenant/partition/device")
    assert [c.query["start"] for c in listing] == ["0", "1"]
    assert listing[0].query["rows"] == "50"


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_v1_transient_fault_on_a_later_page(
    tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(ivanti, fault, "GET", "/api/v1/device", query={"start": "2"})
    result = run(tmp_path, fake_oomnitza, ivanti, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=3, sent=3)
    assert len(fake_oomnitza.records("assets")) == 3


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_v2_transient_fault_on_a_later_page(
    tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(ivanti, fault, "GET", "/api/v2/devices", query={"offset": "2"})
    result = run(tmp_path, fake_oomnitza, ivanti, V2_MAPPINGS, api_version="2", request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=4, sent=4)
    assert len(fake_oomnitza.records("assets")) == 4


def test_v1_partition_names_are_exact_not_substrings(
    tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, ivanti, partitions='["Driver"]')  # the seed matched "Drivers" here
    assert_one_line_error(result, "no device partition named Driver; the tenant has: Default Partition, Drivers")
    assert not starts(ivanti)


def test_v1_never_checked_in_devices_sorted_first(
    tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza
) -> None:
    ivanti.partitions["Drivers"] += [android(50, None), android(51, None)]
    ivanti.nulls_first = True
    result = run(tmp_path, fake_oomnitza, ivanti)
    assert result.code == 0, result.all
    # Page 1 holds only never-checked-in devices: dropped, but paging goes on to the recent ones.
    assert_accounted(result, "mobileiron", pulled=3, sent=3)
    assert starts(ivanti) == ["0", "2", "4", "6"]


def test_v1_hardware_failures_keep_the_device(
    tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza
) -> None:
    fresh = now_ms()
    ivanti.partitions["Drivers"] = [windows(1, fresh, serial="KEEP-ME-1"), windows(2, fresh, serial="KEEP-ME-2")]
    ivanti.hardware = {730461: hardware(serial=None)}  # 730462: 404
    result = run(tmp_path, fake_oomnitza, ivanti)
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=2, sent=2)
    # An inventory without computerSystemProduct no longer blanks a good serial number.
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="KEEP-ME-1")["CORES"] == 10
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="KEEP-ME-2")["CORES"] is None
    assert "hardware inventory of device 730462 not read" in result.err


def test_v1_bad_password(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, ivanti, password="not-the-pa55")
    assert_one_line_error(
        result, "MobileIron rejected the credentials (401 Bad credentials): check username and password"
    )
    assert "not-the-pa55" not in result.all
    assert len(ivanti.requests) == 1


def test_v1_429_and_503_with_retry_after(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    ivanti.fail("GET", "/api/v1/device", 429, headers={"Retry-After": "1"}, query={"start": "2"})
    ivanti.fail("GET", "/api/v1/tenant/partition/device", 503, headers={"Retry-After": "1"})
    result = run(tmp_path, fake_oomnitza, ivanti)
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=3, sent=3)
    assert starts(ivanti) == ["0", "2", "2", "4"]


def test_v1_5xx_retried(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    ivanti.fail("GET", "/api/v1/device", 502, times=2, query={"start": "0"})
    result = run(tmp_path, fake_oomnitza, ivanti)
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=3, sent=3)


def test_v1_empty_partition(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    ivanti.partitions["Drivers"] = []
    result = run(tmp_path, fake_oomnitza, ivanti)
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_v1_malformed_body(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    ivanti.fail(
        "GET", "/api/v1/device", 200, body="<html>Service Unavailable</html>", headers={"Content-Type": "text/html"}
    )
    result = run(tmp_path, fake_oomnitza, ivanti)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("assets") == []


def test_v2_dotted_keys_spaces_and_pages(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, ivanti, V2_MAPPINGS, api_version="2", partitions="")
    assert result.code == 0, result.all
    # Space 1: 3 devices in pages of 2; space 2: a new one and one already seen in space 1 (sent once).
    assert_accounted(result, "mobileiron", pulled=4, sent=4)
    pages = ivanti.calls("/api/v2/devices")
    assert [(c.query["adminDeviceSpaceId"], c.query["offset"]) for c in pages] == [("1", "0"), ("1", "2"), ("2", "0")]
    assert pages[0].query["labelId"] == "-1" and pages[0].query["limit"] == "50"
    assert pages[0].query["fields"] == ",".join(ivanti.criteria)  # every searchable field, as the seed did
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="F9FXK0000001") == {
        "SERIAL_NUMBER": "F9FXK0000001",
        "MODEL": "iPhone 15",
        "ASSIGNED_TO": "User 1",
    }


def test_v2_only_mapped_fields(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.set_mapping("MobileIron", {"ios.DeviceName": "NAME"})
    result = run(tmp_path, fake_oomnitza, ivanti, V2_MAPPINGS, api_version="2", fields="mapped")
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=4, sent=4)
    fields = ivanti.calls("/api/v2/devices")[0].query["fields"].split(",")
    assert sorted(fields) == sorted(
        ["common.uuid", "common.serial_number", "common.model", "user.display_name", "ios.DeviceName"]
    )
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="F9FXK0000002")["NAME"] == "iPhone 2"


def test_v2_explicit_fields_plus_the_server_side_mapping(
    tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza
) -> None:
    fake_oomnitza.set_mapping("MobileIron", {"ios.DeviceName": "NAME", "custom.not_searchable": "OTHER"})
    result = run(
        tmp_path,
        fake_oomnitza,
        ivanti,
        V2_MAPPINGS,
        api_version="2",
        fields="common.serial_number, common.status, common.no_such_field",
    )
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=4, sent=4)
    fields = ivanti.calls("/api/v2/devices")[0].query["fields"].split(",")
    # the listed ones, then every searchable field a mapping reads; names that are not searchable are not sent
    assert fields[:3] == ["common.uuid", "common.serial_number", "common.status"]
    assert sorted(fields[3:]) == ["common.model", "ios.DeviceName", "user.display_name"]
    assert "no searchable field common.no_such_field" in result.err
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="F9FXK0000002")["NAME"] == "iPhone 2"


def test_v2_malformed_body(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    ivanti.fail(
        "GET", "/api/v2/devices", 200, body="<html><title>Sign in</title></html>", headers={"Content-Type": "text/html"}
    )
    result = run(tmp_path, fake_oomnitza, ivanti, V2_MAPPINGS, api_version="2")
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("assets") == []


def test_v2_more_than_512_fields(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    ivanti.criteria = [f"custom.field_{i:03d}" for i in range(600)] + ivanti.criteria
    result = run(tmp_path, fake_oomnitza, ivanti, V2_MAPPINGS, api_version="2")
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=4, sent=4)
    fields = ivanti.calls("/api/v2/devices")[0].query["fields"].split(",")
    assert len(fields) == 512
    assert fields[:4] == ["common.uuid", "common.serial_number", "common.model", "user.display_name"]
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="F9FXK0000000")["ASSIGNED_TO"] == "User 0"


def test_v2_bad_password_html_body(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, ivanti, V2_MAPPINGS, api_version="2", password="wrong-core-pa55")
    assert_one_line_error(result, "MobileIron rejected the credentials (401): check username and password")
    assert "wrong-core-pa55" not in result.all
    assert len(ivanti.requests) == 1


def test_v2_empty_space(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    ivanti.spaces = {1: []}
    result = run(tmp_path, fake_oomnitza, ivanti, V2_MAPPINGS, api_version="2")
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=0)


def test_managed_authorization_pass_through(
    tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza
) -> None:
    import base64

    header = "Basic " + base64.b64encode(f"{ivanti.username}:{ivanti.password}".encode()).decode()
    result = run(
        tmp_path,
        fake_oomnitza,
        ivanti,
        username="",
        password="",
        authorization_settings=f'{{"Authorization": "{header}"}}',
    )
    assert result.code == 0, result.all
    assert_accounted(result, "mobileiron", pulled=3, sent=3)


def test_settings_validated(tmp_path: Path, ivanti: FakeMobileIron, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, ivanti, page_size="1000", partitions="")
    assert_one_line_error(
        result, "page_size = '1000' must be a whole number from 1 to 500", "partitions is required with api_version 1"
    )
    result = run(tmp_path, fake_oomnitza, ivanti, include_checkin_devices_only="maybe")
    assert_one_line_error(result, "include_checkin_devices_only = 'maybe' must be true or false")
    assert not ivanti.requests
