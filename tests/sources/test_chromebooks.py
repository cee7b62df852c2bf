"""[chromebooks] end to end through the CLI against the fake Google (token endpoint + Admin SDK)
and the fake Oomnitza."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.google import (
    ADMIN,
    CHROMEOS_PATH,
    CHROMEOS_SCOPE,
    CLIENT_EMAIL,
    CLIENT_ID,
    GOOGLE_TOKEN_URI,
    FakeGoogle,
    chromebook,
    quota_body,
    rsa_key_pair,
    section_settings,
    service_account_key,
)
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve
from tests.sourcekit import assert_accounted, assert_one_line_error, upload, write_config

MAPPINGS = {
    "DEVICE_ID": '{"source": "deviceId"}',
    "SERIAL_NUMBER": '{"source": "serialNumber"}',
    "MODEL": '{"source": "model"}',
    "STATUS": '{"source": "status"}',
    "ASSET_TAG": '{"source": "annotatedAssetId"}',
    "LAST_USER": '{"source": "recentUsers.0.email"}',
    "IP": '{"source": "lastKnownNetwork.0.ipAddress"}',
    "MAC": '{"source": "macAddress"}',
}
CHROMEBOOK_RECORD = {
    "DEVICE_ID": "3f1e2d3c-5b6a-4c7d-8e9f-0a1b2c3d4e5f",
    "SERIAL_NUMBER": "5CD1234ABC",
    "MODEL": "HP Chromebook 14 G7",
    "STATUS": "ACTIVE",
    "ASSET_TAG": "OOM-55120",
    "LAST_USER": "student42@example.edu",
    "IP": "10.4.5.66",
    "MAC": "a4b1c1223344",
}


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return rsa_key_pair()


def make(keys: tuple[str, str], **kwargs: Any) -> Iterator[FakeGoogle]:
    fake = FakeGoogle(keys[1], **kwargs)
    fake.chromeos += [chromebook(i) for i in range(3)]  # 5 devices
    with serve(fake.app) as url:
        fake.url = url
        yield fake


@pytest.fixture
def google(keys: tuple[str, str]) -> Iterator[FakeGoogle]:
    yield from make(keys)


def run(tmp_path: Path, oomnitza: FakeOomnitza, google: FakeGoogle, keys: tuple[str, str], **extra: str) -> Any:
    settings = section_settings(google, keys[0], **{"page_size": "2", "sync_field": "DEVICE_ID", **extra})
    return upload(write_config(tmp_path, oomnitza, "chromebooks", settings, MAPPINGS), "chromebooks")


def list_calls(google: FakeGoogle) -> list[Any]:
    return google.calls(CHROMEOS_PATH)


def test_several_pages(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                       fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    calls = list_calls(google)
    assert len(calls) == 3
    assert calls[0].query == {"projection": "FULL", "maxResults": "2"}
    assert calls[1].query["pageToken"] and calls[1].query["projection"] == "FULL"
    assert all(c.headers["authorization"] == "Bearer ya29.fake-token-1" for c in calls)
    # one delegated token for the run, asked with a signed JWT: sub = the admin, the read-only scope
    assert len(google.assertions) == 1
    claims = google.assertions[0]
    assert (claims["iss"], claims["sub"], claims["scope"], claims["aud"]) == (
        CLIENT_EMAIL, ADMIN, CHROMEOS_SCOPE, GOOGLE_TOKEN_URI)
    assert claims["header"]["kid"] == "4f1c0ffee0ddba11d00dfeedfacecafe12345678"
    assert fake_oomnitza.record("assets", DEVICE_ID=CHROMEBOOK_RECORD["DEVICE_ID"]) == CHROMEBOOK_RECORD
    disabled = fake_oomnitza.record("assets", SERIAL_NUMBER="NXHQEAA00123456789")
    assert (disabled["STATUS"], disabled["LAST_USER"], disabled["MAC"]) == ("DISABLED", None, None)
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Chromebooks"
    assert "BEGIN PRIVATE KEY" not in result.all and "fake-token" not in result.all


def test_default_page_size_and_capped_pages(tmp_path: Path, keys: tuple[str, str],
                                            fake_oomnitza: FakeOomnitza) -> None:
    for google in make(keys, page_cap=2):
        settings = section_settings(google, keys[0], sync_field="DEVICE_ID", url=f"{google.url}/admin/directory/v1/")
        result = upload(write_config(tmp_path, fake_oomnitza, "chromebooks", settings, MAPPINGS), "chromebooks")
        assert_accounted(result, "chromebooks", pulled=5, sent=5)
        calls = list_calls(google)
        assert [c.query["maxResults"] for c in calls] == ["300"] * 3  # asked 300, got 2: followed the token


def test_delegation_missing(tmp_path: Path, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    for google in make(keys, delegated=set()):
        result = run(tmp_path, fake_oomnitza, google, keys)
        assert_one_line_error(
            result,
            "Google refused the service account's token request (unauthorized_client: Client is unauthorized",
            f"grant domain-wide delegation to client id {CLIENT_ID} with the scope {CHROMEOS_SCOPE}")
        assert len(google.calls("/token")) == 1  # a refused credential is not retried
        assert not list_calls(google)
        assert "BEGIN PRIVATE KEY" not in result.all
        assert not fake_oomnitza.bulk_payloads


def test_unknown_admin(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                       fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, google, keys, service_account_impersonate="nobody@example.edu")
    assert_one_line_error(result, "(invalid_grant: Invalid email or User ID)",
                          "nobody@example.edu must be an existing Workspace user")
    assert len(google.calls("/token")) == 1


def test_key_that_does_not_match(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                                 fake_oomnitza: FakeOomnitza) -> None:
    other_private, _ = rsa_key_pair()  # a deleted/rotated key: the signature no longer verifies
    result = run(tmp_path, fake_oomnitza, google, (other_private, keys[1]))
    assert_one_line_error(result, "(invalid_grant: Invalid JWT Signature.)", "download a new JSON key for")
    assert not google.assertions


def test_subject_not_an_admin(tmp_path: Path, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    for google in make(keys, users={"teacher@example.edu"}):
        result = run(tmp_path, fake_oomnitza, google, keys, service_account_impersonate="teacher@example.edu")
        assert_one_line_error(result, "Google refused access (403 Not Authorized to access this resource/api)",
                              "teacher@example.edu must be a Workspace administrator")
        assert len(list_calls(google)) == 1  # a refusal is not retried


def test_quota_403_retried(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                           fake_oomnitza: FakeOomnitza) -> None:
    google.fail("GET", CHROMEOS_PATH, 403, body=quota_body("userRateLimitExceeded"))
    google.fail("GET", CHROMEOS_PATH, 403, body=quota_body("quotaExceeded"))
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert len(list_calls(google)) == 5
    assert len(google.assertions) == 1  # a quota answer is not an auth problem


def test_429_with_retry_after(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                              fake_oomnitza: FakeOomnitza) -> None:
    google.fail("GET", CHROMEOS_PATH, 429, headers={"Retry-After": "1"}, body=quota_body("rateLimitExceeded"))
    started = time.monotonic()
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert time.monotonic() - started >= 1.0


def test_5xx_retried(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                     fake_oomnitza: FakeOomnitza) -> None:
    google.fail("GET", CHROMEOS_PATH, 503, times=2, body={"error": {"code": 503, "message": "Backend Error"}})
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)


def test_expired_token_refreshed_once(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                                      fake_oomnitza: FakeOomnitza) -> None:
    google.fail("GET", CHROMEOS_PATH, 401, body={"error": {"code": 401, "message": "Invalid Credentials"}})
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert len(google.assertions) == 2
    assert list_calls(google)[-1].headers["authorization"] == "Bearer ya29.fake-token-2"


def test_empty_customer(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                        fake_oomnitza: FakeOomnitza) -> None:
    google.chromeos.clear()  # Google omits "chromeosdevices" altogether
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=0)
    assert len(list_calls(google)) == 1
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                        fake_oomnitza: FakeOomnitza) -> None:
    google.fail("GET", CHROMEOS_PATH, 200, body="<html>Error 502 (Server Error)</html>",
                headers={"Content-Type": "text/html"})
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")


def test_key_file_path(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                       fake_oomnitza: FakeOomnitza) -> None:
    key_file = tmp_path / "acme-inventory-4f1c0ffee0dd.json"
    key_file.write_text(json.dumps(service_account_key(keys[0], f"{google.url}/token"), indent=2))
    result = run(tmp_path, fake_oomnitza, google, keys, service_account_json_key=str(key_file))
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    result = run(tmp_path, fake_oomnitza, google, keys, service_account_json_key=str(tmp_path / "gone.json"))
    assert_one_line_error(result, "service_account_json_key: cannot read the key file it names (No such file")


def test_key_pasted_over_several_lines(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                                       fake_oomnitza: FakeOomnitza) -> None:
    pretty = json.dumps(service_account_key(keys[0], f"{google.url}/token"), indent=2)
    result = run(tmp_path, fake_oomnitza, google, keys, service_account_json_key=pretty)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("service_account_impersonate", "", "set service_account_impersonate"),
    ("service_account_json_key", "{}", "set service_account_json_key"),
    ("service_account_json_key", '{"type": "service_account", "client_email": ',
     "service_account_json_key (inline) is not valid JSON"),
    ("service_account_json_key", '{"type": "authorized_user", "client_id": "x"}',
     "credential of type 'authorized_user'"),
    ("service_account_json_key", '{"type": "service_account", "client_email": "a@b.c"}', "lacks private_key"),
    ("page_size", "500", "page_size must be a number from 1 to 300"),
])
def test_config_errors(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza,
                       setting: str, value: str, message: str) -> None:
    result = run(tmp_path, fake_oomnitza, google, keys, **{setting: value})
    assert_one_line_error(result, message)
    assert not google.requests


def test_unreadable_private_key(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str],
                                fake_oomnitza: FakeOomnitza) -> None:
    broken = "-----BEGIN PRIVATE KEY-----\nTm90IGEga2V5IGF0IGFsbCwganVzdCB0ZXh0\n-----END PRIVATE KEY-----\n"
    result = run(tmp_path, fake_oomnitza, google, (broken, keys[1]))
    assert_one_line_error(result, "the private_key cannot be used")
    assert "Tm90IGEga2V5IGF0IGFsbCwganVzdCB0ZXh0" not in result.all
    assert not google.requests
