"""[bamboohr] end to end through the CLI against the fake BambooHR and the fake Oomnitza."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.bamboohr import DANA, ZOE, FakeBambooHR, employee
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve
from tests.sourcekit import assert_accounted, assert_one_line_error, upload, write_config

ID = {"BAMBOO_ID": '{"source": "id"}'}  # every employee has one (workEmail may be empty)
DIRECTORY = "/api/gateway.php/acme/v1/employees/directory"


@pytest.fixture
def bamboo() -> Iterator[FakeBambooHR]:
    fake = FakeBambooHR(employees=[DANA, ZOE, *[employee(i) for i in range(3)]])
    with serve(fake.app) as url:
        fake.url = url
        yield fake


def settings(bamboo: FakeBambooHR, **extra: str) -> dict[str, str]:
    return {
        "url": f"{bamboo.url}/api/gateway.php",  # the seed's form
        "system_name": bamboo.company,
        "api_token": bamboo.key,
        "default_role": "25",
        "default_position": "Employee",
        "sync_field": "BAMBOO_ID",
        **extra,
    }


def run(
    tmp_path: Path, oomnitza: FakeOomnitza, bamboo: FakeBambooHR, mappings: dict[str, str] | None = None, **extra: str
) -> Any:
    ini = write_config(tmp_path, oomnitza, "bamboohr", settings(bamboo, **extra), {**ID, **(mappings or {})})
    return upload(ini, "bamboohr")


def test_directory_default_mappings(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, bamboo)
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=5, sent=5)
    calls = bamboo.calls()
    assert [c.path for c in calls] == [DIRECTORY]  # one call: the directory has no pages
    assert calls[0].headers["accept"] == "application/json"
    assert calls[0].headers["authorization"] == "Basic " + base64.b64encode(f"{bamboo.key}:x".encode()).decode()
    assert fake_oomnitza.record("users", BAMBOO_ID="101") == {
        "BAMBOO_ID": "101",
        "USER": "dana.whitfield@acme-fake.com",
        "FIRST_NAME": "Dana",
        "LAST_NAME": "Whitfield",
        "EMAIL": "dana.whitfield@acme-fake.com",
        "PHONE": "+1 801 555 0199",
        "POSITION": "IT Manager",
        "PERMISSIONS_ID": "25",
    }
    # no work e-mail: still sent (USER/EMAIL are not required); non-ASCII names
    assert fake_oomnitza.record("users", BAMBOO_ID="102") == {
        "BAMBOO_ID": "102",
        "USER": None,
        "FIRST_NAME": "Zoë",
        "LAST_NAME": "Ångström",
        "EMAIL": None,
        "PHONE": None,
        "POSITION": "Engineer",
        "PERMISSIONS_ID": "25",
    }
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "BambooHR"


@pytest.mark.parametrize("suffix", ["", "/", "/api/gateway.php/", "/api/gateway.php/acme/v1"])
def test_url_forms(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza, suffix: str) -> None:
    result = run(tmp_path, fake_oomnitza, bamboo, url=bamboo.url + suffix)
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=5, sent=5)
    assert [c.path for c in bamboo.calls()] == [DIRECTORY]


def test_directory_fields_mappable(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    mappings = {"DEPARTMENT": "department", "MANAGER": '{"source": "supervisor"}', "NICK": "preferredName"}
    result = run(tmp_path, fake_oomnitza, bamboo, mappings)
    assert_accounted(result, "bamboohr", pulled=5, sent=5)
    zoe = fake_oomnitza.record("users", BAMBOO_ID="102")
    assert zoe is not None and (zoe["DEPARTMENT"], zoe["MANAGER"], zoe["NICK"]) == ("R&D", "Dana Whitfield", "Zo")


def test_bad_key(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, bamboo, api_token="wrong-key-31337")
    assert_one_line_error(result, "BambooHR rejected the API key (401): check api_token")
    assert "wrong-key-31337" not in result.all
    assert len(bamboo.calls()) == 1  # not retried
    assert fake_oomnitza.records("users") == []


def test_directory_not_shared(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    bamboo.directory_shared = False
    result = run(tmp_path, fake_oomnitza, bamboo)
    assert_one_line_error(result, "BambooHR refused the employee directory (403): it is not shared company-wide")
    assert len(bamboo.calls()) == 1  # not retried
    assert fake_oomnitza.records("users") == []


def test_empty_directory_is_404(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    bamboo.employees.clear()
    result = run(tmp_path, fake_oomnitza, bamboo)
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=0)
    assert "BambooHR answered 404 (no employees): the directory of 'acme' is empty" in result.err
    assert len(bamboo.calls()) == 1
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_unknown_company_404(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, bamboo, system_name="acmee")
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=0)
    assert "BambooHR answered 404 (Company not found)" in result.err and "system_name is wrong" in result.err


def test_empty_employee_list(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    bamboo.fail("GET", DIRECTORY, 200, body={"fields": [], "employees": []})
    result = run(tmp_path, fake_oomnitza, bamboo)
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=0)


def test_503_with_retry_after(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    bamboo.fail("GET", DIRECTORY, 503, headers={"Retry-After": "1"})  # BambooHR's throttle signal
    result = run(tmp_path, fake_oomnitza, bamboo)
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=5, sent=5)
    assert len(bamboo.calls()) == 2


def test_429_with_retry_after(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    bamboo.fail("GET", DIRECTORY, 429, headers={"Retry-After": "1"})
    result = run(tmp_path, fake_oomnitza, bamboo)
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=5, sent=5)


def test_5xx_retried(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    bamboo.fail("GET", DIRECTORY, 500, times=2)
    result = run(tmp_path, fake_oomnitza, bamboo)
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=5, sent=5)
    assert len(bamboo.calls()) == 3


def test_xml_instead_of_json(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    # what BambooHR sends when Accept: application/json is lost on the way (e.g. by a proxy)
    bamboo.fail("GET", DIRECTORY, 200, body="<directory><employees/></directory>", headers={"Content-Type": "text/xml"})
    result = run(tmp_path, fake_oomnitza, bamboo)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/xml)")
    assert fake_oomnitza.records("users") == []


def test_body_without_employees(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    bamboo.fail("GET", DIRECTORY, 200, body={"fields": []})
    result = run(tmp_path, fake_oomnitza, bamboo)
    assert_one_line_error(result, "without an 'employees' list")
    assert fake_oomnitza.records("users") == []


def test_report_mode_includes_terminated(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    bamboo.terminated = [employee(9, status="Inactive", terminationDate="2026-06-30")]
    mappings = {"STATUS": "status", "TERMINATED": "terminationDate"}
    result = run(tmp_path, fake_oomnitza, bamboo, mappings, mode="report")
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=6, sent=6)
    call = bamboo.calls()[0]
    assert (call.method, call.path) == ("POST", "/api/gateway.php/acme/v1/reports/custom")
    assert call.query == {"format": "JSON", "onlyCurrent": "false"}
    gone = fake_oomnitza.record("users", BAMBOO_ID="209")
    assert gone is not None and (gone["STATUS"], gone["TERMINATED"], gone["USER"]) == (
        "Inactive",
        "2026-06-30",
        "emp9@acme-fake.com",
    )
    assert fake_oomnitza.record("users", BAMBOO_ID="101")["STATUS"] == "Active"  # type: ignore[index]

    result = run(tmp_path, fake_oomnitza, bamboo, mappings, mode="report", only_current="true")
    assert_accounted(result, "bamboohr", pulled=5, sent=5)


def test_bad_mode(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, bamboo, mode="everything")
    assert_one_line_error(result, "mode = 'everything' is not one of directory, report")
    assert bamboo.requests == [] and fake_oomnitza.records("users") == []
