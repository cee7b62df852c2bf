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
from .logsetup import add_log_options, log_format, print_error_lines, setup_from_args

if TYPE_CHECKING:
    from .config import Config
    from .report import RunReport
    from .sync import SectionResult

MODES = ("managed", "upload", "plan", "generate-ini", "version", "local")


class Exit(IntEnum):
    OK = 0
    ERROR = 1  # configuration problem, or a section could not run
    USAGE = 2
    RECORDS_FAILED = 3  # the run completed, but some records failed to convert or send
    CANCELED = 4  # a sync was canceled in Oomnitza's web UI
    ALREADY_RUNNING = 75  # EX_TEMPFAIL: a section was not run, another run is syncing it
    INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2, as shells report it
    TERMINATED = 143  # SIGTERM: 128 + 15


def signal_exit(signum: int | None) -> Exit:
    import signal

    return Exit.TERMINATED if signum == signal.SIGTERM else Exit.INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector.py",
        description="Sync records from your IT systems into Oomnitza.",
        epilog="Examples:  connector.py upload csv_assets --testmode   |   connector.py plan csv_assets   |   "
        "connector.py generate-ini --ini new.ini"
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
    parser.add_argument(
        "connectors", nargs="*", help="upload, plan: the sections to run, in order; local: summary or export"
    )
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
    parser.add_argument(
        "--full",
        action="store_true",
        help="send every record, changed or not (change-aware sync otherwise sends only what changed)",
    )
    parser.add_argument("--ini", type=Path, default=None, help="config file (default: config.ini)")
    parser.add_argument(
        "--logging-config", type=Path, default=None, help="logging dict-config JSON (default: logging.json)"
    )
    parser.add_argument("--debug", action="store_true", help="verbose logs, and tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"Connector version: {__version__}")
    add_log_options(parser)
    report = parser.add_argument_group("run reports (mode 'upload')")
    report.add_argument(
        "--summary-json",
        metavar="PATH",
        default=None,
        help="write the run's results as JSON to PATH ('-' = standard output)",
    )
    report.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        default=None,
        help="update Prometheus textfile metrics in PATH (e.g. node_exporter's textfile directory)",
    )
    report.add_argument(
        "--no-progress", action="store_true", help="no live progress on a terminal (it is never shown otherwise)"
    )
    plan = parser.add_argument_group("plan (mode 'plan': what an upload would do; nothing is sent or written)")
    plan.add_argument(
        "--limit",
        type=_non_negative,
        default=20,
        metavar="N",
        help="list at most N records per kind (create, update, missing); default 20",
    )
    local = parser.add_argument_group("local store (mode 'local')")
    local.add_argument("--data-type", choices=("assets", "users"), default=None, help="only this record type")
    local.add_argument(
        "--format",
        choices=("csv", "json", "text"),
        default=None,
        help="local export: csv (default) or json; plan: text (default) or json",
    )
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
    logging_ready = False
    with redact.using(redactor):
        try:
            setup_from_args(args, program_dir, redactor)
            logging_ready = True
            ini = args.ini or ((program_dir or Path.cwd()) / "config.ini")
            if args.mode == "generate-ini":
                return _generate_ini(ini, err)
            if args.mode == "managed":
                return _managed(args, ini, out, err)
            if args.mode == "local":
                return _local(args, ini, out, err)
            if args.mode == "plan":
                return _plan(args, ini, out, err)
            return _upload(args, ini, out, err)
        except ConnectorError as exc:
            if args.debug:
                import traceback

                print(redactor.scrub(traceback.format_exc()), end="", file=err)
            lines = [redactor.scrub(line) for line in str(exc).splitlines() or [type(exc).__name__]]
            print_error_lines(lines, err, logged=logging_ready, as_json=logging_ready and log_format(args) == "json")
            if logging_ready and args.mode == "upload" and args.connectors:
                _report_failed_start(args, program_dir, "\n".join(lines), out)
            return Exit.ERROR
        except KeyboardInterrupt:
            print("Interrupted. Exiting.", file=err)
            return Exit.INTERRUPTED


