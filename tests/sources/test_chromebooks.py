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
    CALLER_EMAIL,
    CHROMEBOOK,
    CHROMEOS_PATH,
    CHROMEOS_SCOPE,
    CLIENT_EMAIL,
    CLIENT_ID,
    GOOGLE_TOKEN_URI,
    IAM_API_DISABLED,
    IAM_KEY_ID,
    KEY_ID,
    SIGN_DENIED,
    SIGN_JWT_PATH,
    UNAUTHENTICATED,
    FakeGoogle,
    ambient_environment,
    chromebook,
    keyless_settings,
    page_token,
    quota_body,
    rpc_error,
    rsa_key_pair,
    section_settings,
    service_account_key,
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
    with serving(fake):
        yield fake


@pytest.fixture
def google(keys: tuple[str, str]) -> Iterator[FakeGoogle]:
    yield from make(keys)


def run(tmp_path: Path, oomnitza: FakeOomnitza, google: FakeGoogle, keys: tuple[str, str], **extra: str) -> Any:
    settings = section_settings(google, keys[0], **{"page_size": "2", "sync_field": "DEVICE_ID", **extra})
    return upload(write_config(tmp_path, oomnitza, "chromebooks", settings, MAPPINGS), "chromebooks")


def list_calls(google: FakeGoogle) -> list[Any]:
    return google.calls(CHROMEOS_PATH)


def test_several_pages(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
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
        CLIENT_EMAIL,
        ADMIN,
        CHROMEOS_SCOPE,
        GOOGLE_TOKEN_URI,
    )
    assert claims["header"]["kid"] == "4f1c0ffee0ddba11d00dfeedfacecafe12345678"
    assert fake_oomnitza.record("assets", DEVICE_ID=CHROMEBOOK_RECORD["DEVICE_ID"]) == CHROMEBOOK_RECORD
    disabled = fake_oomnitza.record("assets", SERIAL_NUMBER="NXHQEAA00123456789")
    assert (disabled["STATUS"], disabled["LAST_USER"], disabled["MAC"]) == ("DISABLED", None, None)
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Chromebooks"
    assert "BEGIN PRIVATE KEY" not in result.all and "fake-token" not in result.all


def test_default_page_size_and_capped_pages(tmp_path: Path, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
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
            f"grant domain-wide delegation to client id {CLIENT_ID} with the scope {CHROMEOS_SCOPE}",
        )
        assert len(google.calls("/token")) == 1  # a refused credential is not retried
        assert not list_calls(google)
        assert "BEGIN PRIVATE KEY" not in result.all
        assert all(p["error"] for p in fake_oomnitza.bulk_payloads)  # only the failure report


def test_unknown_admin(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, google, keys, service_account_impersonate="nobody@example.edu")
    assert_one_line_error(
        result, "(invalid_grant: Invalid email or User ID)", "nobody@example.edu must be an existing Workspace user"
    )
    assert len(google.calls("/token")) == 1


