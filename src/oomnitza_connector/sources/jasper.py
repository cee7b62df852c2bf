"""``[jasper]``: SIM cards of a Cisco IoT Control Center (formerly Jasper) account, through the
Control Center REST API (``api = rest``) or the legacy SOAP Terminal API (``api = soap``).

``api = auto`` (the default) picks REST when the REST base ``url`` is set, else SOAP, so the INI files
of existing (SOAP) users keep working unchanged.

REST: HTTP Basic ``username:api_key`` with ``Accept: application/json``, all through the shared HTTP
layer (retries, ``Retry-After``, TLS, redaction), one call at a time (the Control Center REST catalog
asks for that) under a request-rate cap (``requests_per_second``). Control Center answers a throttled
call with HTTP 400 and ``errorCode`` 40000029: retried like a 429. ``GET /devices?modifiedSince=..&
modifiedTill=..&pageSize=..&pageNumber=..[&accountId=..]`` lists the SIMs changed in a window, oldest
change first, page by page until ``lastPage``; ``GET /devices/{iccid}`` reads each listed SIM. The
record is the detail object with its dates as ISO-8601 UTC and the SOAP names added as aliases
(``dateModified`` = ``dateUpdated``, ``fixedIpAddress`` = ``fixedIPAddress``, ...).

Control Center refuses a ``modifiedSince`` more than one year old (errorCode 10000045, as public
integrations quote the REST catalog), so a run walks forward from the stored mark (a first run: from
one year ago) to now in windows of ``window_days`` (at most 365), dates as ``yyyy-MM-ddTHH:mm:ssZ``.
After each window whose SIMs all reached Oomnitza (``RunContext.delivered``) its end is saved, so a run
that stops mid-way resumes there. Marks stay ``MARK_LAG`` behind the local clock (a clock ahead of
Control Center's must not skip changes), and consecutive windows share a second.

SOAP: every request carries a WS-Security UsernameToken (PasswordText) and the account's ``licenseKey``.
A run asks ``GetModifiedTerminals(since)`` for the ICCIDs changed after the stored mark (every page
when the schema has ``pageNumber``/``totalPages``), then ``GetTerminalDetails`` for them in chunks.
zeep is blocking: each call runs in a worker thread. Its HTTP goes through the blocking twin of the
shared layer (``http.sync_client``: ``verify_ssl``/``cacert_file``/``user_pem_file``, ``request_timeout``,
redacted logging), which retries 429/502/503/504 and read timeouts with back-off and ``Retry-After``
(SOAP faults arrive as HTTP 500 and are never retried).

The ``storage`` state file keeps, per section and whichever API read it, the "modified since" mark:
the largest ``dateModified`` seen (SOAP), or the end of the last window fully delivered (REST). It is
advanced only when the records before it reached Oomnitza (``commit``, and the REST window
checkpoints), written crash-safe (temporary file, fsync, ``os.replace``), so a failed or interrupted
run is repeated from the last mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from ..auth import basic
from ..errors import ConfigError, SourceError
from ..http import (
    Http,
    HttpAuthError,
    HttpError,
    PageNumber,
    RateLimiter,
    RetryPolicy,
    at,
    classify_transport_error,
    decode_json,
    error_body,
    retry_options,
    safe_url,
    sync_client,
)
from ..settings import File, Float, Int, Setting, Url
from .base import BadRecord, Page, Record, Source

log = logging.getLogger(__name__)

SCHEMA_NS = "http://api.jasperwireless.com/ws/schema"
DEFAULT_WSDL = "https://api.jasperwireless.com/ws/schema/Terminal.wsdl"
DEFAULT_SINCE = "2015-03-04T00:00:00Z"
MAX_DETAILS = 50  # ICCIDs per GetTerminalDetails call the service accepts
CERT_REASON = re.compile(r"certificate verify failed[^('\"]*")
T = TypeVar("T")

APIS = ("auto", "soap", "rest")
REST_PATH = "/rws/api/v1"
REST_MAX_PAGE = 50  # the documented maximum (and default) pageSize of GET /devices
MAX_RATE = 50.0  # requests_per_second at most
MAX_AGE = timedelta(days=365)  # the oldest modifiedSince Control Center accepts (errorCode 10000045)
START_MARGIN = timedelta(days=1)  # a first window starts this much inside the year: its pages take time
MAX_WINDOW_DAYS = 365  # the longest modifiedSince..modifiedTill span, as public integrations send it
MARK_LAG = timedelta(minutes=15)  # a REST mark stays this far behind the local clock
THROTTLED = "40000029"  # Control Center's "Rate Limit Exceeded", sent with HTTP 400
TOO_OLD = "10000045"  # "ModifiedSince cannot be more than one year old"
# REST name -> SOAP (TerminalType) name, added to REST records so mappings written for SOAP keep working.
REST_ALIASES: tuple[tuple[str, str], ...] = (
    ("dateUpdated", "dateModified"),
    ("fixedIPAddress", "fixedIpAddress"),
    ("msisdn", "_msisdn"),  # as the old (suds) connector named the SOAP attribute
    ("deviceID", "terminalId"),
    ("modemID", "modemId"),
    *((f"accountCustom{i}", f"custom{i}") for i in range(1, 11)),
)


# -- state file -------------------------------------------------------------------------------------


class StateFile:
    """The "modified since" mark of each section in one small JSON file (``{"jasper": "2026-…Z"}``).
    A legacy file holding one ISO timestamp line is read as the mark of every section."""

    def __init__(self, path: Path, section: str) -> None:
        self.path, self.section = path, section

    def _all(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SourceError(f"[{self.section}] cannot read the state file {self.path}: {exc.strerror}") from None
        if not text:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return data
        if parse_time(text.splitlines()[0]) is not None:  # the reference's one-line file
            return {"*": text.splitlines()[0].strip()}
        raise SourceError(
            f"[{self.section}] the state file {self.path} is not readable; delete it to load every SIM again"
        )

    def read(self) -> str | None:
        data = self._all()
        value = data.get(self.section, data.get("*"))
        return value if isinstance(value, str) and parse_time(value) is not None else None

    def write(self, value: str) -> None:
        data = {k: v for k, v in self._all().items() if k != "*"}
        data[self.section] = value
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SourceError(f"[{self.section}] cannot write the state file {self.path}: {exc.strerror}") from None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: directories cannot be opened; os.replace is atomic there anyway
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- values -----------------------------------------------------------------------------------------


def parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso_z(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def cc_time(value: datetime) -> str:
    """A request date as Control Center wants it: ``yyyy-MM-ddTHH:mm:ssZ`` (UTC, whole seconds)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rest_throttled(response: httpx.Response) -> bool:
    """Control Center's throttle answer: HTTP 400 with errorCode 40000029 (retried like a 429)."""
    return response.status_code == 400 and str(error_body(response).get("errorCode")) == THROTTLED


