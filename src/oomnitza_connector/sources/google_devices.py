"""``[chromebooks]`` and ``[google_mobile_devices]``: Google Workspace devices from the Admin SDK
Directory API (``admin.googleapis.com/admin/directory/v1``).

Both authenticate as a service account with domain-wide delegation: google-auth signs a JWT with
the service account's key (``iss`` = the account, ``sub`` = the Workspace administrator named in
``service_account_impersonate``, ``scope`` = the read-only device scope) and exchanges it at the
key's ``token_uri`` for an access token. google-auth is blocking, so the exchange runs in a worker
thread; its HTTP goes through httpx with the section's TLS settings. The token is reused until it
expires (``RefreshingToken``).

Listing pages with ``maxResults`` and ``pageToken``/``nextPageToken``, ``projection=FULL``. Google
signals quota with ``403`` and reason ``userRateLimitExceeded``/``rateLimitExceeded``/
``quotaExceeded``: those are retried like a ``429``; any other 403 is a refusal.

``[google_mobile_devices]`` can also read the Cloud Identity Devices API (``device_api =
cloud_identity``), the only API that lists company-owned devices.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from .. import redact
from ..auth import RefreshingToken
from ..errors import ConfigError, SourceError
from ..http import Cursor, Http, HttpAuthError, HttpError, classify_transport_error, decode_json, error_body, safe_url
from ..settings import Setting
from .base import BadRecord, Record, Source

log = logging.getLogger(__name__)

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
DIRECTORY_API = "https://admin.googleapis.com"
DIRECTORY_PREFIX = "/admin/directory/v1"
CLOUD_IDENTITY_API = "https://cloudidentity.googleapis.com"
CLOUD_IDENTITY_PREFIX = "/v1"
SCOPES = "https://www.googleapis.com/auth/"
CLOUD_IDENTITY_SCOPE = SCOPES + "cloud-identity.devices.readonly"
THROTTLE_REASONS = frozenset({"userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded"})
DELEGATION_PAGE = "Admin console › Security › Access and data control › API controls › Domain-wide delegation"


# -- Google's error bodies ---------------------------------------------------------------------------

def _error(response: httpx.Response | None) -> dict[str, Any]:
    """The ``error`` object of a Google API error body, or {}."""
    error = error_body(response).get("error")
    return error if isinstance(error, dict) else {}


def google_reasons(response: httpx.Response) -> set[str]:
    errors = _error(response).get("errors")
    return {str(e.get("reason")) for e in errors if isinstance(e, dict)} if isinstance(errors, list) else set()


def google_throttled(response: httpx.Response) -> bool:
    """Google's quota answers are 403s: retry them like a 429 (``Http(retry_if=...)``)."""
    return response.status_code == 403 and bool(google_reasons(response) & THROTTLE_REASONS)


def google_message(response: httpx.Response | None) -> str:
    message = _error(response).get("message")
    return f" {message}" if isinstance(message, str) and message else ""


def next_page_token(response: httpx.Response) -> str | None:
    body = decode_json(response)
    token = body.get("nextPageToken") if isinstance(body, dict) else None
    return token if isinstance(token, str) and token else None


# -- google-auth over httpx ----------------------------------------------------------------------------

def _google_transport_base() -> type:
    from google.auth import transport

    return transport.Request  # type: ignore[no-any-return]


class _TransportResponse:
    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.headers = dict(response.headers)
        self.data = response.content


def make_transport(verify: Any, timeout: float = 60.0) -> Any:
    """A ``google.auth.transport.Request`` sending google-auth's token requests with httpx (so the
    section's TLS settings apply to the token endpoint too). Blocking: call it from a thread."""
    from google.auth import exceptions

    class HttpxRequest(_google_transport_base()):  # type: ignore[misc]
        def __init__(self) -> None:
            self.client = httpx.Client(verify=verify, timeout=timeout, headers={"User-Agent": "oomnitza-connector"})

        def __call__(self, url: str, method: str = "GET", body: Any = None,
                     headers: Mapping[str, str] | None = None, timeout: float | None = None,
                     **kwargs: Any) -> _TransportResponse:
            try:
                response = self.client.request(method, url, content=body, headers=dict(headers or {}),
                                               timeout=timeout or self.client.timeout)
            except httpx.HTTPError as exc:
                raise exceptions.TransportError(classify_transport_error(exc, safe_url(url))) from None
            return _TransportResponse(response)

        def close(self) -> None:
            self.client.close()

    return HttpxRequest()


