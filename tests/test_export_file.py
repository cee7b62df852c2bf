"""Export files (``[managed_reports.<id>]``) through the CLI: the listing asks for one integration's
files, and names too long for the file system are shortened instead of failing on every poll."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oomnitza_connector.diskio import fit_name
from tests.fakes.oomnitza import FakeOomnitza

from .helpers import export_config, run_cli


def managed(tmp_path: Path, fake: FakeOomnitza) -> int:
    ini = tmp_path / "config.ini"
    ini.write_text(f"[oomnitza]\nurl = {fake.url}\napi_token = {fake.token}\n", encoding="utf-8")
    return run_cli("managed", "--ini", str(ini), "--exit-when-idle", "--poll-interval", "0.05").code


@pytest.fixture(autouse=True)
def _state_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # state.db


def test_listing_names_the_integration_in_its_own_parameter(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    ours = fake_oomnitza.add_media_file("ours.csv", b"1\n", creation_date=100, created_by_id=90)
    fake_oomnitza.add_media_file("theirs.csv", b"2\n", creation_date=150, created_by_id=91)
    fake_oomnitza.enqueue_managed(export_config(tmp_path / "out", overwrite_reports="True"))
    assert managed(tmp_path, fake_oomnitza) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ours.csv"]
    assert [r["correlation_id"] for r in fake_oomnitza.ready_portions] == [ours["uid"]]
    query = fake_oomnitza.find_requests("GET", "/api/v3/media_storage")[0].query
    assert query["created_by_id"] == "90"
    assert query["filter"] == "(creation_date gt 0) and (created_by_type eq 'reports_connectors')"
    assert query["sortby"] == "creation_date asc"


def test_names_too_long_for_the_file_system_are_shortened(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    ascii_long = "quarterly-asset-report-" + "x" * 300 + ".csv"
    same_start = "quarterly-asset-report-" + "x" * 300 + "-other.csv"
    multibyte = "Bestandsübersicht-" + "Ä" * 200 + ".xlsx"  # 2 bytes per Ä: 400+ bytes
    for i, name in enumerate((ascii_long, same_start, multibyte, "short.csv")):
        fake_oomnitza.add_media_file(name, f"{i}\n".encode(), creation_date=100 + i, created_by_id=90, uid=f"u{i}")
    fake_oomnitza.enqueue_managed(export_config(tmp_path / "out"))
    assert managed(tmp_path, fake_oomnitza) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 4 and "19700101000143_short.csv" in names
    assert all(len(os.fsencode(n)) <= 255 for n in names)
    assert sum(n.endswith(".csv") for n in names) == 3 and sum(n.endswith(".xlsx") for n in names) == 1
    assert all(r.get("added") == 1 for r in fake_oomnitza.ready_portions) and len(fake_oomnitza.ready_portions) == 4
    # Everything arrived, so the watermark moved past all four: the next poll asks for newer files only.
    fake_oomnitza.reset()
    fake_oomnitza.enqueue_managed(export_config(tmp_path / "out"))
    assert managed(tmp_path, fake_oomnitza) == 0
    assert "creation_date gt 103" in fake_oomnitza.find_requests("GET", "/api/v3/media_storage")[0].query["filter"]
    assert fake_oomnitza.ready_portions == []


@pytest.mark.parametrize(
    "name, limit, expected",
    [
        ("report.csv", 255, "report.csv"),
        ("a" * 20 + ".csv", 16, "aaa-{h}.csv"),  # 16 bytes = 3 + 9 (the hash) + 4
        ("ä" * 10 + ".csv", 15, "ä-{h}.csv"),  # never half a character: 2 bytes of room → one ä
        ("no-extension-" + "z" * 30, 20, "no-extensio-{h}"),
        ("odd." + "e" * 40, 30, "odd." + "e" * 17 + "-{h}"),  # a 40-byte "extension" is not kept whole
    ],
)
def test_fit_name(name: str, limit: int, expected: str) -> None:
    import hashlib

    tag = hashlib.sha256(name.encode()).hexdigest()[:8]
    fitted = fit_name(name, limit)
    assert fitted == expected.format(h=tag)
    assert len(fitted.encode()) <= limit
