"""Fake Google: the OAuth 2.0 token endpoint of the service-account JWT bearer grant, the IAM Service
Account Credentials ``signJwt`` method, and the Admin SDK Directory API lists of ChromeOS and mobile
devices (plus the Cloud Identity Devices API list).

What it follows, per behaviour:

- token endpoint (developers.google.com/identity/protocols/oauth2/service-account, "HTTP/REST";
  RFC 7523): form ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` + ``assertion``; the
  assertion is verified like Google does: RS256 signature with one of the service account's public
  keys (the user-managed key of the JSON key file, or the Google-managed key IAM signs with; ``kid``
  picks it), ``iss`` = the account's email, ``aud`` = Google's token URI, a lifetime of at most an
  hour, ``sub`` = a known Workspace user, and every requested ``scope`` granted to the account by
  domain-wide delegation. Answers ``{"access_token", "expires_in", "token_type": "Bearer"}``; errors
  are ``{"error", "error_description"}``: 401 ``unauthorized_client`` (scope not delegated), 400
  ``invalid_grant`` ("Invalid email or User ID", "Invalid JWT Signature."), 401 ``invalid_client``
  (the texts google-auth's tests and Google's delegation troubleshooting quote). It also issues the
  *caller*'s own token: the assertion of a second service account (``CALLER_EMAIL``, no ``sub``,
  cloud-platform/iam scope), which is what ``google.auth.default()`` sends for a key file named by
  ``GOOGLE_APPLICATION_CREDENTIALS``.
- ``signJwt`` (cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/signJwt):
  ``POST /v1/projects/-/serviceAccounts/{sa}:signJwt`` with ``{"payload": "<claims JSON>"}`` needs a
  caller token with the cloud-platform or iam scope, and the caller in ``token_creators`` (holders of
  roles/iam.serviceAccountTokenCreator on the account); otherwise 403 ``IAM_PERMISSION_DENIED`` in
  Google's AIP-193 error body (``{"error": {"code", "message", "status", "details": [ErrorInfo]}}``).
  Answers ``{"keyId", "signedJwt"}``.
- Directory API lists (developers.google.com/admin-sdk/directory/reference/rest/v1/chromeosdevices/list
  and .../mobiledevices/list; google-api-python-client discovery document admin.directory_v1.json):
  ``customer/my_customer/devices/{chromeos,mobile}``, ``maxResults`` default 100, at most 300
  (ChromeOS: "Value should not exceed 300") and 100 (mobile: ``"maximum": "100"``); a larger value is
  refused here with 400 ``invalid`` (whether Google refuses or caps it is unverified: the connector
  never sends one); ``projection`` BASIC/FULL; opaque ``pageToken``/``nextPageToken``; an empty result
  has no item key at all. A server may send fewer than asked (``page_cap``: the harder case).
- errors (developers.google.com/admin-sdk/directory/v1/limits): ``{"error": {"code", "message",
  "errors": [{"reason", "domain", "message"}]}}``; quota is 403 ``userRateLimitExceeded`` /
  ``quotaExceeded`` / ``rateLimitExceeded`` or 429 (``quota_body``); a token for another scope is
  403 ``insufficientPermissions``, a user who is not an admin 403 ``forbidden``, a bad token 401
  ``authError``.
- Cloud Identity ``GET /v1/devices`` (cloud.google.com/identity/docs/reference/rest/v1/devices/list):
  ``customer=customers/my_customer``, ``pageSize`` default 20, values above 100 coerced to 100,
  ``{"devices": [...], "nextPageToken"}``.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
SCOPES = "https://www.googleapis.com/auth/"
CHROMEOS_SCOPE = SCOPES + "admin.directory.device.chromeos.readonly"
MOBILE_SCOPE = SCOPES + "admin.directory.device.mobile.readonly"
CLOUD_IDENTITY_SCOPE = SCOPES + "cloud-identity.devices.readonly"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DIRECTORY = "/admin/directory/v1/customer/{customer}/devices"
CHROMEOS_PATH = "/admin/directory/v1/customer/my_customer/devices/chromeos"
MOBILE_PATH = "/admin/directory/v1/customer/my_customer/devices/mobile"

CLIENT_EMAIL = "oomnitza-connector@acme-inventory.iam.gserviceaccount.com"
CLIENT_ID = "109876543210987654321"
KEY_ID = "4f1c0ffee0ddba11d00dfeedfacecafe12345678"  # the user-managed key of the JSON key file
IAM_KEY_ID = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"  # the Google-managed key signJwt signs with
ADMIN = "it-admin@example.edu"
# keyless: the identity the connector runs as (an attached / federated service account)
CALLER_EMAIL = "connector-runner@acme-ops.iam.gserviceaccount.com"
CLOUD_PLATFORM_SCOPE = SCOPES + "cloud-platform"
IAM_SCOPE = SCOPES + "iam"
SIGN_JWT = "/v1/projects/-/serviceAccounts/{account}:signJwt"
SIGN_JWT_PATH = SIGN_JWT.format(account=CLIENT_EMAIL)
SIGN_DENIED = "Permission 'iam.serviceAccounts.signJwt' denied on resource (or it may not exist)."


# -- keys ------------------------------------------------------------------------------------------


def rsa_key_pair() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh RSA key, as a service account key would hold."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@functools.cache
def iam_key_pair() -> tuple[str, str]:
    """The Google-managed key of the delegated account (only IAM holds its private half)."""
    return rsa_key_pair()


@functools.cache
def caller_key_pair() -> tuple[str, str]:
    """The key of the caller service account, in the file GOOGLE_APPLICATION_CREDENTIALS names."""
    return rsa_key_pair()


def service_account_key(private_pem: str, token_uri: str, **overrides: Any) -> dict[str, Any]:
    """A service-account JSON key as the Cloud console downloads it (``token_uri`` pointed at a fake)."""
    key = {
        "type": "service_account",
        "project_id": "acme-inventory",
        "private_key_id": KEY_ID,
        "private_key": private_pem,
        "client_email": CLIENT_EMAIL,
        "client_id": CLIENT_ID,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/oomnitza-connector",
        "universe_domain": "googleapis.com",
    }
    key.update(overrides)
    return key


# -- records (the fact sheets' emulator fixtures) --------------------------------------------------

CHROMEBOOK = {
    "kind": "admin#directory#chromeosdevice",
    "deviceId": "3f1e2d3c-5b6a-4c7d-8e9f-0a1b2c3d4e5f",
    "serialNumber": "5CD1234ABC",
    "status": "ACTIVE",
    "model": "HP Chromebook 14 G7",
    "osVersion": "128.0.6613.131",
    "platformVersion": "15964.59.0 (Official Build) stable-channel",
    "firmwareVersion": "Google_Drallion.12200.300.0",
    "macAddress": "a4b1c1223344",
    "annotatedAssetId": "OOM-55120",
    "annotatedUser": "Room 214 cart",
    "annotatedLocation": "Lincoln HS",
    "orgUnitPath": "/Students/Grade 9",
    "orgUnitId": "id:03ph8a2z1abcd",
    "lastSync": "2026-09-14T07:55:20.150Z",
    "lastEnrollmentTime": "2025-08-20T14:01:00.000Z",
    "autoUpdateExpiration": "1843977600000",
    "systemRamTotal": "8229224448",
    "bootMode": "Verified",
    "recentUsers": [{"type": "USER_TYPE_MANAGED", "email": "student42@example.edu"}],
    "lastKnownNetwork": [{"ipAddress": "10.4.5.66", "wanIpAddress": "203.0.113.77"}],
}
DISABLED_CHROMEBOOK = {
    "kind": "admin#directory#chromeosdevice",
    "deviceId": "9a8b7c6d-0000-4000-8000-00000000a001",
    "serialNumber": "NXHQEAA00123456789",
    "status": "DISABLED",
    "model": "Acer Chromebook 314",
    "orgUnitPath": "/Staff",
}


def chromebook(i: int) -> dict[str, Any]:
    return {
        "kind": "admin#directory#chromeosdevice",
        "deviceId": f"00000000-0000-4000-8000-{i:012d}",
        "serialNumber": f"SN{i:08d}",
        "status": "ACTIVE",
        "model": "Lenovo 300e Chromebook Gen 4",
        "orgUnitPath": "/Students",
        "lastSync": "2026-09-13T10:00:00.000Z",
    }


PIXEL = {
    "kind": "admin#directory#mobiledevice",
    "resourceId": "AFiQxQ8Zq1kD2exampleR1",
    "deviceId": "b7c2e9d4a1f03e55",
    "name": ["Ana Silva"],
    "email": ["ana.silva@example.com"],
    "model": "Pixel 8",
    "manufacturer": "Google",
    "brand": "google",
    "os": "Android 15",
    "buildNumber": "AP4A.250905.002",
    "securityPatchLevel": "1756684800000",
    "type": "ANDROID",
    "status": "APPROVED",
    "serialNumber": "39011FDJH00ABC",
    "imei": "356938035643809",
    "wifiMacAddress": "f4:f5:e8:11:22:33",
    "firstSync": "2025-03-02T10:11:12.000Z",
    "lastSync": "2026-09-14T07:30:00.000Z",
    "encryptionStatus": "Encrypted",
    "devicePasswordStatus": "On",
    "deviceCompromisedStatus": "No compromise detected",
    "applications": [
        {
            "packageName": "com.google.android.gm",
            "displayName": "Gmail",
            "versionName": "2026.08.24",
            "versionCode": 64123,
            "permission": ["android.permission.INTERNET"],
        }
    ],
}
IPHONE = {
    "kind": "admin#directory#mobiledevice",
    "resourceId": "AFiQxQ9Lm2nExampleR2",
    "deviceId": "SEC1A2B3C4D5E6F7",
    "email": ["jdoe@example.com"],
    "model": "iPhone",
    "os": "iOS 18.6",
    "type": "IOS_SYNC",
    "status": "APPROVED",
    "lastSync": "2026-09-13T21:04:44.000Z",
}


def phone(i: int) -> dict[str, Any]:
    return {
        "kind": "admin#directory#mobiledevice",
        "resourceId": f"AFiQxQ{i:06d}ExampleRx",
        "deviceId": f"dev{i:06d}",
        "email": [f"user{i}@example.com"],
        "name": [f"User {i}"],
        "model": "Galaxy S24",
        "os": "Android 14",
        "type": "ANDROID",
        "status": "APPROVED",
        "serialNumber": f"R5C{i:08d}",
    }


COMPANY_PHONE = {
    "name": "devices/AFiQxQ8CompanyOwned01",
    "deviceType": "ANDROID",
    "ownerType": "COMPANY",
    "serialNumber": "R5CT00COMPANY1",
    "model": "Galaxy XCover7",
    "osVersion": "Android 14",
    "imei": "351234567890123",
    "wifiMacAddresses": ["aa:bb:cc:dd:ee:01"],
    "lastSyncTime": "2026-09-14T06:00:00Z",
    "encryptionState": "ENCRYPTED",
}


# -- errors -----------------------------------------------------------------------------------------


def api_error(status: int, message: str, reason: str, domain: str = "global") -> JSONResponse:
    errors = [{"message": message, "domain": domain, "reason": reason}]
    return JSONResponse({"error": {"code": status, "message": message, "errors": errors}}, status_code=status)


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def rpc_error(
    status: int, code: str, message: str, reason: str = "", domain: str = "iam.googleapis.com", **metadata: str
) -> dict[str, Any]:
    """A Google Cloud API (AIP-193) error body, as IAM answers."""
    error: dict[str, Any] = {"code": status, "message": message, "status": code}
    if reason:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": domain,
                "metadata": metadata,
            }
        ]
    return {"error": error}


UNAUTHENTICATED = rpc_error(
    401,
    "UNAUTHENTICATED",
    "Request had invalid authentication credentials. Expected "
    "OAuth 2 access token, login cookie or other valid authentication credential.",
    "ACCESS_TOKEN_TYPE_UNSUPPORTED",
    "googleapis.com",
)
SIGN_JWT_DENIED = rpc_error(
    403, "PERMISSION_DENIED", SIGN_DENIED, "IAM_PERMISSION_DENIED", permission="iam.serviceAccounts.signJwt"
)
IAM_API_DISABLED = rpc_error(
    403,
    "PERMISSION_DENIED",
    "IAM Service Account Credentials API has not been used in project 123456789012 "
    "before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/"
    "iamcredentials.googleapis.com/overview?project=123456789012 then retry.",
    "SERVICE_DISABLED",
    "googleapis.com",
    service="iamcredentials.googleapis.com",
)


FORBIDDEN = "Not Authorized to access this resource/api"
QUOTA = "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user'"


def quota_body(reason: str = "userRateLimitExceeded", code: int = 403) -> dict[str, Any]:
    """Google's quota error body (403 by the Directory API's table; 429 adds RESOURCE_EXHAUSTED)."""
    error: dict[str, Any] = {
        "code": code,
        "message": QUOTA,
        "errors": [{"reason": reason, "domain": "usageLimits", "message": QUOTA}],
    }
    if code == 429:
        error["status"] = "RESOURCE_EXHAUSTED"
    return {"error": error}


def page_token(offset: int) -> str:
    """The fake's opaque page token for the page starting at ``offset`` (to aim faults at it)."""
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