def windows(since: datetime, until: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    """``since``..``until`` cut into spans of at most ``size``; each starts a second before the previous
    one ends (whether Control Center's bounds are inclusive is not documented: no second is lost)."""
    spans: list[tuple[datetime, datetime]] = []
    start = since
    while start < until:
        end = min(start + size, until)
        spans.append((start, end))
        if end >= until:
            break
        start = end - timedelta(seconds=1)
    return spans


def plain(value: Any) -> Any:
    """zeep's values as JSON-ready data: nested objects → dicts, datetimes → ISO-8601 Z, decimals → text."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def terminal_record(terminal: Any) -> Record:
    from zeep.helpers import serialize_object

    record = plain(serialize_object(terminal, target_cls=dict))
    if not isinstance(record, dict):
        raise TypeError(type(record).__name__)
    record.pop("_value_1", None)  # xsd:any leftovers, if a schema has them
    if "msisdn" in record:
        record["_msisdn"] = record["msisdn"]  # the reference (suds) exposed the attribute like this
    return record


def rest_record(listed: dict[str, Any], detail: dict[str, Any]) -> Record:
    """A REST device: the list entry overlaid with its details, dates as ISO-8601 UTC (like the SOAP
    records), plus the SOAP names of renamed fields where the answer does not already have them."""
    record: Record = {**listed, **detail}
    for key, value in record.items():
        if key.startswith("date") and isinstance(value, str) and len(value.strip()) > 10:
            when = parse_time(value)  # "2026-11-02 14:22:31.000+0000" and "2026-11-02T14:22:31Z" alike
            if when is not None:
                record[key] = iso_z(when)
    for rest_name, soap_name in REST_ALIASES:
        if rest_name in record and soap_name not in record:
            record[soap_name] = record[rest_name]
    return record


def device_pages(size: int) -> PageNumber:
    """``GET /devices``: ``pageNumber`` from 1 with a fixed ``pageSize``, until ``lastPage`` is true or a
    page is empty (a server that omits ``lastPage`` is read until its first empty page)."""
    return PageNumber(
        size, items=at("devices"), first=1, last=at("lastPage"), page_param="pageNumber", size_param="pageSize"
    )


# -- the source -------------------------------------------------------------------------------------


class Jasper(Source):
    module = "jasper"
    mapping_name = "Jasper"
    record_type = "assets"
    # Set by each run (pages): whether it read to the end, and the newest modification time it saw.
    _complete: bool = False
    _newest: datetime | None = None
    _rest_mark: datetime | None = None
    summary = "Cisco IoT Control Center (Jasper) SIMs via the REST API or the SOAP Terminal API"
    settings = (
        Setting(
            "wsdl_path",
            DEFAULT_WSDL,
            help=(
                "SOAP: URL of the Terminal service WSDL; the endpoint is the WSDL's `soap:address`, so "
                "this also chooses the server (operators and regions publish their own hosts)"
            ),
        ),
        Setting(
            "username",
            None,
            example="username@example.com",
            help="Control Center user: REST HTTP Basic user name; SOAP WS-Security UsernameToken",
        ),
        Setting(
            "password",
            "",
            example="change-me",
            secret=True,
            help=(
                "SOAP (required): the user's password, sent as `PasswordText` (some deployments expect "
                "the user's API key here)"
            ),
        ),
        Setting(
            "api_token",
            "",
            example="YOUR Jasper API TOKEN",
            secret=True,
            help="SOAP (required): the account license key, sent as `licenseKey` in every request",
        ),
        Setting(
            "storage",
            "storage.db",
            kind=File(must_exist=False),
            help=(
                'the state file of the last "modified since" mark; a relative path is relative to the INI'
                " file's folder"
            ),
        ),
        Setting("details_per_call", "50", kind=Int(1, MAX_DETAILS), help="SOAP: ICCIDs per `GetTerminalDetails` call"),
        Setting(
            "api",
            "auto",
            choices=APIS,
            help=(
                "which API to speak: `rest`, `soap`, or `auto` = `rest` when `url` is set, else `soap` "
                "(existing SOAP files unchanged)"
            ),
        ),
        Setting(
            "url",
            "",
            kind=Url(),
            help=(
                "REST: the REST base, `https://<your Control Center REST host>/rws/api/v1` (the host "
                "differs per operator and region; a bare `https://<host>` gets `/rws/api/v1` added)"
            ),
        ),
        Setting(
            "api_key",
            "",
            example="YOUR Control Center API KEY",
            secret=True,
            help=(
                "REST (required): the user's API key (Account Settings), not the password, sent as the "
                "HTTP Basic password"
            ),
        ),
        Setting(
            "account_id",
            "",
            help=("REST: only SIMs of this numeric enterprise account id (`accountId`); empty: the user's account"),
        ),
        Setting(
            "page_size",
            str(REST_MAX_PAGE),
            kind=Int(1, REST_MAX_PAGE),
            help="REST: SIMs per list page (`pageSize`; 50 is the API's maximum)",
        ),
        Setting(
            "requests_per_second",
            "1",
            kind=Float(above=0, max=MAX_RATE),
            help=(
                "REST: cap on requests per second, list and detail calls together (Cisco does not publish its limits)"
            ),
        ),
        Setting(
            "window_days",
            "30",
            kind=Int(1, MAX_WINDOW_DAYS),
            help=(
                "REST: days of changes per listing window; the mark is saved after each window whose SIMs"
                " all reached Oomnitza"
            ),
        ),
    )

    @property
    def api(self) -> str:
        """``rest`` or ``soap``: the API this section speaks."""
        chosen = (self.setting("api") or "auto").strip().lower()
        if chosen == "auto":
            return "rest" if self.setting("url").strip() else "soap"
        return chosen

    def validate(self) -> None:
        if not self.setting("storage").strip():
            raise ConfigError(f"[{self.name}] storage must name the state file")
        if self.api == "rest":
            self._validate_rest()
        else:
            self._validate_soap()

    def _validate_soap(self) -> None:
        if not self.setting("wsdl_path").lower().startswith(("http://", "https://", "file:")):
            raise ConfigError(f"[{self.name}] wsdl_path must be the URL of Terminal.wsdl (e.g. {DEFAULT_WSDL})")
        missing = [n for n in ("password", "api_token") if not self.setting(n).strip()]
        if missing:
            raise ConfigError(
                f"[{self.name}] {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                "required for the SOAP Terminal API (api = soap); for the REST API set url and "
                "api_key instead"
            )

    def _validate_rest(self) -> None:
        where = f"[{self.name}]"
        if not self.setting("url").strip():  # a bad URL is reported by its declaration
            raise ConfigError(
                f"{where} url must be the Control Center REST base for api = rest, e.g. https://<host>{REST_PATH}"
            )
        if not self.setting("api_key").strip():
            raise ConfigError(
                f"{where} api_key is required for the REST API (Control Center: your user's "
                "Account Settings > API key; it is not the password)"
            )
        account = self.setting("account_id").strip()
        if account and not account.isdigit():
            raise ConfigError(f"{where} account_id must be the numeric enterprise account id")

    @property
    def rest_base(self) -> str:
        """``url`` as given; a bare host gets ``/rws/api/v1``."""
        parts = urlsplit(self.setting("url").strip())
        path = parts.path.rstrip("/") or REST_PATH
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    @property
    def state(self) -> StateFile:
        path = Path(self.setting("storage")).expanduser()
        if not path.is_absolute():
            path = Path(self.section.ini_path).resolve().parent / path
        return StateFile(path, self.name)

    # -- zeep, in worker threads ----------------------------------------------------------------
    def _soap_http(self) -> httpx.Client:
        """zeep's HTTP: the blocking twin of the shared layer (TLS settings, request_timeout, retries
        with back-off and ``Retry-After``, redacted logging). SOAP faults arrive as HTTP 500: not retried."""
        tls = self.section.tls()
        if not tls.verify:
            log.warning("[%s] verify_ssl = false: the Control Center certificate is not checked", self.name)
        return sync_client(
            name=f"[{self.name}]", tls=tls, timeout=self.section.http_timeout(), policy=SOAP_POLICY, max_connections=2
        )

    def _client(self, http: httpx.Client) -> Any:
        import zeep
        from zeep.wsse.username import UsernameToken

        settings = zeep.Settings(strict=False, xml_huge_tree=True)
        return zeep.Client(
            self.setting("wsdl_path"),
            transport=zeep_transport(http),
            settings=settings,
            wsse=UsernameToken(self.setting("username"), self.setting("password")),
        )

    def _fields(self, client: Any, element: str) -> set[str]:
        try:
            found = client.get_element(f"{{{SCHEMA_NS}}}{element}")
        except Exception:  # an unexpected WSDL: send only what every version has
            return set()
        return {name for name, _ in found.type.elements}

    def _base(self, fields: set[str]) -> dict[str, Any]:
        extra: dict[str, Any] = {"licenseKey": self.setting("api_token")}
        if "messageId" in fields:
            extra["messageId"] = str(uuid.uuid4())
        if "version" in fields:
            extra["version"] = "1.0"
        return extra

    def _modified(self, client: Any, since: datetime, page: int, fields: set[str]) -> tuple[list[str], int | None]:
        args = {**self._base(fields), "since": since}
        if "pageNumber" in fields:
            args["pageNumber"] = page
        answer = client.service.GetModifiedTerminals(**args)
        iccids = getattr(getattr(answer, "iccids", None), "iccid", None) or []
        total = getattr(answer, "totalPages", None) if "pageNumber" in fields else None
        return [str(i) for i in iccids], int(total) if total is not None else None

    def _details(self, client: Any, iccids: list[str], fields: set[str]) -> list[Any]:
        answer = client.service.GetTerminalDetails(**self._base(fields), iccids={"iccid": iccids})
        return list(getattr(getattr(answer, "terminals", None), "terminal", None) or [])

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, first: bool = False) -> T:
        """Run a blocking zeep step in a thread; turn its errors into one clear line."""
        from zeep.exceptions import Error as ZeepError
        from zeep.exceptions import Fault, TransportError

        try:
            return await asyncio.to_thread(fn, *args)
        except Fault as exc:
            text = _fault_text(exc)
            if first:
                raise SourceError(
                    f"[{self.name}] Control Center refused {what} (SOAP fault {text}): check "
                    "username, password and api_token (the license key)"
                ) from None
            raise SourceError(f"[{self.name}] Control Center answered {what} with a SOAP fault: {text}") from None
        except TransportError as exc:
            raise SourceError(f"[{self.name}] {what} failed: HTTP {exc.status_code} from Control Center") from None
        except httpx.TransportError as exc:
            found = CERT_REASON.search(str(exc))
            if found:
                raise SourceError(
                    f"[{self.name}] {what}: TLS certificate not trusted ({found.group(0).strip()}); set cacert_file "
                    "to its CA bundle, or verify_ssl = false"
                ) from None
            try:
                where = safe_url(exc.request.url)
            except RuntimeError:
                where = "Control Center"
            raise SourceError(f"[{self.name}] {what} failed: {classify_transport_error(exc, where)}") from None
        except (ZeepError, ValueError) as exc:  # unreadable WSDL/XML (lxml errors are ValueErrors)
            raise SourceError(f"[{self.name}] {what}: unexpected answer from Control Center ({_short(exc)})") from None

    # -- the run --------------------------------------------------------------------------------
    async def pages(self) -> AsyncIterator[Page]:
        self._complete, self._newest, self._rest_mark = False, None, None
        reader = self._rest_pages() if self.api == "rest" else self._soap_pages()
        async with contextlib.aclosing(reader) as pages:  # closed (connections too) when the run stops early
            async for page in pages:
                yield page
        self._complete = True

    def _since(self) -> datetime:
        since = parse_time(self.state.read() or DEFAULT_SINCE)
        assert since is not None
        log.info("[%s] SIMs modified after %s (%s API)", self.name, iso_z(since), self.api.upper())
        return since

    def _see(self, value: Any) -> None:
        """Remember the newest modification time of the run (stored by ``commit``)."""
        modified = parse_time(value) if isinstance(value, str) else None
        if modified is not None and (self._newest is None or modified > self._newest):
            self._newest = modified

    # -- REST -----------------------------------------------------------------------------------
    def _rest_start(self, now: datetime) -> datetime:
        """Where this run's first window starts: the stored mark, at most a year back."""
        oldest = now - MAX_AGE + START_MARGIN
        stored = self.state.read()
        mark = parse_time(stored) if stored else None
        if mark is None:
            log.info(
                "[%s] first run: SIMs changed since %s (REST API; Control Center lists changes of the last year only)",
                self.name,
                cc_time(oldest),
            )
            return oldest
        if mark < oldest:
            log.warning(
                "[%s] the stored mark %s is more than a year old and Control Center lists changes of the last "
                "year only: SIMs last changed before %s are not read again (api = soap can read them)",
                self.name,
                cc_time(mark),
                cc_time(oldest),
            )
            return oldest
        log.info("[%s] SIMs modified after %s (REST API)", self.name, cc_time(mark))
        return mark

    async def _rest_pages(self) -> AsyncGenerator[Page, None]:
        base = self.rest_base
        if base.lower().startswith("http://"):
            log.warning("[%s] url is http://: the API key travels unencrypted; use https://", self.name)
        now = datetime.now(UTC).replace(microsecond=0)
        start = self._rest_start(now)
        spans = windows(start, now, timedelta(days=int(self.setting("window_days"))))
        account = self.setting("account_id").strip()
        size = int(self.setting("page_size"))
        auth = basic(self.setting("username"), self.setting("api_key").strip())
        limiter = RateLimiter(per_second=float(self.setting("requests_per_second")))
        async with self.http(
            base_url=base,
            headers={"Accept": "application/json"},
            auth=auth,
            limiter=limiter,
            max_connections=1,  # one call at a time, as the REST catalog asks
            retry_if=rest_throttled,
        ) as http:
            if not spans:
                log.info("[%s] the stored mark is not in the past: nothing to read", self.name)
            try:
                for i, (since, till) in enumerate(spans):
                    params: dict[str, Any] = {"modifiedSince": cc_time(since), "modifiedTill": cc_time(till)}
                    if account:
                        params["accountId"] = account
                    async for page in self._rest_window(http, params, size):
                        yield page
                    # resume where the next window starts; the last one's end stays behind the clock
                    mark = spans[i + 1][0] if i + 1 < len(spans) else min(till, now - MARK_LAG)
                    await self._window_done(mark, start)
            except HttpAuthError as exc:
                raise SourceError(
                    f"[{self.name}] Control Center rejected the credentials ({exc.status}"
                    f"{_rest_error(exc)}): check username and api_key"
                ) from None
            except HttpError as exc:
                vendor = _rest_error(exc)
                if str(error_body(exc).get("errorCode")) == TOO_OLD:
                    raise SourceError(
                        f"[{self.name}] Control Center refused the listing window ({exc.status}{vendor}): it lists "
                        "changes of the last year only; the next run starts inside that year"
                    ) from None
                if not vendor:
                    raise
                raise SourceError(f"[{self.name}] {exc}:{vendor}") from None

    async def _rest_window(self, http: Http, params: dict[str, Any], size: int) -> AsyncIterator[Page]:
        """The SIMs changed in one window: the list pages, each SIM's details read one after another."""
        number = 0
        async for response in http.paginate(device_pages(size), "/devices", params=params):
            number += 1
            body = decode_json(response)
            devices = body.get("devices") if isinstance(body, dict) else None
            if not isinstance(devices, list):
                raise SourceError(f"[{self.name}] Control Center's device list (page {number}) has no 'devices' list")
            page: list[Any] = []
            for listed in devices:  # in list order: oldest change first
                if not _iccid(listed):
                    page.append(BadRecord("device list entry without an iccid", listed))
                    continue
                detail = await self._device(http, listed)
                if detail is not None:
                    page.append(detail)
            if page:
                yield page

    async def _window_done(self, mark: datetime, start: datetime) -> None:
        """A window was read: once its SIMs reached Oomnitza, save its end (never behind the start)."""
        mark = max(mark, start)
        self._rest_mark = mark
        if await self.ctx.delivered():
            self.state.write(cc_time(mark))
            log.info("[%s] SIMs changed up to %s are in Oomnitza (progress saved)", self.name, cc_time(mark))

    async def _device(self, http: Http, listed: dict[str, Any]) -> Record | BadRecord | None:
        iccid = _iccid(listed)
        response = await http.request("GET", f"/devices/{quote(iccid, safe='')}", ok_statuses=frozenset({404}))
        if response.status_code == 404:
            log.info(
                "[%s] SIM %s was listed but has no details (404%s); skipped", self.name, iccid, _rest_error(response)
            )
            return None
        try:
            detail = decode_json(response)
        except HttpError as exc:
            return BadRecord(f"details of SIM {iccid}: {exc}", {"iccid": iccid, "body": response.text[:500]})
        if not isinstance(detail, dict):
            return BadRecord(f"details of SIM {iccid} are not a JSON object", detail)
        return rest_record(listed, detail)

    # -- SOAP -----------------------------------------------------------------------------------
    async def _soap_pages(self) -> AsyncGenerator[Page, None]:
        self.ctx.redactor.add(self.setting("api_token"))
        url = self.setting("wsdl_path")
        if url.lower().startswith("http://"):
            log.warning(
                "[%s] wsdl_path is http://: the WSDL (and so the endpoint) can be altered in transit; use https://",
                self.name,
            )
        since = self._since()
        with self._soap_http() as http:
            async for page in self._soap_terminals(http, url, since):
                yield page

    async def _soap_terminals(self, http: httpx.Client, url: str, since: datetime) -> AsyncIterator[Page]:
        client = await self._call(f"loading the WSDL {url}", self._client, http)
        modified_fields = self._fields(client, "GetModifiedTerminalsRequest")
        detail_fields = self._fields(client, "GetTerminalDetailsRequest")
        per_call = int(self.setting("details_per_call"))
        page, first = 1, True
        while True:
            iccids, total_pages = await self._call(
                "GetModifiedTerminals", self._modified, client, since, page, modified_fields, first=first
            )
            first = False
            for start in range(0, len(iccids), per_call):
                terminals = await self._call(
                    "GetTerminalDetails", self._details, client, iccids[start : start + per_call], detail_fields
                )
                yield [self._record(t) for t in terminals]
            if not iccids or total_pages is None or page >= total_pages:
                break
            page += 1

    def _record(self, terminal: Any) -> Record | BadRecord:
        try:
            record = terminal_record(terminal)
        except (TypeError, ValueError) as exc:
            return BadRecord(f"terminal element not readable: {exc}", str(terminal))
        self._see(record.get("dateModified"))
        return record

    def reads_everything(self) -> bool:
        return False  # only the SIMs modified since the stored mark

    async def commit(self) -> None:
        """After a complete, fully uploaded run: remember the end of the last REST window, or the newest
        ``dateModified`` a SOAP run saw."""
        if not getattr(self, "_complete", False):
            return
        if self._rest_mark is not None:
            self.state.write(cc_time(self._rest_mark))
            log.info("[%s] next run reads SIMs modified after %s", self.name, cc_time(self._rest_mark))
        elif self._newest is not None:
            self.state.write(iso_z(self._newest))
            log.info("[%s] next run reads SIMs modified after %s", self.name, iso_z(self._newest))


