"""Live progress: on a terminal, a line per section with records pulled and sent as they change;
nothing of it when the output is not a terminal (or with --no-progress)."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path

import pytest

from oomnitza_connector import redact
from oomnitza_connector.cli import main
from tests.fakes.oomnitza import FakeOomnitza

from .helpers import run_cli

ROWS = 600
PROGRESS_LINE = re.compile(r"([\d,]+) pulled\s+([\d,]+) sent")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def write_config(tmp_path: Path, fake: FakeOomnitza) -> Path:
    csv = tmp_path / "assets.csv"
    csv.write_text("serial\n" + "".join(f"SN{i:05d}\n" for i in range(ROWS)), encoding="utf-8")
    ini = tmp_path / "config.ini"
    ini.write_text(
        f"[oomnitza]\nurl = {fake.url}\napi_token = {fake.token}\n\n"
        f"[csv_assets]\nenable = True\nfilename = {csv}\nsync_field = SERIAL_NUMBER\n"
        'mapping.SERIAL_NUMBER = {"source": "serial"}\n',
        encoding="utf-8",
    )
    return ini


def run_on_terminal(*argv: str) -> tuple[int, str]:
    terminal = Terminal()
    redact.clear()
    with contextlib.redirect_stderr(terminal), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv), stdout=io.StringIO(), stderr=terminal)
    logging.getLogger().handlers.clear()
    return int(code), terminal.getvalue()


def counts(text: str) -> list[tuple[int, int]]:
    return [(int(p.replace(",", "")), int(s.replace(",", ""))) for p, s in PROGRESS_LINE.findall(text)]


def test_a_terminal_sees_the_counts_grow(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    fake_oomnitza.delay("POST", "/api/v3/bulk$", 0.3, times=ROWS // 100)  # a slow upload, batch by batch
    ini = write_config(tmp_path, fake_oomnitza)
    code, text = run_on_terminal("upload", "csv_assets", "--ini", str(ini), "--workers", "1")
    assert code == 0, text
    seen = counts(text)
    assert (ROWS, ROWS) in seen  # the final numbers
    assert any(0 < sent < ROWS for _, sent in seen), seen  # and numbers on the way there
    assert all(pulled >= sent for pulled, sent in seen)
    assert "csv_assets" in text and "[csv_assets] sync started" in text  # log lines still shown
    assert "Sync summary" in text
    assert len(fake_oomnitza.records("assets")) == ROWS


def test_no_progress_unless_a_terminal(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    ini = write_config(tmp_path, fake_oomnitza)
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 0, result.all
    assert counts(result.err) == [] and "\x1b[" not in result.err


@pytest.mark.parametrize("how", [("--no-progress",), ("--log-format", "json")])
def test_no_progress_when_asked_or_with_json_logs(
    tmp_path: Path, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch, how: tuple[str, ...]
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    ini = write_config(tmp_path, fake_oomnitza)
    code, text = run_on_terminal("upload", "csv_assets", "--ini", str(ini), *how)
    assert code == 0, text
    assert counts(text) == []
