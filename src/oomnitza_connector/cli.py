"""Command line: argument parsing, mode dispatch and exit codes. No business logic lives here.

Heavy modules are imported inside the modes, so ``version`` and ``--help`` answer instantly.
"""

from __future__ import annotations

import argparse
import sys
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__

if TYPE_CHECKING:
    from .config import Config
    from .sync import SectionResult

MODES = ("managed", "upload", "generate-ini", "version", "local")


class Exit(IntEnum):
    OK = 0
    ERROR = 1  # configuration problem, or a section could not run
    USAGE = 2
    RECORDS_FAILED = 3  # the run completed, but some records failed to convert or send
    CANCELED = 4  # a sync was canceled in Oomnitza's web UI
    INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2, as shells report it
    TERMINATED = 143  # SIGTERM: 128 + 15


def signal_exit(signum: int | None) -> Exit:
    import signal

    return Exit.TERMINATED if signum == signal.SIGTERM else Exit.INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector.py",
        description="Sync records from your IT systems into Oomnitza.",
        epilog="Examples:  connector.py upload csv_assets --testmode   |   connector.py generate-ini --ini new.ini"
        "   |   connector.py local export --format csv.   "
        "Also: connector.py strongbox --help (secrets in the OS keyring), "
        "connector.py server --help (the webhook receiver).",
    )
    parser.add_argument(
        "mode",
        nargs="?",
        default="managed",
        choices=MODES,
        metavar="{" + ",".join(MODES) + "}",
        help="action to perform (default: managed)",
    )
    parser.add_argument("connectors", nargs="*", help="upload: the sections to run, in order; local: summary or export")
    parser.add_argument(
        "--record-count", type=_non_negative, default=0, help="stop after this many records per section (0 = all)"
    )
    parser.add_argument(
        "--workers",
        type=_non_negative,
        default=2,
        help="batches in flight to Oomnitza per section (0 = one at a time); default 2",
    )
    parser.add_argument("--batch-size", type=_positive, default=100, help="records per upload request; default 100")
    parser.add_argument(
        "--ignore-cloud-maintenance",
        action="store_true",
        help="managed mode: keep polling while the cloud is in maintenance",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=10.0, help="managed mode: seconds between polls of Oomnitza; default 10"
    )
    parser.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="managed mode: run what is due, then exit when nothing is due or running",
    )
    parser.add_argument(
        "--show-mappings", action="store_true", help="print the merged mapping of each section and exit"
    )
    parser.add_argument(
        "--testmode",
        action="store_true",
        help="print the payloads instead of sending them; nothing is written to Oomnitza",
    )
    parser.add_argument(
        "--save-data", action="store_true", help="write the source records and the payloads to ./saved_data/"
    )
    parser.add_argument("--ini", type=Path, default=None, help="config file (default: config.ini)")
    parser.add_argument(
        "--logging-config", type=Path, default=None, help="logging dict-config JSON (default: logging.json)"
    )
    parser.add_argument("--debug", action="store_true", help="verbose logs, and tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"Connector version: {__version__}")
    local = parser.add_argument_group("local store (mode 'local')")
    local.add_argument("--data-type", choices=("assets", "users"), default=None, help="only this record type")
    local.add_argument("--format", choices=("csv", "json"), default="csv", help="export format; default csv")
    local.add_argument("--output", type=Path, default=None, help="export to this file instead of stdout")
    return parser


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def main(
    argv: list[str] | None = None,
    *,
    program_dir: Path | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the CLI; returns the exit code. ``program_dir`` is where config.ini and logging.json live
    by default (``connector.py``'s folder); None means the working directory."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["server"]:
        from .server.cli import main as server_main

        return server_main(argv[1:], program_dir=program_dir)
    if argv[:1] == ["strongbox"]:
        from .secrets.strongbox import main as strongbox_main

        return strongbox_main(argv[1:], stdout=out, stderr=err)
    args = build_parser().parse_args(argv)
    if args.mode == "version":
        print(f"Connector version: {__version__}", file=out)
        return Exit.OK

    from . import redact
    from .errors import ConnectorError

    # The secrets of this invocation: its config's, and the logging fallback (see redact.py).
    redactor = redact.Redactor()
    with redact.using(redactor):
        try:
            _setup_logging(args, program_dir, redactor)
            ini = args.ini or ((program_dir or Path.cwd()) / "config.ini")
            if args.mode == "generate-ini":
                return _generate_ini(ini, err)
            if args.mode == "managed":
                return _managed(args, ini, out, err)
            if args.mode == "local":
                return _local(args, ini, out, err)
            return _upload(args, ini, out, err)
        except ConnectorError as exc:
            if args.debug:
                import traceback

                print(redactor.scrub(traceback.format_exc()), end="", file=err)
            for line in str(exc).splitlines() or [type(exc).__name__]:
                print(f"error: {redactor.scrub(line)}", file=err)
            return Exit.ERROR
        except KeyboardInterrupt:
            print("Interrupted. Exiting.", file=err)
            return Exit.INTERRUPTED


def console_main() -> None:
    sys.exit(main())


def _setup_logging(args: argparse.Namespace, program_dir: Path | None, redactor: Any) -> None:
    from .logsetup import setup_from_args

    setup_from_args(args, program_dir, redactor)


def _generate_ini(path: Path, err: TextIO) -> int:
    from .config import generate_ini

    backup = generate_ini(path)
    if backup:
        print(f"{path} has been generated (the previous file is kept as {backup}).", file=err)
    else:
        print(f"{path} has been generated.", file=err)
    return Exit.OK


def _managed(args: argparse.Namespace, ini: Path, out: TextIO, err: TextIO) -> int:
    """Poll Oomnitza and run the integrations it hands out. With --exit-when-idle the summary and
    the exit code are upload's: 1 when an integration failed, 3 when records failed, 4 canceled."""
    import asyncio

    from .config import load_oomnitza
    from .managed.poller import Poller

    config = load_oomnitza(ini)
    poller = Poller(
        config,
        ini,
        workers=args.workers,
        batch_size=args.batch_size,
        interval=args.poll_interval,
        ignore_maintenance=args.ignore_cloud_maintenance,
        exit_when_idle=args.exit_when_idle,
        testmode=args.testmode,
        save_data=Path("saved_data") if args.save_data else None,
        out=out,
        err=err,
    )
    asyncio.run(poller.run())
    if poller.stop.requested:
        return signal_exit(poller.stop.signum)
    if not args.exit_when_idle:
        return Exit.OK
    if poller.results:
        _print_summary(poller.results, err, testmode=args.testmode)
    if poller.other_failures:  # e.g. an export file could not be written: the disk is full
        return Exit.ERROR
    return upload_exit(poller.results, poller.stop)


# -- upload -------------------------------------------------------------------------------------------


def _upload(args: argparse.Namespace, ini: Path, out: TextIO, err: TextIO) -> int:
    import asyncio

    from .config import load_config
    from .sync import RunStop

    config = load_config(ini)
    if not args.connectors:
        enabled = ", ".join(config.sections) or "none"
        print(f"No connectors specified. Exiting. (enabled sections in {ini}: {enabled})", file=err)
        return Exit.OK
    sections = [config.section(name) for name in args.connectors]  # unknown/disabled → one clear line
    if args.show_mappings:
        return asyncio.run(_show_mappings(config, [s.name for s in sections], args, out))
    stop = RunStop()
    results = asyncio.run(_run_upload(config, [s.name for s in sections], args, out, err, stop))
    _print_summary(results, err, testmode=args.testmode, stopped=stop.reason)
    return upload_exit(results, stop)


def upload_exit(results: list[SectionResult], stop: Any) -> Exit:
    """A signal wins (130/143), then errors (1), a canceled sync (4), failed records (3)."""
    if stop.requested:
        return signal_exit(stop.signum)
    if any(r.error for r in results):
        return Exit.ERROR
    if any(r.canceled for r in results):
        return Exit.CANCELED
    if any(not r.ok for r in results):
        return Exit.RECORDS_FAILED
    return Exit.OK


def _options(args: argparse.Namespace, stop: Any = None) -> Any:
    from .sync import Options

    return Options(
        workers=args.workers,
        batch_size=args.batch_size,
        record_count=args.record_count,
        testmode=args.testmode,
        save_data=Path("saved_data") if args.save_data else None,
        stop=stop,
    )


async def _run_upload(
    config: Config, names: list[str], args: argparse.Namespace, out: TextIO, err: TextIO, stop: Any
) -> list[SectionResult]:
    import logging

    from .oomnitza.sinks import make_sink
    from .sync import SectionResult, run_section, stop_on_signals, stop_reason

    log = logging.getLogger("oomnitza_connector")

    def request_stop(signum: int) -> None:
        stop.request(stop_reason(signum), signum)

    results: list[SectionResult] = []
    with stop_on_signals(request_stop, err):
        sink = make_sink(config.oomnitza, testmode=args.testmode, workers=args.workers, out=out)
        try:
            await sink.login()
            for name in names:
                if stop.requested or any(r.sink_down for r in results):
                    results.append(SectionResult(section=name, not_run=True))
                    continue
                log.info("[%s] sync started", name)
                result = await run_section(config.sections[name], config, sink, _options(args, stop))
                if result.error:
                    tag = f"[{name}]"
                    log.error("%s", result.error if result.error.startswith(tag) else f"{tag} {result.error}")
                results.append(result)
        finally:
            await sink.aclose()
    for message in config.converters.cleanup_messages():
        log.error("%s", message)
    if any(r.sink_down for r in results) and any(r.not_run for r in results):
        skipped = ", ".join(r.section for r in results if r.not_run)
        log.error("Oomnitza is not taking records: the remaining sections were not run (%s)", skipped)
    return results


async def _show_mappings(config: Config, names: list[str], args: argparse.Namespace, out: TextIO) -> int:
    from .oomnitza.sinks import make_sink
    from .sync import show_mappings

    sink = make_sink(config.oomnitza, testmode=args.testmode, workers=args.workers, out=out)
    try:
        await sink.login()
        await show_mappings(config, names, sink, out)
    finally:
        await sink.aclose()
    return Exit.OK


def _print_summary(results: list[SectionResult], err: TextIO, *, testmode: bool, stopped: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from .sync import BUCKET_TITLES, BUCKETS

    title = "Sync summary" + (" (test mode: nothing was sent)" if testmode else "")
    if stopped:
        title += f" (the run was {stopped}: it stopped early)"
    table = Table(title=title, title_justify="left")
    # never shorten a section name ("google_mobile_devices" would become "google_mobile_…")
    table.add_column("section", no_wrap=True, min_width=max((len(r.section) for r in results), default=7))
    table.add_column("type")
    for key in ("pulled", *BUCKETS):
        table.add_column(BUCKET_TITLES[key], justify="right")
    table.add_column("time", justify="right")
    table.add_column("result")
    for r in results:
        status = r.status
        table.add_row(
            r.section, r.data_type, str(r.pulled), *(str(r.counts[b]) for b in BUCKETS), f"{r.seconds:.1f}s", status
        )
    Console(file=err, width=max(132, Console(file=err).width)).print(table)


# -- local store --------------------------------------------------------------------------------------


def _local(args: argparse.Namespace, ini: Path, out: TextIO, err: TextIO) -> int:
    from .errors import ConfigError
    from .ini import read_ini
    from .oomnitza.local_store import LocalStore, export, store_path

    action = args.connectors[0] if args.connectors else "summary"
    if action not in ("summary", "export") or len(args.connectors) > 1:
        print("usage: connector.py local {summary,export} [--data-type T] [--format csv|json] [--output F]", file=err)
        return Exit.USAGE
    doc = read_ini(ini)
    url = doc["oomnitza"].values.get("url", "") if "oomnitza" in doc else ""
    if not url.startswith("sqlite:"):
        raise ConfigError(f"{ini}: [oomnitza] url is not a local store (write url = sqlite:///./oomnitza-local.db)")
    path = store_path(url)
    if not path.exists():
        raise ConfigError(f"the local store {path} does not exist yet: run an upload first")
    store = LocalStore(path)
    try:
        if action == "export":
            text = export(store, data_type=args.data_type, fmt=args.format)
            if args.output:
                try:
                    args.output.write_text(text, encoding="utf-8")
                except OSError as exc:
                    from .diskio import disk_error

                    raise disk_error(exc, args.output) from None
                print(f"wrote {args.output}", file=err)
            else:
                out.write(text)
            return Exit.OK
        _print_store_summary(store, out)
    finally:
        store.close()
    return Exit.OK


def _print_store_summary(store: Any, out: TextIO) -> None:
    import datetime as dt

    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, width=120)
    counts = store.counts()
    table = Table(title=f"Local store {store.path}", title_justify="left")
    table.add_column("data type")
    table.add_column("records", justify="right")
    for data_type, n in sorted(counts.items()):
        table.add_row(data_type, str(n))
    if not counts:
        table.add_row("(empty)", "0")
    console.print(table)
    runs = Table(title="Recent sync sessions", title_justify="left")
    for col in ("started", "section", "type", "received", "inserted", "updated", "skipped", "failed", "finalized"):
        runs.add_column(
            col, justify="right" if col in ("received", "inserted", "updated", "skipped", "failed") else "left"
        )
    for p in store.portions(10):
        started = dt.datetime.fromtimestamp(p["started_at"]).strftime("%Y-%m-%d %H:%M:%S")
        runs.add_row(
            started,
            p["section"],
            p["data_type"],
            str(p["received"]),
            str(p["inserted"]),
            str(p["updated"]),
            str(p["skipped"]),
            str(p["failed"]),
            "yes" if p["finalized_at"] else "no",
        )
    console.print(runs)
