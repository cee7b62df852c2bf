#!/usr/bin/env python3
"""Cost of rendering managed-mode mappings in template worker processes (managed/sandbox.py).

A page of N records (default 100) with F mapped fields (default 15, a mix of plain names, filters,
conditions and ``as_is``) is mapped the way the engine does it: one ``map_record`` round trip per
page. Compared with rendering the same templates in-process, one after the other (what the engine
did on the event loop before). Printed per record, medians over the pages:

- in-process: CPU time of rendering in the connector's own process;
- worker round trip: wall time of the page's round trip, divided by N;
- event loop: the connector process's CPU time during the round trip (pickling, IPC), divided by N:
  what the event loop pays, all the rest runs in the worker;
- worker: the worker's CPU time (from /proc) for the page, divided by N.

    python benchmarks/templates.py [--records 100] [--pages 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from oomnitza_connector.managed.sandbox import Templates, default_pool
from oomnitza_connector.managed.templating import mapping_expression, mapping_variables, render_native

FIELDS = [
    "serial",
    "model",
    "{{ os.name }}",
    "{{ os.version|as_is }}",
    "{{ user.email|lower }}",
    "{{ ram_mb // 1024 }}",
    "{{ 'Laptop' if model.startswith('Mac') else 'Desktop' }}",
    "{{ disks|sum(attribute='size_gb') }}",
    "{{ apps|map(attribute='title')|join(', ') }}",
    "{{ phone|as_is }}",
    "{{ tags|first }}",
    "{{ location.site ~ '/' ~ location.room }}",
    "{{ last_seen[:10] }}",
    "{{ imei or 'none' }}",
    "{{ 'encrypted' if os.encrypted else 'plain' }}",
]


def record(i: int) -> dict:
    return {
        "id": f"dv-{i}",
        "serial": f"C02XK{i:05d}",
        "model": "MacBookPro18,3" if i % 2 else "OptiPlex 7090",
        "os": {"name": "macOS", "version": "14.4.1", "encrypted": i % 3 == 0},
        "user": {"email": f"User{i}@Example.com", "name": f"User {i}"},
        "ram_mb": 16384,
        "disks": [{"size_gb": 512}, {"size_gb": 1024}],
        "apps": [{"title": "Slack", "ver": "4.41"}, {"title": "Zoom", "ver": "6.0"}],
        "phone": f"555{i:07d}",
        "tags": ["fleet", "eng"],
        "location": {"site": "HQ", "room": str(100 + i % 50)},
        "last_seen": "2026-11-27T10:11:12Z",
        "imei": None,
    }


def worker_cpu() -> float:
    total = 0.0
    for worker in default_pool()._all:
        fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--fields", type=int, default=len(FIELDS))
    parser.add_argument("--pages", type=int, default=40)
    args = parser.parse_args()
    fields = [(f"f{n}", mapping_expression(FIELDS[n % len(FIELDS)])) for n in range(args.fields)]
    records = [record(i) for i in range(args.records)]
    templates = Templates()

    inproc, wall, loop_cpu, worker = [], [], [], []
    for page in range(args.pages + 3):  # the first 3 pages warm up (worker start, compile caches)
        t0 = time.process_time()
        expected = [
            {name: render_native(expr, mapping_variables(r), strict=True, label=name) for name, expr in fields}
            for r in records
        ]
        t1 = time.process_time()
        w0, c0, p0 = time.perf_counter(), time.process_time(), worker_cpu()
        out = await templates.run("map_record", [{"fields": fields, "record": r} for r in records])
        w1, c1, p1 = time.perf_counter(), time.process_time(), worker_cpu()
        assert [o.value[1] for o in out] == expected
        if page >= 3:
            inproc.append(t1 - t0)
            wall.append(w1 - w0)
            loop_cpu.append(c1 - c0)
            worker.append(p1 - p0)

    def per_record(samples: list[float]) -> str:
        return f"{statistics.median(samples) / args.records * 1e6:,.0f} µs"

    print(f"{args.records} records × {args.fields} fields, median of {args.pages} pages")
    print("| in-process render | worker round trip | event loop | worker CPU | overhead (round trip − in-process) |")
    print("|---:|---:|---:|---:|---:|")
    overhead = [w - i for w, i in zip(wall, inproc, strict=True)]
    print(
        f"| {per_record(inproc)} | {per_record(wall)} | {per_record(loop_cpu)} | {per_record(worker)} "
        f"| {per_record(overhead)} |"
    )
    default_pool().close()


if __name__ == "__main__":
    asyncio.run(main())
