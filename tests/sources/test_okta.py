"""[okta] end to end through the CLI against the fake Okta and the fake Oomnitza."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.okta import FakeOkta, user
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serving
from tests.sourcekit import STALL_TIMEOUT, assert_accounted, assert_one_line_error, inject_fault, upload, write_config


@pytest.fixture
def okta() -> Iterator[FakeOkta]:
    fake = FakeOkta(users=[user(i) for i in range(7)], max_page=3)
    with serving(fake):
        yield fake


def settings(okta: FakeOkta, **extra: str) -> dict[str, str]:
    return {
        "url": okta.url,
        "api_token": okta.token,
        "default_role": "25",
        "default_position": "Employee",
        "sync_field": "USER",
        **extra,
    }


def test_several_pages_default_mappings(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    result = upload(write_config(tmp_path, fake_oomnitza, "okta", settings(okta)), "okta")
    assert result.code == 0, result.all
    assert_accounted(result, "okta", pulled=7, sent=7)
    assert len(okta.calls("/api/v1/users")) == 3  # 3 + 3 + 1, following Link rel="next"
    rec = fake_oomnitza.record("users", USER="user2@acme.test")
    assert rec == {
        "USER": "user2@acme.test",
        "FIRST_NAME": "Ana2",
        "LAST_NAME": "Silva",
        "EMAIL": "user2@acme.test",
        "PHONE": "+351 910000002",
        "PERMISSIONS_ID": "25",
        "POSITION": "Employee",
    }
    assert okta.requests[0].headers["authorization"] == f"SSWS {okta.token}"
    assert okta.requests[0].query["limit"] == "200"
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Okta"


def test_deprovisioned_second_pass(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    okta.users.append(user(99, status="DEPROVISIONED"))
    result = upload(write_config(tmp_path, fake_oomnitza, "okta", settings(okta)), "okta")
    assert_accounted(result, "okta", pulled=7)
    ini = write_config(tmp_path, fake_oomnitza, "okta", settings(okta, deprovisioned="True"))
    result = upload(ini, "okta", "--full")  # the 7 again (sent: counted) and the deprovisioned one
    assert_accounted(result, "okta", pulled=8, sent=8)
    assert okta.calls()[-1].query["filter"] == 'status eq "DEPROVISIONED"'


def test_ssws_token_without_permission(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    okta.fail("GET", "/api/v1/users", 403, body={"errorCode": "E0000006", "errorSummary": "You do not have permission"})
    result = upload(write_config(tmp_path, fake_oomnitza, "okta", settings(okta)), "okta")
    assert_one_line_error(result, "Okta refused to list users (403 E0000006", "Read-only Administrator")
    assert len(okta.calls()) == 1


def test_bad_token(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(tmp_path, fake_oomnitza, "okta", settings(okta, api_token="wrong-token-123"))
    result = upload(ini, "okta")
    assert_one_line_error(result, "Okta rejected the credentials (401 E0000011 Invalid token provided)")
    assert "wrong-token-123" not in result.all
    assert len(okta.calls()) == 1  # a rejected credential is not retried


def test_429_waits_until_the_rate_limit_reset(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    """Okta's 429 has X-Rate-Limit-Reset (epoch) and no Retry-After; a retry before the reset is throttled
    again, so exactly one 429 proves the connector waited for the reset."""
    okta.throttle(1.0)
    result = upload(write_config(tmp_path, fake_oomnitza, "okta", settings(okta)), "okta")
    assert result.code == 0, result.all
    assert_accounted(result, "okta", pulled=7, sent=7)
    assert len(okta.throttled) == 1
    assert len(okta.calls("/api/v1/users")) == 4  # the throttled one, then 3 pages


@pytest.mark.parametrize("fault", ["okta_429", "5xx_once", "stall"])
def test_transient_fault_on_a_later_page(
    tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    later = {"after": user(2)["id"]}
    if fault == "okta_429":
        okta.fail(
            "GET",
            "/api/v1/users",
            429,
            query=later,
            headers={"X-Rate-Limit-Limit": "600", "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "0"},
            body={"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit due to too many requests."},
        )
    else:
        inject_fault(okta, fault, "GET", "/api/v1/users", query=later)
    ini = write_config(tmp_path, fake_oomnitza, "okta", settings(okta, request_timeout=STALL_TIMEOUT))
    result = upload(ini, "okta")
    assert result.code == 0, result.all
    assert_accounted(result, "okta", pulled=7, sent=7)
    assert len(fake_oomnitza.records("users")) == 7
    assert okta._faults == []  # the fault was met


@pytest.mark.parametrize("url", ["{url}/", "{url}/api/v1", "https://acme-admin.okta.com"])
def test_org_url_forms(url: str, okta: FakeOkta) -> None:
    from oomnitza_connector.sources.okta import org_url

    expected = "https://acme.okta.com" if "acme" in url else okta.url
    assert org_url(url.format(url=okta.url)) == expected
    assert org_url("https://acme-admin.oktapreview.com/") == "https://acme.oktapreview.com"
    assert org_url("https://login-admin.acme.com") == "https://login-admin.acme.com"  # a custom domain stays


def test_oauth_app_without_admin_role(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    okta.admin_role = False
    result = oauth_upload(tmp_path, okta, fake_oomnitza)
    assert_one_line_error(
        result,
        "Okta refused to list users with the app's token (403 E0000006 You do not have permission",
        "assign the API Services app an admin role",
    )
    assert len(okta.issued) == 1 and len(okta.calls("/api/v1/users")) == 1  # not retried
    assert fake_oomnitza.records("users") == []


def test_oauth_app_with_several_keys_needs_kid(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    pem = app_key(tmp_path, okta, kid="key-2026")
    app_key(tmp_path / "other", okta, kid="key-2025")  # the app has two public keys
    okta.client_id = "0oaCLIENT"
    base = settings(okta, api_token="", client_id="0oaCLIENT", private_key_file=str(pem))
    result = upload(write_config(tmp_path, fake_oomnitza, "okta", base), "okta")
    assert_one_line_error(
        result, "Okta refused the OAuth client credentials (401 invalid_client: The client_assertion JWT kid is invalid"
    )
    assert len(okta.calls("/oauth2/v1/token")) == 1  # a refused client is not retried
    result = upload(write_config(tmp_path, fake_oomnitza, "okta", {**base, "kid": "key-2026"}), "okta")
    assert result.code == 0, result.all
    assert_accounted(result, "okta", pulled=7, sent=7)


def test_oauth_app_with_an_ec_key(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    pem = app_key(tmp_path, okta, kind="ec")
    okta.client_id = "0oaCLIENT"
    ini = write_config(
        tmp_path, fake_oomnitza, "okta", settings(okta, api_token="", client_id="0oaCLIENT", private_key_file=str(pem))
    )
    result = upload(ini, "okta")
    assert result.code == 0, result.all
    assert_accounted(result, "okta", pulled=7, sent=7)


def test_wrong_private_key(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    app_key(tmp_path / "registered", okta)
    pem = app_key(tmp_path)  # a key the app does not know
    okta.client_id = "0oaCLIENT"
    ini = write_config(
        tmp_path, fake_oomnitza, "okta", settings(okta, api_token="", client_id="0oaCLIENT", private_key_file=str(pem))
    )
    result = upload(ini, "okta")
    assert_one_line_error(result, "Okta refused the OAuth client credentials (401 invalid_client")
    assert len(okta.calls()) == 1


def test_5xx_retried(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    okta.fail("GET", "/api/v1/users", 502, times=2)
    result = upload(write_config(tmp_path, fake_oomnitza, "okta", settings(okta)), "okta")
    assert result.code == 0, result.all
    assert_accounted(result, "okta", pulled=7, sent=7)


def test_empty_org(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    okta.users.clear()
    result = upload(write_config(tmp_path, fake_oomnitza, "okta", settings(okta)), "okta")
    assert result.code == 0, result.all
    assert_accounted(result, "okta", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    okta.fail("GET", "/api/v1/users", 200, body="<html>maintenance</html>", headers={"Content-Type": "text/html"})
    result = upload(write_config(tmp_path, fake_oomnitza, "okta", settings(okta)), "okta")
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")


def app_key(tmp_path: Path, okta: FakeOkta | None = None, *, kid: str = "k1", kind: str = "rsa") -> Path:
    """A private key in PEM; with ``okta``, its public half is registered with the fake's app."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key: Any = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    tmp_path.mkdir(parents=True, exist_ok=True)
    pem = tmp_path / "okta.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    if okta is not None:
        okta.app_keys[kid] = key.public_key()
    return pem


