"""Fake NetBox: ``GET /api/dcim/devices/`` with v1 (``Token``) and v2 (``Bearer nbt_...``) tokens,
limit/offset paging with absolute ``next``/``previous`` links, ``ordering`` and
``exclude=config_context``, and NetBox's 403 ``{"detail": ...}`` bodies."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .vendor import FakeVendor

V1_TOKEN = "0123456789abcdef0123456789abcdef01234567"
V2_TOKEN = "nbt_AbCdEf123456.s3cr3tv2value"

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
        max_page: int = 1000,
        tokens: tuple[str, ...] = (V1_TOKEN, V2_TOKEN),
        next_base: str | None = None,
    ) -> None:
        self.devices = devices if devices is not None else [copy.deepcopy(RTR), copy.deepcopy(SWITCH)]
        self.max_page = max_page
        self.tokens = tokens
        self.next_base = next_base  # build next/previous on this origin (a proxy without X-Forwarded-*)
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [Route("/api/dcim/devices/", self.devices_list)]

    def _auth_problem(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            return "Authentication credentials were not provided."
        if scheme == "Token":
            return None if token in self.tokens and not token.startswith("nbt_") else "Invalid v1 token"
        if scheme == "Bearer":
            return None if token in self.tokens and token.startswith("nbt_") else "Invalid v2 token"
        return "Invalid token header"

    async def devices_list(self, request: Request) -> Response:
        problem = self._auth_problem(request)
        if problem:
            return JSONResponse({"detail": problem}, status_code=403)
        q = request.query_params
        if "start" in q and "offset" in q:
            return JSONResponse({"detail": "start and offset cannot be used together"}, status_code=400)
        limit = min(int(q.get("limit", 50)), self.max_page)
        offset = int(q.get("offset", 0))
        pool = sorted(self.devices, key=lambda d: d["id"]) if q.get("ordering") == "id" else self.devices
        page = [copy.deepcopy(d) for d in pool[offset : offset + limit]]
        if q.get("exclude") == "config_context":
            for d in page:
                d.pop("config_context", None)
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
