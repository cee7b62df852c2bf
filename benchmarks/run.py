#!/usr/bin/env python3
"""Throughput and memory benchmarks of ``upload`` (whole process, as a user runs it).

Each case generates a CSV of N assets, starts the project's fake Oomnitza (``tests/fakes``) with
the given latency per request, runs ``connector.py upload csv_assets`` as a subprocess and
measures wall time, peak RSS of the connector process alone (``os.wait4``), and the requests and
records the fake received. It also checks that every record arrived.

    python benchmarks/run.py                 # every case
    python benchmarks/run.py --case latency50-default --case version
    python benchmarks/run.py --sim ../shared/bench/oomnitza_sim.py   # against another simulator

On a 2-core machine the fake and the connector are pinned to different cores (taskset) so they do
not compete. Results are printed as a Markdown table (paste into benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from gen import write_assets, write_ini  # noqa: E402

TOKEN = "bench-token"


@dataclass
class Case:
    name: str
    rows: int
    latency_ms: int
    args: tuple[str, ...] = ()
    ini: tuple[str, ...] = ()  # extra lines of the section
    noop: bool = False  # measure a second run over the same, unchanged data (it must send nothing)
    again: tuple[str, ...] = ()  # flags of that second run (e.g. --full: the weekly full push)


CASES = [
    Case("latency50-default", 40_000, 50),
    Case("latency50-workers8", 80_000, 50, ("--workers", "8")),
    Case("nolatency-200k", 200_000, 0),
    # The same without change-aware sync: what remembering the sent records costs (CPU).
    Case("nolatency-200k-plain", 200_000, 0, ini=("change_aware = false",)),
    Case("nolatency-20k", 20_000, 0),
    # A second run over unchanged data: read, map, compare, send nothing (budget < 5 s).
    Case("noop-200k", 200_000, 0, noop=True),
    # A second run that sends every record again (the weekly full push, or --full).
    Case("full-200k", 200_000, 0, noop=True, again=("--full",)),
]


def pin(core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core)]
    return []


def start_fake(latency_ms: int, workdir: Path, sim: str | None) -> tuple[subprocess.Popen[bytes], str]:
    port_file = workdir / "port"
    server = [sim] if sim else ["-m", "tests.fakes.oomnitza"]
    options = ["--port", "0", "--latency-ms", str(latency_ms), "--token", TOKEN, "--port-file", str(port_file)]
    cmd = [sys.executable, *server, *options]
    proc = subprocess.Popen(pin(0) + cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the fake Oomnitza did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port_file.read_text().strip()}"


def stats(url: str, sim: str | None) -> dict:
    path = "/__sim/stats" if sim else "/__fake/stats"
    with urllib.request.urlopen(url + path, timeout=60) as resp:
        return json.loads(resp.read())


def connector_env(cwd: Path) -> dict[str, str]:
    """The connector's environment: its state (the sync state, locks) in ``cwd``/state, logs in ``cwd``/logs."""
    return {**os.environ, "OOMNITZA_STATE_DIR": str(cwd / "state"), "OOMNITZA_LOG_DIR": str(cwd / "logs")}


