"""The Oomnitza REST client (oomnitza-api.md): login, mappings, locations, bulk upload, finalize,
cancel checks.

A batch counts as delivered only when Oomnitza's answer proves it: a JSON object naming the portion
or the number of records received. Anything else with a 2xx status (a proxy's or firewall's HTML
page, JSON of another shape) is a failed send and is retried. Bulk sends retry within a time budget
(``[oomnitza] retry_budget``) honouring ``Retry-After``; a 413 splits the batch in halves."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx

from .. import redact
from ..config import SectionConfig
from ..errors import AuthError, ConnectorError, SinkError
from ..http import DEFAULT_POLICY, Http, HttpAuthError, HttpError, RetryPolicy, decode_json
from .payload import RunInfo, bulk_body

log = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=utf-8"
DEFAULT_RETRY_BUDGET = 300.0  # seconds one batch may spend on retries (Retry-After included)
CANCEL_CHECK_TIMEOUT = 10.0  # a cancel check is a courtesy: it must never hold the run up long
# A cancel check that fails is skipped (the next one comes soon): one retry, no long waits.
CANCEL_CHECK_POLICY = RetryPolicy(attempts=2, connect_attempts=2, timeout_attempts=1, max_retry_after=5.0)


class PartlySent(SinkError):
    """A batch split after a 413 failed part-way: ``delivered`` of its records are in Oomnitza."""

    def __init__(self, message: str, delivered: int) -> None:
        super().__init__(message)
        self.delivered = delivered


def seconds_setting(section: SectionConfig, key: str, default: float) -> float:
    """A number of seconds from the section (config.py validated it when the file was loaded)."""
    try:
        return float(str(section.settings.get(key) or default))
    except ValueError:
        return default


def _markup_or_not_json(response: httpx.Response) -> tuple[Any, str | None]:
    """The decoded JSON body, or why the body is not the API's JSON."""
    ctype = response.headers.get("content-type", "?").split(";")[0].strip() or "?"
    try:
        return response.json(), None
    except ValueError:
        hint = "; a proxy or firewall page?" if "html" in ctype or response.content.lstrip()[:1] == b"<" else ""
        size = len(response.content)
        return None, f"answered {response.status_code} with a body that is not JSON ({ctype}, {size} bytes{hint})"


def bulk_answer_check(run: RunInfo, count: int) -> Callable[[httpx.Response], str | None]:
    """Does this 2xx answer prove Oomnitza took the batch? (None = yes, else why not)."""

    def check(response: httpx.Response) -> str | None:
        body, problem = _markup_or_not_json(response)
        if problem:
            return problem
        if not isinstance(body, dict) or not ({"portion", "received"} & body.keys()):
            shape = type(body).__name__ if not isinstance(body, dict) else "object without portion or received"
            return f"answered {response.status_code} with JSON that is not a bulk answer ({shape})"
        if "portion" in body and str(body["portion"]) != run.portion:
            return f"answered for another sync session ({str(body['portion'])[:40]!r})"
        received = str(body.get("received", ""))
        if received.isdigit() and int(received) != count:
            return f"answered that it received {received} of {count} record(s)"
        return None

    return check


def _refused(response: httpx.Response, count: int) -> int:
    """How many records of a taken batch the answer counts as failed (0 when it does not say)."""
    try:
        failed = response.json().get("failed")
    except (ValueError, AttributeError):
        return 0
    return failed if isinstance(failed, int) and 0 < failed <= count else 0


