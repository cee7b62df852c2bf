"""The embedded local store: bulk semantics, and the `local` command that shows what it holds."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from oomnitza_connector.errors import ConfigError
from oomnitza_connector.oomnitza.local_store import LocalStore, store_path
from oomnitza_connector.oomnitza.payload import RunInfo

from .helpers import run_cli


def run(sync: list[str], **flags: bool) -> RunInfo:
    return RunInfo(section="s", connector_name="CSV_assets", data_type="assets", sync_field=sync, **flags)


def test_upsert_semantics(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "db.sqlite")
    first = run(["SERIAL"])
    assert store.apply(first, [{"SERIAL": "A", "MODEL": "m1"}, {"serial": "B"}]) == {
        "received": 2,
        "inserted": 2,
        "updated": 0,
        "skipped": 0,
        "failed": 0,
    }
    counts = store.apply(run(["SERIAL"]), [{"SERIAL": "A", "OWNER": "x"}, {"SERIAL": "", "MODEL": "?"}])
    assert (counts["updated"], counts["failed"]) == (1, 1)
    assert store.records("assets")[0] == {"data_type": "assets", "SERIAL": "A", "MODEL": "m1", "OWNER": "x"}
    counts = store.apply(run(["SERIAL"], insert_only=True), [{"SERIAL": "A"}, {"SERIAL": "C"}])
    assert (counts["inserted"], counts["skipped"]) == (1, 1)
    counts = store.apply(run(["SERIAL"], update_only=True), [{"SERIAL": "A"}, {"SERIAL": "D"}])
    assert (counts["updated"], counts["skipped"]) == (1, 1)
    counts = store.apply(run([]), [{"SERIAL": "E"}])
    assert counts["failed"] == 1
    assert store.counts() == {"assets": 3}
    store.finalize(first)
    assert any(p["portion"] == first.portion and p["finalized_at"] for p in store.portions())
    store.close()


def test_composite_sync_key(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "db.sqlite")
    store.apply(run(["USER", "EMAIL"]), [{"USER": "a", "EMAIL": "x"}, {"USER": "a", "EMAIL": "y"}])
    store.apply(run(["USER", "EMAIL"]), [{"USER": "a", "EMAIL": "x", "N": 1}])
    assert store.counts() == {"assets": 2}
    store.close()


@pytest.mark.parametrize("url, path", [("sqlite:///./x.db", "x.db"), ("sqlite:////abs/x.db", "/abs/x.db")])
def test_store_path(url: str, path: str) -> None:
    assert store_path(url) == Path(path)


def test_store_path_rejects_other_forms() -> None:
    with pytest.raises(ConfigError):
        store_path("sqlite://x.db")


def test_local_summary_and_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.csv").write_text('serial,model\nS1,"Ünïcode, ""q"""\nS2,M2\n', encoding="utf-8")
    (tmp_path / "c.ini").write_text(
        "[oomnitza]\nurl = sqlite:///./local.db\n\n[csv_assets]\nenable = True\nfilename = a.csv\n"
        'sync_field = SERIAL\nmapping.SERIAL = {"source": "serial"}\nmapping.MODEL = {"source": "model"}\n',
        encoding="utf-8",
    )
    result = run_cli("local", "summary", "--ini", "c.ini")
    assert result.code == 1 and "does not exist yet" in result.err
    assert run_cli("upload", "csv_assets", "--ini", "c.ini").code == 0
    assert run_cli("upload", "csv_assets", "--ini", "c.ini").code == 0  # a second run updates
    result = run_cli("local", "summary", "--ini", "c.ini")
    assert result.code == 0
    assert "assets" in result.out and "csv_assets" in result.out
    result = run_cli("local", "export", "--ini", "c.ini")
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert rows == [
        {"data_type": "assets", "MODEL": 'Ünïcode, "q"', "SERIAL": "S1"},
        {"data_type": "assets", "MODEL": "M2", "SERIAL": "S2"},
    ]
    result = run_cli(
        "local", "export", "--ini", "c.ini", "--format", "json", "--data-type", "users", "--output", "out.json"
    )
    assert result.code == 0 and json.loads((tmp_path / "out.json").read_text()) == []
    assert run_cli("local", "nonsense", "--ini", "c.ini").code == 2


def test_local_needs_a_local_url(tmp_path: Path) -> None:
    (tmp_path / "c.ini").write_text("[oomnitza]\nurl = https://x.test\napi_token = t\n", encoding="utf-8")
    result = run_cli("local", "summary", "--ini", str(tmp_path / "c.ini"))
    assert result.code == 1 and "not a local store" in result.err
