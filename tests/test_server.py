"""The webhook server over real HTTP: Jamf events in, one device synced into the fake Oomnitza."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oomnitza_connector import __version__
from oomnitza_connector.config import load_config
from oomnitza_connector.server.cli import build
from oomnitza_connector.server.http import Limits, make_server
from tests.fakes.jamf import FakeJamf, computer, mobile
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serving

from .helpers import ROOT

TOKEN = "hook-t0ken-1234"
BASIC = ("jamf", "hook-pass-99")
FAST = ("--coalesce-seconds", "0.2")


@pytest.fixture
def jamf() -> Iterator[FakeJamf]:
    fake = FakeJamf(computers=[computer(i) for i in range(101, 104)], mobiles=[mobile(55)])
    with serving(fake):
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


class Hooks:
    """A webhook server in this process (waitress in a thread, the worker in another)."""

    def __init__(self, config_path: Path, tmp_path: Path, *, coalesce: float = 0.5, **options: Any) -> None:
        limits = Limits(**options.pop("limits", {}))
        self.clock = options.pop("clock", None)
        self.app, self.worker = build(
            load_config(config_path), coalesce=coalesce, queue_file=tmp_path / "queue.db", **options
        )
        if self.clock is not None:
            self.worker.queue.clock = self.clock
        self.server = make_server(self.app, host="127.0.0.1", port=0, threads=2, limits=limits)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.port = self.server.effective_port
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.worker.start()
        self.thread.start()

    def close(self) -> None:
        self.server.close()
        self.worker.stop()
        self.worker.queue.close()


@pytest.fixture
def start(tmp_path: Path, fake_oomnitza: FakeOomnitza, jamf: FakeJamf) -> Iterator[Any]:
    started: list[Hooks] = []

    def run(**options: Any) -> Hooks:
        hooks = Hooks(write_ini(tmp_path, fake_oomnitza, jamf), tmp_path, **options)
        started.append(hooks)
        return hooks

    yield run
    for hooks in started:
        hooks.close()


@pytest.fixture
def hooks(start: Any) -> tuple[str, Any]:
    server = start()
    return server.url, server.worker


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
        "MobileDeviceInventoryCompleted",  # Jamf Pro 11.14
        "MobileDeviceUnenrolled",  # the spelling of Jamf's 11.14 changelog
    ],
)
def test_mobile_events_with_basic_auth(hooks: tuple[str, Any], fake_oomnitza: FakeOomnitza, name: str) -> None:
    url, _ = hooks
    response = httpx.post(f"{url}/casper.MDM", json=event(name, 55), auth=("jamf", "hook-pass-99"), timeout=10)
    assert response.status_code == 202
    wait_for(lambda: fake_oomnitza.records("assets"))
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Casper.MDM"


def test_a_burst_of_duplicates_is_one_sync(start: Any, fake_oomnitza: FakeOomnitza, jamf: FakeJamf) -> None:
    server = start(coalesce=3600)  # nothing is due until the server stops, which syncs what waits
    for _ in range(10):
        assert post(f"{server.url}/casper", event("ComputerCheckIn", 101, nested=True)).status_code == 202
    assert post(f"{server.url}/casper", event("ComputerInventoryCompleted", 103)).status_code == 202
    assert len(server.worker.queue) == 2
    server.close()
    assert len(server.worker.synced) == 1  # both devices in one batch, each fetched once
    assert len(fake_oomnitza.records("assets")) == 2
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
    url, worker = hooks
    response = httpx.post(f"{url}/casper", json=event("ComputerAdded", 101), headers=headers, auth=auth, timeout=10)
    assert response.status_code == status
    assert len(worker.queue) == 0 and fake_oomnitza.records("assets") == []


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


def test_webhooks_use_the_server_side_mapping_and_one_token(
    start: Any, fake_oomnitza: FakeOomnitza, jamf: FakeJamf
) -> None:
    """A webhook sync runs the section's merged mapping, Oomnitza's server-side part included: a
    field mapped only there (diskEncryption.*) makes Jamf be asked for its section. Every batch of
    the worker's life goes through one source: one Jamf Pro token, released when it stops."""
    fake_oomnitza.set_mapping("Casper", {"diskEncryption.individualRecoveryKeyValidityStatus": "FV_KEY"})
    server = start()
    for count, device in enumerate((101, 102, 103), start=1):  # one batch each
        assert post(f"{server.url}/casper", event("ComputerAdded", device)).status_code == 202
        wait_for(lambda count=count: len(server.worker.synced) == count)
    assert all(not r.error and r.counts["sent"] == 1 for r in server.worker.synced)
    fetches = [seen for seen in jamf.sections_seen if seen != ["GENERAL"]]  # not the version probe
    assert len(fetches) == 3 and all("DISK_ENCRYPTION" in seen for seen in fetches)
    assert {r["FV_KEY"] for r in fake_oomnitza.records("assets")} == {"VALID"}
    assert len(jamf.issued) == 1  # not one token per batch
    server.close()
    assert server.worker.sources == {}  # closed with the worker


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


# -- under load: slow and idle connections, hostile bodies ------------------------------------------


