"""[netbox] end to end through the CLI against the fake NetBox and the fake Oomnitza."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.netbox import RTR, SWITCH, V1_HEX_TOKEN, V1_TOKEN, V2_TOKEN, FakeNetbox, device
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve, serving
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
    "NAME": "name",
    "SERIAL_NUMBER": '{"source": "serial"}',
    "MODEL": '{"source": "device_type.model"}',
    "MANUFACTURER": '{"source": "device_type.manufacturer.name"}',
    "STATUS": '{"source": "status.value"}',
    "ROLE": '{"source": "role.name"}',
    "IP": '{"source": "primary_ip4.address"}',
    "TAG": '{"source": "tags.0.name"}',
    "PO": '{"source": "custom_fields.purchase_order"}',
}


@pytest.fixture
def netbox() -> Iterator[FakeNetbox]:
    fake = FakeNetbox([RTR, SWITCH] + [device(i) for i in range(5)], max_page=3)
    with serving(fake):
        yield fake


def run(tmp_path: Path, oomnitza: FakeOomnitza, netbox: FakeNetbox, **extra: str) -> Any:
    settings = {"url": netbox.url, "auth_token": V2_TOKEN, "sync_field": "NAME", **extra}
    return upload(write_config(tmp_path, oomnitza, "netbox", settings, MAPPINGS), "netbox")


def test_several_pages_v2_token(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, netbox)
    assert result.code == 0, result.all
    assert_accounted(result, "netbox", pulled=7, sent=7)
    calls = netbox.calls("/api/dcim/devices/")
    assert len(calls) == 3  # 3 + 3 + 1: the server caps the page below the 1000 asked for
    assert calls[0].query == {"limit": "1000", "ordering": "id"}
    assert calls[1].query == {"limit": "3", "offset": "3", "ordering": "id"}  # taken from next
    assert calls[0].headers["authorization"] == f"Bearer {V2_TOKEN}"
    assert calls[0].headers["accept"] == "application/json"
    assert fake_oomnitza.record("assets", NAME="rtr-ams-01") == {
        "NAME": "rtr-ams-01",
        "SERIAL_NUMBER": "FOC2233X0AB",
        "MODEL": "ISR4331",
        "MANUFACTURER": "Cisco",
        "STATUS": "active",
        "ROLE": "Router",
        "IP": "10.0.0.1/24",
        "TAG": "core",
        "PO": "PO-2291",
    }
    assert fake_oomnitza.record("assets", NAME="sw-ams-01") == {
        "NAME": "sw-ams-01",
        "SERIAL_NUMBER": "",
        "MODEL": "EX4300-48T",
        "MANUFACTURER": "Juniper",
        "STATUS": "planned",
        "ROLE": "Access Switch",
        "IP": None,
        "TAG": None,
        "PO": None,
    }
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Netbox"
    assert "deprecated" not in result.err


def test_v1_token_and_url_with_api_suffix(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, netbox, auth_token=V1_TOKEN, url=f"{netbox.url}/api/")
    assert result.code == 0, result.all
    assert_accounted(result, "netbox", pulled=7, sent=7)
    assert netbox.calls()[0].headers["authorization"] == f"Token {V1_TOKEN}"
    assert "v1 NetBox token" in result.err and "removed in 5.0" in result.err
    assert V1_TOKEN not in result.all


def test_pasted_bearer_prefix_is_dropped(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    # NetBox 4.6's token page shows "Bearer nbt_<key>.<secret>" with a copy button.
    result = run(tmp_path, fake_oomnitza, netbox, auth_token=f"Bearer {V2_TOKEN}")
    assert result.code == 0, result.all
    assert_accounted(result, "netbox", pulled=7, sent=7)
    assert {c.headers["authorization"] for c in netbox.calls()} == {f"Bearer {V2_TOKEN}"}


def test_netbox_4_4_hex_v1_token(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    # 4.4 reads only the "Token" keyword: a v1 token pasted as "Bearer <v1>" must go out as Token.
    fake = FakeNetbox([RTR, SWITCH], version="4.4")
    with serving(fake):
        result = run(tmp_path, fake_oomnitza, fake, auth_token=f"bearer {V1_HEX_TOKEN}")
    assert result.code == 0, result.all
    assert_accounted(result, "netbox", pulled=2, sent=2)
    assert fake.calls()[0].headers["authorization"] == f"Token {V1_HEX_TOKEN}"


def test_fake_follows_netbox_token_rules(netbox: FakeNetbox) -> None:
    """The fake answers like NetBox's TokenAuthentication (4.6: version from the nbt_ prefix, either
    keyword; 4.4: Token only), so the source's choices above are tested against the real rules."""

    def status(fake: FakeNetbox, header: str) -> tuple[int, Any]:
        response = httpx.get(f"{fake.url}/api/dcim/devices/", headers={"Authorization": header})
        return response.status_code, response.json().get("detail") if response.status_code != 200 else None

    assert status(netbox, f"Token {V2_TOKEN}") == (200, None)  # since 4.5 the prefix decides
    assert status(netbox, f"Bearer {V1_TOKEN}") == (200, None)
    assert status(netbox, "Bearer nbt_nodot")[0] == 403
    assert status(netbox, f"Token {V1_TOKEN.lower()}") == (403, "Invalid v1 token")
    old = FakeNetbox([RTR], version="4.4")
    with serving(old):
        assert status(old, f"Token {V1_HEX_TOKEN}") == (200, None)
        assert status(old, f"Bearer {V1_HEX_TOKEN}") == (403, "Authentication credentials were not provided.")


