"""``[tanium]``: endpoints of the Tanium Asset module via ``/plugin/products/asset/v1/assets``.

Every call carries a ``session`` header: either a Tanium API token (``session_token``, Tanium's
recommendation; the ``token-`` prefix is added when missing) or the session string of a
username/password login (``POST /api/v2/session/login`` → ``data.session``), which is fetched again
once when Tanium answers 401/403 (sessions expire after inactivity) and logged out at the end.
Paging is keyset on the asset id: ``minimumAssetId`` = the previous page's ``meta.nextAssetId``,
until ``meta.endOfReader`` is true or a page is empty.

Tanium's Asset API reference is behind its customer login. The envelope ``{"data": [...], "meta":
{"nextAssetId", "endOfReader"}}`` is what public integrations read (e.g. the Axonius
``tanium_asset_adapter``, and a Tanium Cloud connector that reports it checked it live in 2026); the
``session`` header and the ``token-`` prefix are on developer.tanium.com ("Authentication Methods").
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..auth import HeaderToken, RefreshingToken
from ..errors import ConfigError, SourceError
from ..http import Http, HttpAuthError, HttpError, PageRequest, Paginator, decode_json
from ..settings import Int, Setting, Url
from .base import BadRecord, Record, Source

log = logging.getLogger(__name__)

ASSETS = "/plugin/products/asset/v1/assets"
LOGIN = "/api/v2/session/login"
LOGOUT = "/api/v2/session/logout"
TOKEN_PREFIX = "token-"
SESSION_ID = re.compile(r"\d+-\d+-[0-9A-Fa-f]+")  # a console session string, not an API token
SOFTWARE_KEY = "ci_installed_application"


def session_header_value(value: str) -> str:
    """An API token with its ``token-`` prefix (added when missing); session strings unchanged."""
    value = value.strip()
    if value.startswith(TOKEN_PREFIX) or SESSION_ID.fullmatch(value):
        return value
    return TOKEN_PREFIX + value


class AssetKeyset(Paginator):
    """``minimumAssetId`` from ``meta.nextAssetId``; ends on ``meta.endOfReader``, empty ``data``, a
    missing next id, or a next id that does not move forward (a loop guard)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def first(self, request: PageRequest) -> PageRequest:
        return PageRequest(request.url, {**request.params, "minimumAssetId": 1})

    def next(self, response: httpx.Response, request: PageRequest) -> PageRequest | None:
        body = decode_json(response)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data:
            return None
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
        if meta.get("endOfReader") is True:
            return None
        nxt = meta.get("nextAssetId")
        if not isinstance(nxt, int) or isinstance(nxt, bool):
            log.warning(
                "%s Tanium's answer has assets but no meta.nextAssetId; treating it as the last page", self.name
            )
            return None
        if nxt <= int(request.params["minimumAssetId"]):
            log.warning(
                "%s Tanium's meta.nextAssetId (%d) does not move past %s; stopping to avoid a loop",
                self.name,
                nxt,
                request.params["minimumAssetId"],
            )
            return None
        return PageRequest(request.url, {**request.params, "minimumAssetId": nxt})


def software_of(asset: dict[str, Any]) -> list[dict[str, Any]]:
    """``oomnitza_software`` from ``ci_installed_application``; entries without a name are skipped."""
    apps = asset.get(SOFTWARE_KEY)
    if not isinstance(apps, list):
        return []
    return [
        {"name": app["name"], "version": app.get("version"), "path": None}
        for app in apps
        if isinstance(app, dict) and str(app.get("name") or "").strip()
    ]


