"""``[netbox]``: NetBox DCIM devices via ``/api/dcim/devices/``, one device per asset record.

Auth is NetBox's API token: ``Authorization: Token <40 hex>`` (v1, deprecated in NetBox 4.6 and
removed in 5.0) or, for a token that looks like ``nbt_<key>.<secret>``, ``Authorization: Bearer``
(v2, the default for new tokens since 4.5). Paging is limit/offset ordered by id; NetBox's ``next``
link only says "there is more" and carries the next query: it is always requested on the
configured ``url``, so the token never travels to another host or scheme a proxy put in ``next``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from ..auth import HeaderToken
from ..config import truthy
from ..errors import ConfigError, SourceError
from ..http import HttpAuthError, HttpError, PageRequest, Paginator, decode_json, error_body, safe_url
from ..settings import BOOL, Int, Setting, Url
from .base import BadRecord, Record, Source

log = logging.getLogger(__name__)

DEVICES = "/api/dcim/devices/"
V2_PREFIX = "nbt_"


class NextQuery(Paginator):
    """Follow NetBox's ``next`` link by its query only, on our own endpoint URL."""

    def __init__(self, base: str, name: str) -> None:
        self.host = urlsplit(base).netloc.lower()
        self.scheme = urlsplit(base).scheme.lower()
        self.name = name
        self.warned = False

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        body = decode_json(response)
        nxt = body.get("next") if isinstance(body, dict) else None
        if not nxt or not isinstance(nxt, str):
            return None
        parts = urlsplit(nxt)
        elsewhere = (parts.netloc.lower(), parts.scheme.lower()) != (self.host, self.scheme)
        if not self.warned and parts.netloc and elsewhere:
            self.warned = True
            log.warning(
                "%s NetBox's next link points to %s://%s, not the configured url; requesting the next "
                "pages from the configured url (check the proxy's X-Forwarded-Proto/Host headers)",
                self.name,
                parts.scheme,
                parts.netloc,
            )
        return PageRequest(request.url, dict(parse_qsl(parts.query, keep_blank_values=True)))


class Netbox(Source):
    module = "netbox"
    mapping_name = "Netbox"
    record_type = "assets"
    summary = "NetBox DCIM devices"
    settings = (
        Setting(
            "url",
            None,
            example="https://NETBOX",
            kind=Url(),
            help=(
                "the base URL of NetBox; `https://netbox.example.com` and `https://netbox.example.com/api` both work"
            ),
        ),
        Setting(
            "auth_token",
            None,
            example="*******",
            secret=True,
            help=(
                "the API token: a v2 token (`nbt_<key>.<secret>`) is sent as `Authorization: Bearer ...`,"
                " any other token as `Authorization: Token ...` (v1)"
            ),
        ),
        Setting(
            "page_size",
            "1000",
            kind=Int(1, 1000),
            help=("devices per request (`limit`); NetBox caps it at its `MAX_PAGE_SIZE`, which defaults to 1000"),
        ),
        Setting(
            "exclude_config_context",
            "false",
            kind=BOOL,
            help=(
                "`true` leaves out each device's rendered `config_context`: pages get much smaller, but "
                "`config_context.*` paths are then null"
            ),
        ),
    )
    default_mappings: dict[str, dict[str, Any]] = {}

    def validate(self) -> None:
        if any(c.isspace() for c in self.setting("auth_token").strip()):
            raise ConfigError(f"[{self.name}] auth_token contains spaces; set only the token itself")

    @property
    def base(self) -> str:
        base = self.setting("url").rstrip("/")
        return base.removesuffix("/api").rstrip("/")

    def _auth(self) -> HeaderToken:
        token = self.setting("auth_token").strip()
        if token.startswith(V2_PREFIX):
            return HeaderToken(token, scheme="Bearer")
        log.warning(
            "[%s] auth_token is a v1 NetBox token (Authorization: Token), deprecated in NetBox 4.6 and "
            "removed in 5.0; create a v2 token (nbt_...) in NetBox",
            self.name,
        )
        return HeaderToken(token, scheme="Token")

    async def pages(self) -> AsyncIterator[list[Record]]:
        params: dict[str, Any] = {"limit": int(self.setting("page_size")), "ordering": "id"}
        if truthy(self.setting("exclude_config_context")):
            params["exclude"] = "config_context"
        name = f"[{self.name}]"
        async with self.http(base_url=self.base, headers={"Accept": "application/json"}, auth=self._auth()) as http:
            try:
                async for response in http.paginate(NextQuery(self.base, name), DEVICES, params=params):
                    body = decode_json(response)
                    results = body.get("results") if isinstance(body, dict) else None
                    if not isinstance(results, list):
                        raise SourceError(
                            f"{name} {safe_url(response.url)} answered without a 'results' list: "
                            "is url the NetBox base URL?"
                        )
                    if results:
                        yield [
                            r if isinstance(r, dict) else BadRecord("device is not a JSON object", r) for r in results
                        ]  # type: ignore[misc]
            except HttpAuthError as exc:
                raise SourceError(
                    f"{name} NetBox rejected the token ({exc.status}{_detail(exc)}): check auth_token"
                ) from None


def _detail(exc: HttpError) -> str:
    detail = error_body(exc).get("detail")
    return f" {detail}" if isinstance(detail, str) and detail else ""
