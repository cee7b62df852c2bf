"""[onelogin] end to end through the CLI against the fake OneLogin (API v2) and the fake Oomnitza."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.onelogin import KWAME, LEA, FakeOnelogin, user
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve
from tests.sourcekit import assert_accounted, assert_one_line_error, upload, write_config


@pytest.fixture
def onelogin() -> Iterator[FakeOnelogin]:
    fake = FakeOnelogin(users=[KWAME, LEA, *[user(i) for i in range(3, 8)]], max_page=3)
    with serve(fake.app) as url:
        fake.url = url
        yield fake


def settings(onelogin: FakeOnelogin, **extra: str) -> dict[str, str]:
    return {
        "url": f"{onelogin.url}/api/1/users",  # the seed's form of url
        "client_id": onelogin.client_id,
        "client_secret": onelogin.client_secret,
        "default_role": "25",
        "default_position": "Employee",
        "sync_field": "EMAIL",
        **extra,
    }


def run(
    tmp_path: Path, oomnitza: FakeOomnitza, onelogin: FakeOnelogin, mappings: dict[str, str] | None = None, **extra: str
) -> Any:
    ini = write_config(tmp_path, oomnitza, "onelogin", settings(onelogin, **extra), mappings)
    return upload(ini, "onelogin")


def test_several_pages_default_mappings(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, onelogin)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    calls = onelogin.calls("/api/2/users")
    assert len(calls) == 3  # 3 + 3 + 1: the server caps the 50 asked for, After-Cursor leads on
    assert calls[0].query["limit"] == "50"
    assert "cursor" not in calls[0].query and calls[1].query["cursor"] and calls[2].query["cursor"]
    assert calls[0].headers["authorization"] == "Bearer fake-at-1"
    assert onelogin.calls("/api/1") == []
    token_calls = onelogin.calls("/auth/oauth2/v2/token")
    assert len(token_calls) == 1  # on the host of url, once for the whole run
    assert token_calls[0].headers["authorization"].startswith("Basic ")
    assert fake_oomnitza.record("users", EMAIL="kwame@acme.test") == {
        "USER": "kwame.mensah",
        "FIRST_NAME": "Kwame",
        "LAST_NAME": "Mensah",
        "EMAIL": "kwame@acme.test",
        "PHONE": "+233 20 000 0001",
        "PERMISSIONS_ID": "25",
        "POSITION": "Employee",
    }
    # OneLogin users identified by e-mail have no username
    assert fake_oomnitza.record("users", EMAIL="lea.muller@acme.test") == {
        "USER": None,
        "FIRST_NAME": "Léa",
        "LAST_NAME": "Müller",
        "EMAIL": "lea.muller@acme.test",
        "PHONE": None,
        "PERMISSIONS_ID": "25",
        "POSITION": "Employee",
    }
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "OneLogin"
    assert "client_secret" not in result.all and onelogin.client_secret not in result.all


@pytest.mark.parametrize("suffix", ["", "/", "/api/2", "/api/2/users", "/api/1/users/"])
def test_url_forms(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza, suffix: str) -> None:
    result = run(tmp_path, fake_oomnitza, onelogin, url=onelogin.url + suffix)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)


def test_custom_attribute_lookup_quirk(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    mappings = {
        "EMPLOYEE_ID": '{"source": "employee_id"}',  # not a standard field: read from custom_attributes
        "COST_CENTER": '{"source": "custom_attributes.cost_center"}',
        "DEPARTMENT": '{"source": "department"}',  # standard: not prefixed
        "MANAGER": '{"source": "manager_user_id"}',  # a v2 field: not prefixed either
        "ROLE": '{"source": "role_id.0"}',  # the v1 name of role_ids
        "SAM": '{"source": "samaccountname"}',  # v1 name of samaccount_name
    }
    result = run(tmp_path, fake_oomnitza, onelogin, mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    fields = onelogin.calls("/api/2/users")[0].query["fields"].split(",")
    assert "custom_attributes" in fields and "email" in fields
    kwame = fake_oomnitza.record("users", EMAIL="kwame@acme.test")
    assert kwame is not None
    assert (kwame["EMPLOYEE_ID"], kwame["COST_CENTER"], kwame["DEPARTMENT"]) == ("E-40001", "CC-9", "IT")
    assert (kwame["MANAGER"], kwame["ROLE"], kwame["SAM"]) == ("40009", 123, "kmensah")
    lea = fake_oomnitza.record("users", EMAIL="lea.muller@acme.test")
    assert lea is not None and lea["EMPLOYEE_ID"] is None and lea["ROLE"] is None


def test_fields_refused_falls_back(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    onelogin.reject_fields = True
    result = run(tmp_path, fake_oomnitza, onelogin, {"EMPLOYEE_ID": "employee_id"})
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    assert "refused the fields parameter (400 Invalid field: custom_attributes)" in result.err
    assert fake_oomnitza.record("users", EMAIL="kwame@acme.test")["EMPLOYEE_ID"] is None  # type: ignore[index]
    assert "fields" not in onelogin.calls("/api/2/users")[-1].query


def test_custom_attributes_off(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, onelogin, custom_attributes="false")
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    assert all("fields" not in c.query for c in onelogin.calls("/api/2/users"))


def test_bad_secret(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, onelogin, client_secret="wrong-secret-987")
    assert_one_line_error(
        result, "OneLogin rejected the API credentials (401 Authentication Failure): check client_id and client_secret"
    )
    assert "wrong-secret-987" not in result.all
    assert len(onelogin.calls()) == 1  # the token call, not retried; no users call
    assert fake_oomnitza.records("users") == []


def test_token_rejected_on_users_call(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    onelogin.fail(
        "GET", "/api/2/users", 403, times=1, body={"message": "Forbidden", "statusCode": 403, "name": "ForbiddenError"}
    )
    result = run(tmp_path, fake_oomnitza, onelogin)
    assert_one_line_error(
        result, "OneLogin rejected the access token (403 Forbidden): check that the API credential has the Read users"
    )
    assert len(onelogin.calls("/api/2/users")) == 1


def test_legacy_api_token_only(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, onelogin, client_id="", client_secret="", api_token="legacy-key-42")
    assert_one_line_error(result, "api_token is OneLogin's legacy API key", "set client_id and client_secret")
    assert "legacy-key-42" not in result.all
    assert onelogin.requests == [] and fake_oomnitza.records("users") == []


def test_legacy_xml_url(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, onelogin, url="https://app.onelogin.com/api/v2/users.xml")
    assert_one_line_error(result, "is OneLogin's retired XML API")
    assert onelogin.requests == [] and fake_oomnitza.records("users") == []


def test_expired_token_refreshed_once(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    onelogin.max_page = 6
    onelogin.fail(
        "GET",
        "/api/2/users",
        401,
        times=1,
        query={"limit": "50"},
        body={"message": "Unauthorized", "statusCode": 401, "name": "UnauthorizedError"},
    )
    result = run(tmp_path, fake_oomnitza, onelogin)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    assert onelogin.issued == ["fake-at-1", "fake-at-2"]
    assert onelogin.calls("/api/2/users")[-1].headers["authorization"] == "Bearer fake-at-2"


def test_429_with_rate_limit_headers(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    onelogin.fail(
        "GET",
        "/api/2/users",
        429,
        headers={
            "Retry-After": "1",
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "1",
        },
        body={"status": {"error": True, "code": 429, "type": "Too Many Requests", "message": "Rate limit exceeded"}},
    )
    result = run(tmp_path, fake_oomnitza, onelogin)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    assert len(onelogin.calls("/api/2/users")) == 4


def test_budget_spent_pauses(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    onelogin.remaining, onelogin.reset = 2, 1  # the first page leaves 1, the second 0: wait 1 s
    started = time.monotonic()
    result = run(tmp_path, fake_oomnitza, onelogin)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    assert time.monotonic() - started >= 0.9
    assert "rate limit budget spent" in result.err


def test_5xx_retried(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    onelogin.fail("GET", "/api/2/users", 502, times=2)
    onelogin.fail("POST", "/auth/oauth2/v2/token", 503, times=1)
    result = run(tmp_path, fake_oomnitza, onelogin)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    assert len(onelogin.issued) == 1


def test_empty_account(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    onelogin.users.clear()
    result = run(tmp_path, fake_oomnitza, onelogin)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    onelogin.fail("GET", "/api/2/users", 200, body="<html>maintenance</html>", headers={"Content-Type": "text/html"})
    result = run(tmp_path, fake_oomnitza, onelogin)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("users") == []


def test_not_a_list(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    onelogin.fail("GET", "/api/2/users", 200, body={"status": {"error": False, "code": 200}, "data": []})
    result = run(tmp_path, fake_oomnitza, onelogin)
    assert_one_line_error(result, "with dict, not a list of users")
    assert fake_oomnitza.records("users") == []