def half_open(port: int, count: int, partial: bytes) -> list[socket.socket]:
    """``count`` connections that each sent ``partial`` (an unfinished request) and then wait."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if partial:
            sock.sendall(partial)
        socks.append(sock)
    return socks


def test_half_open_connections_do_not_starve_the_server(start: Any, fake_oomnitza: FakeOomnitza) -> None:
    # 100 clients stuck in their headers, 20 that never send a byte, 20 stuck in their body:
    # each holds a connection, none a thread, and there are slots to spare.
    server = start()
    stuck = half_open(server.port, 100, b"POST /casper HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    stuck += half_open(server.port, 20, b"")
    body = b"POST /casper HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"
    stuck += half_open(server.port, 20, body)
    try:
        assert httpx.get(f"{server.url}/healthz", timeout=10).json() == {"status": "ok"}
        assert post(f"{server.url}/casper", event("ComputerAdded", 101)).status_code == 202
        wait_for(lambda: fake_oomnitza.records("assets"))
    finally:
        for sock in stuck:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed the connection (reads until it does, or 20 s without it)."""
    sock.settimeout(20)
    try:
        while data := sock.recv(4096):
            if b"408" in data or b"400" in data:  # an answer before closing is fine too
                continue
        return True
    except TimeoutError:
        return False
    except OSError:  # reset
        return True


def test_slow_clients_are_cut_off(start: Any) -> None:
    server = start(limits={"header_timeout": 1, "body_timeout": 1, "idle_timeout": 2})
    silent = half_open(server.port, 1, b"")[0]
    slow_headers = half_open(server.port, 1, b"POST /casper HTTP/1.1\r\nHost: x\r\n")[0]
    slow_body = half_open(
        server.port,
        1,
        b"POST /casper HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{",
    )[0]
    kept_alive = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in kept_alive.recv(4096)
    try:
        for sock in (silent, slow_headers, slow_body, kept_alive):
            assert closed_by_server(sock)
    finally:
        for sock in (silent, slow_headers, slow_body, kept_alive):
            sock.close()
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 60_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"webhook": {"webhookEvent": "ComputerAdded"}, "event": {"jssID": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}",
    ],
)
def test_deeply_nested_json_is_a_400(hooks: tuple[str, Any], body: bytes) -> None:
    url, worker = hooks
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    response = httpx.post(f"{url}/casper", content=body, headers=headers, timeout=10)
    assert response.status_code == 400 and "nested too deeply" in response.json()["error"]
    assert len(worker.queue) == 0


@pytest.mark.parametrize("jss_id", ["../../JSSResource/x", "1 OR 1=1", 7.5, True, [1], "1" * 30, ""])
def test_a_jss_id_must_be_digits(hooks: tuple[str, Any], jss_id: Any) -> None:
    url, worker = hooks
    body = {"webhook": {"webhookEvent": "ComputerAdded"}, "event": {"jssID": jss_id}}
    response = post(f"{url}/casper", body)
    assert response.status_code == 400 and "jssID" in response.json()["error"]
    assert len(worker.queue) == 0


# -- the durable queue ------------------------------------------------------------------------------


def test_a_device_jamf_cannot_give_now_is_tried_again(
    start: Any, fake_oomnitza: FakeOomnitza, jamf: FakeJamf, caplog: pytest.LogCaptureFixture
) -> None:
    now = [time.time()]
    server = start(coalesce=0, clock=lambda: now[0])
    # Jamf answers 503 to everything for a while (Retry-After: 0, so its retries are quick).
    jamf.fail("GET", "/api/", 503, times=50, headers={"Retry-After": "0"})
    with caplog.at_level(logging.ERROR, logger="oomnitza_connector.server.app"):
        assert post(f"{server.url}/casper", event("ComputerAdded", 102)).status_code == 202
        wait_for(lambda: any("stay queued, next try in 5 s" in r.getMessage() for r in caplog.records))
    assert fake_oomnitza.records("assets") == [] and len(server.worker.queue) == 1
    jamf._faults.clear()  # Jamf is back
    now[0] += 6  # the back-off has passed
    server.worker.queue.wake.set()
    wait_for(lambda: fake_oomnitza.records("assets"))
    wait_for(lambda: len(server.worker.queue) == 0)