def _finalize_check(response: httpx.Response) -> str | None:
    """The finalize answer is not documented: accept JSON or nothing, refuse a proxy's page."""
    if not response.content.strip():
        return None
    return _markup_or_not_json(response)[1]


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
        # Bulk sends ride out throttling and short outages within a time budget, not a fixed count.
        self.send_policy = RetryPolicy(budget=seconds_setting(section, "retry_budget", DEFAULT_RETRY_BUDGET))
        self.batch_cap = 0  # after a 413: the largest part Oomnitza took whole (0: no limit known)

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
        # Every call made here is safe to repeat: reads, bulk upserts by sync key within one portion,
        # finalize, portion reports (correlation_id) and check_managed. The login is not (retry=False).
        kwargs.setdefault("idempotent", True)
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
    async def send(self, run: RunInfo, records: list[dict[str, Any]]) -> int:
        """Upload one batch; returns how many of its records Oomnitza took. Raises when it took none
        for a reason that is not the records' own (unreachable, refused, out of retry budget)."""
        cap = self.batch_cap
        if cap and len(records) > cap:  # Oomnitza refused larger batches before (413)
            return await self._send_parts(run, [records[i : i + cap] for i in range(0, len(records), cap)])
        return await self._send_or_split(run, records, part=False)

    async def _send_or_split(self, run: RunInfo, records: list[dict[str, Any]], *, part: bool) -> int:
        try:
            # Safe to retry: a bulk payload is an upsert by sync key within one portion.
            response = await self._call(
                "POST",
                "/api/v3/bulk",
                content=bulk_body(run, records),
                headers={"Content-Type": JSON_TYPE},
                policy=self.send_policy,
                validate=bulk_answer_check(run, len(records)),
            )
        except HttpError as exc:
            if exc.status == 413:
                return await self._too_large(run, records)
            raise
        if part:  # the largest part that went through whole sizes the batches that follow
            self.batch_cap = max(self.batch_cap, len(records))
        refused = _refused(response, len(records))
        if refused:
            log.warning(
                "[%s] Oomnitza did not take %d of %d record(s) of a batch (its answer counts them as failed)",
                run.section,
                refused,
                len(records),
            )
        return len(records) - refused

    async def _too_large(self, run: RunInfo, records: list[dict[str, Any]]) -> int:
        """413 Payload Too Large: send each half on its own; a lone record too large is not sent."""
        if len(records) == 1:
            size = len(bulk_body(run, records))
            key = ", ".join(f"{f}={records[0].get(f)!r}" for f in run.sync_field) or "its sync key is unknown"
            log.warning(
                "[%s] a record is too large for Oomnitza even on its own (%d bytes, %s): not sent",
                run.section,
                size,
                redact.scrub(key),
            )
            return 0
        log.info(
            "[%s] Oomnitza refused a batch of %d as too large (413); sending it in halves", run.section, len(records)
        )
        half = (len(records) + 1) // 2
        return await self._send_parts(run, [records[:half], records[half:]])

    async def _send_parts(self, run: RunInfo, parts: list[list[dict[str, Any]]]) -> int:
        delivered = 0
        for part in parts:
            try:
                delivered += await self._send_or_split(run, part, part=True)
            except PartlySent as exc:
                raise PartlySent(str(exc), delivered + exc.delivered) from (exc.__cause__ or exc)
            except ConnectorError as exc:
                raise PartlySent(str(exc), delivered) from exc  # the cause tells sync.py whether to stop
        return delivered

    async def send_error(self, run: RunInfo, record: Any, error: str, *, fatal: bool = False) -> None:
        """Report a problem of a run: ``record`` is the raw item (or {})."""
        await self._call(
            "POST",
            "/api/v3/bulk",
            content=bulk_body(run, [record], error, fatal),
            headers={"Content-Type": JSON_TYPE},
            policy=self.send_policy,
            validate=bulk_answer_check(run, 1),
        )

    async def canceled(self, run: RunInfo) -> bool:
        """Did someone cancel this sync in Oomnitza's web UI? A failed check counts as "no"."""
        try:
            response = await self._call(
                "GET",
                f"/api/v3/bulk/{run.portion}",
                policy=CANCEL_CHECK_POLICY,
                timeout=min(CANCEL_CHECK_TIMEOUT, self.http.client.timeout.read or CANCEL_CHECK_TIMEOUT),
            )
            body = response.json()
        except (ConnectorError, ValueError) as exc:
            log.warning("[%s] could not ask Oomnitza whether the sync was canceled: %s", run.section, exc)
            return False
        return isinstance(body, dict) and body.get("canceled") is True

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
            "POST",
            f"/api/v3/bulk/{run.portion}/finalize",
            content=b"{}",
            headers={"Content-Type": JSON_TYPE},
            validate=_finalize_check,
        )
