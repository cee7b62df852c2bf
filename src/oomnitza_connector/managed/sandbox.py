"""Cloud templates rendered off the event loop, in a small pool of worker processes.

A cloud config's template is code someone else wrote: a nested loop that calls nothing, a huge
output or a deep recursion must cost one record, not the poller. So every render runs in a worker
process (on POSIX ``python -c`` importing only the templating code, elsewhere multiprocessing's
spawn; pickled messages over a socket pair or pipe; a small shared memory page where the worker
publishes which render it is in) under the budgets of ``templating.Budget``:

- CPU: the worker arms ITIMER_PROF for each render; its signal stops pure-Python loops (Jinja's
  sandbox hooks are not called by a bare ``{% for %}``, so only a signal can), and the parent
  kills a worker whose render outlives ``Budget.wall_seconds`` (a signal waits until a single long
  operation in C returns) and starts another;
- output: counted while the render streams, stopped past the limit;
- memory: RLIMIT_AS of the worker (a template's MemoryError fails that render only).

The engine sends work a page at a time (``Templates.run``: one task, many jobs, one round trip),
and a page's context (``Scope``: the list response and friends) is shipped to a worker once and
kept there, so per-record costs stay small. The event loop only waits on the workers' pipes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import mmap
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from . import templating
from .templating import Budget, TemplateError

log = logging.getLogger(__name__)

POOL_SIZE = max(2, min(4, os.cpu_count() or 2))
SCOPES_PER_WORKER = 4  # page contexts a worker keeps (a page's stages reuse its context)
FLUSH_SECONDS = 0.05  # a worker sends finished results at least this often (kept if it is killed later)
WATCH_SECONDS = 0.2  # how often the parent checks a busy worker's render clock


@dataclass(frozen=True, slots=True)
class Rendered:
    """One job's outcome: its value, or the one-line reason it failed."""

    value: Any = None
    error: str | None = None


class Scope:
    """A context shared by many jobs (a page's list response...): sent to a worker once, then
    referred to by id. A snapshot: later changes to the dict given are not seen."""

    _ids = itertools.count(1)
    __slots__ = ("ctx", "id")

    def __init__(self, ctx: dict[str, Any]) -> None:
        self.id = next(self._ids)
        self.ctx = dict(ctx)


class Templates:
    """The renderer of one managed run: its budgets, and its templates' budget strikes (a template
    over its CPU budget ``STRIKES`` times is not run again in that run: one hostile mapping must
    not cost every record of a large sync its full budget)."""

    def __init__(self, budget: Budget | None = None, pool: RenderPool | None = None) -> None:
        self.budget = budget or Budget()
        self.pool = pool
        self.strikes: dict[str, int] = {}

    async def run(self, task: str, jobs: Sequence[dict[str, Any]], scope: Scope | None = None) -> list[Rendered]:
        """Run ``task`` once per job (kwargs), in one round trip; each job succeeds or fails alone."""
        if not jobs:
            return []
        pool = self.pool or default_pool()
        try:
            results, strikes = await pool.run(task, list(jobs), scope, self.budget, self.strikes)
        except TemplateError as exc:  # no worker could be started: every job fails, the run goes on
            return [Rendered(error=str(exc))] * len(jobs)
        for label, n in strikes.items():
            self.strikes[label] = self.strikes.get(label, 0) + n
        return results

    async def run_one(self, task: str, job: dict[str, Any], scope: Scope | None = None) -> Any:
        """One job; its failure raises TemplateError."""
        (out,) = await self.run(task, [job], scope)
        if out.error is not None:
            raise TemplateError(out.error)
        return out.value

    async def native(self, template: Any, label: str, scope: Scope | None = None, **overlay: Any) -> Any:
        if not isinstance(template, str) or template == "":
            return templating.render_native(template, {})  # nothing to render: no round trip
        return await self.run_one("native", {"template": template, "label": label, "overlay": overlay}, scope)

    async def text(self, template: Any, label: str, scope: Scope | None = None, **overlay: Any) -> str:
        if template is None or "{" not in str(template):
            return templating.render_str(template, {})
        return await self.run_one("text", {"template": template, "label": label, "overlay": overlay}, scope)


# -- the parent side of the pool -----------------------------------------------------------------------


