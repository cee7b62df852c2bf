"""Change-aware sync state (``oomnitza_connector.ledger``): the rules of issue 15, on an injectable clock."""

from __future__ import annotations

import itertools
import os
import sqlite3
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from oomnitza_connector import ledger
from oomnitza_connector.errors import ConnectorError
from oomnitza_connector.ledger import (
    CHANGED,
    NEW,
    UNCHANGED,
    UNKEYED,
    RetireMax,
    ScopeOptions,
    StateError,
    Target,
    describe_changes,
    open_scope,
)
from oomnitza_connector.oomnitza import payload

DAY = 86400.0
URL = "https://acme.oomnitza.com"
TOKEN = "s3cr3t-api-token-value"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / ledger.STATE_FILE


def assets(n: int, start: int = 0, **changes: Any) -> list[dict[str, Any]]:
    return [
        {"SERIAL": f"S{i:04d}", "MODEL": f"model {i % 3}", "OWNER": f"user{i}@acme.test", **changes}
        for i in range(start, start + n)
    ]


def scope(state: Path, clock: Clock, *, url: str = URL, token: str = TOKEN, mapping: str = "m1", **opts: Any):
    read_only = opts.pop("read_only", False)
    sync = opts.pop("sync_fields", ["SERIAL"])
    name = opts.pop("name", "csv_assets")
    return open_scope(
        state,
        target=Target(url, identity=token),
        name=name,
        mapping=mapping,
        sync_fields=sync,
        options=ScopeOptions(**opts),
        read_only=read_only,
        clock=clock,
    )


def sync(state: Path, clock: Clock, records: list[dict[str, Any]], complete: bool = True, **kw: Any):
    """One run that delivers everything it sends; returns (report, verdicts)."""
    with scope(state, clock, **kw) as sc:
        verdicts = sc.classify(records)
        sc.mark_delivered(verdicts.select(verdicts.send))
        report = sc.finish(complete=complete)
    clock.advance(DAY)
    return report, verdicts


def kinds(verdicts: list[ledger.Verdict]) -> list[str]:
    return [v.kind for v in verdicts]


# -- no-op suppression --------------------------------------------------------------------------------


def test_second_run_over_unchanged_data_sends_nothing(state: Path, clock: Clock) -> None:
    first, verdicts = sync(state, clock, assets(250))
    assert first.full and first.full_reasons == ("first run: nothing remembered yet",)
    assert first.counts[NEW] == 250 and all(v.send for v in verdicts)
    assert first.full_push_done

    second, verdicts = sync(state, clock, assets(250))
    assert not second.full and second.full_reasons == ()
    assert second.counts[UNCHANGED] == 250 and second.counts["sent"] == 0
    assert not any(v.send for v in verdicts)


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(lambda r: r, id="same order"),
        pytest.param(lambda r: r[::-1], id="reversed"),
        pytest.param(lambda r: r[:40] + assets(1, start=900) + r[40:], id="a new record between"),
        pytest.param(lambda r: r[:40] + r[41:], id="one gone"),
        pytest.param(lambda r: r[50:] + r[:50], id="rotated"),
        pytest.param(lambda r: [*r[:30], r[10], *r[30:]], id="one twice"),
    ],
)
def test_records_are_found_in_any_order_batch_by_batch(state: Path, clock: Clock, order: Any) -> None:
    """Keys are first looked for where the previous batch ended (sources keep their order); a
    batch in another order is looked up key by key, and the next one expected after it."""
    sync(state, clock, assets(120))
    records = order(assets(120))
    records[7] = dict(records[7], OWNER="changed")
    with scope(state, clock) as sc:
        verdicts = [v for start in range(0, len(records), 25) for v in sc.classify(records[start : start + 25])]
        sc.finish(complete=True)
    expected = [NEW if r["SERIAL"] == "S0900" else CHANGED if i == 7 else UNCHANGED for i, r in enumerate(records)]
    assert kinds(verdicts) == expected
    assert [v.key for v in verdicts] == [r["SERIAL"] for r in records]


def test_a_changed_field_is_sent_with_its_previous_values(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(5))
    records = assets(5)
    records[2]["OWNER"] = "someone.else@acme.test"
    records.append({"SERIAL": "NEW1", "MODEL": "m", "OWNER": "o"})
    with scope(state, clock) as sc:
        verdicts = sc.classify(records)
        assert kinds(verdicts) == [UNCHANGED, UNCHANGED, CHANGED, UNCHANGED, UNCHANGED, NEW]
        before = sc.previous(verdicts[2])
        assert before == {"SERIAL": "S0002", "MODEL": "model 2", "OWNER": "user2@acme.test"}
        assert sc.previous(verdicts[5]) is None
        assert describe_changes(before, records[2]) == [("OWNER", "user2@acme.test", "someone.else@acme.test")]


def test_values_of_any_json_type_and_the_payload_as_sent(state: Path, clock: Clock) -> None:
    """The digest is of the payload's JSON as the sink sends it: a nested object whose keys come
    in another order is sent again (harmless: nothing is lost, and sources keep their order)."""
    record = {"SERIAL": 7, "N": 1.5, "FLAG": True, "NONE": None, "APPS": [{"b": 1, "a": 2}], "É": "ü", 3: "x"}
    sync(state, clock, [record])
    _, verdicts = sync(state, clock, [dict(record)])
    assert kinds(verdicts) == [UNCHANGED]
    reordered = dict(record, APPS=[{"a": 2, "b": 1}])
    _, verdicts = sync(state, clock, [reordered])
    assert kinds(verdicts) == [CHANGED]
    assert verdicts[0].blob == payload.encode(reordered)  # the bytes a bulk body carries
    with scope(state, clock) as sc:
        (verdict,) = sc.classify([dict(record, N=2)])
        assert verdict.kind == CHANGED
        stored = {"SERIAL": 7, "N": 1.5, "FLAG": True, "NONE": None, "APPS": [{"a": 2, "b": 1}], "É": "ü", "3": "x"}
        assert sc.previous(verdict) == stored


