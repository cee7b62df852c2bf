"""The webhook server over real HTTP: Jamf events in, one device synced into the fake Oomnitza."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oomnitza_connector.config import load_config
from oomnitza_connector.server.cli import build
from tests.fakes.jamf import FakeJamf, computer, mobile
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve

from .helpers import ROOT

TOKEN = "hook-t0ken-1234"


@pytest.fixture
def jamf() -> Iterator[FakeJamf]:
    fake = FakeJamf(computers=[computer(i) for i in range(101, 104)], mobiles=[mobile(55)])
    with serve(fake.app) as url:
        fake.url = url
        yield fake


def write_ini(tmp_path: Path, oomnitza: FakeOomnitza, jamf: FakeJamf) -> Path:
    common = (
        f"url = {jamf.url}\nclient_id = {jamf.client_id}\nclient_secret = {jamf.client_secret}\n"
        'sync_field = SERIAL_NUMBER\nmapping.SERIAL_NUMBER = {"source": "general.serial_number"}\n'
    )
    text = (
        f"[oomnitza]\nurl = {oomnitza.url}\napi_token = {oomnitza.token}\n\n"
        f"[casper]\nenable = True\n{common}webhook_token = {TOKEN}\n\n"
        f"[casper.MDM]\nenable = True\n{common}sync_type = mobiledevices\nwebhook_username = jamf\n"
        "webhook_password = hook-pass-99\n\n"
        "[csv_assets]\nenable = True\nfilename = x.csv\nsync_field = A\n"
    )
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def hooks(tmp_path: Path, fake_oomnitza: FakeOomnitza, jamf: FakeJamf) -> Iterator[tuple[str, Any]]:
    import waitress

    config = load_config(write_ini(tmp_path, fake_oomnitza, jamf))
    app, worker = build(config, coalesce=0.5)
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    worker.start()
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}", worker  # type: ignore[union-attr]
    finally:
        server.close()
        worker.stop()


def event(name: str, jss_id: int, nested: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"computer": {"jssID": jss_id}} if nested else {"jssID": jss_id}
    return {
        "webhook": {"id": 7, "name": "oomnitza-sync", "webhookEvent": name, "eventTimestamp": 1767225600000},
        "event": body,
    }


def post(url: str, payload: Any, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})}
    return httpx.post(url, json=payload, headers=headers, timeout=10, **kwargs)


def wait_for(predicate: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "name, nested",
    [
        ("ComputerAdded", False),
        ("ComputerCheckIn", True),
        ("ComputerInventoryCompleted", False),
        ("ComputerPolicyFinished", True),
        ("ComputerPushCapabilityChanged", False),
    ],
)
def test_computer_events_sync_that_device(
    hooks: tuple[str, Any], fake_oomnitza: FakeOomnitza, name: str, nested: bool
) -> None:
    url, worker = hooks
    response = post(f"{url}/it/does/not/matter/casper", event(name, 102, nested))
    assert response.status_code == 202 and response.json() == {"status": "queued"}
    wait_for(
        lambda: (
            fake_oomnitza.records("assets")
            or (worker.synced and worker.synced[-1].error and pytest.fail(worker.synced[-1].error))
        )
    )
    (record,) = fake_oomnitza.records("assets")
    assert record["SERIAL_NUMBER"] == computer(102)["hardware"]["serialNumber"]
    wait_for(lambda: any(p.finalized for p in fake_oomnitza.portions.values()))
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Casper"


@pytest.mark.parametrize(
    "name",
    [
        "MobileDeviceCheckIn",
        "MobileDeviceCommandCompleted",
        "MobileDeviceEnrolled",
        "MobileDevicePushSent",
        "MobileDeviceUnEnrolled",
    ],
)
def test_mobile_events_with_basic_auth(hooks: tuple[str, Any], fake_oomnitza: FakeOomnitza, name: str) -> None:
    url, _ = hooks
    response = httpx.post(f"{url}/casper.MDM", json=event(name, 55), auth=("jamf", "hook-pass-99"), timeout=10)
    assert response.status_code == 202
    wait_for(lambda: fake_oomnitza.records("assets"))
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Casper.MDM"


def test_a_burst_of_duplicates_is_one_sync(hooks: tuple[str, Any], fake_oomnitza: FakeOomnitza, jamf: FakeJamf) -> None:
    url, worker = hooks
    for _ in range(10):
        assert post(f"{url}/casper", event("ComputerCheckIn", 101, nested=True)).status_code == 202
    assert post(f"{url}/casper", event("ComputerInventoryCompleted", 103)).status_code == 202
    wait_for(lambda: len(fake_oomnitza.records("assets")) == 2)
    time.sleep(0.8)
    assert len(worker.synced) == 1  # both devices in one batch, each fetched once
    assert len(fake_oomnitza.portions) == 1 and next(iter(fake_oomnitza.portions.values())).finalized


@pytest.mark.parametrize(
    "headers, auth, status",
    [
        ({}, None, 401),
        ({"Authorization": "Bearer wrong"}, None, 401),
        ({"Authorization": ""}, ("jamf", "hook-pass-99"), 401),  # basic is configured for casper.MDM only
    ],
)
def test_wrong_or_missing_credentials(
    hooks: tuple[str, Any], fake_oomnitza: FakeOomnitza, headers: dict[str, str], auth: Any, status: int
) -> None:
    url, _ = hooks
    response = httpx.post(f"{url}/casper", json=event("ComputerAdded", 101), headers=headers, auth=auth, timeout=10)
    assert response.status_code == status
    time.sleep(0.7)
    assert fake_oomnitza.records("assets") == []


def test_unknown_section_and_other_requests(hooks: tuple[str, Any]) -> None:
    url, _ = hooks
    assert post(f"{url}/casper.nope", event("ComputerAdded", 1)).status_code == 404
    assert httpx.post(f"{url}/casper.nope", json={}, timeout=10).status_code == 401  # nothing revealed
    assert post(f"{url}/csv_assets", event("ComputerAdded", 1)).status_code == 404  # no webhooks there
    assert httpx.get(f"{url}/casper", timeout=10).status_code == 405
    assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    assert post(f"{url}/casper", None, content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    bad = httpx.post(
        f"{url}/casper",
        content=b"{not json",
        timeout=10,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert bad.status_code == 400
    assert (
        post(f"{url}/casper", {"webhook": {"webhookEvent": "SmartGroupMembershipChange"}}).json()["status"] == "ignored"
    )
    assert post(f"{url}/casper", event("MobileDeviceCheckIn", 55)).json()["status"] == "ignored"  # wrong kind


def test_oversized_body(hooks: tuple[str, Any]) -> None:
    url, _ = hooks
    big = {**event("ComputerAdded", 101), "padding": "x" * 70_000}
    assert post(f"{url}/casper", big).status_code == 413


def test_unknown_device_is_counted_not_fatal(hooks: tuple[str, Any], fake_oomnitza: FakeOomnitza) -> None:
    url, worker = hooks
    assert post(f"{url}/casper", event("ComputerAdded", 999)).status_code == 202
    wait_for(lambda: worker.synced)
    assert worker.synced[0].counts["failed_convert"] == 1 and fake_oomnitza.records("assets") == []


def test_a_section_without_authentication_is_refused(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, jamf: FakeJamf
) -> None:
    path = write_ini(tmp_path, fake_oomnitza, jamf)
    path.write_text(path.read_text().replace(f"webhook_token = {TOKEN}\n", ""), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--ini", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "[casper] set webhook_token" in proc.stderr and "Traceback" not in proc.stderr


def test_server_script_end_to_end(tmp_path: Path, fake_oomnitza: FakeOomnitza, jamf: FakeJamf) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_ini(tmp_path, fake_oomnitza, jamf)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "connector.py"),
            "server",
            "--ini",
            str(path),
            "--port",
            str(port),
            "--coalesce-seconds",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        assert post(f"http://127.0.0.1:{port}/casper", event("ComputerAdded", 101)).status_code == 202
        wait_for(lambda: fake_oomnitza.records("assets"))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert TOKEN not in err and json.dumps(TOKEN) not in err