def test_an_unknown_device_leaves_the_queue_with_an_error(
    start: Any, fake_oomnitza: FakeOomnitza, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(coalesce=0)
    with caplog.at_level(logging.ERROR, logger="oomnitza_connector.server.app"):
        assert post(f"{server.url}/casper", event("ComputerAdded", 999)).status_code == 202
        wait_for(lambda: len(server.worker.queue) == 0 and server.worker.synced)
    assert any("device 999 dropped from the queue" in r.getMessage() for r in caplog.records)


def test_events_accepted_while_oomnitza_is_down_are_synced_after_a_restart(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, jamf: FakeJamf, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OOMNITZA_STATE_DIR", str(tmp_path / "state"))  # the queue's default folder
    path = write_ini(tmp_path, fake_oomnitza, jamf)
    fake_oomnitza.fail(None, "/api/", 503, times=100_000, headers={"Retry-After": "0"})  # Oomnitza is down
    with running_server(path, tmp_path) as (port, first):
        assert post(f"http://127.0.0.1:{port}/casper", event("ComputerAdded", 101)).status_code == 202
        assert (
            post(
                f"http://127.0.0.1:{port}/casper.MDM",
                event("MobileDeviceCheckIn", 55),
                headers={"Authorization": ""},
                auth=("jamf", "hook-pass-99"),
            ).status_code
            == 202
        )
        wait_for(lambda: first.err.count("ERROR") >= 2, seconds=60)
    assert "Oomnitza cannot be reached now" in first.err
    assert "ERROR [casper] webhook sync of 1 device(s) failed" in first.err
    assert "they stay queued" in first.err
    assert fake_oomnitza.records("assets") == []
    queue_file = tmp_path / "state" / "webhook-queue.db"
    if os.name == "posix":
        assert stat.S_IMODE(queue_file.stat().st_mode) == 0o600
    fake_oomnitza.reset()  # Oomnitza is back
    with running_server(path, tmp_path) as (port, second):
        wait_for(lambda: len(fake_oomnitza.records("assets")) == 2, seconds=60)
    assert "2 device(s) from earlier events are queued" in second.err
    assert {p["connector_name"] for p in fake_oomnitza.bulk_payloads} == {"Casper", "Casper.MDM"}
    assert all(p.finalized for p in fake_oomnitza.portions.values())
    assert TOKEN not in first.err + second.err


class _Output:
    def __init__(self) -> None:
        self.err = ""


@contextlib.contextmanager
def running_server(ini: Path, cwd: Path) -> Iterator[tuple[int, _Output]]:
    """``connector.py server`` in a subprocess; SIGTERM on exit, which must end it with code 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "connector.py"), "server", "--ini", str(ini), "--port", str(port), *FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    output = _Output()
    reader = threading.Thread(target=lambda: _drain(proc, output), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, output.err
            time.sleep(0.1)
        yield port, output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(10)
    assert proc.returncode == 0, output.err


def _drain(proc: subprocess.Popen[str], output: _Output) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        output.err += line


# -- /metrics -------------------------------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return samples_of(response.text)


def samples_of(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from oomnitza_connector.metrics import parse_sample

    samples = {}
    for line in page.splitlines():
        parsed = parse_sample(line)
        if parsed:
            name, labels, value = parsed
            samples[(name.removeprefix("oomnitza_connector_"), labels)] = value
    return samples


def metric(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_count_events_queue_depth_and_records(start: Any, fake_oomnitza: FakeOomnitza) -> None:
    server = start(coalesce=3600)  # events wait in the queue until the server stops
    url = server.url
    assert post(f"{url}/casper", event("ComputerAdded", 101)).status_code == 202
    assert post(f"{url}/casper", event("ComputerAdded", 102)).status_code == 202
    assert post(f"{url}/casper", event("MobileDeviceCheckIn", 55)).json()["status"] == "ignored"
    assert httpx.post(f"{url}/casper", json=event("ComputerAdded", 1), timeout=10).status_code == 401
    assert post(f"{url}/casper", {"webhook": {"webhookEvent": "ComputerAdded"}, "event": {}}).status_code == 400
    assert post(f"{url}/casper.nope", event("ComputerAdded", 1)).status_code == 404  # no label for it
    samples = scrape(url)
    events = {o: metric(samples, "webhook_events_total", section="casper", outcome=o) for o in OUTCOMES}
    assert events == {"queued": 2, "ignored": 1, "unauthorized": 1, "rejected": 1, "refused": 0}
    assert metric(samples, "webhook_events_total", section="casper.MDM", outcome="queued") == 0
    assert not [k for k in samples if ("section", "casper.nope") in k[1]]
    assert metric(samples, "webhook_queue_depth", section="casper") == 2
    assert metric(samples, "webhook_queue_depth", section="casper.MDM") == 0
    assert metric(samples, "info", version=__version__) == 1

    server.server.close()  # stop taking requests; the worker syncs what waits when it stops
    server.worker.stop()
    assert len(fake_oomnitza.records("assets")) == 2
    after = samples_of(server.app.render())  # the /metrics page as it would be served now
    assert metric(after, "records_total", section="casper", type="assets", bucket="sent") == 2
    assert metric(after, "records_total", section="casper", type="assets", bucket="pulled") == 2
    assert metric(after, "webhook_syncs_total", section="casper", result="ok") == 1
    assert metric(after, "webhook_queue_depth", section="casper") == 0
    server.worker.queue.close()
    server.close = lambda: None  # type: ignore[method-assign]  # closed above, in the order needed here


OUTCOMES = ("queued", "ignored", "unauthorized", "rejected", "refused")


def test_metrics_count_refused_events(start: Any) -> None:
    server = start(coalesce=3600)
    server.worker.queue.max_pending = 1
    assert post(f"{server.url}/casper", event("ComputerAdded", 101)).status_code == 202
    assert post(f"{server.url}/casper", event("ComputerAdded", 102)).status_code == 503
    samples = scrape(server.url)
    assert metric(samples, "webhook_events_total", section="casper", outcome="refused") == 1