def test_oauth_private_key_jwt(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    pem = app_key(tmp_path, okta)
    okta.client_id = "0oaCLIENT"
    ini = write_config(
        tmp_path, fake_oomnitza, "okta", settings(okta, api_token="", client_id="0oaCLIENT", private_key_file=str(pem))
    )
    result = upload(ini, "okta")
    assert result.code == 0, result.all
    assert_accounted(result, "okta", pulled=7, sent=7)
    assert len(okta.issued) == 1  # one token for the whole run
    assert okta.calls("/api/v1/users")[0].headers["authorization"] == "Bearer at-0-okta"


def oauth_upload(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza, **extra: str):
    okta.client_id = "0oaCLIENT"
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "okta",
        settings(okta, api_token="", client_id="0oaCLIENT", private_key_file=str(app_key(tmp_path, okta)), **extra),
    )
    return upload(ini, "okta")


def test_oauth_app_that_requires_dpop(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    okta.require_dpop = True
    result = oauth_upload(tmp_path, okta, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "okta", pulled=7, sent=7)
    # Without a proof (refused), with one (asked for the nonce), with the nonce: one DPoP-bound token.
    tokens = okta.calls("/oauth2/v1/token", "POST")
    assert ["dpop" in c.headers for c in tokens] == [False, True, True] and okta.issued == ["at-0-okta"]
    assert "requires DPoP" in result.err
    users = okta.calls("/api/v1/users")
    assert users and all(c.headers["authorization"] == "DPoP at-0-okta" for c in users)
    assert len({c.headers["dpop"] for c in users}) == len(users)  # a fresh proof for every request
    assert "at-0-okta" not in result.all


def test_dpop_nonce_demanded_by_the_resource_server(
    tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza
) -> None:
    okta.require_dpop = okta.resource_nonce = True
    result = oauth_upload(tmp_path, okta, fake_oomnitza, dpop="true")
    assert result.code == 0, result.all
    assert_accounted(result, "okta", pulled=7, sent=7)
    assert all("dpop" in c.headers for c in okta.calls("/oauth2/v1/token", "POST"))  # dpop = true: from the start
    first, again = okta.calls("/api/v1/users")[:2]
    assert first.query == again.query and first.headers["dpop"] != again.headers["dpop"]
    assert len(okta.issued) == 1  # the nonce retry kept the token


def test_dpop_switched_off_but_required(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    okta.require_dpop = True
    result = oauth_upload(tmp_path, okta, fake_oomnitza, dpop="false")
    assert_one_line_error(
        result,
        "[okta] Okta refused the OAuth client credentials (400 invalid_dpop_proof: "
        "The DPoP proof JWT header is missing.) (set dpop = auto or true)",
    )
    assert fake_oomnitza.records("users") == []
