"""Logging from a dict-config file (the seed's ``logging.json``), with secrets scrubbed everywhere.

Secrets are scrubbed where log records are made (a LogRecord factory), so every logger and every
handler only ever sees scrubbed text: ours, third-party ones (httpx, httpcore, ldap3, zeep,
waitress, asyncio), and handlers that a custom ``--logging-config`` attaches to any logger, even
handlers added later. Every handler configured at set-up also gets a scrubbing filter and a
scrubbing formatter, for formatters that render a traceback themselves. Uncaught exceptions, in
the main thread and in threads, are printed scrubbed too.

Log files are created readable by their owner only (0600), rotated ones included: even with
secrets masked they hold names, e-mail addresses and what vendors answered. A file that already
exists keeps its permissions.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
import threading
import traceback
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import redact
from .errors import ConfigError
from .redact import RedactingFilter, scrub

if TYPE_CHECKING:
    import argparse

_QUIET_BY_DEFAULT = ("httpx", "httpcore")  # they log every request at INFO; ours are enough
_traceback_formatter = logging.Formatter()


class _ScrubbingFormatter(logging.Formatter):
    """Wraps a handler's formatter so what it adds (a traceback it formats itself) is scrubbed."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return scrub(self.inner.format(record))


def _scrub_record(record: logging.LogRecord) -> None:
    """Render the message now and keep only its scrubbed text (the arguments are dropped)."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep its pieces; logging reports the mistake
        message = f"{record.msg!r} % {record.args!r}"
    record.msg, record.args = scrub(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = scrub(_traceback_formatter.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)


def _install_record_factory() -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "scrubs_secrets", False):
        return

    def scrubbing_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if redact.has_secrets():
            _scrub_record(record)
        return record

    scrubbing_factory.scrubs_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(scrubbing_factory)


def _print_scrubbed(kind: type[BaseException], exc: BaseException | None, tb: TracebackType | None, head: str) -> None:
    text = head + "".join(traceback.format_exception(kind, exc, tb))
    try:
        sys.stderr.write(scrub(text))
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to print to
        pass


def _main_hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    _print_scrubbed(kind, exc, tb, "")


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    _print_scrubbed(args.exc_type, args.exc_value, args.exc_traceback, f"Exception in thread {name}:\n")


def install() -> None:
    """Scrub every log record and every uncaught traceback from now on (idempotent)."""
    _install_record_factory()
    sys.excepthook = _main_hook
    threading.excepthook = _thread_hook


# -- log files ----------------------------------------------------------------------------------------


def _create_private(path: str) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (the handler then opens it)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:  # exists already, or cannot be made: the handler says so when it opens it
        pass


def _keep_private(handler: logging.FileHandler) -> None:
    """Files the handler opens later (after a rotation, or with delay = true) are created 0600."""
    if getattr(handler, "_opens_private", False):
        return
    original = handler._open

    def private_open() -> Any:
        _create_private(handler.baseFilename)
        return original()

    handler._open = private_open  # type: ignore[method-assign]
    handler._opens_private = True  # type: ignore[attr-defined]


def _resolve_files(config: dict[str, Any], base: Path) -> None:
    # Relative log file names are resolved against the program directory, as the seed does.
    for handler in config.get("handlers", {}).values():
        name = handler.get("filename")
        if name and not Path(name).is_absolute():
            handler["filename"] = str(base / name)


def _precreate_files(config: dict[str, Any]) -> None:
    # Handlers without delay open their file while being configured: create it private first.
    for handler in config.get("handlers", {}).values():
        name = handler.get("filename")
        if isinstance(name, str) and name:
            _create_private(name)


# -- set-up -------------------------------------------------------------------------------------------


def _all_handlers() -> list[logging.Handler]:
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    seen: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in logger.handlers:
            seen.setdefault(id(handler), handler)
    return list(seen.values())


def setup_logging(
    path: Path | None,
    *,
    program_dir: Path | None,
    explicit: bool,
    debug: bool = False,
    redactor: redact.Redactor | None = None,
) -> None:
    """Configure logging from ``path`` (the seed's logging.json); ``redactor`` scrubs what is logged
    where no run's redactor is current (see redact.py)."""
    if redactor is not None:
        redact.use_for_logging(redactor)
    install()
    if path is not None and path.exists():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot use the logging config {path.resolve()}: {exc}") from None
        if not isinstance(config, dict):
            raise ConfigError(f"the logging config {path.resolve()} is not a JSON object")
        _resolve_files(config, path.parent if program_dir is None else program_dir)
    elif explicit and path is not None:
        raise ConfigError(f"cannot open the logging config {path.resolve()}: no such file")
    else:
        config = json.loads(resources.files("oomnitza_connector").joinpath("logging.json").read_text())
    _precreate_files(config)
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
    for handler in _all_handlers():
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
        if not isinstance(handler.formatter, _ScrubbingFormatter):
            handler.setFormatter(_ScrubbingFormatter(handler.formatter or logging.Formatter()))
        if isinstance(handler, logging.FileHandler):
            _keep_private(handler)
    configured = config.get("loggers") or {}
    for name in _QUIET_BY_DEFAULT:
        if name not in configured:  # a logging config that names them decides for itself
            logging.getLogger(name).setLevel(logging.WARNING)


def setup_from_args(args: argparse.Namespace, program_dir: Path | None, redactor: redact.Redactor) -> None:
    """The CLI's ``--logging-config`` (default: ``logging.json`` beside the program) and ``--debug``."""
    explicit = args.logging_config is not None
    path = args.logging_config or ((program_dir / "logging.json") if program_dir else None)
    setup_logging(path, program_dir=program_dir, explicit=explicit, debug=args.debug, redactor=redactor)
