#!/usr/bin/env python3
"""What change-aware sync costs in CPU, measured in pairs (issue 15's budget: at most 10 % more
than a plain upload).

This machine's speed drifts between minutes by more than that budget, so one case measured after
another (``run.py``) can compare a slow minute with a fast one. Here each repetition runs, back to
back against one fake Oomnitza: a plain upload (``change_aware = false``), a first run with
change-aware sync (a fresh state), a ``--full`` run over what it remembered, and a run over
unchanged data; the ratios are taken within each repetition and their median reported.

    python benchmarks/change_aware.py [--rows 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import tempfile
from pathlib import Path

from gen import write_assets, write_ini
from run import HERE, TOKEN, run_connector, start_fake, stats  # the runner's process helpers

RUNS = (
    ("plain", "plain.ini", ()),
    ("first", "aware.ini", ()),
    ("full", "aware.ini", ("--full",)),
    ("noop", "aware.ini", ()),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    quiet = ["--logging-config", str(HERE / "quiet-logging.json")]
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in RUNS}
    wall: dict[str, list[float]] = {name: [] for name, _, _ in RUNS}
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv = work / "assets.csv"
        write_assets(csv, args.rows)
        fake, url = start_fake(0, work, None)
        try:
            write_ini(work / "plain.ini", csv, url, TOKEN, ("change_aware = false",))
            write_ini(work / "aware.ini", csv, url, TOKEN, ())
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
        finally:
            fake.send_signal(signal.SIGTERM)
            fake.wait(timeout=30)
    print(f"{args.rows:,} rows, {args.repeat} repetitions; CPU s (user + system of the connector), median")
    print("| run | CPU s | wall s | peak RSS MiB | CPU against plain (median of the pairs) |")
    print("|---|---:|---:|---:|---:|")
    for name, _, _ in RUNS:
        pairs = [mine / plain - 1 for mine, plain in zip(cpu[name], cpu["plain"], strict=True)]
        ratio = "" if name == "plain" else f"{statistics.median(pairs):+.1%}"
        middle = f"{statistics.median(cpu[name]):.2f} | {statistics.median(wall[name]):.2f} | {rss[name]:.1f}"
        print(f"| {name} | {middle} | {ratio} |")


if __name__ == "__main__":
    main()
