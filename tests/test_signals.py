"""SIGTERM and SIGINT against a real ``python connector.py`` process and the fake Oomnitza served on
loopback by a thread of this test: stop reading, give in-flight uploads a short grace, send nothing
new, report and finalize, print the summary, exit 143 / 130. A second signal exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fakes.oomnitza import FakeOomnitza

from .helpers import ROOT, CliResult
from .sourcekit import assert_accounted, summary_row

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")

WAIT = 30.0  # upper bound for anything the connector is waited for; it normally takes a second


class Connector:
    """``connector.py`` in a subprocess; stderr is read as it comes so a test can wait for a line."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "connector.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.out = ""

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for_line(self, needle: str) -> None:
        deadline = time.monotonic() + WAIT
        while not any(needle in line for line in self.lines):
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self) -> CliResult:
        self.proc.wait(timeout=WAIT)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self._reader.join(timeout=WAIT)
        return CliResult(self.proc.returncode, out, "".join(self.lines))


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def write_ini(tmp_path: Path, fake: FakeOomnitza, rows: int, oomnitza: str) -> Path:
    csv = tmp_path / "assets.csv"
    csv.write_text("serial\n" + "".join(f"SN{i:05d}\n" for i in range(rows)), encoding="utf-8")
    ini = tmp_path / "config.ini"
    ini.write_text(
        f"[oomnitza]\nurl = {fake.url}\napi_token = {fake.token}\n{oomnitza}\n\n"
        f"[csv_assets]\nenable = True\nfilename = {csv}\nsync_field = SERIAL_NUMBER\n"
        'mapping.SERIAL_NUMBER = {"source": "serial"}\n',
        encoding="utf-8",
    )
    return ini


def bulk_posts(fake: FakeOomnitza) -> int:
    return len(fake.find_requests("POST", "/api/v3/bulk"))


@pytest.mark.parametrize(
    "signum, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_signal_stops_the_upload_finalizes_and_reports_what_was_sent(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, signum: int, code: int, word: str
) -> None:
    fake_oomnitza.delay("POST", "/api/v3/bulk$", 0.0, times=1)  # the first batch goes through
    fake_oomnitza.stall("POST", "/api/v3/bulk$", 60.0, times=1)  # the second hangs
    ini = write_ini(tmp_path, fake_oomnitza, 2000, "stop_grace = 1")
    connector = Connector(tmp_path, "upload", "csv_assets", "--ini", str(ini), "--workers", "1")
    wait_for(lambda: bulk_posts(fake_oomnitza) >= 2, "the second batch")
    connector.signal(signum)
    result = connector.finish()

    assert result.code == code, result.err
    assert f"{signal.Signals(signum).name} received: stopping" in result.err
    assert f"the run was {word} ({signal.Signals(signum).name}): it stopped early" in result.err
    assert "not confirmed by Oomnitza: the upload was cut off" in result.err
    counts = assert_accounted(result, "csv_assets", pulled=summary_row(result, "csv_assets")["pulled"], sent=100)
    assert counts["pulled"] < 2000  # reading stopped
    assert len(fake_oomnitza.records("assets")) == 100  # the summary agrees with the receiver
    portion = fake_oomnitza.portion()
    assert portion.finalized and portion.fatal  # closed, and not as a complete sync
    (report,) = [p for p in fake_oomnitza.bulk_payloads if p["error"]]
    assert (
        report["error"] == f"The run was {word} ({signal.Signals(signum).name}) before the source was read to the end"
    )
    assert "Traceback" not in result.err


def test_a_stalled_failure_report_is_given_up_after_the_grace_and_said_so(
    tmp_path: Path, fake_oomnitza: FakeOomnitza
) -> None:
    """Oomnitza stops answering uploads: the report of the stopped run waits only ``stop_grace``,
    the log says why it was not sent (a timeout has no text of its own), the session is closed."""
    fake_oomnitza.delay("POST", "/api/v3/bulk$", 0.0, times=1)
    fake_oomnitza.stall("POST", "/api/v3/bulk$", 60.0, times=10)  # the second batch and the report
    ini = write_ini(tmp_path, fake_oomnitza, 2000, "stop_grace = 1")
    connector = Connector(tmp_path, "upload", "csv_assets", "--ini", str(ini), "--workers", "1")
    wait_for(lambda: bulk_posts(fake_oomnitza) >= 2, "the second batch")
    connector.signal(signal.SIGTERM)
    result = connector.finish()

    assert result.code == 143, result.err
    assert "could not report the failure to Oomnitza: no answer within 1s (stop_grace)" in result.err
    assert fake_oomnitza.portion().finalized
    assert "Traceback" not in result.err


def test_a_second_signal_exits_at_once(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.stall("POST", "/api/v3/bulk", 120.0, times=1000)  # uploads, report and finalize hang
    ini = write_ini(tmp_path, fake_oomnitza, 500, "stop_grace = 120")
    connector = Connector(tmp_path, "upload", "csv_assets", "--ini", str(ini))
    wait_for(lambda: bulk_posts(fake_oomnitza) >= 1, "the first batch")
    connector.signal(signal.SIGTERM)
    connector.wait_for_line("SIGTERM received")
    connector.signal(signal.SIGTERM)
    result = connector.finish()  # well before the 120 s grace
    assert result.code == 143, result.err
    assert "SIGTERM again: exiting now." in result.err
    assert fake_oomnitza.records("assets") == []


def test_a_signal_is_obeyed_when_stderr_has_no_reader_any_more(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    """A supervisor whose log pipe closed (or ``connector.py ... 2>&1 | head``): writing the
    "stopping" line fails, and the signal must still stop the run, then end it at once."""
    fake_oomnitza.stall("POST", "/api/v3/bulk", 120.0, times=1000)
    ini = write_ini(tmp_path, fake_oomnitza, 500, "stop_grace = 120")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "connector.py"), "upload", "csv_assets", "--ini", str(ini)],
        stdout=subprocess.DEVNULL,
        stderr=write_end,
        cwd=tmp_path,
    )
    os.close(write_end)
    os.close(read_end)  # nobody reads the connector's stderr any more
    try:
        wait_for(lambda: bulk_posts(fake_oomnitza) >= 1, "the first batch")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)  # the second one exits at once (well before the 120 s grace)
        assert proc.wait(timeout=WAIT) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_managed_mode_exits_130_or_143_on_signals(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, signum: int, code: int
) -> None:
    ini = write_ini(tmp_path, fake_oomnitza, 1, "")
    connector = Connector(tmp_path, "managed", "--ini", str(ini), "--poll-interval", "60")
    wait_for(lambda: fake_oomnitza.find_requests("POST", "/api/v3/bulk/check_managed"), "the first poll")
    connector.signal(signum)
    result = connector.finish()
    assert result.code == code, result.err
    assert "Traceback" not in result.err
