"""Change-aware sync (issue 15) through the CLI, the webhook server and managed mode, against the
fake Oomnitza and the local store: what was sent is what the fake received, and the sync state
remembers only what Oomnitza confirmed. The state's own rules (on an injectable clock) are in
test_ledger.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oomnitza_connector.sync import BUCKETS
from tests.fakes.jamf import FakeJamf, computer
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.saas import KEY, FakeSaas
from tests.fakes.server import serve, serving

from .helpers import ROOT, CliResult, run_cli
from .test_managed import worked_example

# -- helpers --------------------------------------------------------------------------------------


def rows(n: int, start: int = 0, **changed: str) -> list[str]:
    """CSV rows ``serial,model,owner``; ``changed`` maps a serial to its new model."""
    return [f"SN{i:05d},{changed.get(f'SN{i:05d}', f'Model {i % 7}')},user{i}@acme.test" for i in range(start, n)]


def write_csv(path: Path, lines: list[str]) -> None:
    path.write_text("serial,model,owner\n" + "".join(line + "\n" for line in lines), encoding="utf-8")


def write_ini(tmp_path: Path, url: str, *, token: str = "test-token", extra: str = "", oomnitza: str = "") -> Path:
    auth = f"api_token = {token}" if not url.startswith("sqlite:") else ""
    text = "\n".join(
        [
            "[oomnitza]",
            f"url = {url}",
            auth,
            oomnitza,
            "",
            "[csv_assets]",
            "enable = True",
            f"filename = {tmp_path / 'assets.csv'}",
            "sync_field = SERIAL_NUMBER",
            'mapping.SERIAL_NUMBER = {"source": "serial"}',
            'mapping.MODEL = {"source": "model"}',
            'mapping.ASSIGNED_TO = {"source": "owner"}',
            extra,
            "",
        ]
    )
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    return path


def upload(ini: Path, *args: str) -> tuple[CliResult, dict[str, Any]]:
    """One upload; the result and the section's entry of --summary-json."""
    report = ini.parent / "summary.json"
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--summary-json", str(report), *args)
    (entry,) = json.loads(report.read_text(encoding="utf-8"))["sections"]
    assert sum(entry[b] for b in BUCKETS) == entry["pulled"], entry  # every record in one bucket
    return result, entry


def received(fake: FakeOomnitza, since: int = 0) -> list[dict[str, Any]]:
    """The records of the data payloads the fake took since payload number ``since``."""
    return [r for p in fake.bulk_payloads[since:] if p["error"] is None for r in p["records"]]


def state_file() -> Path:
    return Path(os.environ["OOMNITZA_STATE_DIR"]) / "sync-state.db"


def age_full_push(days: float) -> None:
    """Make the last full push ``days`` older (the CLI has no clock to inject: edit the state)."""
    with sqlite3.connect(state_file()) as db:
        db.execute("UPDATE scopes SET last_full_at = last_full_at - ?", (int(days * 86400),))


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "assets.csv"
    write_csv(path, rows(250))
    return path


# -- no-op suppression ------------------------------------------------------------------------------


