"""Size limits of the file sources (CSV and JSON).

A hostile or damaged file must cost bounded memory and fail alone: every record is bounded by a
size setting, and pages of records are bounded by an estimate of their memory, not only by their
count (a page of 1,000 rows of 100,000 cells each would need gigabytes).
"""

from __future__ import annotations

import re

from ..errors import ConfigError

# What one cell (or JSON value) costs in memory besides its characters: a str header, a list slot
# and a dict entry. Used for page budgets and for the widest header max_row_size admits.
CELL_COST = 64
# Pages go to the pipeline when their records are estimated to take this much memory (or reach
# PAGE_SIZE records, whichever comes first).
PAGE_BUDGET = 8 << 20
PAGE_SIZE = 1000

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}
_UNITS |= {"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
_SIZE = re.compile(r"\s*(\d+)\s*([a-z]*)\s*\Z", re.IGNORECASE)


def parse_size(text: str, *, setting: str) -> int:
    """``"8M"`` → 8388608. Plain numbers are bytes; K, M and G (or KB, MiB, ...) are powers of 1024."""
    match = _SIZE.match(text or "")
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None or int(match.group(1)) == 0:
        raise ConfigError(f"{setting} = {text!r} is not a size (write e.g. 512K, 8M or 1G)")
    return int(match.group(1)) * unit


def human(size: int) -> str:
    """1048576 → "1 MiB", 1500 → "1.5 KiB" (for messages)."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"
