"""``[chromebooks]`` and ``[google_mobile_devices]``: Google Workspace devices from the Admin SDK
Directory API (``admin.googleapis.com/admin/directory/v1``).

Both authenticate as a service account with domain-wide delegation: a JWT (``iss`` = the account,
``sub`` = the Workspace administrator named in ``service_account_impersonate``, ``scope`` = the
read-only device scope, ``aud`` = Google's token URI) is exchanged at Google's token endpoint for an
access token. Who signs the JWT depends on the settings:

* ``service_account_json_key`` set (the old way): the connector signs it with the key's private key
  (google-auth's signer, locally) and posts it to the key's ``token_uri``.
* ``service_account_json_key`` empty and ``service_account_email`` set (keyless, for organisations
  that forbid key creation): the connector runs with ambient Google credentials
  (``google.auth.default()``: an attached service account, Workload Identity Federation,
  ``GOOGLE_APPLICATION_CREDENTIALS``), IAM signs the JWT as ``service_account_email``
  (``POST {iam_url}/v1/projects/-/serviceAccounts/{sa}:signJwt``, which needs
  ``roles/iam.serviceAccountTokenCreator`` on that account), and the connector exchanges the signed
  JWT at ``token_url`` itself.

Either way the exchange is ``POST`` form ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and
``assertion`` (RFC 7523; Google's "Using OAuth 2.0 for Server to Server Applications", HTTP/REST),
sent with the connector's async HTTP layer like the signJwt call (retries, TLS, redaction); google-auth
has no public call for exchanging a JWT (its ``_client.jwt_grant`` is private). Only the ambient
credentials' own token (metadata server, STS, impersonation: google-auth's flows, blocking) is fetched
by google-auth in a worker thread, through the blocking twin of the same layer (``GoogleAuthRequest``);
the metadata server's calls are not retried there, google-auth probes it with its own count. Tokens
are reused until they expire (``RefreshingToken``).

Listing pages with ``maxResults`` and ``pageToken``/``nextPageToken``, ``projection=FULL``. Google
signals quota with ``403`` and reason ``userRateLimitExceeded``/``rateLimitExceeded``/
``quotaExceeded``: those are retried like a ``429``; any other 403 is a refusal.

``[google_mobile_devices]`` can also read the Cloud Identity Devices API (``device_api =
cloud_identity``), the only API that lists company-owned devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from .. import redact
from ..auth import RefreshingToken, TokenFetcher
from ..errors import ConfigError, SourceError
from ..http import (
    Cursor,
    Http,
    HttpAuthError,
    HttpError,
    classify_transport_error,
    decode_json,
    error_body,
    retry_options,
    safe_url,
    sync_client,
)
from ..settings import Int, Setting, Url
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
IAM_CREDENTIALS_API = "https://iamcredentials.googleapis.com"
CLOUD_PLATFORM_SCOPE = SCOPES + "cloud-platform"  # what the ambient credentials ask for (IAM accepts it)
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
JWT_LIFETIME = 3600  # Google's maximum for the JWT bearer grant
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


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


# -- google-auth over the shared HTTP layer ------------------------------------------------------------


class _TransportResponse:
    """google-auth's ``transport.Response`` shape."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.headers = dict(response.headers)
        self.data = response.content


def google_auth_request(client: httpx.Client) -> Any:
    """A ``google.auth.transport.Request`` on our blocking client (``http.sync_client``), so google-auth's
    own token requests take the shared retry transport, TLS settings and redacted logging. Blocking:
    call it from a worker thread."""
    from google.auth import exceptions, transport

    class GoogleAuthRequest(transport.Request):
        def __call__(
            self,
            url: str,
            method: str = "GET",
            body: Any = None,
            headers: Mapping[str, str] | None = None,
            timeout: float | None = None,
            **kwargs: Any,
        ) -> _TransportResponse:
            headers = dict(headers or {})
            # google-auth sends Metadata-Flavor to the metadata server and retries those calls itself
            metadata = any(k.lower() == "metadata-flavor" for k in headers)
            try:
                response = client.request(
                    method,
                    url,
                    content=body,
                    headers=headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                    extensions=retry_options(retry=not metadata, idempotent=True),  # token requests only
                )
            except httpx.HTTPError as exc:
                raise exceptions.TransportError(classify_transport_error(exc, safe_url(url))) from None
            return _TransportResponse(response)

    return GoogleAuthRequest()


