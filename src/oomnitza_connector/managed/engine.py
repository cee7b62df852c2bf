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
from .calls import ManagedConfigError, ManagedError, Request, SaasAuth, add_pairs, links_of, parse_body, render_call
from .calls import send as send_call
from .templating import TemplateError, mapping_expression, mapping_variables, render_native, render_str

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
    name: str
    evaluate: Callable[[dict[str, Any]], Any]
    source: str


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
        auth = SaasAuth(value, oomnitza)
        if auth.kind == "none" and value:
            raise ManagedConfigError(f"Managed connector #{self.id}: SaaS authorization format is invalid. Exiting")
        return auth

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
            self._server_field(name, spec, inputs, credential_name) for name, spec in specs.items() if name not in local
        ]
        fields += [self._local_field(name, spec) for name, spec in local.items()]
        return fields

    def _server_field(
        self, name: str, spec: dict[str, Any], inputs: dict[str, Any], credential_name: str | None
    ) -> _Field:
        kind, value = spec.get("type"), spec.get("value")
        if kind == "attribute":
            expr = mapping_expression(str(value))
            return _Field(name, lambda rec: render_native(expr, mapping_variables(rec), strict=True), str(value))
        if kind == "catalog_input":
            constant = render_str(inputs.get(str(value)), {"inputs": inputs})
            return _Field(name, lambda rec: constant, str(value))
        if kind == "credential_input":
            if credential_name is None:
                log.warning(
                    "managed.%s: field %s names the run's cloud credential, but this run uses none", self.id, name
                )
            return _Field(name, lambda rec: credential_name, str(value))
        return _Field(name, lambda rec: value, str(value))  # "value": a constant

    def _local_field(self, name: str, spec: dict[str, Any]) -> _Field:
        assert self.section is not None
        where = f"[{self.section.name}] mapping.{name}"
        if spec.get("source") not in (None, ""):
            expr = mapping_expression(str(spec["source"]))

            def base(rec: dict[str, Any]) -> Any:
                return render_native(expr, mapping_variables(rec), strict=True)
        elif spec.get("setting") not in (None, ""):
            constant = self.settings.get(spec["setting"])

            def base(rec: dict[str, Any]) -> Any:
                return constant
        else:
            constant = spec.get("hardcoded")

            def base(rec: dict[str, Any]) -> Any:
                return constant

        converter = self.converters.bind(spec["converter"], where=where) if spec.get("converter") else None
        source = str(spec.get("source") or name)
        if converter is None:
            return _Field(name, base, source)
        return _Field(name, lambda rec: converter(source, rec, base(rec)), source)

    # -- the run ------------------------------------------------------------------------------------
    async def run(self) -> ManagedResult:
        try:
            if self.config.get("reports_service"):
                raise ManagedConfigError("export-file configs are run by the export-file connector")
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
        pagination = behavior.get("pagination") or None
        ctx: dict[str, Any] = {
            "inputs": inputs,
            "iteration": 0,
            "list_response": {},
            "list_response_headers": {},
            "list_response_links": {},
        }
        seen: set[str] = set()
        limit = TEST_RUN_RECORDS if self.run_info.test_run else 0
        while True:
            iteration = ctx["iteration"]
            try:
                if iteration >= MAX_ITERATIONS:
                    raise ManagedError(MAX_ITER)
                if pagination and truthy_native(pagination.get("break_early"), ctx):
                    break
                request = render_call(behavior, ctx)
                add_if = pagination.get("add_if") if pagination else None
                if pagination and (add_if in (None, "") or truthy_native(add_if, ctx)):
                    add_pairs(request, pagination, ctx)
                if request.key() in seen:
                    raise ManagedError(
                        "the pagination asked for the same page twice; stopping (check the "
                        "pagination rules of the list behavior)"
                    )
                seen.add(request.key())
                response = await send_call(request, self.http, self.auth, ctx)
                ctx.update(
                    list_response=parse_body(response),
                    list_response_headers=response.headers,
                    list_response_links=links_of(response),
                )
                items = render_native(behavior.get("result"), ctx)
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
            await self._page(items, ctx)
            if limit and self.result.pulled >= limit:
                break
            ctx["iteration"] = iteration + 1
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

    async def _page(self, items: list[Any], ctx: dict[str, Any]) -> None:
        gate = asyncio.Semaphore(DETAIL_CONCURRENCY)

        async def one(item: Any) -> tuple[Any, str | None]:
            async with gate:
                return await self._record(item, ctx)

        for item, (record, error) in zip(items, await asyncio.gather(*(one(i) for i in items)), strict=True):
            self.result.pulled += 1
            if error is not None:
                await self.uploads.error(item if isinstance(item, dict) else {"item": item}, error)
                continue
            await self._convert(record)

    async def _record(self, item: Any, page_ctx: dict[str, Any]) -> tuple[Any, str | None]:
        ctx = {**page_ctx, "list_response_item": item}
        record: Any = item
        detail = self.config.get("detail_behavior") or {}
        if detail.get("url"):
            try:
                response = await send_call(render_call(detail, ctx), self.http, self.auth, ctx)
                record = parse_body(response)
                if detail.get("result"):
                    record = render_native(detail["result"], {**ctx, "detail_response": record})
            except (ConnectorError, ManagedError) as exc:
                return None, DETAIL.format(redact.scrub(str(exc)))
        software = self.config.get("software_behavior") or {}
        if truthy(software.get("enabled")) and isinstance(record, dict):
            try:
                apps = await self._software(software, {**ctx, "detail_response": record})
            except (ConnectorError, ManagedError) as exc:
                return None, SOFTWARE.format(redact.scrub(str(exc)))
            if apps:
                record = {**record, "software": apps}
        saas = self.config.get("saas_behavior") or {}
        if truthy(saas.get("enabled")) and saas.get("sync_key") and isinstance(record, dict):
            try:
                link = {"sync_key": render_str(saas["sync_key"], ctx)}
                if saas.get("name"):
                    link["name"] = render_str(saas["name"], ctx)
                if saas.get("selected_saas_id"):
                    link["selected_saas_id"] = saas["selected_saas_id"]
            except TemplateError as exc:
                return None, SAAS.format(exc)
            record = {**record, "saas": link}
        return record, None

    async def _software(self, spec: dict[str, Any], ctx: dict[str, Any]) -> list[dict[str, Any]]:
        if spec.get("url") and spec.get("http_method"):
            response = await send_call(render_call(spec, ctx), self.http, self.auth, ctx)
            ctx = {**ctx, "software_response": parse_body(response)}
        else:
            ctx = {**ctx, "software_response": ctx["detail_response"]}
        items = render_native(spec.get("result"), ctx) or []
        apps = []
        for item in items if isinstance(items, list) else []:
            item_ctx = {**ctx, "software_response_item": item}
            version = render_native(spec.get("version"), item_ctx)
            apps.append(
                {
                    "name": render_native(spec.get("name"), item_ctx),
                    "version": None if version is None else render_str(spec.get("version"), item_ctx),
                    "path": None,
                }
            )
        return apps

    async def _convert(self, record: Any) -> None:
        if not isinstance(record, dict):
            await self.uploads.error({"item": record}, CONVERSION.format("record", "the record is not an object"))
            return
        record_filter = self.section.recordfilter if self.section else None
        try:
            if record_filter is not None and not record_filter(record):
                self.result.filtered += 1
                return
        except RecordError as exc:
            await self.uploads.error(record, CONVERSION.format("recordfilter", exc))
            return
        out: dict[str, Any] = {}
        for f in self.fields:
            try:
                out[f.name] = f.evaluate(record)
            except (TemplateError, RecordError) as exc:
                await self.uploads.error(record, CONVERSION.format(f.source, redact.scrub(str(exc))))
                return
        await self.uploads.add(out)


def truthy_native(template: Any, ctx: dict[str, Any]) -> bool:
    return bool(render_native(template, ctx))


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
