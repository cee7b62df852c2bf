"""One run of a cloud-managed integration: list → detail → software/SaaS → mapping → upload.

Failures are reported to Oomnitza the way its UI expects (managed-mode.md §8): a failed first page
as a failed synthetic portion, a later page as a fatal error record, a failed item or mapping as an
error record of its own; the run's portion is finalized after every in-flight upload completed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from .. import redact
from ..config import SectionConfig, truthy
from ..converters import ConverterRegistry
from ..errors import ConfigError, ConnectorError, RecordError
from ..http import Http, HttpError, TlsOptions
from ..ini import parse_bool
from ..oomnitza.client import OomnitzaClient
from ..oomnitza.payload import RunInfo, encode
from .calls import ManagedConfigError, ManagedError, Request, SaasAuth, links_of, parse_body
from .calls import send as send_call
from .sandbox import Rendered, Scope, Templates
from .templating import Budget, TemplateError, mapping_expression

log = logging.getLogger(__name__)

MAX_ITERATIONS = 1000
DETAIL_CONCURRENCY = 8
TEST_RUN_RECORDS = 10

FIRST_PAGE = "Failed to fetch the first block of data. The error is: {}. The further processing is impossible"
NEXT_PAGE = "Failed to fetch the next block of data. The error is: {}. The further processing is impossible"
DETAIL = "Failed to fetch the details of a single item from the block. The error is: {}"
SOFTWARE = "Failed to fetch the software information. The error is: {}"
SAAS = "Failed to fetch the saas information. The error is: {}"
CONVERSION = "Failed to process the mapping value: {}. The error is: {}"
MAX_ITER = "Connector exceeded processing limit. The error is: Reached max iterations"


def _json_setting(value: Any, what: str, ident: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        try:
            return json.loads(text)
        except ValueError:
            raise ManagedConfigError(f"Managed connector #{ident}: {what} is not valid JSON") from None
    return value if value is not None else {}


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (None, ""):
        return False
    return parse_bool(str(value), setting=what)


@dataclass
class ManagedResult:
    id: Any
    portion: str = ""
    pulled: int = 0
    sent: int = 0
    errors: int = 0
    filtered: int = 0
    outcome: str = "ok"  # ok | empty | failed | config-error
    message: str = ""
    logins: int = 0


@dataclass
class _Field:
    """A mapped field: a template rendered against the record's keys (in a template worker, a page
    at a time) or a constant, then the INI converter if any."""

    name: str
    source: str
    template: str | None = None
    constant: Any = None
    converter: Callable[[str, dict[str, Any], Any], Any] | None = None


@dataclass
class _Item:
    """One list item on its way to a record: detail → software → SaaS link, or an error."""

    item: Any
    overlay: dict[str, Any]  # the template variables of this item (over the page's scope)
    record: Any = None
    answer: Any = None  # the parsed body of its last detail/software call
    error: str | None = None

    def fail(self, message: str, error: str) -> None:
        self.error = message.format(redact.scrub(error))


# [managed.<id>] keys of the templates' budgets: name → (Budget field, type, minimum).
BUDGET_SETTINGS = {
    "template_cpu_seconds": ("cpu_seconds", float, 0.01),
    "template_output_kib": ("output_chars", int, 1),
    "template_memory_mib": ("memory_mib", int, 64),
}


@dataclass
class ManagedRun:
    config: dict[str, Any]  # the cloud config (one element of check_managed)
    section: SectionConfig | None  # the local [managed.<id>] section, if any
    base: OomnitzaClient  # the [oomnitza] client
    converters: ConverterRegistry
    workers: int = 2
    batch_size: int = 100
    testmode: bool = False
    out: TextIO | None = None
    result: ManagedResult = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.config.get("id")
        self.result = ManagedResult(self.id)
        local = self.section.settings if self.section else {}
        # The cloud config first; every key of the local section replaces the cloud's (managed-mode.md §2.3).
        self.settings: dict[str, Any] = {**self.config, **local}

    # -- set-up -------------------------------------------------------------------------------------
    def _inputs(self) -> dict[str, Any]:
        inputs = {
            k: (v.get("value") if isinstance(v, dict) else v) for k, v in (self.config.get("inputs") or {}).items()
        }
        local = _json_setting(self.settings.get("local_inputs"), "local_inputs", self.id)
        if not isinstance(local, dict):
            raise ManagedConfigError(f"Managed connector #{self.id}: local inputs have invalid format. Exiting")
        for value in local.values():
            redact.add_secret(str(value))
        return {**inputs, **local}

    def _multi_str(self) -> Any:
        for value in (self.config.get("inputs") or {}).values():
            if isinstance(value, dict) and value.get("type") == "multi_str":
                return value.get("value")
        return None

    async def _oomnitza_client(self) -> OomnitzaClient:
        auth = self.settings.get("oomnitza_authorization")
        if isinstance(auth, str) and auth.strip():
            text = auth.strip()
            if self.section and "oomnitza_authorization" in self.section.settings:
                redact.add_secret(text)
                return self.base.with_token(text)  # an INI value is the token itself
            auth = _json_setting(text, "oomnitza_authorization", self.id)
        if auth in (None, "", {}):
            return self.base
        if isinstance(auth, dict) and auth.get("token_id") is not None:
            answer = await self.base.call_json("GET", f"/api/v3/auth/oomnitza_tokens/{auth['token_id']}") or {}
            token = answer.get("token")
            if not token:
                raise ManagedConfigError(
                    f"Managed connector #{self.id}: Oomnitza returned no token for token_id {auth['token_id']}"
                )
            redact.add_secret(token)
            return self.base.with_token(token)
        raise ManagedConfigError(f"Managed connector #{self.id}: Oomnitza authorization format is invalid. Exiting")

    def _saas_auth(self, oomnitza: OomnitzaClient) -> SaasAuth:
        value = _json_setting(self.settings.get("saas_authorization"), "saas_authorization", self.id)
        if not isinstance(value, dict):
            raise ManagedConfigError(
                f"Managed connector #{self.id}: Information for the authorization in SaaS "
                "must be presented in form of dictionary JSON"
            )
        auth = SaasAuth(value, oomnitza, self.templates)
        if auth.kind == "none" and value:
            raise ManagedConfigError(f"Managed connector #{self.id}: SaaS authorization format is invalid. Exiting")
        return auth

    def _budget(self) -> Budget:
        """The templates' budgets: from the local section only, so a cloud config cannot raise its own."""
        if self.section is None:
            return Budget()
        values: dict[str, Any] = {}
        for key, (name, kind, minimum) in BUDGET_SETTINGS.items():
            text = str(self.section.settings.get(key) or "").strip()
            if not text:
                continue
            try:
                value = kind(text)
            except ValueError:
                value = None
            if value is None or not value >= minimum:
                raise ManagedConfigError(
                    f"Managed connector #{self.id}: [{self.section.name}] {key} = {text!r} "
                    f"must be a {'number' if kind is float else 'whole number'} of at least {minimum:g}"
                )
            values[name] = value * 1024 if key == "template_output_kib" else value
        return Budget(**values)

    async def _fields(self, inputs: dict[str, Any], auth: SaasAuth) -> list[_Field]:
        server = await self.base.call_json("GET", "/api/v2/mappings", params={"connector_id": str(self.id)}) or {}
        specs: dict[str, dict[str, Any]] = {}
        for name, spec in server.items():
            if isinstance(spec, dict):
                specs[name] = dict(spec)
        credential_name = None
        if auth.kind == "credential" and any(s.get("type") == "credential_input" for s in specs.values()):
            # A field may carry the name of the cloud-held credential the run uses (not its secret).
            answer = await self.base.call_json("GET", f"/api/v3/auth/{auth.value['credential_id']}") or {}
            credential_name = answer.get("name") if isinstance(answer, dict) else None
        if truthy((self.config.get("software_behavior") or {}).get("enabled")):
            specs.setdefault("APPLICATIONS", {"type": "attribute", "value": "software"})
        if truthy((self.config.get("saas_behavior") or {}).get("enabled")):
            specs.setdefault("SAAS", {"type": "attribute", "value": "saas"})
        local = self.section.mappings if self.section else {}
        fields = [
            await self._server_field(name, spec, inputs, credential_name)
            for name, spec in specs.items()
            if name not in local
        ]
        fields += [self._local_field(name, spec) for name, spec in local.items()]
        return fields

    async def _server_field(
        self, name: str, spec: dict[str, Any], inputs: dict[str, Any], credential_name: str | None
    ) -> _Field:
        kind, value = spec.get("type"), spec.get("value")
        if kind == "attribute":
            return _Field(name, str(value), template=mapping_expression(str(value)))
        if kind == "catalog_input":
            text = await self.templates.text(inputs.get(str(value)), f"field {name}", inputs=inputs)
            return _Field(name, str(value), constant=text)
        if kind == "credential_input":
            if credential_name is None:
                log.warning(
                    "managed.%s: field %s names the run's cloud credential, but this run uses none", self.id, name
                )
            return _Field(name, str(value), constant=credential_name)
        return _Field(name, str(value), constant=value)  # "value": a constant

    def _local_field(self, name: str, spec: dict[str, Any]) -> _Field:
        assert self.section is not None
        where = f"[{self.section.name}] mapping.{name}"
        converter = self.converters.bind(spec["converter"], where=where) if spec.get("converter") else None
        source = str(spec.get("source") or name)
        if spec.get("source") not in (None, ""):
            return _Field(name, source, template=mapping_expression(str(spec["source"])), converter=converter)
        if spec.get("setting") not in (None, ""):
            return _Field(name, source, constant=self.settings.get(spec["setting"]), converter=converter)
        return _Field(name, source, constant=spec.get("hardcoded"), converter=converter)

    # -- the run ------------------------------------------------------------------------------------
    async def run(self) -> ManagedResult:
        try:
            if self.config.get("reports_service"):
                raise ManagedConfigError("export-file configs are run by the export-file connector")
            self.templates = Templates(self._budget())
            inputs = self._inputs()
            oomnitza = await self._oomnitza_client()
            if oomnitza is not self.base:
                await oomnitza.login()
            auth = self._saas_auth(oomnitza)
            fields = await self._fields(inputs, auth)
        except (ManagedConfigError, ConfigError, TemplateError) as exc:
            return await self._config_failure(str(exc))
        except ConnectorError as exc:
            return await self._config_failure(f"Managed connector #{self.id}: {exc}")
        tls = self._tls()
        http = Http(name=f"[managed.{self.id}]", tls=tls, max_connections=DETAIL_CONCURRENCY + 2)
        self.run_info = RunInfo(
            section=f"managed.{self.id}",
            connector_name=str(self.config.get("name") or self.id),
            data_type=str(self.config.get("type") or "assets"),
            sync_field=[f.strip() for f in str(self.settings.get("sync_field") or "").split(",") if f.strip()],
            insert_only=_flag(self.settings.get("insert_only"), "insert_only"),
            update_only=_flag(self.settings.get("update_only"), "update_only"),
            connector_id=self.id,
            test_run=True if _flag(self.settings.get("test_run"), "test_run") else None,
            multi_str_input_value=self._multi_str(),
        )
        self.result.portion = self.run_info.portion
        self.oomnitza, self.auth, self.fields, self.http = oomnitza, auth, fields, http
        self.uploads = _Uploads(self)
        try:
            await self._list(inputs)
        finally:
            await self.uploads.drain()
            self.result.logins = auth.logins
            await http.aclose()
            if oomnitza is not self.base:
                await oomnitza.aclose()
        return self.result

    def _tls(self) -> TlsOptions:
        verify = _flag(
            self.settings.get("verify_ssl") if self.settings.get("verify_ssl") not in (None, "") else "true",
            "verify_ssl",
        )
        return TlsOptions(
            verify=verify,
            cacert_file=str(self.settings.get("cacert_file") or ""),
            cacert_dir=str(self.settings.get("cacert_dir") or ""),
            client_cert=str(self.settings.get("user_pem_file") or ""),
        )

    async def _config_failure(self, message: str) -> ManagedResult:
        message = redact.scrub(message)
        log.error("managed.%s: %s", self.id, message)
        self.result.outcome, self.result.message = "config-error", message
        await self._ready_portion({"failed": 1, "error_message": message, "error_type": "Fatal Error"})
        return self.result

    async def _ready_portion(self, body: dict[str, Any]) -> None:
        if self.testmode:
            return
        try:
            await self.base.call_json(
                "POST", f"/api/v3/bulk/{self.id}/add_ready_portion", json={"correlation_id": str(uuid.uuid4()), **body}
            )
        except ConnectorError as exc:
            log.error("managed.%s: could not report to Oomnitza: %s", self.id, exc)

    async def _list(self, inputs: dict[str, Any]) -> None:
        behavior = self.config.get("list_behavior") or {}
        # The page's context is shipped to the template workers once and reused by its every stage.
        scope = Scope({"inputs": inputs, "list_response": {}, "list_response_headers": {}, "list_response_links": {}})
        seen: set[str] = set()
        limit = TEST_RUN_RECORDS if self.run_info.test_run else 0
        iteration = 0
        while True:
            at = {"iteration": iteration}
            try:
                if iteration >= MAX_ITERATIONS:
                    raise ManagedError(MAX_ITER)
                parts = await self.templates.run_one("list_request", {"behavior": behavior, "overlay": at}, scope)
                if parts is None:  # break_early
                    break
                request = Request.of(parts)
                if request.key() in seen:
                    raise ManagedError(
                        "the pagination asked for the same page twice; stopping (check the "
                        "pagination rules of the list behavior)"
                    )
                seen.add(request.key())
                response = await send_call(request, self.http, self.auth, scope, at)
                scope = Scope(
                    {
                        "inputs": inputs,
                        "list_response": parse_body(response),
                        "list_response_headers": response.headers,
                        "list_response_links": links_of(response),
                    }
                )
                items = await self.templates.native(behavior.get("result"), "list result", scope, **at)
            except (ConnectorError, ManagedError) as exc:
                await self._list_failure(iteration, str(exc))
                return
            if not items:
                if iteration == 0:
                    self.result.outcome = "empty"
                    await self._ready_portion(
                        {"is_empty_run": True, "multi_str_input_value": self.run_info.multi_str_input_value}
                    )
                    return
                break
            if isinstance(items, dict):
                items = list(items)  # as the reference iterated it: a dict yields its keys
            elif not isinstance(items, list):
                items = list(items) if not isinstance(items, str) else [items]
            if limit:
                items = items[: max(0, limit - self.result.pulled)]
            await self._page(items, scope, iteration)
            if limit and self.result.pulled >= limit:
                break
            iteration += 1
        await self.uploads.drain()
        await self._finalize()

    async def _list_failure(self, iteration: int, error: str) -> None:
        error = redact.scrub(error)
        self.result.outcome = "failed"
        if iteration == 0:
            self.result.message = FIRST_PAGE.format(error)
            log.error("managed.%s: %s", self.id, self.result.message)
            await self._ready_portion({"failed": 1, "error_message": self.result.message, "error_type": "Fatal Error"})
            return
        self.result.message = error if error == MAX_ITER else NEXT_PAGE.format(error)
        log.error("managed.%s: %s", self.id, self.result.message)
        await self.uploads.drain()
        await self.uploads.error({}, self.result.message, fatal=True)
        await self._finalize()

    async def _finalize(self) -> None:
        if self.testmode:
            return
        try:
            await self.oomnitza.finalize(self.run_info)
        except ConnectorError as exc:
            log.error("managed.%s: could not finalize the sync session: %s", self.id, exc)

    async def _page(self, items: list[Any], scope: Scope, iteration: int) -> None:
        """A page's items through detail, software and SaaS stages, then its records through the
        mapping: each template stage is one round trip to a template worker for the whole page."""
        page = [_Item(item, {"iteration": iteration, "list_response_item": item}, record=item) for item in items]
        await self._details(page, scope)
        await self._software(page, scope)
        await self._saas(page, scope)
        records = []
        for one in page:
            self.result.pulled += 1
            if one.error is not None:
                await self.uploads.error(one.item if isinstance(one.item, dict) else {"item": one.item}, one.error)
            else:
                records.append(one.record)
        await self._convert(records)

    async def _calls(self, page: list[_Item], spec: dict[str, Any], what: str, scope: Scope, message: str) -> None:
        """Render one call per item (one round trip), send them (at most DETAIL_CONCURRENCY at a
        time) and keep each parsed answer in ``item.answer``."""
        calls = await self.templates.run(
            "call", [{"spec": spec, "what": what, "overlay": one.overlay} for one in page], scope
        )
        gate = asyncio.Semaphore(DETAIL_CONCURRENCY)

        async def fetch(one: _Item, call: Rendered) -> None:
            if call.error is not None:
                one.fail(message, call.error)
                return
            async with gate:
                try:
                    response = await send_call(Request.of(call.value), self.http, self.auth, scope, one.overlay)
                    one.answer = parse_body(response)
                except (ConnectorError, ManagedError) as exc:
                    one.fail(message, str(exc))

        await asyncio.gather(*(fetch(one, call) for one, call in zip(page, calls, strict=True)))

    async def _each(
        self, page: list[_Item], task: str, job: Callable[[_Item], dict[str, Any]], scope: Scope, message: str
    ) -> list[tuple[_Item, Any]]:
        """Run ``task`` for every item still going (one round trip); failures fail their item."""
        live = [one for one in page if one.error is None]
        done = []
        for one, out in zip(live, await self.templates.run(task, [job(one) for one in live], scope), strict=True):
            if out.error is not None:
                one.fail(message, out.error)
            else:
                done.append((one, out.value))
        return done

    async def _details(self, page: list[_Item], scope: Scope) -> None:
        detail = self.config.get("detail_behavior") or {}
        if not detail.get("url"):
            return
        await self._calls(page, detail, "detail call", scope, DETAIL)
        for one in page:
            if one.error is None:
                one.record = one.answer
        if detail.get("result"):
            results = await self._each(
                page,
                "native",
                lambda one: {
                    "template": detail["result"],
                    "label": "detail result",
                    "overlay": {**one.overlay, "detail_response": one.record},
                },
                scope,
                DETAIL,
            )
            for one, record in results:
                one.record = record

    async def _software(self, page: list[_Item], scope: Scope) -> None:
        spec = self.config.get("software_behavior") or {}
        if not truthy(spec.get("enabled")):
            return
        going = [one for one in page if one.error is None and isinstance(one.record, dict)]
        for one in going:
            one.overlay = {**one.overlay, "detail_response": one.record}
            one.answer = one.record  # without a software call, the software comes from the record
        if spec.get("url") and spec.get("http_method"):
            await self._calls(going, spec, "software call", scope, SOFTWARE)
        for one in going:
            one.overlay = {**one.overlay, "software_response": one.answer}
        results = await self._each(
            going, "software", lambda one: {"spec": spec, "overlay": one.overlay}, scope, SOFTWARE
        )
        for one, apps in results:
            if apps:
                one.record = {**one.record, "software": apps}

    async def _saas(self, page: list[_Item], scope: Scope) -> None:
        spec = self.config.get("saas_behavior") or {}
        if not (truthy(spec.get("enabled")) and spec.get("sync_key")):
            return
        going = [one for one in page if one.error is None and isinstance(one.record, dict)]
        results = await self._each(going, "saas", lambda one: {"spec": spec, "overlay": one.overlay}, scope, SAAS)
        for one, link in results:
            if spec.get("selected_saas_id"):
                link["selected_saas_id"] = spec["selected_saas_id"]
            one.record = {**one.record, "saas": link}

    async def _convert(self, records: list[Any]) -> None:
        """Filter, then map a page's records: their template fields in one round trip to a worker."""
        record_filter = self.section.recordfilter if self.section else None
        kept: list[dict[str, Any]] = []
        for record in records:
            if not isinstance(record, dict):
                await self.uploads.error({"item": record}, CONVERSION.format("record", "the record is not an object"))
                continue
            try:
                if record_filter is not None and not record_filter(record):
                    self.result.filtered += 1
                    continue
            except Exception as exc:  # RecordError or a bug of the filter: that record fails
                await self.uploads.error(record, CONVERSION.format("recordfilter", _reason(exc)))
                continue
            kept.append(record)
        templated = [(f.name, f.template) for f in self.fields if f.template is not None]
        rendered: list[Rendered] = [Rendered((True, {}, ""))] * len(kept)
        if templated and kept:
            rendered = await self.templates.run(
                "map_record", [{"fields": templated, "record": record} for record in kept]
            )
        for record, out in zip(kept, rendered, strict=True):
            mapped = self._assemble(record, out)
            if isinstance(mapped, str):
                await self.uploads.error(record, mapped)
            else:
                await self.uploads.add(mapped)

    def _assemble(self, record: dict[str, Any], out: Rendered) -> dict[str, Any] | str:
        """The mapped record, or the error message of the first field that failed."""
        if out.error is not None:
            return CONVERSION.format("record", redact.scrub(out.error))
        ok, values, error = out.value
        if not ok:
            failed = next((f.source for f in self.fields if f.name == values), values)
            return CONVERSION.format(failed, redact.scrub(error))
        mapped: dict[str, Any] = {}
        for f in self.fields:
            value = values[f.name] if f.template is not None else f.constant
            if f.converter is not None:
                try:
                    value = f.converter(f.source, record, value)
                except Exception as exc:  # RecordError, or whatever a custom converter raised
                    return CONVERSION.format(f.source, redact.scrub(_reason(exc)))
            mapped[f.name] = value
        return mapped


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecordError | ConnectorError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class _Uploads:
    """Batches mapped records into bulk payloads, at most ``workers`` in flight; error records go alone."""

    def __init__(self, run: ManagedRun) -> None:
        self.run = run
        self.batch: list[dict[str, Any]] = []
        self.slots = asyncio.Semaphore(max(1, run.workers))
        self.tasks: set[asyncio.Task[None]] = set()

    async def add(self, record: dict[str, Any]) -> None:
        self.batch.append(record)
        if len(self.batch) >= self.run.batch_size:
            await self.flush()

    async def flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        await self._spawn(self._send(batch))

    async def error(self, record: Any, message: str, *, fatal: bool = False) -> None:
        self.run.result.errors += 1
        await self._spawn(self._send_error(record, message, fatal))

    async def _spawn(self, coro: Any) -> None:
        await self.slots.acquire()
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        try:
            taken: int | None = None
            if self.run.testmode:
                self._print({**self.run.run_info.envelope(), "records": batch})
            else:
                taken = await self.run.oomnitza.send(self.run.run_info, batch)
            self.run.result.sent += len(batch) if taken is None else taken  # Oomnitza's answer says
        except ConnectorError as exc:
            self.run.result.sent += getattr(exc, "delivered", 0)  # part of a batch split after a 413
            log.error("managed.%s: %d record(s) not sent: %s", self.run.id, len(batch), exc)
        except Exception:  # a bug must not make records vanish silently
            log.exception("managed.%s: %d record(s) not sent", self.run.id, len(batch))
        finally:
            self.slots.release()

    async def _send_error(self, record: Any, message: str, fatal: bool) -> None:
        try:
            if self.run.testmode:
                self._print({**self.run.run_info.envelope(message, fatal), "records": [record]})
            else:
                await self.run.oomnitza.send_error(self.run.run_info, record, message, fatal=fatal)
        except ConnectorError as exc:
            log.error("managed.%s: could not report an error to Oomnitza: %s", self.run.id, exc)
        finally:
            self.slots.release()

    def _print(self, payload: dict[str, Any]) -> None:
        import sys

        out = self.run.out or sys.stdout
        out.write(redact.scrub(encode(payload, pretty=True).decode()) + "\n")

    async def drain(self) -> None:
        await self.flush()
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


__all__ = ["HttpError", "ManagedResult", "ManagedRun", "Request"]
