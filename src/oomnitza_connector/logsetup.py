"""Logging from a dict-config file (the seed's ``logging.json``), with secrets scrubbed everywhere.

Secrets are scrubbed where log records are made (a LogRecord factory), so every logger and every
handler only ever sees scrubbed text: ours, third-party ones (httpx, httpcore, ldap3, zeep,
waitress, asyncio), and handlers that a custom ``--logging-config`` attaches to any logger, even
handlers added later. Every handler configured at set-up also gets a scrubbing filter and a
scrubbing formatter, for formatters that render a traceback themselves. Uncaught exceptions, in
the main thread and in threads, are printed scrubbed too.

Log files are created readable by their owner only (0600), rotated ones included: even with
secrets masked they hold names, e-mail addresses and what vendors answered. A file that already
exists keeps its permissions. Relative file names resolve against the log directory
(``--log-dir``, ``OOMNITZA_LOG_DIR``, else see ``statedir``); a file that cannot be written is named
once, not at every record.

``--log-format json`` gives every handler a ``JsonFormatter``: one object per line for log shippers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import logging.config
import os
import sys
import threading
import traceback
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from . import redact
from .errors import ConfigError
from .redact import RedactingFilter, scrub

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
    # Relative log file names are resolved against the log directory (statedir.log_dir).
    for handler in config.get("handlers", {}).values():
        name = handler.get("filename")
        if isinstance(name, str) and name and not Path(name).is_absolute():
            handler["filename"] = str(base / name)


def _precreate_files(config: dict[str, Any]) -> dict[str, str]:
    """Create every log file (and its folder) private now: handlers without delay open theirs while
    being configured, and a file that cannot be written is better named once than at every record.
    Returns the handlers whose file cannot be written, with why."""
    failed: dict[str, str] = {}
    for handler_name, handler in config.get("handlers", {}).items():
        name = handler.get("filename")
        if not isinstance(name, str) or not name:
            continue
        try:
            Path(name).parent.mkdir(parents=True, exist_ok=True)
            _create_private(name)
            with open(name, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            failed[handler_name] = f"{name}: {exc.strerror or exc}"
    return failed


def _drop_handlers(config: dict[str, Any], names: Iterable[str]) -> None:
    for name in names:
        config.get("handlers", {}).pop(name, None)
        for logger in [config.get("root") or {}, *(config.get("loggers") or {}).values()]:
            if isinstance(logger, dict) and name in (logger.get("handlers") or []):
                logger["handlers"] = [h for h in logger["handlers"] if h != name]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and when present
    the exception and a run summary (``extra={"summary": {...}}``). Every text is scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        created = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = scrub(record.exc_text)
        if record.stack_info:
            entry["stack"] = scrub(record.stack_info)
        summary = getattr(record, "summary", None)
        if isinstance(summary, dict):
            entry["summary"] = redact.scrub_obj(summary)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _NotOnConsole(logging.Filter):
    """Console handlers skip records logged with ``extra={"console": False}`` (the run summary,
    which the console shows as a table)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True) is not False