class Progress:
    """What a worker is doing, in a page of memory it shares with the parent: the index of the job
    it runs, when its current render started (0 between renders) and that render's label."""

    _HEAD = struct.Struct("<qdH")
    SIZE = 512

    def __init__(self, memory: Any) -> None:
        self.memory = memory  # an mmap (exec workers) or a shared ctypes char array (spawn workers)

    def job(self, index: int) -> None:
        struct.pack_into("<q", self.memory, 0, index)

    def render_started(self, label: str) -> None:
        data = label.encode("utf-8", "replace")[:255]
        self.memory[18 : 18 + len(data)] = data
        struct.pack_into("<dH", self.memory, 8, time.monotonic(), len(data))

    def render_ended(self) -> None:
        struct.pack_into("<d", self.memory, 8, 0.0)

    def read(self) -> tuple[int, float, str]:
        index, started, size = self._HEAD.unpack_from(self.memory, 0)
        return index, started, bytes(self.memory[18 : 18 + min(size, 255)]).decode("utf-8", "replace")


# How workers start: "exec" (POSIX) runs ``python -c`` with a socket pair and a shared file
# mapping; "spawn" (elsewhere, e.g. Windows) uses multiprocessing's spawn start method, a Pipe and
# shared ctypes memory, and (without ITIMER_PROF there) relies on the parent's kill for CPU.
START_METHOD = "exec" if os.name == "posix" else "spawn"