# SOAP faults arrive as HTTP 500 and are never retried; both operations only read, so a POST that
# timed out or met a 502/503/504 is sent again.
SOAP_POLICY = RetryPolicy(attempts=6, connect_attempts=2, retry_statuses=frozenset({429, 502, 503, 504}))


def zeep_transport(http: httpx.Client) -> Any:
    """A zeep transport on our blocking client: zeep's own builds a ``requests`` session."""
    from zeep.exceptions import TransportError
    from zeep.transports import Transport

    class HttpxTransport(Transport):
        def __init__(self) -> None:  # not Transport.__init__: it would build a requests session
            self.cache = None
            self.load_timeout = self.operation_timeout = None  # the client's (request_timeout)
            self.logger = logging.getLogger("zeep.transports")
            self._close_session = False

        def load(self, url: str) -> bytes:
            if not url:
                raise ValueError("No url given to load")
            if urlsplit(url).scheme in ("http", "https"):
                response = http.get(url)
                if response.status_code >= 400:
                    raise TransportError(f"HTTP {response.status_code}", status_code=response.status_code)
                return response.content
            return Path(url.removeprefix("file://")).expanduser().read_bytes()

        def post(self, address: str, message: Any, headers: Any) -> httpx.Response:
            # GetModifiedTerminals and GetTerminalDetails only read: repeating them is safe
            return http.post(address, content=message, headers=headers, extensions=retry_options(idempotent=True))

        def get(self, address: str, params: Any, headers: Any) -> httpx.Response:
            return http.get(address, params=params, headers=headers)

    return HttpxTransport()


def _fault_text(exc: Any) -> str:
    code = str(exc.code or "").rpartition(":")[2]
    parts = [p for p in (code, str(exc.message or "").strip()) if p]
    detail = exc.detail
    if detail is not None:
        text = " ".join(t.strip() for t in detail.itertext() if t.strip())
        if text:
            parts.append(text)
    return " ".join(parts) or "no details"


def _iccid(entry: Any) -> str:
    value = entry.get("iccid") if isinstance(entry, dict) else None
    return str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""


def _rest_error(error: HttpError | httpx.Response) -> str:
    """Control Center's ``{"errorMessage": ..., "errorCode": ...}`` as " <message>, errorCode <code>"."""
    body = error_body(error)
    message, code = body.get("errorMessage"), body.get("errorCode")
    parts = [" ".join(str(message).split())[:300]] if message else []
    if code not in (None, ""):
        parts.append(f"errorCode {code}")
    return f" {', '.join(parts)}" if parts else ""


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
