"""Live progress on a terminal: a line per section with the records pulled and sent so far, the
rate and the time, read from the section's ``SectionResult`` (the pipeline counts into it as it
goes). Nothing is shown when the output is not a terminal: cron mails and log files stay clean.

While the progress is shown, log lines printed to the same terminal go above it (rich's
``FileProxy``), so they neither tear the live lines nor get overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from .sync import SectionResult

REFRESH = 0.25  # seconds between updates

Probe = Callable[..., "SectionResult | None"]  # called without arguments


def wanted(stream: TextIO, *, disabled: bool = False) -> bool:
    """Progress only for a person watching: a terminal that is not ``TERM=dumb``."""
    if disabled or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


@dataclass
class _Row:
    task: TaskID
    probe: Probe
    started: float = field(default_factory=time.monotonic)
    final: SectionResult | None = None


class Tracker:
    """The rows of one run; ``track`` a section when it starts, ``finish`` it with its result."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.rows: dict[str, _Row] = {}

    def track(self, name: str, probe: Probe) -> None:
        if self.progress is None:
            return
        task = self.progress.add_task(name, total=None, counts="starting")
        self.rows[name] = _Row(task, probe)
        self.update()

    def finish(self, name: str, result: SectionResult) -> None:
        row = self.rows.get(name)
        if row is None or self.progress is None:
            return
        row.final = result
        self.update()
        self.progress.stop_task(row.task)

    def update(self) -> None:
        if self.progress is None:
            return
        for row in self.rows.values():
            result = row.final or row.probe()
            if result is None:
                continue
            elapsed = (result.seconds if row.final else time.monotonic() - row.started) or 1e-9
            self.progress.update(row.task, counts=_counts(result, elapsed), completed=result.pulled)
        self.progress.refresh()


def _counts(result: SectionResult, elapsed: float) -> str:
    counts = result.counts
    failed = counts.get("failed_convert", 0) + counts.get("failed_send", 0)
    text = f"{result.pulled:>9,} pulled  {counts.get('sent', 0):>9,} sent"
    if counts.get("unchanged", 0):
        text += f"  {counts['unchanged']:,} unchanged"
    if failed:
        text += f"  {failed:,} failed"
    if result.pulled and elapsed >= 1:
        text += f"  {result.pulled / elapsed:,.0f}/s"
    return text


@contextlib.asynccontextmanager
async def live(stream: TextIO, *, enabled: bool) -> AsyncIterator[Tracker]:
    """Show the progress on ``stream`` while the block runs (a no-op tracker when not enabled)."""
    if not enabled:
        yield Tracker(None)
        return
    from rich.console import Console
    from rich.file_proxy import FileProxy
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(file=stream, force_terminal=True)
    progress = Progress(
        SpinnerColumn(finished_text="✓"),
        TextColumn("{task.description}", style="bold"),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        auto_refresh=False,
        transient=True,  # the summary table follows with the final numbers
        redirect_stdout=False,
        redirect_stderr=False,
    )
    from .logsetup import console_handlers

    moved = [h for h in console_handlers() if h.stream is stream]
    for handler in moved:
        handler.setStream(FileProxy(console, stream))
    tracker = Tracker(progress)
    progress.start()

    async def refresh() -> None:
        while True:
            await asyncio.sleep(REFRESH)
            try:
                tracker.update()
            except Exception:  # the display must never break a run
                logging.getLogger(__name__).debug("progress update failed", exc_info=True)

    ticker = asyncio.create_task(refresh())
    try:
        yield tracker
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        progress.stop()
        for handler in moved:
            proxy = handler.setStream(stream)
            if proxy is not None:
                with contextlib.suppress(Exception):
                    proxy.flush()
