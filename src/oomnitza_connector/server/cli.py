"""``server.py`` / ``oomnitza-connector server``: run the webhook receiver."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from ..errors import ConnectorError
from .app import WebhookApp, Worker
from .http import Limits, make_server
from .metrics import WebhookMetrics
from .queue import EventQueue

log = logging.getLogger(__name__)

QUEUE_FILE = "webhook-queue.db"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="server.py", description="Receive Jamf Pro webhooks and sync each device.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--show-mappings", action="store_true", help="print the mappings and exit")
    parser.add_argument("--testmode", action="store_true", help="print payloads instead of sending them")
    parser.add_argument("--save-data", action="store_true", help="save fetched records and payloads")
    parser.add_argument("--ini", type=Path, default=None, help="config file (default config.ini)")
    parser.add_argument("--logging-config", type=Path, default=None, help="logging dict-config JSON")
    parser.add_argument(
        "--coalesce-seconds",
        type=float,
        default=2.0,
        help="events for the same device within this time are synced once (default 2)",
    )
    parser.add_argument("--threads", type=int, default=4, help="HTTP worker threads (default 4)")
    parser.add_argument(
        "--queue-file",
        type=Path,
        default=None,
        help=f"the durable queue of accepted events (default {QUEUE_FILE} in the state directory)",
    )
    limits = Limits()
    parser.add_argument(
        "--max-connections",
        type=_positive_int,
        default=limits.max_connections,
        help=f"open connections at once (default {limits.max_connections})",
    )
    parser.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=limits.header_timeout,
        help=f"seconds a client may take to send a request's headers (default {limits.header_timeout:g})",
    )
    parser.add_argument(
        "--body-timeout",
        type=_positive_float,
        default=limits.body_timeout,
        help=f"seconds a client may take to send a request's body (default {limits.body_timeout:g})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=limits.idle_timeout,
        help=f"seconds a kept-alive connection may wait between requests (default {limits.idle_timeout:g})",
    )
    parser.add_argument("--debug", action="store_true", help="verbose logs, and tracebacks for errors")
    from ..logsetup import add_log_options

    add_log_options(parser)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def build(
    config: Any,
    *,
    testmode: bool = False,
    save_data: bool = False,
    coalesce: float = 2.0,
    queue_file: Path | None = None,
    out: TextIO | None = None,
) -> tuple[WebhookMetrics, Worker]:
    """The app (counted for ``/metrics``) and its worker. Events are queued in ``queue_file``
    (default: the state directory); in test mode in memory, so a test run never takes events a
    real run accepted."""
    from ..config import ConfigError
    from ..http import RetryPolicy
    from ..oomnitza.sinks import make_sink
    from ..sync import Options

    sections = {
        name: sc
        for name, sc in config.sections.items()
        if sc.source_cls is not None and hasattr(sc.source_cls, "fetch_one")
    }
    if not sections:
        raise ConfigError(f"{config.path}: no enabled section can receive webhooks (enable a [casper] section)")
    path = ":memory:" if testmode else (queue_file or default_queue(config))
    try:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        queue = EventQueue(path, window=coalesce)
    except Exception as exc:  # sqlite3.Error, OSError: the file cannot be made or read
        raise ConfigError(f"cannot use the webhook queue {path}: {exc}") from None
    app = WebhookApp(sections, queue, config.redactor)
    options = Options(workers=1, testmode=testmode, save_data=Path("saved_data") if save_data else None)
    # Short retries: a device that cannot be sent waits in the queue, not in a retry loop.
    policy = RetryPolicy(attempts=3, connect_attempts=2, backoff=0.5, max_backoff=5.0, max_retry_after=10.0)

    def sink() -> Any:
        return make_sink(config.oomnitza, testmode=testmode, workers=1, policy=policy, out=out)

    worker = Worker(config, queue, options, sink, list(sections))
    counted = WebhookMetrics(app, queue, worker)
    app.metrics = counted.render
    return counted, worker


def default_queue(config: Any) -> Path:
    """``webhook-queue.db`` in the state directory. Earlier versions kept it beside the config file:
    such a file, while the state directory has none, is used still (it may hold accepted events)."""
    from ..statedir import state_dir

    new = state_dir(config.oomnitza.settings) / QUEUE_FILE
    old = Path(config.path).resolve().parent / QUEUE_FILE
    if old != new.resolve() and old.exists() and not new.exists():
        log.warning(
            "using the webhook queue %s of an earlier version; the default is now %s: move the file "
            "there while the server is stopped",
            old,
            new,
        )
        return old
    return new


def main(argv: list[str] | None = None, *, program_dir: Path | None = None) -> int:
    from .. import redact

    args = build_parser().parse_args(argv)
    redactor = redact.Redactor()  # this server's secrets (its config's); see redact.py
    with redact.using(redactor):
        return _main(args, program_dir, redactor)


def _main(args: argparse.Namespace, program_dir: Path | None, redactor: Any) -> int:
    from ..config import load_config
    from ..logsetup import log_format, print_error_lines, setup_from_args

    scrub = redactor.scrub
    logging_ready = False
    try:
        setup_from_args(args, program_dir, redactor)
        logging_ready = True
        config = load_config(args.ini or ((program_dir or Path.cwd()) / "config.ini"), redactor=redactor)
        if args.show_mappings:
            return asyncio.run(_show_mappings(config, testmode=args.testmode))
        app, worker = build(
            config,
            testmode=args.testmode,
            save_data=args.save_data,
            coalesce=args.coalesce_seconds,
            queue_file=args.queue_file,
        )
        if not args.testmode:
            asyncio.run(_check_oomnitza(config))
        limits = Limits(
            max_connections=args.max_connections,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            idle_timeout=args.idle_timeout,
        )
        server = make_server(app, host=args.host, port=args.port, threads=args.threads, limits=limits)
    except ConnectorError as exc:
        if args.debug:
            import traceback

            print(scrub(traceback.format_exc()), end="", file=sys.stderr)
        lines = [scrub(line) for line in str(exc).splitlines() or [type(exc).__name__]]
        as_json = logging_ready and log_format(args) == "json"
        print_error_lines(lines, sys.stderr, logged=logging_ready, as_json=as_json)
        return 1
    except OSError as exc:  # the port is taken, or not ours to bind
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    _report_waiting(worker)
    worker.start()

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    log.info(
        "--CONNECTOR SERVER STARTED-- listening on %s; sections: %s",
        ", ".join(f"http://{host}:{port}/<section>" for host, port in _listening(server)),
        ", ".join(app.sections),
    )
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("stopping: syncing what is due; the rest stays queued")
    finally:
        server.close()
        worker.stop()
        worker.queue.close()
    return 0


async def _show_mappings(config: Any, *, testmode: bool) -> int:
    from ..oomnitza.sinks import make_sink
    from ..sync import show_mappings

    sink = make_sink(config.oomnitza, testmode=testmode, workers=1)
    try:
        await sink.login()
        await show_mappings(config, list(config.sections), sink, sys.stdout)
    finally:
        await sink.aclose()
    return 0


def _listening(server: Any) -> list[tuple[str, int]]:
    effective = getattr(server, "effective_listen", None)
    return list(effective) if effective else [(server.effective_host, server.effective_port)]


def _report_waiting(worker: Worker) -> None:
    waiting = worker.queue.waiting()
    mine = sum(n for name, n in waiting.items() if name in worker.sections)
    if mine:
        log.info("%d device(s) from earlier events are queued; syncing them now", mine)
    for name, n in waiting.items():
        if name not in worker.sections:
            log.warning("%d queued device(s) of [%s] are kept: that section is not enabled for webhooks now", n, name)


async def _check_oomnitza(config: Any) -> None:
    """Refuse to start with credentials Oomnitza rejects; start anyway when it cannot be reached
    (accepted events wait in the durable queue until it is back)."""
    from ..errors import AuthError
    from ..http import RetryPolicy
    from ..oomnitza.sinks import make_sink

    policy = RetryPolicy(attempts=2, connect_attempts=2, backoff=0.5, max_backoff=2.0, max_retry_after=5.0)
    sink = make_sink(config.oomnitza, testmode=False, workers=1, policy=policy)
    try:
        await sink.login()
    except AuthError:
        raise
    except ConnectorError as exc:
        log.warning("Oomnitza cannot be reached now (%s); events are queued and synced when it is back", exc)
    finally:
        await sink.aclose()
