"""Secrets never appear in any output of a run: logs, errors, --show-mappings, --save-data, --testmode."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.oomnitza import FakeOomnitza

from .helpers import run_cli

PASSWORD = "Sup3r-Secret-Pa55"


def test_no_secret_in_any_output(tmp_path: Path, fake_oomnitza_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    fake: FakeOomnitza = fake_oomnitza_factory(username="svc", password=PASSWORD)
    fake.set_mapping("CSV_assets", {"note": "NOTE"})
    monkeypatch.chdir(tmp_path)
    # A row that happens to contain the secret, and a converter that puts it into an error message.
    (tmp_path / "a.csv").write_text(f"serial,note\nS1,hello\nS2,{PASSWORD}\nS3,boom\n", encoding="utf-8")
    (tmp_path / "c.ini").write_text(
        "\n".join(
            [
                "[oomnitza]",
                f"url = {fake.url}",
                "username = svc",
                f"password = {PASSWORD}",
                "",
                "[csv_assets]",
                "enable = True",
                "filename = a.csv",
                "sync_field = SERIAL",
                'mapping.SERIAL = {"source": "serial"}',
                'mapping.X = {"source": "note", "converter": "leak"}',
                f'mapping.Y = {{"hardcoded": "{PASSWORD}"}}',
                "",
                "[converters]",
                "leak:",
                "    if value == 'boom':",
                f"        raise ValueError('the password is {PASSWORD}')",
                "    return value",
                "",
            ]
        ),
        encoding="utf-8",
    )
    outputs = []
    for args in (["--save-data"], ["--testmode"], ["--show-mappings"], ["--debug"]):
        result = run_cli("upload", "csv_assets", "--ini", "c.ini", *args)
        outputs.append(result.all)
    fake.fail("POST", "/api/v3/bulk", 400, times=20, body={"error": f"echo {PASSWORD}"})
    outputs.append(run_cli("upload", "csv_assets", "--ini", "c.ini", "--workers", "0").all)
    saved = [p.read_text() for p in (tmp_path / "saved_data").iterdir()]
    assert len(saved) == 2
    blob = "\n".join(outputs + saved)
    assert "the password is ********" in blob  # the message is kept, the secret masked
    assert PASSWORD not in blob
