"""[google_mobile_devices] end to end through the CLI against the fake Google (token endpoint, Admin
SDK mobile devices, Cloud Identity devices) and the fake Oomnitza."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.google import (
    ADMIN,
    CALLER_EMAIL,
    CLIENT_EMAIL,
    CLOUD_IDENTITY_SCOPE,
    COMPANY_PHONE,
    IAM_KEY_ID,
    KEY_ID,
    MOBILE_PATH,
    MOBILE_SCOPE,
    PIXEL,
    SIGN_DENIED,
    SIGN_JWT_PATH,
    FakeGoogle,
    ambient_environment,
    keyless_settings,
    page_token,
    phone,
    quota_body,
    rsa_key_pair,
    section_settings,
)
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

SECTION = "google_mobile_devices"
MAPPINGS = {
    "RESOURCE_ID": '{"source": "resourceId"}',
    "SERIAL_NUMBER": '{"source": "serialNumber"}',
    "MODEL": '{"source": "model"}',
    "OS": '{"source": "os"}',
    "OWNER_EMAIL": '{"source": "email.0"}',
    "OWNER_NAME": '{"source": "name.0"}',
    "FIRST_APP": '{"source": "applications.0.displayName"}',
    "LAST_SYNC": '{"source": "lastSync"}',
}
PIXEL_RECORD = {
    "RESOURCE_ID": "AFiQxQ8Zq1kD2exampleR1",
    "SERIAL_NUMBER": "39011FDJH00ABC",
    "MODEL": "Pixel 8",
    "OS": "Android 15",
    "OWNER_EMAIL": "ana.silva@example.com",
    "OWNER_NAME": "Ana Silva",
    "FIRST_APP": "Gmail",
    "LAST_SYNC": "2026-09-14T07:30:00.000Z",  # no converter by default
}


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return rsa_key_pair()


def make(keys: tuple[str, str], **kwargs: Any) -> Iterator[FakeGoogle]:
    fake = FakeGoogle(keys[1], **kwargs)
    fake.mobile += [phone(i) for i in range(3)]  # 5 devices
    with serving(fake):
        yield fake


@pytest.fixture
def google(keys: tuple[str, str]) -> Iterator[FakeGoogle]:
    yield from make(keys)


def run(
    tmp_path: Path,
    oomnitza: FakeOomnitza,
    google: FakeGoogle,
    keys: tuple[str, str],
    mappings: dict[str, str] | None = None,
    **extra: str,
) -> Any:
    settings = section_settings(google, keys[0], **{"page_size": "2", "sync_field": "RESOURCE_ID", **extra})
    return upload(write_config(tmp_path, oomnitza, SECTION, settings, mappings or MAPPINGS), SECTION)


def test_several_pages(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=5, sent=5)
    calls = google.calls(MOBILE_PATH)
    assert len(calls) == 3
    assert calls[0].query == {"projection": "FULL", "maxResults": "2"}
    assert "pageToken" in calls[1].query and "pageToken" in calls[2].query
    assert len(google.assertions) == 1
    assert (google.assertions[0]["sub"], google.assertions[0]["scope"]) == (ADMIN, MOBILE_SCOPE)
    assert fake_oomnitza.record("assets", RESOURCE_ID="AFiQxQ8Zq1kD2exampleR1") == PIXEL_RECORD
    iphone = fake_oomnitza.record("assets", RESOURCE_ID="AFiQxQ9Lm2nExampleR2")
    # iOS Sync devices have no serial, no name, no applications
    assert (iphone["SERIAL_NUMBER"], iphone["OWNER_NAME"], iphone["FIRST_APP"], iphone["OWNER_EMAIL"]) == (
        None,
        None,
        None,
        "jdoe@example.com",
    )
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "GoogleMobileDevices"
    assert "BEGIN PRIVATE KEY" not in result.all


def test_default_page_size_is_googles_maximum(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    settings = section_settings(google, keys[0], sync_field="RESOURCE_ID")
    result = upload(write_config(tmp_path, fake_oomnitza, SECTION, settings, MAPPINGS), SECTION)
    assert_accounted(result, SECTION, pulled=5, sent=5)
    assert [c.query["maxResults"] for c in google.calls(MOBILE_PATH)] == ["100"]


def test_page_size_above_googles_limit(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, google, keys, page_size="500")
    assert_one_line_error(result, "page_size = '500' must be a whole number from 1 to 100")
    assert not google.requests


def test_mobile_scope_not_delegated(tmp_path: Path, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    for google in make(keys, delegated={"https://www.googleapis.com/auth/admin.directory.device.chromeos.readonly"}):
        result = run(tmp_path, fake_oomnitza, google, keys)
        assert_one_line_error(result, "(unauthorized_client: Client is unauthorized", MOBILE_SCOPE)
        assert len(google.calls("/token")) == 1
        assert not google.calls(MOBILE_PATH)


def test_subject_not_an_admin(tmp_path: Path, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    for google in make(keys, users={"ana.silva@example.com"}):
        result = run(tmp_path, fake_oomnitza, google, keys, service_account_impersonate="ana.silva@example.com")
        assert_one_line_error(
            result,
            "Google refused access (403 Not Authorized to access this resource/api)",
            "Manage Devices and Settings",
        )
        assert len(google.calls(MOBILE_PATH)) == 1


def test_rate_limit_403_and_429(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    google.fail("GET", MOBILE_PATH, 403, body=quota_body("rateLimitExceeded"))
    google.fail("GET", MOBILE_PATH, 429, headers={"Retry-After": "1"}, body=quota_body("rateLimitExceeded"))
    started = time.monotonic()
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=5, sent=5)
    assert time.monotonic() - started >= 1.0
    assert len(google.calls(MOBILE_PATH)) == 5


def test_quota_never_recovers(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    google.fail(
        "GET", MOBILE_PATH, 403, times=100, body=quota_body("userRateLimitExceeded"), headers={"Retry-After": "0"}
    )
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert_one_line_error(result, "failed: 403 Forbidden after 8 attempts", "Quota exceeded")
    assert len(google.calls(MOBILE_PATH)) == 8


def test_5xx_retried(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    google.fail("GET", MOBILE_PATH, 500, body={"error": {"code": 500, "message": "Internal error"}})
    google.fail("POST", "/token", 503, body={"error": "temporarily_unavailable"})  # google-auth retries it
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=5, sent=5)
    assert len(google.calls("/token")) == 2


def test_empty_customer(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    google.mobile.clear()
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    google.fail("GET", MOBILE_PATH, 200, body={"kind": "admin#directory#mobiledevices", "mobiledevices": "oops"})
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert_one_line_error(result, "Google's 'mobiledevices' is not a list")
    google.fail("GET", MOBILE_PATH, 200, body="not json", headers={"Content-Type": "text/plain"})
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/plain)")


def test_bad_request_shows_googles_message(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    google.fail(
        "GET",
        MOBILE_PATH,
        400,
        body={"error": {"code": 400, "message": "Invalid Input: maxResults", "errors": [{"reason": "invalid"}]}},
    )
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert_one_line_error(result, "failed: 400 Bad Request (Invalid Input: maxResults)")
    assert len(google.calls(MOBILE_PATH)) == 1


def test_cloud_identity_company_owned_devices(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    mappings = {
        "NAME": '{"source": "name"}',
        "SERIAL_NUMBER": '{"source": "serialNumber"}',
        "OWNER_TYPE": '{"source": "ownerType"}',
        "MAC": '{"source": "wifiMacAddresses.0"}',
    }
    result = run(
        tmp_path,
        fake_oomnitza,
        google,
        keys,
        mappings,
        device_api="cloud_identity",
        cloud_identity_url=f"{google.url}/v1",
        sync_field="NAME",
    )
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=1, sent=1)
    assert fake_oomnitza.record("assets", NAME="devices/AFiQxQ8CompanyOwned01") == {
        "NAME": "devices/AFiQxQ8CompanyOwned01",
        "SERIAL_NUMBER": "R5CT00COMPANY1",
        "OWNER_TYPE": "COMPANY",
        "MAC": "aa:bb:cc:dd:ee:01",
    }
    assert google.calls("/v1/devices")[0].query == {"customer": "customers/my_customer", "pageSize": "2"}
    assert google.assertions[0]["scope"] == CLOUD_IDENTITY_SCOPE
    assert not google.calls(MOBILE_PATH)


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(google, fault, "GET", MOBILE_PATH, query={"pageToken": page_token(2)})
    result = run(tmp_path, fake_oomnitza, google, keys, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=5, sent=5)
    assert len(fake_oomnitza.records("assets")) == 5
    assert len(google.calls(MOBILE_PATH)) == 4


def test_server_side_mapping(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    fake_oomnitza.set_mapping("GoogleMobileDevices", {"imei": "IMEI", "buildNumber": "BUILD"})
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=5, sent=5)
    assert all(c.query["projection"] == "FULL" and "fields" not in c.query for c in google.calls(MOBILE_PATH))
    record = fake_oomnitza.record("assets", RESOURCE_ID="AFiQxQ8Zq1kD2exampleR1")
    assert (record["IMEI"], record["BUILD"]) == (PIXEL["imei"], PIXEL["buildNumber"])


@pytest.mark.parametrize("fault", [*STANDARD_FAULTS, "resource_exhausted"])
def test_cloud_identity_pages_and_faults(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    google.cloud_devices = [
        {**COMPANY_PHONE, "name": f"devices/AFiQxQ8CompanyOwned{i:02d}", "serialNumber": f"R5CT{i:010d}"}
        for i in range(5)
    ]
    second = {"pageToken": page_token(2)}
    if fault == "resource_exhausted":  # Cloud Identity's quota answer (AIP-193)
        body = {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}
        google.fail("GET", "/v1/devices", 429, body=body, query=second)
    else:
        inject_fault(google, fault, "GET", "/v1/devices", query=second)
    mappings = {"NAME": '{"source": "name"}', "SERIAL_NUMBER": '{"source": "serialNumber"}'}
    result = run(
        tmp_path,
        fake_oomnitza,
        google,
        keys,
        mappings,
        device_api="cloud_identity",
        cloud_identity_url=google.url,
        sync_field="NAME",
        request_timeout=STALL_TIMEOUT,
    )
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=5, sent=5)
    assert len(fake_oomnitza.records("assets")) == 5
    assert [c.query.get("pageToken") for c in google.calls("/v1/devices")] == [
        None,
        page_token(2),
        page_token(2),
        page_token(4),
    ]


# -- keyless: ambient credentials + IAM signJwt -------------------------------------------------------


def use_ambient(monkeypatch: pytest.MonkeyPatch, google: FakeGoogle, tmp_path: Path, *, key_file: bool = True) -> None:
    for name, value in ambient_environment(google, tmp_path, key_file=key_file).items():
        monkeypatch.setenv(name, value)


def run_keyless(
    tmp_path: Path, oomnitza: FakeOomnitza, google: FakeGoogle, mappings: dict[str, str] | None = None, **extra: str
) -> Any:
    settings = keyless_settings(google, **{"page_size": "2", "sync_field": "RESOURCE_ID", **extra})
    return upload(write_config(tmp_path, oomnitza, SECTION, settings, mappings or MAPPINGS), SECTION)


def test_keyless_several_pages(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path)
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=5, sent=5)
    assert fake_oomnitza.record("assets", RESOURCE_ID="AFiQxQ8Zq1kD2exampleR1") == PIXEL_RECORD
    assert len(google.calls(MOBILE_PATH)) == 3
    assert [(s["caller"], s["iss"], s["sub"], s["scope"]) for s in google.signed] == [
        (CALLER_EMAIL, CLIENT_EMAIL, ADMIN, MOBILE_SCOPE)
    ]
    assert len(google.assertions) == 1
    assert (google.assertions[0]["header"]["kid"], google.assertions[0]["scope"]) == (IAM_KEY_ID, MOBILE_SCOPE)
    assert "fake-token" not in result.all and "fake-caller-token" not in result.all


def test_keyless_cloud_identity(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path)
    mappings = {"NAME": '{"source": "name"}', "OWNER_TYPE": '{"source": "ownerType"}'}
    result = run_keyless(
        tmp_path,
        fake_oomnitza,
        google,
        mappings,
        device_api="cloud_identity",
        cloud_identity_url=google.url,
        sync_field="NAME",
    )
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=1, sent=1)
    assert google.signed[0]["scope"] == google.assertions[0]["scope"] == CLOUD_IDENTITY_SCOPE


def test_keyless_iam_refuses_to_sign(
    tmp_path: Path, keys: tuple[str, str], fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    for google in make(keys, token_creators={"someone-else@acme-ops.iam.gserviceaccount.com"}):
        use_ambient(monkeypatch, google, tmp_path)
        result = run_keyless(tmp_path, fake_oomnitza, google)
        assert_one_line_error(
            result,
            f"[{SECTION}] IAM refused to sign for {CLIENT_EMAIL} (403 {SIGN_DENIED}): "
            f"grant {CALLER_EMAIL} roles/iam.serviceAccountTokenCreator on {CLIENT_EMAIL}",
        )
        assert len(google.calls(SIGN_JWT_PATH)) == 1
        assert not google.assertions and not google.calls(MOBILE_PATH)


def test_keyless_without_ambient_credentials(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path, key_file=False)
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert_one_line_error(
        result, f"[{SECTION}] no ambient Google credentials found (Your default credentials were not found."
    )
    assert not google.calls("/token") and not google.calls(SIGN_JWT_PATH)


def test_keyless_expired_token_refreshed(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path)
    google.fail("GET", MOBILE_PATH, 401, body={"error": {"code": 401, "message": "Invalid Credentials"}})
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=5, sent=5)
    assert len(google.signed) == 2 and len(google.assertions) == 2
    assert len(google.caller_tokens) == 1
    assert google.calls(MOBILE_PATH)[-1].headers["authorization"] == "Bearer ya29.fake-token-2"


def test_key_config_unaffected(
    tmp_path: Path,
    google: FakeGoogle,
    keys: tuple[str, str],
    fake_oomnitza: FakeOomnitza,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_ambient(monkeypatch, google, tmp_path)
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, SECTION, pulled=5, sent=5)
    assert not google.calls(SIGN_JWT_PATH) and not google.caller_tokens
    assert [a["header"]["kid"] for a in google.assertions] == [KEY_ID]
