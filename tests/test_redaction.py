"""Secrets never appear in any output of a run: logs, errors, --show-mappings, --save-data, --testmode."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.oomnitza import FakeOomnitza

from .helpers import ROOT, run_cli

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


# -- every path: parse errors, --debug, custom logging configs, uncaught exceptions ----------------


def local_ini(tmp_path: Path, *section_lines: str, converters: str = "") -> Path:
    """A local-store configuration whose [oomnitza] password is a registered secret."""
    (tmp_path / "a.csv").write_text("serial,note\nS1,boom\n", encoding="utf-8")
    lines = [
        "[oomnitza]",
        f"url = sqlite:///{tmp_path}/store.db",
        "username = svc",
        f"password = {PASSWORD}",
        "",
        "[csv_assets]",
        "enable = True",
        f"filename = {tmp_path / 'a.csv'}",
        "sync_field = SERIAL",
        'mapping.SERIAL = {"source": "serial"}',
        *section_lines,
    ]
    if converters:
        lines += ["", "[converters]", converters]
    path = tmp_path / "c.ini"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_an_ini_line_that_cannot_be_parsed_is_named_not_shown(tmp_path: Path) -> None:
    # The password wrapped onto a line of its own, and a token pasted without indentation.
    path = tmp_path / "c.ini"
    path.write_text(
        f"[oomnitza]\nurl = https://acme.example\npassword =\n{PASSWORD}\n[csv_assets]\n  api_token = {PASSWORD}\n",
        encoding="utf-8",
    )
    result = run_cli("upload", "csv_assets", "--ini", str(path))
    assert result.code == 1
    assert f"{path}: cannot parse line 4:" in result.err and 'line 6 (key "api_token")' in result.err
    assert PASSWORD not in result.all and "Sup3r" not in result.all and "Traceback" not in result.all


def test_a_value_that_reads_as_an_unknown_key_is_not_shown(tmp_path: Path) -> None:
    token = "Zx9-Sup3rSecretV4lue=="  # "key" Zx9-Sup3rSecretV4lue, value "="
    result = run_cli("upload", "csv_assets", "--ini", str(local_ini(tmp_path, token)))
    assert "has an unknown setting '(not shown: it may be part of a value)' (line 11)" in result.err
    assert "Sup3rSecretV4lue".lower() not in result.all.lower()


def test_debug_tracebacks_are_scrubbed(tmp_path: Path) -> None:
    # The password pasted into the wrong setting: the error echoes it, masked, with and without
    # --debug; the traceback --debug adds is masked too.
    ini = local_ini(tmp_path, f"encoding = {PASSWORD}")
    plain = run_cli("upload", "csv_assets", "--ini", str(ini))
    debug = run_cli("upload", "csv_assets", "--ini", str(ini), "--debug")
    assert plain.code == debug.code == 1
    assert "Traceback" not in plain.err and "Traceback (most recent call last)" in debug.err
    assert "encoding = '********' is not a known encoding" in debug.err
    assert PASSWORD not in plain.all + debug.all


LEAKY_CONVERTERS = "\n".join(
    [
        "leak:",
        "    import logging, threading",
        "    logging.getLogger('zeep.transports').warning('envelope <Password>%s</Password>', " + repr(PASSWORD) + ")",
        "    logging.getLogger('ldap3').error('bind as svc with %s', " + repr(PASSWORD) + ")",
        "    logging.getLogger('httpx').warning('GET https://x/?api_key=" + PASSWORD + "')",
        "    try:",
        "        raise KeyError(" + repr(PASSWORD) + ")",
        "    except KeyError:",
        "        logging.getLogger('oomnitza_connector.custom').exception('lookup failed')",
        "    def crash():",
        "        raise RuntimeError('thread saw ' + " + repr(PASSWORD) + ")",
        "    t = threading.Thread(target=crash, name='helper')",
        "    t.start()",
        "    t.join()",
        "    return value",
    ]
)


def test_every_handler_of_every_logger_is_scrubbed(tmp_path: Path) -> None:
    """A custom logging config with handlers on our logger and on third-party loggers (not
    propagating to the root), a traceback logged, and an exception in a thread: all masked."""
    logs = tmp_path / "logs"
    logs.mkdir()
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
            "ours": {"class": "logging.FileHandler", "filename": str(logs / "ours.log"), "formatter": "plain"},
            "third": {
                "class": "logging.handlers.RotatingFileHandler",
                "filename": str(logs / "third.log"),
                "maxBytes": 50,
                "backupCount": 2,
                "delay": True,
            },
        },
        "loggers": {
            "oomnitza_connector": {"handlers": ["ours"], "propagate": False, "level": "INFO"},
            "zeep": {"handlers": ["third"], "propagate": False, "level": "DEBUG"},
            "ldap3": {"handlers": ["third"], "propagate": False},
            "httpx": {"handlers": ["third"], "propagate": False, "level": "INFO"},
        },
        "root": {"level": "INFO", "handlers": ["console"]},
    }
    (tmp_path / "logging.json").write_text(json.dumps(config), encoding="utf-8")
    ini = local_ini(tmp_path, 'mapping.NOTE = {"source": "note", "converter": "leak"}', converters=LEAKY_CONVERTERS)
    try:
        result = run_cli("upload", "csv_assets", "--ini", str(ini), "--logging-config", str(tmp_path / "logging.json"))
    finally:
        # Put the loggers this config took over back as they were (later tests read their output).
        for name in config["loggers"]:
            logger = logging.getLogger(name)
            for h in list(logger.handlers):
                h.close()
                logger.removeHandler(h)
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
    assert result.code == 0, result.all
    files = sorted(logs.iterdir())
    assert len(files) >= 3  # ours.log, third.log and at least one rotated third.log.N
    written = {p.name: p.read_text(encoding="utf-8") for p in files}
    everything = result.all + "".join(written.values())
    assert PASSWORD not in everything
    assert "KeyError: '********'" in written["ours.log"] and "lookup failed" in written["ours.log"]
    assert "envelope <Password>********</Password>" in everything and "bind as svc with ********" in everything
    assert "api_key=********" in everything
    assert "Exception in thread helper" in result.err and "RuntimeError: thread saw ********" in result.err
    if os.name == "posix":
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == dict.fromkeys(written, 0o600)


def test_an_uncaught_exception_is_printed_scrubbed(tmp_path: Path) -> None:
    # A converter raising a BaseException is a bug the CLI does not catch: Python prints it.
    converters = "\n".join(["crash:", f"    raise BaseException('fatal: ' + {PASSWORD!r})"])
    ini = local_ini(tmp_path, 'mapping.NOTE = {"source": "note", "converter": "crash"}', converters=converters)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "connector.py"), "upload", "csv_assets", "--ini", str(ini)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "BaseException: fatal: ********" in proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr


# -- redactors are objects: one per configuration, a child per managed run ---------------------------


def test_a_child_masks_its_parents_secrets_and_forgets_its_own() -> None:
    from oomnitza_connector.redact import MASK, Redactor

    config = Redactor()
    config.add("parent-secret-value")
    run = config.child()
    run.add("secret-v")  # contained in the parent's: the longer one must still be masked whole
    run.add("session-token-42")
    text = "parent-secret-value / session-token-42 / secret-v"
    assert run.scrub(text) == f"{MASK} / {MASK} / {MASK}"
    assert config.scrub(text) == f"{MASK} / session-token-42 / secret-v"  # the run's stay the run's
    assert Redactor().scrub(text) == text


def test_without_a_run_or_logging_set_up_one_fallback_redactor_still_masks() -> None:
    from oomnitza_connector import redact

    redact.clear()  # no config loaded, logging not set up: a library use
    try:
        redact.add_secret("library-secret-9")
        assert redact.current() is redact.current()  # made once, then kept
        assert redact.scrub("token library-secret-9") == f"token {redact.MASK}"
    finally:
        redact.clear()


def test_each_configuration_has_its_own_redactor(tmp_path: Path) -> None:
    from oomnitza_connector import redact
    from oomnitza_connector.config import load_config

    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = local_ini(other_dir).read_text().replace(PASSWORD, "An0ther-Pa55word")
    (other_dir / "c.ini").write_text(other, encoding="utf-8")
    first = load_config(local_ini(tmp_path), redactor=redact.Redactor())
    with redact.using(redact.Redactor()):  # what the CLI does for each invocation
        second = load_config(other_dir / "c.ini")
    assert first.redactor is not second.redactor
    assert first.redactor.is_secret(PASSWORD) and not first.redactor.is_secret("An0ther-Pa55word")
    assert second.redactor.is_secret("An0ther-Pa55word") and not second.redactor.is_secret(PASSWORD)
    try:  # with no redactor in force, a config's secrets go to logging's: nothing escapes the logs
        third = load_config(local_ini(tmp_path))
        assert third.redactor is redact.current() and redact.scrub(PASSWORD) == redact.MASK
    finally:
        redact.clear()


def test_the_current_redactor_reaches_tasks_threads_and_logging(caplog: pytest.LogCaptureFixture) -> None:
    """``using()`` makes a redactor current for the tasks and to_thread calls started under it; a
    thread started bare falls back to the redactor logging was set up with."""
    import asyncio
    import threading

    from oomnitza_connector import logsetup, redact

    logsetup.install()
    run, fallback = redact.Redactor(), redact.Redactor()
    run.add("run-only-secret")
    fallback.add("fallback-secret")
    redact.use_for_logging(fallback)
    log = logging.getLogger("oomnitza_connector.test")

    async def scenario() -> list[str]:
        seen = [redact.scrub("run-only-secret")]
        seen.append(await asyncio.to_thread(redact.scrub, "run-only-secret"))
        seen.append(await asyncio.create_task(asyncio.to_thread(redact.scrub, "run-only-secret")))
        log.warning("in the run: %s", "run-only-secret")
        return seen

    try:
        with redact.using(run):
            assert asyncio.run(scenario()) == [redact.MASK] * 3
        bare: list[str] = []
        thread = threading.Thread(target=lambda: bare.append(redact.scrub("fallback-secret run-only-secret")))
        thread.start()
        thread.join()
        assert bare == [f"{redact.MASK} run-only-secret"]
        assert redact.current() is fallback
    finally:
        redact.clear()
    assert "in the run: ********" in caplog.text and "run-only-secret" not in caplog.text