def seconds_left(expiry: datetime | None) -> float | None:
    """google-auth's naive-UTC expiry as seconds from now (None: unknown)."""
    if expiry is None:
        return None
    return (expiry - datetime.now(UTC).replace(tzinfo=None)).total_seconds()


def caller_email(creds: Any) -> str:
    """The email behind ambient credentials, when google-auth knows it (else "")."""
    for attr in ("service_account_email", "account"):
        with contextlib.suppress(Exception):
            value = getattr(creds, attr, None)
            if isinstance(value, str) and "@" in value:
                return value
    return ""


class _AdcProbeFilter(logging.Filter):
    """While google.auth.default() looks for credentials (in this thread), drop its warnings about each
    place it found nothing (no metadata server, no project id): the one-line error, or the "keyless"
    log line, already says what was found. The same warnings at other times still show."""

    NOISE = (
        "Compute Engine Metadata server unavailable",
        "Authentication failed using Compute Engine",
        "No project ID could be determined",
    )

    def __init__(self) -> None:
        super().__init__()
        self.probing = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            getattr(self.probing, "on", False)
            and record.levelno == logging.WARNING
            and str(record.msg).startswith(self.NOISE)
        )

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        for name in ("google.auth._default", "google.auth.compute_engine._metadata"):
            logger = logging.getLogger(name)
            if self not in logger.filters:
                logger.addFilter(self)
        self.probing.on = True
        try:
            yield
        finally:
            self.probing.on = False


_ADC_PROBES = _AdcProbeFilter()


_CREDENTIAL_KINDS = {
    "google.oauth2.service_account": "service account key",
    "google.auth.compute_engine.credentials": "attached service account",
    "google.oauth2.credentials": "user credentials",
    "google.auth.impersonated_credentials": "impersonated service account",
    "google.auth.identity_pool": "Workload Identity Federation",
    "google.auth.aws": "Workload Identity Federation (AWS)",
    "google.auth.pluggable": "Workload Identity Federation (executable)",
    "google.auth.external_account_authorized_user": "Workforce Identity Federation user",
}


def _grant_error(exc: Exception) -> dict[str, Any]:
    """The token endpoint's JSON error that google-auth attaches to a RefreshError (or {})."""
    data = exc.args[1] if len(exc.args) > 1 else None
    return data if isinstance(data, dict) else {}


def describe_credentials(creds: Any) -> str:
    """E.g. "service account key caller@p.iam.gserviceaccount.com", for messages and the log."""
    kind = _CREDENTIAL_KINDS.get(type(creds).__module__, type(creds).__name__)
    email = caller_email(creds)
    return f"{kind} {email}" if email else kind


# -- the service account key --------------------------------------------------------------------------


