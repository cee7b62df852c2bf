"""Template budgets, proven against real worker processes (no mocks): a loop that calls nothing is
stopped, a render stuck where no signal reaches it is killed and its worker replaced, output is cut
while it is produced, and whatever a template makes Python raise fails that job only."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from oomnitza_connector.managed.sandbox import RenderPool, Scope, Templates
from oomnitza_connector.managed.templating import STRIKES, Budget, TemplateError, render_native, render_str

# About 10^10 iterations of nothing: hours of pure-Python work that never calls a function, so no
# sandbox hook (call/getattr interception) ever runs while it loops.
ENDLESS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.fixture(params=["exec", "spawn"])
def pool(request: pytest.FixtureRequest) -> Iterator[RenderPool]:
    """One worker, so every job of a test goes through the same process. "exec" is how workers
    start on POSIX; "spawn" (multiprocessing), the way elsewhere, is exercised here too."""
    pool = RenderPool(size=1, method=request.param)
    yield pool
    pool.close()


def job(template: str, label: str = "t", **overlay: Any) -> dict[str, Any]:
    return {"template": template, "label": label, "overlay": overlay}


def run(templates: Templates, task: str, jobs: list[dict[str, Any]], scope: Scope | None = None) -> list[Any]:
    return asyncio.run(templates.run(task, jobs, scope))


def worker_pids(pool: RenderPool) -> set[int]:
    return {w.pid for w in pool._all}


def test_a_loop_that_calls_nothing_is_stopped_by_the_cpu_budget(pool: RenderPool) -> None:
    templates = Templates(Budget(cpu_seconds=0.3), pool)
    out = run(templates, "native", [job("{{ 1 + a }}", a=1), job(ENDLESS, "field serial"), job("{{ [3] }}")])
    assert [o.value for o in out] == [2, None, [3]]
    assert out[1].error == "template for field serial exceeded its 0.3 s CPU budget"
    first = worker_pids(pool)
    # The timer stopped the loop inside the worker: the same process goes on serving.
    assert [o.value for o in run(templates, "native", [job("{{ 4 }}")])] == [4]
    assert worker_pids(pool) == first


def test_a_render_no_signal_reaches_is_killed_and_its_worker_replaced(pool: RenderPool) -> None:
    """Code stuck in C never runs the timer's handler; a stopped process is the extreme case."""
    templates = Templates(Budget(cpu_seconds=0.2), pool)

    async def scenario() -> tuple[list[Any], int]:
        task = asyncio.create_task(
            templates.run("native", [job("{{ 1 }}"), job(ENDLESS, "field stuck"), job("{{ 3 }}")])
        )
        while not pool._all or next(iter(pool._all)).current()[2] != "field stuck":
            await asyncio.sleep(0.01)
        (worker,) = pool._all
        os.kill(worker.pid, signal.SIGSTOP)  # ITIMER_PROF counts CPU time: it never fires now
        return await task, worker.pid

    out, stopped = asyncio.run(scenario())
    assert [o.value for o in out] == [1, None, 3]
    assert out[1].error == "template for field stuck exceeded its 0.2 s CPU budget"
    assert stopped not in worker_pids(pool)  # job 3 ran in a new worker
    with pytest.raises(ProcessLookupError):
        os.kill(stopped, 0)
    assert templates.strikes == {"field stuck": 1}


