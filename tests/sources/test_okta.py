"""[okta] end to end through the CLI against the fake Okta and the fake Oomnitza."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.okta import FakeOkta, user
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve
from tests.sourcekit import assert_accounted, assert_one_line_error, upload, write_config


@pytest.fixture
def okta() -> Iterator[FakeOkta]:
    fake = FakeOkta(users=[user(i) for i in range(7)], max_page=3)
    with serve(fake.app) as url:
        fake.url = url
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
    result = upload(write_config(tmp_path, fake_oomnitza, "okta", settings(okta, deprovisioned="True")), "okta")
    assert_accounted(result, "okta", pulled=8, sent=8)
    assert okta.calls()[-1].query["filter"] == 'status eq "DEPROVISIONED"'


def test_bad_token(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(tmp_path, fake_oomnitza, "okta", settings(okta, api_token="wrong-token-123"))
    result = upload(ini, "okta")
    assert_one_line_error(result, "Okta rejected the credentials (401 E0000011 Invalid token provided)")
    assert "wrong-token-123" not in result.all
    assert len(okta.calls()) == 1  # a rejected credential is not retried


def test_429_with_rate_limit_headers_then_success(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    okta.fail(
        "GET",
        "/api/v1/users",
        429,
        headers={"Retry-After": "1", "X-Rate-Limit-Remaining": "0"},
        body={"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit due to too many requests."},
    )
    result = upload(write_config(tmp_path, fake_oomnitza, "okta", settings(okta)), "okta")
    assert result.code == 0, result.all
    assert_accounted(result, "okta", pulled=7, sent=7)


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


def app_key(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "okta.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pem


def test_oauth_private_key_jwt(tmp_path: Path, okta: FakeOkta, fake_oomnitza: FakeOomnitza) -> None:
    pem = app_key(tmp_path)
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
        settings(okta, api_token="", client_id="0oaCLIENT", private_key_file=str(app_key(tmp_path)), **extra),
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
