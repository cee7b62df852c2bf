"""The Oomnitza REST client (oomnitza-api.md): login, mappings, locations, bulk upload, finalize."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from .. import redact
from ..config import SectionConfig
from ..errors import AuthError, SinkError
from ..http import DEFAULT_POLICY, Http, HttpAuthError, HttpError, RetryPolicy, decode_json
from .payload import RunInfo, bulk_body

log = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=utf-8"


class OomnitzaClient:
    """Talks to one Oomnitza tenant. Logs in once; on a 401 mid-run it logs in again once."""

    def __init__(self, section: SectionConfig, *, workers: int = 2, policy: RetryPolicy = DEFAULT_POLICY):
        self.section = section
        self.url = section.settings["url"].rstrip("/")
        self.http = Http(
            name="[oomnitza]",
            base_url=self.url,
            tls=section.tls(),
            policy=policy,
            timeout=section.http_timeout(),
            max_connections=max(4, workers + 2),
        )
        self.token = section.settings.get("api_token", "")
        self.workers = workers
        self._logged_in = False

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- auth ---------------------------------------------------------------------------------------
    def _set_token(self, token: str) -> None:
        redact.add_secret(token)
        self.token = token
        self.http.client.headers["Authorization2"] = token

    async def login(self) -> None:
        try:
            if self.section.settings.get("api_token"):
                self._set_token(self.section.settings["api_token"])
                await self.http.request("GET", "/api/v2/mappings", params={"name": "AuthTest"})
            else:
                form = {
                    "login": self.section.settings.get("username", ""),
                    "password": self.section.settings.get("password", ""),
                }
                response = await self.http.request("POST", "/api/request_token", data=form, retry=False)
                token = (decode_json(response) or {}).get("token")
                if not token:
                    raise SinkError(f"Oomnitza at {self.url} answered the login without a token")
                self._set_token(token)
        except HttpAuthError as exc:
            what = "api_token" if self.section.settings.get("api_token") else "username/password"
            raise AuthError(
                f"Oomnitza at {self.url} rejected the {what} ({exc.status}): "
                f"check [oomnitza] {what} in {self.section.ini_path}"
            ) from None
        except HttpError as exc:
            raise SinkError(f"cannot log in to Oomnitza: {exc}") from None
        self._logged_in = True

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if not self._logged_in:
            await self.login()
        try:
            return await self.http.request(method, path, **kwargs)
        except HttpAuthError:
            if self.section.settings.get("api_token"):
                raise AuthError(
                    f"Oomnitza at {self.url} rejected the api_token: "
                    f"check [oomnitza] api_token in {self.section.ini_path}"
                ) from None
            log.info("[oomnitza] token refused; logging in again")
            await self.login()
            try:
                return await self.http.request(method, path, **kwargs)
            except HttpAuthError as exc:
                raise AuthError(
                    f"Oomnitza at {self.url} refused the request after a new login ({exc.status})"
                ) from None

    # -- reads --------------------------------------------------------------------------------------
    async def mapping(self, name: str) -> dict[str, Any]:
        data = decode_json(await self._call("GET", "/api/v2/mappings", params={"name": name}))
        return data if isinstance(data, dict) else {}

    async def locations(self) -> list[dict[str, Any]]:
        data = decode_json(await self._call("GET", "/api/v3/locations"))
        return data if isinstance(data, list) else []

    # -- writes -------------------------------------------------------------------------------------
    async def send(self, run: RunInfo, records: list[dict[str, Any]]) -> None:
        # Safe to retry: a bulk payload is an upsert by sync key within one portion.
        await self._call("POST", "/api/v3/bulk", content=bulk_body(run, records), headers={"Content-Type": JSON_TYPE})

    async def send_error(self, run: RunInfo, record: Any, error: str, *, fatal: bool = False) -> None:
        """Report a problem of a managed run: ``record`` is the raw item (or {})."""
        await self._call(
            "POST", "/api/v3/bulk", content=bulk_body(run, [record], error, fatal), headers={"Content-Type": JSON_TYPE}
        )

    async def call_json(self, method: str, path: str, **kwargs: Any) -> Any:
        if "json" in kwargs:
            from .payload import encode

            kwargs["content"] = encode(kwargs.pop("json"))
            kwargs["headers"] = {"Content-Type": JSON_TYPE, **kwargs.get("headers", {})}
        response = await self._call(method, path, **kwargs)
        return decode_json(response) if response.content else None

    def with_token(self, token: str) -> OomnitzaClient:
        """A client of the same tenant acting with another API token (a managed integration's user)."""
        settings = {**self.section.settings, "api_token": token}
        section = SectionConfig(
            name=self.section.name,
            ini_path=self.section.ini_path,
            settings=settings,
            secret_names=self.section.secret_names,
        )
        return OomnitzaClient(section, workers=self.workers, policy=self.http.policy)

    async def finalize(self, run: RunInfo) -> None:
        await self._call(
            "POST", f"/api/v3/bulk/{run.portion}/finalize", content=b"{}", headers={"Content-Type": JSON_TYPE}
        )
