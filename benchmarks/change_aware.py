#!/usr/bin/env python3
"""What change-aware sync costs in CPU, measured in pairs (issue 15's budget: at most 10 % more
than a plain upload).

This machine's speed drifts between minutes by more than that budget, so one case measured after
another (``run.py``) can compare a slow minute with a fast one. Here each repetition runs, back to
back against one fake Oomnitza: a plain upload (``change_aware = false``), a first run with
change-aware sync (a fresh state), a ``--full`` run over what it remembered, and a run over
unchanged data; the ratios are taken within each repetition and their median reported.

Even paired, the ratio of one repetition can swing by ten points on a busy host. ``--instructions``
counts the instructions each run executes instead (valgrind's cachegrind, no cache simulation;
about 20 times slower, one repetition): the same code gives the same count within a fraction of a
percent, whatever the machine does meanwhile. It misses what memory stalls add to the time.

    python benchmarks/change_aware.py [--rows 200000] [--repeat 5] [--instructions]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gen import write_assets, write_ini
from run import HERE, ROOT, TOKEN, connector_env, run_connector, start_fake, stats  # the runner's process helpers

RUNS = (
    ("plain", "plain.ini", ()),
    ("first", "aware.ini", ()),
    ("full", "aware.ini", ("--full",)),
    ("noop", "aware.ini", ()),
)


@contextlib.contextmanager
def bench_folder(rows: int) -> Iterator[tuple[Path, str]]:
    """A temporary folder with the CSV, ``plain.ini`` and ``aware.ini``, and the fake Oomnitza's URL."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv = work / "assets.csv"
        write_assets(csv, rows)
        fake, url = start_fake(0, work, None)
        try:
            write_ini(work / "plain.ini", csv, url, TOKEN, ("change_aware = false",))
            write_ini(work / "aware.ini", csv, url, TOKEN, ())
            yield work, url
        finally:
            fake.send_signal(signal.SIGTERM)
            fake.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="count instructions (valgrind) instead")
    args = parser.parse_args()
    if args.instructions:
        count_instructions(args.rows)
        return
    quiet = ["--logging-config", str(HERE / "quiet-logging.json")]
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in RUNS}
    wall: dict[str, list[float]] = {name: [] for name, _, _ in RUNS}
    rss: dict[str, float] = {}
    with bench_folder(args.rows) as (work, url):
        for _ in range(args.repeat):
            shutil.rmtree(work / "state", ignore_errors=True)  # every first run starts from nothing
            for name, ini, flags in RUNS:
                before = stats(url, None).get("records_received", 0)
                code, seconds, peak, used = run_connector(
                    ["upload", "csv_assets", "--ini", str(work / ini), *quiet, *flags], work
                )
                sent = stats(url, None).get("records_received", 0) - before
                if code != 0 or sent != (0 if name == "noop" else args.rows):
                    raise SystemExit(f"{name}: exit {code}, {sent} records sent")
                cpu[name].append(used)
                wall[name].append(seconds)
                rss[name] = max(rss.get(name, 0.0), peak)
    print(f"{args.rows:,} rows, {args.repeat} repetitions; CPU s (user + system of the connector), median")
    print("| run | CPU s | wall s | peak RSS MiB | CPU against plain (median of the pairs) |")
    print("|---|---:|---:|---:|---:|")
    for name, _, _ in RUNS:
        pairs = [mine / plain - 1 for mine, plain in zip(cpu[name], cpu["plain"], strict=True)]
        ratio = "" if name == "plain" else f"{statistics.median(pairs):+.1%}"
        middle = f"{statistics.median(cpu[name]):.2f} | {statistics.median(wall[name]):.2f} | {rss[name]:.1f}"
        print(f"| {name} | {middle} | {ratio} |")
    print("pairs (each repetition's ratio against its plain upload):")
    for name, _, _ in RUNS[1:]:
        print(f"  {name}: " + " ".join(f"{m / p - 1:+.1%}" for m, p in zip(cpu[name], cpu["plain"], strict=True)))
    # A busy host only ever adds time: the fastest of several runs is the least disturbed one.
    print("fastest of each (CPU s) and against the fastest plain upload:")
    for name, _, _ in RUNS:
        print(f"  {name}: {min(cpu[name]):.2f} ({min(cpu[name]) / min(cpu['plain']) - 1:+.1%})")


def count_instructions(rows: int) -> None:
    """Each run once under cachegrind: instructions executed by the connector process."""
    if not shutil.which("valgrind"):
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    quiet = ["--logging-config", str(HERE / "quiet-logging.json")]
    counts: dict[str, int] = {}
    with bench_folder(rows) as (work, _url):
        env = connector_env(work)
        for name, ini, flags in RUNS:
            cmd = [
                *("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"),
                *(sys.executable, str(ROOT / "connector.py"), "upload", "csv_assets", "--ini", str(work / ini)),
                *quiet,
                *flags,
            ]
            done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
            found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
            if done.returncode != 0 or not found:
                raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
            counts[name] = int(found.group(1).replace(",", ""))
    print(f"{rows:,} rows; instructions executed by the connector process (cachegrind)")
    print("| run | instructions (G) | against plain |")
    print("|---|---:|---:|")
    for name, _, _ in RUNS:
        ratio = "" if name == "plain" else f"{counts[name] / counts['plain'] - 1:+.1%}"
        print(f"| {name} | {counts[name] / 1e9:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
