"""[tanium] end to end through the CLI against the fake Tanium Server and the fake Oomnitza."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serving
from tests.fakes.tanium import API_TOKEN, ASSETS, FakeTanium
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
    "NAME": "computer_name",
    "SERIAL_NUMBER": '{"source": "serial_number"}',
    "MAC": '{"source": "ci_network_adapter.0.mac_address"}',
}
WKS_APPS = [
    {"name": "7-Zip 23.01 (x64)", "version": "23.01", "path": None},
    {"name": "Microsoft Edge", "version": "131.0.2903.70", "path": None},
]


@pytest.fixture
def tanium() -> Iterator[FakeTanium]:
    fake = FakeTanium(max_page=3)
    with serving(fake):
        yield fake


def run(tmp_path: Path, oomnitza: FakeOomnitza, tanium: FakeTanium, **extra: str) -> Any:
    settings = {
        "url": tanium.url,
        "username": tanium.username,
        "password": tanium.password,
        "sync_field": "NAME",
        **extra,
    }
    return upload(write_config(tmp_path, oomnitza, "tanium", settings, MAPPINGS), "tanium")


def test_login_several_pages(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, tanium)
    assert result.code == 0, result.all
    assert_accounted(result, "tanium", pulled=5, sent=5)
    login = tanium.calls("/api/v2/session/login")
    assert len(login) == 1
    assert json.loads(login[0].body) == {"username": "svc_oomnitza", "password": "Passw0rd!", "domain": ""}
    calls = tanium.calls(ASSETS)
    # pages of 3 (the server caps the 100 asked for); the second one says endOfReader: no third call
    assert [c.query for c in calls] == [{"limit": "100", "minimumAssetId": str(i)} for i in (1, 1004)]
    assert calls[0].headers["session"] == "1-2345-6789abcdef0123456789abcdef"
    assert "authorization" not in calls[0].headers
    assert fake_oomnitza.record("assets", NAME="WKS-0042.corp.example") == {
        "NAME": "WKS-0042.corp.example",
        "SERIAL_NUMBER": "7XK2P93",
        "MAC": "b0:7b:25:aa:bb:cc",
        "APPLICATIONS": WKS_APPS,  # the nameless application entry is skipped
    }
    assert fake_oomnitza.record("assets", NAME="srv-db-01.corp.example")["APPLICATIONS"] == []  # null list
    assert fake_oomnitza.record("assets", NAME="mac-0007.corp.example")["APPLICATIONS"] == []  # no key
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Tanium"
    assert tanium.logged_out == ["1-2345-6789abcdef0123456789abcdef"]
    assert "Passw0rd!" not in result.all


def test_server_without_end_of_reader_stops_on_an_empty_page(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeTanium(max_page=3, end_of_reader=False)
    with serving(fake):
        result = run(tmp_path, fake_oomnitza, fake)
    assert result.code == 0, result.all
    assert_accounted(result, "tanium", pulled=5, sent=5)
    assert [c.query["minimumAssetId"] for c in fake.calls(ASSETS)] == ["1", "1004", "1006"]


def test_api_token_prefix_added(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    result = run(
        tmp_path, fake_oomnitza, tanium, username="", password="", session_token=API_TOKEN.removeprefix("token-")
    )
    assert result.code == 0, result.all
    assert_accounted(result, "tanium", pulled=5, sent=5)
    assert tanium.calls("/api/v2/session") == []  # no login, no logout
    assert {c.headers["session"] for c in tanium.calls(ASSETS)} == {API_TOKEN}


def test_bad_password(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, tanium, password="Wr0ngPassw0rd")
    assert_one_line_error(
        result,
        "[tanium] Tanium rejected the login (401 Unauthorized: invalid username or "
        "password): check username, password and domain",
    )
    assert "Wr0ngPassw0rd" not in result.all
    assert len(tanium.calls("/api/v2/session/login")) == 1  # not retried
    assert tanium.calls(ASSETS) == []
    assert fake_oomnitza.records("assets") == []


def test_bad_api_token(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, tanium, session_token="token-expired0000")
    assert_one_line_error(
        result,
        "[tanium] Tanium rejected the API token (403 Forbidden: invalid or expired session): check session_token",
    )
    assert "token-expired0000" not in result.all
    assert len(tanium.calls(ASSETS)) == 1  # not retried
    assert tanium.calls("/api/v2/session/login") == []


def test_session_expiry_logs_in_again(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    tanium.expire_after = 1
    result = run(tmp_path, fake_oomnitza, tanium)
    assert result.code == 0, result.all
    assert_accounted(result, "tanium", pulled=5, sent=5)
    assert tanium.issued == 2  # the second page found the session expired: one new login
    assert [c.headers["session"][0] for c in tanium.calls(ASSETS)] == ["1", "1", "2"]


def test_view_limits_attributes_and_warns(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, tanium, view="12")
    assert result.code == 0, result.all
    assert_accounted(result, "tanium", pulled=5, sent=5)
    assert all(c.query["viewId"] == "12" for c in tanium.calls(ASSETS))
    assert fake_oomnitza.record("assets", NAME="WKS-0042.corp.example") == {
        "NAME": "WKS-0042.corp.example",
        "SERIAL_NUMBER": "7XK2P93",
        "MAC": None,
        "APPLICATIONS": [],
    }
    assert result.err.count("view 12 does not include ci_installed_application") == 1


def test_unknown_view(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, tanium, view="99")
    assert_one_line_error(result, "[tanium] Tanium refused view 99 (404 view 99 not found): check that the view exists")


def test_429_and_5xx_retried(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    tanium.fail("GET", ASSETS, 429, headers={"Retry-After": "1"}, body={"text": "Too many requests"})
    tanium.fail("GET", ASSETS, 500)
    result = run(tmp_path, fake_oomnitza, tanium)
    assert result.code == 0, result.all
    assert_accounted(result, "tanium", pulled=5, sent=5)
    assert len(tanium.calls("/api/v2/session/login")) == 1


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(tanium, fault, "GET", ASSETS, query={"minimumAssetId": "1004"})
    result = run(tmp_path, fake_oomnitza, tanium, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "tanium", pulled=5, sent=5)
    assert len(fake_oomnitza.records("assets")) == 5
    assert len(tanium.calls(ASSETS)) == 3  # the faulty page asked twice
    assert len(tanium.calls("/api/v2/session/login")) == 1


def test_server_side_mapping(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    # fields mapped only in Oomnitza arrive; a server-side APPLICATIONS source silences the view warning
    fake_oomnitza.set_mapping("Tanium", {"os_name": "OS_NAME", "computer_name": "APPLICATIONS"})
    result = run(tmp_path, fake_oomnitza, tanium)
    assert result.code == 0, result.all
    assert_accounted(result, "tanium", pulled=5, sent=5)
    record = fake_oomnitza.record("assets", NAME="WKS-0042.corp.example")
    assert record["OS_NAME"] == "Windows 11 Enterprise"
    assert record["APPLICATIONS"] == "WKS-0042.corp.example"
    tanium.views["12"] = ("id", "computer_name", "serial_number", "os_name")
    result = run(tmp_path, fake_oomnitza, tanium, view="12")
    assert result.code == 0, result.all
    assert "does not include ci_installed_application" not in result.err


def test_empty(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    tanium.assets.clear()
    result = run(tmp_path, fake_oomnitza, tanium)
    assert result.code == 0, result.all
    assert_accounted(result, "tanium", pulled=0)
    assert len(tanium.calls(ASSETS)) == 1
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    tanium.fail("GET", ASSETS, 200, body="<html>Tanium Console</html>", headers={"Content-Type": "text/html"})
    result = run(tmp_path, fake_oomnitza, tanium)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("assets") == []


@pytest.mark.parametrize(
    ("next_id", "message"),
    [
        (None, "no meta.nextAssetId; treating it as the last page"),
        (1, "does not move past 1; stopping to avoid a loop"),
    ],
)
def test_broken_next_asset_id_stops(
    tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza, next_id: Any, message: str
) -> None:
    tanium.next_id_override = next_id
    result = run(tmp_path, fake_oomnitza, tanium)
    assert result.code == 0, result.all
    assert_accounted(result, "tanium", pulled=3, sent=3)
    assert len(tanium.calls(ASSETS)) == 1
    assert message in result.err


def test_no_credentials_is_a_config_error(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, tanium, username="", password="")
    assert_one_line_error(result, "[tanium] set session_token (a Tanium API token), or username and password")
    assert tanium.requests == []


def test_applications_can_be_switched_off(tmp_path: Path, tanium: FakeTanium, fake_oomnitza: FakeOomnitza) -> None:
    settings = {"url": tanium.url, "session_token": API_TOKEN, "sync_field": "NAME", "view": "12"}
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "tanium",
        settings,
        {"NAME": "computer_name", "APPLICATIONS": '{"source": "", "hardcoded": []}'},
    )
    result = upload(ini, "tanium")
    assert result.code == 0, result.all
    assert_accounted(result, "tanium", pulled=5, sent=5)
    assert fake_oomnitza.record("assets", NAME="WKS-0042.corp.example") == {
        "NAME": "WKS-0042.corp.example",
        "APPLICATIONS": [],
    }
    assert "does not include ci_installed_application" not in result.err  # software deliberately off
