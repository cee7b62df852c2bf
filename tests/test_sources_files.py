"""CSV and JSON sources end to end through the CLI into the embedded local store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oomnitza_connector.oomnitza.local_store import LocalStore
from tests.fakes.oomnitza import FakeOomnitza

from .helpers import ROOT, run_cli, write_ini
from .sourcekit import assert_accounted

ASSETS_OK = (
    "Serial Number,Model,Owner Email,Notes\n"
    'C02XK0AAJG5H,MacBook Pro 14,ana@acme.test,"Screen replaced, 2026"\n'
    'PF3ABC12,ThinkPad T14,jörg@acme.test,"Says ""urgent"""\n'
    "5CG0000XYZ,EliteBook 840,,\n"
)


def assets_ini(tmp_path: Path, source_lines: str, extra: str = "") -> Path:
    lines = [
        "[oomnitza]",
        f"url = sqlite:///{tmp_path}/store.db",
        "",
        "[csv_assets]",
        "enable = True",
        *source_lines.splitlines(),
        "sync_field = SERIAL",
        'mapping.SERIAL = {"source": "Serial Number"}',
        'mapping.MODEL = {"source": "Model"}',
        'mapping.OWNER = {"source": "Owner Email"}',
        'mapping.NOTES = {"source": "Notes"}',
        *extra.splitlines(),
    ]
    path = tmp_path / "config.ini"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored(tmp_path: Path, data_type: str = "assets") -> list[dict]:
    store = LocalStore(tmp_path / "store.db")
    try:
        return store.records(data_type)
    finally:
        store.close()


