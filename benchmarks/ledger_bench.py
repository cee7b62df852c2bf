#!/usr/bin/env python3
"""Change-aware sync (``oomnitza_connector.ledger``, issue 15), part by part.

``benchmarks/run.py`` measures change-aware sync as users run it (whole ``upload`` processes:
``nolatency-200k`` against ``nolatency-200k-plain``, ``noop-200k``) and calls this script for the
state file's size (``state-1m``). This script runs the pipeline's own parts in-process, as
``upload csv_assets`` does: the CSV source read page by page, the section's ``Mapper``, batches of
100 encoded with ``bulk_body`` (what the sink sends), plus the ledger calls, to tell how much of
the CPU is the ledger's. It reports:

- ``first``: CPU of the ledger calls (classify + mark_delivered + finish) in a first run over N
  records, against (a) the CPU of a whole ``connector.py upload`` of the same CSV (a subprocess
  against the fake Oomnitza, ``--upload``) and (b) the CPU of mapping + encoding the same records;
- ``full``: the same for a full push (``--full``) over the state the first run left;
- ``noop``: a second run over unchanged data in a fresh process (wall time from spawn to exit,
  interpreter start included): read, map, classify, finish; it must send nothing;
- ``size``: the state file for ``--size-rows`` records (default 1,000,000) in key order and in
  random order, and after one run in which 20 % of them changed (old values become garbage that
  compaction reclaims); and the memory and CPU of opening that state (in a fresh process).

    python benchmarks/ledger_bench.py                  # everything, 200,000 rows
    python benchmarks/ledger_bench.py --only noop --rows 200000
    python benchmarks/run.py --case ledger            # the same, from the benchmark runner
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import compress
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))
from gen import CITIES, MODELS, NOTES, PEOPLE, write_assets, write_ini  # noqa: E402

from oomnitza_connector import ledger  # noqa: E402
from oomnitza_connector.config import load_config  # noqa: E402
from oomnitza_connector.mapping import Mapper, merge_mappings  # noqa: E402
from oomnitza_connector.oomnitza.payload import EncodedRecords, RunInfo, bulk_body  # noqa: E402

BATCH = 100
TARGET = ledger.Target("https://bench.oomnitza.test", identity="bench-token")
SYNC = ["SERIAL_NUMBER"]


class Clock:
    """CPU seconds spent inside the wrapped calls."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.cpu += time.process_time() - started


def _mapper(ini: Path) -> tuple[Any, Mapper, RunInfo]:
    config = load_config(ini)
    section = config.section("csv_assets")
    assert section.source_cls is not None
    source = section.source_cls(section)
    specs = merge_mappings(
        defaults=section.source_cls.default_mappings,
        server={},
        ini=section.mappings,
        default_converters=section.source_cls.default_converters,
        extras=source.extra_mappings(),
    )
    run = RunInfo(section="csv_assets", connector_name="csv_assets", data_type="assets", sync_field=SYNC)
    return source, Mapper(specs, section, config.converters), run


async def _batches(source: Any, mapper: Mapper, timer: Clock) -> Any:
    """Mapped batches of ``BATCH`` records; ``timer`` gets the CPU of the mapping (per page)."""
    batch: list[dict[str, Any]] = []
    convert = mapper.convert
    async for page in source.pages():
        started = time.process_time()
        mapped = [convert(raw) for raw in page]
        timer.cpu += time.process_time() - started
        for record in mapped:
            batch.append(record)
            if len(batch) >= BATCH:
                yield batch
                batch = []
    if batch:
        yield batch
    await source.aclose()