# -- the service account key --------------------------------------------------------------------------

def parse_key(text: str, section: str, where: str) -> dict[str, Any]:
    """The service-account JSON key as a dict, checked for the fields the JWT grant needs."""
    try:
        info = json.loads(text, strict=False)  # strict=False: a pasted key may hold raw newlines
    except ValueError as exc:
        pos = f"line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(f"[{section}] service_account_json_key ({where}) is not valid JSON ({pos}): paste the "
                          "key file's content on one line, or give the path of the .json file") from None
    if not isinstance(info, dict) or not info:
        raise ConfigError(f"[{section}] service_account_json_key ({where}) must be the service account's JSON key "
                          "(an object with client_email and private_key)")
    kind = info.get("type", "service_account")
    if kind != "service_account":
        raise ConfigError(f"[{section}] service_account_json_key ({where}) is a credential of type '{kind}', "
                          "not a service account key: create a key for the service account (type service_account)")
    missing = [k for k in ("client_email", "private_key") if not isinstance(info.get(k), str) or not info[k]]
    if missing:
        raise ConfigError(f"[{section}] service_account_json_key ({where}) lacks {' and '.join(missing)}")
    info.setdefault("token_uri", GOOGLE_TOKEN_URI)
    for name in ("private_key", "private_key_id"):
        redact.add_secret(info.get(name))
        for line in str(info.get(name) or "").splitlines():
            redact.add_secret(line if len(line) >= 16 else "")  # a PEM line printed alone is masked too
    return info


