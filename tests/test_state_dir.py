"""One state directory for what the connector keeps between runs: ``OOMNITZA_STATE_DIR``, else
``[oomnitza] state_dir``, else the working directory. Locks, the webhook queue and export state
(when its own ``state_dir`` is not set) live there."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from oomnitza_connector.config import load_config
from oomnitza_connector.server.cli import QUEUE_FILE, build
from oomnitza_connector.server.queue import EventQueue
from oomnitza_connector.statedir import state_dir
from tests.fakes.oomnitza import FakeOomnitza

from .helpers import run_cli


def test_the_environment_wins_then_the_setting_then_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OOMNITZA_STATE_DIR")
    assert state_dir() == tmp_path
    assert state_dir({"state_dir": "kept"}) == tmp_path / "kept"  # relative: to the working directory
    assert state_dir({"state_dir": "~/kept"}) == Path.home() / "kept"
    monkeypatch.setenv("OOMNITZA_STATE_DIR", str(tmp_path / "env"))
    assert state_dir({"state_dir": "kept"}) == tmp_path / "env"


def export_config(folder: Path) -> dict[str, object]:
    return {"id": 90, "name": "Nightly", "type": "assets", "reports_service": True, "folder_path": str(folder)}


def test_export_state_goes_to_the_shared_state_directory(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OOMNITZA_STATE_DIR")
    fake_oomnitza.add_media_file("r.csv", b"1\n", creation_date=1000, created_by_id=90)
    ini = tmp_path / "config.ini"
    ini.write_text(
        f"[oomnitza]\nurl = {fake_oomnitza.url}\napi_token = {fake_oomnitza.token}\n"
        f"state_dir = {tmp_path / 'shared'}\n",
        encoding="utf-8",
    )
    fake_oomnitza.enqueue_managed(export_config(tmp_path / "out"))
    result = run_cli("managed", "--ini", str(ini), "--exit-when-idle", "--poll-interval", "0.05")
    assert result.code == 0, result.all
    assert (tmp_path / "shared" / "state.db").is_file() and not (tmp_path / "state.db").exists()
    assert (tmp_path / "shared" / "locks" / "managed_reports.90.lock").is_file()
    # The section's own state_dir still wins.
    with ini.open("a", encoding="utf-8") as fh:
        fh.write(f"\n[managed_reports.90]\nstate_dir = {tmp_path / 'own'}\n")
    fake_oomnitza.enqueue_managed(export_config(tmp_path / "out"))
    result = run_cli("managed", "--ini", str(ini), "--exit-when-idle", "--poll-interval", "0.05")
    assert result.code == 0, result.all
    assert (tmp_path / "own" / "state.db").is_file()


def server_ini(tmp_path: Path, fake: FakeOomnitza, extra: str = "") -> Path:
    ini = tmp_path / "conf" / "config.ini"
    ini.parent.mkdir()
    ini.write_text(
        f"[oomnitza]\nurl = {fake.url}\napi_token = {fake.token}\n{extra}\n"
        "[casper]\nenable = True\nurl = https://jamf.example\nclient_id = a\nclient_secret = b-secret\n"
        "sync_field = SERIAL_NUMBER\nwebhook_token = hook-t0ken\n",
        encoding="utf-8",
    )
    return ini


def test_the_webhook_queue_lives_in_the_state_directory(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OOMNITZA_STATE_DIR")
    ini = server_ini(tmp_path, fake_oomnitza, f"state_dir = {tmp_path / 'state' / 'deep'}")
    app, worker = build(load_config(ini))
    try:
        assert Path(app.queue.path) == tmp_path / "state" / "deep" / QUEUE_FILE  # the folder is made
        assert not (ini.parent / QUEUE_FILE).exists()  # the config folder may be read-only
    finally:
        worker.queue.close()
    explicit = tmp_path / "elsewhere.db"
    app, worker = build(load_config(ini), queue_file=explicit)
    worker.queue.close()
    assert Path(app.queue.path) == explicit


def test_a_queue_of_an_earlier_version_beside_the_config_is_used_still(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OOMNITZA_STATE_DIR", str(tmp_path / "state"))
    ini = server_ini(tmp_path, fake_oomnitza)
    old = EventQueue(ini.parent / QUEUE_FILE)
    old.add("casper", "101")  # an event accepted before the upgrade
    old.close()
    with caplog.at_level(logging.WARNING):
        app, worker = build(load_config(ini))
    try:
        assert Path(app.queue.path) == ini.parent / QUEUE_FILE
        assert worker.queue.waiting() == {"casper": 1}
    finally:
        worker.queue.close()
    assert f"the default is now {tmp_path / 'state' / QUEUE_FILE}" in caplog.text