def test_csv_file_quoting_and_empty_cells(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(ASSETS_OK, encoding="utf-8")
    ini = assets_ini(tmp_path, f"filename = {tmp_path}/a.csv")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 0, result.all
    recs = {r["SERIAL"]: r for r in stored(tmp_path)}
    assert len(recs) == 3
    assert recs["C02XK0AAJG5H"]["NOTES"] == "Screen replaced, 2026"
    assert recs["PF3ABC12"]["NOTES"] == 'Says "urgent"'
    assert recs["PF3ABC12"]["OWNER"] == "jörg@acme.test"
    assert recs["5CG0000XYZ"]["OWNER"] == "" and recs["5CG0000XYZ"]["NOTES"] == ""


def test_csv_bom_is_stripped(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"\xef\xbb\xbf" + ASSETS_OK.encode())
    ini = assets_ini(tmp_path, f"filename = {tmp_path}/a.csv")
    assert run_cli("upload", "csv_assets", "--ini", str(ini)).code == 0
    assert {r["SERIAL"] for r in stored(tmp_path)} == {"C02XK0AAJG5H", "PF3ABC12", "5CG0000XYZ"}


def test_csv_cp1252_fails_the_line_then_works_with_encoding(tmp_path: Path) -> None:
    data = "Serial Number,Model,Owner Email,Notes\nS1,M1,a@x,ok\nS2,Caf\xe9,b@x,\nS3,M3,c@x,\n".encode("cp1252")
    (tmp_path / "a.csv").write_bytes(data)
    ini = assets_ini(tmp_path, f"filename = {tmp_path}/a.csv")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 3  # that row failed; the rows after it are still read
    assert "line 3 is not valid utf-8-sig" in result.err and "a.csv" in result.err
    assert "encoding =" in result.err
    assert "Traceback" not in result.all
    assert sorted(r["SERIAL"] for r in stored(tmp_path)) == ["S1", "S3"]
    ini = assets_ini(tmp_path, f"filename = {tmp_path}/a.csv\nencoding = cp1252")
    assert run_cli("upload", "csv_assets", "--ini", str(ini)).code == 0
    assert {r["SERIAL"]: r["MODEL"] for r in stored(tmp_path)}["S2"] == "Café"


@pytest.mark.parametrize("setting, sep", [("delimiter = ;", ";"), ("delimiter = tab", "\t"), ("delimiter = auto", ";")])
def test_csv_delimiters(tmp_path: Path, setting: str, sep: str) -> None:
    text = ASSETS_OK.replace(",", sep) if sep != ";" else "Serial Number;Model;Owner Email;Notes\nX1;Y1;a@x;n\n"
    if sep == "\t":
        text = "Serial Number\tModel\tOwner Email\tNotes\nX1\tY1\ta@x\tn\n"
    (tmp_path / "a.csv").write_text(text, encoding="utf-8")
    ini = assets_ini(tmp_path, f"filename = {tmp_path}/a.csv\n{setting}")
    assert run_cli("upload", "csv_assets", "--ini", str(ini)).code == 0
    assert stored(tmp_path)[0]["SERIAL"] == "X1" and stored(tmp_path)[0]["MODEL"] == "Y1"


def test_csv_ragged_rows_are_reported_and_accounted(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(
        "Serial Number,Model,Owner Email\nS1,M1\nS2,M2,o@x,EXTRA\nS3,M3,p@x\n", encoding="utf-8"
    )
    ini = assets_ini(tmp_path, f"filename = {tmp_path}/a.csv")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    # The short row is kept (missing cells are null); the long one is not sent and fails the run.
    assert result.code == 3, result.all
    assert "a.csv line 3: 4 cells but the header has 3" in result.err
    assert "fewer cells than the header (lines 2)" in result.err
    recs = {r["SERIAL"]: r for r in stored(tmp_path)}
    assert set(recs) == {"S1", "S3"}
    assert recs["S1"]["OWNER"] is None


def test_csv_multiline_value_is_kept(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('Serial Number,Notes\nS1,"line one\nline two"\n', encoding="utf-8")
    ini = assets_ini(tmp_path, f"filename = {tmp_path}/a.csv")
    assert run_cli("upload", "csv_assets", "--ini", str(ini)).code == 0
    assert stored(tmp_path)[0]["NOTES"] == "line one\nline two"


def test_csv_directory_mode_sorted_case_insensitive_no_hidden(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "b.csv").write_text("Serial Number\nB1\n", encoding="utf-8")
    (inbox / "A.CSV").write_text("Serial Number\nA1\n", encoding="utf-8")
    (inbox / ".hidden.csv").write_text("Serial Number\nH1\n", encoding="utf-8")
    (inbox / "c.txt").write_text("Serial Number\nT1\n", encoding="utf-8")
    ini = assets_ini(tmp_path, f"directory = {inbox}")
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--testmode")
    assert result.code == 0
    payloads = [json.loads(chunk) for chunk in result.out.replace("}\n{", "}\x00{").split("\x00")]
    assert [r["SERIAL"] for p in payloads for r in p["records"]] == ["A1", "B1"]


def test_csv_empty_and_header_only_files(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "empty.csv").write_bytes(b"")
    (inbox / "header.csv").write_text("Serial Number,Model\n", encoding="utf-8")
    ini = assets_ini(tmp_path, f"directory = {inbox}")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 0, result.all
    assert stored(tmp_path) == []


def test_filename_and_directory_are_exclusive(tmp_path: Path) -> None:
    ini = assets_ini(tmp_path, f"filename = {tmp_path}/a.csv\ndirectory = {tmp_path}")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 1
    assert "filename and directory are mutually exclusive" in result.err
    assert result.err.count("\n") == 1  # one line


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    ini = assets_ini(tmp_path, f"filename = {tmp_path}/nope.csv")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 1
    assert "nope.csv: no such file" in result.err
    assert "Traceback" not in result.all


def test_csv_streams_many_files_and_rows(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for f in range(3):
        rows = "".join(f"S{f}-{i},M\n" for i in range(2500))
        (inbox / f"part{f}.csv").write_text("Serial Number,Model\n" + rows, encoding="utf-8")
    ini = assets_ini(tmp_path, f"directory = {inbox}")
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--record-count", "6000")
    assert result.code == 0, result.all
    assert len(stored(tmp_path)) == 6000


# -- JSON -------------------------------------------------------------------------------------------


def json_ini(tmp_path: Path, inbox: Path) -> Path:
    return write_ini(
        tmp_path / "config.ini",
        f"""
        [oomnitza]
        url = sqlite:///{tmp_path}/store.db

        [json_users]
        enable = True
        directory = {inbox}
        sync_field = USER
        mapping.USER = {{"source": "login"}}
        mapping.EMAIL = {{"source": "emails.0.address"}}
        mapping.FIRST_NAME = {{"source": "name.first"}}
        mapping.ACTIVE = {{"source": "active"}}
        """,
    )


def test_json_users_files_nested_paths_types_and_defaults(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "batch1.json").write_text(
        json.dumps(
            [
                {
                    "login": "m.rossi",
                    "name": {"first": "Marco"},
                    "emails": [{"address": "marco@acme.test"}],
                    "active": True,
                },
                {"login": "e.kowalska", "name": {"first": "Ewa"}, "emails": [], "active": False},
            ]
        ),
        encoding="utf-8",
    )
    (inbox / "single.json").write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps(
            {"login": "t.nguyen", "name": {"first": "Thảo"}, "emails": [{"address": "thao@acme.test"}]}
        ).encode()
    )
    result = run_cli("upload", "json_users", "--ini", str(json_ini(tmp_path, inbox)))
    assert result.code == 0, result.all
    recs = {r["USER"]: r for r in stored(tmp_path, "users")}
    assert recs["m.rossi"]["EMAIL"] == "marco@acme.test" and recs["m.rossi"]["ACTIVE"] is True
    assert recs["e.kowalska"]["EMAIL"] is None
    assert recs["t.nguyen"]["FIRST_NAME"] == "Thảo"
    assert recs["t.nguyen"]["POSITION"] == "Employee" and recs["t.nguyen"]["PERMISSIONS_ID"] == "25"


def test_json_bad_files_are_counted_and_others_still_sync(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a_bad_item.json").write_text('[{"login": "ok"}, "oops"]', encoding="utf-8")
    (inbox / "b_scalar.json").write_text("42", encoding="utf-8")
    (inbox / "c_broken.json").write_text('{"login": "x",', encoding="utf-8")
    (inbox / "d_good.json").write_text('{"login": "good"}', encoding="utf-8")
    result = run_cli("upload", "json_users", "--ini", str(json_ini(tmp_path, inbox)))
    assert result.code == 3
    assert "item #1 is not an object" in result.err
    assert "does not contain a list or an object" in result.err
    assert "not valid JSON" in result.err
    assert {r["USER"] for r in stored(tmp_path, "users")} == {"ok", "good"}
    assert "│            5 │" in result.err or " 5 " in result.err


def test_processed_files_are_moved_after_a_successful_run(tmp_path: Path) -> None:
    inbox, done = tmp_path / "inbox", tmp_path / "done"
    inbox.mkdir()
    (inbox / "a.csv").write_text("Serial Number\nA1\nA2\n", encoding="utf-8")
    (inbox / "b.csv").write_text("Serial Number\nB1\nB2\n", encoding="utf-8")
    ini = assets_ini(tmp_path, f"directory = {inbox}\nprocessed_action = move\nprocessed_dir = {done}")
    # Test mode sends nothing, so nothing may move.
    assert run_cli("upload", "csv_assets", "--ini", str(ini), "--testmode").code == 0
    assert sorted(p.name for p in inbox.iterdir()) == ["a.csv", "b.csv"] and not done.exists()
    # --record-count stops inside b.csv, after a.csv was read to its end: only a.csv moves.
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--record-count", "3")
    assert result.code == 0, result.all
    assert [p.name for p in inbox.iterdir()] == ["b.csv"] and [p.name for p in done.iterdir()] == ["a.csv"]
    # A file of the same name processed again is kept next to the first one, not overwritten.
    (inbox / "a.csv").write_text("Serial Number\nA3\n", encoding="utf-8")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 0, result.all
    assert list(inbox.iterdir()) == []
    names = sorted(p.name for p in done.iterdir())
    assert len(names) == 3 and "a.csv" in names and "b.csv" in names
    assert any(n.startswith("a.") and n.endswith("Z.csv") for n in names)
    assert {r["SERIAL"] for r in stored(tmp_path)} == {"A1", "A2", "A3", "B1", "B2"}


def test_processed_files_stay_when_a_record_fails(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text("Serial Number,Model\nA1,M\nA2,M,EXTRA\n", encoding="utf-8")
    ini = assets_ini(tmp_path, f"directory = {inbox}\nprocessed_action = delete")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 3
    assert (inbox / "a.csv").exists()  # fix the file, and the next run reads it again


def two_files(tmp_path: Path) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text("Serial Number,Model\nA1,M\nA2,M\n", encoding="utf-8")
    (inbox / "b.csv").write_text("Serial Number,Model\nB1,M\nB2,M\n", encoding="utf-8")
    return inbox


def rest_assets_ini(tmp_path: Path, fake: FakeOomnitza, inbox: Path) -> Path:
    ini = assets_ini(tmp_path, f"directory = {inbox}\nprocessed_action = move\nprocessed_dir = {tmp_path / 'done'}")
    text = ini.read_text(encoding="utf-8").replace(
        f"url = sqlite:///{tmp_path}/store.db", f"url = {fake.url}\napi_token = {fake.token}"
    )
    ini.write_text(text, encoding="utf-8")
    return ini


def test_processed_files_stay_when_oomnitza_refuses_a_batch(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    inbox = two_files(tmp_path)
    fake_oomnitza.fail("POST", "/api/v3/bulk", 400, times=1, body={"error": "bad payload"})
    ini = rest_assets_ini(tmp_path, fake_oomnitza, inbox)
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--batch-size", "2", "--workers", "0")
    assert result.code == 3, result.all
    assert assert_accounted(result, "csv_assets", pulled=4, sent=2)["failed_send"] == 2
    assert len(fake_oomnitza.records("assets")) == 2 and fake_oomnitza.portion().finalized
    assert sorted(p.name for p in inbox.iterdir()) == ["a.csv", "b.csv"] and not (tmp_path / "done").exists()
    # The next run delivers everything: now the files move.
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 0, result.all
    assert list(inbox.iterdir()) == [] and sorted(p.name for p in (tmp_path / "done").iterdir()) == ["a.csv", "b.csv"]


def test_processed_files_stay_when_the_session_cannot_be_closed(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    inbox = two_files(tmp_path)
    fake_oomnitza.fail("POST", "/api/v3/bulk/", 400, times=1)  # the finalize of the portion
    result = run_cli("upload", "csv_assets", "--ini", str(rest_assets_ini(tmp_path, fake_oomnitza, inbox)))
    assert result.code == 1 and "could not finalize the sync session" in result.err, result.all
    assert sorted(p.name for p in inbox.iterdir()) == ["a.csv", "b.csv"]


def test_local_store_rejections_are_failed_sends_and_files_stay(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text("Serial Number,Model\nA1,M\n,no serial\nA3,M\n", encoding="utf-8")
    result = run_cli(
        "upload", "csv_assets", "--ini", str(assets_ini(tmp_path, f"directory = {inbox}\nprocessed_action = delete"))
    )
    assert result.code == 3, result.all
    counts = assert_accounted(result, "csv_assets", pulled=3, sent=2)
    assert counts["failed_send"] == 1
    # (a record without a sync key goes in a batch of its own: change-aware sync)
    assert "the local store refused 1 of 1 record(s): no value for sync field(s) SERIAL" in result.err
    assert (inbox / "a.csv").exists()
    # What the summary says is what the store holds.
    store = LocalStore(tmp_path / "store.db")
    try:
        (portion,) = store.portions()
        assert (portion["inserted"] + portion["updated"] + portion["skipped"], portion["failed"]) == (2, 1)
        assert {r["SERIAL"] for r in store.records("assets")} == {"A1", "A3"}
        (error,) = store.errors(portion["portion"])
        assert error["record"]["MODEL"] == "no serial"
    finally:
        store.close()


def test_local_store_constraint_failure_is_a_failed_send(tmp_path: Path) -> None:
    """A record the store's own rules refuse (here a user's trigger) fails alone; the batch is kept."""
    store = LocalStore(tmp_path / "store.db")
    store.db.execute(
        "CREATE TRIGGER no_bad BEFORE INSERT ON records WHEN json_extract(NEW.fields, '$.MODEL') = 'BAD' "
        "BEGIN SELECT RAISE(ABORT, 'models named BAD are not allowed'); END"
    )
    store.close()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text("Serial Number,Model\nA1,M\nA2,BAD\nA3,M\n", encoding="utf-8")
    result = run_cli(
        "upload", "csv_assets", "--ini", str(assets_ini(tmp_path, f"directory = {inbox}\nprocessed_action = delete"))
    )
    assert result.code == 3, result.all
    assert assert_accounted(result, "csv_assets", pulled=3, sent=2)["failed_send"] == 1
    assert "models named BAD are not allowed" in result.err
    assert {r["SERIAL"] for r in stored(tmp_path)} == {"A1", "A3"}
    assert (inbox / "a.csv").exists()


def test_processed_files_stay_when_the_run_is_interrupted(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    inbox = two_files(tmp_path)
    ini = rest_assets_ini(tmp_path, fake_oomnitza, inbox)
    fake_oomnitza.delay("POST", "/api/v3/bulk", 3.0)  # the first upload hangs until Ctrl-C (then ends)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    code = "import sys; from oomnitza_connector.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "upload", "csv_assets", "--ini", str(ini), "--batch-size", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):  # wait (up to a minute) until the upload is in flight
            if fake_oomnitza.find_requests("POST", "/api/v3/bulk") or proc.poll() is not None:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert sorted(p.name for p in inbox.iterdir()) == ["a.csv", "b.csv"] and not (tmp_path / "done").exists()


def test_processed_json_files_are_deleted(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.json").write_text('[{"login": "a"}, {"login": "b"}]', encoding="utf-8")
    path = json_ini(tmp_path, inbox)
    path.write_text(path.read_text(encoding="utf-8") + "processed_action = delete\n", encoding="utf-8")
    result = run_cli("upload", "json_users", "--ini", str(path))
    assert result.code == 0, result.all
    assert list(inbox.iterdir()) == []
    assert {r["USER"] for r in stored(tmp_path, "users")} == {"a", "b"}


def test_processed_action_settings_are_checked(tmp_path: Path) -> None:
    ini = assets_ini(tmp_path, f"directory = {tmp_path}\nprocessed_action = move")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 1 and "processed_action = move needs processed_dir" in result.err
    ini = assets_ini(tmp_path, f"directory = {tmp_path}\nprocessed_action = archive")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 1 and "processed_action = 'archive' must be one of: none, move, delete" in result.err


def test_json_lines_files_stream_and_bad_lines_fail_alone(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    lines = [json.dumps({"login": f"u{i}", "name": {"first": f"N{i}"}}) for i in range(2500)]
    lines[7] = '{"login": "broken",'
    lines[8] = "[1, 2]"
    (inbox / "people.JSONL").write_text("\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n", encoding="utf-8")
    result = run_cli("upload", "json_users", "--ini", str(json_ini(tmp_path, inbox)))
    assert result.code == 3, result.all
    assert "people.JSONL line 8: not valid JSON" in result.err
    assert "people.JSONL line 9: not an object" in result.err
    users = {r["USER"]: r for r in stored(tmp_path, "users")}
    assert len(users) == 2498 and users["u2499"]["FIRST_NAME"] == "N2499" and "u7" not in users


def test_csv_header_spaces_warned_or_stripped(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("Serial Number , Model\nS1,M1\n", encoding="utf-8")
    ini = assets_ini(tmp_path, f"filename = {tmp_path}/a.csv")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert "'Serial Number ', ' Model' have spaces around them" in result.err and "strip_headers = true" in result.err
    assert stored(tmp_path) == []  # SERIAL (the sync field) has no value: nothing is sent
    ini = assets_ini(tmp_path, f"filename = {tmp_path}/a.csv\nstrip_headers = true")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 0, result.all
    assert [(r["SERIAL"], r["MODEL"]) for r in stored(tmp_path)] == [("S1", "M1")]


def test_json_arrays_are_streamed_and_a_cut_file_keeps_what_came_before(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    people = [
        {"login": f"u{i}", "name": {"first": f"N{i}"}, "score": i + 0.5, "active": i % 2 == 0} for i in range(2300)
    ]
    text = json.dumps(people, indent=1)
    (inbox / "a_whole.json").write_text("\n  " + text, encoding="utf-8")
    cut = json.dumps([{"login": f"c{i}"} for i in range(1500)])
    (inbox / "b_cut.json").write_text(cut[: cut.index('{"login": "c1200"}') + 5], encoding="utf-8")
    path = json_ini(tmp_path, inbox)
    path.write_text(path.read_text(encoding="utf-8") + 'mapping.SCORE = {"source": "score"}\n', encoding="utf-8")
    result = run_cli("upload", "json_users", "--ini", str(path))
    assert result.code == 3, result.all
    assert "b_cut.json: not valid JSON after 1200 item(s)" in result.err
    users = {r["USER"]: r for r in stored(tmp_path, "users")}
    assert len(users) == 2300 + 1200
    assert users["u2299"]["FIRST_NAME"] == "N2299" and users["u2299"]["SCORE"] == 2299.5
    assert users["u0"]["ACTIVE"] is True and users["u1"]["ACTIVE"] is False