class GoogleDirectorySource(Source):
    """Shared base: settings, the delegated service-account token, the paging loop and errors."""

    record_type = "assets"
    collection: ClassVar[str]  # "chromeos" | "mobile"
    items_key: ClassVar[str]  # "chromeosdevices" | "mobiledevices"
    scope: ClassVar[str]
    max_page: ClassVar[int]
    privilege: ClassVar[str]  # the admin privilege the impersonated user needs

    @staticmethod
    def google_settings(max_page: int) -> tuple[Setting, ...]:
        return (
            Setting("service_account_impersonate", "", example="username@example.com",
                    help="email of the Google Workspace administrator the service account acts as"),
            Setting("service_account_json_key", "{}", secret=True,
                    help="the service account's JSON key: the file's content on one line, or the path of the file"),
            Setting("url", DIRECTORY_API, help="Admin SDK API base (with or without /admin/directory/v1)"),
            Setting("page_size", str(max_page), help=f"devices per request (1-{max_page})"),
        )

    def validate(self) -> None:
        subject = self.setting("service_account_impersonate").strip()
        if not subject or "@" not in subject:
            raise ConfigError(f"[{self.name}] set service_account_impersonate to the email of a Google Workspace "
                              "administrator (domain-wide delegation acts as that user)")
        raw = self.setting("service_account_json_key").strip()
        if not raw or raw == "{}":
            raise ConfigError(f"[{self.name}] set service_account_json_key to the service account's JSON key "
                              "(the file's content on one line, or the path of the .json file)")
        if raw.startswith("{"):
            parse_key(raw, self.name, "inline")  # reading a key file is I/O: that waits for the run
        for name in ("url",):
            if not self.setting(name).lower().startswith(("http://", "https://")):
                raise ConfigError(f"[{self.name}] {name} must start with https://")
        size = self.setting("page_size")
        if not size.isdigit() or not 1 <= int(size) <= self.max_page:
            raise ConfigError(f"[{self.name}] page_size must be a number from 1 to {self.max_page}")

    # -- auth ---------------------------------------------------------------------------------------

    def key_info(self) -> dict[str, Any]:
        raw = self.setting("service_account_json_key").strip()
        if raw.startswith("{"):
            return parse_key(raw, self.name, "inline")
        path = os.path.expanduser(raw)
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            # the path itself is the secret setting's value, so the redactor masks it in messages
            raise ConfigError(f"[{self.name}] service_account_json_key: cannot read the key file it names "
                              f"({exc.strerror}); give the .json key file's path or its content") from None
        return parse_key(text, self.name, "file")

    def scopes(self) -> list[str]:
        return [self.scope]

    def credentials(self, info: dict[str, Any]) -> Any:
        from google.oauth2 import service_account

        try:
            return service_account.Credentials.from_service_account_info(
                info, scopes=self.scopes(), subject=self.setting("service_account_impersonate").strip())
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            reason = redact.scrub(str(exc).split(". ")[0].splitlines()[0] if str(exc) else type(exc).__name__)
            raise ConfigError(f"[{self.name}] service_account_json_key: the private_key cannot be used ({reason}); "
                              "download a new key for the service account") from None

    def token_fetcher(self, info: dict[str, Any]) -> tuple[Any, Any]:
        """(fetch coroutine for RefreshingToken, transport to close)."""
        from google.auth import exceptions

        creds = self.credentials(info)
        transport = make_transport(self.section.tls().context())

        async def fetch() -> tuple[str, float | None]:
            try:
                await asyncio.to_thread(creds.refresh, transport)
            except exceptions.RefreshError as exc:
                raise SourceError(self._refused(exc, info)) from None
            except exceptions.TransportError as exc:
                raise SourceError(f"[{self.name}] cannot get a Google access token: {exc}") from None
            token = str(creds.token or "")
            expires_in = None
            if creds.expiry is not None:
                expires_in = (creds.expiry - datetime.now(UTC).replace(tzinfo=None)).total_seconds()
            return token, expires_in

        return fetch, transport

    def _refused(self, exc: Exception, info: dict[str, Any]) -> str:
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        error = str(data.get("error") or "")
        text = str(data.get("error_description") or "") or (str(exc.args[0]) if exc.args else str(exc))
        detail = f"{error}: {text}" if error and not text.startswith(error) else text
        client_id = info.get("client_id") or info.get("client_email")
        subject = self.setting("service_account_impersonate").strip()
        if error == "unauthorized_client":
            hint = (f"grant domain-wide delegation to client id {client_id} with the scope "
                    f"{' '.join(self.scopes())} ({DELEGATION_PAGE})")
        elif error == "invalid_grant" and "signature" in text.lower():
            hint = ("Google does not know this key (deleted or rotated): download a new JSON key for "
                    f"{info.get('client_email')} into service_account_json_key")
        elif error == "invalid_grant":
            hint = (f"check service_account_impersonate ({subject} must be an existing Workspace user), that the "
                    "key was not deleted, and this machine's clock")
        else:
            hint = "check service_account_json_key (a current key of an existing service account)"
        return redact.scrub(f"[{self.name}] Google refused the service account's token request ({detail}): {hint}")

    # -- listing ------------------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return self.setting("url").strip().rstrip("/").removesuffix(DIRECTORY_PREFIX)

    @property
    def path(self) -> str:
        return f"{DIRECTORY_PREFIX}/customer/my_customer/devices/{self.collection}"

    def list_params(self) -> dict[str, Any]:
        return {"projection": "FULL", "maxResults": self.setting("page_size")}

    async def pages(self) -> AsyncIterator[list[Record]]:
        info = self.key_info()
        fetch, transport = self.token_fetcher(info)
        try:
            async with self.http(base_url=self.base, headers={"Accept": "application/json"},
                                 auth=RefreshingToken(fetch), retry_if=google_throttled) as http:
                async for page in self._list(http):
                    yield page
        finally:
            transport.close()

    async def _list(self, http: Http) -> AsyncIterator[list[Record]]:
        try:
            async for response in http.paginate(Cursor(next_page_token, "pageToken"), self.path,
                                                params=self.list_params()):
                body = decode_json(response)
                if not isinstance(body, dict):
                    raise SourceError(f"[{self.name}] Google answered with {type(body).__name__}, not an object")
                items = body.get(self.items_key, [])
                if not isinstance(items, list):
                    raise SourceError(f"[{self.name}] Google's '{self.items_key}' is not a list")
                if items:
                    yield [d if isinstance(d, dict) else BadRecord("device is not an object", d)  # type: ignore[misc]
                           for d in items]
        except HttpAuthError as exc:
            subject = self.setting("service_account_impersonate").strip()
            if exc.status == 403:
                raise SourceError(
                    f"[{self.name}] Google refused access ({exc.status}{google_message(exc.response)}): "
                    f"{subject} must be a Workspace administrator with the '{self.privilege}' privilege, and the "
                    "API must be enabled in the service account's Cloud project") from None
            raise SourceError(f"[{self.name}] Google rejected the access token ({exc.status}"
                              f"{google_message(exc.response)}): check service_account_json_key") from None
        except HttpError as exc:
            message = google_message(exc.response)
            if not message:
                raise
            raise SourceError(f"{exc} ({message.strip()})") from None