def parse_key(text: str, section: str, where: str) -> dict[str, Any]:
    """The service-account JSON key as a dict, checked for the fields the JWT grant needs."""
    try:
        info = json.loads(text, strict=False)  # strict=False: a pasted key may hold raw newlines
    except ValueError as exc:
        pos = f"line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(
            f"[{section}] service_account_json_key ({where}) is not valid JSON ({pos}): paste the "
            "key file's content on one line, or give the path of the .json file"
        ) from None
    if not isinstance(info, dict) or not info:
        raise ConfigError(
            f"[{section}] service_account_json_key ({where}) must be the service account's JSON key "
            "(an object with client_email and private_key)"
        )
    kind = info.get("type", "service_account")
    if kind != "service_account":
        raise ConfigError(
            f"[{section}] service_account_json_key ({where}) is a credential of type '{kind}', "
            "not a service account key: create a key for the service account (type service_account)"
        )
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
            Setting(
                "service_account_impersonate",
                "",
                example="username@example.com",
                help=(
                    "the email of a Workspace administrator the service account acts as (the JWT `sub`), "
                    "required; this admin needs the privilege to read the devices"
                ),
            ),
            Setting(
                "service_account_json_key",
                "{}",
                secret=True,
                help=(
                    "the service account's JSON key: the key file's content (one line, or several indented "
                    "INI lines) or the path of the `.json` file; better, keep it in a secret backend "
                    "(`vault_keys = service_account_json_key`). Leave it empty (or `{}`) for keyless mode"
                ),
            ),
            Setting(
                "service_account_email",
                "",
                help=(
                    "keyless mode: the email of the service account that has domain-wide delegation, e.g. "
                    "`oomnitza-connector@acme-inventory.iam.gserviceaccount.com`; used only when "
                    "`service_account_json_key` is empty (setting both, or neither, is an error). The "
                    f"connector's ambient Google credentials need `{TOKEN_CREATOR}` on it"
                ),
            ),
            Setting(
                "url",
                DIRECTORY_API,
                kind=Url(),
                help="the Admin SDK API base; `.../admin/directory/v1` also works (change it only for a proxy)",
            ),
            Setting(
                "page_size",
                str(max_page),
                kind=Int(1, max_page),
                help=("devices per request (`maxResults`, or `pageSize` for Cloud Identity); the maximum is Google's"),
            ),
            Setting(
                "iam_url",
                IAM_CREDENTIALS_API,
                kind=Url(),
                help=(
                    "keyless mode: the IAM Service Account Credentials API base (change it only for a proxy "
                    "or a Private Service Connect endpoint)"
                ),
            ),
            Setting(
                "token_url",
                GOOGLE_TOKEN_URI,
                kind=Url(),
                help=("keyless mode: Google's token endpoint (with a key, the key's `token_uri` is used instead)"),
            ),
        )

    def validate(self) -> None:
        subject = self.setting("service_account_impersonate").strip()
        if not subject or "@" not in subject:
            raise ConfigError(
                f"[{self.name}] set service_account_impersonate to the email of a Google Workspace "
                "administrator (domain-wide delegation acts as that user)"
            )
        raw = self.setting("service_account_json_key").strip()
        email = self.service_account_email
        if self.has_key and email:
            raise ConfigError(
                f"[{self.name}] set service_account_json_key (a key) or service_account_email "
                "(keyless signing through IAM), not both"
            )
        if not self.has_key and not email:
            raise ConfigError(
                f"[{self.name}] set service_account_json_key to the service account's JSON key "
                "(the file's content on one line, or the path of the .json file), or set "
                "service_account_email for keyless signing with the machine's Google credentials"
            )
        if email and ("@" not in email or any(c.isspace() or c in "/:?#" for c in email)):
            raise ConfigError(
                f"[{self.name}] service_account_email must be the service account's email "
                "(name@project.iam.gserviceaccount.com)"
            )
        if raw.startswith("{") and self.has_key:
            parse_key(raw, self.name, "inline")  # reading a key file is I/O: that waits for the run

    # -- auth ---------------------------------------------------------------------------------------

    @property
    def has_key(self) -> bool:
        return self.setting("service_account_json_key").strip() not in ("", "{}")

    @property
    def service_account_email(self) -> str:
        return self.setting("service_account_email").strip()

    @property
    def keyless(self) -> bool:
        """No key, a service account email: IAM signs the delegation JWT (see the module docstring)."""
        return not self.has_key and bool(self.service_account_email)

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
            raise ConfigError(
                f"[{self.name}] service_account_json_key: cannot read the key file it names "
                f"({exc.strerror}); give the .json key file's path or its content"
            ) from None
        return parse_key(text, self.name, "file")

    def scopes(self) -> list[str]:
        return [self.scope]

    def signer(self, info: dict[str, Any]) -> Any:
        """The key's RSA signer (google-auth's, with the key id Google expects in ``kid``)."""
        from google.auth import crypt

        try:
            return crypt.RSASigner.from_service_account_info(info)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            reason = redact.scrub(str(exc).split(". ")[0].splitlines()[0] if str(exc) else type(exc).__name__)
            raise ConfigError(
                f"[{self.name}] service_account_json_key: the private_key cannot be used ({reason}); "
                "download a new key for the service account"
            ) from None

    def delegation_claims(self, issuer: str, audience: str) -> dict[str, Any]:
        """The JWT bearer grant's claims: the account acting as service_account_impersonate."""
        now = int(time.time())
        return {
            "iss": issuer,
            "sub": self.setting("service_account_impersonate").strip(),
            "scope": " ".join(self.scopes()),
            "aud": audience,
            "iat": now,
            "exp": now + JWT_LIFETIME,
        }

    def key_fetcher(self, token: Http, info: dict[str, Any]) -> TokenFetcher:
        """Key mode: the JWT signed with the key, exchanged at the key's token_uri."""
        from google.auth import jwt

        signer = self.signer(info)
        token_uri = str(info["token_uri"])

        async def fetch() -> tuple[str, float | None]:
            # aud is Google's token endpoint whatever token_uri says, as google-auth's service account does
            claims = self.delegation_claims(str(info["client_email"]), GOOGLE_TOKEN_URI)
            assertion = jwt.encode(signer, claims).decode()
            self.ctx.redactor.add(assertion)  # exchangeable for a token for an hour
            return await self.exchange(token, token_uri, assertion, info)

        return fetch

    async def exchange(
        self, token: Http, token_url: str, assertion: str, info: dict[str, Any] | None
    ) -> tuple[str, float | None]:
        """The JWT bearer grant (RFC 7523) at ``token_url`` (``info`` None: keyless)."""
        try:
            response = await token.request(
                "POST",
                token_url,
                data={"grant_type": JWT_BEARER, "assertion": assertion},
                idempotent=True,  # asking again only issues another token
            )
        except HttpError as exc:
            data = error_body(exc)
            if exc.response is None or not data:
                raise SourceError(f"[{self.name}] cannot get a Google access token: {exc}") from None
            raise SourceError(self._refused(data, str(exc), info)) from None
        body = decode_json(response)
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            raise SourceError(f"[{self.name}] Google's token endpoint answered without an access_token")
        expires = body.get("expires_in")
        return access, float(expires) if isinstance(expires, int | float) else None

    def _refused(self, data: dict[str, Any], fallback: str, info: dict[str, Any] | None) -> str:
        """One line for a refused JWT bearer grant: ``data`` is the token endpoint's JSON error
        (``{"error", "error_description"}``), ``fallback`` the text without one (``info`` None: keyless)."""
        error = str(data.get("error") or "")
        text = str(data.get("error_description") or "") or fallback
        detail = f"{error}: {text}" if error and not text.startswith(error) else text
        subject = self.setting("service_account_impersonate").strip()
        sa = self.service_account_email
        if info is not None:
            client_id = info.get("client_id") or info.get("client_email")
            client = f"client id {client_id}"
        else:
            client = (
                f"the client id of {sa} (its unique id: gcloud iam service-accounts describe {sa} "
                "--format='value(oauth2ClientId)')"
            )
        if error == "unauthorized_client":
            hint = (
                f"grant domain-wide delegation to {client} with the scope {' '.join(self.scopes())} ({DELEGATION_PAGE})"
            )
        elif error == "invalid_grant" and "signature" in text.lower() and info is not None:
            hint = (
                "Google does not know this key (deleted or rotated): download a new JSON key for "
                f"{info.get('client_email')} into service_account_json_key"
            )
        elif error == "invalid_grant":
            what = "that the key was not deleted" if info is not None else f"that {sa} still exists"
            hint = (
                f"check service_account_impersonate ({subject} must be an existing Workspace user), {what}, "
                "and this machine's clock"
            )
        elif info is not None:
            hint = "check service_account_json_key (a current key of an existing service account)"
        else:
            hint = f"check service_account_email ({sa} must be an existing service account)"
        return redact.scrub(f"[{self.name}] Google refused the service account's token request ({detail}): {hint}")

    # -- keyless: ambient credentials + IAM signJwt ---------------------------------------------------

    def ambient_credentials(self, transport: Any) -> Any:
        """``google.auth.default()``: the machine's Google credentials (blocking: call it in a thread)."""
        import google.auth
        from google.auth import exceptions

        try:
            with _ADC_PROBES.active():
                creds, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE], request=transport)
        except exceptions.GoogleAuthError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise SourceError(
                redact.scrub(
                    f"[{self.name}] no ambient Google credentials found ({reason}): service_account_email needs the "
                    "connector to run with Google credentials (an attached service account on GCE/GKE/Cloud Run, "
                    "GOOGLE_APPLICATION_CREDENTIALS naming a Workload Identity Federation configuration or a "
                    "credentials file, or 'gcloud auth application-default login'); or set service_account_json_key "
                    "instead"
                )
            ) from None
        log.info(
            "[%s] keyless: IAM signs as %s, called with %s",
            self.name,
            self.service_account_email,
            describe_credentials(creds),
        )
        return creds

    def ambient_fetcher(self, creds: Any, transport: Any) -> TokenFetcher:
        """The ambient credentials' own access token (for the IAM call), refreshed by google-auth."""
        from google.auth import exceptions

        async def fetch() -> tuple[str, float | None]:
            try:
                await asyncio.to_thread(creds.refresh, transport)
            except (exceptions.RefreshError, exceptions.TransportError) as exc:
                data = _grant_error(exc)
                text = str(data.get("error_description") or data.get("error") or "") or (
                    " ".join(str(exc.args[0] if exc.args else exc).split())
                )
                raise SourceError(
                    redact.scrub(
                        f"[{self.name}] the ambient Google credentials ({describe_credentials(creds)}) "
                        f"could not get an access token ({text}): check GOOGLE_APPLICATION_CREDENTIALS or the "
                        "service account attached to this machine"
                    )
                ) from None
            return str(creds.token or ""), seconds_left(creds.expiry)

        return fetch

    def keyless_fetcher(self, iam: Http, token: Http, creds: Any) -> TokenFetcher:
        """Keyless mode: IAM signs the delegation JWT, which is exchanged at ``token_url``."""
        token_url = self.setting("token_url").strip()

        async def fetch() -> tuple[str, float | None]:
            claims = self.delegation_claims(self.service_account_email, GOOGLE_TOKEN_URI)
            assertion = await self.sign_jwt(iam, creds, claims)
            return await self.exchange(token, token_url, assertion, None)

        return fetch

    async def sign_jwt(self, iam: Http, creds: Any, claims: dict[str, Any]) -> str:
        """``signJwt``: IAM signs the claims with a Google-managed key of the service account."""
        sa = self.service_account_email
        quota_project = getattr(creds, "quota_project_id", None)  # user credentials bill IAM to it
        headers = {"x-goog-user-project": quota_project} if isinstance(quota_project, str) and quota_project else {}
        try:
            response = await iam.request(
                "POST",
                f"/v1/projects/-/serviceAccounts/{sa}:signJwt",
                json={"payload": json.dumps(claims)},
                headers=headers,
                idempotent=True,  # signing has no effect beyond its answer
            )
        except HttpAuthError as exc:
            message = google_message(exc.response)
            if exc.status == 401:
                raise SourceError(
                    redact.scrub(
                        f"[{self.name}] IAM rejected the token of the ambient Google credentials "
                        f"({describe_credentials(creds)}) (401{message}): check GOOGLE_APPLICATION_CREDENTIALS or the "
                        "service account attached to this machine"
                    )
                ) from None
            raise SourceError(
                redact.scrub(f"[{self.name}] IAM refused to sign for {sa} (403{message}): {self._iam_hint(exc, creds)}")
            ) from None
        except HttpError as exc:
            message = google_message(exc.response)
            if exc.status in (400, 404):
                raise SourceError(
                    redact.scrub(
                        f"[{self.name}] IAM cannot sign for {sa} ({exc.status}{message}): check service_account_email "
                        "(the email of an existing service account)"
                    )
                ) from None
            if not message:
                raise
            raise SourceError(f"{exc} ({message.strip()})") from None
        body = decode_json(response)
        signed = body.get("signedJwt") if isinstance(body, dict) else None
        if not isinstance(signed, str) or signed.count(".") != 2:
            raise SourceError(f"[{self.name}] IAM's signJwt answer for {sa} holds no signed JWT")
        self.ctx.redactor.add(signed)  # exchangeable for a token for an hour
        return signed

    def _iam_hint(self, exc: HttpError, creds: Any) -> str:
        sa = self.service_account_email
        reasons = {str(d.get("reason")) for d in (_error(exc.response).get("details") or []) if isinstance(d, dict)}
        if reasons & {"SERVICE_DISABLED", "API_DISABLED"}:
            return (
                "enable the IAM Service Account Credentials API (iamcredentials.googleapis.com) in the Cloud "
                "project of the ambient credentials"
            )
        caller = caller_email(creds)
        if caller:
            who = caller
            member = f"serviceAccount:{caller}" if caller.endswith(".gserviceaccount.com") else f"user:{caller}"
        else:
            who, member = "the identity the connector runs as", "PRINCIPAL"
        return (
            f"grant {who} {TOKEN_CREATOR} on {sa} (gcloud iam service-accounts add-iam-policy-binding {sa} "
            f"--member={member} --role={TOKEN_CREATOR}), and check that service_account_email is right"
        )

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
        async with contextlib.AsyncExitStack() as stack:
            token = await stack.enter_async_context(self.http(headers={"Accept": "application/json"}))
            fetch: TokenFetcher
            if self.keyless:
                blocking = stack.enter_context(
                    sync_client(name=f"[{self.name}]", tls=self.section.tls(), timeout=self.section.http_timeout())
                )
                transport = google_auth_request(blocking)
                creds = await asyncio.to_thread(self.ambient_credentials, transport)
                iam = await stack.enter_async_context(
                    self.http(
                        base_url=self.setting("iam_url").strip().rstrip("/").removesuffix("/v1"),
                        headers={"Accept": "application/json"},
                        auth=RefreshingToken(self.ambient_fetcher(creds, transport)),
                    )
                )
                fetch = self.keyless_fetcher(iam, token, creds)
            else:
                fetch = self.key_fetcher(token, self.key_info())
            http = await stack.enter_async_context(
                self.http(
                    base_url=self.base,
                    headers={"Accept": "application/json"},
                    auth=RefreshingToken(fetch),
                    retry_if=google_throttled,
                )
            )
            async for page in self._list(http):
                yield page

    async def _list(self, http: Http) -> AsyncIterator[list[Record]]:
        try:
            async for response in http.paginate(
                Cursor(next_page_token, "pageToken"), self.path, params=self.list_params()
            ):
                body = decode_json(response)
                if not isinstance(body, dict):
                    raise SourceError(f"[{self.name}] Google answered with {type(body).__name__}, not an object")
                items = body.get(self.items_key, [])
                if not isinstance(items, list):
                    raise SourceError(f"[{self.name}] Google's '{self.items_key}' is not a list")
                if items:
                    yield [
                        d if isinstance(d, dict) else BadRecord("device is not an object", d)  # type: ignore[misc]
                        for d in items
                    ]
        except HttpAuthError as exc:
            subject = self.setting("service_account_impersonate").strip()
            if exc.status == 403:
                raise SourceError(
                    f"[{self.name}] Google refused access ({exc.status}{google_message(exc.response)}): "
                    f"{subject} must be a Workspace administrator with the '{self.privilege}' privilege, and the "
                    "API must be enabled in the service account's Cloud project"
                ) from None
            setting = "service_account_email" if self.keyless else "service_account_json_key"
            raise SourceError(
                f"[{self.name}] Google rejected the access token ({exc.status}"
                f"{google_message(exc.response)}): check {setting}"
            ) from None
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
        Setting(
            "device_api",
            "directory",
            choices=DEVICE_APIS,
            help=(
                "`directory` (Admin SDK: user-owned devices, the old record shape) or `cloud_identity` "
                "(Cloud Identity Devices API: company-owned devices too, another record shape)"
            ),
        ),
        Setting(
            "cloud_identity_url",
            CLOUD_IDENTITY_API,
            kind=Url(),
            help=("the Cloud Identity API base, used with `device_api = cloud_identity`; `.../v1` also works"),
        ),
    )

    @property
    def cloud_identity(self) -> bool:
        return self.setting("device_api") == "cloud_identity"

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
