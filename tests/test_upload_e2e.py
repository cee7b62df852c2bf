"""``upload`` end to end over real HTTP against the fake Oomnitza: what the fake stored, not calls."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.oomnitza import FakeOomnitza

from .helpers import ROOT, run_cli


def make_csv(path: Path, n: int, start: int = 0) -> Path:
    rows = "".join(f"SN{i:05d},Model {i % 7},user{i}@acme.test\n" for i in range(start, start + n))
    path.write_text("serial,model,owner\n" + rows, encoding="utf-8")
    return path


def config(
    tmp_path: Path, fake: FakeOomnitza, *, auth: str | None = None, extra: str = "", csv: Path | None = None
) -> Path:
    auth = auth if auth is not None else f"api_token = {fake.token}"
    csv = csv or tmp_path / "assets.csv"
    text = "\n".join(
        [
            "[oomnitza]",
            f"url = {fake.url}",
            *auth.splitlines(),
            "",
            "[csv_assets]",
            "enable = True",
            f"filename = {csv}",
            "sync_field = SERIAL_NUMBER",
            'mapping.SERIAL_NUMBER = {"source": "serial"}',
            'mapping.MODEL = {"source": "model"}',
            'mapping.ASSIGNED_TO = {"source": "owner"}',
            *extra.splitlines(),
            "",
        ]
    )
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    return path


def upload(ini: Path, *args: str):
    return run_cli("upload", "csv_assets", "--ini", str(ini), *args)


def test_batches_portion_and_finalize_order(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 250)
    result = upload(config(tmp_path, fake_oomnitza))
    assert result.code == 0, result.all
    records = fake_oomnitza.records("assets")
    assert len(records) == 250
    assert {"SERIAL_NUMBER": "SN00007", "MODEL": "Model 0", "ASSIGNED_TO": "user7@acme.test"} in records
    sizes = sorted(len(p["records"]) for p in fake_oomnitza.bulk_payloads)
    assert sizes == [50, 100, 100]
    portions = {p["portion"] for p in fake_oomnitza.bulk_payloads}
    assert len(portions) == 1
    payload = fake_oomnitza.bulk_payloads[0]
    assert payload["connector_name"] == "CSV_assets" and payload["data_type"] == "assets"
    assert payload["sync_field"] == ["SERIAL_NUMBER"] and payload["insert_only"] is False
    portion = fake_oomnitza.portion(portions.pop())
    assert portion.finalized and portion.finalize_count == 1 and portion.records_after_finalize == 0
    paths = [r.path for r in fake_oomnitza.requests]
    assert paths[:2] == ["/api/v2/mappings"] * 2  # token probe, then the server-side mapping
    assert paths[-1].endswith("/finalize") and all(p == "/api/v3/bulk" for p in paths[2:-1])
    assert fake_oomnitza.requests[0].headers["authorization2"] == fake_oomnitza.token
    assert "250" in result.err and "ok" in result.err


@pytest.mark.parametrize("workers, batch", [("0", "7"), ("8", "1"), ("3", "1000")])
def test_workers_and_batch_size(tmp_path: Path, fake_oomnitza: FakeOomnitza, workers: str, batch: str) -> None:
    make_csv(tmp_path / "assets.csv", 40)
    result = upload(config(tmp_path, fake_oomnitza), "--workers", workers, "--batch-size", batch)
    assert result.code == 0, result.all
    assert len(fake_oomnitza.records("assets")) == 40
    assert max(len(p["records"]) for p in fake_oomnitza.bulk_payloads) == min(40, int(batch))


def test_username_password_login(tmp_path: Path, fake_oomnitza_factory) -> None:
    fake = fake_oomnitza_factory(username="svc", password="pa%ss;word")
    make_csv(tmp_path / "assets.csv", 5)
    result = upload(config(tmp_path, fake, auth="username = svc\npassword = pa%ss;word"))
    assert result.code == 0, result.all
    login = fake.requests[0]
    assert login.path == "/api/request_token" and login.body == {"login": "svc", "password": "pa%ss;word"}
    assert len(fake.records("assets")) == 5


def test_token_expiry_relogs_in_and_loses_nothing(tmp_path: Path, fake_oomnitza_factory) -> None:
    fake = fake_oomnitza_factory(username="svc", password="secret-pw")
    fake.fail("POST", "/api/v3/bulk", 401, times=1, body={"error": "unauthorized", "detail": "token expired"})
    make_csv(tmp_path / "assets.csv", 500)
    result = upload(config(tmp_path, fake, auth="username = svc\npassword = secret-pw"), "--workers", "0")
    assert result.code == 0, result.all
    assert len(fake.records("assets")) == 500
    assert len(fake.find_requests("POST", "/api/request_token")) >= 2


def test_429_with_retry_after_is_honoured(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 150)
    fake_oomnitza.fail("POST", "/api/v3/bulk", 429, times=1, headers={"Retry-After": "1"})
    started = time.monotonic()
    result = upload(config(tmp_path, fake_oomnitza), "--workers", "0")
    assert result.code == 0, result.all
    assert time.monotonic() - started >= 1.0  # it waited as told
    assert len(fake_oomnitza.records("assets")) == 150
    assert [r.status for r in fake_oomnitza.requests if r.path == "/api/v3/bulk"] == [429, 200, 200]
    assert "answered 429; retrying" in result.err


def test_5xx_is_retried_to_success(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 30)
    fake_oomnitza.fail("POST", "/api/v3/bulk", 503, times=2)
    result = upload(config(tmp_path, fake_oomnitza))
    assert result.code == 0, result.all
    assert len(fake_oomnitza.records("assets")) == 30
    assert [r.status for r in fake_oomnitza.requests if r.path == "/api/v3/bulk"] == [503, 503, 200]


def test_wrong_token_is_one_line_and_sends_nothing(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 3)
    result = upload(config(tmp_path, fake_oomnitza, auth="api_token = wrong-token-value"))
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        f"error: Oomnitza at {fake_oomnitza.url} rejected the api_token (401): "
        f"check [oomnitza] api_token in {tmp_path / 'config.ini'}"
    ]
    assert fake_oomnitza.find_requests("POST") == []
    assert "wrong-token-value" not in result.all


def test_bad_password_is_one_line(tmp_path: Path, fake_oomnitza_factory) -> None:
    fake = fake_oomnitza_factory(username="svc", password="right")
    make_csv(tmp_path / "assets.csv", 3)
    result = upload(config(tmp_path, fake, auth="username = svc\npassword = wrongpass"))
    assert result.code == 1
    assert "rejected the username/password (401)" in result.err
    assert "wrongpass" not in result.all


def test_unreachable_url(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake_oomnitza.url = f"http://127.0.0.1:{port}"
    make_csv(tmp_path / "assets.csv", 3)
    result = upload(config(tmp_path, fake_oomnitza))
    assert result.code == 1
    assert f"cannot reach http://127.0.0.1:{port}/api/v2/mappings" in result.err.splitlines()[-1]
    assert "Traceback" not in result.all


def test_failed_sends_are_counted_and_exit_nonzero(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 300)
    fake_oomnitza.fail("POST", "/api/v3/bulk", 400, times=1, body={"error": "bad"})
    result = upload(config(tmp_path, fake_oomnitza), "--workers", "0")
    assert result.code == 3, result.all
    assert len(fake_oomnitza.records("assets")) == 200
    assert "100 record(s) not sent" in result.err
    portion = next(iter(fake_oomnitza.portions.values()))
    assert portion.finalized


def test_insert_only_and_update_only(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 10)
    assert upload(config(tmp_path, fake_oomnitza)).code == 0
    make_csv(tmp_path / "assets2.csv", 10, start=5)  # 5 existing, 5 new
    ini = config(tmp_path, fake_oomnitza, extra="insert_only = True", csv=tmp_path / "assets2.csv")
    assert upload(ini).code == 0
    portion = list(fake_oomnitza.portions.values())[-1]
    assert (portion.inserted, portion.skipped) == (5, 5)
    assert fake_oomnitza.bulk_payloads[-1]["insert_only"] is True
    make_csv(tmp_path / "assets3.csv", 10, start=10)  # 5 existing, 5 new
    ini = config(tmp_path, fake_oomnitza, extra="update_only = yes", csv=tmp_path / "assets3.csv")
    assert upload(ini).code == 0
    portion = list(fake_oomnitza.portions.values())[-1]
    assert (portion.updated, portion.skipped) == (5, 5)
    assert len(fake_oomnitza.records("assets")) == 15


def test_server_mapping_is_merged(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.set_mapping("CSV_assets", {"model": ["MODEL_NAME", "HOSTNAME"]})
    make_csv(tmp_path / "assets.csv", 2)
    assert upload(config(tmp_path, fake_oomnitza)).code == 0
    record = fake_oomnitza.record("assets", SERIAL_NUMBER="SN00001")
    assert record is not None and record["MODEL_NAME"] == "Model 1" and record["HOSTNAME"] == "Model 1"
    fake_oomnitza.reset()
    assert upload(config(tmp_path, fake_oomnitza, extra="use_server_map = false")).code == 0
    assert "MODEL_NAME" not in fake_oomnitza.record("assets", SERIAL_NUMBER="SN00001")


def test_filter_required_and_converters_accounting(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    (tmp_path / "assets.csv").write_text(
        "serial,model,owner,kind\nA1,M,a@x,computer\nA2,M,b@x,phone\n,M,c@x,computer\nA4,M,BOOM,computer\n",
        encoding="utf-8",
    )
    extra = "\n".join(
        [
            'mapping.USER = {"source": "owner", "converter": "shout"}',
            "recordfilter:",
            "    return record.kind == 'computer'",
            'mapping.SERIAL_NUMBER = {"source": "serial", "required": true}',
            "",
            "[converters]",
            "shout:",
            "    if value == 'BOOM':",
            "        raise ValueError('no')",
            "    return value.upper()",
        ]
    )
    result = upload(config(tmp_path, fake_oomnitza, extra=extra))
    assert result.code == 3, result.all
    assert [r["SERIAL_NUMBER"] for r in fake_oomnitza.records("assets")] == ["A1"]
    assert fake_oomnitza.records("assets")[0]["USER"] == "A@X"
    assert "record 3: missing required field(s): SERIAL_NUMBER" in result.err
    assert "record 4: converter 'shout' raised ValueError: no" in result.err
    row = next(line for line in result.err.splitlines() if "csv_assets" in line and "│" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    # pulled, sent, unchanged, filtered, required, convert, send
    assert cells[2:9] == ["4", "1", "0", "1", "1", "1", "0"]


def test_location_converter(tmp_path: Path, fake_oomnitza_factory) -> None:
    fake = fake_oomnitza_factory(locations=[{"location_id": "L1", "name": "Berlin"}])
    (tmp_path / "assets.csv").write_text("serial,city\nA1,Berlin\nA2,Atlantis\n", encoding="utf-8")
    result = upload(config(tmp_path, fake, extra='mapping.LOCATION = {"source": "city", "converter": "location"}'))
    assert result.code == 0, result.all
    assert fake.record("assets", SERIAL_NUMBER="A1")["LOCATION"] == "L1"
    assert fake.record("assets", SERIAL_NUMBER="A2")["LOCATION"] == "Atlantis"
    assert "Atlantis" in result.err  # the cleanup report of misses


def test_testmode_sends_nothing(tmp_path: Path, fake_oomnitza_factory) -> None:
    fake = fake_oomnitza_factory(username="svc", password="pw-secret")
    make_csv(tmp_path / "assets.csv", 5)
    result = upload(config(tmp_path, fake, auth="username = svc\npassword = pw-secret"), "--testmode")
    assert result.code == 0, result.all
    assert fake.requests == []  # no login, no upload, no finalize
    payload = json.loads(result.out)
    assert payload["records"][0] == {"SERIAL_NUMBER": "SN00000", "MODEL": "Model 0", "ASSIGNED_TO": "user0@acme.test"}


def test_testmode_with_token_reads_server_mapping_only(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.set_mapping("CSV_assets", {"owner": "EMAIL"})
    make_csv(tmp_path / "assets.csv", 2)
    result = upload(config(tmp_path, fake_oomnitza), "--testmode")
    assert result.code == 0
    assert all(r.method == "GET" for r in fake_oomnitza.requests)
    assert '"EMAIL": "user0@acme.test"' in result.out


def test_record_count_stops_reading(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 5000)
    result = upload(config(tmp_path, fake_oomnitza), "--record-count", "120")
    assert result.code == 0
    assert len(fake_oomnitza.records("assets")) == 120


def test_save_data_writes_records_and_payloads_without_secrets(
    tmp_path: Path, fake_oomnitza_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_oomnitza_factory(username="svc", password="hunter2-secret")
    make_csv(tmp_path / "assets.csv", 3)
    monkeypatch.chdir(tmp_path)
    extra = 'mapping.NOTE = {"setting": "password"}\npassword = hunter2-secret'
    # [csv_assets] has no password setting: it is ignored with a warning; NOTE → config error instead.
    ini = config(tmp_path, fake, auth="username = svc\npassword = hunter2-secret")
    result = upload(ini, "--save-data")
    assert result.code == 0, result.all
    source = (tmp_path / "saved_data" / "csv_assets.source.jsonl").read_text().splitlines()
    payloads = (tmp_path / "saved_data" / "csv_assets.payloads.jsonl").read_text().splitlines()
    assert [json.loads(line)["serial"] for line in source] == ["SN00000", "SN00001", "SN00002"]
    assert json.loads(payloads[0])["records"][2]["SERIAL_NUMBER"] == "SN00002"
    blob = (tmp_path / "saved_data" / "csv_assets.source.jsonl").read_text() + "\n".join(payloads) + result.all
    assert "hunter2-secret" not in blob
    assert extra  # (documented above)


def test_show_mappings_merges_and_masks(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.set_mapping("CSV_assets", {"host": "HOSTNAME"})
    make_csv(tmp_path / "assets.csv", 1)
    extra = 'mapping.SECRET = {"hardcoded": "test-token"}'
    result = upload(config(tmp_path, fake_oomnitza, extra=extra), "--show-mappings")
    assert result.code == 0, result.all
    assert result.out.startswith("csv_assets Mappings\n")
    shown = json.loads(result.out.split("\n", 1)[1])
    assert shown["HOSTNAME"] == {"source": "host"}
    assert shown["SERIAL_NUMBER"] == {"source": "serial"}
    assert shown["SECRET"] == {"hardcoded": "********"}
    assert fake_oomnitza.find_requests("POST") == []


def test_connector_py_and_console_script_subprocess(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    make_csv(tmp_path / "assets.csv", 20)
    ini = config(tmp_path, fake_oomnitza)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "connector.py"), "upload", "csv_assets", "--ini", str(ini)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(fake_oomnitza.records("assets")) == 20
    script = Path(sys.executable).parent / "oomnitza-connector"
    proc = subprocess.run([str(script), "version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("Connector version: ")