class Chromebooks(GoogleDirectorySource):
    module = "chromebooks"
    mapping_name = "Chromebooks"
    summary = "Google Workspace ChromeOS devices"
    collection = "chromeos"
    items_key = "chromeosdevices"
    scope = SCOPES + "admin.directory.device.chromeos.readonly"
    max_page = 300
    privilege = "Services › Chrome OS › Manage Chrome OS devices (read only)"
    settings = GoogleDirectorySource.google_settings(300)


DEVICE_APIS = ("directory", "cloud_identity")


class GoogleMobileDevices(GoogleDirectorySource):
    module = "google_mobile_devices"
    mapping_name = "GoogleMobileDevices"
    summary = "Google Workspace mobile devices"
    collection = "mobile"
    scope = SCOPES + "admin.directory.device.mobile.readonly"
    max_page = 100
    privilege = "Services › Mobile Device Management › Manage Devices and Settings"
    settings = (
        *GoogleDirectorySource.google_settings(100),
        Setting("device_api", "directory", choices=DEVICE_APIS,
                help="directory (Admin SDK: user-owned devices, the old record shape) or cloud_identity "
                     "(Cloud Identity Devices API: company-owned devices too, another record shape)"),
        Setting("cloud_identity_url", CLOUD_IDENTITY_API, help="Cloud Identity API base (device_api = cloud_identity)"),
    )

    @property
    def cloud_identity(self) -> bool:
        return self.setting("device_api") == "cloud_identity"

    def validate(self) -> None:
        super().validate()
        if self.cloud_identity and not self.setting("cloud_identity_url").lower().startswith(("http://", "https://")):
            raise ConfigError(f"[{self.name}] cloud_identity_url must start with https://")

    def scopes(self) -> list[str]:
        return [CLOUD_IDENTITY_SCOPE] if self.cloud_identity else [self.scope]

    @property
    def base(self) -> str:
        if self.cloud_identity:
            return self.setting("cloud_identity_url").strip().rstrip("/").removesuffix(CLOUD_IDENTITY_PREFIX)
        return super().base

    @property
    def path(self) -> str:
        return f"{CLOUD_IDENTITY_PREFIX}/devices" if self.cloud_identity else super().path

    def list_params(self) -> dict[str, Any]:
        if self.cloud_identity:
            return {"customer": "customers/my_customer", "pageSize": self.setting("page_size")}
        return super().list_params()

    @property
    def items_key(self) -> str:  # type: ignore[override]
        return "devices" if self.cloud_identity else "mobiledevices"
