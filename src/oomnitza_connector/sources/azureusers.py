"""``[azureusers]``: Microsoft Entra ID (Azure AD) users via Microsoft Graph v1.0 ``/users``.

The seed read the retired Azure AD Graph (``graph.windows.net``) through ADAL. This source gets an
app-only token with MSAL (client credentials: a secret or a certificate, scope
``https://graph.microsoft.com/.default``) and pages ``/v1.0/users`` with ``$top`` (up to 999) and
``@odata.nextLink``. Each record is the Graph user object as-is, plus the snake_case and
``additional_properties.*`` names the old connector exposed, so old mappings keep working.

``$select`` comes from the merged mapping (Graph returns extension attributes and several other
properties only when named). A ``filter`` that needs Graph's advanced query capabilities (``ne``,
``not``, ``endsWith``, ``null``, ``/$count`` or a property indexed only for advanced queries) is
sent with ``ConsistencyLevel: eventual`` and ``$count=true``; any other filter without them, and
one that Graph refuses as unsupported gets them on a second try. ``$expand`` is not supported
with advanced queries, so managers are then read per user (``/users/{id}/manager``) in JSON
``$batch`` requests of 20 (Microsoft Graph docs: "Advanced query capabilities on Microsoft Entra
ID objects", "Combine multiple HTTP requests using JSON batching").

MSAL is blocking, so its calls run in a worker thread; its HTTP goes through the blocking twin of
the shared layer (``MsalHttp`` on ``http.sync_client``: retries, TLS settings, redacted logging), not
a requests session. MSAL is kept rather than replaced by our own token request because it carries
the certificate assertion (x5t/x5c, PS256), authority and instance discovery for every cloud, and
Entra's error shapes.
``authority_host`` and ``graph_host`` reach national clouds, proxies and test fakes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..auth import RefreshingToken
from ..errors import ConfigError, SourceError
from ..http import (
    Http,
    HttpAuthError,
    HttpError,
    NextUrlInBody,
    at,
    decode_json,
    error_body,
    retry_after,
    retry_options,
    safe_url,
    sync_client,
)
from ..settings import BOOL, Bool, File, Int, List, Setting, Url
from .base import BadRecord, Record, UsersSource

log = logging.getLogger(__name__)

GRAPH_SCOPE_PATH = "/.default"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_GRAPH = "https://graph.microsoft.com"
MAX_TOP = 999

# Entra ID sign-in hosts (worldwide, US Government, China 21Vianet). MSAL knows these;
# for any other host it would first ask login.microsoftonline.com to validate the authority.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login-us.microsoftonline.com",
        "login.usgovcloudapi.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)
# Microsoft Cloud Deutschland closed on 2021-10-29; its tenants moved to the worldwide cloud.
CLOSED_HOSTS = frozenset({"login.microsoftonline.de", "graph.microsoft.de"})

# Graph hosts of the national clouds: each is also the token audience there.
NATIONAL_GRAPH_HOSTS = frozenset(
    {
        "graph.microsoft.us",
        "dod-graph.microsoft.us",
        "microsoftgraph.chinacloudapi.cn",
    }
)

# Graph user properties that a *list* request may $select with User.Read.All. Properties that
# Graph returns only for a single user (aboutMe, birthday, hireDate, interests, mySite, pastProjects,
# preferredName, responsibilities, schools, skills, mailboxSettings) make a list request fail, and
# signInActivity / employeeLeaveDateTime / customSecurityAttributes need extra permissions: those
# are never added implicitly (name them in `select` if your app may read them).
GRAPH_USER_PROPERTIES = frozenset(
    {
        "accountEnabled",
        "ageGroup",
        "assignedLicenses",
        "assignedPlans",
        "authorizationInfo",
        "businessPhones",
        "city",
        "companyName",
        "consentProvidedForMinor",
        "country",
        "createdDateTime",
        "creationType",
        "deletedDateTime",
        "department",
        "displayName",
        "employeeHireDate",
        "employeeId",
        "employeeOrgData",
        "employeeType",
        "externalUserState",
        "externalUserStateChangeDateTime",
        "faxNumber",
        "givenName",
        "id",
        "identities",
        "imAddresses",
        "isResourceAccount",
        "jobTitle",
        "lastPasswordChangeDateTime",
        "legalAgeGroupClassification",
        "licenseAssignmentStates",
        "mail",
        "mailNickname",
        "mobilePhone",
        "officeLocation",
        "onPremisesDistinguishedName",
        "onPremisesDomainName",
        "onPremisesExtensionAttributes",
        "onPremisesImmutableId",
        "onPremisesLastSyncDateTime",
        "onPremisesProvisioningErrors",
        "onPremisesSamAccountName",
        "onPremisesSecurityIdentifier",
        "onPremisesSyncEnabled",
        "onPremisesUserPrincipalName",
        "otherMails",
        "passwordPolicies",
        "postalCode",
        "preferredDataLocation",
        "preferredLanguage",
        "provisionedPlans",
        "proxyAddresses",
        "securityIdentifier",
        "serviceProvisioningErrors",
        "showInAddressList",
        "signInSessionsValidFromDateTime",
        "state",
        "streetAddress",
        "surname",
        "usageLocation",
        "userPrincipalName",
        "userType",
    }
)

# Always selected: Graph's default set, every property an alias below reads, and the usual HR fields.
BASE_SELECT = (
    "id",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "userPrincipalName",
    "jobTitle",
    "mobilePhone",
    "businessPhones",
    "officeLocation",
    "preferredLanguage",
    "accountEnabled",
    "userType",
    "usageLocation",
    "mailNickname",
    "onPremisesImmutableId",
    "department",
    "companyName",
    "city",
    "country",
    "state",
    "postalCode",
    "streetAddress",
    "employeeId",
    "employeeType",
    "employeeHireDate",
    "faxNumber",
    "otherMails",
    "proxyAddresses",
    "createdDateTime",
    "creationType",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "onPremisesSamAccountName",
    "onPremisesUserPrincipalName",
    "onPremisesDomainName",
    "onPremisesSyncEnabled",
    "onPremisesLastSyncDateTime",
    "onPremisesSecurityIdentifier",
    "onPremisesDistinguishedName",
    "onPremisesExtensionAttributes",
    "signInSessionsValidFromDateTime",
    "passwordPolicies",
    "ageGroup",
)

# ``manager=…``: the manager's properties a mapping can reach as ``manager.<name>``.
MANAGER_SELECT = ("id", "displayName", "mail", "userPrincipalName", "employeeId", "jobTitle")
MAX_TOP_EXPANDED = 100  # Graph returns at most 100 users per page when $expand is used (a known limit)
BATCH_SIZE = 20  # Graph's JSON batching: "currently limited to 20 individual requests"
BATCH_ROUNDS = 5  # tries for sub-requests Graph throttles (429) or fails (5xx) inside a batch

# User properties whose $filter needs the advanced query parameters even with eq (Graph docs,
# "Advanced query capabilities on Microsoft Entra ID objects", the user table of filter support).
ADVANCED_ONLY_PROPERTIES = frozenset(
    {
        "companyName",
        "employeeHireDate",
        "employeeType",
        "mobilePhone",
        "officeLocation",
        "onPremisesExtensionAttributes",
        "onPremisesImmutableId",
        "onPremisesLastSyncDateTime",
        "onPremisesSamAccountName",
        "passwordPolicies",
        "postalCode",
        "preferredLanguage",
        "showInAddressList",
        "streetAddress",
    }
)
_ADVANCED_SYNTAX = re.compile(r"\b(ne|not)\b|endswith\s*\(|/\$count|\bnull\b", re.IGNORECASE)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def needs_advanced_query(expression: str) -> bool:
    """True when a users $filter works only as an advanced query (ConsistencyLevel + $count)."""
    if not expression.strip():
        return False
    unquoted = re.sub(r"'(?:[^']|'')*'", "''", expression)  # words inside string values do not count
    if _ADVANCED_SYNTAX.search(unquoted):
        return True
    return any(word in ADVANCED_ONLY_PROPERTIES for word in _IDENTIFIER.findall(unquoted))


# -- the alias layer: names of the 2.3.3 connector (azure-graphrbac model attributes) ----------------

# Top-level snake_case attribute → Graph property.
TOP_ALIASES = {
    "object_id": "id",
    "given_name": "givenName",
    "display_name": "displayName",
    "user_principal_name": "userPrincipalName",
    "mail_nickname": "mailNickname",
    "account_enabled": "accountEnabled",
    "user_type": "userType",
    "usage_location": "usageLocation",
    "immutable_id": "onPremisesImmutableId",
}
# ``additional_properties.<AAD Graph name>`` → Graph property (same name, or renamed by Graph).
SAME_NAME_EXTRAS = (
    "jobTitle",
    "department",
    "city",
    "country",
    "companyName",
    "employeeId",
    "state",
    "postalCode",
    "streetAddress",
    "otherMails",
    "proxyAddresses",
    "preferredLanguage",
    "createdDateTime",
    "creationType",
    "onPremisesSecurityIdentifier",
    "onPremisesDistinguishedName",
    "passwordPolicies",
    "ageGroup",
    "consentProvidedForMinor",
    "legalAgeGroupClassification",
    "assignedLicenses",
    "assignedPlans",
    "provisionedPlans",
    "showInAddressList",
)
RENAMED_EXTRAS = {
    "mobile": "mobilePhone",
    "physicalDeliveryOfficeName": "officeLocation",
    "facsimileTelephoneNumber": "faxNumber",
    "dirSyncEnabled": "onPremisesSyncEnabled",
    "lastDirSyncTime": "onPremisesLastSyncDateTime",
    "refreshTokensValidFromDateTime": "signInSessionsValidFromDateTime",
    "userState": "externalUserState",
    "userStateChangedOn": "externalUserStateChangeDateTime",
}
EXTRA_TO_GRAPH = {**{name: name for name in SAME_NAME_EXTRAS}, **RENAMED_EXTRAS, "telephoneNumber": "businessPhones"}
AAD_ODATA_TYPE = "Microsoft.DirectoryServices.User"


def add_legacy_names(user: dict[str, Any]) -> dict[str, Any]:
    """Add the 2.3.3 names to a Graph user in place: ``given_name``, ``additional_properties.jobTitle``…"""
    for alias, prop in TOP_ALIASES.items():
        if prop in user:
            user[alias] = user[prop]
    user["object_type"] = "User"
    extras: dict[str, Any] = {"odata.type": AAD_ODATA_TYPE}  # `additional_properties.odata.type`
    for alias, prop in EXTRA_TO_GRAPH.items():
        if prop in user:
            extras[alias] = user[prop]
    phones = user.get("businessPhones")
    if "businessPhones" in user:
        extras["telephoneNumber"] = phones[0] if isinstance(phones, list) and phones else None
    for key, value in user.items():
        if key.startswith("extension_"):  # directory extension attributes stayed top-level properties
            extras[key] = value
    user["additional_properties"] = extras
    return user


def graph_properties_for(path: str) -> str | None:
    """The Graph property a mapping source path needs in ``$select`` (None if it is not one we know)."""
    head, _, rest = path.partition(".")
    if head == "additional_properties":
        name = rest.split(".", 1)[0]
        if name.startswith("extension_"):
            return name
        return EXTRA_TO_GRAPH.get(name)
    if head in TOP_ALIASES:
        return TOP_ALIASES[head]
    if head in GRAPH_USER_PROPERTIES or head.startswith("extension_"):
        return head
    return None


def _one_line(text: str, limit: int = 300) -> str:
    """The first sentence-ish of an Entra error description: no trace/correlation ids, no newlines."""
    text = " ".join(str(text).split())
    for marker in (" Trace ID:", " Correlation ID:", " Timestamp:"):
        text = text.split(marker, 1)[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def graph_next_link(graph_root: str) -> NextUrlInBody:
    """Follows ``@odata.nextLink`` as-is, rebased onto ``graph_host`` when Graph names another host
    (a proxy or a fake in front of Graph), so the bearer token never goes to a host we were not
    told about."""
    ours = urlsplit(graph_root)

    def rebase(link: str) -> str:
        theirs = urlsplit(link)
        if (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc) and theirs.path.startswith(ours.path):
            return link
        version_at = theirs.path.find("/v1.0/")
        rest = theirs.path[version_at:] if version_at >= 0 else theirs.path
        log.debug("@odata.nextLink host %s rebased onto %s", theirs.netloc, safe_url(graph_root))
        return f"{graph_root}{rest}" + (f"?{theirs.query}" if theirs.query else "")

    return NextUrlInBody(at("@odata.nextLink"), rebase=rebase)


class MsalHttp:
    """MSAL's ``http_client`` (the interface of msal/oauth2cli/http.py) on our blocking client, so
    MSAL's calls (instance and OIDC discovery, the token request) take the shared retry transport,
    TLS settings and redacted logging instead of a requests session of its own."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def post(self, url: str, params: Any = None, data: Any = None, headers: Any = None, **_: Any) -> httpx.Response:
        body: dict[str, Any]
        if isinstance(data, dict):  # MSAL's form holds bytes values (the client assertion), as requests took them
            body = {"data": {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}}
        else:
            body = {"content": data}
        # the client credentials grant: asking again only issues another token
        return self.client.post(url, params=params, headers=headers, extensions=retry_options(idempotent=True), **body)

    def get(self, url: str, params: Any = None, headers: Any = None, **_: Any) -> httpx.Response:
        return self.client.get(url, params=params, headers=headers)

    def close(self) -> None:
        self.client.close()


