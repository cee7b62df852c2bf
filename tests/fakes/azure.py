"""Fake Microsoft Entra ID + Microsoft Graph on one (TLS) server.

- sign-in (what MSAL calls): ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and
  ``POST /{tenant}/oauth2/v2.0/token`` (client credentials with a secret or a certificate
  ``client_assertion``), answering Entra's JSON bodies, ``AADSTS…`` errors included;
- Graph v1.0: ``GET /v1.0/users`` with ``Authorization: Bearer``, ``$top`` (capped by ``max_page``),
  ``$select`` projection, ``$filter`` (``prop eq value`` only), ``$count`` (needs
  ``ConsistencyLevel: eventual``), and ``@odata.nextLink`` carrying a ``$skiptoken``.

MSAL insists on https authorities, so serve it with the ``tls_files`` certificate.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

TENANT = "11111111-2222-3333-4444-555555555555"
TENANT_DOMAIN = "contoso-fake.onmicrosoft.com"
CLIENT_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
SECRET = "s3cr3t~Value.Of.The.App"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

DEFAULT_SELECT = (
    "id",
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)
KNOWN = frozenset(
    {
        *DEFAULT_SELECT,
        "accountEnabled",
        "ageGroup",
        "assignedLicenses",
        "assignedPlans",
        "city",
        "companyName",
        "consentProvidedForMinor",
        "country",
        "createdDateTime",
        "creationType",
        "department",
        "employeeHireDate",
        "employeeId",
        "employeeOrgData",
        "employeeType",
        "externalUserState",
        "externalUserStateChangeDateTime",
        "faxNumber",
        "identities",
        "imAddresses",
        "legalAgeGroupClassification",
        "mailNickname",
        "onPremisesDistinguishedName",
        "onPremisesDomainName",
        "onPremisesExtensionAttributes",
        "onPremisesImmutableId",
        "onPremisesLastSyncDateTime",
        "onPremisesSamAccountName",
        "onPremisesSecurityIdentifier",
        "onPremisesSyncEnabled",
        "onPremisesUserPrincipalName",
        "otherMails",
        "passwordPolicies",
        "postalCode",
        "provisionedPlans",
        "proxyAddresses",
        "showInAddressList",
        "signInSessionsValidFromDateTime",
        "state",
        "streetAddress",
        "usageLocation",
        "userType",
    }
)


def graph_error_body(code: str, message: str) -> dict[str, Any]:
    inner = {"date": "2026-10-02T10:00:00", "request-id": "0b1c-fake", "client-request-id": "0b1c-fake"}
    return {"error": {"code": code, "message": message, "innerError": inner}}


def graph_error(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(graph_error_body(code, message), status_code=status, headers=headers)


def entra_error(error: str, description: str, codes: list[int], status: int) -> JSONResponse:
    body = {
        "error": error,
        "error_description": description,
        "error_codes": codes,
        "timestamp": "2026-10-02 10:00:00Z",
        "trace_id": "fake-trace",
        "correlation_id": "fake-corr",
    }
    return JSONResponse(body, status_code=status)


THROTTLED = graph_error_body("TooManyRequests", "Too many requests.")


def fixture_users() -> list[dict[str, Any]]:
    """The fact sheet's emulator users, plus a guest."""
    return [
        {
            "id": "6e7b0c1a-0000-4a1b-9c2d-111111111111",
            "displayName": "Alice Fabre",
            "givenName": "Alice",
            "surname": "Fabre",
            "mail": "alice@contoso-fake.com",
            "userPrincipalName": "alice@contoso-fake.com",
            "jobTitle": "Designer",
            "accountEnabled": True,
            "userType": "Member",
            "department": "Design",
            "mobilePhone": "+33 6 00 00 00 01",
            "businessPhones": ["+33 1 00 00 00 01"],
            "officeLocation": "Paris 3",
            "usageLocation": "FR",
            "mailNickname": "alice",
            "onPremisesImmutableId": "AbCdEf==",
            "companyName": "Contoso",
            "employeeId": "E-001",
            "city": "Paris",
            "country": "France",
        },
        {
            "id": "6e7b0c1a-0000-4a1b-9c2d-222222222222",
            "displayName": "Jörg Ñúñez",
            "givenName": "Jörg",
            "surname": "Ñúñez",
            "mail": None,
            "userPrincipalName": "jnunez@contoso-fake.com",
            "jobTitle": None,
            "accountEnabled": False,
            "userType": "Member",
            "businessPhones": [],
        },
        {
            "id": "6e7b0c1a-0000-4a1b-9c2d-333333333333",
            "displayName": "Guest Person",
            "givenName": "Guest",
            "surname": "Person",
            "mail": "guest@partner.test",
            "userPrincipalName": "guest_partner.test#EXT#@contoso-fake.onmicrosoft.com",
            "jobTitle": None,
            "accountEnabled": True,
            "userType": "Guest",
            "businessPhones": [],
        },
    ]