def test_payloads_with_other_fields_are_compared_as_objects(state: Path, clock: Clock) -> None:
    records = [{"SERIAL": "A", "X": 1}, {"SERIAL": "B", "Y": 2, "Z": 3}, {"SERIAL": "C", "X": 1}]
    sync(state, clock, records)
    _, verdicts = sync(state, clock, list(reversed(records)))
    assert kinds(verdicts) == [UNCHANGED] * 3
    with scope(state, clock) as sc:
        verdicts = sc.classify([{"SERIAL": "B", "Y": 2}])
        assert kinds(verdicts) == [CHANGED]
        assert sc.previous(verdicts[0]) == {"SERIAL": "B", "Y": 2, "Z": 3}


def test_records_without_a_sync_value_are_always_sent_and_never_remembered(state: Path, clock: Clock) -> None:
    records = [{"SERIAL": "", "MODEL": "x"}, {"SERIAL": None, "MODEL": "y"}, {"MODEL": "z"}]
    for _ in range(2):
        report, verdicts = sync(state, clock, records)
        assert kinds(verdicts) == [UNKEYED] * 3 and all(v.send for v in verdicts)
        assert report.counts[UNKEYED] == 3


def test_unkeyed_records_keep_their_place_in_a_first_run(state: Path, clock: Clock) -> None:
    records = [{"SERIAL": "A"}, {"SERIAL": ""}, {"SERIAL": "B"}]
    report, verdicts = sync(state, clock, records)
    assert kinds(verdicts) == [NEW, UNKEYED, NEW] and [v.key for v in verdicts] == ["A", None, "B"]
    assert report.counts == {NEW: 2, CHANGED: 0, UNCHANGED: 0, UNKEYED: 1, "sent": 3, "delivered": 3}
    _, verdicts = sync(state, clock, records)
    assert kinds(verdicts) == [UNCHANGED, UNKEYED, UNCHANGED]


def test_composite_sync_keys(state: Path, clock: Clock) -> None:
    records = [{"USER": "a", "EMAIL": "x", "N": 1}, {"USER": "a", "EMAIL": "y", "N": 1}, {"USER": "b", "N": 1}]
    sync(state, clock, records, sync_fields=["USER", "EMAIL"])
    _, verdicts = sync(state, clock, records, sync_fields=["USER", "EMAIL"])
    assert kinds(verdicts) == [UNCHANGED] * 3
    with scope(state, clock, sync_fields=["USER", "EMAIL"]) as sc:
        (verdict,) = sc.classify([{"USER": "a", "EMAIL": "y", "N": 2}])
        assert sc.previous(verdict) == {"USER": "a", "EMAIL": "y", "N": 1}


# -- full pushes ----------------------------------------------------------------------------------------


def test_full_push_when_the_state_is_older_than_full_sync_interval(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(3))  # full push at t0; the helper advances one day per run
    for _ in range(5):
        report, _ = sync(state, clock, assets(3))
        assert not report.full
    clock.advance(DAY)  # now 7 days after the full push
    report, verdicts = sync(state, clock, assets(3))
    assert report.full and "full_sync_interval" in report.full_reasons[0]
    assert all(v.send for v in verdicts) and report.counts[UNCHANGED] == 3
    report, _ = sync(state, clock, assets(3))
    assert not report.full  # the full push was remembered
    report, _ = sync(state, clock, assets(3), full_sync_interval=timedelta(hours=12))
    assert report.full


def test_full_push_when_mapping_credentials_or_flag_change(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(3))
    report, _ = sync(state, clock, assets(3), mapping="m2")
    assert report.full and report.full_reasons == ("the mapping, converters or sync fields changed",)
    assert not sync(state, clock, assets(3), mapping="m2")[0].full
    report, _ = sync(state, clock, assets(3), mapping="m2", token="another-token")
    assert report.full_reasons == ("the Oomnitza credentials changed",)
    report, _ = sync(state, clock, assets(3), mapping="m2", token="another-token", full=True)
    assert report.full_reasons == ("--full was given",)
    report, verdicts = sync(state, clock, assets(3), mapping="m2", token="another-token")
    assert not report.full and not any(v.send for v in verdicts)


def test_the_fingerprint_format_3_wrote_still_matches_its_credentials(state: Path, clock: Clock) -> None:
    """Format 3 kept a PBKDF2 fingerprint of the token: the same token is still recognized (no
    full push for it), another one is not, and the next full push keeps the keyed hash instead."""
    sync(state, clock, assets(3))
    with sqlite3.connect(state) as db:
        salt = db.execute("SELECT value FROM meta WHERE name='salt'").fetchone()[0]
        db.execute("UPDATE scopes SET identity=?", (ledger._old_fingerprint(TOKEN, salt),))
    report, _ = sync(state, clock, assets(3))
    assert not report.full
    report, _ = sync(state, clock, assets(3), token="another-token")
    assert report.full_reasons == ("the Oomnitza credentials changed",)
    with sqlite3.connect(state) as db:
        stored = db.execute("SELECT identity FROM scopes").fetchone()[0]
    assert stored.startswith("h:") and TOKEN not in stored and "another-token" not in stored


def test_partial_runs_judge_each_record_by_its_own_last_delivery(state: Path, clock: Clock) -> None:
    """Webhook syncs read a device at a time: they never complete a full push, so they do not wait
    for one; an unchanged device is sent again once its own delivery is older than the interval."""

    def device(serial: str, owner: str = "a") -> list[dict[str, Any]]:
        return [{"SERIAL": serial, "MODEL": "m", "OWNER": owner}]

    report, verdicts = sync(state, clock, device("D1"), complete=False, partial=True)
    assert kinds(verdicts) == [NEW] and verdicts[0].send and not report.full_push_done
    report, verdicts = sync(state, clock, device("D1"), complete=False, partial=True)
    assert not report.full and kinds(verdicts) == [UNCHANGED] and not verdicts[0].send
    _, verdicts = sync(state, clock, device("D1", owner="b"), complete=False, partial=True)
    assert kinds(verdicts) == [CHANGED] and verdicts[0].send
    clock.advance(6 * DAY)  # D1 was last delivered 7 days ago
    _, verdicts = sync(state, clock, device("D1", owner="b"), complete=False, partial=True)
    assert kinds(verdicts) == [UNCHANGED] and verdicts[0].send  # sent again: restores hand edits
    _, verdicts = sync(state, clock, device("D1", owner="b"), complete=False, partial=True)
    assert not verdicts[0].send
    report, verdicts = sync(state, clock, device("D1", owner="b"), complete=False, partial=True, full=True)
    assert report.full_reasons == ("--full was given",) and verdicts[0].send
    # A complete run remembers its full push; a partial run under another mapping then sends all.
    sync(state, clock, device("D1", owner="b"))
    report, verdicts = sync(state, clock, device("D1", owner="b"), complete=False, partial=True, mapping="m2")
    assert report.full_reasons == ("the mapping, converters or sync fields changed",) and verdicts[0].send
    assert not report.full_push_done


