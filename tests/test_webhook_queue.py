"""The webhook server's durable queue, on an injected clock (no waiting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomnitza_connector.server.queue import FIRST_RETRY, MAX_RETRY, EventQueue

SECTIONS = ("casper", "casper.MDM")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_queue(path: Path, clock: Clock, **kwargs: object) -> EventQueue:
    return EventQueue(path / "q.db", window=2.0, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_events_for_one_device_coalesce_until_the_window_passes(tmp_path: Path, clock: Clock) -> None:
    queue = open_queue(tmp_path, clock)
    for _ in range(5):
        assert queue.add("casper", "7")
    assert queue.add("casper.MDM", "7") and queue.add("casper", "8")
    assert len(queue) == 3
    assert queue.take_due(SECTIONS) == {}
    clock.now += 2
    due = queue.take_due(SECTIONS)
    assert sorted(due) == ["casper", "casper.MDM"] and [d for d, _ in due["casper"]] == ["7", "8"]
    queue.done("casper", due["casper"])
    queue.done("casper.MDM", due["casper.MDM"])
    assert len(queue) == 0 and queue.take_due(SECTIONS) == {}


def test_an_event_during_a_sync_keeps_the_device_queued(tmp_path: Path, clock: Clock) -> None:
    queue = open_queue(tmp_path, clock)
    queue.add("casper", "7")
    clock.now += 2
    taken = queue.take_due(SECTIONS)["casper"]
    queue.add("casper", "7")  # the device changed again after it was fetched
    queue.done("casper", taken)
    assert len(queue) == 1
    again = queue.take_due(SECTIONS)["casper"]  # due at once
    queue.done("casper", again)
    assert len(queue) == 0


def test_failures_back_off_and_survive_a_restart(tmp_path: Path, clock: Clock) -> None:
    queue = open_queue(tmp_path, clock)
    queue.add("casper", "7")
    clock.now += 2
    waits = []
    for _ in range(10):
        items = queue.take_due(SECTIONS)["casper"]
        waits.append(queue.retry("casper", items))
        assert queue.take_due(SECTIONS) == {}
        assert queue.take_due(SECTIONS, flush=True) == {}  # a shutdown does not hurry a failed one
        clock.now += waits[-1]
    assert waits[:4] == [FIRST_RETRY, 2 * FIRST_RETRY, 4 * FIRST_RETRY, 8 * FIRST_RETRY]
    assert waits[-1] == MAX_RETRY
    queue.retry("casper", queue.take_due(SECTIONS)["casper"])
    queue.close()
    reopened = open_queue(tmp_path, clock)  # a restart: whatever waited is due at once
    assert [d for d, _ in reopened.take_due(SECTIONS)["casper"]] == ["7"]
    assert len(reopened) == 1


def test_shutdown_flushes_the_coalescing_window(tmp_path: Path, clock: Clock) -> None:
    queue = open_queue(tmp_path, clock)
    queue.add("casper", "7")
    assert queue.take_due(SECTIONS) == {}
    assert [d for d, _ in queue.take_due(SECTIONS, flush=True)["casper"]] == ["7"]


def test_a_full_queue_refuses_new_devices_only(tmp_path: Path, clock: Clock) -> None:
    queue = open_queue(tmp_path, clock, max_pending=2)
    assert queue.add("casper", "1") and queue.add("casper", "2")
    assert not queue.add("casper", "3")
    assert queue.add("casper", "1")  # already waiting: coalesces
    assert len(queue) == 2


def test_devices_of_sections_not_served_stay(tmp_path: Path, clock: Clock) -> None:
    queue = open_queue(tmp_path, clock)
    queue.add("casper.old", "7")
    clock.now += 2
    assert queue.take_due(SECTIONS) == {}
    assert queue.waiting() == {"casper.old": 1}
    assert queue.seconds_to_next(SECTIONS) is None and queue.seconds_to_next(["casper.old"]) == 0
