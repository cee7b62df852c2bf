"""[jasper] end to end through the CLI against the fake Control Center SOAP service (WSDL + XSD +
SOAP envelopes and faults), the fake Control Center REST API (``/rws/api/v1``) and the fake Oomnitza."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oomnitza_connector.config import render_template
from tests.fakes.jasper import FakeJasper, terminal
from tests.fakes.jasper_rest import FakeJasperRest, device
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve
from tests.sourcekit import assert_accounted, assert_one_line_error, upload, write_config

MAPPINGS = {
    "SERIAL_NUMBER": "iccid",
    "NAME": "terminalId",
    "PHONE": "msisdn",
    "STATUS": "status",
    "MODIFIED": "dateModified",
    "USAGE": "monthToDateUsage",
    "OVERAGE": "overageLimitReached",
    "TERM_END": "rating.termEndDate",
    "DEPOT": "custom1",
}


def stamp(day: int, minute: int = 0) -> str:
    return f"2026-11-{day:02d}T14:{minute:02d}:31.000Z"


@pytest.fixture
def jasper() -> Iterator[FakeJasper]:
    fake = FakeJasper(page_size=7)
    # 12 SIMs over two GetModifiedTerminals pages (7 + 5), modified on different days
    fake.terminals = [terminal(i, stamp(1 + i % 5, i)) for i in range(1, 13)]
    fake.terminals[0]["rating"] = {"termStartDate": "2026-01-01", "termEndDate": "2026-12-31", "renewalPolicy": "AUTO"}
    with serve(fake.app) as url:
        fake.url = url
        yield fake


def settings(jasper: FakeJasper, **extra: str) -> dict[str, str]:
    return {
        "wsdl_path": f"{jasper.url}/ws/schema/Terminal.wsdl",
        "username": jasper.username,
        "password": jasper.password,
        "api_token": jasper.license_key,
        "sync_field": "SERIAL_NUMBER",
        **extra,
    }


def run(tmp_path: Path, jasper: FakeJasper, oomnitza: FakeOomnitza, **extra: str):  # type: ignore[no-untyped-def]
    return upload(write_config(tmp_path, oomnitza, "jasper", settings(jasper, **extra), MAPPINGS), "jasper")


def state(tmp_path: Path, name: str = "storage.db") -> dict[str, str]:
    return json.loads((tmp_path / name).read_text(encoding="utf-8"))


def test_pages_chunks_and_state(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, jasper, fake_oomnitza, details_per_call="5")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert jasper.seen_since == ["2015-03-04T00:00:00Z", "2015-03-04T00:00:00Z"]  # full load, pages 1 and 2
    assert [len(b) for b in jasper.detail_batches] == [5, 2, 5]  # chunks within each page
    rec = fake_oomnitza.record("assets", SERIAL_NUMBER="89011704278930000001")
    assert rec == {
        "SERIAL_NUMBER": "89011704278930000001",
        "NAME": "TRUCK-0001",
        "PHONE": "882350000000001",  # the msisdn XML attribute
        "STATUS": "ACTIVATED",
        "MODIFIED": "2026-11-02T14:01:31Z",
        "USAGE": "12.50",
        "OVERAGE": False,
        "TERM_END": "2026-12-31",  # nested rating is a plain dict
        "DEPOT": "Depot 1",
    }
    assert state(tmp_path) == {"jasper": "2026-11-05T14:09:31Z"}  # the newest dateModified seen
    request = jasper.calls("/ws/service/terminal")[0]
    assert request.headers["soapaction"].strip('"').endswith("/terminal/GetModifiedTerminals")
    assert b"PasswordText" in request.body and b"<ns0:licenseKey>LIC-0000-FAKE</ns0:licenseKey>" in request.body

    # the next run asks only for what changed after the mark; nothing changed: no records, mark kept
    jasper.detail_batches.clear()
    result = run(tmp_path, jasper, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=0)
    assert jasper.seen_since[-1] == "2026-11-05T14:09:31Z"
    assert jasper.detail_batches == []
    assert state(tmp_path) == {"jasper": "2026-11-05T14:09:31Z"}

    # one SIM changes: only it is read, and the mark moves on
    jasper.terminals[3]["dateModified"] = stamp(20)
    jasper.terminals[3]["status"] = "DEACTIVATED"
    result = run(tmp_path, jasper, fake_oomnitza)
    assert_accounted(result, "jasper", pulled=1, sent=1)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="89011704278930000004")["STATUS"] == "DEACTIVATED"
    assert state(tmp_path) == {"jasper": "2026-11-20T14:00:31Z"}


def test_bad_credentials_is_one_line_and_state_untouched(
    tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, jasper, fake_oomnitza, password="Wr0ng-pass-42")
    assert_one_line_error(
        result,
        "Control Center refused GetModifiedTerminals (SOAP fault Client 200200 "
        "Invalid username or password (fictional text)): check username, password",
    )
    assert "Wr0ng-pass-42" not in result.all
    assert len(jasper.calls("/ws/service/terminal")) == 1  # a fault is not retried
    assert not (tmp_path / "storage.db").exists()
    assert fake_oomnitza.records("assets") == []


def test_bad_license_key(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, jasper, fake_oomnitza, api_token="LIC-WRONG-9999")
    assert_one_line_error(result, "SOAP fault Client 100200 Invalid license key")
    assert "LIC-WRONG-9999" not in result.all


def test_429_retry_after_then_success(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    jasper.fail("POST", "/ws/service/terminal", 429, headers={"Retry-After": "1"}, body="Too Many Requests")
    result = run(tmp_path, jasper, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)


def test_5xx_retried(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    jasper.fail("POST", "/ws/service/terminal", 503, times=2, body="<html>busy</html>")
    jasper.fail("GET", "/ws/schema/JasperAPI.xsd", 502)
    result = run(tmp_path, jasper, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)


def test_upload_failure_does_not_advance_state(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.fail("POST", "/api/v3/bulk", 422, times=1, body={"errors": "rejected"})
    result = run(tmp_path, jasper, fake_oomnitza)
    counts = assert_accounted(result, "jasper", pulled=12)
    assert counts["failed_send"] > 0
    assert not (tmp_path / "storage.db").exists()  # the SIMs that did not arrive are read again next time


def test_details_fault_mid_run_keeps_old_mark(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    (tmp_path / "storage.db").write_text("2026-11-01T00:00:00Z\n", encoding="utf-8")  # the reference's format
    jasper.max_details = 3  # the account's per-call limit is lower than asked: a fault on the details call
    result = run(tmp_path, jasper, fake_oomnitza, details_per_call="5")
    assert_one_line_error(
        result, "Control Center answered GetTerminalDetails with a SOAP fault: Client 400300 Too many ICCIDs (max 3)"
    )
    assert jasper.seen_since == ["2026-11-01T00:00:00Z"]  # the legacy one-line file was read
    assert (tmp_path / "storage.db").read_text(encoding="utf-8") == "2026-11-01T00:00:00Z\n"  # not advanced


def test_empty_account(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    jasper.terminals.clear()
    result = run(tmp_path, jasper, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=0)
    assert jasper.detail_batches == []
    assert not (tmp_path / "storage.db").exists()  # nothing seen: no mark to store


def test_malformed_soap_answer(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    jasper.fail(
        "POST",
        "/ws/service/terminal",
        200,
        body="<html><body>maintenance</body></html>",
        headers={"Content-Type": "text/html"},
    )
    result = run(tmp_path, jasper, fake_oomnitza)
    assert_one_line_error(result, "[jasper] GetModifiedTerminals")
    assert fake_oomnitza.records("assets") == []


def test_wsdl_not_found(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, jasper, fake_oomnitza, wsdl_path=f"{jasper.url}/ws/schema/Nope.wsdl")
    assert_one_line_error(result, "[jasper] loading the WSDL", "Nope.wsdl")


def test_unknown_iccids_and_any_order(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    # a SIM listed as modified but unknown to the details call is simply absent
    ghost = terminal(99, stamp(3))
    jasper.terminals.append(ghost)
    original = jasper._details

    def forgetful(payload, ns, correlation):  # type: ignore[no-untyped-def]
        jasper.terminals = [t for t in jasper.terminals if t is not ghost]
        try:
            return original(payload, ns, correlation)
        finally:
            jasper.terminals.append(ghost)

    jasper._details = forgetful  # type: ignore[method-assign]
    result = run(tmp_path, jasper, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER=ghost["iccid"]) is None


def test_old_schema_without_paging(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    jasper.paged = False  # no totalPages in the answer: one listing call
    jasper.page_size = 100
    result = run(tmp_path, jasper, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert len(jasper.seen_since) == 1


def test_sections_keep_separate_marks_and_verify_ssl(
    tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza
) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "sims.json").write_text(json.dumps({"jasper.eu": "2026-10-01T00:00:00Z"}), encoding="utf-8")
    result = run(tmp_path, jasper, fake_oomnitza, storage="state/sims.json", verify_ssl="false")
    assert result.code == 0, result.all
    assert state(tmp_path, "state/sims.json") == {"jasper": "2026-11-05T14:09:31Z", "jasper.eu": "2026-10-01T00:00:00Z"}
    assert list((tmp_path / "state").iterdir()) == [tmp_path / "state" / "sims.json"]  # no temp file left


def test_record_count_does_not_advance_state(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(tmp_path, fake_oomnitza, "jasper", settings(jasper), MAPPINGS)
    result = upload(ini, "jasper", "--record-count", "3")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=3, sent=3)
    assert not (tmp_path / "storage.db").exists()  # the rest was never read: next run starts over


def test_tls_settings_reach_zeep(tmp_path: Path, fake_oomnitza: FakeOomnitza, tls_files: dict[str, str]) -> None:
    fake = FakeJasper()
    fake.terminals = [terminal(1, stamp(2))]
    with serve(fake.app, ssl_certfile=tls_files["server_cert"], ssl_keyfile=tls_files["server_key"]) as url:
        fake.url = url
        result = run(tmp_path, fake, fake_oomnitza)
        assert_one_line_error(result, "[jasper] loading the WSDL", "TLS certificate not trusted")
        result = run(tmp_path, fake, fake_oomnitza, cacert_file=tls_files["ca"])
        assert result.code == 0, result.all
        assert_accounted(result, "jasper", pulled=1, sent=1)
        (tmp_path / "storage.db").unlink()
        result = run(tmp_path, fake, fake_oomnitza, verify_ssl="false")
        assert result.code == 0, result.all
        assert_accounted(result, "jasper", pulled=1, sent=1)


# -- REST (Control Center REST API) ------------------------------------------------------------------

REST_MAPPINGS = {
    "SERIAL_NUMBER": "iccid",
    "NAME": "deviceID",
    "PHONE": "msisdn",
    "STATUS": "status",
    "UPDATED": "dateUpdated",
    "PLAN": "communicationPlan",
    "IP": "fixedIPAddress",
    "DEPOT": "accountCustom1",
}
# a mapping written for the SOAP record: it must keep working on REST records (aliases)
SOAP_NAMES = {
    "SERIAL_NUMBER": "iccid",
    "NAME": "terminalId",
    "MODEM": "modemId",
    "PHONE": "_msisdn",
    "MODIFIED": "dateModified",
    "IP": "fixedIpAddress",
    "DEPOT": "custom1",
    "STATUS": "status",
}
DEVICES = "/rws/api/v1/devices"


def rstamp(day: int, minute: int = 0) -> str:
    return f"2026-11-{day:02d} 14:{minute:02d}:31.000+0000"  # Control Center's date form


@pytest.fixture
def cc() -> Iterator[FakeJasperRest]:
    fake = FakeJasperRest()
    fake.devices = [device(i, rstamp(1 + i % 5, i)) for i in range(1, 13)]  # 12 SIMs, changed on different days
    with serve(fake.app) as url:
        fake.url = url
        yield fake


def rest_settings(cc: FakeJasperRest, **extra: str) -> dict[str, str]:
    return {
        "url": f"{cc.url}/rws/api/v1",
        "username": cc.username,
        "api_key": cc.api_key,
        "requests_per_second": "50",
        "sync_field": "SERIAL_NUMBER",
        **extra,
    }


def rest_run(
    tmp_path: Path,
    cc: FakeJasperRest,
    oomnitza: FakeOomnitza,
    *args: str,
    mappings: dict[str, str] | None = None,
    **extra: str,
):  # type: ignore[no-untyped-def]
    ini = write_config(tmp_path, oomnitza, "jasper", rest_settings(cc, **extra), mappings or REST_MAPPINGS)
    return upload(ini, "jasper", *args)


def listing(cc: FakeJasperRest) -> list[dict[str, str]]:
    return [r.query for r in cc.requests if r.path == DEVICES]


def details(cc: FakeJasperRest) -> list[str]:
    return [r.path.rsplit("/", 1)[1] for r in cc.requests if r.path.startswith(DEVICES + "/")]


def test_rest_pages_details_and_state(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    result = rest_run(tmp_path, cc, fake_oomnitza, page_size="5")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    since = "2015-03-04T00:00:00Z"  # no state file yet: full load
    assert listing(cc) == [{"modifiedSince": since, "pageSize": "5", "pageNumber": str(n)} for n in (1, 2, 3)]
    assert sorted(details(cc)) == sorted(d["iccid"] for d in cc.devices)  # each listed SIM read once
    first = cc.requests[0]
    basic = base64.b64encode(f"{cc.username}:{cc.api_key}".encode()).decode()
    assert first.headers["authorization"] == f"Basic {basic}"
    assert first.headers["accept"] == "application/json"
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="89011704278930000001") == {
        "SERIAL_NUMBER": "89011704278930000001",
        "NAME": "TRUCK-0001",
        "PHONE": "882350000000001",
        "STATUS": "ACTIVATED",
        "UPDATED": "2026-11-02T14:01:31Z",  # dates as ISO-8601 UTC, like the SOAP records
        "PLAN": "CP-Data-Only",
        "IP": "10.200.1.1",
        "DEPOT": "Depot 1",
    }
    assert state(tmp_path) == {"jasper": "2026-11-05T14:09:31Z"}  # the newest dateUpdated seen

    # next run: only what changed after the mark; nothing changed: no records, mark kept
    cc.requests.clear()
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=0)
    assert listing(cc) == [{"modifiedSince": "2026-11-05T14:09:31Z", "pageSize": "50", "pageNumber": "1"}]
    assert details(cc) == []
    assert state(tmp_path) == {"jasper": "2026-11-05T14:09:31Z"}

    # one SIM changes: only it is read, and the mark moves on
    cc.devices[3].update(dateUpdated=rstamp(20), status="DEACTIVATED")
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert_accounted(result, "jasper", pulled=1, sent=1)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="89011704278930000004")["STATUS"] == "DEACTIVATED"
    assert state(tmp_path) == {"jasper": "2026-11-20T14:00:31Z"}


def test_rest_soap_names_are_aliases_and_order(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    result = rest_run(tmp_path, cc, fake_oomnitza, "--workers", "1", mappings=SOAP_NAMES)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="89011704278930000007") == {
        "SERIAL_NUMBER": "89011704278930000007",
        "NAME": "TRUCK-0007",  # deviceID
        "MODEM": "MDM-7",  # modemID
        "PHONE": "882350000000007",  # msisdn
        "MODIFIED": "2026-11-03T14:07:31Z",  # dateUpdated
        "IP": "10.200.1.7",  # fixedIPAddress
        "DEPOT": "Depot 7",  # accountCustom1
        "STATUS": "ACTIVATED",
    }
    # records arrive oldest change first (the list order), whatever order the details answered in
    stored = [r["MODIFIED"] for r in fake_oomnitza.records("assets")]
    assert stored == sorted(stored)


def test_rest_bad_credentials_is_one_line(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    result = rest_run(tmp_path, cc, fake_oomnitza, api_key="Wr0ng-key-42")
    assert_one_line_error(
        result,
        "[jasper] Control Center rejected the credentials (401 Invalid credentials, "
        "errorCode 10000001): check username and api_key",
    )
    assert result.err.count("rejected the credentials") == 1
    assert "Wr0ng-key-42" not in result.all
    assert base64.b64encode(f"{cc.username}:Wr0ng-key-42".encode()).decode() not in result.all
    assert len(cc.requests) == 1  # a 401 is not retried
    assert fake_oomnitza.records("assets") == []
    assert not (tmp_path / "storage.db").exists()


def test_rest_429_retry_after_then_success(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    cc.fail(
        "GET",
        DEVICES,
        429,
        headers={"Retry-After": "1"},
        body={"errorMessage": "Too many requests", "errorCode": "10000029"},
    )
    started = time.monotonic()
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert result.code == 0, result.all
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert [q["pageNumber"] for q in listing(cc)] == ["1", "1"]  # the throttled page asked again
    assert state(tmp_path) == {"jasper": "2026-11-05T14:09:31Z"}


def test_rest_5xx_retried(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    cc.fail("GET", DEVICES, 502, query={"pageNumber": "2"}, body="<html>bad gateway</html>")
    cc.fail("GET", f"{DEVICES}/89011704278930000003", 503, times=2)
    result = rest_run(tmp_path, cc, fake_oomnitza, page_size="6")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert [q["pageNumber"] for q in listing(cc)] == ["1", "2", "2"]
    assert details(cc).count("89011704278930000003") == 3
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="89011704278930000003") is not None


def test_rest_empty_result(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    cc.devices.clear()
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=0)
    assert len(listing(cc)) == 1 and details(cc) == []
    assert fake_oomnitza.records("assets") == []
    assert not (tmp_path / "storage.db").exists()  # nothing seen: no mark to store


def test_rest_malformed_list(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    cc.fail("GET", DEVICES, 200, body="<html><body>maintenance</body></html>", headers={"Content-Type": "text/html"})
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert_one_line_error(result, "/rws/api/v1/devices returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("assets") == []

    cc.fail("GET", DEVICES, 200, body={"items": [], "pageNumber": 1})
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert_one_line_error(result, "[jasper] Control Center's device list (page 1) has no 'devices' list")
    assert fake_oomnitza.records("assets") == []
    assert not (tmp_path / "storage.db").exists()


def test_rest_malformed_detail_is_a_failed_record(
    tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza
) -> None:
    cc.fail(
        "GET", f"{DEVICES}/89011704278930000005", 200, body="<html>oops</html>", headers={"Content-Type": "text/html"}
    )
    cc.fail("GET", f"{DEVICES}/89011704278930000006", 200, body=["not", "an", "object"])
    result = rest_run(tmp_path, cc, fake_oomnitza)
    counts = assert_accounted(result, "jasper", pulled=12, sent=10)
    assert counts["failed_convert"] == 2
    assert "details of SIM 89011704278930000005" in result.err
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="89011704278930000005") is None
    assert not (tmp_path / "storage.db").exists()  # not every SIM arrived: read them again next time


def test_rest_listed_but_unknown_iccid(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    # a SIM listed as changed whose details are gone by the time they are read (404) is skipped
    cc.fail(
        "GET",
        f"{DEVICES}/89011704278930000008",
        404,
        body={"errorMessage": "Resource not found - Invalid ICCID", "errorCode": "10000003"},
    )
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=11, sent=11)
    assert details(cc).count("89011704278930000008") == 1  # a 404 is not retried
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="89011704278930000008") is None
    assert state(tmp_path) == {"jasper": "2026-11-05T14:09:31Z"}


def test_rest_state_advances_only_after_a_complete_upload(
    tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza
) -> None:
    (tmp_path / "storage.db").write_text("2026-11-01T00:00:00Z\n", encoding="utf-8")  # a SOAP-era file
    fake_oomnitza.fail("POST", "/api/v3/bulk", 422, times=1, body={"errors": "rejected"})
    result = rest_run(tmp_path, cc, fake_oomnitza)
    counts = assert_accounted(result, "jasper", pulled=12)
    assert counts["failed_send"] > 0
    assert listing(cc)[0]["modifiedSince"] == "2026-11-01T00:00:00Z"  # the SOAP mark is the REST mark
    assert (tmp_path / "storage.db").read_text(encoding="utf-8") == "2026-11-01T00:00:00Z\n"  # unchanged

    result = rest_run(tmp_path, cc, fake_oomnitza, "--record-count", "3")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=3, sent=3)
    assert (tmp_path / "storage.db").read_text(encoding="utf-8") == "2026-11-01T00:00:00Z\n"  # unchanged

    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert state(tmp_path) == {"jasper": "2026-11-05T14:09:31Z"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".storage")] == []  # no temp file left


def test_rest_account_id(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    cc.accounts = ("100045", "200077")
    cc.devices[0]["accountId"] = cc.devices[1]["accountId"] = "200077"
    result = rest_run(tmp_path, cc, fake_oomnitza, account_id="100045")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=10, sent=10)
    assert {q["accountId"] for q in listing(cc)} == {"100045"}

    result = rest_run(tmp_path, cc, fake_oomnitza, account_id="999")
    assert_one_line_error(
        result, "[jasper] GET", "/rws/api/v1/devices failed: 400 Bad Request: Invalid accountId, errorCode 10000010"
    )


def test_rest_details_concurrent_within_workers(
    tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza
) -> None:
    cc.detail_delay = 0.3
    result = rest_run(tmp_path, cc, fake_oomnitza, "--workers", "3")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert cc.max_in_flight == 3  # concurrent, never more than --workers


def test_rest_default_rate_cap(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    cc.devices = cc.devices[:2]
    settings = rest_settings(cc)
    del settings["requests_per_second"]  # default: at most 1 request per second
    result = upload(write_config(tmp_path, fake_oomnitza, "jasper", settings, REST_MAPPINGS), "jasper")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=2, sent=2)
    assert len(cc.times) == 3
    gaps = [b - a for a, b in zip(cc.times, cc.times[1:], strict=False)]
    assert min(gaps) >= 0.9, gaps


def test_fake_rest_protocol(cc: FakeJasperRest) -> None:
    """The fake answers like the documented API (what the source tests rely on)."""
    auth = (cc.username, cc.api_key)
    with httpx.Client(base_url=f"{cc.url}/rws/api/v1", auth=auth) as client:
        missing = client.get("/devices")
        assert missing.status_code == 400 and missing.json()["errorMessage"] == "modifiedSince is required"
        too_big = client.get("/devices", params={"modifiedSince": "2015-03-04T00:00:00Z", "pageSize": 51})
        assert too_big.status_code == 400
        page = client.get("/devices", params={"modifiedSince": "2015-03-04T00:00:00Z", "pageSize": 10}).json()
        assert page["pageNumber"] == 1 and page["lastPage"] is False and len(page["devices"]) == 10
        assert set(page["devices"][0]) == {"iccid", "status", "ratePlan", "communicationPlan"}
        last = client.get(
            "/devices", params={"modifiedSince": "2015-03-04T00:00:00Z", "pageSize": 10, "pageNumber": 2}
        ).json()
        assert last["lastPage"] is True and len(last["devices"]) == 2
        unknown = client.get("/devices/89000000000000000000")
        assert unknown.status_code == 404 and unknown.json()["errorCode"] == "10000003"
        assert client.get("/devices", params={"modifiedSince": "x"}, auth=(cc.username, "nope")).status_code == 401


# -- choosing the API ---------------------------------------------------------------------------------


def test_existing_soap_config_still_selects_soap(
    tmp_path: Path, jasper: FakeJasper, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza
) -> None:
    # an INI written for the SOAP connector (no api, no url): SOAP, as before
    result = run(tmp_path, jasper, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert len(jasper.calls("/ws/service/terminal")) > 0
    assert "(SOAP API)" in result.err

    # api = soap wins over a url that happens to be set
    (tmp_path / "storage.db").unlink()
    result = run(tmp_path, jasper, fake_oomnitza, api="soap", url=f"{cc.url}/rws/api/v1", api_key=cc.api_key)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert cc.requests == []


def test_auto_selects_rest_when_url_is_set(
    tmp_path: Path, jasper: FakeJasper, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza
) -> None:
    # a SOAP section extended with the REST settings moves to REST; the SOAP service is not asked
    result = run(tmp_path, jasper, fake_oomnitza, url=cc.url, api_key=cc.api_key, requests_per_second="50")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert jasper.requests == []
    assert len(listing(cc)) == 1  # a bare host gets /rws/api/v1
    assert "(REST API)" in result.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"api": "rest"}, "url must be the Control Center REST base for api = rest"),
        ({"api_key": ""}, "api_key is required for the REST API"),
        ({"page_size": "51"}, "page_size = '51' must be a whole number from 1 to 50"),
        ({"requests_per_second": "0"}, "requests_per_second = '0' must be a number above 0"),
        ({"url": "control.example"}, "url = 'control.example' must start with https:// or http://"),
        ({"account_id": "acme"}, "account_id must be the numeric enterprise account id"),
        ({"api": "graphql"}, "api = 'graphql' must be one of: auto, soap, rest"),
    ],
)
def test_rest_settings_are_checked(
    tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza, extra: dict[str, str], message: str
) -> None:
    settings = {**rest_settings(cc), **extra}
    if extra.get("api") == "rest":
        del settings["url"]
    result = upload(write_config(tmp_path, fake_oomnitza, "jasper", settings, REST_MAPPINGS), "jasper")
    assert_one_line_error(result, message)
    assert cc.requests == []


def test_soap_settings_still_required_for_soap(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, jasper, fake_oomnitza, password="")
    assert_one_line_error(result, "[jasper] password is required for the SOAP Terminal API")
    assert jasper.requests == []


def test_generated_ini_lists_both_apis() -> None:
    text = render_template()
    section = text.split("[jasper]\n", 1)[1].split("\n\n", 1)[0]
    assert "wsdl_path = https://api.jasperwireless.com/ws/schema/Terminal.wsdl" in section
    assert "api = auto" in section and "api_key = YOUR Control Center API KEY" in section
    assert "page_size = 50" in section and "requests_per_second = 1" in section
    assert "\nurl =\n" in section  # empty: a filled-in template stays on SOAP until url is set


def test_rest_tls_settings(tmp_path: Path, fake_oomnitza: FakeOomnitza, tls_files: dict[str, str]) -> None:
    fake = FakeJasperRest()
    fake.devices = [device(1, rstamp(2))]
    with serve(fake.app, ssl_certfile=tls_files["server_cert"], ssl_keyfile=tls_files["server_key"]) as url:
        fake.url = url
        result = rest_run(tmp_path, fake, fake_oomnitza)
        assert_one_line_error(result, "TLS certificate not trusted")
        assert fake_oomnitza.records("assets") == []
        result = rest_run(tmp_path, fake, fake_oomnitza, cacert_file=tls_files["ca"])
        assert result.code == 0, result.all
        assert_accounted(result, "jasper", pulled=1, sent=1)
