"""Managed mode's main loop: poll ``check_managed``, run each due config, stop gracefully.

Each due config runs through the upload pipeline (``engine.run_integration`` → ``sync.run_section``).
A config already running is not started again. The first SIGINT/SIGTERM stops the polling and
stops the running syncs as it stops an upload: they read no further, their in-flight uploads get
``[oomnitza] stop_grace`` seconds, the failure is reported and the session finalized; the process
then exits 130 (SIGINT) or 143 (SIGTERM). A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .. import __version__, redact
from ..config import Config, load_managed_section
from ..errors import AuthError, ConnectorError
from ..http import HttpError, RetryPolicy
from ..ini import parse_bool
from ..locking import claim
from ..oomnitza.client import OomnitzaClient
from ..statedir import state_dir
from ..sync import Options, RunStop, SectionResult, stop_on_signals, stop_reason

log = logging.getLogger(__name__)


@dataclass
class Poller:
    config: Config
    ini_path: Path
    workers: int = 2
    batch_size: int = 100
    interval: float = 10.0
    ignore_maintenance: bool = False
    exit_when_idle: bool = False
    testmode: bool = False
    save_data: Path | None = None
    full: bool = False  # --full: every record is sent, changed or not
    out: TextIO | None = None
    err: TextIO | None = None
    running: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    results: list[SectionResult] = field(default_factory=list)  # the managed integrations' runs
    other_failures: int = 0  # export files that failed, integrations that crashed
    stop: RunStop = field(default_factory=RunStop)

    async def run(self) -> None:
        """Poll until stopped (a signal, or --exit-when-idle with nothing due or running)."""
        stopping = asyncio.Event()
        self.stop.watch(stopping)

        def request_stop(signum: int) -> None:
            log.info("stop requested: no new syncs will start")
            self.stop.request(stop_reason(signum), signum)

        with stop_on_signals(request_stop, self.err or sys.stderr):
            try:
                await self._poll(stopping)
            finally:
                self.stop.unwatch(stopping)

    async def _poll(self, stopping: asyncio.Event) -> None:
        client = OomnitzaClient(self.config.oomnitza, workers=self.workers)
        # Polls repeat anyway: a short retry budget, so an outage is noticed in seconds, not minutes.
        poll = OomnitzaClient(self.config.oomnitza, policy=RetryPolicy(attempts=3, connect_attempts=3))
        try:
            await client.login()
            poll._set_token(client.token)
            poll._logged_in = True
            log.info("managed mode: polling %s every %.0fs", client.url, self.interval)
            while not stopping.is_set():
                try:
                    configs = (
                        await poll.call_json("POST", "/api/v3/bulk/check_managed", json={"version": __version__}) or []
                    )
                except AuthError:
                    raise
                except HttpError as exc:
                    if exc.status is not None and 200 <= exc.status < 300:  # an answer, but not JSON
                        log.error("check_managed: Oomnitza's answer is not JSON; nothing started from it")
                        await _sleep(stopping, self.interval)
                        continue
                    if not self.ignore_maintenance:
                        raise ConnectorError(
                            f"polling Oomnitza failed: {exc} (start with "
                            "--ignore-cloud-maintenance to keep polling through outages)"
                        ) from None
                    log.warning("Oomnitza maintenance detected (%s); will retry later", exc)
                    await _sleep(stopping, 2.0)
                    continue
                configs = due_configs(configs)
                if stopping.is_set():  # the stop came while Oomnitza answered: start nothing new
                    break
                for cfg in configs:
                    self._start(cfg, client)
                if self.exit_when_idle and not configs:
                    await self._wait_running()
                    if not self.running:
                        break
                await _sleep(stopping, self.interval)
        finally:
            if self.running:
                log.info("stopping: waiting for %d running sync(s) to finish", len(self.running))
            await self._wait_running()
            await client.aclose()
            await poll.aclose()

    def _options(self) -> Options:
        return Options(
            workers=self.workers,
            batch_size=self.batch_size,
            testmode=self.testmode,
            save_data=self.save_data,
            stop=self.stop,
            full=self.full,
        )

    def _start(self, cfg: dict[str, Any], client: OomnitzaClient) -> None:
        reports = bool(cfg.get("reports_service"))
        key = f"{'managed_reports' if reports else 'managed'}.{cfg.get('id')}"
        if key in self.running:
            log.info("%s is still running; not starting it twice", key)
            return
        taken = claim(state_dir(self.config.oomnitza.settings), key, what=f"managed {key}")
        if taken.busy:
            log.warning("%s is running in another process (%s); not started", key, taken.holder or "unknown")
            return
        task = asyncio.create_task(self._run_one(key, cfg, client, reports))
        self.running[key] = task
        task.add_done_callback(lambda _t: self.running.pop(key, None))
        task.add_done_callback(lambda _t: taken.release())

    async def _run_one(self, key: str, cfg: dict[str, Any], client: OomnitzaClient, reports: bool) -> None:
        # The run's own redactor: it masks the config's secrets and what this run learns (its
        # section's, its tokens), which are forgotten when the run ends.
        redactor = self.config.redactor.child()
        try:
            section = load_managed_section(self.ini_path, key, self.config.converters, redactor=redactor)
        except ConnectorError as exc:
            log.error("%s: %s", key, exc)
            if reports:
                self.other_failures += 1
                return
            from .engine import report_config_failure

            with redact.using(redactor):
                message = await report_config_failure(
                    client, cfg, str(exc), testmode=self.testmode, ini_path=str(self.ini_path)
                )
            self.results.append(SectionResult(section=key, data_type=str(cfg.get("type") or ""), error=message))
            return
        log.info("%s (%s) started", key, cfg.get("name", ""))
        try:
            if reports:
                from .export_file import run_export

                exported = await run_export(
                    cfg, section, client, workers=self.workers, state_dir=state_dir(self.config.oomnitza.settings)
                )
                if getattr(exported, "error", None):
                    self.other_failures += 1
                log.info("%s finished: %s", key, _describe(exported))
                return
            from .engine import run_integration

            result = await run_integration(
                cfg, section, client, self.config, self._options(), redactor=redactor, out=self.out
            )
            self.results.append(result)
            if result.error:
                log.error("[%s] %s", key, result.error.removeprefix(f"[{key}] "))
            log.info("%s finished: %s", key, _describe(result))
        except Exception:  # one integration's bug must not stop the others
            log.exception("%s failed unexpectedly", key)
            self.other_failures += 1

    async def _wait_running(self) -> None:
        while self.running:
            await asyncio.gather(*list(self.running.values()), return_exceptions=True)


# -- the check_managed answer ---------------------------------------------------------------------------
# A list of config objects (managed-mode.md §3). Whatever else the cloud sends is logged, one line
# per problem, and skipped: one bad entry must neither stop the poller nor the other configs.

_OBJECT_FIELDS = (
    "inputs",
    "list_behavior",
    "detail_behavior",
    "software_behavior",
    "saas_behavior",
    "exploratory_list_behavior",
    "pre_list_behavior",
)
_TEXT_OR_OBJECT_FIELDS = ("saas_authorization", "oomnitza_authorization")
_FLAG_FIELDS = ("update_only", "insert_only", "test_run", "is_custom", "verify_ssl")


def due_configs(answer: Any) -> list[dict[str, Any]]:
    """The usable configs of a check_managed answer; each problem is logged in one line."""
    if answer is None:
        return []
    if not isinstance(answer, list):
        log.error("check_managed: expected a list of integrations, got %s; nothing started", _kind(answer))
        return []
    usable = []
    for position, entry in enumerate(answer):
        problem = _config_problem(entry)
        if problem is None:
            usable.append(entry)
        else:
            log.error("check_managed: entry %d skipped: %s", position, problem)
    return usable


def _config_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"expected an object, got {_kind(entry)}"
    ident = entry.get("id")
    if isinstance(ident, bool) or not isinstance(ident, int | str) or not str(ident).isdigit():
        return f"'id' must be a whole number, got {_show(ident)}"  # it becomes a section name and URL path
    where = f"integration {ident}"
    for key in ("type", "name"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            return f"{where}: '{key}' must be text, got {_kind(entry[key])}"
    for key in _OBJECT_FIELDS:
        if entry.get(key) not in (None, "") and not isinstance(entry[key], dict):
            return f"{where}: '{key}' must be an object, got {_kind(entry[key])}"
    for key in _TEXT_OR_OBJECT_FIELDS:
        if entry.get(key) is not None and not isinstance(entry[key], dict | str):
            return f"{where}: '{key}' must be an object or text, got {_kind(entry[key])}"
    for key in _FLAG_FIELDS:
        value = entry.get(key)
        if value in (None, "") or isinstance(value, bool):
            continue
        if not isinstance(value, str | int):
            return f"{where}: '{key}' must be true or false, got {_kind(value)}"
        try:
            parse_bool(str(value), setting=key)
        except ConnectorError:
            return f"{where}: '{key}' must be true or false, got {_show(value)}"
    return None


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict | list) else _kind(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _describe(result: Any) -> str:
    if hasattr(result, "downloaded"):
        return f"{len(result.downloaded)} file(s) downloaded, {len(result.failed)} failed"
    counts = ", ".join(f"{n} {bucket.replace('_', ' ')}" for bucket, n in result.counts.items() if n)
    return f"{result.status}: {result.pulled} record(s) read" + (f" ({counts})" if counts else "")


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
