"""[azureusers] end to end through the CLI: MSAL against the fake Entra ID, paging the fake Graph."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.fakes.azure import (
    CLIENT_ID,
    SECRET,
    TENANT,
    TENANT_DOMAIN,
    THROTTLED,
    FakeAzure,
    fixture_users,
    graph_error_body,
    user,
)
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve
from tests.sourcekit import (
    STALL_TIMEOUT,
    STANDARD_FAULTS,
    assert_accounted,
    assert_one_line_error,
    inject_fault,
    upload,
    write_config,
)

TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"
RSA = trustme.KeyType.RSA  # Entra ID app certificates are RSA
MAPPINGS = {
    "USER": '{"source": "userPrincipalName"}',
    "EMAIL": '{"source": "mail"}',
    "FIRST_NAME": '{"source": "givenName"}',
    "LAST_NAME": '{"source": "surname"}',
}


@pytest.fixture
def azure(tls_files: dict[str, str]) -> Iterator[FakeAzure]:
    fake = FakeAzure(users=[*fixture_users(), user(4), user(5)], max_page=2)
    with serve(fake.app, ssl_certfile=tls_files["server_cert"], ssl_keyfile=tls_files["server_key"]) as url:
        fake.url = url
        yield fake


def settings(azure: FakeAzure, tls_files: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "secret": SECRET,
        "default_role": "25",
        "default_position": "Employee",
        "authority_host": azure.url,
        "graph_host": azure.url,
        "cacert_file": tls_files["ca"],
        "sync_field": "USER",
        **extra,
    }


def run(
    tmp_path: Path,
    fake_oomnitza: FakeOomnitza,
    azure: FakeAzure,
    tls_files: dict[str, str],
    mappings: dict[str, str] | None = None,
    **extra: str,
) -> Any:
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "azureusers",
        settings(azure, tls_files, **extra),
        MAPPINGS if mappings is None else mappings,
    )
    return upload(ini, "azureusers")


def graph_calls(azure: FakeAzure) -> list[Any]:
    return azure.calls("/v1.0/users", "GET")


def test_several_pages_graph_names(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, azure, tls_files)
    assert result.code == 0, result.all
    # Disabled accounts and guests are synced too (the old connector had no filter either).
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    calls = graph_calls(azure)
    assert len(calls) == 3  # 2 + 2 + 1, following @odata.nextLink
    assert calls[0].query["$top"] == "999"
    select = calls[0].query["$select"].split(",")
    assert {"id", "accountEnabled", "userType", "department", "businessPhones", "mobilePhone"} <= set(select)
    assert "$skiptoken" in calls[1].query and calls[2].query["$select"] == calls[0].query["$select"]
    assert calls[0].headers["authorization"] == f"Bearer {azure.issued[0]}"
    token_calls = azure.calls(TOKEN_PATH, "POST")
    assert len(token_calls) == 1  # one token for the whole run
    assert b"scope=https%3A%2F%2Fgraph.microsoft.com%2F.default" in token_calls[0].body
    assert fake_oomnitza.record("users", USER="alice@contoso-fake.com") == {
        "USER": "alice@contoso-fake.com",
        "EMAIL": "alice@contoso-fake.com",
        "FIRST_NAME": "Alice",
        "LAST_NAME": "Fabre",
        "PERMISSIONS_ID": "25",
        "POSITION": "Employee",
    }
    jorg = fake_oomnitza.record("users", USER="jnunez@contoso-fake.com")  # no mailbox: mail is null
    assert jorg is not None and jorg["FIRST_NAME"] == "Jörg" and jorg["LAST_NAME"] == "Ñúñez"
    assert not jorg.get("EMAIL")
    assert fake_oomnitza.record("users", USER="guest_partner.test#EXT#@contoso-fake.onmicrosoft.com") is not None
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Azureusers"


def test_old_connector_mapping_names(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    """Mappings written for the 2.3.3 connector (Azure AD Graph SDK names) keep working."""
    mappings = {
        "USER": '{"source": "user_principal_name"}',
        "FIRST_NAME": '{"source": "given_name"}',
        "LAST_NAME": '{"source": "surname"}',
        "FULL_NAME": '{"source": "display_name"}',
        "EMPLOYEE_ID": '{"source": "object_id"}',
        "JOB_TITLE": '{"source": "additional_properties.jobTitle"}',
        "DEPARTMENT": '{"source": "additional_properties.department"}',
        "PHONE": '{"source": "additional_properties.telephoneNumber"}',
        "MOBILE": '{"source": "additional_properties.mobile"}',
        "OFFICE": '{"source": "additional_properties.physicalDeliveryOfficeName"}',
        "ENABLED": '{"source": "account_enabled"}',
        "KIND": '{"source": "user_type"}',
        "LOCATION": '{"source": "usage_location"}',
        "NICK": '{"source": "mail_nickname"}',
        "IMMUTABLE": '{"source": "immutable_id"}',
        "OBJTYPE": '{"source": "object_type"}',
        "ODATA": '{"source": "additional_properties.odata.type"}',
    }
    result = run(tmp_path, fake_oomnitza, azure, tls_files, mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    rec = fake_oomnitza.record("users", USER="alice@contoso-fake.com")
    assert rec is not None
    assert {k: rec[k] for k in mappings} == {
        "USER": "alice@contoso-fake.com",
        "FIRST_NAME": "Alice",
        "LAST_NAME": "Fabre",
        "FULL_NAME": "Alice Fabre",
        "EMPLOYEE_ID": "6e7b0c1a-0000-4a1b-9c2d-111111111111",
        "JOB_TITLE": "Designer",
        "DEPARTMENT": "Design",
        "PHONE": "+33 1 00 00 00 01",  # AAD telephoneNumber = Graph businessPhones[0]
        "MOBILE": "+33 6 00 00 00 01",  # AAD mobile = Graph mobilePhone
        "OFFICE": "Paris 3",  # AAD physicalDeliveryOfficeName = Graph officeLocation
        "ENABLED": True,
        "KIND": "Member",
        "LOCATION": "FR",
        "NICK": "alice",
        "IMMUTABLE": "AbCdEf==",
        "OBJTYPE": "User",
        "ODATA": "Microsoft.DirectoryServices.User",
    }
    jorg = fake_oomnitza.record("users", USER="jnunez@contoso-fake.com")
    assert jorg is not None and jorg["ENABLED"] is False and not jorg.get("PHONE")  # businessPhones = []


def test_legacy_names_off(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    mappings = {"USER": '{"source": "userPrincipalName"}', "FIRST_NAME": '{"source": "given_name"}'}
    result = run(tmp_path, fake_oomnitza, azure, tls_files, mappings, legacy_names="false")
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    rec = fake_oomnitza.record("users", USER="alice@contoso-fake.com")
    assert rec is not None and not rec.get("FIRST_NAME")


def test_bad_secret(tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, azure, tls_files, secret="wrong-secret-123")
    assert_one_line_error(
        result,
        "Microsoft Entra ID rejected the credentials (invalid_client AADSTS7000215: Invalid client secret provided.",
        "check tenant_id, client_id and secret",
    )
    assert "wrong-secret-123" not in result.all
    assert "Trace ID" not in result.err
    assert len(azure.calls(TOKEN_PATH)) == 1  # a rejected credential is not retried
    assert graph_calls(azure) == []
    assert fake_oomnitza.records("users") == []


def test_unknown_client_id(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, azure, tls_files, client_id="00000000-dead-beef-0000-000000000000")
    assert_one_line_error(result, "rejected the credentials (unauthorized_client AADSTS700016")
    assert len(azure.calls(TOKEN_PATH)) == 1
    assert fake_oomnitza.records("users") == []


def test_unknown_tenant(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, azure, tls_files, tenant_id="not-our-tenant.example")
    assert_one_line_error(
        result, "Microsoft Entra ID does not know the tenant 'not-our-tenant.example'", "check tenant_id"
    )
    assert azure.calls(TOKEN_PATH) == [] and graph_calls(azure) == []
    assert fake_oomnitza.records("users") == []


def test_tenant_domain_and_host_spellings(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    """A verified domain as tenant_id; graph_host with /v1.0 and trailing slashes are accepted."""
    result = run(
        tmp_path,
        fake_oomnitza,
        azure,
        tls_files,
        tenant_id=TENANT_DOMAIN,
        authority_host=azure.url + "/",
        graph_host=azure.url + "/v1.0/",
    )
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    assert len(azure.calls(f"/{TENANT_DOMAIN}/oauth2/v2.0/token")) == 1
    assert all(c.path == "/v1.0/users" for c in graph_calls(azure))


def test_missing_graph_permission_403(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    azure.fail(
        "GET",
        "/v1.0/users",
        403,
        times=5,
        body=graph_error_body("Authorization_RequestDenied", "Insufficient privileges to complete the operation."),
    )
    result = run(tmp_path, fake_oomnitza, azure, tls_files)
    assert_one_line_error(
        result,
        "Microsoft Graph refused to list users (403 Authorization_RequestDenied: "
        "Insufficient privileges to complete the operation.)",
        "User.Read.All",
    )
    assert len(graph_calls(azure)) == 1  # not retried
    assert SECRET not in result.all


def test_429_retry_after_then_success(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    azure.fail("GET", "/v1.0/users", 429, headers={"Retry-After": "1"}, body=THROTTLED)
    result = run(tmp_path, fake_oomnitza, azure, tls_files)
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    assert len(graph_calls(azure)) == 4  # the throttled first page was asked again
    assert "429" in result.err


def test_5xx_retried(tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza) -> None:
    azure.fail("GET", "/v1.0/users", 503, times=2, body=graph_error_body("serviceNotAvailable", "Service unavailable"))
    result = run(tmp_path, fake_oomnitza, azure, tls_files)
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    assert len(graph_calls(azure)) == 5


def test_token_endpoint_throttled_then_success(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    azure.fail("POST", TOKEN_PATH, 503, headers={"Retry-After": "1"}, body="<html>busy</html>")
    result = run(tmp_path, fake_oomnitza, azure, tls_files)
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    assert len(azure.calls(TOKEN_PATH)) == 2


def test_expired_token_refreshed_once(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    """A 401 mid-run means the token expired: one new token (past MSAL's cache), then go on."""
    azure.fail(
        "GET",
        "/v1.0/users",
        401,
        body=graph_error_body("InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."),
    )
    result = run(tmp_path, fake_oomnitza, azure, tls_files)
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    assert len(azure.calls(TOKEN_PATH)) == 2
    assert graph_calls(azure)[-1].headers["authorization"] == f"Bearer {azure.issued[1]}"


def test_token_refused_by_graph(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    azure.fail(
        "GET",
        "/v1.0/users",
        401,
        times=5,
        body=graph_error_body("InvalidAuthenticationToken", "Access token validation failure. Invalid audience."),
    )
    result = run(tmp_path, fake_oomnitza, azure, tls_files)
    assert_one_line_error(
        result,
        "Microsoft Graph rejected the access token (401 InvalidAuthenticationToken: "
        "Access token validation failure. Invalid audience.)",
    )
    assert len(graph_calls(azure)) == 2  # the first try and one after a fresh token; no more
    assert fake_oomnitza.records("users") == []


def test_empty_tenant(tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza) -> None:
    azure.users.clear()
    result = run(tmp_path, fake_oomnitza, azure, tls_files)
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    azure.fail("GET", "/v1.0/users", 200, body="<html>maintenance</html>", headers={"Content-Type": "text/html"})
    result = run(tmp_path, fake_oomnitza, azure, tls_files)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("users") == []


def test_json_without_value_list(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    azure.fail("GET", "/v1.0/users", 200, body={"@odata.context": "x", "value": {"id": "1"}})
    result = run(tmp_path, fake_oomnitza, azure, tls_files)
    assert_one_line_error(result, "Microsoft Graph answered without a 'value' list of users")
    assert fake_oomnitza.records("users") == []


def test_filter_that_works_by_default(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, azure, tls_files, filter="accountEnabled eq true")
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=4, sent=4)
    assert fake_oomnitza.record("users", USER="jnunez@contoso-fake.com") is None  # the disabled one
    first = graph_calls(azure)[0]
    assert first.query["$filter"] == "accountEnabled eq true"
    assert "$count" not in first.query and "consistencylevel" not in first.headers  # not an advanced query


def with_managers(azure: FakeAzure) -> dict[str, str]:
    alice = azure.users[0]
    for u in azure.users[1:]:
        u["managerId"] = alice["id"]
    return {**MAPPINGS, "MANAGER": '{"source": "manager.mail"}', "MANAGER_NAME": '{"source": "manager.displayName"}'}


def test_advanced_filter_reads_managers_in_batches(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    """An advanced query cannot $expand (Graph answers Request_UnsupportedQuery): managers come from
    /users/{id}/manager in JSON batches of at most 20."""
    azure.users += [user(i) for i in range(6, 30)]
    azure.max_page = 999
    mappings = with_managers(azure)
    result = run(tmp_path, fake_oomnitza, azure, tls_files, mappings, filter="accountEnabled ne false", page_size="25")
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=28, sent=28)
    users_calls = graph_calls(azure)
    assert all(c.headers["consistencylevel"] == "eventual" and "$expand" not in c.query for c in users_calls)
    assert users_calls[0].query["$count"] == "true"
    batches = [json.loads(c.body)["requests"] for c in azure.calls("/v1.0/$batch", "POST")]
    assert len(users_calls) == 2 and sorted(map(len, batches)) == [3, 5, 20]  # pages of 25 and 3
    assert batches[0][0]["url"].endswith("/manager?$select=id,displayName,mail,userPrincipalName,employeeId,jobTitle")
    guest = fake_oomnitza.record("users", USER="guest_partner.test#EXT#@contoso-fake.onmicrosoft.com")
    assert guest is not None and (guest["MANAGER"], guest["MANAGER_NAME"]) == ("alice@contoso-fake.com", "Alice Fabre")
    top = fake_oomnitza.record("users", USER="alice@contoso-fake.com")
    assert top is not None and top["MANAGER"] is None  # 404 from Graph: no manager


def test_throttled_manager_lookups_are_retried(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    mappings = with_managers(azure)
    azure.throttle_batch_items = 3
    result = run(tmp_path, fake_oomnitza, azure, tls_files, mappings, filter="endsWith(mail,'@contoso-fake.com')")
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=3, sent=3)  # the users whose mail ends so
    assert fake_oomnitza.record("users", USER="user5@contoso-fake.com")["MANAGER"] == "alice@contoso-fake.com"  # type: ignore[index]
    assert "Graph throttled" in result.err and azure.throttle_batch_items == 0
    assert len(azure.calls("/v1.0/$batch")) >= 2


def test_filter_graph_wants_as_advanced_query(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    """A filter the connector's rules take for a default query, refused by Graph: asked again as advanced."""
    azure.advanced_only = frozenset({*azure.advanced_only, "department"})
    result = run(tmp_path, fake_oomnitza, azure, tls_files, filter="department eq 'Design'")
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=1, sent=1)
    first, again = graph_calls(azure)[:2]
    assert "consistencylevel" not in first.headers and again.headers["consistencylevel"] == "eventual"
    assert again.query["$count"] == "true"


def test_bad_filter_is_one_line(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, azure, tls_files, filter="department has 'x'")
    assert_one_line_error(result, "Microsoft Graph refused the query (400 Request_UnsupportedQuery")
    assert len(graph_calls(azure)) == 2  # as given, then once as an advanced query


@pytest.mark.parametrize("advanced", [False, True])
def test_server_side_mapping_selects_the_extension_attribute(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza, advanced: bool
) -> None:
    """Extension attributes are returned only when $select names them; a field mapped only in Oomnitza
    is selected and arrives."""
    for u in azure.users:
        u["extension_0a1b2c_costCenter"] = f"CC-{u['surname']}"
    fake_oomnitza.set_mapping("Azureusers", {"extension_0a1b2c_costCenter": "COST_CENTER", "manager.mail": "BOSS"})
    with_managers(azure)
    extra = {"filter": "accountEnabled ne false"} if advanced else {}
    result = run(tmp_path, fake_oomnitza, azure, tls_files, **extra)
    assert result.code == 0, result.all
    assert "extension_0a1b2c_costCenter" in graph_calls(azure)[0].query["$select"].split(",")
    rec = fake_oomnitza.record("users", USER="guest_partner.test#EXT#@contoso-fake.onmicrosoft.com")
    assert rec is not None and rec["COST_CENTER"] == "CC-Person" and rec["BOSS"] == "alice@contoso-fake.com"
    assert ("$expand" in graph_calls(azure)[0].query) is not advanced


def test_select_follows_mappings_and_setting(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    for u in azure.users:
        u["extension_0a1b2c_costCenter"] = f"CC-{u['surname']}"
        u["onPremisesSamAccountName"] = u["givenName"].lower()
    mappings = {
        **MAPPINGS,
        "COST_CENTER": '{"source": "additional_properties.extension_0a1b2c_costCenter"}',
        "SAM": '{"source": "onPremisesSamAccountName"}',
        "OTHER": '{"source": "not_a_graph_field"}',
    }
    result = run(tmp_path, fake_oomnitza, azure, tls_files, mappings, select="extension_0a1b2c_costCenter, city")
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    select = graph_calls(azure)[0].query["$select"].split(",")
    assert select.count("extension_0a1b2c_costCenter") == 1 and "city" in select
    assert "not_a_graph_field" not in select  # an unknown name would make Graph refuse the whole query
    rec = fake_oomnitza.record("users", USER="alice@contoso-fake.com")
    assert rec is not None and rec["COST_CENTER"] == "CC-Fabre" and rec["SAM"] == "alice"


def test_select_refused_by_graph(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, azure, tls_files, select="costCentre")
    assert_one_line_error(
        result,
        "Microsoft Graph refused the query (400 Request_BadRequest: Could not find a "
        "property named 'costCentre' on type 'microsoft.graph.user'.)",
    )
    assert len(graph_calls(azure)) == 1


def test_next_link_on_another_host_is_rebased(
    tmp_path: Path, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    """Graph behind a proxy names graph.microsoft.com in @odata.nextLink: the token stays on graph_host."""
    fake = FakeAzure(users=[user(i) for i in range(5)], max_page=2, link_host="https://graph.microsoft.com")
    with serve(fake.app, ssl_certfile=tls_files["server_cert"], ssl_keyfile=tls_files["server_key"]) as url:
        fake.url = url
        result = run(tmp_path, fake_oomnitza, fake, tls_files)
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    assert len(graph_calls(fake)) == 3


def test_certificate_credential(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], tls_ca: Any, fake_oomnitza: FakeOomnitza
) -> None:
    app_cert = tls_ca.issue_cert("oomnitza-connector.contoso-fake.com", key_type=RSA)
    pem = tmp_path / "app.pem"
    app_cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    azure.certificate_pem = app_cert.cert_chain_pems[0].bytes()
    result = run(tmp_path, fake_oomnitza, azure, tls_files, secret="", certificate_file=str(pem))
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    form = azure.calls(TOKEN_PATH)[0].body.decode()
    assert "client_assertion=" in form and "client_secret" not in form


def test_wrong_certificate(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], tls_ca: Any, fake_oomnitza: FakeOomnitza
) -> None:
    pem = tmp_path / "app.pem"
    other = tls_ca.issue_cert("someone-else.test", key_type=RSA)
    other.private_key_and_cert_chain_pem.write_to_path(str(pem))
    azure.certificate_pem = tls_ca.issue_cert("registered.test", key_type=RSA).cert_chain_pems[0].bytes()
    result = run(tmp_path, fake_oomnitza, azure, tls_files, secret="", certificate_file=str(pem))
    assert_one_line_error(
        result,
        "rejected the credentials (invalid_client AADSTS700027",
        "check tenant_id, client_id and certificate_file",
    )
    assert len(azure.calls(TOKEN_PATH)) == 1


def test_ec_certificate_refused_clearly(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], tls_ca: Any, fake_oomnitza: FakeOomnitza
) -> None:
    pem = tmp_path / "app.pem"
    tls_ca.issue_cert("ec.test").private_key_and_cert_chain_pem.write_to_path(str(pem))  # ECDSA
    result = run(tmp_path, fake_oomnitza, azure, tls_files, secret="", certificate_file=str(pem))
    assert_one_line_error(result, "Microsoft Entra ID accepts RSA certificates only")
    assert azure.calls(TOKEN_PATH) == [] and fake_oomnitza.records("users") == []


def test_untrusted_tls(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "azureusers",
        {k: v for k, v in settings(azure, tls_files).items() if k != "cacert_file"},
        MAPPINGS,
    )
    result = upload(ini, "azureusers")
    assert_one_line_error(result, f"cannot reach {azure.url}: TLS certificate not trusted", "cacert_file")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"client_id": ""}, "set client_id"),
        ({"secret": ""}, "set secret (or certificate_file)"),
        ({"page_size": "1000"}, "page_size = '1000' must be a whole number from 1 to 999"),
        (
            {"authority_host": "http://login.example.test"},
            "authority_host = 'http://login.example.test' must start with https://",
        ),
        ({"authority_host": "https://login.microsoftonline.de"}, "Microsoft Cloud Deutschland was closed in 2021"),
        ({"graph_host": "https://graph.microsoft.de"}, "graph_host: Microsoft Cloud Deutschland was closed"),
    ],
)
def test_settings_checked_at_startup(
    tmp_path: Path,
    azure: FakeAzure,
    tls_files: dict[str, str],
    fake_oomnitza: FakeOomnitza,
    extra: dict[str, str],
    needle: str,
) -> None:
    result = run(tmp_path, fake_oomnitza, azure, tls_files, **extra)
    assert_one_line_error(result, needle)
    assert azure.requests == [] and fake_oomnitza.records("users") == []