class _Worker:
    def __init__(self, method: str = START_METHOD) -> None:
        self.scopes: OrderedDict[int, None] = OrderedDict()  # mirror of the scopes the worker keeps
        self.killed_over_budget = False
        if method == "exec":
            self._exec()
        else:
            self._spawn()

    def _exec(self) -> None:
        parent, child = socket.socketpair()
        shared = tempfile.TemporaryFile()
        try:
            shared.truncate(Progress.SIZE)
            self.progress = Progress(mmap.mmap(shared.fileno(), Progress.SIZE))
            # The parent's import path (connector.py adds src/ at run time), then only this module.
            code = (
                f"import sys; sys.path[:] = {sys.path!r}; "
                f"from {__name__} import worker_main; worker_main({child.fileno()}, {shared.fileno()})"
            )
            self.proc: Any = subprocess.Popen(
                [sys.executable, "-c", code],
                pass_fds=(child.fileno(), shared.fileno()),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
            shared.close()
        self.pid = self.proc.pid
        self.conn = Connection(parent.detach())

    def _spawn(self) -> None:
        import ctypes
        import multiprocessing

        mp = multiprocessing.get_context("spawn")
        self.conn, child = mp.Pipe()
        memory = mp.RawArray(ctypes.c_char, Progress.SIZE)
        self.progress = Progress(memory)
        self.proc = mp.Process(target=_spawned_main, args=(child, memory), name="oomnitza-templates", daemon=True)
        self.proc.start()
        child.close()
        self.pid = self.proc.pid

    def exit_code(self) -> int | None:
        proc = self.proc
        return proc.poll() if isinstance(proc, subprocess.Popen) else proc.exitcode

    def alive(self) -> bool:
        return self.exit_code() is None and not self.conn.closed

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
            if isinstance(self.proc, subprocess.Popen):
                self.proc.wait(1.0)
            else:
                self.proc.join(1.0)
        with contextlib.suppress(Exception):
            self.conn.close()

    def close(self) -> None:
        self.kill()
        if isinstance(self.progress.memory, mmap.mmap):
            with contextlib.suppress(Exception):
                self.progress.memory.close()

    def scope_message(self, scope: Scope | None) -> tuple[int, dict[str, Any] | None, list[int]]:
        """(id, data to send or None when the worker has it, ids the worker may drop)."""
        if scope is None:
            return 0, None, []
        if scope.id in self.scopes:
            self.scopes.move_to_end(scope.id)
            return scope.id, None, []
        self.scopes[scope.id] = None
        drop = []
        while len(self.scopes) > SCOPES_PER_WORKER:
            drop.append(self.scopes.popitem(last=False)[0])
        return scope.id, scope.ctx, drop

    def current(self) -> tuple[int, float, str]:
        """(job index, start of the current render or 0, its label), as the worker last wrote them."""
        return self.progress.read()


class _Died(Exception):
    """The worker stopped (killed over budget, or crashed) before finishing the batch."""


class _Stale(Exception):
    """The worker stopped while no render was running (before the batch, or between two jobs)."""


class RenderPool:
    """At most ``size`` worker processes, started on demand and replaced when killed. Used from
    one event loop at a time (the loop may change between runs: nothing here is bound to one)."""

    def __init__(self, size: int = POOL_SIZE, method: str = START_METHOD) -> None:
        self.size = size
        self.method = method
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._starting = 0

    async def _acquire(self) -> _Worker:
        while True:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                self._discard(worker)
            if len(self._all) + self._starting < self.size:
                self._starting += 1
                try:
                    worker = await asyncio.to_thread(_Worker, self.method)
                except Exception as exc:
                    raise TemplateError(f"could not start a template worker process: {exc}") from None
                finally:
                    self._starting -= 1
                self._all.add(worker)
                return worker
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _release(self, worker: _Worker) -> None:
        self._idle.append(worker)
        self._wake()

    def _discard(self, worker: _Worker) -> None:
        worker.close()
        self._all.discard(worker)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done() and not waiter.get_loop().is_closed():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for worker in list(self._all):
            worker.close()
        self._all.clear()
        self._idle.clear()

    async def run(
        self, task: str, jobs: list[dict[str, Any]], scope: Scope | None, budget: Budget, strikes: dict[str, int]
    ) -> tuple[list[Rendered], dict[str, int]]:
        results: dict[int, Rendered] = {}
        gained: dict[str, int] = {}
        stale = 0
        while len(results) < len(jobs):
            pending = [(i, jobs[i]) for i in range(len(jobs)) if i not in results]
            worker = await self._acquire()
            busy = True
            try:
                known = {k: strikes.get(k, 0) + gained.get(k, 0) for k in {*strikes, *gained}}
                await self._batch(worker, task, pending, scope, budget, known, results, gained)
                busy = False
            except _Stale:  # it stopped between renders: try again on a new one (a few times)
                stale += 1
                if stale > 3:
                    error = Rendered(error="the template worker processes keep stopping")
                    results.update((i, error) for i, _job in pending if i not in results)
            except _Died as died:  # the job it was running fails; the others are sent again
                index, label = died.args
                if worker.killed_over_budget and label:
                    results[index] = Rendered(error=budget.cpu_exceeded(label))
                    gained[label] = gained.get(label, 0) + 1
                else:
                    what = f" while rendering the template for {label}" if label else ""
                    results[index] = Rendered(
                        error=f"the template worker process stopped unexpectedly (exit code {worker.exit_code()}){what}"
                    )
                log.warning("template worker %s stopped: %s", worker.pid, results[index].error)
            finally:
                if busy:  # killed, crashed, or the run was cancelled mid-batch: never reuse it
                    self._discard(worker)
                else:
                    self._release(worker)
        return [results[i] for i in range(len(jobs))], gained

    async def _batch(
        self,
        worker: _Worker,
        task: str,
        pending: list[tuple[int, dict[str, Any]]],
        scope: Scope | None,
        budget: Budget,
        strikes: dict[str, int],
        results: dict[int, Rendered],
        gained: dict[str, int],
    ) -> None:
        """Send the pending (index, job) pairs to the worker and collect its answers into
        ``results``; raises _Died(index of the job it was running, the label of its render)."""
        worker.killed_over_budget = False
        scope_id, scope_data, drop = worker.scope_message(scope)
        message = ("batch", task, pending, budget, strikes, scope_id, scope_data, drop)
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # data no template can be given: fail these jobs, keep the worker
            worker.scopes.pop(scope_id, None)
            error = templating.one_line(
                f"the data could not be handed to a template worker: {type(exc).__name__}: {exc}"
            )
            results.update((i, Rendered(error=error)) for i, _job in pending)
            return
        try:
            worker.conn.send_bytes(data)
        except OSError:
            raise _Stale from None
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        ready: asyncio.Event | None = event
        fd = worker.conn.fileno()
        try:
            loop.add_reader(fd, event.set)
        except NotImplementedError:  # Windows' proactor loop: _next_reply waits in a thread instead
            ready = None
        try:
            while (reply := await _next_reply(worker, budget, ready)) is not None:
                if reply[0] == "fatal":
                    results.update((i, Rendered(error=reply[1])) for i, _job in pending if i not in results)
                    return
                kind, outcomes, new_strikes = reply
                results.update(outcomes)
                for label, n in new_strikes.items():
                    gained[label] = gained.get(label, 0) + n
                if kind == "done":
                    return
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
        index, started, label = worker.current()
        if worker.killed_over_budget or (started and index not in results):
            raise _Died(index, label)
        raise _Stale  # it died between renders (killed from outside?): the jobs are not to blame


async def _next_reply(worker: _Worker, budget: Budget, ready: asyncio.Event | None) -> Any:
    """The worker's next message, or None once it died or was killed for holding a render too long."""
    while True:
        if worker.conn.poll():
            try:
                return worker.conn.recv()
            except (EOFError, OSError):
                return None
        if ready is None:
            if await asyncio.to_thread(worker.conn.poll, WATCH_SECONDS):
                continue
        else:
            ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), WATCH_SECONDS)
            if ready.is_set():
                continue
        if worker.exit_code() is not None:
            return None
        _index, started, _label = worker.current()
        if started and time.monotonic() - started > budget.wall_seconds:
            worker.killed_over_budget = True
            worker.kill()
            return None