def test_another_url_is_another_state(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(3))
    report, verdicts = sync(state, clock, assets(3), url="https://sandbox.oomnitza.com")
    assert report.full and "another URL" in report.full_reasons[0]
    assert kinds(verdicts) == [NEW] * 3
    # the URL is compared without case and trailing slash
    report, _ = sync(state, clock, assets(3), url="HTTPS://ACME.oomnitza.com/")
    assert not report.full


def test_other_sync_fields_start_over(state: Path, clock: Clock) -> None:
    opts = retire_opts(after=1, guard="100%")
    sync(state, clock, assets(5), **opts)
    records = [dict(r, TAG=f"T{i}") for i, r in enumerate(assets(5))]
    with scope(state, clock, read_only=True, sync_fields=["TAG"], **opts) as plan:
        assert plan.full_reasons == ("the sync fields changed: the state starts over",)
        assert kinds(plan.classify(records)) == [NEW] * 5
    report, verdicts = sync(state, clock, records, sync_fields=["TAG"], **opts)
    assert report.full_reasons == ("the sync fields changed: the state starts over",)
    assert kinds(verdicts) == [NEW] * 5 and report.missing == 0  # the old keys are not "missing"
    _, verdicts = sync(state, clock, records, sync_fields=["TAG"], **opts)
    assert kinds(verdicts) == [UNCHANGED] * 5


def test_records_a_full_push_did_not_deliver_are_sent_until_they_are(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(4))
    with scope(state, clock, mapping="m2") as sc:  # a full push that did not deliver everything
        verdicts = sc.classify(assets(4))
        sc.mark_delivered(verdicts[:3])
        report = sc.finish(complete=True)
    assert report.full and report.full_push_done
    clock.advance(DAY)
    with scope(state, clock, mapping="m2") as sc:
        assert not sc.full
        verdicts = sc.classify(assets(4))
        assert kinds(verdicts) == [UNCHANGED] * 4
        assert [v.send for v in verdicts] == [False, False, False, True]  # not confirmed by the full push
        report = sc.finish(complete=True)  # ... and not delivered this time either
    clock.advance(DAY)
    _, verdicts = sync(state, clock, assets(4), mapping="m2")
    assert [v.send for v in verdicts] == [False, False, False, True]
    _, verdicts = sync(state, clock, assets(4), mapping="m2")
    assert not any(v.send for v in verdicts)


def test_an_incomplete_full_push_is_not_done(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(4))
    report, _ = sync(state, clock, assets(4), mapping="m2", complete=False)
    assert report.full and not report.full_push_done
    report, _ = sync(state, clock, assets(4), mapping="m2")
    assert report.full and report.full_push_done
    assert not sync(state, clock, assets(4), mapping="m2")[0].full


# -- delivered only, out of order, crashes -----------------------------------------------------------------


def test_only_delivered_records_are_remembered(state: Path, clock: Clock) -> None:
    with scope(state, clock) as sc:
        verdicts = sc.classify(assets(10))
        sc.mark_delivered(verdicts[:4])  # the batch with the rest failed
        sc.finish(complete=True)
    clock.advance(DAY)
    _, verdicts = sync(state, clock, assets(10))
    assert kinds(verdicts) == [UNCHANGED] * 4 + [NEW] * 6


def test_batches_completing_out_of_order(state: Path, clock: Clock) -> None:
    with scope(state, clock, flush_rows=1) as sc:
        batches = [sc.classify(assets(5, start)) for start in (0, 5, 10)]
        sc.mark_delivered(batches[2])
        sc.mark_delivered(batches[0])  # batch 1 never completed
        sc.finish(complete=False)
    _, verdicts = sync(state, clock, assets(15))
    assert kinds(verdicts) == [UNCHANGED] * 5 + [NEW] * 5 + [UNCHANGED] * 5


def test_a_crash_between_send_and_mark_resends(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(6))
    sc = scope(state, clock)
    changed = assets(6, OWNER="new owner")
    verdicts = sc.classify(changed)
    sc.mark_delivered(verdicts[:2])  # delivered, but still pending (flush_rows not reached) ...
    sc.db.close()  # ... when the process dies: no finish, no close
    clock.advance(DAY)
    _, verdicts = sync(state, clock, changed)
    assert kinds(verdicts) == [CHANGED] * 6  # re-sent, never lost
    _, verdicts = sync(state, clock, changed)
    assert kinds(verdicts) == [UNCHANGED] * 6


def test_marks_reach_the_file_in_batches_and_on_close(state: Path, clock: Clock) -> None:
    sc = scope(state, clock, flush_rows=4)
    verdicts = sc.classify(assets(10))
    sc.mark_delivered(verdicts[:3])
    assert _rows(state, clock) == 0  # pending
    sc.mark_delivered(verdicts[3:5])
    assert _rows(state, clock) == 5  # flushed: one transaction
    sc.mark_delivered(verdicts[5:6])
    sc.close()  # unfinished: finishes as incomplete and keeps what was delivered
    assert _rows(state, clock) == 6


def _rows(state: Path, clock: Clock, among: int = 10) -> int:
    """How many of ``assets(among)`` the file remembers (as another process reading it sees)."""
    with scope(state, clock, read_only=True) as reader:
        return sum(v.kind != NEW for v in reader.classify(assets(among)))


def test_a_failed_run_marks_nothing(state: Path, clock: Clock) -> None:
    with pytest.raises(RuntimeError), scope(state, clock) as sc:
        sc.classify(assets(3))
        raise RuntimeError("the sink is down")
    _, verdicts = sync(state, clock, assets(3))
    assert kinds(verdicts) == [NEW] * 3