def pipeline_pass(ini: Path, state: Path | None, *, full: bool = False, encode: bool = True) -> dict[str, Any]:
    """One run in-process. ``state`` None: no ledger (the baseline)."""

    async def main() -> dict[str, Any]:
        source, mapper, run = _mapper(ini)
        map_clock, enc_clock, led_clock = Clock(), Clock(), Clock()
        scope = None
        if state is not None:
            scope = led_clock(
                ledger.open_scope,
                state,
                target=TARGET,
                name="csv_assets",
                mapping=ledger.digest_of(mapper.specs),
                sync_fields=SYNC,
                options=ledger.ScopeOptions(full=full),
            )
        sent = records = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        async for batch in _batches(source, mapper, map_clock):
            records += len(batch)
            if scope is None:
                to_send, verdicts = batch, None
            else:
                verdicts = led_clock(scope.classify, batch)
                if not verdicts.all_send:
                    to_send, verdicts = list(compress(batch, verdicts.send)), verdicts.select(verdicts.send)
                else:
                    to_send = batch
            if to_send and encode:  # (as the pipeline does: the records' JSON comes from classify)
                enc_clock(bulk_body, run, to_send if verdicts is None else EncodedRecords(to_send, verdicts.blobs))
            sent += len(to_send)
            if scope is not None and verdicts is not None and to_send:
                led_clock(scope.mark_delivered, verdicts)
        report = None
        if scope is not None:
            report = led_clock(scope.finish, complete=True)
            led_clock(scope.close)
        return {
            "records": records,
            "sent": sent,
            "cpu": time.process_time() - cpu0,
            "wall": time.perf_counter() - wall0,
            "map_cpu": map_clock.cpu,
            "encode_cpu": enc_clock.cpu,
            "ledger_cpu": led_clock.cpu,
            "full": report.full if report else None,
            "counts": report.counts if report else None,
        }

    gc.collect()
    return asyncio.run(main())


# -- the whole upload, for the reference CPU -----------------------------------------------------------


def upload_cpu(csv_path: Path, work: Path) -> float:
    """User + system CPU seconds of ``connector.py upload csv_assets`` (the fake Oomnitza runs in
    another process and is not counted)."""
    import run as runner  # benchmarks/run.py

    fake, url = runner.start_fake(0, work, None)
    try:
        ini = work / "upload.ini"
        write_ini(ini, csv_path, url, runner.TOKEN)
        cmd = [
            *runner.pin(1),
            sys.executable,
            str(ROOT / "connector.py"),
            "upload",
            "csv_assets",
            "--ini",
            str(ini),
            "--logging-config",
            str(HERE / "quiet-logging.json"),
        ]
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("the reference upload failed")
        return usage.ru_utime + usage.ru_stime
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=30)


def noop_in_child(ini: Path, state: Path) -> dict[str, Any]:
    """The no-op run in a fresh interpreter: wall time from spawn to exit."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-noop", str(ini), str(state)]
    started = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    result["process_wall"] = time.perf_counter() - started
    return result


# -- the state file size -------------------------------------------------------------------------------


def payloads(order: list[int], seed: int = 7) -> Iterator[list[dict[str, Any]]]:
    """Asset payloads shaped like gen.py's rows after mapping (11 fields), in batches."""
    rnd = random.Random(seed)
    batch: list[dict[str, Any]] = []
    for i in order:
        make, model = MODELS[i % len(MODELS)]
        who = PEOPLE[(i * 7) % len(PEOPLE)]
        batch.append(
            {
                "SERIAL_NUMBER": f"SN{i:08d}",
                "ASSET_TAG": f"AT-{rnd.randrange(10**6):06d}",
                "MODEL": model,
                "MANUFACTURER": make,
                "HOSTNAME": f"host-{i}",
                "MAC_ADDRESS": ":".join(f"{rnd.randrange(256):02x}" for _ in range(6)),
                "OS": ("macOS 14.4", "Windows 11 Pro", "Ubuntu 22.04")[i % 3],
                "ASSIGNED_TO": f"{who}{i % 997}@acme.test" if i % 17 else "",
                "PURCHASE_DATE": f"20{18 + i % 8}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                "LOCATION": CITIES[i % len(CITIES)],
                "NOTES": NOTES[i % len(NOTES)],
            }
        )
        if len(batch) >= 1000:
            yield batch
            batch = []
    if batch:
        yield batch


def load(state: Path, order: list[int], clock: Callable[[], float], change: float = 0.0) -> None:
    scope = ledger.open_scope(state, target=TARGET, name="assets", mapping="m", sync_fields=SYNC, clock=clock)
    rnd = random.Random(11)
    for batch in payloads(order):
        if change:
            batch = [dict(p, NOTES=f"changed {rnd.random()}") if rnd.random() < change else p for p in batch]
        verdicts = scope.classify(batch)
        scope.mark_delivered(verdicts if verdicts.all_send else verdicts.select(verdicts.send))
    scope.finish(complete=True)
    scope.close()


