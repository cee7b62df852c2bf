"""Logging from a dict-config file (the seed's ``logging.json``), with secrets scrubbed everywhere."""

from __future__ import annotations

import json
import logging
import logging.config
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .redact import RedactingFilter, scrub


class _ScrubbingFormatter(logging.Formatter):
    """Wraps a handler's formatter so tracebacks are scrubbed too (filters see only the message)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return scrub(self.inner.format(record))


def _resolve_files(config: dict[str, Any], base: Path) -> None:
    # Relative log file names are resolved against the program directory, as the seed does.
    for handler in config.get("handlers", {}).values():
        name = handler.get("filename")
        if name and not Path(name).is_absolute():
            handler["filename"] = str(base / name)


def setup_logging(path: Path | None, *, program_dir: Path | None, explicit: bool, debug: bool = False) -> None:
    if path is not None and path.exists():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot use the logging config {path.resolve()}: {exc}") from None
        _resolve_files(config, path.parent if program_dir is None else program_dir)
    elif explicit and path is not None:
        raise ConfigError(f"cannot open the logging config {path.resolve()}: no such file")
    else:
        config = json.loads(resources.files("oomnitza_connector").joinpath("logging.json").read_text())
    try:
        logging.config.dictConfig(config)
    except (ValueError, TypeError, AttributeError, ImportError, OSError) as exc:
        raise ConfigError(f"the logging config {path} is not valid: {exc}") from None
    logging.captureWarnings(True)
    root = logging.getLogger()
    if debug:
        root.setLevel(logging.DEBUG)
        for handler in root.handlers:
            handler.setLevel(logging.DEBUG)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
        if not isinstance(handler.formatter, _ScrubbingFormatter):
            handler.setFormatter(_ScrubbingFormatter(handler.formatter or logging.Formatter()))
    # httpx logs every request at INFO; ours are enough.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