def console_main() -> None:
    sys.exit(main())


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
        full=args.full,
        out=out,
        err=err,
    )
    asyncio.run(poller.run())
    if poller.stop.requested:
        return signal_exit(poller.stop.signum)
    if not args.exit_when_idle:
        return Exit.OK
    if poller.results:
        from .report import RunReport

        _print_summary(RunReport(mode="managed", results=poller.results), err, testmode=args.testmode)
    if poller.other_failures:  # e.g. an export file could not be written: the disk is full
        return Exit.ERROR
    return upload_exit(poller.results, poller.stop)


# -- upload -------------------------------------------------------------------------------------------


def _upload(args: argparse.Namespace, ini: Path, out: TextIO, err: TextIO) -> int:
    import asyncio

    from .config import load_config
    from .report import RunReport
    from .statedir import state_dir
    from .sync import RunStop

    config = load_config(ini)
    if not args.connectors:
        enabled = ", ".join(config.sections) or "none"
        print(f"No connectors specified. Exiting. (enabled sections in {ini}: {enabled})", file=err)
        return Exit.OK
    sections = [config.section(name) for name in args.connectors]  # unknown/disabled → one clear line
    if args.show_mappings:
        return asyncio.run(_show_mappings(config, [s.name for s in sections], args, out))
    _check_outputs(args)
    stop = RunStop()
    report = RunReport(testmode=args.testmode)
    state = state_dir(config.oomnitza.settings)
    asyncio.run(_run_upload(config, [s.name for s in sections], args, out, err, stop, report, state))
    report.stopped = stop.reason
    report.exit_code = upload_exit(report.results, stop, busy=report.busy)
    return _finish_report(report, args, out, err, state)


def upload_exit(results: list[SectionResult], stop: Any, busy: Any = ()) -> Exit:
    """A signal wins (130/143), then errors (1), a canceled sync (4), failed records (3), a section
    another run was syncing (75)."""
    if stop.requested:
        return signal_exit(stop.signum)
    if any(r.error for r in results):
        return Exit.ERROR
    if any(r.canceled for r in results):
        return Exit.CANCELED
    if any(not r.ok for r in results):
        return Exit.RECORDS_FAILED
    if any(r.section in busy for r in results):
        return Exit.ALREADY_RUNNING
    return Exit.OK


def _check_outputs(args: argparse.Namespace) -> None:
    """Report files go into folders that exist: better said now than after a two-hour run."""
    from .errors import ConfigError

    targets = [("--metrics-file", args.metrics_file)]
    if args.summary_json not in (None, "-"):
        targets.append(("--summary-json", Path(args.summary_json)))
    for flag, path in targets:
        if path is None:
            continue
        if path.is_dir():
            raise ConfigError(f"{flag} {path}: it is a folder (give a file name)")
        if not path.parent.resolve().is_dir():
            raise ConfigError(f"{flag} {path}: the folder {path.parent.resolve()} does not exist")


def _finish_report(report: Any, args: argparse.Namespace, out: TextIO, err: TextIO, state: Path | None) -> int:
    """The summary table, the summary lines in the log, and the report files. A report file that
    cannot be written is an error of the run (exit 1 unless the run already failed)."""
    import time

    from .report import log_summary

    report.finished = time.time()
    as_json = log_format(args) == "json"
    if report.results and not as_json:  # JSON logs carry the summary lines instead
        _print_summary(report, err, testmode=args.testmode, stopped=report.stopped)
    if report.results:
        log_summary(report, on_console=as_json)
    failed = _write_reports(report, args, out, state)
    return Exit.ERROR if failed and report.exit_code in (Exit.OK, Exit.ALREADY_RUNNING) else report.exit_code