def open_in_child(state: Path, rows: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-open", str(state)]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {
        "open_cpu": out["open_cpu"],
        "open_rss_mb": out["rss_mb"],
        "memory_per_record_bytes": round(out["rss_mb"] * 2**20 / rows),
    }


def child_open(state: Path) -> dict[str, Any]:
    """Resident memory the opened state adds (RSS after open minus before, this process only)."""

    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    gc.collect()
    before, started = rss(), time.process_time()
    scope = ledger.open_scope(state, target=TARGET, name="assets", mapping="m", sync_fields=SYNC, read_only=True)
    cpu = time.process_time() - started
    grown = rss() - before
    scope.close()
    return {"open_cpu": round(cpu, 2), "rss_mb": round(grown / 2**20, 1)}


def file_mb(state: Path) -> float:
    return sum(p.stat().st_size for p in state.parent.glob(state.name + "*")) / 1e6


def bench_size(rows: int) -> dict[str, Any]:
    now = [1_800_000_000.0]
    result: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shuffle in (("key_order", False), ("random_order", True)):
            state = Path(tmp) / name / ledger.STATE_FILE
            order = list(range(rows))
            if shuffle:
                random.Random(3).shuffle(order)
            started = time.process_time()
            load(state, order, lambda: now[0])
            result[f"{name}_mb"] = round(file_mb(state), 1)
            result[f"{name}_load_cpu"] = round(time.process_time() - started, 1)
            if not shuffle:  # what the loaded state costs in memory (the scope opened in a fresh process)
                result.update({f"first_{k}": v for k, v in open_in_child(state, rows).items()})
                now[0] += 86400
                load(state, order, lambda: now[0])  # the second run checks the keys: later opens build no index
                result.update(open_in_child(state, rows))
            if shuffle:
                now[0] += 86400
                load(state, order, lambda: now[0], change=0.2)
                result["after_20pct_changed_mb"] = round(file_mb(state), 1)
    return result


# -- main ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--size-rows", type=int, default=1_000_000)
    ap.add_argument("--only", action="append", choices=["first", "noop", "size"], help="run only these parts")
    ap.add_argument("--no-upload", action="store_true", help="skip the reference upload (no CPU ratio)")
    ap.add_argument("--child-noop", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-open", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_open:
        print(json.dumps(child_open(Path(args.child_open))))
        return 0
    if args.child_noop:
        ini, state = map(Path, args.child_noop)
        print(json.dumps(pipeline_pass(ini, state)))
        return 0
    wanted = set(args.only or ["first", "noop", "size"])
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv_path = work / "assets.csv"
        write_assets(csv_path, args.rows)
        ini = work / "config.ini"
        write_ini(ini, csv_path, "https://bench.oomnitza.test", "bench-token")
        state = work / "state" / ledger.STATE_FILE
        if wanted & {"first", "noop"}:
            base = pipeline_pass(ini, None)
            first = pipeline_pass(ini, state)
            results["baseline"] = _rounded(base)
            results["first"] = _rounded(first)
            map_encode = base["map_cpu"] + base["encode_cpu"]
            results["first"]["ledger_vs_map_encode"] = round(first["ledger_cpu"] / map_encode, 3)
            if not args.no_upload:
                upload = upload_cpu(csv_path, work)
                results["upload_cpu"] = round(upload, 2)
                results["first"]["ledger_vs_upload"] = round(first["ledger_cpu"] / upload, 3)
        if "noop" in wanted:
            noop = noop_in_child(ini, state)
            results["noop"] = _rounded(noop)
            if noop["sent"] != 0:
                print(f"the no-op run sent {noop['sent']} records", file=sys.stderr)
                return 1
            full = pipeline_pass(ini, state, full=True)
            results["full"] = _rounded(full)
            if "upload_cpu" in results:
                results["full"]["ledger_vs_upload"] = round(full["ledger_cpu"] / results["upload_cpu"], 3)
    if "size" in wanted:
        results["size"] = bench_size(args.size_rows)
    print(json.dumps(results, indent=2))
    return 0


def _rounded(result: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


if __name__ == "__main__":
    sys.exit(main())
