"""Where the connector keeps what lives between runs (locks, the webhook queue, export state) and,
for the console script, its log files.

The state directory is, first found: the ``OOMNITZA_STATE_DIR`` environment variable, the
``[oomnitza] state_dir`` setting, the working directory (where export files were always kept; the
container's working directory is its ``/data`` volume). Relative paths are taken from the working
directory, ``~`` is expanded.

The log directory (for relative file names in ``logging.json``) is: ``--log-dir``, else
``OOMNITZA_LOG_DIR``, else beside ``connector.py`` for a checkout (as always), else the folder of
an explicit ``--logging-config`` (as before), else ``logs/`` in the state directory (the console
script).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

STATE_DIR_ENV = "OOMNITZA_STATE_DIR"
LOG_DIR_ENV = "OOMNITZA_LOG_DIR"
LOG_FORMAT_ENV = "OOMNITZA_LOG_FORMAT"
LOGS = "logs"  # the console script's log folder inside the state directory


def _absolute(text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def state_dir(settings: Mapping[str, str] | None = None) -> Path:
    """The state directory, given the resolved ``[oomnitza]`` settings (None: not loaded)."""
    from_env = os.environ.get(STATE_DIR_ENV, "").strip()
    if from_env:
        return _absolute(from_env)
    configured = str((settings or {}).get("state_dir") or "").strip()
    return _absolute(configured) if configured else Path.cwd()


def peek_state_dir(ini_path: Path) -> Path:
    """The state directory before the configuration is loaded (logging is set up first, so that
    configuration errors reach the log files too). A file that cannot be read is no error here:
    loading it later reports that in one line."""
    if os.environ.get(STATE_DIR_ENV, "").strip():
        return state_dir()
    from .errors import ConnectorError
    from .ini import read_ini
    from .secrets import from_environment

    settings: dict[str, str] = {}
    try:
        doc = read_ini(ini_path)
        if "oomnitza" in doc:
            settings.update(doc["oomnitza"].values)
    except (ConnectorError, OSError, ValueError):
        pass
    settings.update(from_environment("oomnitza", ["state_dir"]))  # OOMNITZA__OOMNITZA__STATE_DIR
    return state_dir(settings)


def log_dir(
    *, flag: Path | None, program_dir: Path | None, logging_config: Path | None, state: Path | None
) -> tuple[Path | None, bool]:
    """The folder relative log file names resolve against, and whether the user chose it.
    None: the logging config's own rule (the folder of an explicit ``--logging-config``)."""
    if flag is not None:
        return _absolute(str(flag)), True
    from_env = os.environ.get(LOG_DIR_ENV, "").strip()
    if from_env:
        return _absolute(from_env), True
    if program_dir is not None:
        return program_dir, False
    if logging_config is not None:
        return None, False
    return (state / LOGS if state is not None else None), False
