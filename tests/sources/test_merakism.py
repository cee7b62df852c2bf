"""[merakism] end to end through the CLI against the fake Meraki Dashboard API v1 and the fake Oomnitza."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from tests.fakes.meraki import NETWORK, FakeMeraki, device, macbook, scanner
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

DEVICES = f"/api/v1/networks/{NETWORK}/sm/devices"
MAPPINGS = {
    "SERIAL_NUMBER": '{"source": "id"}',
    "NAME": "name",
    "MODEL": '{"source": "systemModel"}',
    "FIRST_TAG": '{"source": "tags.0"}',
    "LAST_CONNECTED": '{"source": "lastConnected"}',
    "OWNER": '{"source": "ownerEmail"}',
    "DISK_SIZE": '{"source": "diskInfo.0.size"}',
    "DISK_JSON": '{"source": "diskInfoJson"}',
}


def serve_fake(fake: FakeMeraki) -> Iterator[FakeMeraki]:
    with serving(fake):
        yield fake


@pytest.fixture
def meraki() -> Iterator[FakeMeraki]:
    yield from serve_fake(FakeMeraki(max_page=2))


def run(
    tmp_path: Path, oomnitza: FakeOomnitza, meraki: FakeMeraki, mappings: dict[str, str] | None = None, **extra: str
) -> Any:
    settings = {
        "meraki_api_key": meraki.api_key,
        "network_id": NETWORK,
        "url": f"{meraki.url}/api/v1",
        "sync_field": "SERIAL_NUMBER",
        **extra,
    }
    return upload(
        write_config(tmp_path, oomnitza, "merakism", settings, MAPPINGS if mappings is None else mappings), "merakism"
    )


def test_several_pages_link_header(tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, meraki)
    assert result.code == 0, result.all
    assert_accounted(result, "merakism", pulled=3, sent=3)
    calls = meraki.calls(DEVICES)
    assert len(calls) == 2  # perPage 1000 capped to 2 by the server: follow rel=next, stop without it
    assert calls[0].headers["authorization"] == f"Bearer {meraki.api_key}"
    assert calls[1].query["startingAfter"] == "1284392014819"
    assert calls[0].query["perPage"] == "1000"
    rec = fake_oomnitza.record("assets", SERIAL_NUMBER="1284392014810")
    assert rec == {
        "SERIAL_NUMBER": "1284392014810",
        "NAME": "Ana's MacBook Air",
        "MODEL": "MacBookAir10,1",
        "FIRST_TAG": "finance",
        "LAST_CONNECTED": 1789372920,
        "OWNER": "ana.silva@example.com",
        "DISK_SIZE": 494384795648,
        "DISK_JSON": macbook()["diskInfoJson"],  # the string is kept as it was
    }
    other = fake_oomnitza.record("assets", SERIAL_NUMBER="1284392014819")
    assert other["FIRST_TAG"] is None and other["DISK_SIZE"] is None
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="1284392015001")["DISK_SIZE"] is None  # not JSON: no diskInfo
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "MerakiSM"


def test_fields_requested_as_array_parameters(tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, meraki, url=meraki.url, extra_fields="androidSecurityPatchVersion")
    assert result.code == 0, result.all  # url without /api/v1 works too
    assert_accounted(result, "merakism", pulled=3, sent=3)
    first, second = (parse_qsl(q) for q in meraki.queries)
    assert ("fields[]", "diskInfoJson") in first and ("fields[]", "ownerEmail") in first
    assert ("fields[]", "androidSecurityPatchVersion") in first
    assert ("fields", "ip,systemType") not in first  # no v0-style comma list
    assert first.count(("fields[]", "ip")) == 1
    assert ("fields[]", "diskInfoJson") in second  # the next link is followed verbatim


def test_fields_mapped_only_in_oomnitza_are_requested(
    tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza
) -> None:
    fake_oomnitza.set_mapping("MerakiSM", {"autoTags.0": "AUTO_TAG", "noSuchMerakiField": "OTHER"})
    result = run(tmp_path, fake_oomnitza, meraki)
    assert result.code == 0, result.all
    assert_accounted(result, "merakism", pulled=3, sent=3)
    first = parse_qsl(meraki.queries[0])
    assert ("fields[]", "autoTags") in first  # mapped in Oomnitza only, and a documented field
    assert ("fields[]", "noSuchMerakiField") not in first  # never sent: Meraki may refuse the whole request
    assert ("fields[]", "id") not in first  # always returned, not asked for
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="1284392014810")["AUTO_TAG"] == "macos"


def test_undocumented_extra_field_is_one_clear_line(
    tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, meraki, extra_fields="batteryLevel")
    assert_one_line_error(
        result,
        "Meraki refused the device request (400 Invalid field(s): batteryLevel)",
        "check network_id",
        "extra_fields",
    )
    assert len(meraki.calls(DEVICES)) == 1  # a 400 is not retried


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(meraki, fault, "GET", DEVICES, query={"startingAfter": "1284392014819"})
    result = run(tmp_path, fake_oomnitza, meraki, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "merakism", pulled=3, sent=3)
    assert len(fake_oomnitza.records("assets")) == 3


def test_stays_under_the_organization_rate_limit(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeMeraki([device(i) for i in range(15)], per_second=4)
    for meraki in serve_fake(fake):
        result = run(tmp_path, fake_oomnitza, meraki, page_size="3", requests_per_second="3")
        assert result.code == 0, result.all
        assert_accounted(result, "merakism", pulled=15, sent=15)
        assert len(meraki.calls(DEVICES)) == 5
        assert meraki.throttled == 0  # requests were spaced; none was refused


def test_429_retry_after(tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza) -> None:
    meraki.fail(
        "GET",
        DEVICES,
        429,
        headers={"Retry-After": "1"},
        body={"errors": ["API rate limit exceeded for organization"]},
        query={"startingAfter": "1284392014819"},
    )
    result = run(tmp_path, fake_oomnitza, meraki)
    assert result.code == 0, result.all
    assert_accounted(result, "merakism", pulled=3, sent=3)
    assert len(meraki.calls(DEVICES)) == 3


def test_5xx_retried(tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza) -> None:
    meraki.fail("GET", DEVICES, 502, times=2)
    result = run(tmp_path, fake_oomnitza, meraki)
    assert result.code == 0, result.all
    assert_accounted(result, "merakism", pulled=3, sent=3)


def test_bad_key_401(tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, meraki, meraki_api_key="ffffffffffffffffwrongkey")
    assert_one_line_error(result, "Meraki rejected the API key (401 Invalid API key): check meraki_api_key")
    assert "ffffffffffffffffwrongkey" not in result.all
    assert len(meraki.requests) == 1


def test_bad_key_404(tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza) -> None:
    meraki.bad_key_status = 404  # Meraki hides whether the resource exists
    result = run(tmp_path, fake_oomnitza, meraki, meraki_api_key="ffffffffffffffffwrongkey")
    assert_one_line_error(
        result, f"Meraki answered 404 Invalid API key for network {NETWORK}", "check network_id", "meraki_api_key"
    )
    assert "ffffffffffffffffwrongkey" not in result.all
    assert len(meraki.requests) == 1


def test_unknown_network(tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, meraki, network_id="N_0000")
    assert_one_line_error(result, "Meraki answered 404 Not found for network N_0000")
    assert fake_oomnitza.records("assets") == []


def test_empty_network(tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza) -> None:
    meraki.devices.clear()
    result = run(tmp_path, fake_oomnitza, meraki)
    assert result.code == 0, result.all
    assert_accounted(result, "merakism", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza) -> None:
    meraki.fail("GET", DEVICES, 200, body="<html>oops</html>", headers={"Content-Type": "text/html"})
    result = run(tmp_path, fake_oomnitza, meraki)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")


def test_object_instead_of_list(tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza) -> None:
    meraki.fail("GET", DEVICES, 200, body={"errors": ["Systems Manager is not enabled on this network"]})
    result = run(tmp_path, fake_oomnitza, meraki)
    assert_one_line_error(result, "not a list of devices: Systems Manager is not enabled on this network")
    assert fake_oomnitza.records("assets") == []


def test_redirect_to_another_shard_keeps_the_key(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    for shard in serve_fake(FakeMeraki([macbook(), scanner()])):
        for front in serve_fake(FakeMeraki([])):
            front.redirect_to = shard.url  # another port: another origin, httpx drops Authorization
            result = run(tmp_path, fake_oomnitza, front)
            assert result.code == 0, result.all
            assert_accounted(result, "merakism", pulled=2, sent=2)
            assert shard.calls(DEVICES)[0].headers["authorization"] == f"Bearer {shard.api_key}"


def test_next_link_to_a_foreign_site_is_refused(
    tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza
) -> None:
    meraki.fail(
        "GET",
        DEVICES,
        200,
        body=[macbook()],
        headers={"Link": '<https://dashboard.example.net/api/v1/x?startingAfter=1>; rel="next"'},
    )
    result = run(tmp_path, fake_oomnitza, meraki)
    assert_one_line_error(result, "next-page link points to another site", "not sending the API key there")
    assert_accounted(result, "merakism", pulled=1, sent=1)


def test_settings_validated(tmp_path: Path, meraki: FakeMeraki, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, meraki, network_id="", page_size="2")
    assert_one_line_error(result, "network_id is required", "page_size = '2' must be a whole number from 3 to 1000")
    assert not meraki.requests