def test_key_that_does_not_match(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    other_private, _ = rsa_key_pair()  # a deleted/rotated key: the signature no longer verifies
    result = run(tmp_path, fake_oomnitza, google, (other_private, keys[1]))
    assert_one_line_error(result, "(invalid_grant: Invalid JWT Signature.)", "download a new JSON key for")
    assert not google.assertions


def test_subject_not_an_admin(tmp_path: Path, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    for google in make(keys, users={"teacher@example.edu"}):
        result = run(tmp_path, fake_oomnitza, google, keys, service_account_impersonate="teacher@example.edu")
        assert_one_line_error(
            result,
            "Google refused access (403 Not Authorized to access this resource/api)",
            "teacher@example.edu must be a Workspace administrator",
        )
        assert len(list_calls(google)) == 1  # a refusal is not retried


def test_quota_403_retried(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    google.fail("GET", CHROMEOS_PATH, 403, body=quota_body("userRateLimitExceeded"))
    google.fail("GET", CHROMEOS_PATH, 403, body=quota_body("quotaExceeded"))
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert len(list_calls(google)) == 5
    assert len(google.assertions) == 1  # a quota answer is not an auth problem


def test_429_with_retry_after(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    google.fail("GET", CHROMEOS_PATH, 429, headers={"Retry-After": "1"}, body=quota_body("rateLimitExceeded"))
    started = time.monotonic()
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert time.monotonic() - started >= 1.0


@pytest.mark.parametrize("fault", [*STANDARD_FAULTS, "quota_403", "quota_429"])
def test_transient_fault_on_a_later_page(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    second = {"pageToken": page_token(2)}
    if fault == "quota_403":
        google.fail("GET", CHROMEOS_PATH, 403, body=quota_body("rateLimitExceeded"), query=second)
    elif fault == "quota_429":
        google.fail("GET", CHROMEOS_PATH, 429, body=quota_body("rateLimitExceeded", 429), query=second)
    else:
        inject_fault(google, fault, "GET", CHROMEOS_PATH, query=second)
    result = run(tmp_path, fake_oomnitza, google, keys, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert len(fake_oomnitza.records("assets")) == 5
    assert [c.query.get("pageToken") for c in list_calls(google)] == [None, page_token(2), page_token(2), page_token(4)]
    assert len(google.assertions) == 1  # a throttle or a server fault is not an auth problem


def test_server_side_mapping(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    # a field mapped only in Oomnitza arrives: the full projection is read, no partial-response fields=
    fake_oomnitza.set_mapping("Chromebooks", {"orgUnitPath": "ORG_UNIT", "osVersion": "OS_VERSION"})
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert all(c.query["projection"] == "FULL" and "fields" not in c.query for c in list_calls(google))
    record = fake_oomnitza.record("assets", DEVICE_ID=CHROMEBOOK_RECORD["DEVICE_ID"])
    assert (record["ORG_UNIT"], record["OS_VERSION"]) == (CHROMEBOOK["orgUnitPath"], CHROMEBOOK["osVersion"])


def test_5xx_retried(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    google.fail("GET", CHROMEOS_PATH, 503, times=2, body={"error": {"code": 503, "message": "Backend Error"}})
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)


def test_expired_token_refreshed_once(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    google.fail("GET", CHROMEOS_PATH, 401, body={"error": {"code": 401, "message": "Invalid Credentials"}})
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert len(google.assertions) == 2
    assert list_calls(google)[-1].headers["authorization"] == "Bearer ya29.fake-token-2"


def test_empty_customer(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    google.chromeos.clear()  # Google omits "chromeosdevices" altogether
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=0)
    assert len(list_calls(google)) == 1
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    google.fail(
        "GET", CHROMEOS_PATH, 200, body="<html>Error 502 (Server Error)</html>", headers={"Content-Type": "text/html"}
    )
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")


def test_key_file_path(tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza) -> None:
    key_file = tmp_path / "acme-inventory-4f1c0ffee0dd.json"
    key_file.write_text(json.dumps(service_account_key(keys[0], f"{google.url}/token"), indent=2))
    result = run(tmp_path, fake_oomnitza, google, keys, service_account_json_key=str(key_file))
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    result = run(tmp_path, fake_oomnitza, google, keys, service_account_json_key=str(tmp_path / "gone.json"))
    assert_one_line_error(result, "service_account_json_key: cannot read the key file it names (No such file")


def test_key_pasted_over_several_lines(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    pretty = json.dumps(service_account_key(keys[0], f"{google.url}/token"), indent=2)
    result = run(tmp_path, fake_oomnitza, google, keys, service_account_json_key=pretty)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("service_account_impersonate", "", "set service_account_impersonate"),
        ("service_account_json_key", "{}", "set service_account_json_key"),
        (
            "service_account_json_key",
            '{"type": "service_account", "client_email": ',
            "service_account_json_key (inline) is not valid JSON",
        ),
        (
            "service_account_json_key",
            '{"type": "authorized_user", "client_id": "x"}',
            "credential of type 'authorized_user'",
        ),
        ("service_account_json_key", '{"type": "service_account", "client_email": "a@b.c"}', "lacks private_key"),
        ("page_size", "500", "page_size = '500' must be a whole number from 1 to 300"),
    ],
)
def test_config_errors(
    tmp_path: Path,
    google: FakeGoogle,
    keys: tuple[str, str],
    fake_oomnitza: FakeOomnitza,
    setting: str,
    value: str,
    message: str,
) -> None:
    result = run(tmp_path, fake_oomnitza, google, keys, **{setting: value})
    assert_one_line_error(result, message)
    assert not google.requests


def test_unreadable_private_key(
    tmp_path: Path, google: FakeGoogle, keys: tuple[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    broken = "-----BEGIN PRIVATE KEY-----\nTm90IGEga2V5IGF0IGFsbCwganVzdCB0ZXh0\n-----END PRIVATE KEY-----\n"
    result = run(tmp_path, fake_oomnitza, google, (broken, keys[1]))
    assert_one_line_error(result, "the private_key cannot be used")
    assert "Tm90IGEga2V5IGF0IGFsbCwganVzdCB0ZXh0" not in result.all
    assert not google.requests


# -- keyless: ambient credentials + IAM signJwt -------------------------------------------------------


def use_ambient(monkeypatch: pytest.MonkeyPatch, google: FakeGoogle, tmp_path: Path, *, key_file: bool = True) -> None:
    """The connector runs in-process: its environment is this process's (GOOGLE_APPLICATION_CREDENTIALS etc.)."""
    for name, value in ambient_environment(google, tmp_path, key_file=key_file).items():
        monkeypatch.setenv(name, value)


def run_keyless(tmp_path: Path, oomnitza: FakeOomnitza, google: FakeGoogle, **extra: str) -> Any:
    settings = keyless_settings(google, **{"page_size": "2", "sync_field": "DEVICE_ID", **extra})
    return upload(write_config(tmp_path, oomnitza, "chromebooks", settings, MAPPINGS), "chromebooks")


def test_keyless_several_pages(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path)
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert fake_oomnitza.record("assets", DEVICE_ID=CHROMEBOOK_RECORD["DEVICE_ID"]) == CHROMEBOOK_RECORD
    # the caller (GOOGLE_APPLICATION_CREDENTIALS) got its own token once, and asked IAM once
    assert [c["principal"] for c in google.caller_tokens.values()] == [CALLER_EMAIL]
    sign_calls = google.calls(SIGN_JWT_PATH, "POST")
    assert len(sign_calls) == 1
    assert sign_calls[0].headers["authorization"] == "Bearer ya29.fake-caller-token-1"
    assert len(google.signed) == 1 and google.signed[0]["caller"] == CALLER_EMAIL
    # the IAM-signed JWT was exchanged for the delegated token: sub = the admin, the read-only scope
    assert len(google.assertions) == 1
    claims = google.assertions[0]
    assert (claims["iss"], claims["sub"], claims["scope"], claims["aud"]) == (
        CLIENT_EMAIL,
        ADMIN,
        CHROMEOS_SCOPE,
        GOOGLE_TOKEN_URI,
    )
    assert claims["header"]["kid"] == IAM_KEY_ID
    assert claims["exp"] - claims["iat"] == 3600
    calls = list_calls(google)
    assert len(calls) == 3
    assert all(c.headers["authorization"] == "Bearer ya29.fake-token-1" for c in calls)
    assert "keyless: IAM signs as " + CLIENT_EMAIL in result.err
    assert "fake-token" not in result.all and "fake-caller-token" not in result.all
    assert "BEGIN PRIVATE KEY" not in result.all


def test_keyless_iam_refuses_to_sign(
    tmp_path: Path, keys: tuple[str, str], fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    for google in make(keys, token_creators=set()):  # the caller lacks roles/iam.serviceAccountTokenCreator
        use_ambient(monkeypatch, google, tmp_path)
        result = run_keyless(tmp_path, fake_oomnitza, google)
        assert_one_line_error(
            result,
            f"[chromebooks] IAM refused to sign for {CLIENT_EMAIL} (403 {SIGN_DENIED}): grant {CALLER_EMAIL} "
            f"roles/iam.serviceAccountTokenCreator on {CLIENT_EMAIL} (gcloud iam service-accounts "
            f"add-iam-policy-binding {CLIENT_EMAIL} --member=serviceAccount:{CALLER_EMAIL} "
            "--role=roles/iam.serviceAccountTokenCreator)",
        )
        assert len([line for line in result.err.splitlines() if "IAM refused" in line]) == 1
        assert len(google.calls(SIGN_JWT_PATH)) == 1  # a refusal is not retried
        assert not google.assertions and not list_calls(google)
        assert all(p["error"] for p in fake_oomnitza.bulk_payloads)  # only the failure report


def test_keyless_iam_api_disabled(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path)
    google.fail("POST", SIGN_JWT_PATH, 403, body=IAM_API_DISABLED)
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert_one_line_error(
        result,
        f"IAM refused to sign for {CLIENT_EMAIL} (403 IAM Service Account Credentials API has not been used",
        "enable the IAM Service Account Credentials API",
    )


def test_keyless_without_ambient_credentials(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path, key_file=False)
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert_one_line_error(
        result,
        "[chromebooks] no ambient Google credentials found (Your default credentials were not found.",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "or set service_account_json_key instead",
    )
    assert not google.calls("/token") and not google.calls(SIGN_JWT_PATH)
    assert "Compute Engine" not in result.err  # google-auth's probe warnings are not repeated
    # a GOOGLE_APPLICATION_CREDENTIALS that names no file is the same kind of error
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "gone.json"))
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert_one_line_error(result, "[chromebooks] no ambient Google credentials found (File ", "gone.json was not found")


def test_keyless_caller_token_refused(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path)
    google.callers[CALLER_EMAIL] = rsa_key_pair()[1]  # the caller's key was deleted
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert_one_line_error(
        result,
        f"the ambient Google credentials (service account key {CALLER_EMAIL}) could not "
        "get an access token (Invalid JWT Signature.)",
    )
    assert not google.calls(SIGN_JWT_PATH)


def test_keyless_token_expiry_refreshed(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path)
    google.expires_in = 30  # shorter than the refresh margin: every request needs a fresh delegated token
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert [c.headers["authorization"] for c in list_calls(google)] == [
        "Bearer ya29.fake-token-1",
        "Bearer ya29.fake-token-2",
        "Bearer ya29.fake-token-3",
    ]
    assert len(google.signed) == 3 and len(google.assertions) == 3
    assert len(google.caller_tokens) == 1  # the caller's own token was still good


def test_keyless_401s_refresh_each_token(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path)
    google.fail("GET", CHROMEOS_PATH, 401, body={"error": {"code": 401, "message": "Invalid Credentials"}})
    google.fail("POST", SIGN_JWT_PATH, 401, body=UNAUTHENTICATED)  # the caller's token, revoked
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    # first signJwt: 401 → new caller token → signed; first list call: 401 → signJwt again → new token
    assert len(google.caller_tokens) == 2
    assert [c.headers["authorization"] for c in google.calls(SIGN_JWT_PATH)] == [
        "Bearer ya29.fake-caller-token-1",
        "Bearer ya29.fake-caller-token-2",
        "Bearer ya29.fake-caller-token-2",
    ]
    assert len(google.assertions) == 2
    assert list_calls(google)[-1].headers["authorization"] == "Bearer ya29.fake-token-2"


def test_keyless_iam_5xx_retried(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path)
    google.fail("POST", SIGN_JWT_PATH, 503, body=rpc_error(503, "UNAVAILABLE", "The service is currently unavailable."))
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert len(google.calls(SIGN_JWT_PATH)) == 2 and len(google.signed) == 1


def test_keyless_token_endpoint_5xx_retried(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the exchange of the IAM-signed JWT is the connector's own POST: retried by its HTTP layer
    use_ambient(monkeypatch, google, tmp_path)
    google.grant_outages = 1  # the delegated grant answers 503 once (the caller's own token is not hit)
    result = run_keyless(tmp_path, fake_oomnitza, google)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert len(google.assertions) == 1 and len(google.signed) == 1
    assert len(google.calls("/token")) == 3  # the caller's token, then the exchange twice


def test_keyless_delegation_missing(
    tmp_path: Path, keys: tuple[str, str], fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    for google in make(keys, delegated=set()):
        use_ambient(monkeypatch, google, tmp_path)
        result = run_keyless(tmp_path, fake_oomnitza, google)
        assert_one_line_error(
            result,
            "Google refused the service account's token request (unauthorized_client: Client is unauthorized",
            f"grant domain-wide delegation to the client id of {CLIENT_EMAIL}",
            CHROMEOS_SCOPE,
        )
        assert len(google.signed) == 1 and not list_calls(google)
        assert len(google.calls("/token")) == 2  # the caller's own token, then one refused exchange


def test_keyless_unknown_admin(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_ambient(monkeypatch, google, tmp_path)
    result = run_keyless(tmp_path, fake_oomnitza, google, service_account_impersonate="nobody@example.edu")
    assert_one_line_error(
        result, "(invalid_grant: Invalid email or User ID)", "nobody@example.edu must be an existing Workspace user"
    )


def test_key_config_ignores_ambient_credentials(
    tmp_path: Path,
    google: FakeGoogle,
    keys: tuple[str, str],
    fake_oomnitza: FakeOomnitza,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_ambient(monkeypatch, google, tmp_path)  # present, but a configured key wins: nothing changes
    result = run(tmp_path, fake_oomnitza, google, keys)
    assert result.code == 0, result.all
    assert_accounted(result, "chromebooks", pulled=5, sent=5)
    assert not google.calls(SIGN_JWT_PATH) and not google.caller_tokens
    assert [a["header"]["kid"] for a in google.assertions] == [KEY_ID]
    assert "keyless" not in result.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"service_account_email": "", "service_account_json_key": "{}"},
            "or set service_account_email for keyless signing",
        ),
        (
            {"service_account_json_key": '{"type": "service_account"}'},
            "set service_account_json_key (a key) or service_account_email (keyless signing through IAM), not both",
        ),
        ({"service_account_email": "oomnitza-connector"}, "service_account_email must be the service account's email"),
        (
            {"iam_url": "iamcredentials.googleapis.com"},
            "iam_url = 'iamcredentials.googleapis.com' must start with https://",
        ),
    ],
)
def test_keyless_config_errors(
    tmp_path: Path, google: FakeGoogle, fake_oomnitza: FakeOomnitza, extra: dict[str, str], message: str
) -> None:
    result = run_keyless(tmp_path, fake_oomnitza, google, **extra)
    assert_one_line_error(result, message)
    assert not google.requests