def console_handlers() -> list[logging.StreamHandler[Any]]:
    """The configured handlers that write to a stream, not a file."""
    return [
        h for h in _all_handlers() if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


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
    log_dir: Path | None = None,
    log_dir_chosen: bool = False,
    log_format: str = "text",
    redactor: redact.Redactor | None = None,
) -> None:
    """Configure logging from ``path`` (else the package's logging.json). Relative log file names
    resolve against ``log_dir`` (else, as before: beside connector.py, or beside an explicit
    logging config). A log file that cannot be written is a one-line error when the user chose the
    folder (``log_dir_chosen``), otherwise a warning, and logging goes on without that file.
    ``redactor`` scrubs what is logged where no run's redactor is current (see redact.py)."""
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
        base = log_dir or (path.parent if program_dir is None else program_dir)
    elif explicit and path is not None:
        raise ConfigError(f"cannot open the logging config {path.resolve()}: no such file")
    else:
        config = json.loads(resources.files("oomnitza_connector").joinpath("logging.json").read_text())
        base = log_dir or program_dir or Path.cwd()
    _resolve_files(config, base)
    unwritable = _precreate_files(config)
    if unwritable and log_dir_chosen:
        where = "; ".join(unwritable.values())
        raise ConfigError(
            f"cannot write the log file {where} (choose a writable folder with --log-dir or OOMNITZA_LOG_DIR)"
        )
    _drop_handlers(config, unwritable)
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
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
        if not isinstance(handler.formatter, _ScrubbingFormatter):
            handler.setFormatter(_ScrubbingFormatter(handler.formatter or logging.Formatter()))
        if isinstance(handler, logging.FileHandler):
            _keep_private(handler)
    for handler in console_handlers():
        if not any(isinstance(f, _NotOnConsole) for f in handler.filters):
            handler.addFilter(_NotOnConsole())
    configured = config.get("loggers") or {}
    for name in _QUIET_BY_DEFAULT:
        if name not in configured:  # a logging config that names them decides for itself
            logging.getLogger(name).setLevel(logging.WARNING)
    for reason in unwritable.values():
        logging.getLogger("oomnitza_connector").warning(
            "cannot write the log file %s: logging goes on without it (choose a writable folder with "
            "--log-dir or OOMNITZA_LOG_DIR)",
            reason,
        )


# -- the command line's logging options (shared by connector.py and server.py) ----------------------

LOG_FORMATS = ("text", "json")


def add_log_options(parser: argparse.ArgumentParser) -> None:
    """``--log-dir`` and ``--log-format`` (the webhook server takes them too)."""
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="folder for the log files named in the logging config "
        "(default: OOMNITZA_LOG_DIR, else beside connector.py, else <state dir>/logs)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help="text (default) or json: one JSON object per line, for log shippers (or OOMNITZA_LOG_FORMAT)",
    )


def print_error_lines(lines: list[str], err: TextIO, *, logged: bool, as_json: bool) -> None:
    """A user-caused error: ``error: ...`` lines on the console, and into the log files too
    (errors.log holds every error of a run). With JSON logs the console gets them as JSON lines
    (only JSON on the log stream), from the log handlers. ``logged``: logging is set up."""
    import logging

    if not as_json:
        for line in lines:
            print(f"error: {line}", file=err)
    if logged:
        extra = {} if as_json else {"console": False}
        for line in lines:
            logging.getLogger("oomnitza_connector").error("%s", line, extra=extra)


def log_format(args: argparse.Namespace) -> str:
    import os

    from .errors import ConfigError
    from .statedir import LOG_FORMAT_ENV

    chosen = getattr(args, "log_format", None) or os.environ.get(LOG_FORMAT_ENV, "").strip().lower() or "text"
    if chosen not in LOG_FORMATS:
        raise ConfigError(f"{LOG_FORMAT_ENV} = {chosen!r} is not one of {', '.join(LOG_FORMATS)}")
    return chosen


def setup_from_args(args: argparse.Namespace, program_dir: Path | None, redactor: Any = None) -> None:
    """Logging as the command line asks: --logging-config, --log-dir, --log-format, --debug."""
    from .statedir import log_dir, peek_state_dir

    explicit = args.logging_config is not None
    path = args.logging_config or ((program_dir / "logging.json") if program_dir else None)
    ini = args.ini or ((program_dir or Path.cwd()) / "config.ini")
    state = None if program_dir is not None or explicit else peek_state_dir(ini)
    folder, chosen = log_dir(
        flag=getattr(args, "log_dir", None), program_dir=program_dir, logging_config=args.logging_config, state=state
    )
    setup_logging(
        path,
        program_dir=program_dir,
        explicit=explicit,
        debug=args.debug,
        log_dir=folder,
        log_dir_chosen=chosen,
        log_format=log_format(args),
        redactor=redactor,
    )