class Azureusers(UsersSource):
    module = "azureusers"
    mapping_name = "Azureusers"
    summary = "Microsoft Entra ID (Azure AD) users, via Microsoft Graph"
    settings = (
        Setting(
            "tenant_id",
            "",
            example="00000000-0000-0000-0000-000000000000",
            help=(
                "Directory (tenant) ID, a GUID; a verified domain of the tenant "
                "(`contoso.onmicrosoft.com`) also works (required in practice)"
            ),
        ),
        Setting(
            "client_id",
            "",
            example="00000000-0000-0000-0000-000000000000",
            help="Application (client) ID of the app registration (required in practice)",
        ),
        Setting(
            "secret",
            "",
            example="YOUR CLIENT SECRET",
            secret=True,
            help=("the client secret's value (not its secret ID); leave it empty when you use `certificate_file`"),
        ),
        *UsersSource.role_settings,
        Setting(
            "certificate_file",
            "",
            kind=File(),
            help=(
                "certificate credential, instead of `secret`: a PEM file holding the certificate and its "
                "RSA private key, or a `.pfx`/`.p12` file; upload the certificate (public part) to the "
                "app registration"
            ),
        ),
        Setting("certificate_password", "", secret=True, help="password of an encrypted private key or `.pfx` file"),
        Setting(
            "authority_host",
            DEFAULT_AUTHORITY,
            kind=Url(("https",)),  # MSAL accepts no other
            help=(
                "Entra sign-in host: `https://login.microsoftonline.us` for US Government clouds, "
                "`https://login.chinacloudapi.cn` for Microsoft Azure operated by 21Vianet"
            ),
        ),
        Setting(
            "graph_host",
            DEFAULT_GRAPH,
            kind=Url(),
            help=(
                "Microsoft Graph host: `https://graph.microsoft.us` (GCC High), "
                "`https://dod-graph.microsoft.us` (DoD), `https://microsoftgraph.chinacloudapi.cn` "
                "(China); with or without `/v1.0`; a proxy in front of Graph also works"
            ),
        ),
        Setting("page_size", str(MAX_TOP), kind=Int(1, MAX_TOP), help="users per request (`$top`)"),
        Setting(
            "filter",
            "",
            help=(
                "a Graph `$filter` for the users list, e.g. `accountEnabled eq true` or `userType eq "
                "'Member'`; a filter only Graph's advanced queries support (`ne`, `not`, `endsWith`, "
                "`null`, or properties indexed only for them) is sent with `ConsistencyLevel: eventual` "
                "and `$count=true`, and a filter Graph refuses as unsupported is asked again that way"
            ),
        ),
        Setting(
            "select",
            "",
            kind=List(),
            help=('extra Graph user properties to ask for, comma-separated (see "Which properties are read")'),
        ),
        Setting(
            "manager",
            "auto",
            kind=Bool(also=("auto",)),
            help=(
                "read each user's manager, so mappings can use `manager.mail`, `manager.displayName`, "
                "`manager.userPrincipalName`, `manager.employeeId`, `manager.jobTitle` and `manager.id`: "
                "`auto` does it when a mapping (the one stored in Oomnitza included) uses `manager.*`. It"
                " comes with the user (`$expand`, then at most 100 users per page), or, with an "
                "advanced-query `filter`, from per-user lookups in `$batch` requests of 20"
            ),
        ),
        Setting(
            "legacy_names",
            "true",
            kind=BOOL,
            help=(
                "also add the old connector's field names to every record (see \"Old mappings keep "
                'working"); `false` gives the Graph object only'
            ),
        ),
    )
    default_mappings = {
        "PERMISSIONS_ID": {"setting": "default_role"},
    }

    def __init__(self, section: Any) -> None:
        self._msal_clients: list[httpx.Client] = []  # MSAL's HTTP clients, closed when a run ends
        super().__init__(section)

    def validate(self) -> Iterator[str]:
        missing = [name for name in ("tenant_id", "client_id") if not self.setting(name).strip()]
        if not self.setting("secret") and not self.setting("certificate_file"):
            missing.append("secret (or certificate_file)")
        if missing:
            yield f"[{self.name}] set {', '.join(missing)}: the app registration's tenant, client id and credential"
        for name in ("authority_host", "graph_host"):
            if (urlsplit(self.setting(name).strip()).hostname or "") in CLOSED_HOSTS:
                yield (
                    f"[{self.name}] {name}: Microsoft Cloud Deutschland was closed in 2021 and its tenants moved "
                    f"to the worldwide cloud; remove authority_host and graph_host (or set {DEFAULT_AUTHORITY} "
                    f"and {DEFAULT_GRAPH})"
                )

    # -- URLs --------------------------------------------------------------------------------------

    @property
    def authority_root(self) -> str:
        return self.setting("authority_host").strip().rstrip("/")

    @property
    def graph_root(self) -> str:
        """``graph_host`` without a trailing ``/`` or ``/v1.0``, so both spellings work."""
        return self.setting("graph_host").strip().rstrip("/").removesuffix("/v1.0").rstrip("/")

    @property
    def scope(self) -> str:
        # The token audience is the Graph host of the cloud (graph.microsoft.us for US Gov…); for a
        # proxy or a fake in front of Graph it is still the public Graph resource.
        host = urlsplit(self.graph_root).hostname or ""
        if host in NATIONAL_GRAPH_HOSTS:
            return f"https://{host}{GRAPH_SCOPE_PATH}"
        return f"{DEFAULT_GRAPH}{GRAPH_SCOPE_PATH}"

    def select(self) -> list[str]:
        """Graph's $select: the base set, every property the merged mapping names, the select setting."""
        wanted = list(BASE_SELECT)
        for src in self.mapped_sources():
            prop = graph_properties_for(src)
            if prop:
                wanted.append(prop)
        wanted += [p.strip() for p in self.setting("select").split(",") if p.strip()]
        return list(dict.fromkeys(wanted))

    # -- MSAL (blocking, in a worker thread) ---------------------------------------------------------

    def _credential(self) -> str | dict[str, Any]:
        path = self.setting("certificate_file").strip()
        if not path:
            return self.setting("secret")
        password = self.setting("certificate_password") or None
        if path.lower().endswith((".pfx", ".p12")):
            return {"private_key_pfx_path": path, "passphrase": password}
        try:
            pem = open(path, encoding="utf-8").read()
        except OSError as exc:
            raise ConfigError(f"[{self.name}] certificate_file '{path}': {exc.strerror}") from None
        if "PRIVATE KEY-----" not in pem or "BEGIN CERTIFICATE-----" not in pem:
            raise ConfigError(
                f"[{self.name}] certificate_file '{path}' must hold both the certificate and its private key (PEM)"
            )
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(pem.encode(), password.encode() if password else None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"[{self.name}] certificate_file '{path}': cannot read the private key "
                f"({_one_line(str(exc), 120)}); check certificate_password"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(
                f"[{self.name}] certificate_file '{path}' holds a {type(key).__name__.lstrip('_')} "
                "key; Microsoft Entra ID accepts RSA certificates only"
            )
        cert = pem[pem.index("-----BEGIN CERTIFICATE-----") :]
        cert = cert[: cert.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
        credential: dict[str, Any] = {"private_key": pem, "public_certificate": cert}
        if password:
            credential["passphrase"] = password
        return credential

    def _msal_http(self) -> MsalHttp:
        """MSAL's HTTP client: the blocking twin of the shared layer with the section's TLS settings
        and request_timeout; closed when the run ends (a kept-alive socket would linger)."""
        client = sync_client(name=f"[{self.name}]", tls=self.section.tls(), timeout=self.section.http_timeout())
        self._msal_clients.append(client)
        return MsalHttp(client)

    def _msal_app(self) -> Any:
        import msal

        logging.getLogger("msal").setLevel(logging.CRITICAL)  # it logs tracebacks for bodies we report
        tenant = self.setting("tenant_id").strip()
        authority = f"{self.authority_root}/{tenant}"
        host = urlsplit(self.authority_root).hostname or ""
        try:
            return msal.ConfidentialClientApplication(
                self.setting("client_id").strip(),
                client_credential=self._credential(),
                authority=authority,
                http_client=self._msal_http(),
                # Off for other hosts, or MSAL first asks login.microsoftonline.com to vouch for them.
                instance_discovery=None if host in MICROSOFT_AUTHORITY_HOSTS else False,
            )
        except httpx.TransportError as exc:
            raise SourceError(f"[{self.name}] cannot reach {self.authority_root}: {_transport_reason(exc)}") from None
        except ValueError as exc:
            text = str(exc)
            if "authority configuration" in text or "OIDC Discovery" in text or "invalid_instance" in text:
                raise SourceError(
                    f"[{self.name}] Microsoft Entra ID does not know the tenant '{tenant}' "
                    f"at {self.authority_root}: check tenant_id and authority_host"
                ) from None
            raise SourceError(
                f"[{self.name}] cannot use the app credential: {_one_line(text)}; "
                "check certificate_file and certificate_password"
            ) from None

    def _token_fetcher(self) -> Any:
        state: dict[str, Any] = {"app": None, "fetched": False}
        lock = threading.Lock()

        def acquire() -> dict[str, Any]:
            with lock:
                if state["app"] is None:
                    state["app"] = self._msal_app()
                app = state["app"]
                if state["fetched"]:
                    # Asked again: the token expired or Graph refused it; skip MSAL's cache.
                    app.remove_tokens_for_client()
                try:
                    result = app.acquire_token_for_client(scopes=[self.scope])
                except httpx.TransportError as exc:
                    raise SourceError(
                        f"[{self.name}] the token request to {self.authority_root} failed: {_transport_reason(exc)}"
                    ) from None
                except ValueError as exc:
                    if "json" in type(exc).__name__.lower() or "Expecting" in str(exc):
                        raise SourceError(
                            f"[{self.name}] the token endpoint at {self.authority_root} "
                            "answered with a body that is not JSON"
                        ) from None
                    raise SourceError(f"[{self.name}] cannot use the app credential: {_one_line(str(exc))}") from None
                except Exception as exc:  # MSAL/PyJWT signing errors: report them as one line
                    raise SourceError(
                        f"[{self.name}] cannot use the app credential: {type(exc).__name__}: {_one_line(str(exc))}"
                    ) from None
                state["fetched"] = True
                return dict(result or {})

        async def fetch() -> tuple[str, float | None]:
            result = await asyncio.to_thread(acquire)
            token = result.get("access_token")
            if not token:
                error = result.get("error") or "no access_token"
                detail = _one_line(result.get("error_description") or "")
                raise SourceError(
                    f"[{self.name}] Microsoft Entra ID rejected the credentials ({error}"
                    + (f" {detail}" if detail else "")
                    + "): check tenant_id, client_id and "
                    + ("certificate_file" if self.setting("certificate_file") else "secret")
                )
            return str(token), float(result.get("expires_in") or 3599)

        return fetch

    # -- Graph ---------------------------------------------------------------------------------------

    def _client(self) -> Http:
        return self.http(
            base_url=self.graph_root,
            headers={"Accept": "application/json"},
            auth=RefreshingToken(self._token_fetcher(), leeway=300.0),
        )

    def wants_manager(self) -> bool:
        value = self.value("manager")
        if value != "auto":
            return value is True
        return any(src == "manager" or src.startswith("manager.") for src in self.mapped_sources())

    def _params(self, advanced: bool) -> dict[str, Any]:
        params: dict[str, Any] = {"$top": self.value("page_size"), "$select": ",".join(self.select())}
        if self.wants_manager() and not advanced:  # Graph: "$expand is not supported with advanced queries"
            params["$expand"] = f"manager($select={','.join(MANAGER_SELECT)})"
            params["$top"] = min(params["$top"], MAX_TOP_EXPANDED)
        if self.setting("filter").strip():
            params["$filter"] = self.setting("filter").strip()
        if advanced:
            params["$count"] = "true"
        return params

    async def _attach_managers(self, http: Http, users: list[Any]) -> None:
        """``manager`` for each user, read as ``/users/{id}/manager`` in JSON batches of 20 (the way to
        get managers when the list is an advanced query and cannot $expand)."""
        people = [u for u in users if isinstance(u, dict) and u.get("id")]
        gate = asyncio.Semaphore(max(1, self.ctx.workers))

        async def one_batch(chunk: list[dict[str, Any]]) -> None:
            async with gate:
                await self._manager_batch(http, chunk)

        await asyncio.gather(*(one_batch(people[i : i + BATCH_SIZE]) for i in range(0, len(people), BATCH_SIZE)))

    async def _manager_batch(self, http: Http, chunk: list[dict[str, Any]]) -> None:
        select = ",".join(MANAGER_SELECT)
        pending = {str(n): user for n, user in enumerate(chunk, 1)}
        for attempt in range(1, BATCH_ROUNDS + 1):
            requests = [
                {"id": key, "method": "GET", "url": f"/users/{user['id']}/manager?$select={select}"}
                for key, user in pending.items()
            ]
            # GETs only: the batch is safe to send again
            response = await http.request("POST", "/v1.0/$batch", json={"requests": requests}, idempotent=True)
            body = decode_json(response)
            answers = body.get("responses") if isinstance(body, dict) else None
            if not isinstance(answers, list):
                raise SourceError(f"[{self.name}] Microsoft Graph answered a $batch without 'responses'")
            wait = 0.0
            for answer in answers:
                if not isinstance(answer, dict) or str(answer.get("id")) not in pending:
                    continue
                status, payload = answer.get("status"), answer.get("body")
                if status == 200 and isinstance(payload, dict):
                    user = pending.pop(str(answer["id"]))
                    user["manager"] = {k: v for k, v in payload.items() if k != "@odata.context"}
                elif status == 404:  # no manager: leave "manager" out, as $expand does
                    pending.pop(str(answer["id"]))
                elif status in (429, 500, 502, 503, 504):
                    headers = answer.get("headers") if isinstance(answer.get("headers"), dict) else {}
                    after = retry_after(httpx.Response(int(status), headers=headers))
                    wait = max(wait, after if after is not None else 2.0 ** (attempt - 1))
                else:
                    code, message = _graph_error_of(payload)
                    hint = " (grant User.Read.All)" if status in (401, 403) else ""
                    raise SourceError(
                        f"[{self.name}] Microsoft Graph refused to read a manager ({status}"
                        + (f" {code}" if code else "")
                        + (f": {message}" if message else "")
                        + f"){hint}"
                    )
            if not pending:
                return
            if attempt < BATCH_ROUNDS:
                log.info("[%s] Graph throttled %d manager lookups; retrying in %.1fs", self.name, len(pending), wait)
                await asyncio.sleep(min(max(wait, 0.5), 120.0))
        raise SourceError(
            f"[{self.name}] Microsoft Graph kept throttling the manager lookups ({len(pending)} left after "
            f"{BATCH_ROUNDS} tries); run again later"
        )

    def _graph_error(self, exc: HttpError) -> SourceError:
        code, message = _graph_error_body(exc)
        detail = f"{exc.status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if exc.status == 403:
            hint = "grant the app the Microsoft Graph application permission User.Read.All, with admin consent"
            return SourceError(f"[{self.name}] Microsoft Graph refused to list users ({detail}): {hint}")
        if exc.status == 401:
            return SourceError(
                f"[{self.name}] Microsoft Graph rejected the access token ({detail}): "
                "check tenant_id, authority_host and graph_host (same cloud)"
            )
        if exc.status == 400:
            return SourceError(
                f"[{self.name}] Microsoft Graph refused the query ({detail}): "
                "check the filter and select settings and the mapped fields"
            )
        return SourceError(f"[{self.name}] {exc}" + (f" ({code}: {message})" if code or message else ""))

    def _close_sessions(self) -> None:
        while self._msal_clients:
            self._msal_clients.pop().close()

    async def check(self) -> None:
        try:
            async with self._client() as http:
                await http.get_json("/v1.0/users", params={"$top": 1, "$select": "id"})
        except HttpError as exc:
            raise self._graph_error(exc) from None
        finally:
            self._close_sessions()

    async def pages(self) -> AsyncIterator[list[Record | BadRecord]]:
        legacy = self.value("legacy_names")
        advanced = needs_advanced_query(self.setting("filter"))
        try:
            async with self._client() as http:
                while True:
                    paginator = graph_next_link(self.graph_root)
                    # An advanced query needs the header on every page (nextLinks carry $count themselves).
                    headers = {"ConsistencyLevel": "eventual"} if advanced else {}
                    answered = 0
                    try:
                        async for response in http.paginate(
                            paginator, "/v1.0/users", params=self._params(advanced), headers=headers
                        ):
                            answered += 1
                            body = decode_json(response)
                            users = body.get("value") if isinstance(body, dict) else None
                            if not isinstance(users, list):
                                raise SourceError(
                                    f"[{self.name}] Microsoft Graph answered without a 'value' list of "
                                    f"users ({type(body).__name__}) at {safe_url(response.request.url)}"
                                )
                            if users and advanced and self.wants_manager():
                                await self._attach_managers(http, users)
                            if users:
                                yield list(_records(users, legacy))
                        return
                    except HttpError as exc:
                        if advanced or answered or not self._wants_advanced(exc):
                            raise
                        log.info("[%s] Graph needs the filter as an advanced query; asking again that way", self.name)
                        advanced = True
        except HttpAuthError as exc:
            raise self._graph_error(exc) from None
        except HttpError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.response is not None:
                raise self._graph_error(exc) from None
            raise
        finally:
            self._close_sessions()

    def _wants_advanced(self, exc: HttpError) -> bool:
        """Graph refused a filter that only advanced queries support (a case the rules above missed)."""
        code, _ = _graph_error_body(exc)
        return exc.status == 400 and code == "Request_UnsupportedQuery" and bool(self.setting("filter").strip())


def _transport_reason(exc: Exception) -> str:
    """A short reason for a failed request (the error text may nest pools and URLs)."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "TLS certificate not trusted; set cacert_file to its CA bundle, or verify_ssl = false"
    for phrase in (
        "Connection refused",
        "Name or service not known",
        "Temporary failure in name resolution",
        "nodename nor servname provided",
        "No route to host",
        "timed out",
        "Connection reset",
    ):
        if phrase in text:
            return phrase.lower() if phrase != "Connection refused" else "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return type(exc).__name__


def _records(users: Iterable[Any], legacy: bool) -> Iterable[Record | BadRecord]:
    for user in users:
        if not isinstance(user, dict):
            yield BadRecord(f"Microsoft Graph returned a user that is not an object: {str(user)[:80]!r}", user)
        else:
            yield add_legacy_names(user) if legacy else user


def _graph_error_body(exc: HttpError) -> tuple[str, str]:
    """``error.code`` and ``error.message`` of a Graph error body (empty when absent)."""
    return _graph_error_of(error_body(exc))


def _graph_error_of(body: Any) -> tuple[str, str]:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code") or ""), _one_line(str(error.get("message") or ""), 200)