def test_bad_token(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, netbox, auth_token="Zx9" * 13 + "Q")
    assert_one_line_error(result, "[netbox] NetBox rejected the token (403 Invalid v1 token): check auth_token")
    assert "Zx9Zx9Zx9" not in result.all
    assert len(netbox.calls()) == 1  # a rejected credential is not retried
    assert fake_oomnitza.records("assets") == []


def test_token_user_without_view_permission(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    netbox.may_view_devices = False
    result = run(tmp_path, fake_oomnitza, netbox)
    assert_one_line_error(
        result,
        "NetBox accepted the token but its user may not read devices (403 You do not have permission",
        "grant view permission on DCIM devices (dcim.view_device)",
    )
    assert "check auth_token" not in result.err
    assert len(netbox.calls()) == 1
    assert fake_oomnitza.records("assets") == []


def test_validation_error_list_is_one_line(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    # DRF ValidationError(str) bodies are a JSON list (pagination.py: "'start' and 'offset' are ...").
    netbox.fail("GET", "/api/dcim/devices/", 400, body=["'start' and 'offset' are mutually exclusive."])
    result = run(tmp_path, fake_oomnitza, netbox)
    assert_one_line_error(result, "NetBox refused the device query (400 'start' and 'offset' are mutually exclusive.)")
    assert len(netbox.calls()) == 1  # a 400 is not retried


def test_missing_token_is_a_config_error(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, netbox, auth_token="")
    assert_one_line_error(result, "[netbox] auth_token is required")
    assert netbox.calls() == []


def test_429_with_retry_after(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    netbox.fail("GET", "/api/dcim/devices/", 429, headers={"Retry-After": "1"}, body={"detail": "slow down"})
    result = run(tmp_path, fake_oomnitza, netbox)
    assert result.code == 0, result.all
    assert_accounted(result, "netbox", pulled=7, sent=7)
    assert len(netbox.calls()) == 4


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(netbox, fault, "GET", "/api/dcim/devices/", query={"offset": "3"})
    result = run(tmp_path, fake_oomnitza, netbox, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "netbox", pulled=7, sent=7)
    assert len(fake_oomnitza.records("assets")) == 7


def test_5xx_retried(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    netbox.fail("GET", "/api/dcim/devices/", 502, times=2)
    result = run(tmp_path, fake_oomnitza, netbox)
    assert result.code == 0, result.all
    assert_accounted(result, "netbox", pulled=7, sent=7)


def test_empty(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    netbox.devices.clear()
    result = run(tmp_path, fake_oomnitza, netbox)
    assert result.code == 0, result.all
    assert_accounted(result, "netbox", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    netbox.fail("GET", "/api/dcim/devices/", 200, body="<html>login</html>", headers={"Content-Type": "text/html"})
    result = run(tmp_path, fake_oomnitza, netbox)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")


def test_json_without_results(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    netbox.fail("GET", "/api/dcim/devices/", 200, body={"status": "ok"})
    result = run(tmp_path, fake_oomnitza, netbox)
    assert_one_line_error(result, "answered without a 'results' list")


def test_cross_host_next_never_gets_the_token(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    spy = FakeNetbox([])  # "another host": must never be called
    with serve(spy.app) as spy_url:
        spy.url = spy_url
        netbox = FakeNetbox(
            [device(i) for i in range(5)], max_page=2, next_base=spy_url.replace("127.0.0.1", "localhost")
        )
        with serving(netbox):
            result = run(tmp_path, fake_oomnitza, netbox)
    assert result.code == 0, result.all
    assert_accounted(result, "netbox", pulled=5, sent=5)
    assert spy.requests == []
    assert [c.query.get("offset") for c in netbox.calls()] == [None, "2", "4"]
    assert result.err.count("next link points to") == 1  # warned once


def test_server_mapping_of_config_context_keeps_it(
    tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza
) -> None:
    # A field mapped only in Oomnitza's "Netbox" mapping: config_context must then be requested.
    fake_oomnitza.set_mapping("Netbox", {"config_context.ntp.0": "NTP"})
    settings = {"url": netbox.url, "auth_token": V2_TOKEN, "sync_field": "NAME", "exclude_config_context": "true"}
    result = upload(write_config(tmp_path, fake_oomnitza, "netbox", settings, {"NAME": "name"}), "netbox")
    assert result.code == 0, result.all
    assert_accounted(result, "netbox", pulled=7, sent=7)
    assert "exclude" not in netbox.calls()[0].query
    assert fake_oomnitza.record("assets", NAME="rtr-ams-01") == {"NAME": "rtr-ams-01", "NTP": "10.0.0.53"}


def test_exclude_config_context(tmp_path: Path, netbox: FakeNetbox, fake_oomnitza: FakeOomnitza) -> None:
    settings = {"url": netbox.url, "auth_token": V2_TOKEN, "sync_field": "NAME", "exclude_config_context": "true"}
    plain = {"NAME": "name"}
    for mappings, excluded in ((plain, True), (plain | {"NTP": '{"source": "config_context.ntp.0"}'}, False)):
        fake_oomnitza.reset()
        result = upload(write_config(tmp_path, fake_oomnitza, "netbox", settings, mappings), "netbox")
        assert result.code == 0, result.all
        assert_accounted(result, "netbox", pulled=7, sent=7)
        assert netbox.calls()[-1].query.get("exclude") == ("config_context" if excluded else None)
        assert fake_oomnitza.record("assets", NAME="rtr-ams-01").get("NTP") == (None if excluded else "10.0.0.53")
