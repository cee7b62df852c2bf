"""Declarative HTTP calls of cloud configs: rendering a call spec, SaaS authorization, parsing answers."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from .. import redact
from ..errors import ConfigError, SourceError
from ..http import Http, HttpAuthError
from ..oomnitza.client import OomnitzaClient
from .sandbox import Scope, Templates

log = logging.getLogger(__name__)

USER_AGENT = "Oomnitza Connector"


class ManagedError(SourceError):
    """A failure of a managed run, with the message the Oomnitza UI shows."""


class ManagedConfigError(ConfigError, ManagedError):
    """The cloud config or the [managed.N] section is unusable."""


def saas_auth_kind(value: dict[str, Any]) -> str:
    """credential, session, static or none; a session without a behavior is a ManagedConfigError."""
    if value.get("credential_id"):
        return "credential"
    if value.get("type") == "session":
        if not isinstance(value.get("behavior"), dict):
            raise ManagedConfigError("the session authorization has no behavior")
        return "session"
    if value.get("headers") or value.get("params"):
        return "static"
    return "none"


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    body: str | None = None

    def key(self) -> str:
        return json.dumps([self.method, self.url, sorted(self.params.items()), self.body], default=str)

    @classmethod
    def of(cls, parts: dict[str, Any]) -> Request:
        """A request from a worker's ``call`` task (templating.render_call)."""
        return cls(parts["method"], parts["url"], parts["headers"], parts["params"], parts["body"])


async def render_call(
    templates: Templates, spec: dict[str, Any], what: str, scope: Scope | None, overlay: dict[str, Any]
) -> Request:
    """A call spec rendered (in a template worker) into a request."""
    return Request.of(await templates.run_one("call", {"spec": spec, "what": what, "overlay": overlay}, scope))


def parse_body(response: httpx.Response) -> Any:
    """JSON, else XML (as xmltodict reads it), else the text; an empty body is ""."""
    text = response.text
    if not text.strip():
        return ""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import xmltodict

        return xmltodict.parse(text)
    except Exception:  # not XML either: the raw text, as the cloud's configs expect
        return text


def links_of(response: httpx.Response) -> dict[str, dict[str, str]]:
    return {rel: {"url": link.get("url", ""), "rel": rel} for rel, link in response.links.items() if rel is not None}


class SaasAuth:
    """The SaaS authorization of a run: static headers/params, a cloud-held credential, or a session."""

    def __init__(self, value: dict[str, Any], oomnitza: OomnitzaClient, templates: Templates) -> None:
        self.value = value
        self.oomnitza = oomnitza
        self.templates = templates
        self.session: dict[str, dict[str, str]] | None = None
        self.logins = 0
        self.kind = saas_auth_kind(value)
        if self.kind == "static":
            for part in ("headers", "params"):
                for secret in (value.get(part) or {}).values():
                    redact.add_secret(str(secret))

    async def apply(self, request: Request, http: Http, scope: Scope | None, overlay: dict[str, Any]) -> None:
        if self.kind == "static":
            request.headers.update({k: str(v) for k, v in (self.value.get("headers") or {}).items()})
            request.params.update({k: str(v) for k, v in (self.value.get("params") or {}).items()})
        elif self.kind == "credential":
            answer = (
                await self.oomnitza.call_json(
                    "POST",
                    f"/api/v3/auth/{self.value['credential_id']}/secret",
                    json={
                        "url": request.url,
                        "http_method": request.method,
                        "params": request.params,
                        "headers": request.headers,
                        "body": request.body or "",
                    },
                )
                or {}
            )
            for part, target in (("headers", request.headers), ("params", request.params)):
                for key, secret in (answer.get(part) or {}).items():
                    redact.add_secret(str(secret))
                    target[key] = str(secret)
        elif self.kind == "session":
            if self.session is None:
                await self.login(http, scope, overlay)
            assert self.session is not None
            request.headers.update(self.session["headers"])
            request.params.update(self.session["params"])

    async def login(self, http: Http, scope: Scope | None, overlay: dict[str, Any]) -> None:
        """Run the session behavior once; its headers/params are reused until the SaaS refuses them."""
        behavior = self.value["behavior"]
        request = await render_call(self.templates, behavior, "session login call", scope, overlay)
        request.headers.setdefault("User-Agent", USER_AGENT)
        response = await _send(request, http)
        self.logins += 1
        answer = {**overlay, "response": parse_body(response), "response_headers": response.headers}
        self.session = await self.templates.run_one(
            "pairs", {"spec": behavior.get("result") or {}, "what": "session login result", "overlay": answer}, scope
        )
        for part in self.session.values():
            for secret in part.values():
                redact.add_secret(secret)

    def can_refresh(self) -> bool:
        return self.kind == "session"


async def send(
    request: Request, http: Http, auth: SaasAuth, scope: Scope | None, overlay: dict[str, Any]
) -> httpx.Response:
    """Send a rendered call with the run's authorization; a session is renewed once on a 401.
    ``scope``/``overlay``: the template context a session login is rendered with."""
    prepared = Request(request.method, request.url, dict(request.headers), dict(request.params), request.body)
    await auth.apply(prepared, http, scope, overlay)
    prepared.headers.setdefault("User-Agent", USER_AGENT)
    try:
        return await _send(prepared, http)
    except HttpAuthError as exc:
        if not auth.can_refresh() or exc.status != 401:
            raise
        log.info("%s: the SaaS session was refused; logging in again", http.name)
        auth.session = None
        prepared = Request(request.method, request.url, dict(request.headers), dict(request.params), request.body)
        await auth.apply(prepared, http, scope, overlay)
        prepared.headers.setdefault("User-Agent", USER_AGENT)
        return await _send(prepared, http)


async def _send(request: Request, http: Http) -> httpx.Response:
    try:
        return await http.request(
            request.method,
            request.url,
            params=request.params or None,
            headers=request.headers,
            content=request.body.encode() if request.body is not None else None,
            # The cloud's calls read data (list, detail, software); the reference retries its GETs and
            # POSTs alike (managed-mode.md §2.4), so a POST list call rides out a 5xx here too.
            idempotent=True if request.method.upper() == "POST" else None,
        )
    except httpx.InvalidURL as exc:  # a template rendered something that is not a URL
        raise ManagedError(f"{request.method} {redact.scrub(request.url)[:200]!r} is not a valid URL: {exc}") from None