def test_a_second_run_over_unchanged_data_sends_nothing(tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_ini(tmp_path, fake_oomnitza.url)
    result, first = upload(ini)
    assert result.code == 0, result.all
    assert first["sent"] == 250 and first["unchanged"] == 0
    assert first["changes"]["full_push"] and first["changes"]["full_push_reasons"] == [
        "first run: nothing remembered yet"
    ]
    payloads = len(fake_oomnitza.bulk_payloads)

    result, second = upload(ini)
    assert result.code == 0, result.all
    assert second["sent"] == 0 and second["unchanged"] == 250 and second["pulled"] == 250
    assert second["changes"]["full_push"] is False and second["changes"]["unchanged"] == 250
    assert len(fake_oomnitza.bulk_payloads) == payloads  # nothing was uploaded
    # The session of the no-op run is still finalized, empty (oomnitza-api.md §4.4).
    portion = fake_oomnitza.portion(second_portion := result_portion(fake_oomnitza, result))
    assert portion.finalized and portion.received == 0, second_portion
    assert "sending only new and changed records" in result.err
    row = next(line for line in result.err.splitlines() if "csv_assets" in line and "│" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[2:4] == ["250", "0"] and cells[4] == "250"  # pulled, sent, unchanged


def result_portion(fake: FakeOomnitza, result: CliResult) -> str:
    """The portion of the last run: the one finalized last."""
    finalized = [r.path for r in fake.requests if r.path.endswith("/finalize")]
    return finalized[-1].split("/")[-2]


def test_only_new_and_changed_records_are_sent(tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_ini(tmp_path, fake_oomnitza.url)
    upload(ini)
    write_csv(csv, [*rows(250, SN00007="Model Z"), "SN99999,Model N,new@acme.test"])
    before = len(fake_oomnitza.bulk_payloads)
    result, entry = upload(ini)
    assert result.code == 0, result.all
    assert entry["sent"] == 2 and entry["unchanged"] == 249
    assert entry["changes"]["new"] == 1 and entry["changes"]["changed"] == 1
    assert sorted(r["SERIAL_NUMBER"] for r in received(fake_oomnitza, before)) == ["SN00007", "SN99999"]
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="SN00007")["MODEL"] == "Model Z"
    assert len(fake_oomnitza.records("assets")) == 251


def test_records_to_send_fill_whole_batches(tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_ini(tmp_path, fake_oomnitza.url)
    upload(ini, "--batch-size", "10")
    changed = {f"SN{i:05d}": "Model Z" for i in range(0, 250, 10)}  # 25 records, one per slice of 10
    write_csv(csv, rows(250, **changed))
    before = len(fake_oomnitza.bulk_payloads)
    _, entry = upload(ini, "--batch-size", "10")
    assert entry["sent"] == 25
    sizes = [len(p["records"]) for p in fake_oomnitza.bulk_payloads[before:]]
    assert sorted(sizes, reverse=True) == [10, 10, 5]  # two batches in flight may arrive in any order


def test_the_local_store_is_change_aware_too(tmp_path: Path, csv: Path) -> None:
    from oomnitza_connector.oomnitza.local_store import LocalStore

    ini = write_ini(tmp_path, "sqlite:///" + str(tmp_path / "local.db"))
    assert upload(ini)[1]["sent"] == 250
    result, entry = upload(ini)
    assert result.code == 0 and entry["sent"] == 0 and entry["unchanged"] == 250
    store = LocalStore(tmp_path / "local.db")
    try:
        last = store.portions(1)[0]
        assert last["received"] == 0 and last["finalized_at"] is not None  # an empty, closed session
    finally:
        store.close()


def test_change_aware_can_be_turned_off(tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_ini(tmp_path, fake_oomnitza.url, extra="change_aware = false")
    upload(ini)
    _result, entry = upload(ini)
    assert entry["sent"] == 250 and entry["changes"] is None
    assert not state_file().exists()


def test_records_without_a_sync_key_are_always_sent_apart(
    tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza
) -> None:
    """Oomnitza refuses a record without a sync-field value; its batch-mates must still be remembered."""
    write_csv(csv, [*rows(20), ",Model 0,nobody@acme.test"])
    ini = write_ini(tmp_path, fake_oomnitza.url)
    result, first = upload(ini, "--batch-size", "50")
    assert first["sent"] == 20 and first["failed_send"] == 1 and result.code == 3
    result, second = upload(ini, "--batch-size", "50")
    assert second["sent"] == 0 and second["failed_send"] == 1 and second["unchanged"] == 20
    assert second["changes"]["unkeyed"] == 1


def test_a_record_that_cannot_be_mapped_does_not_make_every_run_a_full_push(
    tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza
) -> None:
    """One row with a missing required value is common in real data: the full push is done without
    it (it cannot be sent anyway), while the run still counts as incomplete for missing records."""
    write_csv(csv, [*rows(30), "SN77777,Model 1,"])
    ini = write_ini(tmp_path, fake_oomnitza.url, extra='mapping.ASSIGNED_TO = {"source": "owner", "required": true}')
    result, first = upload(ini)
    assert first["sent"] == 30 and first["missing_required"] == 1 and first["changes"]["full_push"], result.all
    assert first["changes"]["complete"] is False
    result, second = upload(ini)
    assert second["changes"]["full_push"] is False, second["changes"]
    assert second["sent"] == 0 and second["unchanged"] == 30 and second["missing_required"] == 1


def test_a_new_local_store_gets_every_record(tmp_path: Path, csv: Path) -> None:
    """The state remembers what one local store holds: a store deleted and made again is empty."""
    ini = write_ini(tmp_path, "sqlite:///" + str(tmp_path / "local.db"))
    assert upload(ini)[1]["sent"] == 250
    (tmp_path / "local.db").unlink()
    result, entry = upload(ini)
    assert entry["sent"] == 250 and entry["changes"]["full_push"], result.all
    assert upload(ini)[1]["sent"] == 0


# -- full pushes ------------------------------------------------------------------------------------------


def test_a_mapping_change_sends_everything(tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza) -> None:
    upload(write_ini(tmp_path, fake_oomnitza.url))
    # The same values, but another mapping: the state cannot know what Oomnitza holds for it.
    ini = write_ini(tmp_path, fake_oomnitza.url, extra='mapping.MODEL = {"source": "model", "type": "str"}')
    _, entry = upload(ini)
    assert entry["sent"] == 250 and entry["changes"]["full_push_reasons"] == [
        "the mapping, converters or sync fields changed"
    ]
    assert upload(ini)[1]["sent"] == 0
    converters = "[converters]\nshout:\n    return value.upper()"
    ini = write_ini(
        tmp_path, fake_oomnitza.url, extra='mapping.MODEL = {"source": "model", "type": "str"}\n' + converters
    )
    assert upload(ini)[1]["sent"] == 250  # a custom converter's code is part of the mapping


def test_full_sends_everything_once(tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_ini(tmp_path, fake_oomnitza.url)
    upload(ini)
    _result, entry = upload(ini, "--full")
    assert entry["sent"] == 250 and entry["unchanged"] == 0
    assert entry["changes"]["full_push_reasons"] == ["--full was given"] and entry["changes"]["unchanged"] == 250
    assert upload(ini)[1]["sent"] == 0


def test_another_token_or_url_sends_everything(tmp_path: Path, csv: Path, fake_oomnitza_factory: Any) -> None:
    fake = fake_oomnitza_factory()
    upload(write_ini(tmp_path, fake.url))
    other = fake_oomnitza_factory(token="another-token")  # same URL, other credentials
    ini = write_ini(tmp_path, other.url, token="another-token")
    _, entry = upload(ini)
    assert entry["sent"] == 250 and entry["changes"]["full_push_reasons"] == ["the Oomnitza credentials changed"]
    assert upload(ini)[1]["sent"] == 0
    # Another Oomnitza (here: another local store) is another state: everything is new there.
    first = write_ini(tmp_path, "sqlite:///" + str(tmp_path / "a.db"))
    assert upload(first)[1]["sent"] == 250
    second = write_ini(tmp_path, "sqlite:///" + str(tmp_path / "b.db"))
    _, entry = upload(second)
    assert entry["sent"] == 250
    assert "another URL" in entry["changes"]["full_push_reasons"][0]


def test_a_full_push_when_the_last_one_is_older_than_full_sync_interval(
    tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza
) -> None:
    ini = write_ini(tmp_path, fake_oomnitza.url, extra="full_sync_interval = 7d")
    upload(ini)
    age_full_push(6.9)
    assert upload(ini)[1]["sent"] == 0
    age_full_push(0.2)  # now 7.1 days
    result, entry = upload(ini)
    assert entry["sent"] == 250 and "full_sync_interval: 7.0 days" in entry["changes"]["full_push_reasons"][0]
    assert "change-aware sync: sending every record (the last full push was" in result.err
    assert upload(ini)[1]["sent"] == 0  # the full push was remembered


# -- only what Oomnitza confirmed is remembered -----------------------------------------------------------


def test_records_of_a_failed_batch_are_sent_again(tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza) -> None:
    write_csv(csv, rows(30))
    ini = write_ini(tmp_path, fake_oomnitza.url)
    upload(ini, "--batch-size", "10", "--workers", "0")
    write_csv(csv, rows(30, **{f"SN{i:05d}": "Model Z" for i in range(30)}))
    fake_oomnitza.fail("POST", "/api/v3/bulk$", 400)  # the first batch is refused
    result, entry = upload(ini, "--batch-size", "10", "--workers", "0")
    assert result.code == 3 and entry["sent"] == 20 and entry["failed_send"] == 10
    before = len(fake_oomnitza.bulk_payloads)
    result, entry = upload(ini, "--batch-size", "10", "--workers", "0")
    assert result.code == 0 and entry["sent"] == 10 and entry["unchanged"] == 20
    assert [r["SERIAL_NUMBER"] for r in received(fake_oomnitza, before)] == [f"SN{i:05d}" for i in range(10)]
    assert {r["MODEL"] for r in fake_oomnitza.records("assets")} == {"Model Z"}


def test_the_records_arrive_as_encoded_once_and_as_mapped(
    tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza
) -> None:
    """The bulk body is joined from the bytes the state digests (not encoded twice): Oomnitza
    receives exactly the mapped records, with or without change-aware sync."""
    write_csv(csv, [*rows(3), 'SN00003,"Model ""Q"" \u00e9\\",line1'])
    ini = write_ini(tmp_path, fake_oomnitza.url)
    upload(ini)
    aware = received(fake_oomnitza)
    write_ini(tmp_path, fake_oomnitza.url, extra="change_aware = false")
    before = len(fake_oomnitza.bulk_payloads)
    upload(ini)
    assert aware == received(fake_oomnitza, before)
    assert aware[3] == {"SERIAL_NUMBER": "SN00003", "MODEL": 'Model "Q" \u00e9\\', "ASSIGNED_TO": "line1"}


def test_batches_that_straddle_classified_slices_carry_the_right_records(
    tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza
) -> None:
    """Records without a sync value are batched apart, so a batch of keyed records takes the end
    of one classified slice and the start of the next (the encoded payloads of both): each record
    still arrives exactly as mapped, in a first run and in one that sends only some."""

    def lines(changed: dict[str, str]) -> list[str]:
        out = rows(30, **changed)
        for i in (2, 5, 11, 17):
            out[i] = f",Model U{i},nokey{i}@acme.test"  # no sync value (Oomnitza refuses them)
        return out

    def by_owner(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(records, key=lambda r: r["ASSIGNED_TO"])

    write_csv(csv, lines({}))
    ini = write_ini(tmp_path, fake_oomnitza.url)
    _, entry = upload(ini, "--batch-size", "10", "--workers", "0")
    assert entry["changes"]["new"] == 26 and entry["changes"]["unkeyed"] == 4
    first = received(fake_oomnitza)
    write_ini(tmp_path, fake_oomnitza.url, extra="change_aware = false")
    before = len(fake_oomnitza.bulk_payloads)
    upload(ini, "--batch-size", "10", "--workers", "0")
    plain = received(fake_oomnitza, before)
    assert by_owner(first) == by_owner(plain) and len(plain) == 30

    changed = {f"SN{i:05d}": f"Model Z{i}" for i in (0, 9, 10, 12, 19, 20, 29)}
    write_csv(csv, lines(changed))
    write_ini(tmp_path, fake_oomnitza.url)
    before = len(fake_oomnitza.bulk_payloads)
    _, entry = upload(ini, "--batch-size", "10", "--workers", "0")
    assert entry["changes"]["changed"] == 7 and entry["unchanged"] == 19
    expected = [
        dict(r, MODEL=changed.get(r["SERIAL_NUMBER"], r["MODEL"]))
        for r in plain
        if r["SERIAL_NUMBER"] in changed or not r["SERIAL_NUMBER"]
    ]
    assert by_owner(received(fake_oomnitza, before)) == by_owner(expected)


def test_a_bug_while_remembering_a_batch_does_not_hang_the_run(
    tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in a batch's bookkeeping is logged; the batch's upload slot is freed all the
    same, so the run goes on to the end instead of waiting for a slot forever."""
    from oomnitza_connector import changes

    def broken(self: Any, verdicts: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(changes.Tracker, "delivered", broken)
    ini = write_ini(tmp_path, fake_oomnitza.url)
    result, entry = upload(ini, "--batch-size", "10", "--workers", "1")
    assert entry["sent"] == 250 and len(fake_oomnitza.records("assets")) == 250
    assert "could not account for a batch: a bug" in result.err


def test_a_batch_oomnitza_took_only_in_part_is_not_remembered(
    tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza
) -> None:
    write_csv(csv, rows(20))
    ini = write_ini(tmp_path, fake_oomnitza.url)
    fake_oomnitza.fail("POST", "/api/v3/bulk$", 200, body={"received": 10, "failed": 1})  # which one? unknown
    _result, entry = upload(ini, "--batch-size", "10", "--workers", "0")
    assert entry["sent"] == 19 and entry["failed_send"] == 1
    before = len(fake_oomnitza.bulk_payloads)
    _, entry = upload(ini, "--batch-size", "10", "--workers", "0")
    # Every record of that batch is sent again (and this run is still a full push: the first
    # one did not get every record confirmed).
    assert [r["SERIAL_NUMBER"] for r in received(fake_oomnitza, before)][:10] == [f"SN{i:05d}" for i in range(10)]
    assert upload(ini, "--batch-size", "10")[1]["sent"] == 0


def test_a_canceled_run_remembers_only_what_was_confirmed(
    tmp_path: Path, csv: Path, fake_oomnitza_factory: Any
) -> None:
    fake = fake_oomnitza_factory()
    ini = write_ini(tmp_path, fake.url, oomnitza="cancel_check_interval = 0")
    upload(ini)
    write_csv(csv, rows(250, **{f"SN{i:05d}": "Model Z" for i in range(250)}))
    fake.cancel(after_records=100)
    result, entry = upload(ini, "--batch-size", "10", "--workers", "0")
    assert result.code == 4, result.all
    confirmed = entry["sent"]
    assert 100 <= confirmed < 250
    assert len([r for r in fake.records("assets") if r["MODEL"] == "Model Z"]) == confirmed
    fresh = fake_oomnitza_factory()  # the cancel is over
    result, entry = upload(write_ini(tmp_path, fresh.url, oomnitza="cancel_check_interval = 0"))
    assert result.code == 0 and entry["sent"] == 250 - confirmed and entry["unchanged"] == confirmed


class _HoldBulk:
    """An ASGI app in front of the fake: the first ``passing`` bulk uploads go through, the next
    one is held until ``release`` is set, then answered 504 (never stored)."""

    def __init__(self, app: Any, passing: int) -> None:
        self.app, self.passing = app, passing
        self.seen = 0
        self.holding = threading.Event()
        self.release = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/api/v3/bulk":
            self.seen += 1
            if self.seen > self.passing:
                self.holding.set()
                await asyncio.to_thread(self.release.wait, 30)
                await send({"type": "http.response.start", "status": 504, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)


def test_a_crash_between_send_and_remembering_sends_again(tmp_path: Path, csv: Path) -> None:
    """kill -9 after Oomnitza confirmed three batches, before their marks reached the state file:
    the next run sends those records again (never lost)."""
    write_csv(csv, rows(100))
    fake = FakeOomnitza()
    gate = _HoldBulk(fake.app, passing=1_000_000)
    with serve(gate) as url:
        ini = write_ini(tmp_path, url)
        assert upload(ini)[1]["sent"] == 100
        write_csv(csv, rows(100, **{f"SN{i:05d}": "Model Z" for i in range(100)}))
        gate.passing, gate.seen = 3, 0
        cmd = [sys.executable, str(ROOT / "connector.py"), "upload", "csv_assets", "--ini", str(ini)]
        proc = subprocess.Popen(
            [*cmd, "--batch-size", "10", "--workers", "0"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert gate.holding.wait(60), proc.stderr.read().decode() if proc.poll() is not None else "no 4th batch"
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            gate.release.set()
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()  # type: ignore[union-attr]
        assert proc.returncode == -signal.SIGKILL
        changed = [r for r in fake.records("assets") if r["MODEL"] == "Model Z"]
        assert len(changed) == 30  # three batches confirmed, then the crash
        gate.passing = 1_000_000
        result, entry = upload(ini)
    assert result.code == 0, result.all
    assert entry["sent"] == 100 and entry["unchanged"] == 0  # the 30 confirmed ones included
    assert len([r for r in fake.records("assets") if r["MODEL"] == "Model Z"]) == 100


def test_test_mode_reads_the_state_and_writes_nothing(tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_ini(tmp_path, fake_oomnitza.url)
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--testmode")
    assert result.code == 0 and not state_file().exists()
    upload(ini)
    before = state_file().read_bytes()
    write_csv(csv, rows(250, SN00003="Model Z"))
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--testmode")
    assert result.code == 0, result.all
    assert result.out.count('"SERIAL_NUMBER": ') == 1 and "Model Z" in result.out  # what a run would send
    assert state_file().read_bytes() == before
    assert upload(ini)[1]["sent"] == 1


def test_a_damaged_state_file_sends_everything_and_says_so(
    tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza
) -> None:
    state_file().parent.mkdir(parents=True, exist_ok=True)
    state_file().write_bytes(b"this is not a database" * 100)
    result, entry = upload(write_ini(tmp_path, fake_oomnitza.url))
    assert result.code == 0 and entry["sent"] == 250 and entry["changes"] is None
    assert "is damaged or not a sync state file" in result.err and "this run sends every record" in result.err


# -- plan ---------------------------------------------------------------------------------------------------


def plan(ini: Path, *args: str) -> CliResult:
    return run_cli("plan", "csv_assets", "--ini", str(ini), *args)


def test_plan_lists_what_a_run_would_do_and_writes_nothing(
    tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza
) -> None:
    extra = 'webhook_token = hook-s3cret-value\nmapping.NOTES = {"setting": "webhook_token"}'
    ini = write_ini(tmp_path, fake_oomnitza.url, extra=extra)
    first = plan(ini)
    assert first.code == 0, first.all
    assert "create 250, update 0, unchanged 0" in first.out and "full push: yes (first run" in first.out
    assert not state_file().exists()
    upload(ini)
    write_csv(
        csv,
        [line for line in rows(250, SN00003="Model " + "x" * 200) if not line.startswith("SN00010")]
        + ["SN99999,Model N,new@acme.test"],
    )
    state_before = state_file().read_bytes()
    fake_oomnitza.requests.clear()
    result = plan(ini)
    assert result.code == 0, result.all
    text = result.out
    assert "would send 2" in text and "create 1, update 1, unchanged 248" in text
    assert "full push: no" in text and "missing since the last run: 1" in text
    assert "SERIAL_NUMBER=SN99999" in text
    assert "MODEL: Model 3 → Model xxxxxxxxx" in text and "(206 chars)" in text  # long values cut
    assert "SERIAL_NUMBER=SN00010 (missing for 1 complete run(s)" in text
    assert "hook-s3cret-value" not in result.all
    # Read-only: no upload, no session, no finalize; only reads.
    assert {(r.method, r.path) for r in fake_oomnitza.requests} == {("GET", "/api/v2/mappings")}
    assert state_file().read_bytes() == state_before
    assert sorted(p.name for p in state_file().parent.iterdir() if p.name.startswith("sync-state")) == ["sync-state.db"]


def test_plan_json_with_field_changes_and_masked_secrets(
    tmp_path: Path, csv: Path, fake_oomnitza: FakeOomnitza
) -> None:
    extra = 'webhook_token = hook-s3cret-value\nmapping.NOTES = {"setting": "webhook_token"}'
    ini = write_ini(tmp_path, fake_oomnitza.url, extra=extra)
    upload(ini)
    ini = write_ini(tmp_path, fake_oomnitza.url, extra=extra.replace("hook-s3cret-value", "hook-n3w-value"))
    write_csv(csv, rows(250, SN00001="Model Z"))
    result = plan(ini, "--format", "json", "--limit", "1")
    assert result.code == 0, result.all
    doc = json.loads(result.out)
    (entry,) = doc["sections"]
    assert doc["mode"] == "plan" and entry["section"] == "csv_assets" and entry["change_aware"] is True
    assert entry["update"] == 250 and len(entry["updates"]) == 1  # --limit 1
    (first,) = entry["updates"]
    assert first["key"] == {"SERIAL_NUMBER": "SN00000"}
    assert first["changes"] == [{"field": "NOTES", "before": "********", "after": "********"}]
    assert "hook-n3w-value" not in result.all and "hook-s3cret-value" not in result.all


def test_plan_with_the_local_store_and_full(tmp_path: Path, csv: Path) -> None:
    store = tmp_path / "local.db"
    ini = write_ini(tmp_path, "sqlite:///" + str(store))
    result = plan(ini)
    assert result.code == 0 and not store.exists()  # not even created
    upload(ini)
    before = store.read_bytes()
    result = plan(ini, "--full")
    assert "would send 250" in result.out and "full push: yes (--full was given)" in result.out
    assert "unchanged 250 (the full push sends 250 of them)" in result.out
    assert store.read_bytes() == before


# -- retirement ----------------------------------------------------------------------------------------------

RETIRE = 'retire_after_runs = 2\nretire_mapping = {"STATUS": {"hardcoded": "Retired"}}'


def test_records_missing_for_n_complete_runs_are_retired_after_plan_lists_them(
    tmp_path: Path, fake_oomnitza: FakeOomnitza
) -> None:
    csv = tmp_path / "assets.csv"
    write_csv(csv, rows(100))
    ini = write_ini(tmp_path, fake_oomnitza.url, extra=RETIRE)
    upload(ini)
    gone = ("SN00010", "SN00011", "SN00012")
    write_csv(csv, [line for line in rows(100) if not line.startswith(gone)])
    _, entry = upload(ini)
    assert entry["changes"]["missing"] == 3 and entry["changes"]["retirement"]["retired"] == 0
    listed = plan(ini)
    assert "would retire (3):" in listed.out
    assert all(f"SERIAL_NUMBER={key} (missing for 2 complete run(s)" in listed.out for key in gone)
    before = len(fake_oomnitza.bulk_payloads)
    result, entry = upload(ini)
    assert result.code == 0, result.all
    assert entry["sent"] == 0 and entry["unchanged"] == 97
    retirement = entry["changes"]["retirement"]
    assert retirement["retired"] == 3 and retirement["candidates"] == 3 and retirement["failed"] == 0
    assert received(fake_oomnitza, before) == [{"SERIAL_NUMBER": key, "STATUS": "Retired"} for key in gone]
    assert all(fake_oomnitza.record("assets", SERIAL_NUMBER=key)["STATUS"] == "Retired" for key in gone)
    assert "csv_assets: retired 3 (3 record(s) missing for 2+ complete runs are retired)" in result.err
    _, entry = upload(ini)  # retired records are not retired again
    assert entry["changes"]["retirement"]["candidates"] == 0 and entry["changes"]["missing"] == 0
    write_csv(csv, rows(100))  # back in the source: sent again
    _, entry = upload(ini)
    assert entry["sent"] == 3 and entry["changes"]["changed"] == 3


@pytest.mark.parametrize("guard, gone", [("retire_max = 2", 3), ("retire_max = 5%", 6)])
def test_retirement_is_guarded(tmp_path: Path, fake_oomnitza: FakeOomnitza, guard: str, gone: int) -> None:
    csv = tmp_path / "assets.csv"
    write_csv(csv, rows(100))
    ini = write_ini(tmp_path, fake_oomnitza.url, extra=f"{RETIRE}\n{guard}")
    upload(ini)
    write_csv(csv, rows(100)[gone:])
    upload(ini)
    before = len(fake_oomnitza.bulk_payloads)
    result, entry = upload(ini)
    retirement = entry["changes"]["retirement"]
    assert retirement["candidates"] == gone and retirement["retired"] == 0 and not retirement["allowed"]
    assert "more than retire_max" in retirement["reason"] and "nothing is retired" in result.err
    assert received(fake_oomnitza, before) == []


def test_nothing_is_retired_after_an_incomplete_run(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    csv = tmp_path / "assets.csv"
    write_csv(csv, rows(100))
    ini = write_ini(tmp_path, fake_oomnitza.url, extra=RETIRE)
    upload(ini)
    write_csv(csv, rows(100)[1:])
    for _ in range(3):  # --record-count: the source was not read to its end
        _, entry = upload(ini, "--record-count", "50")
        assert entry["changes"]["complete"] is False and entry["changes"]["retirement"]["candidates"] == 0
    write_csv(csv, [*rows(100)[1:], "SN77777,Model 1,"])  # a record that fails mapping: keys unknown
    ini = write_ini(
        tmp_path, fake_oomnitza.url, extra=RETIRE + '\nmapping.ASSIGNED_TO = {"source": "owner", "required": true}'
    )
    for _ in range(3):
        _, entry = upload(ini)
        assert entry["missing_required"] == 1 and entry["changes"]["complete"] is False
        assert "could not be mapped" in plan(ini).out
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="SN00000").get("STATUS") is None


# -- the webhook server ----------------------------------------------------------------------------------------

HOOK_TOKEN = "hook-t0ken-1234"


@pytest.fixture
def jamf() -> Iterator[FakeJamf]:
    fake = FakeJamf(computers=[computer(i) for i in range(101, 104)])
    with serving(fake):
        yield fake


def test_a_device_synced_twice_unchanged_is_sent_once(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, jamf: FakeJamf
) -> None:
    from oomnitza_connector.config import load_config
    from oomnitza_connector.server.cli import build
    from oomnitza_connector.server.http import Limits, make_server

    ini = tmp_path / "config.ini"
    ini.write_text(
        f"[oomnitza]\nurl = {fake_oomnitza.url}\napi_token = {fake_oomnitza.token}\n\n"
        f"[casper]\nenable = True\nurl = {jamf.url}\nclient_id = {jamf.client_id}\n"
        f"client_secret = {jamf.client_secret}\nsync_field = SERIAL_NUMBER\n"
        'mapping.SERIAL_NUMBER = {"source": "general.serial_number"}\n'
        'mapping.NAME = {"source": "general.name"}\n'
        f"webhook_token = {HOOK_TOKEN}\n",
        encoding="utf-8",
    )
    app, worker = build(load_config(ini), coalesce=0.05, queue_file=tmp_path / "queue.db")
    server = make_server(app, host="127.0.0.1", port=0, threads=2, limits=Limits())
    thread = threading.Thread(target=server.run, daemon=True)
    worker.start()
    thread.start()
    hook = f"http://127.0.0.1:{server.effective_port}/casper"
    event = {"webhook": {"id": 1, "webhookEvent": "ComputerInventoryCompleted"}, "event": {"jssID": 101}}

    def sync_once(expected_runs: int) -> Any:
        response = httpx.post(hook, json=event, headers={"Authorization": f"Bearer {HOOK_TOKEN}"}, timeout=10)
        assert response.status_code == 202
        deadline = time.monotonic() + 20
        while len(worker.synced) < expected_runs:
            assert time.monotonic() < deadline, "the worker did not sync"
            time.sleep(0.05)
        return worker.synced[-1]

    try:
        first = sync_once(1)
        assert first.error is None and first.counts["sent"] == 1
        second = sync_once(2)
        assert second.error is None and second.counts["sent"] == 0 and second.counts["unchanged"] == 1
        assert len(received(fake_oomnitza)) == 1  # sent once
        jamf.computers[0]["general"]["name"] = "RENAMED-MBP"
        third = sync_once(3)
        assert third.counts["sent"] == 1
        assert fake_oomnitza.records("assets")[0]["NAME"] == "RENAMED-MBP"
        assert all(p.finalized for p in fake_oomnitza.portions.values())
    finally:
        server.close()
        worker.stop()
        worker.queue.close()
    # The webhook syncs share the section's state: an upload of [casper] knows the device.
    with sqlite3.connect(state_file()) as db:
        assert db.execute("SELECT name, runs, complete_runs FROM scopes").fetchall() == [("casper", 3, 0)]


# -- managed integrations -----------------------------------------------------------------------------------------


def integration(url: str, ident: int) -> dict[str, Any]:
    """The spec's worked example (cursor paging, a detail call per device), as integration ``ident``."""
    config = worked_example(url)
    config.update(id=ident, name=f"Fleetwise {ident}", software_behavior={"enabled": False})
    return config


def test_managed_integrations_send_only_changes_per_integration(
    tmp_path: Path, saas: FakeSaas, fake_oomnitza: FakeOomnitza
) -> None:
    mapping = {
        "serial_number": {"type": "attribute", "value": "serial"},
        "model": {"type": "attribute", "value": "{{ model }}"},
    }
    sections = ""
    for ident in (67, 68):
        fake_oomnitza.set_managed_mapping(ident, mapping)
        sections += (
            f'[managed.{ident}]\nsaas_authorization = {{"headers": {{"X-Fleetwise-Key": "{KEY}"}}}}\n'
            "sync_field = serial_number\n\n"
        )
    ini = tmp_path / "config.ini"
    ini.write_text(f"[oomnitza]\nurl = {fake_oomnitza.url}\napi_token = {fake_oomnitza.token}\n\n{sections}")

    def run_both() -> dict[int, int]:
        before = len(fake_oomnitza.bulk_payloads)
        fake_oomnitza.enqueue_managed(integration(saas.url, 67), integration(saas.url, 68))
        result = run_cli("managed", "--ini", str(ini), "--exit-when-idle", "--poll-interval", "0.05")
        assert result.code == 0, result.all
        sent: dict[int, int] = {67: 0, 68: 0}
        for payload in fake_oomnitza.bulk_payloads[before:]:
            sent[payload["connector_id"]] += len(payload["records"])
        return sent

    first = run_both()
    assert first[67] == first[68] > 0
    assert run_both() == {67: 0, 68: 0}  # each integration remembers its own records
    with sqlite3.connect(state_file()) as db:
        names = sorted(name for (name,) in db.execute("SELECT name FROM scopes"))
    assert names == ["managed:67", "managed:68"]
    ready = [p for p in fake_oomnitza.portions.values() if p.connector in (67, 68)]
    assert all(p.finalized for p in ready)  # every session closed, the no-op ones too
