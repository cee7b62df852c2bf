"""[bamboohr] end to end through the CLI against the fake BambooHR and the fake Oomnitza."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.bamboohr import DANA, ZOE, FakeBambooHR, employee
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serving
from tests.sourcekit import (
    STALL_TIMEOUT,
    STANDARD_FAULTS,
    assert_accounted,
    assert_one_line_error,
    forget_sync_state,
    inject_fault,
    upload,
    write_config,
)

ID = {"BAMBOO_ID": '{"source": "id"}'}  # every employee has one (workEmail may be empty)
DIRECTORY = "/api/gateway.php/acme/v1/employees/directory"


@pytest.fixture
def bamboo() -> Iterator[FakeBambooHR]:
    fake = FakeBambooHR(employees=[DANA, ZOE, *[employee(i) for i in range(3)]])
    with serving(fake):
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


def test_directory_404_is_an_error(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    """BambooHR answers 404 for an empty directory; it looks the same as a typo, so it is not a success."""
    bamboo.employees.clear()
    result = run(tmp_path, fake_oomnitza, bamboo)
    assert_one_line_error(result, "BambooHR answered 404 for", "check system_name ('acme') and url")
    assert len(bamboo.calls()) == 1
    assert fake_oomnitza.records("users") == []


def test_unknown_company_404(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, bamboo, system_name="acmee")
    assert_one_line_error(result, "BambooHR answered 404 for", ": Company not found: check system_name ('acmee')")
    assert fake_oomnitza.records("users") == []


@pytest.mark.parametrize("suffix", ["/api/v1", "/api/v1/"])
def test_company_host_url_form(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza, suffix: str) -> None:
    """https://acme.bamboohr.com/api/v1, the form of BambooHR's current SDK, works beside the gateway."""
    result = run(tmp_path, fake_oomnitza, bamboo, url=bamboo.url + suffix)
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=5, sent=5)
    assert [c.path for c in bamboo.calls()] == ["/api/v1/employees/directory"]
    result = run(tmp_path, fake_oomnitza, bamboo, url=bamboo.url + suffix, mode="report")
    assert result.code == 0, result.all
    assert bamboo.calls()[-1].path == "/api/v1/reports/custom"


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://acme.bamboohr.com", "https://acme.bamboohr.com/api/v1"),
        ("https://acme.bamboohr.com/api/v1/", "https://acme.bamboohr.com/api/v1"),
        ("https://api.bamboohr.com/api/gateway.php", "https://api.bamboohr.com/api/gateway.php/acme/v1"),
        ("https://api.bamboohr.com/api/gateway.php/acme/v1", "https://api.bamboohr.com/api/gateway.php/acme/v1"),
        ("https://api.bamboohr.com", "https://api.bamboohr.com/api/gateway.php/acme/v1"),
    ],
)
def test_base_url(url: str, base: str) -> None:
    from oomnitza_connector.config import SectionConfig
    from oomnitza_connector.sources.bamboohr import BambooHR

    section = SectionConfig(
        name="bamboohr", ini_path="config.ini", settings={"url": url, "system_name": "acme", "api_token": "k"}
    )
    assert BambooHR(section).base == base


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza, fault: str) -> None:
    inject_fault(bamboo, fault, "GET", DIRECTORY)  # the directory is one request: no later page to hit
    result = run(tmp_path, fake_oomnitza, bamboo, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=5, sent=5)
    assert len(fake_oomnitza.records("users")) == 5 and bamboo._faults == []


def test_report_fields_from_the_merged_mapping(
    tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza
) -> None:
    """A field mapped only in Oomnitza is asked for in the custom report and arrives."""
    bamboo.employees = [employee(1, customCostCenter="CC-7")]
    fake_oomnitza.set_mapping("BambooHR", {"customCostCenter": "COST_CENTER"})
    result = run(tmp_path, fake_oomnitza, bamboo, mode="report", report_fields="id,firstName")
    assert result.code == 0, result.all
    fields = json.loads(bamboo.calls("/api/gateway.php/acme/v1/reports/custom")[0].body)["fields"]
    assert fields[:2] == ["id", "firstName"] and "customCostCenter" in fields and "workEmail" in fields
    assert fake_oomnitza.record("users", BAMBOO_ID="201")["COST_CENTER"] == "CC-7"  # type: ignore[index]


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
    bamboo.future = [employee(8, status="Active", hireDate="2027-01-04")]
    mappings = {"STATUS": "status", "TERMINATED": "terminationDate"}
    result = run(tmp_path, fake_oomnitza, bamboo, mappings, mode="report")
    assert result.code == 0, result.all
    assert_accounted(result, "bamboohr", pulled=7, sent=7)  # 5 current, 1 terminated, 1 future hire
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

    # onlyCurrent=true leaves out future-dated hires, not terminated employees (reports_api.py)
    forget_sync_state()  # the same records again: send them, to count them
    result = run(tmp_path, fake_oomnitza, bamboo, mappings, mode="report", only_current="true")
    assert_accounted(result, "bamboohr", pulled=6, sent=6)
    assert bamboo.calls()[-1].headers["content-type"] == "application/json"


def test_bad_mode(tmp_path: Path, bamboo: FakeBambooHR, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, bamboo, mode="everything")
    assert_one_line_error(result, "mode = 'everything' must be one of: directory, report")
    assert bamboo.requests == [] and fake_oomnitza.records("users") == []