def user(i: int) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-0000-0000-{i:012d}",
        "displayName": f"User {i}",
        "givenName": f"User{i}",
        "surname": "Test",
        "mail": f"user{i}@contoso-fake.com",
        "userPrincipalName": f"user{i}@contoso-fake.com",
        "jobTitle": "Engineer",
        "accountEnabled": True,
        "userType": "Member",
        "businessPhones": [],
    }


def _skiptoken(offset: int) -> str:
    return base64.urlsafe_b64encode(f"RFNwdAIAAQAAAB8x:{offset}".encode()).decode().rstrip("=")


def _offset(token: str) -> int | None:
    try:
        return int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().rsplit(":", 1)[1])
    except (ValueError, IndexError):
        return None


def _matches(user: dict[str, Any], expression: str) -> bool | None:
    """``prop eq value`` (value: true/false/'text'/number); None when the filter is not understood."""
    parts = expression.split(" ", 2)
    if len(parts) != 3 or parts[1] != "eq":
        return None
    prop, raw = parts[0], parts[2]
    if raw in ("true", "false"):
        value: Any = raw == "true"
    elif raw.startswith("'") and raw.endswith("'"):
        value = raw[1:-1]
    else:
        try:
            value = int(raw)
        except ValueError:
            return None
    return user.get(prop) == value


