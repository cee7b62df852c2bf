"""[jasper] end to end through the CLI against the fake Control Center SOAP service (WSDL + XSD +
SOAP envelopes and faults) and the fake Oomnitza."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.jasper import FakeJasper, terminal
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve
from tests.sourcekit import assert_accounted, assert_one_line_error, upload, write_config

MAPPINGS = {"SERIAL_NUMBER": "iccid", "NAME": "terminalId", "PHONE": "msisdn", "STATUS": "status",
            "MODIFIED": "dateModified", "USAGE": "monthToDateUsage", "OVERAGE": "overageLimitReached",
            "TERM_END": "rating.termEndDate", "DEPOT": "custom1"}


def stamp(day: int, minute: int = 0) -> str:
    return f"2026-11-{day:02d}T14:{minute:02d}:31.000Z"


@pytest.fixture
def jasper() -> Iterator[FakeJasper]:
    fake = FakeJasper(page_size=7)
    # 12 SIMs over two GetModifiedTerminals pages (7 + 5), modified on different days
    fake.terminals = [terminal(i, stamp(1 + i % 5, i)) for i in range(1, 13)]
    fake.terminals[0]["rating"] = {"termStartDate": "2026-01-01", "termEndDate": "2026-12-31",
                                   "renewalPolicy": "AUTO"}
    with serve(fake.app) as url:
        fake.url = url
        yield fake


def settings(jasper: FakeJasper, **extra: str) -> dict[str, str]:
    return {"wsdl_path": f"{jasper.url}/ws/schema/Terminal.wsdl", "username": jasper.username,
            "password": jasper.password, "api_token": jasper.license_key, "sync_field": "SERIAL_NUMBER", **extra}


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


def test_bad_credentials_is_one_line_and_state_untouched(tmp_path: Path, jasper: FakeJasper,
                                                        fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, jasper, fake_oomnitza, password="Wr0ng-pass-42")
    assert_one_line_error(result, "Control Center refused GetModifiedTerminals (SOAP fault Client 200200 "
                                  "Invalid username or password (fictional text)): check username, password")
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


def test_upload_failure_does_not_advance_state(tmp_path: Path, jasper: FakeJasper,
                                               fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.fail("POST", "/api/v3/bulk", 422, times=1, body={"errors": "rejected"})
    result = run(tmp_path, jasper, fake_oomnitza)
    counts = assert_accounted(result, "jasper", pulled=12)
    assert counts["failed_send"] > 0
    assert not (tmp_path / "storage.db").exists()  # the SIMs that did not arrive are read again next time


def test_details_fault_mid_run_keeps_old_mark(tmp_path: Path, jasper: FakeJasper,
                                              fake_oomnitza: FakeOomnitza) -> None:
    (tmp_path / "storage.db").write_text("2026-11-01T00:00:00Z\n", encoding="utf-8")  # the reference's format
    jasper.max_details = 3  # the account's per-call limit is lower than asked: a fault on the details call
    result = run(tmp_path, jasper, fake_oomnitza, details_per_call="5")
    assert_one_line_error(result, "Control Center answered GetTerminalDetails with a SOAP fault: Client 400300 "
                                  "Too many ICCIDs (max 3)")
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
    jasper.fail("POST", "/ws/service/terminal", 200, body="<html><body>maintenance</body></html>",
                headers={"Content-Type": "text/html"})
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


def test_sections_keep_separate_marks_and_verify_ssl(tmp_path: Path, jasper: FakeJasper,
                                                     fake_oomnitza: FakeOomnitza) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "sims.json").write_text(json.dumps({"jasper.eu": "2026-10-01T00:00:00Z"}), encoding="utf-8")
    result = run(tmp_path, jasper, fake_oomnitza, storage="state/sims.json", verify_ssl="false")
    assert result.code == 0, result.all
    assert state(tmp_path, "state/sims.json") == {"jasper": "2026-11-05T14:09:31Z",
                                                  "jasper.eu": "2026-10-01T00:00:00Z"}
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
