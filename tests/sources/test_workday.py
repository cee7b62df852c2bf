"""[workday] end to end through the CLI against the fake Workday RaaS and the fake Oomnitza."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serving
from tests.fakes.workday import (
    CLIENT_ID,
    CLIENT_SECRET,
    PASSWORD,
    REFRESH_TOKEN,
    REPORT_PATH,
    TENANT,
    USERNAME,
    FakeWorkday,
    fixture_entries,
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

# The fact sheet's suggested mappings, keyed on the employee id (one worker has no e-mail).
MAPPINGS = {
    "EMPLOYEE_ID": '{"source": "Employee_ID"}',
    "USER": '{"source": "Email_-_Work"}',
    "EMAIL": '{"source": "Email_-_Work"}',
    "FIRST_NAME": '{"source": "Legal_Name_First_Name"}',
    "LAST_NAME": '{"source": "Legal_Name_Last_Name"}',
    "PHONE": '{"source": "Work_Phones.0.Phone"}',
    "STATUS": '{"source": "Worker_Status"}',
}


@pytest.fixture
def workday() -> Iterator[FakeWorkday]:
    fake = FakeWorkday()
    with serving(fake):
        yield fake


def settings(workday: FakeWorkday, **extra: str) -> dict[str, str]:
    return {
        "report_url": f"{workday.url}{REPORT_PATH}?format=json",
        "username": USERNAME,
        "password": PASSWORD,
        "default_role": "25",
        "default_position": "Employee",
        "sync_field": "EMPLOYEE_ID",
        **extra,
    }


def run(
    tmp_path: Path,
    fake_oomnitza: FakeOomnitza,
    workday: FakeWorkday,
    mappings: dict[str, str] | None = None,
    **extra: str,
) -> Any:
    ini = write_config(
        tmp_path, fake_oomnitza, "workday", settings(workday, **extra), MAPPINGS if mappings is None else mappings
    )
    return upload(ini, "workday")


def test_report_rows_with_sheet_mappings(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, workday)
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=3, sent=3)
    calls = workday.calls(REPORT_PATH)
    assert len(calls) == 1  # RaaS has no paging: the whole report in one response
    assert calls[0].query == {"format": "json"}
    expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert calls[0].headers["authorization"] == f"Basic {expected}"
    assert fake_oomnitza.record("users", EMPLOYEE_ID="21001") == {
        "EMPLOYEE_ID": "21001",
        "USER": "priya.raman@acme.test",
        "EMAIL": "priya.raman@acme.test",
        "FIRST_NAME": "Priya",
        "LAST_NAME": "Raman",
        "PHONE": "+1 (415) 555-0142",
        "STATUS": "Active",
        "PERMISSIONS_ID": "25",  # the sheet's only default mapping
        "POSITION": "Employee",
    }
    soren = fake_oomnitza.record("users", EMPLOYEE_ID="21002")  # terminated, no phone cell at all
    assert soren is not None and soren["STATUS"] == "Terminated" and soren["LAST_NAME"] == "Kierkegård"
    assert not soren.get("PHONE")
    tomas = fake_oomnitza.record("users", EMPLOYEE_ID="21003")  # no e-mail column, two phones
    assert tomas is not None and tomas["PHONE"] == "+34 600 000 003" and not tomas.get("EMAIL")
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Workday"


def test_default_mappings_only(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    result = run(
        tmp_path, fake_oomnitza, workday, {"EMPLOYEE_ID": '{"source": "Employee_ID"}'}, default_position="Staff"
    )
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=3, sent=3)
    assert fake_oomnitza.record("users", EMPLOYEE_ID="21003") == {
        "EMPLOYEE_ID": "21003",
        "PERMISSIONS_ID": "25",
        "POSITION": "Staff",
    }


def test_report_url_without_format_asks_for_json(
    tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza
) -> None:
    """Workday's default format is XML: the connector adds format=json (the reference crashed)."""
    result = run(tmp_path, fake_oomnitza, workday, report_url=f"{workday.url}{REPORT_PATH}")
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=3, sent=3)
    assert workday.calls(REPORT_PATH)[0].query == {"format": "json"}


def test_report_url_with_xml_format_is_switched(
    tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, workday, report_url=f"{workday.url}{REPORT_PATH}?format=simplexml")
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=3, sent=3)
    assert "asks for format=simplexml; the connector reads format=json" in result.err
    assert workday.calls(REPORT_PATH)[0].query == {"format": "json"}


