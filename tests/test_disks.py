"""Full and read-only disks through the CLI: ``--save-data``, the embedded local store and export
files end in one clear line and a non-zero exit, never a traceback; the sync session is closed
and every record is accounted for. See tests/diskfaults.py for how the disks are broken."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from oomnitza_connector.oomnitza.local_store import LocalStore
from tests.fakes.oomnitza import FakeOomnitza

from .diskfaults import full_disk, read_only_dir
from .helpers import CliResult, export_config, run_cli
from .sourcekit import summary_row

FULL_DISK_WAYS = ("tmpfs", "fsize")


def make_csv(path: Path, rows: int, width: int = 60) -> Path:
    path.write_text(
        "serial,model,note\n" + "".join(f"SN{i:05d},Model {i % 7},{'n' * width}\n" for i in range(rows)),
        encoding="utf-8",
    )
    return path


def ini(tmp_path: Path, url: str, csv: Path, *, token: str = "", extra: str = "") -> Path:
    lines = [
        "[oomnitza]",
        f"url = {url}",
        *([f"api_token = {token}"] if token else []),
        "",
        "[csv_assets]",
        "enable = True",
        f"filename = {csv}",
        "sync_field = SERIAL_NUMBER",
        'mapping.SERIAL_NUMBER = {"source": "serial"}',
        'mapping.MODEL = {"source": "model"}',
        'mapping.NOTE = {"source": "note"}',
        *extra.splitlines(),
    ]
    path = tmp_path / "config.ini"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rest_ini(tmp_path: Path, fake: FakeOomnitza, csv: Path, extra: str = "") -> Path:
    return ini(tmp_path, fake.url, csv, token=fake.token, extra=extra)


def error_lines(result: CliResult, needle: str) -> list[str]:
    return [line for line in result.err.splitlines() if needle in line]


def assert_one_clear_line(result: CliResult, needle: str) -> str:
    assert result.code == 1, result.all
    assert "Traceback" not in result.all, result.all
    lines = error_lines(result, needle)
    assert len(lines) == 1, result.err
    return lines[0]


# -- --save-data ------------------------------------------------------------------------------------


def test_saved_data_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = ini(tmp_path, f"sqlite:///{tmp_path}/store.db", make_csv(tmp_path / "a.csv", 3))
    assert run_cli("upload", "csv_assets", "--ini", str(config), "--save-data").code == 0
    folder = tmp_path / "saved_data"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert [p.name for p in files] == ["csv_assets.payloads.jsonl", "csv_assets.source.jsonl"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    # A file an older version left readable becomes private; a folder the user opened up stays so.
    files[0].chmod(0o644)
    folder.chmod(0o755)
    assert run_cli("upload", "csv_assets", "--ini", str(config), "--save-data").code == 0
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert len(files[1].read_text(encoding="utf-8").splitlines()) == 3  # rewritten, not appended


@pytest.mark.parametrize("how", FULL_DISK_WAYS)
def test_save_data_on_a_full_disk(tmp_path: Path, fake_oomnitza: FakeOomnitza, how: str) -> None:
    work = tmp_path / "work"
    disk = full_disk(work / "saved_data", how, size=64 * 1024)
    # ulimit -f limits every file, the sync state too (which then warns and goes without): not here.
    config = rest_ini(tmp_path, fake_oomnitza, make_csv(tmp_path / "a.csv", 1500), extra="change_aware = false")
    result = disk.run("upload", "csv_assets", "--ini", str(config), "--save-data", cwd=work)
    line = assert_one_clear_line(result, disk.says)
    assert "--save-data: " in line and "saved_data/csv_assets." in line, line
    # Saving stopped; the sync did not: every record arrived and the session was closed.
    assert summary_row(result, "csv_assets")["sent"] == 1500
    assert len(fake_oomnitza.records("assets")) == 1500
    assert fake_oomnitza.portion().finalized


def test_save_data_on_a_read_only_disk(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, request: pytest.FixtureRequest
) -> None:
    disk = read_only_dir(tmp_path, request)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_csv(inbox / "a.csv", 5)
    config = rest_ini(tmp_path, fake_oomnitza, inbox / "a.csv", extra="processed_action = delete")
    config.write_text(config.read_text().replace(f"filename = {inbox / 'a.csv'}", f"directory = {inbox}"))
    result = disk.run("upload", "csv_assets", "--ini", str(config), "--save-data", cwd=disk.folder)
    line = assert_one_clear_line(result, disk.says)
    assert "--save-data: cannot write saved_data: " in line, line
    assert len(fake_oomnitza.records("assets")) == 5 and fake_oomnitza.portion().finalized
    assert (inbox / "a.csv").exists()  # a failed run never moves or deletes its input


def test_processed_dir_on_a_full_disk(tmp_path: Path) -> None:
    """Moving into another file system is a copy: when it does not fit, the file stays whole where
    it was and no half copy is left behind."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_csv(inbox / "a.csv", 2000)  # about 150 KiB
    disk = full_disk(tmp_path / "done", "tmpfs", size=64 * 1024)
    extra = f"processed_action = move\nprocessed_dir = {disk.folder}"
    config = ini(tmp_path, f"sqlite:///{tmp_path}/store.db", inbox / "a.csv", extra=extra)
    config.write_text(config.read_text().replace(f"filename = {inbox / 'a.csv'}", f"directory = {inbox}"))
    result, left = disk.run_then("upload", "csv_assets", "--ini", str(config), cwd=tmp_path, then="ls -A done")
    line = assert_one_clear_line(result, disk.says)
    assert "cannot move inbox/a.csv: disk full: done/a.csv" in line, line
    assert left == "", left
    assert (inbox / "a.csv").read_text(encoding="utf-8") == make_csv(tmp_path / "again.csv", 2000).read_text()