def _write_reports(report: Any, args: argparse.Namespace, out: TextIO, state: Path | None) -> bool:
    """``--summary-json`` and ``--metrics-file``; True when one could not be written (logged)."""
    import logging

    from .diskio import describe_os_error
    from .report import write_metrics, write_summary_json

    log = logging.getLogger("oomnitza_connector")
    failed = False
    if args.summary_json:
        try:
            write_summary_json(report, args.summary_json, stdout=out)
        except OSError as exc:
            log.error("cannot write the summary (--summary-json): %s", describe_os_error(exc, Path(args.summary_json)))
            failed = True
    if args.metrics_file and report.testmode:
        log.info("test mode: the metrics file %s is left as it is", args.metrics_file)
    elif args.metrics_file:
        try:
            write_metrics(report, args.metrics_file, lock_dir=state)
        except OSError as exc:
            log.error("cannot write the metrics (--metrics-file): %s", describe_os_error(exc, args.metrics_file))
            failed = True
    return failed


def _report_failed_start(args: argparse.Namespace, program_dir: Path | None, error: str, out: TextIO) -> None:
    """The run could not start (the configuration): the report files say so for every section
    asked for, so monitoring sees the failure rather than an old success."""
    import time

    from .report import RunReport
    from .statedir import peek_state_dir
    from .sync import SectionResult

    if not (args.summary_json or args.metrics_file):
        return
    try:
        _check_outputs(args)
    except Exception:  # said already, or the folders are the problem: nothing can be written
        return
    report = RunReport(testmode=args.testmode, error=error, exit_code=Exit.ERROR, finished=time.time())
    report.results = [SectionResult(section=name, error=error) for name in args.connectors]
    ini = args.ini or ((program_dir or Path.cwd()) / "config.ini")
    _write_reports(report, args, out, peek_state_dir(ini))


def _options(args: argparse.Namespace, stop: Any = None) -> Any:
    from .sync import Options

    return Options(
        workers=args.workers,
        batch_size=args.batch_size,
        record_count=args.record_count,
        testmode=args.testmode,
        save_data=Path("saved_data") if args.save_data else None,
        stop=stop,
        full=args.full,
    )


async def _run_upload(
    config: Config,
    names: list[str],
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    stop: Any,
    report: Any,
    state: Path,
) -> None:
    import logging

    from . import progress
    from .locking import claim
    from .oomnitza.sinks import make_sink
    from .sync import SectionResult, run_section, stop_on_signals, stop_reason

    log = logging.getLogger("oomnitza_connector")

    def request_stop(signum: int) -> None:
        stop.request(stop_reason(signum), signum)

    results: list[SectionResult] = report.results
    show = progress.wanted(err, disabled=args.no_progress) and log_format(args) == "text"
    with stop_on_signals(request_stop, err):
        sink = make_sink(config.oomnitza, testmode=args.testmode, workers=args.workers, out=out)
        try:
            await sink.login()
            async with progress.live(err, enabled=show) as tracker:
                for name in names:
                    if stop.requested or any(r.sink_down for r in results):
                        results.append(SectionResult(section=name, not_run=True))
                        continue
                    # A test run writes nothing: it may look while a real run of the section goes on.
                    taken = None if args.testmode else claim(state, name, what=f"upload {name}")
                    if taken is not None and taken.busy:
                        report.busy[name] = taken.holder
                        log.warning(
                            "[%s] not run: another run is syncing it (%s)",
                            name,
                            taken.holder or "its process is not known",
                        )
                        results.append(SectionResult(section=name, not_run=True))
                        continue
                    try:
                        log.info("[%s] sync started", name)
                        live = SectionResult(section=name)  # counted into as the run goes on
                        tracker.track(name, lambda live=live: live)
                        result = await run_section(
                            config.sections[name], config, sink, _options(args, stop), result=live
                        )
                        tracker.finish(name, result)
                    finally:
                        if taken is not None:
                            taken.release()
                    if result.error:
                        tag = f"[{name}]"
                        log.error("%s", result.error if result.error.startswith(tag) else f"{tag} {result.error}")
                    results.append(result)
        finally:
            await sink.aclose()
    for message in config.converters.cleanup_messages():
        log.error("%s", message)
    if any(r.sink_down for r in results) and any(r.not_run for r in results):
        skipped = ", ".join(r.section for r in results if r.not_run and r.section not in report.busy)
        log.error("Oomnitza is not taking records: the remaining sections were not run (%s)", skipped)


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


