"""Shared helpers for tests: run the CLI in-process and capture what a user would see."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oomnitza_connector import redact
from oomnitza_connector.cli import main

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def all(self) -> str:
        return self.out + self.err


def run_cli(*argv: str, program_dir: Path | None = None) -> CliResult:
    """Run ``connector.py`` in-process; logs and errors go to ``err`` as they would to stderr."""
    out, err = io.StringIO(), io.StringIO()
    redact.clear()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(list(argv), program_dir=program_dir, stdout=out, stderr=err)
    _reset_logging()
    return CliResult(int(code), out.getvalue(), err.getvalue())


def _reset_logging() -> None:
    """Close the run's log files and undo what its logging config did to any logger (a custom
    ``--logging-config`` may have given ``oomnitza_connector`` handlers of its own and
    ``propagate: false``, which the next run's config would not undo)."""
    root = logging.getLogger()
    for handler in root.handlers:
        handler.close()
    root.handlers.clear()
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                handler.close()
            logger.handlers.clear()
            logger.propagate = True
            logger.disabled = False


def write_ini(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def cheap_keyring_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make keyrings.cryptfile derive its keys with the cheapest Argon2id parameters, for this test.

    The library derives a key per secret read or written at time cost 15 and 64 MiB (seconds of
    both cores per test on a small machine); the parameters are class attributes meant to be set,
    and are not stored in the file. Encryption, the file and the unlock check stay real; one test
    (test_secrets.py::test_strongbox_script_and_subcommand) keeps the library's defaults.
    """
    from keyrings.cryptfile.cryptfile import ArgonAESEncryption

    monkeypatch.setattr(ArgonAESEncryption, "time_cost", 1)
    monkeypatch.setattr(ArgonAESEncryption, "memory_cost", 8)  # KiB: Argon2's minimum (8 x parallelism)
    monkeypatch.setattr(ArgonAESEncryption, "parallelism", 1)


def require(available: bool, message: str) -> None:
    """Skip a test whose server or driver is missing locally; under CI (CI=true) fail instead,
    since .ci/run installs everything the suite needs."""
    if available:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: this must not be skipped; see .ci/run)")
    pytest.skip(message)


def export_config(folder: Path, **extra: Any) -> dict[str, Any]:
    """A managed export-file (reports service) config as Oomnitza's ``check_managed`` lists it."""
    return {
        "id": 90,
        "name": "Nightly export",
        "type": "assets",
        "reports_service": True,
        "update_only": "False",
        "insert_only": "False",
        "folder_path": str(folder),
        **extra,
    }