# -- the embedded local store ------------------------------------------------------------------------


@pytest.mark.parametrize("how", FULL_DISK_WAYS)
def test_local_store_on_a_full_disk(tmp_path: Path, how: str) -> None:
    disk = full_disk(tmp_path / "store", how, size=160 * 1024)
    db = disk.folder / "local.db"
    config = ini(tmp_path, f"sqlite:///{db}", make_csv(tmp_path / "a.csv", 3000, width=200))
    result = disk.run("upload", "csv_assets", "--ini", str(config), "--batch-size", "50", cwd=tmp_path)
    says = "file too large" if how == "fsize" else disk.says
    line = assert_one_clear_line(result, says)
    assert str(db) in line, line
    counts = summary_row(result, "csv_assets")
    assert counts["sent"] > 0 and counts["failed_send"] > 0, result.err
    assert counts["pulled"] == counts["sent"] + counts["failed_send"] < 3000, result.err  # it stopped reading
    if how == "fsize":  # the store outlives the child: it holds exactly what the summary says was sent
        store = LocalStore(db)
        try:
            assert len(store.records("assets")) == counts["sent"]
            (portion,) = store.portions()
            assert portion["inserted"] == counts["sent"] and portion["failed"] == 0
        finally:
            store.close()


def test_local_store_on_a_read_only_disk(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    disk = read_only_dir(tmp_path, request)
    db = disk.folder / "local.db"
    config = ini(tmp_path, f"sqlite:///{db}", make_csv(tmp_path / "a.csv", 3))
    result = disk.run("upload", "csv_assets", "--ini", str(config), cwd=tmp_path)
    line = assert_one_clear_line(result, disk.says)
    assert f"error: local store: cannot write {db}: {disk.says}" == line.strip(), line


def test_local_export_to_a_read_only_disk(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    config = ini(tmp_path, f"sqlite:///{tmp_path}/store.db", make_csv(tmp_path / "a.csv", 3))
    assert run_cli("upload", "csv_assets", "--ini", str(config)).code == 0
    disk = read_only_dir(tmp_path, request)
    target = disk.folder / "assets.csv"
    result = disk.run("local", "export", "--ini", str(config), "--output", str(target), cwd=tmp_path)
    line = assert_one_clear_line(result, disk.says)
    assert line == f"error: cannot write {target}: {disk.says}", line


# -- export files ------------------------------------------------------------------------------------


def managed_args(config: Path) -> list[str]:
    return ["managed", "--ini", str(config), "--exit-when-idle", "--poll-interval", "0.05"]


def managed_ini(tmp_path: Path, fake: FakeOomnitza) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(f"[oomnitza]\nurl = {fake.url}\napi_token = {fake.token}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("how", FULL_DISK_WAYS)
def test_export_file_on_a_full_disk(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # state.db
    disk = full_disk(tmp_path / "exports", how, size=64 * 1024)
    big = fake_oomnitza.add_media_file("big.csv", b"a,b\n" * 50_000, creation_date=100, created_by_id=90)
    fake_oomnitza.add_media_file("small.csv", b"a,b\n", creation_date=200, created_by_id=90)
    fake_oomnitza.enqueue_managed(export_config(disk.folder, overwrite_reports="True"))
    config = managed_ini(tmp_path, fake_oomnitza)
    result = disk.run(*managed_args(config), "--workers", "0", cwd=work)
    line = assert_one_clear_line(result, disk.says)
    assert f"managed_reports.90: {disk.says if how == 'tmpfs' else ''}" in line, line
    assert str(disk.folder / "big.csv") in line, line
    # One failed report for the file that did not fit; the next file was not tried on a full disk.
    (report,) = fake_oomnitza.ready_portions
    assert report["correlation_id"] == big["uid"] and report["failed"] == 1, report
    assert disk.says in report["error_message"]
    assert not any(p.name.startswith(".part-") for p in disk.folder.iterdir())
    # Disk space again: the watermark did not move, so both files arrive now.
    fake_oomnitza.reset()
    fake_oomnitza.enqueue_managed(export_config(disk.folder, overwrite_reports="True"))
    assert run_cli(*managed_args(config)).code == 0
    assert sorted(p.name for p in disk.folder.iterdir()) == ["big.csv", "small.csv"]


def test_export_file_on_a_read_only_disk(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, request: pytest.FixtureRequest
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    disk = read_only_dir(tmp_path, request)
    meta = fake_oomnitza.add_media_file("a.csv", b"a,b\n", creation_date=100, created_by_id=90)
    fake_oomnitza.enqueue_managed(export_config(disk.folder, overwrite_reports="True"))
    result = disk.run(*managed_args(managed_ini(tmp_path, fake_oomnitza)), cwd=work)
    line = assert_one_clear_line(result, disk.says)
    assert f"managed_reports.90: cannot write {disk.folder / 'a.csv'}: {disk.says}" in line, line
    (report,) = fake_oomnitza.ready_portions
    assert report["correlation_id"] == meta["uid"] and report["failed"] == 1