def test_xml_instead_of_json_is_one_clear_line(
    tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza
) -> None:
    workday.fail(
        "GET",
        REPORT_PATH,
        200,
        headers={"Content-Type": "text/xml;charset=UTF-8"},
        body='<?xml version="1.0"?><wd:Report_Data xmlns:wd="urn:com.workday.report/x"></wd:Report_Data>',
    )
    result = run(tmp_path, fake_oomnitza, workday)
    assert_one_line_error(
        result,
        "Workday answered with XML instead of JSON (text/xml;charset=utf-8)",
        "use the report's JSON URL (format=json)",
    )
    error_lines = [line for line in result.err.splitlines() if "ERROR" in line]
    assert len(error_lines) == 1, result.err
    assert fake_oomnitza.records("users") == []


def test_bad_password(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, workday, password="wrong-pass-123")
    assert_one_line_error(result, "Workday rejected the credentials (401): check username and password")
    assert "wrong-pass-123" not in result.all
    assert base64.b64encode(f"{USERNAME}:wrong-pass-123".encode()).decode() not in result.all
    assert len(workday.calls()) == 1  # a rejected credential is not retried
    assert fake_oomnitza.records("users") == []


def test_user_at_tenant_username(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, workday, username=f"{USERNAME}@{TENANT}")
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=3, sent=3)


def test_429_with_retry_after(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    workday.fail("GET", REPORT_PATH, 429, headers={"Retry-After": "1"})
    result = run(tmp_path, fake_oomnitza, workday)
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=3, sent=3)
    assert len(workday.calls(REPORT_PATH)) == 2


def test_maintenance_503_retried(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    workday.fail(
        "GET",
        REPORT_PATH,
        503,
        body="<html>Workday is down for scheduled maintenance</html>",
        headers={"Content-Type": "text/html"},
    )
    result = run(tmp_path, fake_oomnitza, workday)
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=3, sent=3)
    assert len(workday.calls(REPORT_PATH)) == 2


