"""What a run tells about itself: summary and error lines in the log files (text or JSON),
``--summary-json``, ``--metrics-file`` (Prometheus textfile), and where the log files go."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from oomnitza_connector.metrics import parse_sample
from tests.fakes.oomnitza import FakeOomnitza

from .helpers import ROOT, run_cli
from .sourcekit import summary_row

BUCKETS = ("sent", "filtered", "missing_required", "failed_convert", "failed_send")


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("serial,model,note\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


MIXED = [
    "SN1,M1,fine",
    "SN2,M2,fine",
    "SN3,M3,skip",  # filtered
    ",M4,fine",  # missing required serial
    "SN5,M5,boom",  # the converter fails
    "SN6,M6,fine",
]


def write_config(tmp_path: Path, fake: FakeOomnitza, *, sections: tuple[str, ...] = ("csv_assets",)) -> Path:
    lines = ["[oomnitza]", f"url = {fake.url}", f"api_token = {fake.token}", ""]
    for name in sections:
        lines += [
            f"[{name}]",
            "enable = True",
            f"filename = {tmp_path / (name + '.csv')}",
            "sync_field = SERIAL_NUMBER",
            'mapping.SERIAL_NUMBER = {"source": "serial", "required": true}',
            'mapping.MODEL = {"source": "model"}',
            'mapping.NOTE = {"source": "note", "converter": "leak"}',
            "recordfilter:",
            "    return record['note'] != 'skip'",
            "",
        ]
    lines += [
        "[converters]",
        "leak:",
        "    if value == 'boom':",
        f"        raise ValueError('cannot convert {fake.token}')",  # a registered secret: masked
        "    return value",
        "",
    ]
    path = tmp_path / "config.ini"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def close_log_files() -> None:
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            handler.close()


def metrics_of(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parsed = parse_sample(line)
        if parsed:
            name, labels, value = parsed
            samples[(name, labels)] = value
    return samples


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get(("oomnitza_connector_" + name, tuple(sorted(labels.items()))))


@pytest.fixture
def logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "logs"
    monkeypatch.setenv("OOMNITZA_LOG_DIR", str(folder))
    return folder


def test_summary_json_and_log_lines_agree_with_the_table_and_the_receiver(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, logs: Path
) -> None:
    write_csv(tmp_path / "csv_assets.csv", MIXED)
    ini = write_config(tmp_path, fake_oomnitza)
    summary = tmp_path / "summary.json"
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--summary-json", str(summary))
    close_log_files()
    assert result.code == 3, result.all

    document = json.loads(summary.read_text(encoding="utf-8"))
    assert document["schema"] == 1 and document["mode"] == "upload" and document["exit_code"] == 3
    assert document["testmode"] is False and document["error"] is None and document["stopped"] is None
    assert document["started"].endswith("Z") and document["seconds"] >= 0
    (entry,) = document["sections"]
    assert entry == {
        "section": "csv_assets",
        "type": "assets",
        "status": "records failed",
        "pulled": 6,
        "sent": 3,
        "unchanged": 0,
        "filtered": 1,
        "missing_required": 1,
        "failed_convert": 1,
        "failed_send": 0,
        "seconds": entry["seconds"],
        "error": None,
        "changes": entry["changes"],  # change-aware sync: tests/test_change_aware.py
    }
    assert sum(entry[b] for b in BUCKETS) == entry["pulled"]
    assert entry["sent"] == len(fake_oomnitza.records("assets"))
    table = summary_row(result, "csv_assets")
    assert {k: entry[k] for k in table} == table

    info = (logs / "info.log").read_text(encoding="utf-8")
    errors = (logs / "errors.log").read_text(encoding="utf-8")
    assert (
        "[csv_assets] records failed: pulled 6, sent 3, unchanged 0, filtered 1, missing required 1, "
        "failed convert 1, failed send 0" in info
    )
    assert "upload finished in" in info and "1 records failed; exit code 3" in info
    assert "[csv_assets] 1 record(s) failed (failed convert 1, failed send 0)" in errors
    assert " - INFO - " not in errors  # errors.log: errors only
    # The console shows the table, not the summary lines again.
    assert "records failed: pulled 6" not in result.err
    assert fake_oomnitza.token not in info + errors + result.all
    assert "cannot convert ********" in info
    if os.name == "posix":
        assert stat.S_IMODE((logs / "info.log").stat().st_mode) == 0o600


def test_summary_json_to_standard_output(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    write_csv(tmp_path / "csv_assets.csv", ["SN1,M1,fine"])
    ini = write_config(tmp_path, fake_oomnitza)
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--summary-json", "-")
    assert result.code == 0, result.all
    document = json.loads(result.out)
    assert [(s["section"], s["status"], s["sent"]) for s in document["sections"]] == [("csv_assets", "ok", 1)]


def test_a_configuration_error_is_in_errors_log_and_in_the_reports(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, logs: Path
) -> None:
    ini = tmp_path / "config.ini"
    ini.write_text(f"[oomnitza]\nurl = {fake_oomnitza.url}\napi_token = {fake_oomnitza.token}\n", encoding="utf-8")
    summary, metrics = tmp_path / "summary.json", tmp_path / "connector.prom"
    result = run_cli(
        "upload", "csv_assets", "--ini", str(ini), "--summary-json", str(summary), "--metrics-file", str(metrics)
    )
    close_log_files()
    assert result.code == 1, result.all
    assert result.err.count("there is no section [csv_assets]") == 1  # printed once, not logged twice
    assert "there is no section [csv_assets]" in (logs / "errors.log").read_text(encoding="utf-8")
    document = json.loads(summary.read_text(encoding="utf-8"))
    assert "there is no section [csv_assets]" in document["error"] and document["exit_code"] == 1
    assert [(s["section"], s["status"]) for s in document["sections"]] == [("csv_assets", "error")]
    samples = metrics_of(metrics)
    assert sample(samples, "last_run_success", section="csv_assets") == 0
    assert sample(samples, "runs_total", section="csv_assets", result="error") == 1


def test_report_folders_are_checked_before_the_run(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    write_csv(tmp_path / "csv_assets.csv", ["SN1,M1,fine"])
    ini = write_config(tmp_path, fake_oomnitza)
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--metrics-file", str(tmp_path / "no" / "x.prom"))
    assert result.code == 1
    assert f"--metrics-file {tmp_path / 'no' / 'x.prom'}: the folder {tmp_path / 'no'} does not exist" in result.err
    assert fake_oomnitza.records("assets") == []  # nothing ran


def test_metrics_file_counts_runs_and_keeps_other_jobs_sections(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    metrics = tmp_path / "textfile" / "connector.prom"
    metrics.parent.mkdir()
    write_csv(tmp_path / "csv_assets.csv", MIXED)
    write_csv(tmp_path / "csv_assets.other.csv", ["SN9,M9,fine", "SN10,M10,fine"])
    ini = write_config(tmp_path, fake_oomnitza, sections=("csv_assets", "csv_assets.other"))

    first = run_cli("upload", "csv_assets", "--ini", str(ini), "--metrics-file", str(metrics))
    assert first.code == 3, first.all
    samples = metrics_of(metrics)
    for bucket, count in {"pulled": 6, "sent": 3, "filtered": 1, "missing_required": 1, "failed_convert": 1}.items():
        labels = {"section": "csv_assets", "type": "assets", "bucket": bucket}
        assert sample(samples, "last_run_records", **labels) == count
        assert sample(samples, "records_total", **labels) == count
    assert sample(samples, "last_run_success", section="csv_assets") == 0
    assert sample(samples, "last_run_status", section="csv_assets", status="records_failed") == 1
    assert sample(samples, "last_success_timestamp_seconds", section="csv_assets") is None
    assert sample(samples, "last_run_duration_seconds", section="csv_assets") >= 0
    first_end = sample(samples, "last_run_timestamp_seconds", section="csv_assets")
    assert first_end is not None

    # Another job writes the same file: its section is added, the first one's samples stay.
    second = run_cli("upload", "csv_assets.other", "--ini", str(ini), "--metrics-file", str(metrics))
    assert second.code == 0, second.all
    # The first job again, now clean: its gauges are replaced, its counters grow.
    write_csv(tmp_path / "csv_assets.csv", ["SN1,M1,fine", "SN2,M2,fine"])
    # --full: both were delivered unchanged by the first run, and would count as unchanged.
    third = run_cli("upload", "csv_assets", "--ini", str(ini), "--metrics-file", str(metrics), "--full")
    assert third.code == 0, third.all

    samples = metrics_of(metrics)
    mine = {"section": "csv_assets", "type": "assets"}
    assert sample(samples, "last_run_records", **mine, bucket="sent") == 2
    assert sample(samples, "last_run_records", **mine, bucket="failed_convert") == 0
    assert sample(samples, "records_total", **mine, bucket="sent") == 5
    assert sample(samples, "records_total", **mine, bucket="pulled") == 8
    assert sample(samples, "runs_total", section="csv_assets", result="records_failed") == 1
    assert sample(samples, "runs_total", section="csv_assets", result="ok") == 1
    assert sample(samples, "last_run_success", section="csv_assets") == 1
    assert sample(samples, "last_run_status", section="csv_assets", status="records_failed") is None
    assert sample(samples, "last_run_status", section="csv_assets", status="ok") == 1
    assert sample(samples, "last_success_timestamp_seconds", section="csv_assets") >= first_end
    other = {"section": "csv_assets.other", "type": "assets"}
    assert sample(samples, "last_run_records", **other, bucket="sent") == 2
    assert sample(samples, "last_run_success", section="csv_assets.other") == 1

    text = metrics.read_text(encoding="utf-8")
    assert "# TYPE oomnitza_connector_records_total counter" in text
    assert "# TYPE oomnitza_connector_last_run_success gauge" in text
    assert [p.name for p in metrics.parent.iterdir()] == ["connector.prom"]  # no temporary file left
    if os.name == "posix":
        assert stat.S_IMODE(metrics.stat().st_mode) == 0o644  # node_exporter may run as another user


def test_test_mode_leaves_the_metrics_alone(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    write_csv(tmp_path / "csv_assets.csv", ["SN1,M1,fine"])
    ini = write_config(tmp_path, fake_oomnitza)
    metrics = tmp_path / "connector.prom"
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--testmode", "--metrics-file", str(metrics))
    assert result.code == 0, result.all
    assert not metrics.exists()


def test_json_logs_one_object_per_line_scrubbed(tmp_path: Path, fake_oomnitza: FakeOomnitza, logs: Path) -> None:
    write_csv(tmp_path / "csv_assets.csv", MIXED)
    ini = write_config(tmp_path, fake_oomnitza)
    fake_oomnitza.fail("POST", "/api/v3/bulk", 400, times=1, body={"error": f"echo {fake_oomnitza.token}"})
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--log-format", "json", "--workers", "0")
    close_log_files()
    assert result.code == 3, result.all
    console = [json.loads(line) for line in result.err.splitlines() if line.strip()]  # no table: every line
    written = [json.loads(line) for line in (logs / "info.log").read_text(encoding="utf-8").splitlines()]
    errors = [json.loads(line) for line in (logs / "errors.log").read_text(encoding="utf-8").splitlines()]
    for entry in console + written:
        assert {"time", "level", "logger", "message"} <= set(entry)
        assert entry["time"].endswith("Z")
    (summary,) = [e for e in written if e.get("summary", {}).get("section") == "csv_assets"]
    assert summary["level"] == "INFO"
    assert summary["summary"]["failed_convert"] == 1 and summary["summary"]["failed_send"] == 3
    assert any(e.get("summary", {}).get("section") == "csv_assets" for e in console)  # shown on the console too
    assert {e["level"] for e in errors} == {"ERROR"}
    assert any("not sent" in e["message"] for e in errors)
    everything = result.err + (logs / "info.log").read_text(encoding="utf-8")
    assert fake_oomnitza.token not in everything
    assert "cannot convert ********" in everything


def test_with_json_logs_a_configuration_error_is_a_json_line_too(tmp_path: Path) -> None:
    result = run_cli("upload", "csv_assets", "--ini", str(tmp_path / "none.ini"), "--log-format", "json")
    assert result.code == 1
    (line,) = result.err.splitlines()
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["message"].startswith("cannot open config file")


def test_an_unknown_log_format_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOMNITZA_LOG_FORMAT", "xml")
    result = run_cli("upload", "--ini", str(tmp_path / "none.ini"))
    assert result.code == 1
    assert result.err.strip() == "error: OOMNITZA_LOG_FORMAT = 'xml' is not one of text, json"


# -- where the log files go ---------------------------------------------------------------------------


def run_script(tmp_path: Path, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OOMNITZA_")} | env
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=full, timeout=120, check=False
    )


CONSOLE_SCRIPT = "import sys; from oomnitza_connector.cli import main; sys.exit(main(sys.argv[1:]))"


def test_console_script_logs_to_the_state_directory(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    write_csv(tmp_path / "csv_assets.csv", MIXED)
    ini = write_config(tmp_path, fake_oomnitza)
    work = tmp_path / "work"
    work.mkdir()
    # Default: <working directory>/logs.
    proc = run_script(tmp_path, "-c", CONSOLE_SCRIPT, "upload", "csv_assets", "--ini", str(ini), env={}, cwd=work)
    assert proc.returncode == 3, proc.stderr
    assert "[csv_assets] records failed: pulled 6" in (work / "logs" / "info.log").read_text(encoding="utf-8")
    assert "1 record(s) failed" in (work / "logs" / "errors.log").read_text(encoding="utf-8")
    # [oomnitza] state_dir moves it (and the locks) ...
    ini.write_text(
        ini.read_text(encoding="utf-8").replace("[oomnitza]\n", f"[oomnitza]\nstate_dir = {tmp_path / 'st'}\n")
    )
    proc = run_script(tmp_path, "-c", CONSOLE_SCRIPT, "upload", "csv_assets", "--ini", str(ini), env={}, cwd=work)
    assert proc.returncode == 3, proc.stderr
    assert (tmp_path / "st" / "logs" / "info.log").exists() and (tmp_path / "st" / "locks").is_dir()
    # ... OOMNITZA_STATE_DIR wins over it, and --log-dir over both.
    env = {"OOMNITZA_STATE_DIR": str(tmp_path / "env-state")}
    proc = run_script(tmp_path, "-c", CONSOLE_SCRIPT, "upload", "csv_assets", "--ini", str(ini), env=env, cwd=work)
    assert (tmp_path / "env-state" / "logs" / "info.log").exists(), proc.stderr
    args = ("upload", "csv_assets", "--ini", str(ini), "--log-dir", str(tmp_path / "chosen"))
    proc = run_script(tmp_path, "-c", CONSOLE_SCRIPT, *args, env=env, cwd=work)
    assert (tmp_path / "chosen" / "errors.log").exists(), proc.stderr


def test_checkout_logs_beside_connector_py_unless_told(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("connector.py", "logging.json"):
        (checkout / name).write_text((ROOT / name).read_text(encoding="utf-8"), encoding="utf-8")
    (checkout / "src").symlink_to(ROOT / "src") if os.name == "posix" else pytest.skip("symlinks")
    write_csv(tmp_path / "csv_assets.csv", ["SN1,M1,fine"])
    ini = write_config(tmp_path, fake_oomnitza)
    script = str(checkout / "connector.py")
    proc = run_script(tmp_path, script, "upload", "csv_assets", "--ini", str(ini), env={}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[csv_assets] ok: pulled 1, sent 1" in (checkout / "info.log").read_text(encoding="utf-8")
    env = {"OOMNITZA_LOG_DIR": str(tmp_path / "var-log")}
    proc = run_script(tmp_path, script, "upload", "csv_assets", "--ini", str(ini), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[csv_assets] ok: pulled 1" in (tmp_path / "var-log" / "info.log").read_text(encoding="utf-8")


def test_a_log_folder_that_cannot_be_made(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    write_csv(tmp_path / "csv_assets.csv", ["SN1,M1,fine"])
    ini = write_config(tmp_path, fake_oomnitza)
    chosen = run_cli("upload", "csv_assets", "--ini", str(ini), "--log-dir", str(blocker / "logs"))
    assert chosen.code == 1 and fake_oomnitza.records("assets") == []
    assert chosen.err.startswith("error: cannot write the log file") and "--log-dir" in chosen.err
    # Not chosen by the user (the state directory's default): warnings, and the run goes on.
    monkeypatch.delenv("OOMNITZA_LOG_DIR")
    monkeypatch.setenv("OOMNITZA_STATE_DIR", str(blocker))
    default = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert default.code == 0, default.all
    assert default.err.count("cannot write the log file") == 2  # info.log and errors.log, once each
    assert default.err.count("runs are not protected from overlapping") == 1  # no lock folder either
    assert len(fake_oomnitza.records("assets")) == 1


def test_label_values_are_escaped_and_read_back() -> None:
    from oomnitza_connector.metrics import Samples, families

    samples = Samples(families([("runs_total", "counter", "a\\b\nc")]))
    samples.add("runs_total", 2, section='odd "name"\\with\nbreak')
    text = samples.render()
    assert (
        '{section="odd \\"name\\"\\\\with\\nbreak"} 2' in text
        and "# HELP oomnitza_connector_runs_total a\\\\b\\nc" in text
    )
    again = Samples(samples.families)
    again.load(text)
    assert again.values == samples.values
