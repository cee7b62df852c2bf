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
from .app import Pending, WebhookApp, Worker

log = logging.getLogger(__name__)


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
    parser.add_argument("--debug", action="store_true")
    return parser


def build(
    config: Any, *, testmode: bool = False, save_data: bool = False, coalesce: float = 2.0, out: TextIO | None = None
) -> tuple[WebhookApp, Worker]:
    from ..config import ConfigError
    from ..oomnitza.sinks import make_sink
    from ..sync import Options

    sections = {
        name: sc
        for name, sc in config.sections.items()
        if sc.source_cls is not None and hasattr(sc.source_cls, "fetch_one")
    }
    if not sections:
        raise ConfigError(f"{config.path}: no enabled section can receive webhooks (enable a [casper] section)")
    pending = Pending(window=coalesce)
    app = WebhookApp(sections, pending)
    options = Options(workers=1, testmode=testmode, save_data=Path("saved_data") if save_data else None)
    worker = Worker(config, pending, options, lambda: make_sink(config.oomnitza, testmode=testmode, workers=1, out=out))
    return app, worker


def main(argv: list[str] | None = None, *, program_dir: Path | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..cli import _setup_logging
    from ..config import load_config

    try:
        _setup_logging(args, program_dir)
        config = load_config(args.ini or ((program_dir or Path.cwd()) / "config.ini"))
        if args.show_mappings:
            from ..cli import _show_mappings

            args.workers = 1
            return asyncio.run(_show_mappings(config, list(config.sections), args, sys.stdout))
        app, worker = build(config, testmode=args.testmode, save_data=args.save_data, coalesce=args.coalesce_seconds)
        if not args.testmode:
            asyncio.run(_check_oomnitza(config))
    except ConnectorError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 1
    import waitress

    server = waitress.create_server(
        app, host=args.host, port=args.port, threads=args.threads, max_request_body_size=1024 * 1024
    )
    worker.start()

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    log.info(
        "--CONNECTOR SERVER STARTED-- listening on http://%s:%s/<section>; sections: %s",
        args.host,
        server.effective_port,
        ", ".join(app.sections),
    )  # type: ignore[union-attr]
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("stopping: syncing what is queued")
    finally:
        server.close()
        worker.stop()
    return 0


async def _check_oomnitza(config: Any) -> None:
    from ..oomnitza.sinks import make_sink

    sink = make_sink(config.oomnitza, testmode=False, workers=1)
    try:
        await sink.login()
    finally:
        await sink.aclose()