def test_unknown_report_fault(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    url = f"{workday.url}/ccx/service/customreport2/{TENANT}/ISU_Oomnitza/No_Such_Report?format=json"
    result = run(tmp_path, fake_oomnitza, workday, report_url=url)
    assert_one_line_error(result, "Workday could not run the report at", "(500: Invalid report)", "check report_url")
    assert len(workday.calls()) == 4  # a few quick tries, not minutes of backoff
    assert fake_oomnitza.records("users") == []


def test_empty_report(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    workday.entries.clear()
    result = run(tmp_path, fake_oomnitza, workday)
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_report_without_report_entry_key(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    workday.fail("GET", REPORT_PATH, 200, body={})
    result = run(tmp_path, fake_oomnitza, workday)
    assert result.code == 0, result.all  # the reference raised KeyError here
    assert_accounted(result, "workday", pulled=0)


def test_malformed_json(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    workday.fail(
        "GET",
        REPORT_PATH,
        200,
        body='{"Report_Entry": [{"Employee_ID": ',
        headers={"Content-Type": "application/json;charset=UTF-8"},
    )
    result = run(tmp_path, fake_oomnitza, workday)
    assert_one_line_error(result, "returned a body that is not JSON")
    assert fake_oomnitza.records("users") == []


def test_html_page_instead_of_report(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    workday.fail(
        "GET", REPORT_PATH, 200, body="<html><body>Sign In</body></html>", headers={"Content-Type": "text/html"}
    )
    result = run(tmp_path, fake_oomnitza, workday)
    assert_one_line_error(result, "Workday answered with an HTML page, not the report")


def test_entry_that_is_not_an_object_is_counted_failed(
    tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza
) -> None:
    workday.fail("GET", REPORT_PATH, 200, body={"Report_Entry": [fixture_entries()[0], "garbage"]})
    result = run(tmp_path, fake_oomnitza, workday)
    counts = assert_accounted(result, "workday", pulled=2, sent=1)
    assert counts["failed_convert"] + counts["missing_required"] == 1
    assert fake_oomnitza.record("users", EMPLOYEE_ID="21001") is not None


def test_several_report_urls_by_prompt(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    """A big report read in slices by a prompt: one URL per line, read one after the other."""
    for i, entry in enumerate(workday.entries):
        entry["Company"] = "ACME_US" if i != 1 else "ACME_EU"
    base = f"{workday.url}{REPORT_PATH}?format=json"
    result = run(tmp_path, fake_oomnitza, workday, report_url=f"{base}&Company=ACME_US\n{base}&Company=ACME_EU")
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=3, sent=3)
    assert [c.query.get("Company") for c in workday.calls(REPORT_PATH)] == ["ACME_US", "ACME_EU"]
    assert {r["EMPLOYEE_ID"] for r in fake_oomnitza.records("users")} == {"21001", "21002", "21003"}


def test_oauth_refresh_token(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    result = run(
        tmp_path,
        fake_oomnitza,
        workday,
        username="",
        password="",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=REFRESH_TOKEN,
    )
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=3, sent=3)
    assert len(workday.calls(f"/ccx/oauth2/{TENANT}/token")) == 1  # derived from report_url
    assert workday.calls(REPORT_PATH)[0].headers["authorization"] == "Bearer wd-access-0"


def test_oauth_bad_refresh_token(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    result = run(
        tmp_path,
        fake_oomnitza,
        workday,
        username="",
        password="",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token="stale-refresh-token-9",
    )
    assert_one_line_error(
        result,
        "Workday refused the OAuth refresh token (400 invalid_grant)",
        "check client_id, client_secret and refresh_token",
    )
    assert "stale-refresh-token-9" not in result.all and CLIENT_SECRET not in result.all
    assert len(workday.calls()) == 1 and workday.calls(REPORT_PATH) == []


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"password": ""}, "set username and password"),
        ({"report_url": "acme/Oomnitza_Workers"}, "report_url 'acme/Oomnitza_Workers' is not a URL"),
        ({"client_id": CLIENT_ID}, "OAuth needs client_id, client_secret and refresh_token together"),
        ({"timeout": "soon"}, "timeout = 'soon' must be a number above 0"),
    ],
)
def test_settings_checked_at_startup(
    tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza, extra: dict[str, str], needle: str
) -> None:
    result = run(tmp_path, fake_oomnitza, workday, **extra)
    assert_one_line_error(result, needle)
    assert workday.requests == [] and fake_oomnitza.records("users") == []


OAUTH = {"username": "", "password": "", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}


def test_oauth_token_refused_mid_run_is_renewed_once(
    tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza
) -> None:
    urls = "\n".join(f"{workday.url}{REPORT_PATH}?format=json&Worker_Status={s}" for s in ("Active", "Terminated"))
    workday.fail("GET", REPORT_PATH, 401, query={"Worker_Status": "Terminated"})  # the token ran out
    result = run(tmp_path, fake_oomnitza, workday, report_url=urls, refresh_token=REFRESH_TOKEN, **OAUTH)
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=3, sent=3)
    assert workday.issued == ["wd-access-0", "wd-access-1"]
    token_call = workday.calls(f"/ccx/oauth2/{TENANT}/token")[0]
    assert token_call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert b"grant_type=refresh_token" in token_call.body and b"client_secret=" in token_call.body


def test_oauth_token_expired_by_workday(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    workday.token_lifetime = 0  # every token Workday issues is already expired: one renewal, then a clear line
    result = run(tmp_path, fake_oomnitza, workday, refresh_token=REFRESH_TOKEN, **OAUTH)
    assert_one_line_error(result, "Workday rejected the credentials (401): check client_id, client_secret")
    assert len(workday.issued) == 2 and fake_oomnitza.records("users") == []


@pytest.mark.parametrize("style", ["xml", "soap", "json"])
def test_report_error_shapes(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza, style: str) -> None:
    workday.error_style = style
    url = f"{workday.url}/ccx/service/customreport2/{TENANT}/ISU_Oomnitza/No_Such_Report?format=json"
    result = run(tmp_path, fake_oomnitza, workday, report_url=url)
    assert_one_line_error(result, "Workday could not run the report at", "(500: Invalid report)")


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza, fault: str) -> None:
    inject_fault(workday, fault, "GET", REPORT_PATH)  # RaaS answers in one response: no later page
    # [workday] waits `timeout` (not request_timeout) for the report: that is what cuts the stall.
    result = run(tmp_path, fake_oomnitza, workday, timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "workday", pulled=3, sent=3)
    assert len(fake_oomnitza.records("users")) == 3 and workday._faults == []


def test_column_mapped_only_in_oomnitza(tmp_path: Path, workday: FakeWorkday, fake_oomnitza: FakeOomnitza) -> None:
    """RaaS returns the report's columns whatever is mapped: a column mapped only in Oomnitza arrives."""
    fake_oomnitza.set_mapping("Workday", {"Business_Title": "TITLE"})
    result = run(tmp_path, fake_oomnitza, workday)
    assert result.code == 0, result.all
    assert fake_oomnitza.record("users", EMPLOYEE_ID="21001")["TITLE"] == "HR Partner"  # type: ignore[index]