# -- missing records and retirement ---------------------------------------------------------------------


def retire_opts(after: int = 2, guard: str = "50%") -> dict[str, Any]:
    return {"retire_after_runs": after, "retire_max": RetireMax.parse(guard)}


def test_missing_records_are_retired_after_complete_runs(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(10), **retire_opts())
    for run in (1, 2):
        with scope(state, clock, **retire_opts()) as sc:
            sc.classify(assets(8))  # S0008 and S0009 are gone
            report = sc.finish(complete=True)
            assert report.missing == 2
            count, listed = sc.missing()
            assert count == 2 and [c.key for c in listed] == [("S0008",), ("S0009",)]
            assert listed[0].missing_runs == run
            retirement = sc.retirement()
            if run == 1:
                assert not retirement.allowed and retirement.total == 0
                continue
            assert retirement.allowed and retirement.total == 2
            payloads = retirement.payloads({"STATUS": "Retired"})
            assert payloads == [{"SERIAL": "S0008", "STATUS": "Retired"}, {"SERIAL": "S0009", "STATUS": "Retired"}]
            sc.mark_retired(retirement.candidates)
        clock.advance(DAY)
    with scope(state, clock, **retire_opts()) as sc:
        sc.classify(assets(8))
        sc.finish(complete=True)
        assert sc.retirement().total == 0  # retired once
        assert sc.missing()[0] == 0
    clock.advance(DAY)
    _, verdicts = sync(state, clock, assets(10), **retire_opts())
    assert kinds(verdicts)[8:] == [CHANGED, CHANGED]  # back: sent again though unchanged


def test_incomplete_runs_never_count(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(10), **retire_opts(after=1))
    with scope(state, clock, **retire_opts(after=1)) as sc:
        sc.classify(assets(5))  # e.g. --record-count 5, or the source failed mid-way
        report = sc.finish(complete=False)
        assert not report.complete and report.missing == 5
        retirement = sc.retirement()
        assert not retirement.allowed and "incomplete" in retirement.reason
    clock.advance(DAY)
    with scope(state, clock, **retire_opts(after=1), filter="new filter") as sc:
        sc.classify(assets(5))
        report = sc.finish(complete=True)
        assert not report.complete and "filter changed" in (report.incomplete_reason or "")
        assert sc.retirement().total == 0
    clock.advance(DAY)
    with scope(state, clock, **retire_opts(after=1), filter="new filter") as sc:
        sc.classify(assets(5))
        sc.finish(complete=True)
        _, listed = sc.missing()
        assert {c.missing_runs for c in listed} == {1}  # only this complete run counted
        assert sc.retirement(sample=3).total == 5


def test_seen_in_any_run_resets_missing(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(4), **retire_opts(after=2, guard="100%"))
    sync(state, clock, assets(3), **retire_opts(after=2, guard="100%"))  # S0003 missing once
    sync(state, clock, assets(1, start=3), complete=False, **retire_opts(after=2, guard="100%"))  # a webhook
    with scope(state, clock, **retire_opts(after=2, guard="100%")) as sc:
        sc.classify(assets(3))
        sc.finish(complete=True)
        assert sc.missing()[1][0].missing_runs == 1
        assert sc.retirement().total == 0


@pytest.mark.parametrize(
    "guard, missing, allowed",
    [("5%", 5, True), ("5%", 6, False), ("10", 10, True), ("10", 11, False), ("0", 1, False)],
)
def test_retirement_guard(state: Path, clock: Clock, guard: str, missing: int, allowed: bool) -> None:
    opts = retire_opts(after=1, guard=guard)
    sync(state, clock, assets(100), **opts)
    with scope(state, clock, **opts) as sc:
        sc.classify(assets(100 - missing))
        sc.finish(complete=True)
        retirement = sc.retirement(sample=3)
    assert retirement.total == missing and retirement.allowed is allowed
    if allowed:
        assert len(retirement.candidates) == missing
    else:
        assert len(retirement.candidates) == min(3, missing) and retirement.payloads({"STATUS": "Retired"}) == []
        assert "nothing is retired" in retirement.reason and "retire_max" in retirement.reason


def test_retirement_is_off_by_default(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(10))
    with scope(state, clock) as sc:
        sc.classify(assets(2))
        sc.finish(complete=True)
        retirement = sc.retirement()
    assert not retirement.enabled and not retirement.allowed and "off" in retirement.reason


def test_plan_lists_what_the_next_run_retires(state: Path, clock: Clock) -> None:
    opts = retire_opts(after=2, guard="50%")
    sync(state, clock, assets(10), **opts)
    sync(state, clock, assets(8), **opts)  # missing once
    with scope(state, clock, read_only=True, **opts) as plan:
        plan.classify(assets(8))
        plan.finish(complete=True)
        planned = [c.key for c in plan.retirement().candidates]
    with scope(state, clock, **opts) as sc:
        sc.classify(assets(8))
        sc.finish(complete=True)
        assert [c.key for c in sc.retirement().candidates] == planned == [("S0008",), ("S0009",)]


def test_retire_max_parse() -> None:
    assert RetireMax.parse("5%") == RetireMax(count=None, percent=5.0)
    assert RetireMax.parse(" 50 ") == RetireMax(count=50, percent=None)
    assert RetireMax().limit(1000) == 50 and RetireMax().limit(19) == 0
    for bad in ("many", "-1", "120%", ""):
        with pytest.raises(ValueError, match="percentage"):
            RetireMax.parse(bad)


# -- plan: read-only ---------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_plan_writes_nothing(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(20), **retire_opts())
    before = _snapshot(state.parent)
    assert list(before) == [ledger.STATE_FILE]  # the writer left no -wal/-shm behind
    with scope(state, clock, read_only=True, **retire_opts()) as plan:
        verdicts = plan.classify(assets(15, OWNER="changed"))
        assert kinds(verdicts) == [CHANGED] * 15
        assert plan.previous(verdicts[0]) == assets(1)[0]
        report = plan.finish(complete=True)
        assert report.missing == 5 and plan.missing()[0] == 5
        plan.retirement()
        with pytest.raises(RuntimeError):
            plan.mark_delivered(verdicts)
        with pytest.raises(RuntimeError):
            plan.mark_retired([])
    assert _snapshot(state.parent) == before
    _, verdicts = sync(state, clock, assets(15))
    assert kinds(verdicts) == [UNCHANGED] * 15