_POOL: RenderPool | None = None


def default_pool() -> RenderPool:
    global _POOL
    if _POOL is None:
        _POOL = RenderPool()
        atexit.register(_POOL.close)  # before multiprocessing joins its children at exit
    return _POOL


# -- the worker process ---------------------------------------------------------------------------------


def worker_main(sock_fd: int, shared_fd: int) -> None:
    """The worker process ("exec" start): render what the parent sends until it goes away."""
    progress = Progress(mmap.mmap(shared_fd, Progress.SIZE))
    os.close(shared_fd)
    _serve(Connection(sock_fd), progress)


def _spawned_main(conn: Connection, memory: Any) -> None:
    """The worker process ("spawn" start)."""
    _serve(conn, Progress(memory))


def _serve(conn: Connection, progress: Progress) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    templating.enter_worker(progress)
    scopes: dict[int, dict[str, Any]] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        except MemoryError:
            _send(conn, ("fatal", "the page is too large for the templates' memory budget"))
            return
        try:
            _kind, task, jobs, budget, strikes, scope_id, scope_data, drop = message
            for old in drop:
                scopes.pop(old, None)
            if scope_data is not None:
                scopes[scope_id] = scope_data
            templating.begin_batch(budget, strikes)
            function = templating.TASKS[task]
        except Exception as exc:
            _send(conn, ("fatal", templating.one_line(f"the template worker failed: {type(exc).__name__}: {exc}")))
            return
        base = scopes.get(scope_id, {}) if scope_id else {}
        outcomes: list[tuple[int, Rendered]] = []
        last_flush = time.monotonic()
        for index, job in jobs:
            progress.job(index)
            outcomes.append((index, _run_job(function, base, job)))
            if time.monotonic() - last_flush > FLUSH_SECONDS:  # kept by the parent if a later job kills us
                if not _send(conn, ("part", outcomes, templating.take_strikes())):
                    return
                outcomes, last_flush = [], time.monotonic()
        if not _send(conn, ("done", outcomes, templating.take_strikes())):
            return


def _run_job(function: Any, base: dict[str, Any], job: dict[str, Any]) -> Rendered:
    try:
        return Rendered(function(base, **job))
    except TemplateError as exc:
        return Rendered(error=str(exc))
    except Exception as exc:  # whatever a template made Python raise: that job fails, the batch goes on
        return Rendered(error=templating.one_line(f"{type(exc).__name__}: {exc}"))


def _send(conn: Connection, message: tuple[Any, ...]) -> bool:
    try:
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            data = pickle.dumps(_picklable(message), protocol=pickle.HIGHEST_PROTOCOL)
        conn.send_bytes(data)
        return True
    except (OSError, EOFError):
        return False  # the parent is gone or killed us


def _picklable(message: tuple[Any, ...]) -> tuple[Any, ...]:
    """The message with each result that cannot travel replaced by a failure of its own."""
    kind, outcomes, strikes = message
    checked = []
    for index, outcome in outcomes:
        try:
            pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            outcome = Rendered(error=f"the template produced a {type(outcome.value).__name__} value, which is not data")
        checked.append((index, outcome))
    return kind, checked, strikes