class Tanium(Source):
    module = "tanium"
    mapping_name = "Tanium"
    record_type = "assets"
    summary = "Tanium Asset module endpoints"
    settings = (
        Setting(
            "url",
            None,
            example="https://TANIUM_SERVER",
            kind=Url(),
            help="the Tanium Server or Tanium Cloud API host, e.g. `https://tanium.example.com`",
        ),
        Setting(
            "username",
            "",
            help="a console user with the Asset Report Read permission, used when `session_token` is empty",
        ),
        Setting("password", "", secret=True, help="that user's password"),
        Setting("domain", "", help="the user's AD domain, if the user is a domain account"),
        Setting(
            "view",
            "",
            kind=Int(min=0),
            help="the numeric id of an Asset view: only that view's attributes are returned",
        ),
        Setting(
            "session_token",
            "",
            secret=True,
            help=(
                "a Tanium API token (the `token-` prefix is added when missing); with a token, no login call is made"
            ),
        ),
        Setting("page_size", "100", kind=Int(1, 5000), help="assets per request (`limit`)"),
    )
    default_mappings = {"APPLICATIONS": {"source": "oomnitza_software"}}

    def validate(self) -> None:
        if not self.setting("session_token") and not (self.setting("username") and self.setting("password")):
            raise ConfigError(f"[{self.name}] set session_token (a Tanium API token), or username and password")

    @property
    def base(self) -> str:
        base = self.setting("url").rstrip("/")
        for suffix in ("/plugin/products/asset/v1", "/api/v2"):
            base = base.removesuffix(suffix)
        return base.rstrip("/")

    @property
    def uses_token(self) -> bool:
        return bool(self.setting("session_token"))

    async def _login(self, http: Http) -> tuple[str, float | None]:
        body = {
            "username": self.setting("username"),
            "password": self.setting("password"),
            "domain": self.setting("domain"),
        }
        try:
            response = await http.request("POST", LOGIN, json=body, auth=None)
        except HttpAuthError as exc:
            raise SourceError(
                f"[{self.name}] Tanium rejected the login ({exc.status}{_text(exc)}): "
                "check username, password and domain"
            ) from None
        data = decode_json(response)
        session = (
            data.get("data", {}).get("session")
            if isinstance(data, dict) and isinstance(data.get("data"), dict)
            else None
        )
        if not isinstance(session, str) or not session:
            raise SourceError(f"[{self.name}] Tanium's login answer has no data.session: is url the Tanium server?")
        self.session = session
        return session, None

    async def _logout(self, http: Http) -> None:
        if not getattr(self, "session", None):
            return
        try:
            await http.request("POST", LOGOUT, json={}, auth=None, retry=False, headers={"session": self.session})
        except HttpError as exc:
            log.debug("[%s] logout failed: %s", self.name, exc)

    def _applications_mapped(self) -> bool:
        """APPLICATIONS comes from the software list in the merged mapping (server + INI + default)."""
        specs = self.mapping_specs if self.mapping_specs is not None else self.section.mappings
        spec = specs.get("APPLICATIONS")
        return spec is None or spec.get("source") == "oomnitza_software"

    async def pages(self) -> AsyncIterator[list[Record]]:
        params: dict[str, Any] = {"limit": int(self.setting("page_size"))}
        if self.setting("view"):
            params["viewId"] = self.setting("view").strip()
        name = f"[{self.name}]"
        self.session = ""
        async with self.http(base_url=self.base, headers={"Accept": "application/json"}) as http:
            if self.uses_token:
                http.client.auth = HeaderToken(session_header_value(self.setting("session_token")), header="session")
            else:
                http.client.auth = RefreshingToken(
                    lambda: self._login(http), header="session", scheme="", refresh_on=(401, 403)
                )
            warned = False
            try:
                async for response in http.paginate(AssetKeyset(name), ASSETS, params=params):
                    body = decode_json(response)
                    data = body.get("data") if isinstance(body, dict) else None
                    if data is None:
                        data = []
                    if not isinstance(data, list):
                        raise SourceError(f"{name} Tanium's asset answer has no 'data' list")
                    page: list[Record | BadRecord] = []
                    for asset in data:
                        if not isinstance(asset, dict):
                            page.append(BadRecord("asset is not a JSON object", asset))
                            continue
                        page.append({**asset, "oomnitza_software": software_of(asset)})
                    if (
                        not warned
                        and data
                        and "viewId" in params
                        and self._applications_mapped()
                        and not any(isinstance(a, dict) and SOFTWARE_KEY in a for a in data)
                    ):
                        warned = True
                        log.warning(
                            "%s view %s does not include %s: APPLICATIONS will be sent empty and can clear "
                            "software in Oomnitza; add it to the view or set mapping.APPLICATIONS",
                            name,
                            params["viewId"],
                            SOFTWARE_KEY,
                        )
                    if page:
                        yield page  # type: ignore[misc]
            except HttpAuthError as exc:
                if self.uses_token:
                    raise SourceError(
                        f"{name} Tanium rejected the API token ({exc.status}{_text(exc)}): check "
                        "session_token (tokens expire and are bound to trusted IP ranges)"
                    ) from None
                raise SourceError(
                    f"{name} Tanium refused the session ({exc.status}{_text(exc)}) after logging in "
                    "again: check the user's Asset permissions and the view"
                ) from None
            except HttpError as exc:
                if exc.status in (400, 404) and "viewId" in params:
                    raise SourceError(
                        f"{name} Tanium refused view {params['viewId']} ({exc.status}{_text(exc)}): "
                        "check that the view exists and the user can see it"
                    ) from None
                raise
            finally:
                if not self.uses_token:
                    await self._logout(http)


def _text(exc: HttpError) -> str:
    if exc.response is None:
        return ""
    try:
        body = exc.response.json()
    except ValueError:
        text = exc.response.text.strip()
        return f" {text[:120]}" if text and "<" not in text else ""
    for key in ("text", "message", "error"):
        value = body.get(key) if isinstance(body, dict) else None
        if isinstance(value, str) and value:
            return f" {value}"
    return ""