def test_manager_expanded_when_mapped(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    alice = azure.users[0]
    for u in azure.users[1:]:
        u["managerId"] = alice["id"]
    mappings = {
        **MAPPINGS,
        "MANAGER": '{"source": "manager.mail"}',
        "MANAGER_NAME": '{"source": "manager.displayName"}',
    }
    result = run(tmp_path, fake_oomnitza, azure, tls_files, mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    first = graph_calls(azure)[0]
    assert first.query["$expand"] == "manager($select=id,displayName,mail,userPrincipalName,employeeId,jobTitle)"
    assert first.query["$top"] == "100"  # Graph's page limit with $expand
    assert "manager" not in first.query["$select"].split(",")
    guest = fake_oomnitza.record("users", USER="guest_partner.test#EXT#@contoso-fake.onmicrosoft.com")
    assert guest is not None and (guest["MANAGER"], guest["MANAGER_NAME"]) == ("alice@contoso-fake.com", "Alice Fabre")
    top = fake_oomnitza.record("users", USER="alice@contoso-fake.com")
    assert top is not None and top["MANAGER"] is None  # no manager: Graph leaves the property out


def test_manager_setting(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza
) -> None:
    assert run(tmp_path, fake_oomnitza, azure, tls_files).code == 0
    assert "$expand" not in graph_calls(azure)[0].query  # auto, and no mapping uses manager.*
    azure.requests.clear()
    assert run(tmp_path, fake_oomnitza, azure, tls_files, manager="True").code == 0  # for server-side mappings
    assert graph_calls(azure)[0].query["$expand"].startswith("manager(")
    result = run(tmp_path, fake_oomnitza, azure, tls_files, manager="sometimes")
    assert_one_line_error(result, "[azureusers] manager = 'sometimes' must be true, false or auto")


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, azure: FakeAzure, tls_files: dict[str, str], fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    from tests.fakes.azure import _skiptoken

    inject_fault(azure, fault, "GET", "/v1.0/users", query={"$skiptoken": _skiptoken(2)})
    result = run(tmp_path, fake_oomnitza, azure, tls_files, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "azureusers", pulled=5, sent=5)
    assert len(fake_oomnitza.records("users")) == 5 and azure._faults == []
