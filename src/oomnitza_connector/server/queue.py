"""The durable queue of webhook events: device ids waiting to be synced, kept in SQLite.

An event answered ``202 Accepted`` is committed here first (a write that survives a crash or a
power loss), and it leaves the queue only once its device is in Oomnitza, or is known never to
be (Jamf no longer has it). While Oomnitza is down, failed devices wait with an exponential
back-off and are tried again, forever; a restart makes every waiting device due at once.

One row per (section, device): events for a device already waiting coalesce into it. The row's
``generation`` counts them, so an event arriving while its device is being synced makes that row
stay (to be synced again) instead of being deleted with the sync that started before it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

MAX_PENDING = 10_000  # devices waiting; beyond this new events are refused with 503
BATCH = 100  # devices of one section synced together
FIRST_RETRY = 5.0  # seconds; doubles per failed attempt
MAX_RETRY = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    section TEXT NOT NULL,
    device TEXT NOT NULL,
    received REAL NOT NULL,     -- wall clock of the first event
    due REAL NOT NULL,          -- wall clock when it may be synced
    generation INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (section, device)
)
"""

Item = tuple[str, int]  # (device id, generation)


class EventQueue:
    """Thread-safe: the HTTP threads add, the worker takes, finishes and retries."""

    def __init__(
        self,
        path: Path | str,
        *,
        window: float = 2.0,
        clock: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.path = str(path)
        self.window, self.clock, self.max_pending = window, clock, max_pending
        self.lock = threading.Lock()
        self.wake = threading.Event()
        if self.path != ":memory:":
            _create_private(self.path)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # an acknowledged event is on disk
        self.db.execute(_SCHEMA)
        # Whatever waited through a restart is tried at once: the cause may have been fixed.
        self.db.execute("UPDATE events SET due = MIN(due, ?)", (self.clock(),))
        self.count = self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def add(self, section: str, device: str) -> bool:
        """Keep an event; False when the queue is full (the caller answers 503)."""
        now = self.clock()
        with self.lock:
            known = self.db.execute(
                "SELECT 1 FROM events WHERE section = ? AND device = ?", (section, device)
            ).fetchone()
            if known:
                self.db.execute(
                    "UPDATE events SET generation = generation + 1 WHERE section = ? AND device = ?", (section, device)
                )
            elif self.count >= self.max_pending:
                return False
            else:
                self.db.execute(
                    "INSERT INTO events (section, device, received, due) VALUES (?, ?, ?, ?)",
                    (section, device, now, now + self.window),
                )
                self.count += 1
        self.wake.set()
        return True

    def take_due(self, sections: Iterable[str], *, flush: bool = False) -> dict[str, list[Item]]:
        """Devices ready to sync, per section (at most ``BATCH`` each). ``flush`` (at shutdown) also
        takes those still inside their coalescing window, but not those waiting after a failure."""
        now = self.clock()
        limit = now + self.window if flush else now
        due: dict[str, list[Item]] = {}
        with self.lock:
            for section in sections:
                rows = self.db.execute(
                    "SELECT device, generation FROM events WHERE section = ? AND due <= ? "
                    "AND (attempts = 0 OR due <= ?) ORDER BY due LIMIT ?",
                    (section, limit, now, BATCH),
                ).fetchall()
                if rows:
                    due[section] = [(device, generation) for device, generation in rows]
        return due

    def done(self, section: str, items: Iterable[Item]) -> None:
        """These devices are synced (or never will be): forget them, unless a newer event came."""
        with self.lock:
            for device, generation in items:
                cursor = self.db.execute(
                    "DELETE FROM events WHERE section = ? AND device = ? AND generation = ?",
                    (section, device, generation),
                )
                self.count -= cursor.rowcount
                if not cursor.rowcount:
                    # A newer event arrived during the sync: sync the device once more, now.
                    self.db.execute(
                        "UPDATE events SET attempts = 0, due = ? WHERE section = ? AND device = ?",
                        (self.clock(), section, device),
                    )
        self.wake.set()

    def retry(self, section: str, items: Iterable[Item]) -> float:
        """These devices could not be synced: try again after a back-off; returns its seconds."""
        now = self.clock()
        longest = 0.0
        with self.lock:
            for device, _ in items:
                row = self.db.execute(
                    "SELECT attempts FROM events WHERE section = ? AND device = ?", (section, device)
                ).fetchone()
                attempts = (row[0] if row else 0) + 1
                delay = min(MAX_RETRY, FIRST_RETRY * 2 ** (attempts - 1))
                longest = max(longest, delay)
                self.db.execute(
                    "UPDATE events SET attempts = ?, due = ? WHERE section = ? AND device = ?",
                    (attempts, now + delay, section, device),
                )
        return longest

    def seconds_to_next(self, sections: Iterable[str]) -> float | None:
        """Seconds until the next device of ``sections`` is due (None: nothing waits)."""
        names = list(sections)
        if not names:
            return None
        marks = ",".join("?" * len(names))
        with self.lock:
            row = self.db.execute(f"SELECT MIN(due) FROM events WHERE section IN ({marks})", names).fetchone()
        return None if row[0] is None else max(0.0, row[0] - self.clock())

    def waiting(self) -> dict[str, int]:
        """Devices waiting per section."""
        with self.lock:
            return dict(self.db.execute("SELECT section, COUNT(*) FROM events GROUP BY section").fetchall())

    def __len__(self) -> int:
        return self.count

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _create_private(path: str) -> None:
    """The queue holds device ids only, but it is nobody else's business: owner-only (0600)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