def run_connector(args: list[str], cwd: Path) -> tuple[int, float, float, float]:
    """Exit code, wall seconds, peak RSS in MiB and CPU seconds (user + system) of the connector
    process alone (see ``connector_env``)."""
    cmd = [*pin(1), sys.executable, str(ROOT / "connector.py"), *args]
    env = connector_env(cwd)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(err[-2000:], file=sys.stderr)
    return code, wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def bench_upload(case: Case, sim: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv_path = work / "assets.csv"
        write_assets(csv_path, case.rows)
        fake, url = start_fake(case.latency_ms, work, sim)
        try:
            ini = work / "config.ini"
            write_ini(ini, csv_path, url, TOKEN, case.ini)
            args = ["upload", "csv_assets", "--ini", str(ini), "--logging-config", str(HERE / "quiet-logging.json")]
            code, wall, rss, cpu = run_connector([*args, *case.args], work)
            st = stats(url, sim)
            if case.noop and code == 0:  # the measured run: the same data again
                before = st
                code, wall, rss, cpu = run_connector([*args, *case.args, *case.again], work)
                st = stats(url, sim)
                if not case.again and st.get("records_received") != before.get("records_received"):
                    print(f"{case.name}: the no-op run sent records", file=sys.stderr)
                    code = code or 1
            state_mb = sum(p.stat().st_size for p in (work / "state").glob("sync-state.db*")) / 1e6
        finally:
            fake.send_signal(signal.SIGTERM)
            fake.wait(timeout=30)
    requests = st.get("requests_total", sum(st.get("requests", {}).values()))
    stored = st.get("records_stored", st.get("records_received"))
    return {
        "case": case.name,
        "rows": case.rows,
        "latency_ms": case.latency_ms,
        "flags": " ".join([*case.args, *case.ini, *case.again]) + (" (second run)" if case.noop else "") or "(default)",
        "exit": code,
        "seconds": round(wall, 2),
        "records_per_s": round(case.rows / wall),
        "requests": requests,
        "stored": stored,
        "peak_rss_mib": round(rss, 1),
        "cpu_s": round(cpu, 2),
        "state_mb": round(state_mb, 1),
    }


def median_run(case: Case, sim: str | None, repeat: int) -> dict:
    """The run with the median time of ``repeat``; its peak RSS is the highest of all runs."""
    runs = sorted((bench_upload(case, sim) for _ in range(repeat)), key=lambda r: r["seconds"])
    chosen = dict(runs[len(runs) // 2])
    chosen["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    chosen["cpu_s"] = sorted(r["cpu_s"] for r in runs)[len(runs) // 2]  # the median CPU, on its own
    if any(r["exit"] != 0 or r["stored"] != r["rows"] for r in runs):
        chosen["exit"] = next(r["exit"] for r in runs if r["exit"] != 0 or r["stored"] != r["rows"]) or 1
    return chosen


def bench_version() -> dict:
    best = min(_time([sys.executable, str(ROOT / "connector.py"), "version"]) for _ in range(5))
    return {"case": "version", "seconds": round(best, 3)}


def _time(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--case",
        action="append",
        help="run only these cases (names below, 'version', 'state-1m': the sync state of 1,000,000 records, "
        "or 'ledger': all of ledger_bench.py)",
    )
    ap.add_argument("--sim", help="path of another simulator with the same CLI (e.g. the neutral bench sim)")
    ap.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per case; the median run (by seconds) is reported (default 3: shared machines are noisy)",
    )
    args = ap.parse_args()
    if args.case and "ledger" in args.case:  # change-aware sync's parts, in-process: a script of its own
        subprocess.run([sys.executable, str(HERE / "ledger_bench.py")], check=True)
        args.case = [c for c in args.case if c != "ledger"]
        if not args.case:
            return 0
    wanted = set(args.case or [c.name for c in CASES] + ["version", "state-1m"])
    if "state-1m" in wanted:  # the state file's size for a million records (budget < 150 MB)
        subprocess.run([sys.executable, str(HERE / "ledger_bench.py"), "--only", "size"], check=True)
    results = [median_run(c, args.sim, max(1, args.repeat)) for c in CASES if c.name in wanted]
    if "version" in wanted:
        results.append(bench_version())
    if args.json:
        for r in results:
            print(json.dumps(r))
    else:
        print(
            "| case | rows | latency | flags | records/s | seconds | CPU s | requests | stored | peak RSS MiB "
            "| state MB | exit |"
        )
        print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            if r["case"] == "version":
                print(f"| `connector.py version` | | | | | {r['seconds']} | | | | | | |")
                continue
            print(
                f"| {r['case']} | {r['rows']:,} | {r['latency_ms']} ms | {r['flags']} | {r['records_per_s']:,} | "
                f"{r['seconds']} | {r['cpu_s']} | {r['requests']:,} | {r['stored']:,} | {r['peak_rss_mib']} "
                f"| {r['state_mb']} | {r['exit']} |"
            )
    bad = [r for r in results if r.get("exit", 0) != 0 or r.get("stored", r.get("rows")) != r.get("rows")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
