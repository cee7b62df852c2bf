"""Declarative HTTP calls of cloud configs: rendering a call spec, SaaS authorization, parsing answers."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from .. import redact
from ..http import Http, HttpAuthError
from ..oomnitza.client import OomnitzaClient
from .templating import render_native, render_str

log = logging.getLogger(__name__)

USER_AGENT = "Oomnitza Connector"


class ManagedError(Exception):
    """A failure of a managed run, with the message the Oomnitza UI shows."""


class ManagedConfigError(ManagedError):
    """The cloud config or the [managed.N] section is unusable."""


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    body: str | None = None

    def key(self) -> str:
        return json.dumps([self.method, self.url, sorted(self.params.items()), self.body], default=str)


def _pairs(items: Any, context: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        if isinstance(item, dict) and item.get("key"):
            out[str(item["key"])] = render_str(item.get("value"), context)
    return out


def render_call(spec: dict[str, Any], context: dict[str, Any]) -> Request:
    body = spec.get("body")
    return Request(
        method=str(spec.get("http_method") or "GET").upper(),
        url=render_str(spec.get("url"), context),
        headers=_pairs(spec.get("headers"), context),
        params=_pairs(spec.get("params"), context),
        body=render_str(body, context) if body not in (None, "") else None,
    )


def add_pairs(request: Request, spec: dict[str, Any], context: dict[str, Any]) -> None:
    request.headers.update(_pairs(spec.get("headers"), context))
    request.params.update(_pairs(spec.get("params"), context))


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
    return {rel: {"url": link.get("url", ""), "rel": rel} for rel, link in response.links.items()}


class SaasAuth:
    """The SaaS authorization of a run: static headers/params, a cloud-held credential, or a session."""

    def __init__(self, value: dict[str, Any], oomnitza: OomnitzaClient) -> None:
        self.value = value
        self.oomnitza = oomnitza
        self.session: dict[str, dict[str, str]] | None = None
        self.logins = 0
        if value.get("credential_id"):
            self.kind = "credential"
        elif value.get("type") == "session":
            if not isinstance(value.get("behavior"), dict):
                raise ManagedConfigError("the session authorization has no behavior")
            self.kind = "session"
        elif value.get("headers") or value.get("params"):
            self.kind = "static"
            for part in ("headers", "params"):
                for secret in (value.get(part) or {}).values():
                    redact.add_secret(str(secret))
        else:
            self.kind = "none"

    async def apply(self, request: Request, http: Http, context: dict[str, Any]) -> None:
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
                await self.login(http, context)
            assert self.session is not None
            request.headers.update(self.session["headers"])
            request.params.update(self.session["params"])

    async def login(self, http: Http, context: dict[str, Any]) -> None:
        """Run the session behavior once; its headers/params are reused until the SaaS refuses them."""
        behavior = self.value["behavior"]
        request = render_call(behavior, context)
        request.headers.setdefault("User-Agent", USER_AGENT)
        response = await http.request(
            request.method,
            request.url,
            params=request.params,
            headers=request.headers,
            content=request.body.encode() if request.body is not None else None,
        )
        self.logins += 1
        scope = {**context, "response": parse_body(response), "response_headers": response.headers}
        result = behavior.get("result") or {}
        self.session = {"headers": _pairs(result.get("headers"), scope), "params": _pairs(result.get("params"), scope)}
        for part in self.session.values():
            for secret in part.values():
                redact.add_secret(secret)

    def can_refresh(self) -> bool:
        return self.kind == "session"


async def send(request: Request, http: Http, auth: SaasAuth, context: dict[str, Any]) -> httpx.Response:
    """Send a rendered call with the run's authorization; a session is renewed once on a 401."""
    prepared = Request(request.method, request.url, dict(request.headers), dict(request.params), request.body)
    await auth.apply(prepared, http, context)
    prepared.headers.setdefault("User-Agent", USER_AGENT)
    try:
        return await _send(prepared, http)
    except HttpAuthError as exc:
        if not auth.can_refresh() or exc.status != 401:
            raise
        log.info("%s: the SaaS session was refused; logging in again", http.name)
        auth.session = None
        prepared = Request(request.method, request.url, dict(request.headers), dict(request.params), request.body)
        await auth.apply(prepared, http, context)
        prepared.headers.setdefault("User-Agent", USER_AGENT)
        return await _send(prepared, http)


async def _send(request: Request, http: Http) -> httpx.Response:
    return await http.request(
        request.method,
        request.url,
        params=request.params or None,
        headers=request.headers,
        content=request.body.encode() if request.body is not None else None,
    )


def native(template: Any, context: dict[str, Any]) -> Any:
    return render_native(template, context)
