"""[zendesk] end to end through the CLI against the fake Zendesk and the fake Oomnitza."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serving
from tests.fakes.zendesk import (
    ACME_HQ,
    AN,
    CLIENT_ID,
    CLIENT_SECRET,
    GRACE,
    MARY,
    FakeZendesk,
    cursor,
    organization,
    user,
)
from tests.sourcekit import (
    STALL_TIMEOUT,
    STANDARD_FAULTS,
    assert_accounted,
    assert_one_line_error,
    inject_fault,
    upload,
    write_config,
)

ID = {"ZENDESK_ID": '{"source": "id"}'}
INVALID = {
    "error": "invalid_token",
    "error_description": "The access token provided is expired, revoked, malformed or invalid for other reasons.",
}  # a key every user has (end-users may have no e-mail)


@pytest.fixture
def zendesk() -> Iterator[FakeZendesk]:
    fake = FakeZendesk(users=[GRACE, AN, MARY, *[user(i) for i in range(4)]], max_page=3)
    with serving(fake):
        yield fake


def settings(zendesk: FakeZendesk, **extra: str) -> dict[str, str]:
    return {
        "system_name": "acme",
        "url": zendesk.url,
        "username": zendesk.email,
        "api_token": zendesk.token,
        "default_role": "25",
        "default_position": "Employee",
        "load_organizations": "false",  # as generate-ini writes it
        "sync_field": "ZENDESK_ID",
        **extra,
    }


def oauth_settings(**extra: str) -> dict[str, str]:
    """The recommended login: an OAuth client instead of username/api_token."""
    return {"username": "", "api_token": "", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **extra}


def run(
    tmp_path: Path, oomnitza: FakeOomnitza, zendesk: FakeZendesk, mappings: dict[str, str] | None = None, **extra: str
) -> Any:
    ini = write_config(tmp_path, oomnitza, "zendesk", settings(zendesk, **extra), {**ID, **(mappings or {})})
    return upload(ini, "zendesk")


def test_several_pages_default_mappings(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, zendesk)
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=7, sent=7)
    calls = zendesk.calls("/api/v2/users")
    assert len(calls) == 3  # 3 + 3 + 1 while meta.has_more
    assert calls[0].query == {"page[size]": "100"}
    assert calls[1].query["page[after]"] and "page" not in calls[1].query  # cursor, never offset
    expected = base64.b64encode(f"{zendesk.email}/token:{zendesk.token}".encode()).decode()
    assert calls[0].headers["authorization"] == f"Basic {expected}"
    assert calls[0].headers["accept"] == "application/json"
    assert zendesk.calls("/api/v2/organizations") == []  # load_organizations = false is off
    assert fake_oomnitza.record("users", ZENDESK_ID=3001) == {
        "ZENDESK_ID": 3001,
        "USER": "grace@acme.test",
        "FIRST_NAME": "Grace",
        "LAST_NAME": "Hopper",
        "EMAIL": "grace@acme.test",
        "PHONE": "+1 555 0100",
        "PERMISSIONS_ID": "25",
        "POSITION": "Employee",
    }
    # an end-user without e-mail, a non-ASCII name; a suspended agent with a four-word name
    assert fake_oomnitza.record("users", ZENDESK_ID=3002) == {
        "ZENDESK_ID": 3002,
        "USER": None,
        "FIRST_NAME": "Nguyễn",
        "LAST_NAME": "An",
        "EMAIL": None,
        "PHONE": None,
        "PERMISSIONS_ID": "25",
        "POSITION": "Employee",
    }
    mary = fake_oomnitza.record("users", ZENDESK_ID=3003)
    assert mary is not None and (mary["FIRST_NAME"], mary["LAST_NAME"]) == ("Mary", "Dyke")
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Zendesk"


def test_more_users_than_offset_pagination_reaches(
    tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza
) -> None:
    # The real limit is 10,000 records (100 offset pages); the fake's is 6: offset pages past it answer 400.
    zendesk.users = [user(i) for i in range(20)]
    zendesk.offset_limit, zendesk.max_page = 6, 100
    result = run(tmp_path, fake_oomnitza, zendesk, page_size="5")
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=20, sent=20)
    assert len(zendesk.calls("/api/v2/users")) == 4
    assert all(c.query["page[size]"] == "5" for c in zendesk.calls("/api/v2/users"))


def test_past_10000_users(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeZendesk(users=[user(i) for i in range(10_050)])  # offset pages stop at 10,000 records
    with serving(fake):
        result = run(tmp_path, fake_oomnitza, fake)
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=10_050, sent=10_050)
    assert len(fake.calls("/api/v2/users")) == 101
    assert fake_oomnitza.record("users", ZENDESK_ID=4000 + 10_049) is not None


def test_load_organizations(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.organizations = [ACME_HQ, *[organization(i) for i in range(4)]]
    zendesk.users.append(user(50, organization_id=9102))
    mappings = {
        "ORG": '{"source": "organization.name"}',
        "ORG_DOMAIN": '{"source": "organization.domain_names.0"}',
        "REGION": '{"source": "organization.organization_fields.region"}',
        "EMPLOYEE_NUMBER": '{"source": "user_fields.employee_number"}',
    }
    result = run(tmp_path, fake_oomnitza, zendesk, mappings, load_organizations="True")
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=8, sent=8)
    assert len(zendesk.calls("/api/v2/organizations")) == 2  # 3 + 2, cursor paged too
    grace = fake_oomnitza.record("users", ZENDESK_ID=3001)
    assert grace is not None
    assert (grace["ORG"], grace["ORG_DOMAIN"], grace["REGION"], grace["EMPLOYEE_NUMBER"]) == (
        "Acme HQ",
        "acme.test",
        "NA",
        "3001",
    )
    assert fake_oomnitza.record("users", ZENDESK_ID=4050)["ORG"] == "Org 2"  # type: ignore[index]
    assert fake_oomnitza.record("users", ZENDESK_ID=3002)["ORG"] is None  # type: ignore[index]  # no org
    assert fake_oomnitza.record("users", ZENDESK_ID=3003)["ORG"] is None  # type: ignore[index]  # unknown org


def test_load_organizations_not_a_boolean(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, zendesk, load_organizations="sometimes")
    assert_one_line_error(result, "load_organizations = 'sometimes' must be true or false")
    assert zendesk.requests == [] and fake_oomnitza.records("users") == []


def test_role_filter(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, zendesk, role="agent, admin")
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=2, sent=2)
    assert {r["ZENDESK_ID"] for r in fake_oomnitza.records("users")} == {3001, 3003}


def test_url_with_api_prefix(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, zendesk, url=f"{zendesk.url}/api/v2/")
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=7, sent=7)


def test_bad_token(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, zendesk, api_token="wrong-token-555")
    assert_one_line_error(
        result, "Zendesk rejected the credentials (401 Couldn't authenticate you): check username and api_token"
    )
    assert "wrong-token-555" not in result.all
    assert len(zendesk.calls()) == 1  # not retried
    assert fake_oomnitza.records("users") == []


def test_forbidden(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.forbidden = True
    result = run(tmp_path, fake_oomnitza, zendesk)
    assert_one_line_error(result, "Zendesk refused access (403 Forbidden: You do not have access to this page")
    assert len(zendesk.calls()) == 1


def test_429_with_retry_after(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.fail(
        "GET",
        "/api/v2/users",
        429,
        body="Rate limit exceeded",
        headers={"Retry-After": "1", "X-Rate-Limit": "700", "X-Rate-Limit-Remaining": "0"},
    )
    result = run(tmp_path, fake_oomnitza, zendesk)
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=7, sent=7)
    assert len(zendesk.calls("/api/v2/users")) == 4


def test_5xx_retried(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.fail("GET", "/api/v2/users", 503, headers={"Retry-After": "1"})  # incident throttling
    zendesk.fail("GET", "/api/v2/users", 500, times=1)
    result = run(tmp_path, fake_oomnitza, zendesk)
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=7, sent=7)


def test_empty_account(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.users.clear()
    result = run(tmp_path, fake_oomnitza, zendesk)
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.fail("GET", "/api/v2/users", 200, body="<html>Help Center</html>", headers={"Content-Type": "text/html"})
    result = run(tmp_path, fake_oomnitza, zendesk)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("users") == []


def test_body_without_users(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.fail("GET", "/api/v2/users", 200, body={"error": "RecordNotFound"})
    result = run(tmp_path, fake_oomnitza, zendesk)
    assert_one_line_error(result, "without a 'users' list")
    assert fake_oomnitza.records("users") == []


def test_wrong_subdomain(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.fail("GET", "/api/v2/users", 404, body={"error": "InvalidEndpoint"})
    result = run(tmp_path, fake_oomnitza, zendesk)
    assert_one_line_error(result, "Zendesk answered 404 for /api/v2/users: check system_name (or url)")
    assert len(zendesk.calls()) == 1
    assert fake_oomnitza.records("users") == []


def test_api_token_warns_about_its_retirement(
    tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, zendesk)
    assert result.code == 0, result.all
    assert "Zendesk deactivates every API token on 2027-04-30" in result.err
    assert zendesk.calls("/oauth/tokens") == []


def test_oauth_client_credentials(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, zendesk, **oauth_settings())
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=7, sent=7)
    token_calls = zendesk.calls("/oauth/tokens", "POST")
    assert len(token_calls) == 1  # one token for the whole (short) run
    assert json.loads(token_calls[0].body) == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "read",
    }
    users = zendesk.calls("/api/v2/users")
    assert len(users) == 3 and all(c.headers["authorization"] == "Bearer zd-at-1" for c in users)
    assert "2027-04-30" not in result.err and CLIENT_SECRET not in result.all and "zd-at-1" not in result.all
    assert fake_oomnitza.record("users", ZENDESK_ID=3001)["EMAIL"] == "grace@acme.test"  # type: ignore[index]


def test_oauth_scope_setting(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    assert run(tmp_path, fake_oomnitza, zendesk, **oauth_settings(scope="users:read  organizations:read")).code == 0
    assert json.loads(zendesk.calls("/oauth/tokens")[0].body)["scope"] == "users:read organizations:read"


def test_token_renewed_before_it_expires(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    # Tokens that live less than the connector's safety margin are never used once they are about to expire:
    # a new one is fetched before each request, and the fake never sees an expired token.
    zendesk.token_lifetime = 45
    result = run(tmp_path, fake_oomnitza, zendesk, **oauth_settings())
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=7, sent=7)
    users = zendesk.calls("/api/v2/users")
    assert len({c.headers["authorization"] for c in users}) == len(users) == 3
    assert len(zendesk.calls("/oauth/tokens")) == 3


def test_expired_token_renewed_once_on_401(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.expire_after = 1  # Zendesk expires the token after the first page
    result = run(tmp_path, fake_oomnitza, zendesk, **oauth_settings())
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=7, sent=7)
    assert zendesk.issued == ["zd-at-1", "zd-at-2"]
    auths = [c.headers["authorization"] for c in zendesk.calls("/api/v2/users")]
    assert auths == ["Bearer zd-at-1", "Bearer zd-at-1", "Bearer zd-at-2", "Bearer zd-at-2"]


def test_fresh_token_rejected_too(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.fail("GET", "/api/v2/users", 401, times=5, body=INVALID)
    result = run(tmp_path, fake_oomnitza, zendesk, **oauth_settings())
    assert_one_line_error(result, "Zendesk rejected a fresh OAuth access token (401 invalid_token: The access token")
    assert len(zendesk.calls("/oauth/tokens")) == 2 and len(zendesk.calls("/api/v2/users")) == 2
    assert fake_oomnitza.records("users") == []


def test_bad_client_secret(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, zendesk, **oauth_settings(client_secret="wrong-secret-777"))
    assert_one_line_error(
        result,
        "Zendesk refused the OAuth client (401 invalid_client: Client authentication failed",
        "check client_id and client_secret, and that the OAuth client's kind is Confidential",
    )
    assert "wrong-secret-777" not in result.all
    assert len(zendesk.calls()) == 1  # the token request, not retried; no users request
    assert fake_oomnitza.records("users") == []


def test_scope_not_allowed_for_the_client(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, zendesk, **oauth_settings(scope="impersonate"))
    assert_one_line_error(result, "Zendesk refused the OAuth client (400 invalid_scope", "check scope")
    assert len(zendesk.calls()) == 1


def test_oauth_scope_without_user_access(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.forbidden = True
    result = run(tmp_path, fake_oomnitza, zendesk, **oauth_settings())
    assert_one_line_error(result, "Zendesk refused access (403", "the OAuth client's scope must allow reading users")
    assert len(zendesk.calls("/api/v2/users")) == 1


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"client_id": CLIENT_ID}, "set both client_id and client_secret"),
        ({"api_token": "", "username": ""}, "set client_id and client_secret (an OAuth client, recommended)"),
    ],
)
def test_credentials_checked_at_startup(
    tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza, extra: dict[str, str], needle: str
) -> None:
    result = run(tmp_path, fake_oomnitza, zendesk, **extra)
    assert_one_line_error(result, needle)
    assert zendesk.requests == [] and fake_oomnitza.records("users") == []


def test_server_side_mapping_loads_organizations(
    tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza
) -> None:
    """A field mapped only in Oomnitza (organization.name) switches the organization lookup on."""
    fake_oomnitza.set_mapping("Zendesk", {"organization.name": "ORG", "user_fields.employee_number": "EMP_NO"})
    result = run(tmp_path, fake_oomnitza, zendesk, **oauth_settings())  # load_organizations = false
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=7, sent=7)
    assert len(zendesk.calls("/api/v2/organizations")) == 1
    grace = fake_oomnitza.record("users", ZENDESK_ID=3001)
    assert grace is not None and (grace["ORG"], grace["EMP_NO"]) == ("Acme HQ", "3001")


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(zendesk, fault, "GET", "/api/v2/users", query={"page[after]": cursor(3)})
    result = run(tmp_path, fake_oomnitza, zendesk, request_timeout=STALL_TIMEOUT, **oauth_settings())
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=7, sent=7)
    assert len(fake_oomnitza.records("users")) == 7
    assert zendesk._faults == []  # the fault was met


def test_token_endpoint_5xx_retried(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.fail("POST", "/oauth/tokens", 503, headers={"Retry-After": "1"})
    result = run(tmp_path, fake_oomnitza, zendesk, **oauth_settings())
    assert result.code == 0, result.all
    assert_accounted(result, "zendesk", pulled=7, sent=7)
    assert zendesk.issued == ["zd-at-1"]


def test_html_page_from_a_proxy(tmp_path: Path, zendesk: FakeZendesk, fake_oomnitza: FakeOomnitza) -> None:
    zendesk.fail("GET", "/api/v2/users", 200, body="<html>Sign in</html>", headers={"Content-Type": "text/html"})
    result = run(tmp_path, fake_oomnitza, zendesk, **oauth_settings())
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("users") == []
