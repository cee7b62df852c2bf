"""[jasper] end to end through the CLI against the fake Control Center SOAP service (WSDL + XSD +
SOAP envelopes and faults), the fake Control Center REST API (``/rws/api/v1``) and the fake Oomnitza."""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from oomnitza_connector.config import render_template
from tests.fakes.jasper import FakeJasper, terminal
from tests.fakes.jasper_rest import THROTTLED, FakeJasperRest, days_ago, device
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve, serving
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
    with serving(fake):
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


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_soap_transient_fault(tmp_path: Path, jasper: FakeJasper, fake_oomnitza: FakeOomnitza, fault: str) -> None:
    # every SOAP call is a POST to the same endpoint (no query to aim at): the first one is hit
    inject_fault(jasper, fault, "POST", "/ws/service/terminal")
    result = run(tmp_path, jasper, fake_oomnitza, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    assert len(fake_oomnitza.records("assets")) == 12
    assert len(jasper.calls("/ws/service/terminal")) == 5  # 2 list pages + 2 detail calls + the one retried


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
        forget_sync_state()  # start over: send the SIM again
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
REQUEST_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
# 12 SIMs changed over the last year: the first run walks windows to reach them all
AGES = (350, 300, 250, 200, 150, 120, 90, 60, 30, 12, 5, 1)


def utcnow() -> datetime:
    return datetime.now(UTC)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def cc() -> Iterator[FakeJasperRest]:
    fake = FakeJasperRest()
    fake.devices = [device(i, days_ago(age)) for i, age in enumerate(AGES, start=1)]
    with serving(fake):
        yield fake


def rest_settings(cc: FakeJasperRest, **extra: str) -> dict[str, str]:
    return {
        "url": f"{cc.url}/rws/api/v1",
        "username": cc.username,
        "api_key": cc.api_key,
        "requests_per_second": "50",
        "window_days": "365",  # one window unless a test walks several
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


def recent_mark(tmp_path: Path, days: float) -> str:
    """A state file as a previous run leaves it: changes up to ``days`` ago are in Oomnitza."""
    mark = (utcnow() - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    (tmp_path / "storage.db").write_text(json.dumps({"jasper": mark}), encoding="utf-8")
    return mark


def listing(cc: FakeJasperRest) -> list[dict[str, str]]:
    return [r.query for r in cc.requests if r.path == DEVICES]


def details(cc: FakeJasperRest) -> list[str]:
    return [r.path.rsplit("/", 1)[1] for r in cc.requests if r.path.startswith(DEVICES + "/")]


def iccid(i: int) -> str:
    return f"890117042789300{i:05d}"


def test_rest_first_run_walks_one_year_in_windows(
    tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza
) -> None:
    result = rest_run(tmp_path, cc, fake_oomnitza, window_days="60", page_size="5")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    queries = listing(cc)
    assert all(REQUEST_DATE.fullmatch(q["modifiedSince"]) for q in queries)  # yyyy-MM-ddTHH:mm:ssZ
    assert all(REQUEST_DATE.fullmatch(q["modifiedTill"]) for q in queries)
    spans = sorted({(when(q["modifiedSince"]), when(q["modifiedTill"])) for q in queries})
    # no state: the first window starts a day inside the year Control Center accepts (10000045)
    assert abs(spans[0][0] - (utcnow() - timedelta(days=364))) < timedelta(minutes=1)
    assert abs(spans[-1][1] - utcnow()) < timedelta(minutes=1)
    assert all(till - since <= timedelta(days=60) for since, till in spans)
    assert all(b[0] == a[1] - timedelta(seconds=1) for a, b in itertools.pairwise(spans))  # no gap
    assert len(spans) == 7
    assert sorted(details(cc)) == sorted(d["iccid"] for d in cc.devices)  # each SIM read once
    first = cc.requests[0]
    basic = base64.b64encode(f"{cc.username}:{cc.api_key}".encode()).decode()
    assert first.headers["authorization"] == f"Basic {basic}"
    assert first.headers["accept"] == "application/json"
    record = fake_oomnitza.record("assets", SERIAL_NUMBER=iccid(1))
    assert record["NAME"] == "TRUCK-0001" and record["DEPOT"] == "Depot 1" and record["PLAN"] == "CP-Data-Only"
    assert REQUEST_DATE.fullmatch(record["UPDATED"])  # dates as ISO-8601 UTC, like the SOAP records
    # every window's end was saved as its SIMs arrived; the last mark stays 15 minutes behind the clock
    assert result.err.count("progress saved") == 7
    mark = when(state(tmp_path)["jasper"])
    assert abs(mark - (utcnow() - timedelta(minutes=15))) < timedelta(minutes=1)
    assert cc.throttled == 0 and cc.max_in_flight == 1

    # next run: one window from the mark, nothing changed
    cc.requests.clear()
    saved = state(tmp_path)["jasper"]
    result = rest_run(tmp_path, cc, fake_oomnitza, window_days="60")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=0)
    assert [q["modifiedSince"] for q in listing(cc)] == [saved]
    assert details(cc) == []

    # one SIM changes: only it is read
    cc.devices[3].update(dateUpdated=days_ago(0.01), status="DEACTIVATED")
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert_accounted(result, "jasper", pulled=1, sent=1)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER=iccid(4))["STATUS"] == "DEACTIVATED"


def test_rest_crash_mid_walk_resumes_at_the_last_saved_window(
    tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza
) -> None:
    # the SIM changed 90 days ago cannot be read (a refusal, not retried): the run stops in window 5
    cc.fail("GET", f"{DEVICES}/{iccid(7)}", 400, body={"errorCode": "10000099", "errorMessage": "Internal error"})
    result = rest_run(tmp_path, cc, fake_oomnitza, window_days="60")
    assert_one_line_error(result, f"{DEVICES}/{iccid(7)} failed: 400 Bad Request: Internal error, errorCode 10000099")
    assert result.err.count("progress saved") == 4  # windows 1-4 were delivered
    saved = state(tmp_path)["jasper"]
    assert abs(when(saved) - (utcnow() - timedelta(days=124))) < timedelta(minutes=1)
    sent = {r["SERIAL_NUMBER"] for r in fake_oomnitza.records("assets")}
    assert {iccid(i) for i in range(1, 6)} <= sent  # the SIMs of windows 1-4 (and the page before)

    cc.requests.clear()
    result = rest_run(tmp_path, cc, fake_oomnitza, window_days="60")
    assert result.code == 0, result.all
    assert listing(cc)[0]["modifiedSince"] == saved  # resumed where the crash left off
    assert iccid(1) not in details(cc) and iccid(5) not in details(cc)  # the saved windows are not read again
    assert {r["SERIAL_NUMBER"] for r in fake_oomnitza.records("assets")} == {iccid(i) for i in range(1, 13)}


def test_rest_stale_mark_starts_inside_the_year(
    tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza
) -> None:
    (tmp_path / "storage.db").write_text("2015-03-04T00:00:00Z\n", encoding="utf-8")  # a SOAP-era file
    result = rest_run(tmp_path, cc, fake_oomnitza, window_days="365")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    first = when(listing(cc)[0]["modifiedSince"])
    assert abs(first - (utcnow() - timedelta(days=364))) < timedelta(minutes=1)  # not 2015: no 10000045
    assert "more than a year old" in result.err and "api = soap can read them" in result.err
    assert len({q["modifiedSince"] for q in listing(cc)}) == 1  # one window of at most a year


def test_rest_window_older_than_a_year_is_one_line(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    # Control Center's clock two days ahead: the first window's start is more than a year old for it
    fake = FakeJasperRest(clock=lambda: datetime.now(UTC) + timedelta(days=2))
    fake.devices = [device(1, days_ago(3))]
    with serving(fake):
        result = rest_run(tmp_path, fake, fake_oomnitza)
    assert_one_line_error(
        result,
        "[jasper] Control Center refused the listing window (400 ModifiedSince cannot be more than one year old, "
        "errorCode 10000045): it lists changes of the last year only",
    )
    assert len(listing(fake)) == 1  # a refusal, not retried
    assert not (tmp_path / "storage.db").exists()


def test_rest_recent_mark_is_the_rest_mark(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    soap_mark = (utcnow() - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    (tmp_path / "storage.db").write_text(soap_mark + "\n", encoding="utf-8")  # a one-line SOAP-era file
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=3, sent=3)  # changed 12, 5 and 1 days ago
    assert listing(cc)[0]["modifiedSince"] == soap_mark  # the SOAP mark is the REST mark
    assert set(details(cc)) == {iccid(10), iccid(11), iccid(12)}


def test_rest_soap_names_are_aliases_and_order(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    result = rest_run(tmp_path, cc, fake_oomnitza, mappings=SOAP_NAMES, window_days="365")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=12, sent=12)
    record = fake_oomnitza.record("assets", SERIAL_NUMBER=iccid(7))
    assert record == {
        "SERIAL_NUMBER": iccid(7),
        "NAME": "TRUCK-0007",  # deviceID
        "MODEM": "MDM-7",  # modemID
        "PHONE": "882350000000007",  # msisdn
        "MODIFIED": record["MODIFIED"],  # dateUpdated
        "IP": "10.200.1.7",  # fixedIPAddress
        "DEPOT": "Depot 7",  # accountCustom1
        "STATUS": "ACTIVATED",
    }
    assert REQUEST_DATE.fullmatch(record["MODIFIED"])
    # records arrive oldest change first (the list order)
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


@pytest.mark.parametrize("fault", [*STANDARD_FAULTS, "throttle_40000029"])
def test_rest_transient_fault_on_a_later_page(
    tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    mark = recent_mark(tmp_path, 70)  # one window: the 5 SIMs changed in the last 70 days
    if fault == "throttle_40000029":
        cc.fail("GET", DEVICES, 400, body=THROTTLED, query={"pageNumber": "2"})
    else:
        inject_fault(cc, fault, "GET", DEVICES, query={"pageNumber": "2"})
    result = rest_run(tmp_path, cc, fake_oomnitza, page_size="2", request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=5, sent=5)
    assert len(fake_oomnitza.records("assets")) == 5
    assert [q["pageNumber"] for q in listing(cc)][:4] == ["1", "2", "2", "3"]  # the faulty page asked again
    assert all(q["modifiedSince"] == mark for q in listing(cc))
    assert when(state(tmp_path)["jasper"]) > when(mark)


def test_rest_throttling_answers_are_retried(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    # a Control Center allowing 2 calls a second: the faster connector is refused with 400/40000029
    fake = FakeJasperRest(tps=2)
    fake.devices = [device(i, days_ago(i)) for i in range(1, 4)]
    with serving(fake):
        recent_mark(tmp_path, 10)
        result = rest_run(tmp_path, fake, fake_oomnitza, requests_per_second="50")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=3, sent=3)
    assert fake.throttled > 0  # throttled, then retried with back-off: nothing lost
    assert "answered 400; retrying" in result.err


def test_rest_throttle_that_never_ends(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    recent_mark(tmp_path, 10)
    cc.fail("GET", DEVICES, 400, body=THROTTLED, times=20, headers={"Retry-After": "0"})
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert_one_line_error(result, "failed: 400 Bad Request after 8 attempts: Rate Limit Exceeded, errorCode 40000029")
    assert len(listing(cc)) == 8


def test_rest_one_call_at_a_time(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    recent_mark(tmp_path, 70)
    cc.detail_delay = 0.2
    result = rest_run(tmp_path, cc, fake_oomnitza, "--workers", "3")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=5, sent=5)
    assert cc.max_in_flight == 1 and cc.throttled == 0  # serial, whatever --workers says


def test_rest_empty_result(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    cc.devices.clear()
    mark = recent_mark(tmp_path, 10)
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=0)
    assert len(listing(cc)) == 1 and details(cc) == []
    assert fake_oomnitza.records("assets") == []
    assert when(state(tmp_path)["jasper"]) > when(mark)  # an empty window still moves the mark on


def test_rest_malformed_list(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    mark = recent_mark(tmp_path, 10)
    cc.fail("GET", DEVICES, 200, body="<html><body>maintenance</body></html>", headers={"Content-Type": "text/html"})
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert_one_line_error(result, "/rws/api/v1/devices returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("assets") == []

    cc.fail("GET", DEVICES, 200, body={"items": [], "pageNumber": 1})
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert_one_line_error(result, "[jasper] Control Center's device list (page 1) has no 'devices' list")
    assert fake_oomnitza.records("assets") == []
    assert state(tmp_path)["jasper"] == mark


def test_rest_malformed_detail_is_a_failed_record(
    tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza
) -> None:
    mark = recent_mark(tmp_path, 70)
    cc.fail("GET", f"{DEVICES}/{iccid(9)}", 200, body="<html>oops</html>", headers={"Content-Type": "text/html"})
    cc.fail("GET", f"{DEVICES}/{iccid(10)}", 200, body=["not", "an", "object"])
    result = rest_run(tmp_path, cc, fake_oomnitza)
    counts = assert_accounted(result, "jasper", pulled=5, sent=3)
    assert counts["failed_convert"] == 2
    assert f"details of SIM {iccid(9)}" in result.err
    assert fake_oomnitza.record("assets", SERIAL_NUMBER=iccid(9)) is None
    assert state(tmp_path)["jasper"] == mark  # not every SIM arrived: read them again next time


def test_rest_listed_but_unknown_iccid(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    # a SIM listed as changed whose details are gone by the time they are read (404) is skipped
    recent_mark(tmp_path, 70)
    cc.fail(
        "GET",
        f"{DEVICES}/{iccid(8)}",
        404,
        body={"errorMessage": "Resource not found - Invalid ICCID", "errorCode": "10000003"},
    )
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=4, sent=4)
    assert details(cc).count(iccid(8)) == 1  # a 404 is not retried
    assert fake_oomnitza.record("assets", SERIAL_NUMBER=iccid(8)) is None


def test_rest_state_advances_only_after_a_complete_upload(
    tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza
) -> None:
    mark = recent_mark(tmp_path, 70)
    before = (tmp_path / "storage.db").read_text(encoding="utf-8")
    fake_oomnitza.fail("POST", "/api/v3/bulk", 422, times=1, body={"errors": "rejected"})
    result = rest_run(tmp_path, cc, fake_oomnitza, window_days="20")  # the failure is in the first window
    counts = assert_accounted(result, "jasper", pulled=5)
    assert counts["failed_send"] > 0
    assert listing(cc)[0]["modifiedSince"] == mark
    assert (tmp_path / "storage.db").read_text(encoding="utf-8") == before  # unchanged

    result = rest_run(tmp_path, cc, fake_oomnitza, "--record-count", "3", "--full")  # --full: count them sent
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=3, sent=3)
    assert (tmp_path / "storage.db").read_text(encoding="utf-8") == before  # unchanged

    result = rest_run(tmp_path, cc, fake_oomnitza, "--testmode")
    assert (tmp_path / "storage.db").read_text(encoding="utf-8") == before  # test mode saves nothing

    result = rest_run(tmp_path, cc, fake_oomnitza, "--full")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=5, sent=5)
    assert when(state(tmp_path)["jasper"]) > when(mark)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".storage")] == []  # no temp file left


def test_rest_account_id(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    recent_mark(tmp_path, 70)
    cc.accounts = ("100045", "200077")
    cc.devices[-1]["accountId"] = cc.devices[-2]["accountId"] = "200077"
    result = rest_run(tmp_path, cc, fake_oomnitza, account_id="100045")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=3, sent=3)
    assert {q["accountId"] for q in listing(cc)} == {"100045"}

    result = rest_run(tmp_path, cc, fake_oomnitza, account_id="999")
    assert_one_line_error(
        result, "[jasper] GET", "/rws/api/v1/devices failed: 400 Bad Request: Invalid accountId, errorCode 10000010"
    )


def test_rest_server_side_mapping(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    # Control Center answers every field of a SIM: a field mapped only in Oomnitza arrives
    recent_mark(tmp_path, 70)
    fake_oomnitza.set_mapping("Jasper", {"imsi": "IMSI", "custom2": "DEPOT_2"})
    cc.devices[-1]["accountCustom2"] = "Bay 4"
    result = rest_run(tmp_path, cc, fake_oomnitza)
    assert result.code == 0, result.all
    record = fake_oomnitza.record("assets", SERIAL_NUMBER=iccid(12))
    assert (record["IMSI"], record["DEPOT_2"]) == ("310170000000012", "Bay 4")


def test_rest_default_rate_cap(tmp_path: Path, cc: FakeJasperRest, fake_oomnitza: FakeOomnitza) -> None:
    recent_mark(tmp_path, 6)  # the 2 SIMs changed 5 and 1 days ago: 1 list + 2 detail calls
    cc.tps = 1.0  # a Control Center allowing 1 call a second: the connector's default rate keeps within it
    settings = rest_settings(cc)
    del settings["requests_per_second"]  # default: at most 1 request per second
    result = upload(write_config(tmp_path, fake_oomnitza, "jasper", settings, REST_MAPPINGS), "jasper")
    assert result.code == 0, result.all
    assert_accounted(result, "jasper", pulled=2, sent=2)
    assert len(cc.times) == 3 and cc.throttled == 0
    gaps = [b - a for a, b in zip(cc.times, cc.times[1:], strict=False)]
    assert min(gaps) >= 0.9, gaps


def test_fake_rest_protocol(cc: FakeJasperRest) -> None:
    """The fake answers like Control Center (what the source tests rely on)."""
    auth = (cc.username, cc.api_key)
    since = (utcnow() - timedelta(days=360)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with httpx.Client(base_url=f"{cc.url}/rws/api/v1", auth=auth) as client:
        missing = client.get("/devices")
        assert missing.status_code == 400 and missing.json()["errorCode"] == "10000003"
        too_old = client.get("/devices", params={"modifiedSince": "2015-03-04T00:00:00Z"})
        assert too_old.status_code == 400 and too_old.json()["errorCode"] == "10000045"
        future = client.get("/devices", params={"modifiedSince": "2999-01-01T00:00:00Z"})
        assert future.status_code == 400 and future.json()["errorCode"] == "10002119"
        fraction = client.get("/devices", params={"modifiedSince": since.replace("Z", ".000Z")})
        assert fraction.status_code == 400
        too_big = client.get("/devices", params={"modifiedSince": since, "pageSize": 51})
        assert too_big.status_code == 400
        page = client.get("/devices", params={"modifiedSince": since, "pageSize": 10}).json()
        assert page["pageNumber"] == 1 and page["lastPage"] is False and len(page["devices"]) == 10
        assert set(page["devices"][0]) == {"iccid", "status", "ratePlan", "communicationPlan"}
        last = client.get("/devices", params={"modifiedSince": since, "pageSize": 10, "pageNumber": 2}).json()
        assert last["lastPage"] is True and len(last["devices"]) == 2
        till = (utcnow() - timedelta(days=100)).strftime("%Y-%m-%dT%H:%M:%SZ")
        window = client.get("/devices", params={"modifiedSince": since, "modifiedTill": till}).json()
        assert len(window["devices"]) == 6
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
    forget_sync_state()  # start over: send the SIMs again
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
    assert listing(cc)  # a bare host gets /rws/api/v1
    assert "(REST API" in result.err, result.err


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
    fake.devices = [device(1, days_ago(2))]
    with serve(fake.app, ssl_certfile=tls_files["server_cert"], ssl_keyfile=tls_files["server_key"]) as url:
        fake.url = url
        result = rest_run(tmp_path, fake, fake_oomnitza)
        assert_one_line_error(result, "TLS certificate not trusted")
        assert fake_oomnitza.records("assets") == []
        result = rest_run(tmp_path, fake, fake_oomnitza, cacert_file=tls_files["ca"])
        assert result.code == 0, result.all
        assert_accounted(result, "jasper", pulled=1, sent=1)
