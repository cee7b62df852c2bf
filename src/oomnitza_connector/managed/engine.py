"""A cloud-managed integration is a source: ``ManagedSource`` reads the SaaS the cloud config
describes (list → detail → software/SaaS link, templates rendered by the worker pool of
sandbox.py) and ``TemplateMapper`` maps its records with the cloud's mapping. ``run_integration``
runs them with ``sync.run_section``, as ``upload`` runs a section: the same record filter,
batcher, accounting buckets, cancel checks, failure report, finalize, summary and exit codes.

Oomnitza hears of failures the way its UI expects (managed-mode.md §8), through the pipeline:

- the first list page fails: ``pages()`` raises a ``ReportedError`` (``FIRST_PAGE``) before
  anything was read, and the pipeline sends a failed synthetic portion (no session, no finalize);
- a later page fails, or the list runs past ``MAX_ITERATIONS``: a ``ReportedError`` after records
  were read; the pipeline sends what was mapped, a fatal error record, then the finalize;
- a detail, software or SaaS step fails for one item: the item is yielded as a ``BadRecord``, a
  record that fails mapping comes back from the mapper as a ``RecordError``: each is counted as
  failed and reported in an error record of its own; the run goes on;
- the first page is empty: nothing was read, and the pipeline sends an ``is_empty_run`` portion;
- the configuration is unusable (the INI section, the authorizations, the Oomnitza token, the
  mapping fetch): a failed synthetic portion, and the run does not start.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .. import redact
from ..config import Config, SectionConfig
from ..converters import ConverterRegistry
from ..errors import ConnectorError, RecordError, ReportedError
from ..http import Http, TlsOptions
from ..ini import parse_bool, truthy
from ..oomnitza.client import OomnitzaClient
from ..oomnitza.payload import RunInfo
from ..oomnitza.sinks import Sink, TestModeSink
from ..sources.base import BadRecord, Record, Source
from .calls import ManagedConfigError, ManagedError, Request, SaasAuth, links_of, parse_body, saas_auth_kind
from .calls import send as send_call
from .sandbox import Rendered, Scope, Templates
from .templating import Budget, mapping_expression

if TYPE_CHECKING:
    from ..sync import Options, SectionResult

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

# [managed.<id>] keys of the templates' budgets: name → (Budget field, type, minimum).
BUDGET_SETTINGS = {
    "template_cpu_seconds": ("cpu_seconds", float, 0.01),
    "template_output_kib": ("output_chars", int, 1),
    "template_memory_mib": ("memory_mib", int, 64),
}
FLAGS = ("insert_only", "update_only", "test_run", "verify_ssl")


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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecordError | ConnectorError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Field:
    """A mapped field: a template rendered against the record's keys (in a template worker, a page
    at a time) or a constant, then the INI converter if any."""

    name: str
    source: str
    template: str | None = None
    constant: Any = None
    converter: Callable[[str, dict[str, Any], Any], Any] | None = None

    def spec(self) -> dict[str, Any]:
        """The field as RunContext.mapping shows it."""
        return {"source": self.source} if self.template is not None else {"hardcoded": self.constant}


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

    def outcome(self) -> Any:
        if self.error is None:
            return self.record
        return BadRecord(self.error, self.item if isinstance(self.item, dict) else {"item": self.item})


class TemplateMapper:
    """The cloud's mapping (managed-mode.md §7), with the [managed.<id>] INI mapping over it: a
    page's template fields in one round trip to a template worker; any failure, whatever raised
    it, fails that record only (``CONVERSION``)."""

    def __init__(self, fields: list[_Field], templates: Templates) -> None:
        self.fields = fields
        self.templates = templates
        self.specs = {f.name: f.spec() for f in fields}
        self._templated = [(f.name, f.template) for f in fields if f.template is not None]

    async def map_page(self, records: Sequence[Any]) -> list[dict[str, Any] | RecordError]:
        out: list[dict[str, Any] | RecordError] = [
            RecordError(CONVERSION.format("record", "the record is not an object"))
        ] * len(records)
        objects = [(i, r) for i, r in enumerate(records) if isinstance(r, dict)]
        rendered = [Rendered((True, {}, ""))] * len(objects)
        if self._templated and objects:
            rendered = await self.templates.run(
                "map_record", [{"fields": self._templated, "record": record} for _, record in objects]
            )
        for (i, record), result in zip(objects, rendered, strict=True):
            out[i] = self._assemble(record, result)
        return out

    def _assemble(self, record: dict[str, Any], out: Rendered) -> dict[str, Any] | RecordError:
        if out.error is not None:
            return RecordError(CONVERSION.format("record", redact.scrub(out.error)))
        ok, values, error = out.value
        if not ok:
            failed = next((f.source for f in self.fields if f.name == values), values)
            return RecordError(CONVERSION.format(failed, redact.scrub(error)))
        mapped: dict[str, Any] = {}
        for f in self.fields:
            value = values[f.name] if f.template is not None else f.constant
            if f.converter is not None:
                try:
                    value = f.converter(f.source, record, value)
                except Exception as exc:  # RecordError, or whatever a custom converter raised
                    return RecordError(CONVERSION.format(f.source, redact.scrub(_reason(exc))))
            mapped[f.name] = value
        return mapped


class ManagedSource(Source):
    """One run of a cloud config (one element of check_managed), with the local [managed.<id>]
    section over it: the cloud config first, every key of the section replacing the cloud's
    (managed-mode.md §2.3). ``connect()`` resolves the Oomnitza client the run sends with."""

    module = "managed"
    mapping_name = "managed"
    record_type = "assets"
    cloud_reports = True

    def __init__(
        self, section: SectionConfig, cloud: dict[str, Any], base: OomnitzaClient, converters: ConverterRegistry
    ) -> None:
        self.cloud = cloud
        self.id = cloud.get("id")
        self.base = base  # the [oomnitza] client: mapping and token fetches
        self.oomnitza = base  # the client of this run's Oomnitza user (connect())
        self.converters = converters
        # The cloud config first; every key of the local section replaces the cloud's.
        self.merged_settings: dict[str, Any] = {**cloud, **section.settings}
        self.templates = Templates()
        super().__init__(section)

    # -- validation (no I/O) ----------------------------------------------------------------------

    def validate(self) -> None:
        """Every setting of the run, checked (the values are read again when used)."""
        if self.cloud.get("reports_service"):
            raise ManagedConfigError("export-file configs are run by the export-file connector")
        for check in (self._flags, self._budget, self._local_inputs, self._saas_authorization):
            check()
        self._oomnitza_authorization()  # its form; the token itself is fetched by connect()

    @functools.cached_property
    def flags(self) -> dict[str, bool]:
        return self._flags()

    @functools.cached_property
    def budget(self) -> Budget:
        return self._budget()

    @functools.cached_property
    def local_inputs(self) -> dict[str, Any]:
        return self._local_inputs()

    @functools.cached_property
    def saas_authorization(self) -> dict[str, Any]:
        return self._saas_authorization()

    def _flags(self) -> dict[str, bool]:
        return {key: self._flag(key) for key in FLAGS}

    def _local_inputs(self) -> dict[str, Any]:
        local = _json_setting(self.merged_settings.get("local_inputs"), "local_inputs", self.id)
        if not isinstance(local, dict):
            raise ManagedConfigError(f"Managed connector #{self.id}: local inputs have invalid format. Exiting")
        return local

    def _saas_authorization(self) -> dict[str, Any]:
        auth = _json_setting(self.merged_settings.get("saas_authorization"), "saas_authorization", self.id)
        if not isinstance(auth, dict):
            raise ManagedConfigError(
                f"Managed connector #{self.id}: Information for the authorization in SaaS "
                "must be presented in form of dictionary JSON"
            )
        if saas_auth_kind(auth) == "none" and auth:
            raise ManagedConfigError(f"Managed connector #{self.id}: SaaS authorization format is invalid. Exiting")
        return auth

    def _flag(self, key: str) -> bool:
        value = self.merged_settings.get(key)
        if value in (None, ""):
            return key == "verify_ssl"  # TLS is verified unless turned off
        return parse_bool(value, setting=f"[{self.name}] {key}")

    def _budget(self) -> Budget:
        """The templates' budgets: from the local section only, so a cloud config cannot raise its own."""
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
                    f"Managed connector #{self.id}: [{self.name}] {key} = {text!r} "
                    f"must be a {'number' if kind is float else 'whole number'} of at least {minimum:g}"
                )
            values[name] = value * 1024 if key == "template_output_kib" else value
        return Budget(**values)

    def _oomnitza_authorization(self) -> tuple[str, Any]:
        """("base", None), ("token", the INI's token) or ("token_id", the cloud's id)."""
        auth = self.merged_settings.get("oomnitza_authorization")
        if isinstance(auth, str) and auth.strip():
            if "oomnitza_authorization" in self.section.settings:
                return "token", auth.strip()  # an INI value is the token itself
            auth = _json_setting(auth, "oomnitza_authorization", self.id)
        if auth in (None, "", {}):
            return "base", None
        if isinstance(auth, dict) and auth.get("token_id") is not None:
            return "token_id", auth["token_id"]
        raise ManagedConfigError(f"Managed connector #{self.id}: Oomnitza authorization format is invalid. Exiting")

    # -- set-up (I/O) -----------------------------------------------------------------------------

    async def connect(self) -> OomnitzaClient:
        """The Oomnitza client of this run's user (managed-mode.md §4.4), checked; the base client
        when the config names none. Its secrets are registered with the current redactor."""
        kind, value = self._oomnitza_authorization()
        if kind == "base":
            return self.base
        if kind == "token":
            token = value
        else:
            answer = await self.base.call_json("GET", f"/api/v3/auth/oomnitza_tokens/{value}") or {}
            token = answer.get("token") if isinstance(answer, dict) else None
            if not token:
                raise ManagedConfigError(
                    f"Managed connector #{self.id}: Oomnitza returned no token for token_id {value}"
                )
        redact.add_secret(token)
        client = self.base.with_token(token)
        try:
            await client.login()
        except BaseException:
            await client.aclose()
            raise
        self.oomnitza = client
        return client

    def run_info(self) -> RunInfo:
        return RunInfo(
            section=self.name,
            connector_name=str(self.cloud.get("name") or self.id),
            data_type=str(self.cloud.get("type") or "assets"),
            sync_field=[f.strip() for f in str(self.merged_settings.get("sync_field") or "").split(",") if f.strip()],
            insert_only=self.flags["insert_only"],
            update_only=self.flags["update_only"],
            connector_id=self.id,
            test_run=True if self.flags["test_run"] else None,
            multi_str_input_value=self._multi_str(),
        )

    def _multi_str(self) -> Any:
        for value in (self.cloud.get("inputs") or {}).values():
            if isinstance(value, dict) and value.get("type") == "multi_str":
                return value.get("value")
        return None

    def _inputs(self) -> dict[str, Any]:
        inputs = {
            k: (v.get("value") if isinstance(v, dict) else v) for k, v in (self.cloud.get("inputs") or {}).items()
        }
        return {**inputs, **self.local_inputs}

    async def mapper(self, sink: Sink) -> TemplateMapper:
        """The cloud's mapping (fetched with the base token), the INI's over it."""
        for value in self.local_inputs.values():  # kept on-premise because they are secret
            redact.add_secret(str(value))
        self.templates = Templates(self.budget)
        self.auth = SaasAuth(self.saas_authorization, self.oomnitza, self.templates)
        inputs = self._inputs()
        server = await self.base.call_json("GET", "/api/v2/mappings", params={"connector_id": str(self.id)}) or {}
        specs = {name: dict(spec) for name, spec in server.items() if isinstance(spec, dict)}
        credential_name = None
        if self.auth.kind == "credential" and any(s.get("type") == "credential_input" for s in specs.values()):
            # A field may carry the name of the cloud-held credential the run uses (not its secret).
            credential = self.saas_authorization["credential_id"]
            answer = await self.base.call_json("GET", f"/api/v3/auth/{credential}") or {}
            credential_name = answer.get("name") if isinstance(answer, dict) else None
        if truthy((self.cloud.get("software_behavior") or {}).get("enabled")):
            specs.setdefault("APPLICATIONS", {"type": "attribute", "value": "software"})
        if truthy((self.cloud.get("saas_behavior") or {}).get("enabled")):
            specs.setdefault("SAAS", {"type": "attribute", "value": "saas"})
        local = self.section.mappings
        fields = [
            await self._server_field(name, spec, inputs, credential_name)
            for name, spec in specs.items()
            if name not in local
        ]
        fields += [self._local_field(name, spec) for name, spec in local.items()]
        return TemplateMapper(fields, self.templates)

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
                log.warning("[%s] field %s names the run's cloud credential, but this run uses none", self.name, name)
            return _Field(name, str(value), constant=credential_name)
        return _Field(name, str(value), constant=value)  # "value": a constant

    def _local_field(self, name: str, spec: dict[str, Any]) -> _Field:
        where = f"[{self.name}] mapping.{name}"
        converter = self.converters.bind(spec["converter"], where=where) if spec.get("converter") else None
        source = str(spec.get("source") or name)
        if spec.get("source") not in (None, ""):
            return _Field(name, source, template=mapping_expression(str(spec["source"])), converter=converter)
        if spec.get("setting") not in (None, ""):
            return _Field(name, source, constant=self.merged_settings.get(spec["setting"]), converter=converter)
        return _Field(name, source, constant=spec.get("hardcoded"), converter=converter)

    def _tls(self) -> TlsOptions:
        return TlsOptions(
            verify=self.flags["verify_ssl"],
            cacert_file=str(self.merged_settings.get("cacert_file") or ""),
            cacert_dir=str(self.merged_settings.get("cacert_dir") or ""),
            client_cert=str(self.merged_settings.get("user_pem_file") or ""),
        )

    # -- the records --------------------------------------------------------------------------------

    async def pages(self) -> AsyncIterator[list[Record | BadRecord]]:
        # One client (and cookie jar: a login's cookies are sent back) for the run's SaaS calls.
        self.saas = Http(name=f"[{self.name}]", tls=self._tls(), max_connections=DETAIL_CONCURRENCY + 2)
        try:
            async for page in self._list(self.saas):
                yield page
        finally:
            await self.saas.aclose()

    async def _list(self, http: Http) -> AsyncIterator[list[Record | BadRecord]]:
        behavior = self.cloud.get("list_behavior") or {}
        inputs = self._inputs()
        # The page's context is shipped to the template workers once and reused by its every stage.
        scope = Scope({"inputs": inputs, "list_response": {}, "list_response_headers": {}, "list_response_links": {}})
        seen: set[str] = set()
        limit = TEST_RUN_RECORDS if self.flags["test_run"] else 0
        read = 0
        iteration = 0
        while True:
            at = {"iteration": iteration}
            try:
                if iteration >= MAX_ITERATIONS:
                    raise ManagedError(MAX_ITER)
                parts = await self.templates.run_one("list_request", {"behavior": behavior, "overlay": at}, scope)
                if parts is None:  # break_early
                    return
                request = Request.of(parts)
                if request.key() in seen:
                    raise ManagedError(
                        "the pagination asked for the same page twice; stopping (check the "
                        "pagination rules of the list behavior)"
                    )
                seen.add(request.key())
                response = await send_call(request, http, self.auth, scope, at)
                scope = Scope(
                    {
                        "inputs": inputs,
                        "list_response": parse_body(response),
                        "list_response_headers": response.headers,
                        "list_response_links": links_of(response),
                    }
                )
                items = await self.templates.native(behavior.get("result"), "list result", scope, **at)
            except ConnectorError as exc:
                raise self._list_failure(iteration, str(exc)) from None
            if not items:  # the end (on the first page: an empty run)
                return
            if isinstance(items, dict):
                items = list(items)  # as the reference iterated it: a dict yields its keys
            elif not isinstance(items, list):
                items = list(items) if not isinstance(items, str) else [items]
            if limit:
                items = items[: max(0, limit - read)]
            yield await self._page(items, scope, iteration)
            read += len(items)
            if limit and read >= limit:
                return
            iteration += 1

    def _list_failure(self, iteration: int, error: str) -> ReportedError:
        error = redact.scrub(error)
        if iteration == 0:
            return ReportedError(FIRST_PAGE.format(error))
        return ReportedError(error if error == MAX_ITER else NEXT_PAGE.format(error))

    async def _page(self, items: list[Any], scope: Scope, iteration: int) -> list[Record | BadRecord]:
        """A page's items through the detail, software and SaaS stages: each template stage is one
        round trip to a template worker for the whole page. An item that fails is a BadRecord."""
        page = [_Item(item, {"iteration": iteration, "list_response_item": item}, record=item) for item in items]
        await self._details(page, scope)
        await self._software(page, scope)
        await self._saas(page, scope)
        return [one.outcome() for one in page]

    async def _calls(self, page: list[_Item], spec: dict[str, Any], what: str, scope: Scope, message: str) -> None:
        """Render one call per item (one round trip), send them (at most DETAIL_CONCURRENCY at a
        time) and keep each parsed answer in ``item.answer``."""
        calls = await self.templates.run(
            "call", [{"spec": spec, "what": what, "overlay": one.overlay} for one in page], scope
        )
        gate = asyncio.Semaphore(DETAIL_CONCURRENCY)
        http = self.saas

        async def fetch(one: _Item, call: Rendered) -> None:
            if call.error is not None:
                one.fail(message, call.error)
                return
            async with gate:
                try:
                    response = await send_call(Request.of(call.value), http, self.auth, scope, one.overlay)
                    one.answer = parse_body(response)
                except ConnectorError as exc:
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
        detail = self.cloud.get("detail_behavior") or {}
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
        spec = self.cloud.get("software_behavior") or {}
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
        spec = self.cloud.get("saas_behavior") or {}
        if not (truthy(spec.get("enabled")) and spec.get("sync_key")):
            return
        going = [one for one in page if one.error is None and isinstance(one.record, dict)]
        results = await self._each(going, "saas", lambda one: {"spec": spec, "overlay": one.overlay}, scope, SAAS)
        for one, link in results:
            if spec.get("selected_saas_id"):
                link["selected_saas_id"] = spec["selected_saas_id"]
            one.record = {**one.record, "saas": link}

    async def aclose(self) -> None:
        if self.oomnitza is not self.base:
            await self.oomnitza.aclose()
            self.oomnitza = self.base