class FakeAzure(FakeVendor):
    def __init__(
        self,
        users: list[dict[str, Any]] | None = None,
        max_page: int = 999,
        certificate_pem: bytes | None = None,
        link_host: str | None = None,
    ) -> None:
        self.users = users if users is not None else fixture_users()
        self.max_page = max_page
        self.secret = SECRET
        self.certificate_pem = certificate_pem  # registered certificate (for client_assertion)
        self.link_host = link_host  # emit nextLinks on this host (as Graph behind a proxy would)
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1.0/users", self.list_users),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration),
            Route("/{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
        ]

    # -- Entra ID ----------------------------------------------------------------------------------

    def _known_tenant(self, tenant: str) -> bool:
        return tenant in (TENANT, TENANT_DOMAIN)

    async def openid_configuration(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if not self._known_tenant(tenant):
            return entra_error(
                "invalid_tenant",
                f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure "
                "you have the correct tenant ID. Trace ID: x Correlation ID: y",
                [90002],
                400,
            )
        return JSONResponse(
            {
                "token_endpoint": f"{self.url}/{tenant}/oauth2/v2.0/token",
                "authorization_endpoint": f"{self.url}/{tenant}/oauth2/v2.0/authorize",
                "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "tenant_region_scope": "EU",
            }
        )

    async def token(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        form = await request.form()
        if not self._known_tenant(tenant):
            return entra_error("invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.", [90002], 400)
        if form.get("grant_type") != "client_credentials":
            return entra_error("unsupported_grant_type", "AADSTS70003: unsupported grant type.", [70003], 400)
        if form.get("client_id") != CLIENT_ID:
            return entra_error(
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not found in the directory.",
                [700016],
                400,
            )
        if form.get("scope") != GRAPH_SCOPE:
            return entra_error(
                "invalid_scope", "AADSTS1002012: The provided value for scope is not valid.", [1002012], 400
            )
        if form.get("client_assertion"):
            ok = form.get("client_assertion_type") == ASSERTION_TYPE and self._assertion_ok(
                str(form["client_assertion"]), f"{self.url}/{tenant}/oauth2/v2.0/token"
            )
            if not ok:
                return entra_error(
                    "invalid_client",
                    "AADSTS700027: The certificate with identifier used to "
                    "sign the client assertion is not registered on application.",
                    [700027],
                    401,
                )
        elif form.get("client_secret") != self.secret:
            return entra_error(
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the "
                "secret being sent in the request is the client secret value, not the client "
                "secret ID, for a secret added to app 'aaaaaaaa'. Trace ID: 1 Correlation ID: 2 "
                "Timestamp: 2026-10-02 10:00:00Z",
                [7000215],
                401,
            )
        token = f"eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.fake{len(self.issued)}.sig"
        self.issued.append(token)
        return JSONResponse({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token})

    def _assertion_ok(self, assertion: str, audience: str) -> bool:
        if self.certificate_pem is None:
            return False
        import jwt
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        cert = x509.load_pem_x509_certificate(self.certificate_pem)
        header = jwt.get_unverified_header(assertion)
        x5t256 = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).decode().rstrip("=")
        x5t = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).decode().rstrip("=")
        # base64url of the digest; MSAL keeps the "=" padding, other clients drop it
        if str(header.get("x5t#S256", "")).rstrip("=") != x5t256 and str(header.get("x5t", "")).rstrip("=") != x5t:
            return False
        try:
            claims = jwt.decode(assertion, cert.public_key(), algorithms=["PS256", "RS256"], audience=audience)
        except jwt.PyJWTError:
            return False
        return claims.get("iss") == CLIENT_ID and claims.get("sub") == CLIENT_ID

    # -- Graph ---------------------------------------------------------------------------------------

    async def list_users(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not token or token not in self.issued or token in self.revoked:
            return graph_error("InvalidAuthenticationToken", "Access token validation failure. Invalid audience.", 401)
        q = request.query_params
        pool = self.users
        if "$filter" in q:
            kept = [u for u in pool if _matches(u, q["$filter"])]
            if any(_matches(u, q["$filter"]) is None for u in pool[:1]):
                return graph_error(
                    "Request_UnsupportedQuery",
                    "Unsupported or invalid query filter clause specified for property.",
                    400,
                )
            pool = kept
        if q.get("$count") == "true" and request.headers.get("consistencylevel") != "eventual":
            return graph_error("Request_BadRequest", "$count is not currently supported.", 400)
        select = [p for p in q.get("$select", "").split(",") if p] or list(DEFAULT_SELECT)
        unknown = [p for p in select if p not in KNOWN and not p.startswith("extension_")]
        if unknown:
            return graph_error(
                "Request_BadRequest",
                f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.user'.",
                400,
            )
        try:
            top = int(q.get("$top", 100))
        except ValueError:
            return graph_error("Request_BadRequest", "Invalid page size specified.", 400)
        if not 1 <= top <= 999:
            return graph_error(
                "Request_BadRequest", f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive.", 400
            )
        size = min(top, self.max_page)
        manager_select: list[str] | None = None
        if "$expand" in q:  # only manager, as the connector asks: manager($select=a,b)
            match = re.fullmatch(r"manager(?:\(\$select=([\w,]+)\))?", q["$expand"])
            if match is None:
                return graph_error(
                    "Request_BadRequest",
                    f"Could not find a navigation property named '{q['$expand']}' on type 'microsoft.graph.user'.",
                    400,
                )
            manager_select = (match.group(1) or ",".join(DEFAULT_SELECT)).split(",")
            size = min(size, 100)  # Graph's documented limit for $expand on directory objects
        start = 0
        if "$skiptoken" in q:
            offset = _offset(q["$skiptoken"])
            if offset is None:
                return graph_error(
                    "Directory_ExpiredPageToken",
                    "The specified page token value has expired and can no longer be included in your request.",
                    400,
                )
            start = offset
        page = pool[start : start + size]
        body: dict[str, Any] = {
            "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users({','.join(select)})",
        }
        if q.get("$count") == "true":
            body["@odata.count"] = len(pool)
        if start + size < len(pool):
            params = {k: v for k, v in q.items() if k != "$skiptoken"}
            params["$skiptoken"] = _skiptoken(start + size)
            body["@odata.nextLink"] = f"{self.link_host or self.url}/v1.0/users?" + urlencode(params, safe="$,")
        body["value"] = [{p: u.get(p) for p in select} for u in page]
        if manager_select is not None:
            by_id = {u["id"]: u for u in self.users}
            for shown, u in zip(body["value"], page, strict=True):
                boss = by_id.get(u.get("managerId") or "")
                if boss is not None:  # Graph omits "manager" for a user without one
                    shown["manager"] = {
                        "@odata.type": "#microsoft.graph.user",
                        **{p: boss.get(p) for p in manager_select},
                    }
        return JSONResponse(body, headers={"request-id": f"req-{len(self.requests)}"})
