"""The webhook server's ``/metrics`` (Prometheus text format, see ``..metrics``).

Counted around the app, as WSGI middleware, from what it answered: an event is ``queued``
(202, committed to the queue), ``ignored`` (202, an event type or device kind the section does not
sync), ``unauthorized`` (401), ``refused`` (503: the queue is full or cannot be written; the caller
retries) or ``rejected`` (another 4xx: not JSON, too big, no device id). Only the sections the server
serves become labels, so random paths cannot grow the page. The queue depth is read from the queue;
the records synced, per bucket, from the worker's ``SectionResult`` objects.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .. import __version__
from ..metrics import Samples, families

FAMILIES = families(
    [
        ("info", "gauge", "The connector's version (the label; the value is 1)."),
        ("webhook_events_total", "counter", "Webhook events received, per section and outcome."),
        ("webhook_queue_depth", "gauge", "Devices waiting in the durable queue, per section."),
        ("webhook_syncs_total", "counter", "Sync runs of queued devices, per section and result (ok, failed)."),
        ("records_total", "counter", 'Records per section and bucket, over every sync ("pulled" = read).'),
    ]
)

Start = Callable[..., Any]


class WebhookMetrics:
    """WSGI middleware counting the answers of ``app``; ``render()`` is the ``/metrics`` page."""

    def __init__(self, app: Any, queue: Any, worker: Any) -> None:
        self.app, self.queue, self.worker = app, queue, worker
        self._lock = threading.Lock()
        self._samples = Samples(FAMILIES)
        self._folded = 0  # results of worker.synced already counted
        for section in app.sections:
            for outcome in ("queued", "ignored", "unauthorized", "refused", "rejected"):
                self._samples.add("webhook_events_total", 0, section=section, outcome=outcome)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # sections, queue, guards: the wrapped app's

    def __call__(self, environ: dict[str, Any], start: Start) -> Iterable[bytes]:
        name = environ.get("PATH_INFO", "").rsplit("/", 1)[-1]
        if environ.get("REQUEST_METHOD") != "POST" or name not in self.app.sections:
            return self.app(environ, start)
        seen: list[int] = []

        def remember(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen.append(int(status.split(" ", 1)[0]))
            return start(status, headers) if exc_info is None else start(status, headers, exc_info)

        body = list(self.app(environ, remember))
        outcome = _outcome(seen[-1] if seen else 500, b"".join(body))
        if outcome:
            with self._lock:
                self._samples.add("webhook_events_total", 1, section=name, outcome=outcome)
        return body

    def render(self) -> str:
        with self._lock:
            self._fold()
            samples = Samples(FAMILIES, {k: dict(v) for k, v in self._samples.values.items()})
        samples.set("info", 1, version=__version__)
        waiting = self.queue.waiting()
        for section in {*self.app.sections, *waiting}:
            samples.set("webhook_queue_depth", waiting.get(section, 0), section=section)
        return samples.render()

    def _fold(self) -> None:
        """Count the sync results the worker added since the last page (its list only grows)."""
        synced = getattr(self.worker, "synced", [])
        new = synced[self._folded :]
        self._folded += len(new)
        for result in new:
            section, kind = result.section, result.data_type or ""
            ok = result.error is None and not result.counts.get("failed_send", 0)
            self._samples.add("webhook_syncs_total", 1, section=section, result="ok" if ok else "failed")
            self._samples.add("records_total", result.pulled, section=section, type=kind, bucket="pulled")
            for bucket, count in result.counts.items():
                self._samples.add("records_total", count, section=section, type=kind, bucket=bucket)


def _outcome(status: int, body: bytes) -> str | None:
    if status == 202:
        try:
            said = json.loads(body).get("status")
        except (ValueError, AttributeError):
            said = None
        return "ignored" if said == "ignored" else "queued"
    if status == 401:
        return "unauthorized"
    if status == 503:
        return "refused"
    if 400 <= status < 500:
        return "rejected"
    return None