# -- running one integration ---------------------------------------------------------------------------


async def run_integration(
    cloud: dict[str, Any],
    local: SectionConfig | None,
    base: OomnitzaClient,
    config: Config,
    options: Options,
    *,
    redactor: redact.Redactor,
    out: TextIO | None = None,
) -> SectionResult:
    """Run one cloud config through ``sync.run_section``; a configuration problem is reported to
    Oomnitza as a failed synthetic portion (the run does not start). ``redactor`` is the run's
    (a child of the config's: what the run learns is forgotten with it)."""
    from ..sync import SectionResult, run_section

    name = f"managed.{cloud.get('id')}"
    section = local or SectionConfig(name=name, ini_path=str(Path(config.path)), settings={})
    with redact.using(redactor):
        try:
            source = ManagedSource(section, cloud, base, config.converters)
            client = await source.connect()
        except ConnectorError as exc:
            message = await report_config_failure(base, cloud, str(exc), testmode=options.testmode)
            return SectionResult(section=name, data_type=str(cloud.get("type") or ""), error=message)
        try:
            sink: Sink = client
            if options.testmode:
                sink = TestModeSink(client, out)  # reads (locations) only; prints what it would send
            return await run_section(section, config, sink, options, source=source, redactor=redactor)
        finally:
            await source.aclose()


async def report_config_failure(
    base: OomnitzaClient, cloud: dict[str, Any], text: str, *, testmode: bool, ini_path: str = ""
) -> str:
    """Tell Oomnitza that an integration could not start (a failed synthetic portion, managed-mode.md
    §12: configuration errors are reported, not only logged); returns the message, one line."""
    ident = cloud.get("id")
    prefix = f"Managed connector #{ident}: "
    lines = [line.removeprefix(f"{ini_path}: ") if ini_path else line for line in text.splitlines() or [text]]
    lines = [line.removeprefix(prefix) for line in lines]
    message = redact.scrub(prefix + "; ".join(lines))
    if testmode:
        return message
    body = {"correlation_id": str(uuid.uuid4()), "failed": 1, "error_message": message, "error_type": "Fatal Error"}
    try:
        await base.call_json("POST", f"/api/v3/bulk/{ident}/add_ready_portion", json=body)
    except ConnectorError as exc:
        log.error("managed.%s: could not report to Oomnitza: %s", ident, exc)
    return message


__all__ = ["DETAIL_CONCURRENCY", "ManagedSource", "Request", "TemplateMapper", "run_integration"]