class FakeGoogle(FakeVendor):
    def __init__(
        self,
        public_pem: str,
        *,
        chromeos: list[dict[str, Any]] | None = None,
        mobile: list[dict[str, Any]] | None = None,
        cloud_devices: list[dict[str, Any]] | None = None,
        admins: set[str] | None = None,
        users: set[str] | None = None,
        delegated: set[str] | None = None,
        page_cap: int | None = None,
        token_creators: set[str] | None = None,
    ) -> None:
        self.public_pem = public_pem
        self.client_email = CLIENT_EMAIL
        # the delegated account's public keys by key id: its user-managed key and the one IAM signs with
        self.account_keys = {KEY_ID: public_pem, IAM_KEY_ID: iam_key_pair()[1]}
        self.callers = {CALLER_EMAIL: caller_key_pair()[1]}  # other service accounts that may get tokens
        self.token_creators = token_creators if token_creators is not None else {CALLER_EMAIL}
        self.chromeos = (
            chromeos if chromeos is not None else [copy.deepcopy(CHROMEBOOK), copy.deepcopy(DISABLED_CHROMEBOOK)]
        )
        self.mobile = mobile if mobile is not None else [copy.deepcopy(PIXEL), copy.deepcopy(IPHONE)]
        self.cloud_devices = cloud_devices if cloud_devices is not None else [copy.deepcopy(COMPANY_PHONE)]
        self.admins = admins if admins is not None else {ADMIN}
        self.users = (users or set()) | self.admins  # existing Workspace users (admins or not)
        self.delegated = delegated if delegated is not None else {CHROMEOS_SCOPE, MOBILE_SCOPE, CLOUD_IDENTITY_SCOPE}
        self.page_cap = page_cap  # a server may send fewer than maxResults
        self.tokens: dict[str, dict[str, Any]] = {}  # access token -> {"sub", "scopes"}
        self.assertions: list[dict[str, Any]] = []  # verified JWT claims, in order
        self.expires_in = 3599
        self.caller_tokens: dict[str, dict[str, Any]] = {}  # the callers' own tokens -> {"principal", ...}
        self.caller_expires_in = 3599
        self.signed: list[dict[str, Any]] = []  # what signJwt signed: {"caller", "account", **claims}
        self.grant_outages = 0  # the delegated account's grants answer 503 this many times first
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/token", self.token_endpoint, methods=["POST"]),
            Route(SIGN_JWT, self.sign_jwt, methods=["POST"]),
            Route(DIRECTORY + "/chromeos", self.list_chromeos),
            Route(DIRECTORY + "/mobile", self.list_mobile),
            Route("/v1/devices", self.list_cloud_identity),
        ]

    # -- OAuth ------------------------------------------------------------------------------------

    async def token_endpoint(self, request: Request) -> Response:
        import jwt

        form = await request.form()
        if form.get("grant_type") != JWT_BEARER:
            return oauth_error(400, "unsupported_grant_type", "Invalid grant_type: " + str(form.get("grant_type")))
        assertion = str(form.get("assertion", ""))
        try:
            header = jwt.get_unverified_header(assertion)
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError as exc:
            return oauth_error(400, "invalid_grant", f"Invalid JWT: {type(exc).__name__}")
        if issuer in self.callers:
            keys = [self.callers[issuer]]
        elif issuer == self.client_email:  # the key named by kid, else any of the account's keys
            kid = header.get("kid")
            keys = [self.account_keys[kid]] if kid in self.account_keys else list(self.account_keys.values())
        else:
            return oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if issuer == self.client_email and self.grant_outages > 0:
            self.grant_outages -= 1
            return oauth_error(503, "temporarily_unavailable", "The service is currently unavailable.")
        claims: dict[str, Any] | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    assertion,
                    key,
                    algorithms=["RS256"],
                    audience=GOOGLE_TOKEN_URI,
                    options={"require": ["iss", "aud", "iat", "exp"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                return oauth_error(400, "invalid_grant", f"Invalid JWT: {type(exc).__name__}")
        if claims is None:
            return oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if header.get("alg") != "RS256":
            return oauth_error(400, "invalid_grant", "Invalid JWT: alg")
        if issuer in self.callers:
            return self._caller_token(claims)
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return oauth_error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)")
        sub = claims.get("sub")
        if sub not in self.users:
            return oauth_error(400, "invalid_grant", "Invalid email or User ID")
        scopes = set(str(claims.get("scope", "")).split())
        if not scopes or not scopes <= self.delegated:
            return oauth_error(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client not "
                "authorized for any of the scopes requested.",
            )
        self.assertions.append({"header": header, **claims})
        token = f"ya29.fake-token-{len(self.tokens) + 1}"
        self.tokens[token] = {"sub": sub, "scopes": scopes, "expires": time.time() + self.expires_in}
        return JSONResponse({"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})

    def _caller_token(self, claims: dict[str, Any]) -> Response:
        """A service account's token for itself (no ``sub``): what ambient credentials ask for."""
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return oauth_error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)")
        scopes = set(str(claims.get("scope", "")).split())
        if claims.get("sub") or not scopes or not scopes <= {CLOUD_PLATFORM_SCOPE, IAM_SCOPE}:
            return oauth_error(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client not "
                "authorized for any of the scopes requested.",
            )
        token = f"ya29.fake-caller-token-{len(self.caller_tokens) + 1}"
        self.caller_tokens[token] = {
            "principal": claims["iss"],
            "scopes": scopes,
            "expires": time.time() + self.caller_expires_in,
        }
        return JSONResponse({"access_token": token, "expires_in": self.caller_expires_in, "token_type": "Bearer"})

    # -- IAM Service Account Credentials ------------------------------------------------------------

    async def sign_jwt(self, request: Request) -> Response:
        import jwt

        header = request.headers.get("authorization", "")
        grant = self.caller_tokens.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if grant is None or grant["expires"] < time.time():
            return JSONResponse(UNAUTHENTICATED, status_code=401)
        if not grant["scopes"] & {CLOUD_PLATFORM_SCOPE, IAM_SCOPE}:
            return JSONResponse(
                rpc_error(
                    403,
                    "PERMISSION_DENIED",
                    "Request had insufficient authentication scopes.",
                    "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                    "googleapis.com",
                ),
                status_code=403,
            )
        account = request.path_params["account"]
        if account != self.client_email or grant["principal"] not in self.token_creators:
            return JSONResponse(SIGN_JWT_DENIED, status_code=403)
        try:
            payload = json.loads((await request.json())["payload"])
            if not isinstance(payload, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse(rpc_error(400, "INVALID_ARGUMENT", "Invalid JWT payload."), status_code=400)
        exp = payload.get("exp")
        if exp is not None and not (isinstance(exp, int) and time.time() - 60 < exp <= time.time() + 12 * 3600):
            return JSONResponse(rpc_error(400, "INVALID_ARGUMENT", "Invalid JWT exp."), status_code=400)
        self.signed.append({"caller": grant["principal"], "account": account, **payload})
        signed = jwt.encode(payload, iam_key_pair()[0], algorithm="RS256", headers={"kid": IAM_KEY_ID})
        return JSONResponse({"keyId": IAM_KEY_ID, "signedJwt": signed})

    def _authorize(self, request: Request, scope: str) -> Response | None:
        header = request.headers.get("authorization", "")
        grant = self.tokens.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if grant is None or grant["expires"] < time.time():
            return JSONResponse(
                {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials. "
                        "Expected OAuth 2 access token, login cookie or other valid authentication "
                        "credential.",
                        "status": "UNAUTHENTICATED",
                        "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError"}],
                    }
                },
                status_code=401,
            )
        if scope not in grant["scopes"]:
            return api_error(403, "Request had insufficient authentication scopes.", "insufficientPermissions")
        if grant["sub"] not in self.admins:
            return api_error(403, FORBIDDEN, "forbidden")
        return None

    # -- lists ------------------------------------------------------------------------------------

    def _page(
        self,
        request: Request,
        pool: list[dict[str, Any]],
        key: str,
        kind: str,
        maximum: int,
        size_param: str = "maxResults",
        default: int = 100,
        coerce: bool = False,
    ) -> Response:
        q = request.query_params
        try:
            size = int(q.get(size_param, default))
        except ValueError:
            return api_error(400, f"Invalid Input: {size_param}", "invalid")
        if coerce:
            size = max(1, min(size, maximum))  # Cloud Identity coerces pageSize above 100
        if size < 1 or size > maximum:
            return api_error(400, f"Invalid Input: {size_param}", "invalid")
        if self.page_cap:
            size = min(size, self.page_cap)
        start = 0
        if q.get("pageToken"):
            try:
                start = int(json.loads(base64.urlsafe_b64decode(q["pageToken"]))["o"])
            except (ValueError, KeyError, TypeError):
                return api_error(400, "Invalid Input: pageToken", "invalid")
        page = pool[start : start + size]
        body: dict[str, Any] = {"kind": kind, "etag": '"fake-etag"'} if kind else {}
        if page:
            body[key] = page
        if start + size < len(pool):
            body["nextPageToken"] = page_token(start + size)
        return JSONResponse(body)

    async def list_chromeos(self, request: Request) -> Response:
        problem = self._directory_problem(request, CHROMEOS_SCOPE)
        if problem is not None:
            return problem
        return self._page(request, self.chromeos, "chromeosdevices", "admin#directory#chromeosdevices", 300)

    async def list_mobile(self, request: Request) -> Response:
        problem = self._directory_problem(request, MOBILE_SCOPE)
        if problem is not None:
            return problem
        return self._page(request, self.mobile, "mobiledevices", "admin#directory#mobiledevices", 100)

    def _directory_problem(self, request: Request, scope: str) -> Response | None:
        if request.path_params["customer"] != "my_customer":
            return api_error(400, "Bad Request", "badRequest")
        return self._authorize(request, scope)

    async def list_cloud_identity(self, request: Request) -> Response:
        problem = self._authorize(request, CLOUD_IDENTITY_SCOPE)
        if problem is not None:
            return problem
        if request.query_params.get("customer") != "customers/my_customer":
            return api_error(400, "Request contains an invalid argument.", "badRequest")
        return self._page(
            request, self.cloud_devices, "devices", "", 100, size_param="pageSize", default=20, coerce=True
        )