def test_plan_without_a_state_file_sees_everything_new(tmp_path: Path, clock: Clock) -> None:
    state = tmp_path / "nowhere" / ledger.STATE_FILE
    with scope(state, clock, read_only=True) as plan:
        assert plan.full and plan.full_reasons == ("first run: nothing remembered yet",)
        assert kinds(plan.classify(assets(3))) == [NEW] * 3
        assert plan.finish(complete=True).missing == 0
        assert plan.missing() == (0, [])
    assert not (tmp_path / "nowhere").exists()


# -- the file -------------------------------------------------------------------------------------------------


def test_file_is_private_and_keeps_no_secret(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(3))
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert TOKEN.encode() not in state.read_bytes()
    assert TOKEN not in repr(Target(URL, identity=TOKEN))


def test_newer_schema_is_refused_in_one_line(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(1))
    db = sqlite3.connect(state)
    db.execute(f"PRAGMA user_version = {ledger.SCHEMA_VERSION + 1}")
    db.close()
    for read_only in (False, True):
        with pytest.raises(StateError) as err:
            scope(state, clock, read_only=read_only)
        message = str(err.value)
        assert "newer connector" in message and str(state) in message and "\n" not in message


@pytest.mark.parametrize("content", [b"this is not a database at all" * 200, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_damaged_file_is_refused_in_one_line(state: Path, clock: Clock, content: bytes) -> None:
    state.parent.mkdir(parents=True)
    state.write_bytes(content)
    for read_only in (False, True):
        with pytest.raises(StateError) as err:
            scope(state, clock, read_only=read_only)
        assert "damaged or not a sync state file" in str(err.value) and "\n" not in str(err.value)


def test_another_programs_database_is_refused(state: Path, clock: Clock) -> None:
    state.parent.mkdir(parents=True)
    db = sqlite3.connect(state)
    db.execute("CREATE TABLE records (x)")
    db.close()
    with pytest.raises(StateError, match="not a sync state file"):
        scope(state, clock)


def test_locked_file_is_refused_in_one_line(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(2))
    holder = sqlite3.connect(state, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for read_only in (False, True):
            with pytest.raises(StateError) as err:
                open_scope(
                    state,
                    target=Target(URL),
                    name="csv_assets",
                    mapping="m1",
                    sync_fields=["SERIAL"],
                    read_only=read_only,
                    clock=clock,
                    busy_timeout=0.05,
                )
            assert "locked by another connector process" in str(err.value) and "\n" not in str(err.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_state_errors_are_connector_errors() -> None:
    assert issubclass(StateError, ConnectorError)


def test_compaction_reclaims_replaced_values(state: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "COMPACT_MIN", 10)
    monkeypatch.setattr(ledger, "BLOCK_ROWS", 20)
    records = assets(100)
    sync(state, clock, records)
    for round_ in range(4):  # a fifth of the records changes each run
        for r in records[round_ * 20 : round_ * 20 + 20]:
            r["OWNER"] = f"owner in round {round_}"
        sync(state, clock, records)
    db = sqlite3.connect(state)
    blocks = dict(db.execute("SELECT id, total FROM blocks").fetchall())
    db.close()
    with scope(state, clock, read_only=True) as reader:  # where the records' values are (storage internals)
        used = set(reader._records.block)
    total, live = sum(blocks.values()), _rows(state, clock, among=100)
    unused = len(set(blocks) - used)
    # 100 records written 180 times: without compaction 180 slots, 80 of them garbage
    assert live == 100 and total <= 120 and unused <= 1
    records = [dict(r) for r in records]
    records[5]["OWNER"] = "x"
    records[90]["OWNER"] = "y"
    with scope(state, clock) as sc:
        verdicts = sc.classify(records)
        assert sc.previous(verdicts[5])["OWNER"] == "owner in round 0"  # type: ignore[index]
        assert sc.previous(verdicts[90])["OWNER"] == "user90@acme.test"  # type: ignore[index]


def test_long_forgotten_records_are_pruned(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(5))
    sync(state, clock, assets(3))
    clock.advance(400 * DAY)
    sync(state, clock, assets(3))
    assert _rows(state, clock) == 3


# -- plan's display ---------------------------------------------------------------------------------------


def test_describe_changes_elides_long_values_and_secrets() -> None:
    before = {"SERIAL": "A", "NOTES": "short", "PASSWORD": "old-pass", "GONE": 1}
    after = {"SERIAL": "A", "NOTES": "x" * 500, "PASSWORD": "new-pass", "ADDED": "v"}
    rows = describe_changes(before, after, secret_fields=["password"], max_len=40)
    assert rows[0][0] == "NOTES" and rows[0][1] == "short"
    assert len(rows[0][2]) < 60 and rows[0][2].endswith("(500 chars)")
    assert ("PASSWORD", "********", "********") in rows
    assert ("ADDED", "(none)", "v") in rows
    assert all(name != "GONE" for name, _, _ in rows)
    scrubbed = describe_changes({"T": "token abcd"}, {"T": "token efgh"}, scrub=lambda s: s.replace("efgh", "****"))
    assert scrubbed == [("T", "token abcd", "token ****")]


def test_digest_of_is_stable() -> None:
    assert ledger.digest_of({"b": 1, "a": [1, 2]}) == ledger.digest_of({"a": [1, 2], "b": 1})
    assert ledger.digest_of({"a": 1}) != ledger.digest_of({"a": 2})


def test_scopes_of_one_file_are_independent(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(3))
    with open_scope(
        state, target=Target(URL, identity=TOKEN), name="csv_users", mapping="m1", sync_fields=["SERIAL"], clock=clock
    ) as other:
        assert kinds(other.classify(assets(3))) == [NEW] * 3
    assert os.path.exists(state)


def test_two_writers_share_the_file(state: Path, clock: Clock) -> None:
    """The nightly upload and the webhook server (or two managed integrations) at once."""
    nightly, webhook = scope(state, clock, flush_rows=2), scope(state, clock, flush_rows=1)
    nightly_verdicts = nightly.classify(assets(4))
    webhook_verdicts = webhook.classify(assets(1, start=2, OWNER="moved"))
    nightly.mark_delivered(nightly_verdicts[:2])
    webhook.mark_delivered(webhook_verdicts)
    nightly.mark_delivered(nightly_verdicts[3:])
    webhook.finish(complete=False)
    nightly.finish(complete=True)
    webhook.close()
    nightly.close()
    records = assets(4)
    records[2]["OWNER"] = "moved"
    _, verdicts = sync(state, clock, records)
    assert kinds(verdicts) == [UNCHANGED] * 4
    assert sorted(p.name for p in state.parent.iterdir()) == [ledger.STATE_FILE]


def test_writers_creating_the_file_at_once(tmp_path: Path, clock: Clock) -> None:
    """Managed integrations start together: each opens (and one creates) the same new file. (An
    open that read the file's marks one by one could see a half-created file as another
    program's database.)"""
    import threading

    def open_one(path: Path, number: int, start: threading.Barrier, errors: list[str]) -> None:
        start.wait()
        try:
            with scope(path, clock, name=f"integration {number}") as sc:
                sc.finish(complete=True)
        except ConnectorError as exc:
            errors.append(str(exc))

    for round_ in range(25):
        path, start, errors = tmp_path / str(round_) / ledger.STATE_FILE, threading.Barrier(6), []
        threads = [threading.Thread(target=open_one, args=(path, n, start, errors)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []


def test_finish_from_a_worker_thread(state: Path, clock: Clock) -> None:
    import asyncio

    async def run() -> ledger.RunReport:
        with scope(state, clock) as sc:
            sc.mark_delivered(sc.classify(assets(3)))
            return await asyncio.to_thread(sc.finish, complete=True)

    assert asyncio.run(run()).counts["delivered"] == 3


# -- snapshot + journal (storage) -------------------------------------------------------------------------


def test_a_crash_after_confirmed_batches_loses_nothing_delivered(state: Path, clock: Clock) -> None:
    """Marks written to the journal (flush_rows reached) survive a crash before finish: the next
    open replays them, and the next finish merges them into the snapshot."""
    sync(state, clock, assets(6))
    sc = scope(state, clock, flush_rows=2)
    changed = assets(6, OWNER="new owner") + assets(2, start=6)
    verdicts = sc.classify(changed)
    sc.mark_delivered(verdicts[:2])  # written (one journal row)
    sc.mark_delivered(verdicts[6:])  # two new records: written
    sc.mark_delivered(verdicts[2:3])  # pending only ...
    sc.db.close()  # ... when the process dies: no finish, no close
    clock.advance(DAY)
    with scope(state, clock, read_only=True) as plan:  # a reader replays the journal too
        assert kinds(plan.classify(changed)) == [UNCHANGED] * 2 + [CHANGED] * 4 + [UNCHANGED] * 2
        assert plan.previous(plan.classify(changed[2:3])[0])["OWNER"] == "user2@acme.test"  # type: ignore[index]
    report, verdicts = sync(state, clock, changed)
    assert kinds(verdicts) == [UNCHANGED] * 2 + [CHANGED] * 4 + [UNCHANGED] * 2
    assert report.missing == 0
    _, verdicts = sync(state, clock, changed)
    assert kinds(verdicts) == [UNCHANGED] * 8
    db = sqlite3.connect(state)
    try:
        assert db.execute("SELECT count(*) FROM journal").fetchone()[0] == 0  # merged
    finally:
        db.close()


def test_two_writers_finishing_merge_rather_than_overwrite(state: Path, clock: Clock) -> None:
    """The webhook server and a scheduled upload of one section, both finishing complete runs:
    the second finish builds on the snapshot the first wrote (re-read inside its transaction)."""
    sync(state, clock, assets(4))
    upload, webhook = scope(state, clock), scope(state, clock, partial=True)
    records = assets(4, OWNER="moved") + assets(1, start=4)
    upload_verdicts = upload.classify(records[:2] + records[4:])  # S0000, S0001 changed; S0004 new
    webhook_verdicts = webhook.classify(records[2:4])  # S0002, S0003 changed
    upload.mark_delivered(upload_verdicts)
    webhook.mark_delivered(webhook_verdicts)
    upload.finish(complete=True)  # merges first: S0002/S0003 were not seen by it, so missing once
    report = webhook.finish(complete=False)  # another generation now: re-read, then its own marks
    upload.close()
    webhook.close()
    assert report.counts["delivered"] == 2
    _, verdicts = sync(state, clock, records)
    assert kinds(verdicts) == [UNCHANGED] * 5  # every delivery kept, none overwritten
    with scope(state, clock) as sc:
        sc.classify(records)
        assert sc.finish(complete=True).missing == 0


def test_two_complete_writers_both_count(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(3))
    first, second = scope(state, clock), scope(state, clock)
    first.mark_delivered(first.classify(assets(1, start=10)))
    second.mark_delivered(second.classify(assets(1, start=20)))
    first.finish(complete=False)
    second.finish(complete=True)
    first.close()
    second.close()
    with scope(state, clock, read_only=True) as plan:
        verdicts = plan.classify(assets(3) + assets(1, start=10) + assets(1, start=20))
        assert kinds(verdicts) == [UNCHANGED] * 5


def test_a_key_twice_in_one_run_is_remembered_once(state: Path, clock: Clock) -> None:
    records = [*assets(3), dict(assets(1)[0], OWNER="second copy")]
    sync(state, clock, records)
    report, verdicts = sync(state, clock, assets(3))
    assert [v.kind for v in verdicts] == [CHANGED, UNCHANGED, UNCHANGED]  # the last copy counts
    assert report.missing == 0
    _, verdicts = sync(state, clock, assets(3))
    assert kinds(verdicts) == [UNCHANGED] * 3


def test_values_too_large_are_not_kept_but_compared(state: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "STORE_MAX", 100)
    records = [{"SERIAL": "A", "NOTES": "x" * 200}, {"SERIAL": "B", "NOTES": "short"}]
    sync(state, clock, records)
    with scope(state, clock) as sc:
        verdicts = sc.classify([dict(records[0], NOTES="y" * 200), dict(records[1], NOTES="other")])
        assert kinds(verdicts) == [CHANGED, CHANGED]
        assert sc.previous(verdicts[0]) is None
        assert sc.previous(verdicts[1]) == {"SERIAL": "B", "NOTES": "short"}


def test_a_crash_replays_the_digests_of_values_not_kept(
    state: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal row leaves out the digests when its block holds every line (they are recomputed
    from the lines on replay), and writes them when a value was too large to keep."""
    monkeypatch.setattr(ledger, "STORE_MAX", 100)
    records = [{"SERIAL": "A", "NOTES": "x" * 200}, {"SERIAL": "B", "NOTES": "short"}]
    sc = scope(state, clock, flush_rows=1)
    verdicts = sc.classify(records)
    sc.mark_delivered(verdicts[1:])  # every line kept: no digests written
    sc.mark_delivered(verdicts[:1])  # a line too large: its digest is written
    sc.db.close()  # the process dies before finish
    with sqlite3.connect(state) as db:
        assert db.execute("SELECT digests IS NULL FROM journal ORDER BY id").fetchall() == [(1,), (0,)]
    clock.advance(DAY)
    report, verdicts = sync(state, clock, records)  # (a full push: the first run never finished)
    assert kinds(verdicts) == [UNCHANGED, UNCHANGED] and report.full
    report, _ = sync(state, clock, records)
    assert report.counts["sent"] == 0


def test_a_block_the_journal_names_must_be_there(state: Path, clock: Clock) -> None:
    sc = scope(state, clock, flush_rows=1)
    sc.mark_delivered(sc.classify(assets(2)))
    sc.db.close()
    with sqlite3.connect(state) as db:
        db.execute("DELETE FROM blocks")
    with pytest.raises(StateError) as err:
        scope(state, clock)
    assert "damaged or not a sync state file" in str(err.value) and "\n" not in str(err.value)


def test_a_state_of_the_third_format_is_kept(state: Path, clock: Clock) -> None:
    """Format 3 wrote its journal keys as plain JSON and every digest: read as it is (by a plan
    too), and marked as format 4 by the next writer; nothing is sent again."""
    sync(state, clock, assets(4))
    sc = scope(state, clock, flush_rows=1)
    sc.mark_delivered(sc.classify(assets(2, start=4)))  # journal rows, then a crash
    sc.db.close()
    with sqlite3.connect(state) as db:  # as format 3 wrote them
        for block, data in db.execute("SELECT id, data FROM blocks").fetchall():
            lines = ledger._block_lines(ledger._decompress(data))  # (a newline alone between two)
            db.execute("UPDATE blocks SET data=? WHERE id=?", (ledger._compress(b"\n".join(lines)), block))
        for entry, keys, block in db.execute("SELECT id, keys, block FROM journal").fetchall():
            data = db.execute("SELECT data FROM blocks WHERE id=?", (block,)).fetchone()[0]
            digests = ledger._digest_bytes(ledger._digests(ledger._decompress(data).split(b"\n")))
            db.execute("UPDATE journal SET keys=?, digests=? WHERE id=?", (ledger._decompress(keys), digests, entry))
        db.execute("PRAGMA user_version = 3")
    changed = assets(6, OWNER="moved")
    with scope(state, clock, read_only=True) as plan:
        assert not plan.full and kinds(plan.classify(assets(6))) == [UNCHANGED] * 6
        owners = [plan.previous(v)["OWNER"] for v in plan.classify(changed)]  # type: ignore[index]
        assert owners == [f"user{i}@acme.test" for i in range(6)]
    report, verdicts = sync(state, clock, assets(6))
    assert not report.full and kinds(verdicts) == [UNCHANGED] * 6
    with sqlite3.connect(state) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == ledger.SCHEMA_VERSION


def test_a_state_of_the_first_format_starts_over(state: Path, clock: Clock) -> None:
    """Format 1 (a row per record) is not read: the next run is a full push that says why."""
    state.parent.mkdir(parents=True)
    db = sqlite3.connect(state)
    db.executescript(
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value);"
        "CREATE TABLE scopes (id INTEGER PRIMARY KEY, target TEXT NOT NULL, name TEXT NOT NULL, identity TEXT, "
        "mapping TEXT, filter TEXT, sync_fields TEXT NOT NULL, layout INTEGER, created_at INTEGER NOT NULL, "
        "last_run_at INTEGER, last_complete_at INTEGER, last_full_at INTEGER, runs INTEGER NOT NULL DEFAULT 0, "
        "complete_runs INTEGER NOT NULL DEFAULT 0, slots_written INTEGER NOT NULL DEFAULT 0, "
        "slots_live INTEGER NOT NULL DEFAULT 0, UNIQUE (target, name));"
        "CREATE TABLE layouts (id INTEGER PRIMARY KEY, fields TEXT NOT NULL UNIQUE);"
        "CREATE TABLE blocks (id INTEGER PRIMARY KEY, scope INTEGER NOT NULL, layout INTEGER, "
        "total INTEGER NOT NULL, data BLOB NOT NULL);"
        "CREATE TABLE records (scope INTEGER NOT NULL, key TEXT NOT NULL, digest INTEGER, first_seen INTEGER "
        "NOT NULL, last_seen INTEGER, last_sent INTEGER, missing INTEGER NOT NULL DEFAULT 0, retired INTEGER, "
        "block INTEGER, slot INTEGER, PRIMARY KEY (scope, key)) WITHOUT ROWID;"
        f"INSERT INTO scopes (target, name, sync_fields, mapping, created_at, last_full_at, runs) "
        f"VALUES ('{URL}', 'csv_assets', '[\"SERIAL\"]', 'x', 1, 1, 3);"
        "INSERT INTO records (scope, key, digest, first_seen) VALUES (1, 'S0000', 1, 1);"
        f"PRAGMA application_id = {ledger.APPLICATION_ID}; PRAGMA user_version = 1;"
    )
    db.close()
    with scope(state, clock, read_only=True) as plan:  # plan reads it as empty, writes nothing
        assert plan.full and plan.full_reasons == (ledger._RESTARTED,)
        assert kinds(plan.classify(assets(2))) == [NEW] * 2
    report, verdicts = sync(state, clock, assets(2))
    assert report.full and report.full_reasons == (ledger._RESTARTED,) and report.full_push_done
    assert kinds(verdicts) == [NEW] * 2
    report, verdicts = sync(state, clock, assets(2))
    assert not report.full and kinds(verdicts) == [UNCHANGED] * 2


def test_a_state_of_the_second_format_starts_over(state: Path, clock: Clock) -> None:
    """Format 2 digested the values without their field names: its digests mean nothing now."""
    sync(state, clock, assets(3))
    db = sqlite3.connect(state)
    db.executescript(
        "CREATE TABLE layouts (id INTEGER PRIMARY KEY, fields TEXT NOT NULL UNIQUE);"
        "ALTER TABLE blocks ADD COLUMN layout INTEGER; PRAGMA user_version = 2;"
    )
    db.close()
    report, verdicts = sync(state, clock, assets(3))
    assert report.full and report.full_reasons == (ledger._RESTARTED,) and kinds(verdicts) == [NEW] * 3
    with sqlite3.connect(state) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == ledger.SCHEMA_VERSION
        assert not db.execute("SELECT name FROM sqlite_master WHERE name='layouts'").fetchall()
    report, verdicts = sync(state, clock, assets(3))
    assert not report.full and kinds(verdicts) == [UNCHANGED] * 3


def test_a_damaged_snapshot_is_refused_in_one_line(state: Path, clock: Clock) -> None:
    sync(state, clock, assets(3))
    db = sqlite3.connect(state)
    db.execute("UPDATE snapshots SET columns = x'00'")
    db.commit()
    db.close()
    for read_only in (False, True):
        with pytest.raises(StateError) as err:
            scope(state, clock, read_only=read_only)
        assert "damaged or not a sync state file" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("lines", [[], [b""], [b'{"a":1}'], [b'{"a":1}', b"", b'{"b":"x\\ny"}', b"[2]"]])
def test_lines_slice_index_and_join_like_a_list(lines: list[bytes]) -> None:
    """Verdicts keep the payloads' JSON as lines of one buffer; every view of them reads like the list."""
    whole = ledger.Lines.of(lines)
    assert list(whole) == lines and len(whole) == len(lines)
    assert whole.joined() == b",\n".join(lines)
    for start in range(len(lines) + 1):
        for stop in range(start, len(lines) + 1):
            part = ledger.Lines.of(lines)[start:stop]
            assert list(part) == lines[start:stop] and len(part) == stop - start
            assert part.joined() == b",\n".join(lines[start:stop])
            assert [part[i] for i in range(-len(part), len(part))] == lines[start:stop] * 2
    assert list(whole[::-1]) == lines[::-1]
    with pytest.raises(IndexError):
        whole[len(lines)]


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 8])
def test_a_line_too_long_is_found_without_measuring_each(limit: int) -> None:
    """``_has_long_line`` agrees with measuring every line, for every arrangement of short lines."""
    for lengths in itertools.chain.from_iterable(itertools.product(range(10), repeat=n) for n in range(1, 4)):
        data = b",\n".join(b"x" * length for length in lengths)
        assert ledger._has_long_line(data, limit) == (max(lengths) > limit), (lengths, limit)
    assert not ledger._has_long_line(b"", limit)


def snapshot_checked(state: Path) -> bool:
    with sqlite3.connect(state) as db:
        return bool(db.execute("SELECT unique_keys FROM snapshots").fetchone()[0])


def run_in_slices(sc: ledger.Scope, records: list[dict[str, Any]], size: int = 10) -> list[str]:
    found: list[str] = []
    for start in range(0, len(records), size):
        verdicts = sc.classify(records[start : start + size])
        sc.mark_delivered(verdicts.select(verdicts.send))
        found += kinds(verdicts)
    return found


def test_keys_checked_once_are_found_by_position_without_an_index(state: Path, clock: Clock) -> None:
    """A first run's keys are not checked for repeats; the next run checks them (building the
    index) and says so in the snapshot, even when it changes nothing; later runs over a source in
    the same order, or with batches swapped, build no index."""
    records = assets(100)
    sync(state, clock, records)
    assert not snapshot_checked(state)
    sync(state, clock, records)  # a no-op run: the snapshot is written for the check alone
    assert snapshot_checked(state)
    swapped = records[:20] + records[30:40] + records[20:30] + records[40:]
    for order in (records, swapped):
        with scope(state, clock, full=True) as sc:
            assert not sc._records.indexed
            assert run_in_slices(sc, order) == [UNCHANGED] * 100
            sc.finish(complete=True)
            assert not sc._records.indexed
        clock.advance(DAY)
    assert snapshot_checked(state)


def test_a_source_in_another_order_builds_the_index(state: Path, clock: Clock) -> None:
    records = assets(100)
    sync(state, clock, records)
    sync(state, clock, records)
    shuffled = records[::-1]
    changed = [dict(r, OWNER="moved") if i % 7 == 0 else r for i, r in enumerate(shuffled)]
    with scope(state, clock) as sc:
        found = run_in_slices(sc, changed)
        assert sc._records.indexed  # (no slice lies in the order remembered)
        assert found == [CHANGED if i % 7 == 0 else UNCHANGED for i in range(100)]
        sc.finish(complete=True)
    clock.advance(DAY)
    _, verdicts = sync(state, clock, changed + assets(1, start=100))
    assert kinds(verdicts) == [UNCHANGED] * 100 + [NEW]
    assert snapshot_checked(state)


def test_a_first_run_with_a_key_twice_is_checked_by_the_next_open(state: Path, clock: Clock) -> None:
    records = [*assets(3), dict(assets(1)[0], OWNER="second copy")]
    sync(state, clock, records)
    assert not snapshot_checked(state)
    with scope(state, clock) as sc:  # built at once: the repeated key is dropped before any lookup
        assert sc._records.indexed and len(sc._records) == 3
