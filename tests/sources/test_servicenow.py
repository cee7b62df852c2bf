"""[servicenow] end to end through the CLI against the fake ServiceNow and the fake Oomnitza."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serving
from tests.fakes.servicenow import FakeServiceNow, computer, consumable, field, laptop, sys_id
from tests.sourcekit import (
    STALL_TIMEOUT,
    STANDARD_FAULTS,
    assert_accounted,
    assert_one_line_error,
    inject_fault,
    upload,
    write_config,
)

CI1, CI2 = "b4fd7c8437201000deeabfc8bcbe5dc1", "c5fe7c8437201000deeabfc8bcbe5dc2"
MAPPINGS = {
    "SERIAL_NUMBER": '{"source": "hardware.serial_number"}',
    "BARCODE": '{"source": "hardware.asset_tag"}',
    "NAME": '{"source": "hardware.display_name"}',
}


@pytest.fixture
def sn() -> Iterator[FakeServiceNow]:
    fake = FakeServiceNow(max_page=2)
    fake.add_asset(laptop(1, CI1), u_fields={"u_cost_center_code": "FIN-204"})
    fake.add_asset(consumable(2))
    fake.add_asset(laptop(3, CI2))
    fake.tables["cmdb_ci_computer"] += [computer(CI1, 42), computer(CI2, 43)]
    fake.add_software(CI1, "7-Zip", "23.01")
    fake.add_software(CI1, "Microsoft Edge", "131.0.2903.70")
    fake.add_software(CI1, "", "0")  # nameless rows are dropped
    fake.add_software(CI2, "Slack", "4.41")
    with serving(fake):
        yield fake


def settings(sn: FakeServiceNow, **extra: str) -> dict[str, str]:
    return {"url": sn.url, "username": sn.username, "password": sn.password, "sync_field": "NAME", **extra}


def run(
    tmp_path: Path, sn: FakeServiceNow, oomnitza: FakeOomnitza, mappings: dict[str, str] | None = None, **extra: str
):  # type: ignore[no-untyped-def]
    ini = write_config(tmp_path, oomnitza, "servicenow", settings(sn, **extra), mappings or MAPPINGS)
    return upload(ini, "servicenow")


def test_several_pages_with_joins(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    mappings = {
        **MAPPINGS,
        "MODEL": "hardware.model",
        "STATUS": "hardware.install_status",
        "CREATED": "hardware.sys_created_on",
        "WARRANTY": "hardware.warranty_expiration",
        "COST_CENTER": "hardware.u_cost_center_code",
        "RAM": "hardware.ram",
        "IP": "hardware.ip_address",
        "ASSET_CREATED": "hardware.asset_sys_created_on",
        "MODEL_SYS_ID": "hardware_raw.model",
    }
    result = run(tmp_path, sn, fake_oomnitza, mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=3, sent=3)
    listing = sn.calls("/api/now/table/alm_asset")
    assert [c.query["sysparm_offset"] for c in listing] == ["0", "2"]  # X-Total-Count: no empty 3rd request
    assert listing[0].query["sysparm_display_value"] == "all"
    assert listing[0].query["sysparm_limit"] == "100"
    rec = fake_oomnitza.record("assets", BARCODE="P1000001")
    assert rec["MODEL"] == "Dell Inc. Latitude 7440"
    assert rec["STATUS"] == "In use"
    assert rec["CREATED"] == "2025-03-12T09:15:00+00:00"  # the CI's, from the UTC stored value
    assert rec["ASSET_CREATED"] == "2025-03-10 09:00:00"
    assert rec["WARRANTY"] == "2028-03-01T00:00:00+00:00"
    assert rec["COST_CENTER"] == "FIN-204"
    assert rec["RAM"] == "32,768"
    assert rec["IP"] == "10.20.30.42"
    assert rec["MODEL_SYS_ID"] == "5f5520c9c0a8010e00a9714f2a172815"
    assert rec["APPLICATIONS"] == [
        {"name": "7-Zip", "version": "23.01", "path": None},
        {"name": "Microsoft Edge", "version": "131.0.2903.70", "path": None},
    ]
    other = fake_oomnitza.record("assets", BARCODE="P1000003")
    assert other["APPLICATIONS"] == [{"name": "Slack", "version": "4.41", "path": None}]
    assert "COST_CENTER" not in other or other["COST_CENTER"] in (None, "")
    # the consumable: no CI, so no joins, computer fields "" and no software
    charger = next(r for r in fake_oomnitza.records("assets") if r.get("NAME") == "USB-C Charger 65W")
    assert charger["APPLICATIONS"] == []
    assert charger["IP"] == "" and charger["RAM"] == ""
    # joins are batched per listing page, not per asset
    assert len(sn.calls("/api/now/table/cmdb_ci_computer")) == 2
    first_computers = sn.calls("/api/now/table/cmdb_ci_computer")[0].query
    assert first_computers["sysparm_query"] == f"sys_idIN{CI1}^ORDERBYsys_id"
    assert "cpu_name" in first_computers["sysparm_fields"]
    assert sn.calls("/api/now/table/cmdb_software_instance")[0].query["sysparm_query"].startswith("installed_onIN")


def test_server_side_mapping_fields_are_requested(
    tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza
) -> None:
    # fields mapped only in Oomnitza that alm_asset lacks: from the computer CI or the alm_hardware row
    fake_oomnitza.set_mapping(
        "ServiceNow",
        {"hardware.name": "HOSTNAME", "hardware_raw.cpu_core_count": "CORES", "hardware.beneficiary": "BENEFICIARY"},
    )
    sn.tables["cmdb_ci_computer"][0]["cpu_core_count"] = field("12")
    sn.tables["alm_hardware"][0]["beneficiary"] = field("a1b2", "Acme Research")
    result = run(tmp_path, sn, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=3, sent=3)
    fields = sn.calls("/api/now/table/cmdb_ci_computer")[0].query["sysparm_fields"].split(",")
    assert fields[0] == "sys_id" and "cpu_name" in fields
    assert {"beneficiary", "cpu_core_count", "name", "serial_number"} <= set(fields)  # server + INI mapping
    rec = fake_oomnitza.record("assets", BARCODE="P1000001")
    assert (rec["HOSTNAME"], rec["CORES"], rec["BENEFICIARY"]) == ("WKS-0042", "12", "Acme Research")
    other = fake_oomnitza.record("assets", BARCODE="P1000003")
    assert (other["HOSTNAME"], other["CORES"], other["BENEFICIARY"]) == ("WKS-0043", None, None)


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(sn, fault, "GET", "/api/now/table/alm_asset", query={"sysparm_offset": "2"})
    result = run(tmp_path, sn, fake_oomnitza, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=3, sent=3)
    assert len(fake_oomnitza.records("assets")) == 3
    assert [c.query["sysparm_offset"] for c in sn.calls("/api/now/table/alm_asset")] == ["0", "2", "2"]


def test_many_assets_page_through_joins(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    sn.tables["alm_asset"].clear()
    sn.tables["alm_hardware"].clear()
    for n in range(10, 17):
        ci = sys_id(5000 + n)
        sn.add_asset(laptop(n, ci))
        sn.tables["cmdb_ci_computer"].append(computer(ci, n))
        for k in range(3):
            sn.add_software(ci, f"App {k}", f"{n}.{k}")
    result = run(tmp_path, sn, fake_oomnitza, page_size="4")
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=7, sent=7)
    rec = fake_oomnitza.record("assets", BARCODE="P1000016")
    assert [a["version"] for a in rec["APPLICATIONS"]] == ["16.0", "16.1", "16.2"]
    # the fake caps pages at 2 rows: the client followed the rows that arrived, not its own limit
    assert len(sn.calls("/api/now/table/alm_asset")) == 4


def test_bad_password(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, sn, fake_oomnitza, password="wrong-Passw0rd-9")
    assert_one_line_error(
        result, "ServiceNow rejected the credentials (401: User Not Authenticated", "check username and password"
    )
    assert "wrong-Passw0rd-9" not in result.all
    assert len(sn.calls()) == 1  # not retried
    assert fake_oomnitza.records("assets") == []


def test_acl_denied(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    sn.fail(
        "GET",
        "/api/now/table/cmdb_ci_computer",
        403,
        body={"error": {"message": "Insufficient rights to query records", "detail": None}, "status": "failure"},
    )
    result = run(tmp_path, sn, fake_oomnitza)
    assert_one_line_error(result, "ServiceNow denied access (403: Insufficient rights to query records)")
    assert_accounted(result, "servicenow", pulled=0)


def test_oauth_client_credentials(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    result = run(
        tmp_path, sn, fake_oomnitza, username="", password="", client_id=sn.client_id, client_secret=sn.client_secret
    )
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=3, sent=3)
    token_call = sn.calls("/oauth_token.do")
    assert len(token_call) == 1  # one token for the whole run
    assert b"grant_type=client_credentials" in token_call[0].body
    assert sn.calls("/api/now/table/alm_asset")[0].headers["authorization"] == "Bearer sn-at-0"


def test_oauth_password_grant(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    sn.client_credentials_enabled = False
    result = run(tmp_path, sn, fake_oomnitza, client_id=sn.client_id, client_secret=sn.client_secret)
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=3, sent=3)
    assert b"grant_type=password" in sn.calls("/oauth_token.do")[0].body


def test_oauth_token_refreshed_on_401(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    sn.fail(
        "GET",
        "/api/now/table/alm_asset",
        401,
        query={"sysparm_offset": "2"},
        body={"error": {"message": "User Not Authenticated", "detail": "token expired"}, "status": "failure"},
    )
    result = run(
        tmp_path, sn, fake_oomnitza, username="", password="", client_id=sn.client_id, client_secret=sn.client_secret
    )
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=3, sent=3)
    assert len(sn.issued) == 2


def test_oauth_bad_secret(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    result = run(
        tmp_path, sn, fake_oomnitza, username="", password="", client_id=sn.client_id, client_secret="not-the-secret-77"
    )
    assert_one_line_error(
        result,
        "ServiceNow refused the OAuth client_credentials grant (401: access_denied)",
        "check client_id and client_secret",
    )
    assert "not-the-secret-77" not in result.all
    assert len(sn.calls("/oauth_token.do")) == 1
    assert sn.calls("/api/now/table") == []


def test_429_retry_after(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    sn.fail(
        "GET",
        "/api/now/table/alm_asset",
        429,
        query={"sysparm_offset": "2"},
        headers={
            "Retry-After": "1",
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Reset": "1795712400",
            "X-RateLimit-Rule": "9c2d6a1f87a30210fake000000000000",
        },
        body={
            "error": {"message": "Rate limit exceeded", "detail": "rule allows 5000 requests per hour"},
            "status": "failure",
        },
    )
    result = run(tmp_path, sn, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=3, sent=3)
    assert len(sn.calls("/api/now/table/alm_asset")) == 3


def test_429_with_only_ratelimit_reset(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    import time

    reset = str(int(time.time()) + 1)
    sn.fail(
        "GET",
        "/api/now/table/cmdb_ci_computer",
        429,
        headers={"X-RateLimit-Reset": reset},
        body={"error": {"message": "Rate limit exceeded", "detail": ""}, "status": "failure"},
    )
    started = time.monotonic()
    result = run(tmp_path, sn, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=3, sent=3)
    assert time.monotonic() - started >= 0.2  # waited for the reset, not a hot retry loop


def test_5xx_retried(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    sn.fail("GET", "/api/now/table/cmdb_software_instance", 503, times=2)
    result = run(tmp_path, sn, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=3, sent=3)
    assert len(fake_oomnitza.record("assets", BARCODE="P1000001")["APPLICATIONS"]) == 2


def test_empty_instance(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    sn.tables["alm_asset"].clear()
    result = run(tmp_path, sn, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=0)
    assert len(sn.calls()) == 1
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    sn.fail(
        "GET",
        "/api/now/table/alm_asset",
        200,
        body="<html><body>Instance Hibernating</body></html>",
        headers={"Content-Type": "text/html"},
    )
    result = run(tmp_path, sn, fake_oomnitza)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("assets") == []


def test_json_without_result(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    sn.fail("GET", "/api/now/table/alm_asset", 200, body={"records": []})
    result = run(tmp_path, sn, fake_oomnitza)
    assert_one_line_error(result, "alm_asset answer has no 'result' list")
    assert_accounted(result, "servicenow", pulled=0)


def test_ci_not_a_computer_and_several_hardware_rows(
    tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza
) -> None:
    printer_ci = sys_id(777)
    sn.add_asset(laptop(4, printer_ci), u_fields={"u_cost_center_code": "OPS-1"})
    extra = dict(sn.tables["alm_hardware"][-1])
    extra["sys_id"] = field("f" * 32)  # a second alm_hardware row on the same CI sorts last: ignored
    extra["u_cost_center_code"] = field("IGNORED")
    sn.tables["alm_hardware"].append(extra)
    mappings = {**MAPPINGS, "COST_CENTER": "hardware.u_cost_center_code", "OS": "hardware.os"}
    result = run(tmp_path, sn, fake_oomnitza, mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=4, sent=4)
    rec = fake_oomnitza.record("assets", BARCODE="P1000004")
    assert rec["OS"] == ""  # no cmdb_ci_computer row for this CI
    assert rec["COST_CENTER"] == "OPS-1"
    assert rec["APPLICATIONS"] == []


def test_sam_software_table(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    sn.tables["cmdb_sam_sw_install"] = []
    sn.add_software(CI1, "Zoom", "6.2.0", table="cmdb_sam_sw_install")
    result = run(tmp_path, sn, fake_oomnitza)
    assert result.code == 0, result.all
    rec = fake_oomnitza.record("assets", BARCODE="P1000001")
    assert rec["APPLICATIONS"] == [{"name": "Zoom", "version": "6.2.0", "publisher": "Acme", "path": None}]
    assert sn.calls("/api/now/table/cmdb_software_instance") == []


def test_url_with_api_prefix_and_fixed_software_table(
    tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, sn, fake_oomnitza, url=f"{sn.url}/api/now/", software_table="cmdb_software_instance")
    assert result.code == 0, result.all
    assert_accounted(result, "servicenow", pulled=3, sent=3)
    assert sn.calls("/api/now/table/cmdb_sam_sw_install") == []  # no probe when the table is chosen


def test_missing_credentials_is_a_config_error(tmp_path: Path, sn: FakeServiceNow, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, sn, fake_oomnitza, username="", password="")
    assert_one_line_error(result, "set username and password (Basic auth), or client_id and client_secret")
    assert sn.calls() == []
    assert fake_oomnitza.records("assets") == []
