"""The sink side of a run through the CLI against the fake Oomnitza: delivery proven by the answer,
throttling and outages within a retry budget, the circuit breaker, cancel from the web UI, 413
splitting, server/INI mapping merge and failed runs reported before the finalize. Every test checks
the summary against what the fake stored."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from oomnitza_connector.oomnitza.client import bulk_answer_check
from oomnitza_connector.oomnitza.payload import RunInfo
from tests.fakes.oomnitza import FakeOomnitza

from .helpers import CliResult, run_cli
from .sourcekit import assert_accounted


def make_csv(path: Path, n: int, *, owner: str = "user{i}@acme.test") -> Path:
    rows = "".join(f"SN{i:05d},Model {i % 7},{owner.format(i=i)}\n" for i in range(n))
    path.write_text("serial,model,owner\n" + rows, encoding="utf-8")
    return path


def config(tmp_path: Path, fake: FakeOomnitza, *, oomnitza: str = "", extra: str = "") -> Path:
    text = "\n".join(
        [
            "[oomnitza]",
            f"url = {fake.url}",
            f"api_token = {fake.token}",
            *oomnitza.splitlines(),
            "",
            "[csv_assets]",
            "enable = True",
            f"filename = {tmp_path / 'assets.csv'}",
            "sync_field = SERIAL_NUMBER",
            'mapping.SERIAL_NUMBER = {"source": "serial"}',
            'mapping.MODEL = {"source": "model"}',
            *extra.splitlines(),
            "",
        ]
    )
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    return path


def upload(ini: Path, *args: str) -> CliResult:
    return run_cli("upload", "csv_assets", "--ini", str(ini), *args)


def stored(fake: FakeOomnitza) -> int:
    return len(fake.records("assets"))


def bulk_statuses(fake: FakeOomnitza) -> list[int | None]:
    return [r.status for r in fake.requests if r.path == "/api/v3/bulk" and r.method == "POST"]


# -- 1. a send counts only when the answer proves it -----------------------------------------------


def test_a_proxy_html_page_with_status_200_is_a_failed_send_and_is_retried(
    tmp_path: Path, fake_oomnitza: FakeOomnitza
) -> None:
    make_csv(tmp_path / "assets.csv", 150)
    fake_oomnitza.html_page("POST", "/api/v3/bulk$", status=200, times=1)
    result = upload(config(tmp_path, fake_oomnitza), "--workers", "0")
    assert result.code == 0, result.all
    assert bulk_statuses(fake_oomnitza) == [200, 200, 200]  # the page, then both batches
    assert "not JSON (text/html" in result.err and "a proxy or firewall page?" in result.err
    assert_accounted(result, "csv_assets", pulled=150, sent=150)
    assert stored(fake_oomnitza) == 150


def test_json_that_is_not_a_bulk_answer_never_counts_as_sent(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 20)
    fake_oomnitza.fail("POST", "/api/v3/bulk$", 200, times=1000, body={"status": "ok"})
    ini = config(tmp_path, fake_oomnitza, oomnitza="retry_budget = 0.3")
    result = upload(ini, "--batch-size", "10", "--workers", "0")
    assert result.code == 3, result.all  # two failed batches: under the breaker's three
    assert "JSON that is not a bulk answer" in result.err
    assert_accounted(result, "csv_assets", pulled=20, sent=0)
    assert stored(fake_oomnitza) == 0


def test_records_the_answer_counts_as_failed_are_not_counted_as_sent(
    tmp_path: Path, fake_oomnitza: FakeOomnitza
) -> None:
    (tmp_path / "assets.csv").write_text("serial,model,owner\nA1,M,x\n,M,y\nA3,M,z\n", encoding="utf-8")
    result = upload(config(tmp_path, fake_oomnitza))  # the empty serial cannot be matched in Oomnitza
    assert result.code == 3, result.all
    # (a record without a sync key goes in a batch of its own: change-aware sync)
    assert "Oomnitza did not take 1 of 1 record(s)" in result.err
    counts = assert_accounted(result, "csv_assets", pulled=3, sent=2)
    assert counts["failed_send"] == 1 and stored(fake_oomnitza) == 2


# -- 2. throttling, outages, the circuit breaker ---------------------------------------------------


def test_a_429_storm_longer_than_eight_attempts_drops_nothing(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 20)
    fake_oomnitza.fail("POST", "/api/v3/bulk$", 429, times=12, headers={"Retry-After": "0"})
    result = upload(config(tmp_path, fake_oomnitza), "--workers", "0")
    assert result.code == 0, result.all
    assert bulk_statuses(fake_oomnitza) == [429] * 12 + [200]
    assert_accounted(result, "csv_assets", pulled=20, sent=20)
    assert stored(fake_oomnitza) == 20


def test_a_hung_oomnitza_ends_the_run_with_the_circuit_breaker(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 500)
    fake_oomnitza.stall("POST", "/api/v3/bulk", 5.0, times=1000)  # uploads, error report and finalize
    settings = "request_timeout = 0.3\nretry_budget = 30\nstop_after_failed_batches = 2"
    result = upload(config(tmp_path, fake_oomnitza, oomnitza=settings), "--workers", "1")
    assert result.code == 1, result.all
    # Each batch: one timeout, one retry that times out too (not one per connect retry), then it fails.
    assert len(fake_oomnitza.find_requests("POST", "/api/v3/bulk")) <= 2 * 2 + 2
    assert "stopped sending: Oomnitza failed 2 batches in a row" in result.err
    assert "could not finalize the sync session" in result.err
    counts = assert_accounted(result, "csv_assets", pulled=result_pulled(result), sent=0)
    assert counts["failed_send"] == counts["pulled"] and stored(fake_oomnitza) == 0


def result_pulled(result: CliResult) -> int:
    from .sourcekit import summary_row

    return summary_row(result, "csv_assets")["pulled"]


def test_after_the_breaker_the_remaining_sections_are_not_run(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 50)
    fake_oomnitza.fail("POST", "/api/v3/bulk$", 503, times=1000)
    ini = config(tmp_path, fake_oomnitza, oomnitza="retry_budget = 0.2\nstop_after_failed_batches = 1")
    text = ini.read_text() + f"\n[csv_assets.more]\nenable = True\nfilename = {tmp_path / 'assets.csv'}\n"
    ini.write_text(text + "sync_field = SERIAL_NUMBER\nmapping.SERIAL_NUMBER = serial\n")
    result = run_cli("upload", "csv_assets", "csv_assets.more", "--ini", str(ini), "--batch-size", "10")
    assert result.code == 1, result.all
    assert "the remaining sections were not run (csv_assets.more)" in result.err
    assert "not run" in result.err
    assert len(fake_oomnitza.portions) == 1


# -- 4. cancel from the Oomnitza web UI -----------------------------------------------------------


def test_canceled_in_oomnitza_stops_reading_finalizes_and_exits_4(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 1000)
    fake_oomnitza.cancel(after_records=200)
    ini = config(tmp_path, fake_oomnitza, oomnitza="cancel_check_interval = 0")
    result = upload(ini, "--workers", "0")
    assert result.code == 4, result.all
    assert "the sync was canceled in Oomnitza" in result.err
    row = next(line for line in result.err.splitlines() if " csv_assets " in line)
    assert row.rstrip(" │").endswith("canceled")
    counts = assert_accounted(result, "csv_assets", pulled=result_pulled(result), sent=200)
    assert counts["pulled"] <= 300  # reading stopped at the next check
    portion = fake_oomnitza.portion()
    assert stored(fake_oomnitza) == 200 and portion.finalized and portion.errors_total == 0
    assert [e for e, _ in portion.events].count("bulk") == 2


def test_cancel_checks_are_throttled(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 1000)
    ini = config(tmp_path, fake_oomnitza, oomnitza="cancel_check_interval = 3600")
    assert upload(ini, "--batch-size", "10").code == 0
    assert fake_oomnitza.portion().info_requests == 0  # not one GET per page or batch
    fake_oomnitza.reset()
    ini = config(tmp_path, fake_oomnitza, oomnitza="cancel_check_interval = 0")
    assert upload(ini, "--batch-size", "100", "--full").code == 0  # send the same records again
    assert fake_oomnitza.portion().info_requests >= 9  # every batch asks when told to


# -- 5. 413 splits the batch -----------------------------------------------------------------------


def test_413_splits_the_batch_and_a_lone_huge_record_fails_alone(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    rows = [f"SN{i:05d},Model,user{i}@acme.test" for i in range(100)]
    rows[37] = "SN00037,Model," + "x" * 20000
    (tmp_path / "assets.csv").write_text("serial,model,owner\n" + "\n".join(rows) + "\n", encoding="utf-8")
    fake_oomnitza.max_body_bytes = 4000  # ~40 records of this shape
    ini = config(tmp_path, fake_oomnitza, extra='mapping.ASSIGNED_TO = {"source": "owner"}')
    result = upload(ini, "--workers", "2")
    assert result.code == 3, result.all
    assert "too large for Oomnitza even on its own" in result.err and "SERIAL_NUMBER='SN00037'" in result.err
    counts = assert_accounted(result, "csv_assets", pulled=100, sent=99)
    assert counts["failed_send"] == 1
    assert stored(fake_oomnitza) == 99 and fake_oomnitza.record("assets", SERIAL_NUMBER="SN00037") is None
    assert max(len(p["records"]) for p in fake_oomnitza.bulk_payloads) < 100


# -- 6. server mapping and INI line merged key by key ----------------------------------------------


CONVERTER = "\n[converters]\nshout:\n    return value.upper()\n"


def test_an_ini_converter_combines_with_the_server_mappings_source(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.set_mapping("CSV_assets", {"owner": "USER"})
    make_csv(tmp_path / "assets.csv", 3)
    result = upload(config(tmp_path, fake_oomnitza, extra='mapping.USER = {"converter": "shout"}' + CONVERTER))
    assert result.code == 0, result.all
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="SN00001")["USER"] == "USER1@ACME.TEST"


def test_a_merged_spec_still_without_a_source_is_one_line_at_run_time(
    tmp_path: Path, fake_oomnitza: FakeOomnitza
) -> None:
    make_csv(tmp_path / "assets.csv", 3)
    result = upload(config(tmp_path, fake_oomnitza, extra='mapping.USER = {"converter": "shout"}' + CONVERTER))
    assert result.code == 1, result.all
    lines = [line for line in result.err.splitlines() if "mapping.USER" in line]
    assert len(lines) == 1 and "the server mapping 'CSV_assets' gives none either" in lines[0]
    assert "Traceback" not in result.all
    assert fake_oomnitza.find_requests("POST") == []  # nothing sent, no session opened


# -- 7. a failed run is reported before the finalize -----------------------------------------------


def test_a_source_that_fails_is_reported_to_oomnitza_before_the_finalize(
    tmp_path: Path, fake_oomnitza: FakeOomnitza
) -> None:
    ini = config(tmp_path, fake_oomnitza)  # assets.csv does not exist: the source fails at once
    result = upload(ini)
    assert result.code == 1, result.all
    portion = fake_oomnitza.portion()
    assert [e for e, _ in portion.events] == ["error", "finalize"]
    assert portion.fatal and portion.status == "failed"
    error = fake_oomnitza.bulk_payloads[0]
    assert error["error_type"] == "Fatal Error" and error["records"] == [{}]
    assert error["error"].startswith("The run failed: ") and "assets.csv" in error["error"]
    assert stored(fake_oomnitza) == 0


def test_a_complete_run_sends_no_error_report(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 5)
    assert upload(config(tmp_path, fake_oomnitza)).code == 0
    portion = fake_oomnitza.portion()
    assert [e for e, _ in portion.events] == ["bulk", "finalize"] and not portion.fatal


def test_lifecycle_settings_are_validated(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 1)
    bad = "retry_budget = soon\nstop_after_failed_batches = 2.5\nstop_grace = -1"
    result = upload(config(tmp_path, fake_oomnitza, oomnitza=bad))
    assert result.code == 1
    assert "[oomnitza] retry_budget = 'soon' must be a number of at least 0" in result.err
    assert "[oomnitza] stop_after_failed_batches = '2.5' must be a whole number of at least 0" in result.err
    assert "[oomnitza] stop_grace = '-1' must be a number of at least 0" in result.err


# -- the proof itself, as a table ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, content_type, problem",
    [
        (b'{"portion": "P", "received": 2, "failed": 0}', "application/json", None),
        (b'{"received": 2}', "application/json", None),
        (b'{"portion": "P"}', "application/json", None),
        (b"<html><body>Access denied</body></html>", "text/html", "not JSON (text/html"),
        (b"", "application/json", "not JSON"),
        (b'["ok"]', "application/json", "not a bulk answer (list)"),
        (b'{"ok": true}', "application/json", "not a bulk answer (object without portion or received)"),
        (b'{"portion": "Q", "received": 2}', "application/json", "another sync session"),
        (b'{"portion": "P", "received": 1}', "application/json", "received 1 of 2"),
    ],
)
def test_what_proves_a_bulk_send(body: bytes, content_type: str, problem: str | None) -> None:
    run = RunInfo(section="s", connector_name="CSV_assets", data_type="assets", sync_field=[], portion="P")
    response = httpx.Response(200, content=body, headers={"content-type": content_type})
    found = bulk_answer_check(run, 2)(response)
    assert found is None if problem is None else problem in (found or "")


@pytest.mark.parametrize("count", [1, 2, 5])
def test_a_bulk_body_from_records_encoded_beforehand_is_the_same_payload(count: int) -> None:
    """Change-aware sync hands the sink the records' JSON (the bytes it digests), comma-separated,
    in one piece per classified slice: the body is joined from them, and says what encoding the
    records again would."""
    import orjson

    from oomnitza_connector.oomnitza.payload import EncodedRecords, bulk_body, encode

    run = RunInfo("csv_assets", "csv_assets", "assets", ["SERIAL_NUMBER"])
    records = [{"SERIAL_NUMBER": f"S{i}", "NOTE": 'a "quoted", \n value', 7: i} for i in range(count)]
    joined = bulk_body(run, EncodedRecords(records, [encode(r) for r in records]))
    assert orjson.loads(joined) == orjson.loads(bulk_body(run, records))
    pieces = [b",".join(encode(r) for r in records[:1]), b",".join(encode(r) for r in records[1:])]
    joined = bulk_body(run, EncodedRecords(records, [piece for piece in pieces if piece]))
    assert orjson.loads(joined) == orjson.loads(bulk_body(run, records))
    # A slice (a part of a batch Oomnitza refused as too large) is encoded as usual.
    assert orjson.loads(bulk_body(run, EncodedRecords(records, [encode(r) for r in records])[:1]))["records"] == [
        orjson.loads(encode(records[0]))
    ]
