"""``[netbox]``: NetBox DCIM devices via ``/api/dcim/devices/``, one device per asset record.

Auth is NetBox's API token. A v2 token (``nbt_<key>.<secret>``, the default since 4.5) is sent as
``Authorization: Bearer``; a v1 token (40 characters: hex up to 4.4, mixed-case alphanumerics since
4.5; deprecated in 4.6, removed in 5.0) as ``Authorization: Token``, the one keyword every NetBox
reads (4.4 ignores ``Bearer``). A pasted ``Bearer ``/``Token `` prefix (NetBox 4.6's token page shows
``Bearer nbt_…`` with a copy button) is dropped. Paging is limit/offset ordered by id; NetBox's
``next`` link only says "there is more" and carries the next query: it is always requested on the
configured ``url``, so the token never travels to another host or scheme a proxy put in ``next``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..auth import HeaderToken
from ..errors import ConfigError, SourceError
from ..http import HttpAuthError, HttpError, NextUrlInBody, at, decode_json, error_body, query_of_url, safe_url
from ..ini import truthy
from ..settings import BOOL, Int, Setting, Url
from .base import BadRecord, Page, Source

log = logging.getLogger(__name__)

DEVICES = "/api/dcim/devices/"
V2_PREFIX = "nbt_"
SCHEMES = ("bearer ", "token ")  # a header value pasted whole into auth_token
# DRF's PermissionDenied text: the token authenticated, its user may not view devices.
NO_PERMISSION = "You do not have permission to perform this action."


def next_query(base: str, name: str) -> NextUrlInBody:
    """Follow NetBox's ``next`` link by its query only, on our own endpoint URL (a reverse proxy
    without X-Forwarded-Proto/Host makes NetBox name its own host); said once per listing."""
    ours = urlsplit(base)
    warned = False

    def check(link: str) -> str:
        nonlocal warned
        parts = urlsplit(link)
        elsewhere = (parts.netloc.lower(), parts.scheme.lower()) != (ours.netloc.lower(), ours.scheme.lower())
        if not warned and parts.netloc and elsewhere:
            warned = True
            log.warning(
                "%s NetBox's next link points to %s://%s, not the configured url; requesting the next "
                "pages from the configured url (check the proxy's X-Forwarded-Proto/Host headers)",
                name,
                parts.scheme,
                parts.netloc,
            )
        return link

    return NextUrlInBody(at("next"), rebase=check, place=query_of_url)


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
                " any other token as `Authorization: Token ...` (v1); a pasted `Bearer `/`Token ` prefix is dropped"
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
                "`true` leaves out each device's rendered `config_context`: pages get much smaller; when a"
                " mapping (INI or Oomnitza's `Netbox` mapping) reads `config_context.*`, it is requested anyway"
            ),
        ),
    )
    default_mappings: ClassVar[dict[str, dict[str, Any]]] = {}

    def validate(self) -> None:
        if any(c.isspace() for c in self.token):
            raise ConfigError(f"[{self.name}] auth_token contains spaces; set only the token itself")

    @property
    def token(self) -> str:
        """``auth_token`` without a pasted ``Bearer ``/``Token `` scheme."""
        token = self.setting("auth_token").strip()
        for scheme in SCHEMES:
            if token.lower().startswith(scheme):
                return token[len(scheme) :].strip()
        return token

    @property
    def base(self) -> str:
        base = self.setting("url").rstrip("/")
        return base.removesuffix("/api").rstrip("/")

    def _auth(self) -> HeaderToken:
        token = self.token
        if token.startswith(V2_PREFIX):
            return HeaderToken(token, scheme="Bearer")
        log.warning(
            "[%s] auth_token is a v1 NetBox token (Authorization: Token), deprecated in NetBox 4.6 and "
            "removed in 5.0; create a v2 token (nbt_...) in NetBox",
            self.name,
        )
        return HeaderToken(token, scheme="Token")

    def _exclude_config_context(self) -> bool:
        if not truthy(self.setting("exclude_config_context")):
            return False
        mapped = [s for s in self.mapped_sources() if s == "config_context" or s.startswith("config_context.")]
        if mapped:
            log.info(
                "[%s] exclude_config_context is on, but the mapping reads %s: config_context is requested",
                self.name,
                mapped[0],
            )
            return False
        return True

    async def pages(self) -> AsyncIterator[Page]:
        params: dict[str, Any] = {"limit": int(self.setting("page_size")), "ordering": "id"}
        if self._exclude_config_context():
            params["exclude"] = "config_context"
        name = f"[{self.name}]"
        async with self.http(base_url=self.base, headers={"Accept": "application/json"}, auth=self._auth()) as http:
            try:
                async for response in http.paginate(next_query(self.base, name), DEVICES, params=params):
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
                        ]
            except HttpAuthError as exc:
                if _detail(exc).strip() == NO_PERMISSION:
                    raise SourceError(
                        f"{name} NetBox accepted the token but its user may not read devices "
                        f"({exc.status}{_detail(exc)}): grant view permission on DCIM devices "
                        "(dcim.view_device) to the token's user"
                    ) from None
                raise SourceError(
                    f"{name} NetBox rejected the token ({exc.status}{_detail(exc)}): check auth_token"
                ) from None
            except HttpError as exc:
                if exc.status == 400 and _detail(exc):
                    raise SourceError(f"{name} NetBox refused the device query (400{_detail(exc)})") from None
                raise


def _detail(exc: HttpError) -> str:
    """NetBox's error text: ``{"detail": "…"}`` (auth) or a JSON list of messages (validation)."""
    detail = error_body(exc).get("detail")
    if not detail and exc.response is not None:
        try:
            body = exc.response.json()
        except ValueError:
            body = None
        if isinstance(body, list) and body and isinstance(body[0], str):
            detail = "; ".join(str(m) for m in body)
    return f" {detail}" if isinstance(detail, str) and detail else ""
