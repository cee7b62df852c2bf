"""The webhook receiver: Jamf Pro (``casper`` sections) tells us a device changed; we sync that one.

A WSGI app (served by waitress, which also runs on Windows; see ``http.py`` for the connection
limits) that authenticates the caller per section (Jamf can send Basic or header
authentication), routes by the last path segment, limits body size, content type and nesting,
and answers at once: ``202`` once the device id is committed to the durable queue
(``queue.py``). A worker thread syncs the queue through the same pipeline as ``upload``
(``sync.run_section``, so the section's merged mapping, server-side part included, decides what
is fetched), a batch of devices per sync session (finalized), coalescing a burst of events for one
device into one fetch. One source per section serves every batch: one Jamf Pro client and token
for the life of the worker, released when it stops. A device leaves the queue only when it is in
Oomnitza or Jamf no longer has it; when Oomnitza (or Jamf) cannot be reached, the failure is logged
at ERROR and the device is tried again later, across restarts.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hmac
import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import redact
from ..config import Config, SectionConfig
from ..errors import ConfigError, ConnectorError
from ..sources.base import BadRecord, Record, RunContext, Source

if TYPE_CHECKING:
    from ..mapping import RecordMapper
    from ..oomnitza.payload import RunInfo
    from ..oomnitza.sinks import Sink
    from .queue import EventQueue, Item

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format
COMPUTER_EVENTS = (
    "ComputerAdded",
    "ComputerCheckIn",
    "ComputerInventoryCompleted",
    "ComputerPolicyFinished",
    "ComputerPushCapabilityChanged",
)
# Jamf Pro 11.14 added MobileDeviceInventoryCompleted and spells the un-enrolment event
# "MobileDeviceUnenrolled" in its changelog (developer.jamf.com/jamf-pro/changelog/11140-changes);
# older servers send "MobileDeviceUnEnrolled". Both are accepted.
MOBILE_EVENTS = (
    "MobileDeviceCheckIn",
    "MobileDeviceCommandCompleted",
    "MobileDeviceEnrolled",
    "MobileDeviceInventoryCompleted",
    "MobileDevicePushSent",
    "MobileDeviceUnEnrolled",
    "MobileDeviceUnenrolled",
)
KIND_OF = {**dict.fromkeys(COMPUTER_EVENTS, "computers"), **dict.fromkeys(MOBILE_EVENTS, "mobiledevices")}

Start = Callable[[str, list[tuple[str, str]]], Any]


@dataclass
class Guard:
    """How callers of one section prove who they are."""

    token: str = ""
    header: str = "Authorization"
    username: str = ""
    password: str = ""
    insecure: bool = False

    @classmethod
    def of(cls, section: SectionConfig, redactor: redact.Redactor | None = None) -> Guard:
        s = section.settings
        guard = cls(
            token=s.get("webhook_token", ""),
            header=s.get("webhook_header", "") or "Authorization",
            username=s.get("webhook_username", ""),
            password=s.get("webhook_password", ""),
            insecure=section.flag("webhook_insecure") if s.get("webhook_insecure") else False,
        )
        if not (guard.token or guard.username or guard.insecure):
            raise ConfigError(
                f"[{section.name}] set webhook_token (header authentication) or webhook_username and "
                "webhook_password (basic authentication) for the webhook server, or "
                "webhook_insecure = true to accept anyone who can reach it"
            )
        for secret in (guard.token, guard.password):
            (redactor or redact.current()).add(secret)
        return guard

    def admits(self, environ: dict[str, Any]) -> bool:
        if self.insecure and not (self.token or self.username):
            return True
        if self.token:
            value = environ.get("HTTP_" + self.header.upper().replace("-", "_"), "")
            if self.header.lower() == "authorization" and value.lower().startswith("bearer "):
                value = value[7:]
            if hmac.compare_digest(value.encode(), self.token.encode()):
                return True
        if self.username:
            raw = environ.get("HTTP_AUTHORIZATION", "")
            if raw.lower().startswith("basic "):
                try:
                    user, _, password = base64.b64decode(raw[6:]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    return False
                return hmac.compare_digest(user.encode(), self.username.encode()) and hmac.compare_digest(
                    password.encode(), self.password.encode()
                )
        return False


class WebhookApp:
    """The WSGI application. ``sections`` are the enabled sections able to take webhooks."""

    def __init__(
        self, sections: dict[str, SectionConfig], queue: EventQueue, redactor: redact.Redactor | None = None
    ) -> None:
        self.sections = sections
        self.guards = {name: Guard.of(sc, redactor) for name, sc in sections.items()}
        self.queue = queue
        self.metrics: Callable[[], str] | None = None  # the /metrics page (server/metrics.py)

    def __call__(self, environ: dict[str, Any], start: Start) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.rstrip("/") in ("/healthz", "/health"):
            return _answer(start, 200, {"status": "ok"})
        if path.rstrip("/") == "/metrics" and self.metrics is not None:
            page = self.metrics().encode()
            start("200 OK", [("Content-Type", METRICS_TYPE), ("Content-Length", str(len(page)))])
            return [page]
        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(start, 405, {"error": "use POST"}, [("Allow", "POST")])
        name = path.rsplit("/", 1)[-1]
        guard = self.guards.get(name)
        if guard is None:
            # Unknown section: say so only to a caller that could authenticate somewhere.
            known_caller = any(g.admits(environ) for g in self.guards.values())
            return _answer(
                start,
                404 if known_caller else 401,
                {"error": "not found" if known_caller else "authentication required"},
            )
        if not guard.admits(environ):
            log.warning("[%s] webhook refused: wrong or missing credentials", name)
            return _answer(
                start,
                401,
                {"error": "authentication required"},
                [("WWW-Authenticate", 'Basic realm="oomnitza-connector"')] if guard.username else [],
            )
        ctype = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _answer(start, 415, {"error": "send JSON (Content-Type: application/json)"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            return _answer(start, 413, {"error": f"the body must be at most {MAX_BODY} bytes"})
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            event = json.loads(body)
        except ValueError:
            return _answer(start, 400, {"error": "the body is not JSON"})
        except RecursionError:  # the parser recurses per level; the body is small, the nesting not
            return _answer(start, 400, {"error": "the JSON is nested too deeply"})
        return self._event(name, event, start)

    def _event(self, name: str, event: Any, start: Start) -> Iterable[bytes]:
        webhook = event.get("webhook") if isinstance(event, dict) else None
        what = webhook.get("webhookEvent") if isinstance(webhook, dict) else None
        if what not in KIND_OF:
            log.debug("[%s] webhook event %r ignored", name, what)
            return _answer(start, 202, {"status": "ignored", "reason": "not a supported event"})
        body = event.get("event") if isinstance(event.get("event"), dict) else {}
        device_id = body.get("jssID")
        if device_id is None and isinstance(body.get("computer"), dict):
            device_id = body["computer"].get("jssID")  # ComputerCheckIn / ComputerPolicyFinished
        if device_id is None:
            return _answer(start, 400, {"error": "the event has no jssID"})
        if isinstance(device_id, bool) or not isinstance(device_id, int | str) or not str(device_id).isdigit():
            return _answer(start, 400, {"error": "jssID is not a Jamf Pro ID (digits)"})
        device_id = str(int(device_id))  # "007" and 7 are one device
        if len(device_id) > 20:
            return _answer(start, 400, {"error": "jssID is not a Jamf Pro ID (digits)"})
        wanted = self.sections[name].settings.get("sync_type") or "computers"
        if KIND_OF[what] != wanted:
            log.debug("[%s] %s ignored: the section syncs %s", name, what, wanted)
            return _answer(start, 202, {"status": "ignored", "reason": f"the section syncs {wanted}"})
        try:
            kept = self.queue.add(name, device_id)
        except Exception:  # the queue cannot be written (disk full?): do not acknowledge
            log.exception("[%s] webhook event for device %s could not be queued", name, device_id)
            return _answer(start, 503, {"error": "the event could not be stored; retry later"}, [("Retry-After", "30")])
        if not kept:
            return _answer(start, 503, {"error": "too many pending events; retry later"}, [("Retry-After", "30")])
        log.info("[%s] %s for device %s queued", name, what, device_id)
        return _answer(start, 202, {"status": "queued"})


def _answer(
    start: Start, status: int, body: dict[str, Any], headers: list[tuple[str, str]] | None = None
) -> list[bytes]:
    reasons = {
        200: "OK",
        202: "Accepted",
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        405: "Method Not Allowed",
        413: "Payload Too Large",
        415: "Unsupported Media Type",
        503: "Service Unavailable",
    }
    data = json.dumps(body).encode()
    start(
        f"{status} {reasons[status]}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *(headers or [])],
    )
    return [data]


class _Only(Source):
    """The section's source, asked only for the given devices (``fetch_one`` each), for one batch.
    It remembers which could not be fetched: ``missing`` (the source has no such device: nothing
    to sync, ever) and ``failed`` (the source could not be read: try again later). The pipeline's
    context goes to the inner source, which the worker keeps (and closes) across batches."""

    def __init__(self, inner: Source, ids: list[str]) -> None:
        # No Source.__init__: the inner source was validated when the config was loaded.
        self.section = inner.section
        self.inner, self._ids = inner, ids
        self.record_type = inner.record_type  # type: ignore[misc]
        self.default_mappings = inner.default_mappings  # type: ignore[misc]
        self.default_converters = inner.default_converters  # type: ignore[misc]
        self.missing: dict[str, str] = {}
        self.failed: dict[str, str] = {}

    def connector_name(self) -> str:
        return self.inner.connector_name()

    def extra_mappings(self) -> dict[str, dict[str, Any]]:
        return self.inner.extra_mappings()

    async def mapper(self, sink: Sink) -> RecordMapper | None:
        return await self.inner.mapper(sink)

    def run_info(self) -> RunInfo | None:
        return self.inner.run_info()

    def open(self, ctx: RunContext) -> None:
        self.inner.open(ctx)

    async def pages(self) -> AsyncIterator[list[Record | BadRecord]]:
        from ..sources.casper import DeviceNotFound

        fetch_one = self.inner.fetch_one  # type: ignore[attr-defined]
        page: list[Record | BadRecord] = []
        for device_id in self._ids:
            try:
                page.append(await fetch_one(device_id))
            except DeviceNotFound as exc:
                self.missing[device_id] = str(exc)
                page.append(BadRecord(str(exc), {"id": device_id}))
            except ConnectorError as exc:
                self.failed[device_id] = str(exc)
                page.append(BadRecord(str(exc), {"id": device_id}))
        yield page

    def reads_everything(self) -> bool:
        return False  # the devices Jamf told us of, not every device

    # aclose() and commit() stay no-ops: the worker closes the inner source when it stops, and a
    # webhook batch is no full run (no incremental mark moves).


class Worker:
    """Syncs the queued devices in a thread of its own, with its own event loop. One source per
    section serves every batch (one Jamf Pro token), closed when the worker stops."""

    def __init__(
        self, config: Config, queue: EventQueue, options: Any, sink_factory: Callable[[], Any], sections: list[str]
    ) -> None:
        self.config, self.queue, self.options, self.sink_factory = config, queue, options, sink_factory
        self.sections = sections  # those that take webhooks; queued devices of others stay queued
        self.stopping = threading.Event()
        # The thread runs in a copy of this context, so the config's redactor is current there too.
        context = contextvars.copy_context()
        self.thread = threading.Thread(target=context.run, args=(self._main,), name="webhook-worker", daemon=True)
        self.synced: list[Any] = []
        self.sources: dict[str, Source] = {}  # section name → its source, made on first use

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30) -> None:
        self.stopping.set()
        self.queue.wake.set()
        self.thread.join(timeout)

    def _main(self) -> None:
        with redact.using(self.config.redactor):
            asyncio.run(self._loop())

    async def _loop(self) -> None:
        sink = self.sink_factory()
        try:
            while True:
                stopping = self.stopping.is_set()
                try:
                    for name, items in self.queue.take_due(self.sections, flush=stopping).items():
                        await self._sync(name, items, sink)
                    wait = self.queue.seconds_to_next(self.sections)
                    pause = 0.5 if wait is None else min(0.5, wait)
                except sqlite3.Error as exc:  # the queue file cannot be read now (disk?): try again
                    log.error("the webhook queue %s cannot be read: %s", self.queue.path, exc)
                    pause = 5.0
                if stopping:
                    break
                await asyncio.to_thread(self.queue.wake.wait, pause)
                self.queue.wake.clear()
        finally:
            await self._close_sources()
            await sink.aclose()

    async def _close_sources(self) -> None:
        sources, self.sources = self.sources, {}
        for name, source in sources.items():
            try:
                await source.aclose()
            except Exception as exc:  # closing is best effort: the process is stopping
                log.warning("[%s] could not close the source cleanly: %s", name, exc)

    def _source(self, name: str) -> Source:
        source = self.sources.get(name)
        if source is None:
            section = self.config.sections[name]
            assert section.source_cls is not None
            source = self.sources[name] = section.source_cls(section)
        return source

    async def _sync(self, name: str, items: list[Item], sink: Any) -> None:
        from ..sync import run_section

        section = self.config.sections[name]
        ids = [device for device, _ in items]
        try:
            only = _Only(self._source(name), ids)
            result = await run_section(section, self.config, sink, self.options, source=only)
        except Exception as exc:  # a bug must not stop the worker, nor lose the devices
            log.exception("[%s] webhook sync of %d device(s) failed: %s", name, len(ids), exc)
            self._retry(name, items, str(exc) or type(exc).__name__)
            return
        self.synced.append(result)
        delivered = result.error is None and result.counts["failed_send"] == 0
        if delivered:
            retry = [item for item in items if item[0] in only.failed]
            done = [item for item in items if item[0] not in only.failed]
        else:
            retry = [item for item in items if item[0] not in only.missing]
            done = [item for item in items if item[0] in only.missing]
        self.queue.done(name, done)
        for device, reason in only.missing.items():
            log.error("[%s] webhook: device %s dropped from the queue: %s", name, device, reason)
        if retry:
            if delivered:
                reason = "; ".join(sorted(set(only.failed.values())))
            else:
                reason = result.error or f"{result.counts['failed_send']} record(s) not sent"
            self._retry(name, retry, reason)
        converted = result.counts["failed_convert"] - len(only.missing) - len(only.failed)
        if delivered and converted > 0:
            log.error("[%s] webhook: %d device(s) could not be converted and were not sent", name, converted)
        if delivered:
            log.info("[%s] webhook sync: %d device(s), %d sent", name, len(ids), result.counts["sent"])

    def _retry(self, name: str, items: list[Item], reason: str) -> None:
        delay = self.queue.retry(name, items)
        log.error(
            "[%s] webhook sync of %d device(s) failed: %s; they stay queued, next try in %.0f s",
            name,
            len(items),
            reason,
            delay,
        )