def test_output_is_cut_while_it_is_produced(pool: RenderPool) -> None:
    # 10^10 characters if it ran to the end; the CPU budget is far away, the output one is not.
    endless_text = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    templates = Templates(Budget(cpu_seconds=120, output_chars=4096), pool)
    out = run(templates, "text", [job(endless_text, "list call url"), job("{{ 'y' * 4096 }}", "header")])
    assert out[0].error == "template for list call url exceeded its 4 KiB output budget"
    assert out[1].value == "y" * 4096
    native = run(templates, "native", [job(endless_text, "field big")])
    assert native[0].error == "template for field big exceeded its 4 KiB output budget"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
        ("{{ 'a' + 1 }}", 'TypeError: can only concatenate str (not "int") to str'),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "RecursionError: maximum recursion depth exceeded"),
        ("{{ 'a' * 10 ** 10 }}", "template for field m exceeded its 256 MiB memory budget"),
        ("{{ import('json').loads('{') }}", "JSONDecodeError: Expecting property name enclosed in double quotes"),
        ("{{ import('os') }}", "template refused by the sandbox: os is not safely importable"),
        ("{{ x", "Invalid configuration for the managed connector: unexpected end of template"),
    ],
)
def test_any_exception_fails_that_job_only(pool: RenderPool, template: str, message: str) -> None:
    templates = Templates(Budget(memory_mib=256), pool)
    out = run(templates, "native", [job("{{ 1 }}"), job(template, "field m"), job("{{ 2 }}")])
    assert [out[0].value, out[2].value] == [1, 2]
    assert out[1].error is not None and out[1].error.startswith(message), out[1].error
    assert "\n" not in out[1].error


def test_a_template_over_budget_three_times_is_not_run_again_in_that_run(pool: RenderPool) -> None:
    templates = Templates(Budget(cpu_seconds=0.1), pool)
    jobs = [job(ENDLESS, "field slow") for _ in range(STRIKES + 2)] + [job("{{ 5 }}", "field quick")]
    out = run(templates, "native", jobs)
    over = "template for field slow exceeded its 0.1 s CPU budget"
    assert [o.error for o in out[:STRIKES]] == [over] * STRIKES
    later = f"{over} {STRIKES} times in this run; it is not run again in this run"
    assert [o.error for o in out[STRIKES:-1]] == [later, later]
    assert out[-1].value == 5
    # A new run (a new Templates) starts with a clean slate.
    assert run(Templates(Budget(cpu_seconds=0.1), pool), "native", [job(ENDLESS, "field slow")])[0].error == over


def test_values_that_are_not_data_fail_alone(pool: RenderPool) -> None:
    templates = Templates(Budget(), pool)
    out = run(templates, "native", [job("{% macro m() %}{% endmacro %}{{ m }}"), job("{{ [1, 2]|map('string') }}")])
    assert out[0].error == "the template produced a Macro value, which is not data"
    assert out[1].value == ["1", "2"]  # an iterator is taken as a list, within the render's budget


def test_scopes_are_shipped_once_and_reused(pool: RenderPool) -> None:
    templates = Templates(Budget(), pool)
    scopes = [Scope({"list_response": {"n": n}}) for n in range(6)]

    async def scenario() -> list[Any]:
        values = []
        for scope in [*scopes, *scopes]:  # more scopes than a worker keeps: old ones are sent again
            out = await templates.run("native", [job("{{ list_response['n'] * k }}", k=k) for k in (1, 2)], scope)
            values.append([o.value for o in out])
        return values

    assert asyncio.run(scenario()) == [[n, 2 * n] for n in range(6)] * 2


def test_a_cancelled_render_kills_its_worker(pool: RenderPool) -> None:
    templates = Templates(Budget(cpu_seconds=60), pool)

    async def scenario() -> int:
        task = asyncio.create_task(templates.run("native", [job(ENDLESS, "field slow")]))
        while not pool._all or next(iter(pool._all)).current()[2] != "field slow":
            await asyncio.sleep(0.01)
        pid = next(iter(pool._all)).pid
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    pid = asyncio.run(scenario())
    assert not pool._all
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert [o.value for o in run(templates, "native", [job("{{ 6 }}")])] == [6]  # and a new one serves


def test_the_public_render_functions_still_work_in_process() -> None:
    assert render_native("{{ 123 }}", {}) == 123
    assert render_native("{{ v|as_is }}", {"v": "0123"}) == "0123"
    assert render_str("{{ a }}-{{ b }}", {"a": 1}) == "1-"
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render_native("{{ 1 / 0 }}", {})
    with pytest.raises(TemplateError, match="exceeded its 1 MiB output budget"):
        render_str("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", {})