def section_settings(fake: FakeGoogle, private_pem: str, **extra: str) -> dict[str, str]:
    """An INI section for either Google source against ``fake`` (the key inline, on one line)."""
    key = service_account_key(private_pem, f"{fake.url}/token")
    return {"service_account_impersonate": ADMIN, "service_account_json_key": json.dumps(key), "url": fake.url, **extra}


def keyless_settings(fake: FakeGoogle, **extra: str) -> dict[str, str]:
    """An INI section for either Google source in keyless mode: no key, IAM signs as CLIENT_EMAIL."""
    return {
        "service_account_impersonate": ADMIN,
        "service_account_email": CLIENT_EMAIL,
        "url": fake.url,
        "iam_url": fake.url,
        "token_url": f"{fake.url}/token",
        **extra,
    }


def ambient_environment(fake: FakeGoogle, directory: Path, *, key_file: bool = True) -> dict[str, str]:
    """Environment variables under which ``google.auth.default()`` finds the caller's credentials offline:
    GOOGLE_APPLICATION_CREDENTIALS names a key of CALLER_EMAIL whose ``token_uri`` is the fake (with
    ``key_file=False`` nothing is found). The gcloud config directory is an empty one, and the metadata
    server probe goes to the fake, which is not a metadata server (404, no ``Metadata-Flavor``)."""
    gcloud = directory / "gcloud-config"
    gcloud.mkdir(exist_ok=True)
    env = {
        "CLOUDSDK_CONFIG": str(gcloud),
        "GCE_METADATA_IP": fake.url.removeprefix("http://"),
        "GOOGLE_APPLICATION_CREDENTIALS": "",
    }
    if key_file:
        path = directory / "caller-credentials.json"
        key = service_account_key(
            caller_key_pair()[0],
            f"{fake.url}/token",
            project_id="acme-ops",
            client_email=CALLER_EMAIL,
            client_id="101010101010101010101",
            private_key_id="c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00",
        )
        path.write_text(json.dumps(key, indent=2), encoding="utf-8")
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(path)
    return env
