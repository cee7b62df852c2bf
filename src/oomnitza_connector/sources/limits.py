"""Size limits of the file sources (CSV and JSON).

A hostile or damaged file must cost bounded memory and fail alone: every record is bounded by a
size setting, and pages of records are bounded by an estimate of their memory, not only by their
count (a page of 1,000 rows of 100,000 cells each would need gigabytes).
"""

from __future__ import annotations

# What one cell (or JSON value) costs in memory besides its characters: a str header, a list slot
# and a dict entry. Used for page budgets and for the widest header max_row_size admits.
CELL_COST = 64
# Pages go to the pipeline when their records are estimated to take this much memory (or reach
# PAGE_SIZE records, whichever comes first).
PAGE_BUDGET = 8 << 20
PAGE_SIZE = 1000


def human(size: int) -> str:
    """1048576 → "1 MiB", 1500 → "1.5 KiB" (for messages)."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"
