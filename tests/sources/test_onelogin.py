"""[onelogin] end to end through the CLI against the fake OneLogin (API v2) and the fake Oomnitza."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.onelogin import KWAME, LEA, FakeOnelogin, user
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


@pytest.fixture
def onelogin() -> Iterator[FakeOnelogin]:
    fake = FakeOnelogin(users=[KWAME, LEA, *[user(i) for i in range(3, 8)]], max_page=3)
    with serving(fake):
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
    assert calls[0].query["limit"] == "100"  # OneLogin's maximum; the fake answers 50 at most
    fields = calls[0].query["fields"].split(",")
    assert {"title", "department", "company", "role_ids", "samaccountname", "custom_attributes"} <= set(fields)
    assert "samaccount_name" not in fields
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
        "SAM": '{"source": "samaccountname"}',  # the v2 name (models/user.py)
        "SAM_OLD": '{"source": "samaccount_name"}',  # the misspelling earlier versions documented
        "TITLE": '{"source": "title"}',
    }
    result = run(tmp_path, fake_oomnitza, onelogin, mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    fields = onelogin.calls("/api/2/users")[0].query["fields"].split(",")
    assert "custom_attributes" in fields and "email" in fields
    kwame = fake_oomnitza.record("users", EMAIL="kwame@acme.test")
    assert kwame is not None
    assert (kwame["EMPLOYEE_ID"], kwame["COST_CENTER"], kwame["DEPARTMENT"]) == ("E-40001", "CC-9", "IT")
    assert (kwame["MANAGER"], kwame["ROLE"], kwame["SAM"], kwame["SAM_OLD"]) == ("40009", 123, "kmensah", "kmensah")
    assert kwame["TITLE"] == "Technician"
    lea = fake_oomnitza.record("users", EMAIL="lea.muller@acme.test")
    assert lea is not None and lea["EMPLOYEE_ID"] is None and lea["ROLE"] is None


def test_custom_attributes_refused_keeps_the_other_fields(
    tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza
) -> None:
    onelogin.reject_fields = "custom_attributes"
    mappings = {"EMPLOYEE_ID": "employee_id", "DEPARTMENT": '{"source": "department"}'}
    result = run(tmp_path, fake_oomnitza, onelogin, mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    assert "refused the fields parameter (400 Invalid field: custom_attributes)" in result.err
    kwame = fake_oomnitza.record("users", EMAIL="kwame@acme.test")
    assert kwame is not None and kwame["EMPLOYEE_ID"] is None and kwame["DEPARTMENT"] == "IT"
    last = onelogin.calls("/api/2/users")[-1].query["fields"].split(",")
    assert "custom_attributes" not in last and "department" in last


def test_fields_refused_altogether(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    """Without fields OneLogin's list drops title, department, role_ids…: the warning names what is lost."""
    onelogin.reject_fields = "all"
    mappings = {"DEPARTMENT": '{"source": "department"}', "ROLE": '{"source": "role_id.0"}'}
    result = run(tmp_path, fake_oomnitza, onelogin, mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    assert "listing users without it, so OneLogin leaves out title, department" in result.err
    assert "mapped here and lost: department, role_id.0" in result.err
    assert [("fields" in c.query) for c in onelogin.calls("/api/2/users")][:3] == [True, True, False]
    kwame = fake_oomnitza.record("users", EMAIL="kwame@acme.test")
    assert kwame is not None and kwame["DEPARTMENT"] is None and kwame["EMAIL"] == "kwame@acme.test"


def test_custom_attributes_off(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    result = run(
        tmp_path, fake_oomnitza, onelogin, {"DEPARTMENT": '{"source": "department"}'}, custom_attributes="false"
    )
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    fields = [c.query["fields"].split(",") for c in onelogin.calls("/api/2/users")]
    assert all("custom_attributes" not in f and "department" in f for f in fields)
    assert fake_oomnitza.record("users", EMAIL="kwame@acme.test")["DEPARTMENT"] == "IT"  # type: ignore[index]


def test_server_side_mapping_is_requested(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza) -> None:
    """Fields mapped only in Oomnitza reach the fields parameter and arrive."""
    fake_oomnitza.set_mapping("OneLogin", {"notes": "NOTES", "samaccount_name": "SAM", "cost_center": "COST"})
    for u in onelogin.users:
        u["notes"] = f"note {u['id']}"
    result = run(tmp_path, fake_oomnitza, onelogin)
    assert result.code == 0, result.all
    fields = onelogin.calls("/api/2/users")[0].query["fields"].split(",")
    assert "notes" in fields and "samaccountname" in fields and "cost_center" not in fields
    kwame = fake_oomnitza.record("users", EMAIL="kwame@acme.test")
    assert kwame is not None and (kwame["SAM"], kwame["COST"]) == ("kmensah", "CC-9")


@pytest.mark.parametrize("size", ["100", "500"])
def test_page_size_at_most_100(tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza, size: str) -> None:
    result = run(tmp_path, fake_oomnitza, onelogin, page_size=size)
    assert result.code == 0, result.all
    assert onelogin.calls("/api/2/users")[0].query["limit"] == "100"


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, onelogin: FakeOnelogin, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    from tests.fakes.onelogin import _cursor

    inject_fault(onelogin, fault, "GET", "/api/2/users", query={"cursor": _cursor(3, 3)})
    result = run(tmp_path, fake_oomnitza, onelogin, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "onelogin", pulled=7, sent=7)
    assert len(fake_oomnitza.records("users")) == 7
    assert onelogin._faults == []  # the fault was met


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
        query={"limit": "100"},
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