def _print_summary(report: RunReport, err: TextIO, *, testmode: bool, stopped: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from .sync import BUCKET_TITLES, BUCKETS

    results: list[SectionResult] = report.results
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
        status = report.status(r)
        table.add_row(
            r.section, r.data_type, str(r.pulled), *(str(r.counts[b]) for b in BUCKETS), f"{r.seconds:.1f}s", status
        )
    console = Console(file=err, width=max(150, Console(file=err).width))
    console.print(table)
    for line in retirement_lines(results):
        console.print(line, highlight=False, markup=False)


def retirement_lines(results: list[SectionResult]) -> list[str]:
    """The summary's line per section whose run could retire records (retire_after_runs)."""
    lines = []
    for r in results:
        reason = r.changes.retire_reason() if r.changes is not None else None
        if reason is None:
            continue
        done = r.changes.retired if r.changes is not None else 0
        failed = r.changes.retire_failed if r.changes is not None else 0
        text = f"{r.section}: retired {done}" + (f", {failed} not confirmed" if failed else "")
        lines.append(f"{text} ({reason})")
    return lines


# -- plan ---------------------------------------------------------------------------------------------


def _plan(args: argparse.Namespace, ini: Path, out: TextIO, err: TextIO) -> int:
    """What an upload of the sections would do: read, map, compare with the sync state; nothing is
    sent, and neither the state nor the local store is written (see plan.py)."""
    import asyncio

    from .config import load_config
    from .plan import write
    from .sync import RunStop

    config = load_config(ini)
    fmt = args.format or "text"
    if not args.connectors or fmt not in ("text", "json"):
        print("usage: connector.py plan <sections...> [--format text|json] [--full] [--limit N]", file=err)
        return Exit.USAGE
    names = [config.section(name).name for name in args.connectors]  # unknown/disabled → one clear line
    stop = RunStop()
    results = asyncio.run(_run_plan(config, names, args, err, stop))
    target = config.oomnitza.settings.get("url", "")
    write(results, target, fmt, args.limit, out)
    if stop.requested:
        return signal_exit(stop.signum)
    return Exit.ERROR if any(r.error for r in results) else Exit.OK


async def _run_plan(config: Config, names: list[str], args: argparse.Namespace, err: TextIO, stop: Any) -> list[Any]:
    from .plan import PlanSink
    from .sync import Options, SectionResult, run_section, stop_on_signals, stop_reason

    def request_stop(signum: int) -> None:
        stop.request(stop_reason(signum), signum)

    url = config.oomnitza.settings.get("url", "")
    reader = None
    if not url.startswith("sqlite:"):  # the local store has nothing to read, and is not opened
        from .oomnitza.client import OomnitzaClient

        reader = OomnitzaClient(config.oomnitza, workers=args.workers)
    sink = PlanSink(reader)
    options = Options(
        workers=args.workers,
        batch_size=args.batch_size,
        record_count=args.record_count,
        testmode=True,  # nothing is committed: incremental marks and processed files stay
        stop=stop,
        full=args.full,
        plan=True,
        plan_limit=args.limit,
    )
    results: list[SectionResult] = []
    with stop_on_signals(request_stop, err):
        try:
            await sink.login()
            for name in names:
                if stop.requested:
                    results.append(SectionResult(section=name, not_run=True))
                    continue
                results.append(await run_section(config.sections[name], config, sink, options))
        finally:
            await sink.aclose()
    return results


# -- local store --------------------------------------------------------------------------------------


def _local(args: argparse.Namespace, ini: Path, out: TextIO, err: TextIO) -> int:
    from .errors import ConfigError
    from .ini import read_ini
    from .oomnitza.local_store import LocalStore, export, store_path

    action = args.connectors[0] if args.connectors else "summary"
    args.format = args.format or "csv"
    if action not in ("summary", "export") or len(args.connectors) > 1 or args.format == "text":
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
