"""Fake Microsoft Entra ID + Microsoft Graph on one (TLS) server. Each behaviour and its source:

- Sign-in (what MSAL calls): ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and
  ``POST /{tenant}/oauth2/v2.0/token`` (client credentials with a secret or a certificate
  ``client_assertion`` whose header names the certificate by ``x5t#S256``/``x5t``), answering
  Entra's JSON bodies, ``AADSTS…`` errors included (learn.microsoft.com "Microsoft identity platform
  and the OAuth 2.0 client credentials flow", "certificate credentials").
- ``GET /v1.0/users`` with ``Authorization: Bearer``; ``$top`` 1..999 (capped by ``max_page``,
  the harder case), ``@odata.nextLink`` with a ``$skiptoken`` (Graph "List users", "Paging").
- ``$select``: only the named properties come back (Graph's default set without it); an unknown
  name is 400 ``Request_BadRequest``; extension attributes come back only when selected ("Returned
  only on $select", user resource type).
- ``$filter``: ``eq``/``ne``/``startsWith``/``endsWith`` clauses joined by ``and``. Whether a clause
  needs the advanced query parameters (``ConsistencyLevel: eventual`` *and* ``$count=true``)
  follows the user table of "Advanced query capabilities on Microsoft Entra ID objects"
  (microsoftgraph/microsoft-graph-docs-contrib ``concepts/aad-advanced-queries.md``,
  ``includes/filter-directory-objects.md``): ``ne``, ``endsWith``, ``null`` and the properties
  indexed only for advanced queries; without them Graph answers 400 ``Request_UnsupportedQuery``.
  ``$count=true`` without the header is silently ignored (no ``@odata.count``), as documented.
- ``$expand=manager($select=…)``: at most 100 users per page; "``$expand`` is not currently
  supported with advanced queries": an advanced query with ``$expand`` is 400
  ``Request_UnsupportedQuery`` "Unsupported or invalid query filter clause specified for property
  'X' of resource 'User'." (microsoft-graph-docs-contrib #9095, msgraph-sdk-dotnet #2068).
- ``POST /v1.0/$batch`` (JSON batching): at most 20 requests; each ``GET /users/{id}/manager``
  answers 200 with the manager (``$select`` honoured) or 404 ``Request_ResourceNotFound`` when there
  is none (Graph "List manager"); answers come in another order than asked (the docs allow it), and
  ``throttle_batch_items`` makes that many sub-requests 429 with their own ``Retry-After`` ("Requests
  in a batch are evaluated individually against the applicable throttling limits").

MSAL insists on https authorities, so serve it with the ``tls_files`` certificate.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

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
# Properties whose $filter is supported only in advanced queries (the user table of the docs).
ADVANCED_ONLY = frozenset(
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


def _literal(raw: str) -> tuple[bool, Any]:
    if raw in ("true", "false"):
        return True, raw == "true"
    if raw == "null":
        return True, None
    if raw.startswith("'") and raw.endswith("'"):
        return True, raw[1:-1]
    try:
        return True, int(raw)
    except ValueError:
        return False, None


def parse_filter(expression: str) -> list[tuple[str, str, Any]] | None:
    """``[(op, prop, value)]`` for clauses joined by ``and``; None when not understood."""
    clauses = []
    for clause in re.split(r"\s+and\s+", expression.strip(), flags=re.IGNORECASE):
        call = re.fullmatch(r"(startsWith|endsWith)\((\w+),\s*'([^']*)'\)", clause.strip(), re.IGNORECASE)
        if call:
            clauses.append((call.group(1).lower(), call.group(2), call.group(3)))
            continue
        parts = clause.strip().split(" ", 2)
        if len(parts) != 3 or parts[1].lower() not in ("eq", "ne"):
            return None
        ok, value = _literal(parts[2])
        if not ok:
            return None
        clauses.append((parts[1].lower(), parts[0], value))
    return clauses


def needs_advanced(clauses: list[tuple[str, str, Any]], advanced_only: frozenset[str] = ADVANCED_ONLY) -> str | None:
    """The property of the first clause that only an advanced query supports, or None."""
    for op, prop, value in clauses:
        if op in ("ne", "endswith") or value is None or prop in advanced_only:
            return prop
    return None


def _matches(user: dict[str, Any], clauses: list[tuple[str, str, Any]]) -> bool:
    for op, prop, value in clauses:
        have = user.get(prop)
        ok = {
            "eq": have == value,
            "ne": have != value,
            "startswith": isinstance(have, str) and have.lower().startswith(str(value).lower()),
            "endswith": isinstance(have, str) and have.lower().endswith(str(value).lower()),
        }[op]
        if not ok:
            return False
    return True


def unsupported_clause(prop: str) -> JSONResponse:
    return graph_error(
        "Request_UnsupportedQuery",
        f"Unsupported or invalid query filter clause specified for property '{prop}' of resource 'User'.",
        400,
    )


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
        self.throttle_batch_items = 0  # the next N sub-requests of $batch calls answer 429
        self.advanced_only = ADVANCED_ONLY  # Graph may index more properties for advanced queries only
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1.0/users", self.list_users),
            Route("/v1.0/$batch", self.batch, methods=["POST"]),
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

    def _token_ok(self, request: Request) -> bool:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return bool(token) and token in self.issued and token not in self.revoked

    async def batch(self, request: Request) -> Response:
        if not self._token_ok(request):
            return graph_error("InvalidAuthenticationToken", "Access token validation failure. Invalid audience.", 401)
        try:
            asked = json.loads(await request.body())["requests"]
        except (ValueError, KeyError, TypeError):
            return graph_error("BadRequest", "Invalid batch payload format.", 400)
        if not isinstance(asked, list) or len(asked) > 20:
            return graph_error("BadRequest", "Batch request cannot contain more than 20 requests.", 400)
        by_id = {u["id"]: u for u in self.users}
        answers = []
        for item in asked:
            if self.throttle_batch_items > 0:
                self.throttle_batch_items -= 1
                answers.append({"id": item["id"], "status": 429, "headers": {"Retry-After": "1"}, "body": THROTTLED})
                continue
            url = urlsplit(item.get("url", ""))
            match = re.fullmatch(r"/users/([^/]+)/manager", url.path)
            if item.get("method") != "GET" or match is None:
                answers.append({"id": item["id"], "status": 400, "body": graph_error_body("BadRequest", "Unsupported")})
                continue
            select = (parse_qs(url.query).get("$select") or [",".join(DEFAULT_SELECT)])[0].split(",")
            user = by_id.get(match.group(1))
            boss = by_id.get((user or {}).get("managerId") or "")
            if boss is None:
                message = (
                    "Resource 'manager' does not exist or one of its queried reference-property objects "
                    "are not present."
                )
                answers.append(
                    {"id": item["id"], "status": 404, "body": graph_error_body("Request_ResourceNotFound", message)}
                )
                continue
            body = {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects/$entity",
                "@odata.type": "#microsoft.graph.user",
                **{p: boss.get(p) for p in select},
            }
            answers.append(
                {"id": item["id"], "status": 200, "headers": {"Content-Type": "application/json"}, "body": body}
            )
        return JSONResponse({"responses": list(reversed(answers))})

    async def list_users(self, request: Request) -> Response:
        if not self._token_ok(request):
            return graph_error("InvalidAuthenticationToken", "Access token validation failure. Invalid audience.", 401)
        q = request.query_params
        pool = self.users
        advanced = q.get("$count") == "true" and request.headers.get("consistencylevel") == "eventual"
        if "$filter" in q:
            clauses = parse_filter(q["$filter"])
            if clauses is None:
                return unsupported_clause(q["$filter"].split(" ", 1)[0])
            prop = needs_advanced(clauses, self.advanced_only)
            if prop is not None and not advanced:
                return unsupported_clause(prop)
            if advanced and "$expand" in q:  # "$expand is not currently supported with advanced queries"
                return unsupported_clause(clauses[0][1])
            pool = [u for u in pool if _matches(u, clauses)]
        elif advanced and "$expand" in q:
            return graph_error("Request_UnsupportedQuery", "Unsupported Query.", 400)
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
        if advanced:  # without ConsistencyLevel, $count=true is silently ignored
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
