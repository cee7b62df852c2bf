"""Fake NetBox: ``GET /api/dcim/devices/`` as NetBox 4.4 and 4.6 answer it.

Every behaviour follows NetBox's own source (github.com/netbox-community/netbox, tags v4.4.10 and
v4.6.8) and was checked against real 4.4.10 and 4.6.8 servers:

- Auth, 4.6 (and 4.5): ``netbox/netbox/api/authentication.py`` ``TokenAuthentication``: the keyword
  may be ``Token`` or ``Bearer`` (case-insensitive), the token *version* comes from the ``nbt_``
  prefix, not from the keyword (so ``Token nbt_…`` and ``Bearer <v1>`` both work); a v2 token is
  ``nbt_<key>.<secret>``; failures are "Invalid v1 token" / "Invalid v2 token" / "Invalid
  authorization header: …". v1 tokens are 40 mixed-case alphanumerics (``users/constants.py``
  ``TOKEN_CHARSET``, ``Token.generate``), not hex.
- Auth, 4.4: DRF's ``TokenAuthentication`` subclass: only the ``Token`` keyword is read (``Bearer`` is
  ignored, the request is anonymous), v1 tokens are 40 hex characters (``Token.generate_key``),
  a wrong one is "Invalid token".
- Every auth failure is HTTP 403 ``{"detail": …}`` (DRF answers 403, not 401, because NetBox's first
  authentication class gives no ``WWW-Authenticate`` challenge); an anonymous request is "Authentication
  credentials were not provided."; a valid token whose user lacks ``dcim.view_device``
  (``TokenPermissions`` perms_map ``GET``) is "You do not have permission to perform this action.".
- Paging: ``netbox/netbox/api/pagination.py`` ``NetBoxPagination``: ``limit``/``offset`` capped at
  ``MAX_PAGE_SIZE`` (here ``max_page``), absolute ``next``/``previous`` links built from the request's
  host (``next_base`` plays a proxy without ``X-Forwarded-*``); cursor mode ``start=`` (``count``
  null, ordered by pk); ``start`` with ``offset`` or with ``ordering``, or a bad ``start``, is a
  400 whose body is a JSON *list* of messages (a DRF ``ValidationError`` with a string).
- Record shape: the device serializer (``dcim/api/serializers_/devices.py``) with nested brief
  objects; ``exclude=config_context`` drops the rendered config context.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

V1_TOKEN = "Qm7XkP2vR9tLw4ZcN8bJd5HsF1yGa6UeT3oKiV0r"  # 4.5+: 40 of [A-Za-z0-9]
V1_HEX_TOKEN = "0123456789abcdef0123456789abcdef01234567"  # 4.4 and older: 40 hex
V2_TOKEN = "nbt_AbCdEf123456.s3cr3tv2value"
V2_PREFIX = "nbt_"
NO_CREDENTIALS = "Authentication credentials were not provided."
NO_PERMISSION = "You do not have permission to perform this action."

RTR = {
    "id": 231,
    "url": "https://netbox.example.test/api/dcim/devices/231/",
    "display": "rtr-ams-01",
    "name": "rtr-ams-01",
    "device_type": {
        "id": 12,
        "display": "ISR4331",
        "manufacturer": {"id": 3, "name": "Cisco", "slug": "cisco"},
        "model": "ISR4331",
        "slug": "isr4331",
    },
    "role": {"id": 2, "name": "Router", "slug": "router"},
    "tenant": None,
    "platform": {"id": 5, "name": "IOS-XE", "slug": "ios-xe"},
    "serial": "FOC2233X0AB",
    "asset_tag": "AT-000231",
    "site": {"id": 1, "name": "AMS1", "slug": "ams1"},
    "location": None,
    "rack": {"id": 9, "name": "R09"},
    "position": 42.0,
    "status": {"value": "active", "label": "Active"},
    "primary_ip": {"id": 77, "family": {"value": 4, "label": "IPv4"}, "address": "10.0.0.1/24"},
    "primary_ip4": {"id": 77, "family": {"value": 4, "label": "IPv4"}, "address": "10.0.0.1/24"},
    "primary_ip6": None,
    "description": "",
    "comments": "",
    "tags": [{"id": 4, "name": "core", "slug": "core", "color": "ff0000"}],
    "custom_fields": {"purchase_order": "PO-2291"},
    "config_context": {"ntp": ["10.0.0.53"]},
    "created": "2024-05-02T08:01:12.000000Z",
    "last_updated": "2026-10-30T16:44:05.120000Z",
}
SWITCH = {
    "id": 232,
    "url": "https://netbox.example.test/api/dcim/devices/232/",
    "display": "sw-ams-01",
    "name": "sw-ams-01",
    "device_type": {
        "id": 14,
        "display": "EX4300-48T",
        "manufacturer": {"id": 6, "name": "Juniper", "slug": "juniper"},
        "model": "EX4300-48T",
        "slug": "ex4300-48t",
    },
    "role": {"id": 3, "name": "Access Switch", "slug": "access-switch"},
    "tenant": None,
    "platform": None,
    "serial": "",
    "asset_tag": None,
    "site": {"id": 1, "name": "AMS1", "slug": "ams1"},
    "location": None,
    "rack": None,
    "position": None,
    "status": {"value": "planned", "label": "Planned"},
    "primary_ip": None,
    "primary_ip4": None,
    "primary_ip6": None,
    "description": "",
    "comments": "",
    "tags": [],
    "custom_fields": {"purchase_order": None},
    "config_context": {},
    "created": "2026-11-20T10:00:00.000000Z",
    "last_updated": "2026-11-20T10:00:00.000000Z",
}


def device(i: int) -> dict[str, Any]:
    d = copy.deepcopy(RTR)
    d.update(id=300 + i, name=f"rtr-{i:02d}", display=f"rtr-{i:02d}", serial=f"FOC{i:08d}", asset_tag=f"AT-{i:06d}")
    return d


class FakeNetbox(FakeVendor):
    def __init__(
        self,
        devices: list[dict[str, Any]] | None = None,
        *,
        version: str = "4.6",
        max_page: int = 1000,
        tokens: tuple[str, ...] | None = None,
        next_base: str | None = None,
        may_view_devices: bool = True,
    ) -> None:
        self.devices = devices if devices is not None else [copy.deepcopy(RTR), copy.deepcopy(SWITCH)]
        self.version = version  # "4.4" (Token keyword only, hex v1) or "4.6" (Token/Bearer, v1 + v2)
        self.max_page = max_page
        default = (V1_HEX_TOKEN,) if version == "4.4" else (V1_TOKEN, V2_TOKEN)
        self.tokens = tokens if tokens is not None else default
        self.next_base = next_base  # build next/previous on this origin (a proxy without X-Forwarded-*)
        self.may_view_devices = may_view_devices  # the token's user holds dcim.view_device
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [Route("/api/dcim/devices/", self.devices_list)]

    def _auth_problem(self, request: Request) -> str | None:
        """The 403 detail for this request's Authorization header, or None when it authenticates."""
        parts = request.headers.get("authorization", "").split()
        if self.version == "4.4":
            # DRF TokenAuthentication: keyword "Token" only; anything else leaves the request anonymous.
            if not parts or parts[0].lower() != "token":
                return NO_CREDENTIALS
            if len(parts) != 2:
                return "Invalid token header. Token string should not contain spaces."
            return None if parts[1] in self.tokens else "Invalid token"
        if not parts or parts[0].lower() not in ("token", "bearer"):
            return NO_CREDENTIALS
        if len(parts) != 2:
            return 'Invalid authorization header: Must be in the form "Bearer <key>.<token>" or "Token <token>"'
        value = parts[1]
        if not value.startswith(V2_PREFIX):
            return None if value in self.tokens and not value.startswith(V2_PREFIX) else "Invalid v1 token"
        if "." not in value:
            return (
                "Invalid authorization header: Could not parse key from v2 token. Did you mean to use 'Token' "
                "instead of 'Bearer'?"
            )
        return None if value in self.tokens else "Invalid v2 token"

    async def devices_list(self, request: Request) -> Response:
        problem = self._auth_problem(request)
        if problem:
            return JSONResponse({"detail": problem}, status_code=403)
        if not self.may_view_devices:
            return JSONResponse({"detail": NO_PERMISSION}, status_code=403)
        q = request.query_params
        limit = min(int(q.get("limit", 50)), self.max_page) or self.max_page
        if "start" in q and self.version != "4.4":  # 4.4 has no cursor mode: start= is ignored
            return self._cursor_page(q, limit)
        offset = int(q.get("offset", 0))
        pool = sorted(self.devices, key=lambda d: d["id"]) if q.get("ordering") == "id" else self.devices
        page = self._shaped(pool[offset : offset + limit], q)
        base = (self.next_base or self.url) + "/api/dcim/devices/"
        keep = {k: v for k, v in q.items() if k not in ("limit", "offset")}

        def link(off: int) -> str:
            return base + "?" + urlencode({**keep, "limit": limit, **({"offset": off} if off else {})})

        return JSONResponse(
            {
                "count": len(pool),
                "next": link(offset + limit) if offset + limit < len(pool) else None,
                "previous": link(max(0, offset - limit)) if offset else None,
                "results": page,
            }
        )

    def _cursor_page(self, q: Any, limit: int) -> Response:
        if "offset" in q:
            return self._cursor_error("'start' and 'offset' are mutually exclusive.")
        if "ordering" in q:
            return self._cursor_error("Ordering cannot be specified in conjunction with cursor-based pagination.")
        try:
            start = int(q["start"])
            if start < 0:
                raise ValueError
        except ValueError:
            return self._cursor_error("Invalid 'start' parameter: must be a non-negative integer.")
        rows = [d for d in sorted(self.devices, key=lambda d: d["id"]) if d["id"] >= start][:limit]
        base = (self.next_base or self.url) + "/api/dcim/devices/"
        more = len(rows) == limit and any(d["id"] > rows[-1]["id"] for d in self.devices)
        nxt = base + "?" + urlencode({"limit": limit, "start": rows[-1]["id"] + 1}) if more else None
        return JSONResponse({"count": None, "next": nxt, "previous": None, "results": self._shaped(rows, q)})

    def _cursor_error(self, message: str) -> Response:
        return JSONResponse([message], status_code=400)

    @staticmethod
    def _shaped(rows: list[dict[str, Any]], q: Any) -> list[dict[str, Any]]:
        page = [copy.deepcopy(d) for d in rows]
        if q.get("exclude") == "config_context":
            for d in page:
                d.pop("config_context", None)
        return page
