"""No overlapping runs: a section (or managed integration) being synced by one process is not
synced by another at the same time; the second says so and exits 75. Locks die with their process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomnitza_connector.locking import EX_TEMPFAIL, RunLock, lock_path
from tests.fakes.oomnitza import FakeOomnitza

from .helpers import ROOT, run_cli

WAIT = 30.0


def write_config(tmp_path: Path, fake: FakeOomnitza) -> Path:
    lines = ["[oomnitza]", f"url = {fake.url}", f"api_token = {fake.token}", ""]
    for name in ("csv_assets", "csv_assets.other"):
        csv = tmp_path / f"{name}.csv"
        csv.write_text("serial\n" + "".join(f"{name}-{i}\n" for i in range(5)), encoding="utf-8")
        lines += [
            f"[{name}]",
            "enable = True",
            f"filename = {csv}",
            "sync_field = SERIAL_NUMBER",
            'mapping.SERIAL_NUMBER = {"source": "serial"}',
            "",
        ]
    path = tmp_path / "config.ini"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def start(ini: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "connector.py"), "upload", *args, "--ini", str(ini)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(ini: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "connector.py"), "upload", *args, "--ini", str(ini)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def bulk_posts(fake: FakeOomnitza) -> int:
    return len(fake.find_requests("POST", "/api/v3/bulk"))


@pytest.mark.skipif(os.name == "nt", reason="kill -9")
def test_a_second_process_skips_the_section_and_a_killed_holder_blocks_nothing(
    tmp_path: Path, fake_oomnitza: FakeOomnitza
) -> None:
    ini = write_config(tmp_path, fake_oomnitza)
    fake_oomnitza.stall("POST", "/api/v3/bulk$", 120.0, times=1)  # the first run hangs in its upload
    first = start(ini, "csv_assets")
    try:
        wait_for(lambda: bulk_posts(fake_oomnitza) >= 1, "the first run's upload")

        # Same section: not run, exit 75, and it says who holds it. Another section runs meanwhile.
        summary = tmp_path / "second.json"
        second = run(ini, "csv_assets", "csv_assets.other", "--summary-json", str(summary))
        assert second.returncode == EX_TEMPFAIL == 75, second.stderr
        assert f"[csv_assets] not run: another run is syncing it (process {first.pid}, since " in second.stderr
        document = json.loads(summary.read_text(encoding="utf-8"))
        assert [(s["section"], s["status"]) for s in document["sections"]] == [
            ("csv_assets", "already running"),
            ("csv_assets.other", "ok"),
        ]
        assert document["exit_code"] == 75
        assert "already running" in second.stderr  # the summary table's result column
        assert len(fake_oomnitza.records("assets")) == 5  # only the other section's records

        # The holder dies without any clean-up: its lock goes with it.
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=WAIT)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=WAIT)
        for stream in (first.stdout, first.stderr):
            if stream is not None:
                stream.close()
    assert lock_path(Path(os.environ["OOMNITZA_STATE_DIR"]), "csv_assets").exists()  # a file is no lock
    third = run(ini, "csv_assets")
    assert third.returncode == 0, third.stderr
    assert len(fake_oomnitza.records("assets")) == 10


def test_a_held_lock_is_exit_75_and_test_mode_is_not_blocked(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(tmp_path, fake_oomnitza)
    state = Path(os.environ["OOMNITZA_STATE_DIR"])
    with RunLock.for_section(state, "csv_assets", what="test") as lock:
        assert lock.acquire()
        busy = run_cli("upload", "csv_assets", "--ini", str(ini))
        assert busy.code == 75, busy.all
        assert f"another run is syncing it (process {os.getpid()}, since" in busy.err
        looking = run_cli("upload", "csv_assets", "--ini", str(ini), "--testmode")
        assert looking.code == 0, looking.all
    assert fake_oomnitza.records("assets") == []
    again = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert again.code == 0, again.all


def test_worse_exit_codes_win_over_75(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(tmp_path, fake_oomnitza)
    fake_oomnitza.fail("POST", "/api/v3/bulk$", 400, times=1)  # the other section's records fail
    state = Path(os.environ["OOMNITZA_STATE_DIR"])
    with RunLock.for_section(state, "csv_assets", what="test") as lock:
        assert lock.acquire()
        result = run_cli("upload", "csv_assets", "csv_assets.other", "--ini", str(ini), "--workers", "0")
    assert result.code == 3, result.all  # failed records need more attention than a skipped section


def test_lock_files_name_any_section_safely(tmp_path: Path) -> None:
    assert lock_path(tmp_path, "csv_assets").name == "csv_assets.lock"
    assert lock_path(tmp_path, "managed.67").name == "managed.67.lock"
    odd = lock_path(tmp_path, "../x/y:z")
    assert odd.parent == tmp_path / "locks" and "/" not in odd.name and odd.name != lock_path(tmp_path, "_x_y_z").name
    long_a, long_b = lock_path(tmp_path, "a" * 300 + "1"), lock_path(tmp_path, "a" * 300 + "2")
    assert long_a != long_b and len(long_a.name) < 140


def test_two_locks_on_one_name_exclude_each_other_in_one_process(tmp_path: Path) -> None:
    first, second = RunLock(tmp_path / "a.lock"), RunLock(tmp_path / "a.lock")
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_managed_integration_running_elsewhere_is_not_started(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    ini = tmp_path / "config.ini"
    ini.write_text(f"[oomnitza]\nurl = {fake_oomnitza.url}\napi_token = {fake_oomnitza.token}\n", encoding="utf-8")
    config = {"id": 67, "name": "Fleet", "type": "assets", "list_behavior": {"url": "http://127.0.0.1:9/none"}}
    fake_oomnitza.enqueue_managed(config)
    state = Path(os.environ["OOMNITZA_STATE_DIR"])
    with RunLock.for_section(state, "managed.67", what="test") as lock:
        assert lock.acquire()
        result = run_cli("managed", "--ini", str(ini), "--exit-when-idle", "--poll-interval", "0.05")
    assert result.code == 0, result.all
    assert f"managed.67 is running in another process (process {os.getpid()}, since" in result.err
    assert "managed.67 (Fleet) started" not in result.err
    assert not fake_oomnitza.portions
