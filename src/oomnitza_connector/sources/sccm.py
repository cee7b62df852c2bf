"""``[sccm]``: computers of a Microsoft Configuration Manager site, read from the site database's
reporting views (``dbo.v_GS_*``, ``v_R_System``, ``v_UserMachineRelationship``).

Drivers (the ``driver`` setting):
- empty: the newest installed ``ODBC Driver N for SQL Server`` through ``pyodbc`` (else the legacy
  Windows ``SQL Server`` driver); when there is no ODBC driver manager or no SQL Server ODBC driver,
  ``pymssql`` (FreeTDS inside the wheel: nothing to install besides pip);
- an exact ODBC driver name; ``pymssql`` to force the pure-pip driver;
- ``sqlite`` (for tests and demos only): ``server`` is the path of an SQLite file holding tables
  named like the views, attached as ``dbo`` so the production SQL runs unchanged.

Both libraries are blocking: every call runs in a worker thread (``asyncio.to_thread``). The main
query is streamed with ``fetchmany`` (``chunk_size`` rows at a time, never fetched whole) and the
software of each chunk comes from one query over the chunk's ids (not one query per computer), on a
second connection so the streaming result stays open. A failing query fails the run: never zero
records or empty software lists reported as success.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SourceError
from ..settings import Int, Setting
from . import sccm_queries as q
from .base import Record, Source

log = logging.getLogger(__name__)

AUTH_CHOICES = ("SQL Server", "Windows")
ENCRYPT_CHOICES = ("yes", "no", "strict")
ODBC_DOWNLOAD = "https://learn.microsoft.com/sql/connect/odbc/download-odbc-driver-for-sql-server"
MODERN_ODBC = re.compile(r"^ODBC Driver (\d+) for SQL Server$")
LEGACY_ODBC = "SQL Server"
MAX_CHUNK = 1000  # the software query binds each id twice: stay under SQL Server's 2,100 parameters
FREETDS_PREFIX = re.compile(r"DB-Lib error message \d+, severity \d+:")
LOGIN_FAILED = ("[28000]", "Login failed for user", "(18456)")


def choose_odbc_driver(installed: Iterable[str], wanted: str = "") -> str:
    """The ODBC driver to use: ``wanted`` if installed, else the newest ``ODBC Driver N for SQL Server``
    (by number, so 18 beats 9), else the legacy ``SQL Server``; ConfigError when nothing fits."""
    names = list(installed)
    if wanted:
        if wanted in names:
            return wanted
        listed = ", ".join(names) or "none"
        raise ConfigError(f"driver = {wanted!r} is not an installed ODBC driver; installed: {listed}")
    modern = [(int(m.group(1)), name) for name in names if (m := MODERN_ODBC.match(name))]
    if modern:
        return max(modern)[1]
    if LEGACY_ODBC in names:
        return LEGACY_ODBC
    raise ConfigError(f"no ODBC driver for SQL Server is installed; install one from {ODBC_DOWNLOAD}")


def odbc_value(value: str) -> str:
    """A connection-string value, braced when it holds ``;``, ``{``, ``}``, ``=`` or edge spaces."""
    if value and not re.search(r"[;{}=]", value) and value == value.strip():
        return value
    return "{" + value.replace("}", "}}") + "}"


def db_message(exc: BaseException) -> str:
    """A DB-API error as one line (pyodbc: (sqlstate, text); pymssql: (code, bytes); sqlite3: (text,))."""
    args = list(exc.args)
    if len(args) == 1 and isinstance(args[0], tuple):  # pymssql wraps (number, text) in one argument
        args = list(args[0])
    if len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], str) and args[1].startswith("["):
        args = [args[1]]  # pyodbc repeats the SQLSTATE inside the text
    parts = []
    for arg in args:
        if isinstance(arg, bytes):
            arg = arg.decode("utf-8", "replace")
        parts.append(str(arg))
    if len(parts) == 2 and parts[0].isdigit():  # pymssql: (number, text); the number may be a stale one
        parts = [parts[1] or parts[0]]
    text = " ".join(" ".join(parts).split())
    if "DB-Lib error message" in text:  # FreeTDS: several numbered messages, often repeated
        pieces = [p.strip() for p in FREETDS_PREFIX.split(text)]
        pieces = [p for p in pieces if p and not p.startswith("General SQL Server error")]
        text = "; ".join(dict.fromkeys(pieces))
    return text or type(exc).__name__


@dataclass
class Dialect:
    """The few things that differ between the engines; the SQL text itself is shared."""

    name: str
    qmark: bool
    error: type[BaseException] | tuple[type[BaseException], ...]
    catalogue: str  # lists the dbo tables/views; one '?' per name asked for is appended

    def sql(self, text: str) -> str:
        return text if self.qmark else text.replace("%", "%%").replace("?", "%s")


MSSQL_CATALOGUE = "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = 'dbo' AND TABLE_NAME IN ({})"
SQLITE_CATALOGUE = "SELECT name FROM dbo.sqlite_master WHERE type IN ('table', 'view') AND name IN ({})"


class SiteDb:
    """Two connections to the site database (one streams the main query, one answers the software
    queries). Blocking: call every method through ``asyncio.to_thread``."""

    def __init__(self, connect: Callable[[], Any], dialect: Dialect) -> None:
        self.dialect = dialect
        self.main = connect()
        try:
            self.aux = connect()
        except BaseException:
            self.main.close()
            raise
        self.cursor: Any = None

    def present_views(self, names: Iterable[str]) -> set[str]:
        names = list(names)
        cur = self.aux.cursor()
        try:
            cur.execute(self.dialect.sql(self.dialect.catalogue.format(", ".join("?" * len(names)))), tuple(names))
            return {str(row[0]).lower() for row in cur.fetchall()}
        finally:
            cur.close()

    def start(self, sql: str) -> list[str]:
        self.cursor = self.main.cursor()
        self.cursor.execute(self.dialect.sql(sql))
        return [d[0] for d in self.cursor.description]

    def fetch(self, size: int) -> list[Any]:
        return list(self.cursor.fetchmany(size))

    def software(self, ids: list[Any]) -> list[Any]:
        cur = self.aux.cursor()
        try:
            cur.execute(self.dialect.sql(q.software_query(len(ids))), tuple(ids) * 2)
            return list(cur.fetchall())
        finally:
            cur.close()

    def close(self) -> None:
        for closer in (getattr(self.cursor, "close", None), self.main.close, self.aux.close):
            if closer is None:
                continue
            try:
                closer()
            except Exception as exc:  # closing a broken connection must not hide the real error
                log.debug("closing the SCCM connection: %s", exc)


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """Driver-neutral values: ``last_logon`` a datetime (SQLite returns text), bits as booleans."""
    when = row.get("last_logon")
    if isinstance(when, str) and when.strip():
        try:
            row["last_logon"] = datetime.fromisoformat(when.strip())
        except ValueError:
            pass
    if row.get("antivirus_enabled") is not None and not isinstance(row["antivirus_enabled"], bool):
        row["antivirus_enabled"] = bool(row["antivirus_enabled"])
    return row


class Sccm(Source):
    module = "sccm"
    mapping_name = "SCCM"
    record_type = "assets"
    summary = "Microsoft Configuration Manager (SCCM) computers from the site database"
    settings = (
        Setting(
            "server",
            None,
            example="server.example.com",
            help=("SQL Server of the site database: `host`, `host\\INSTANCE` or `host,port` (e.g. `sql01,1433`)"),
        ),
        Setting("database", "CM_DCT", help="the site database, normally `CM_<site code>` (e.g. `CM_P01`)"),
        Setting(
            "username",
            "",
            example="change-me",
            help="SQL login; required with `authentication = SQL Server`, not needed with `Windows`",
        ),
        Setting("password", "", example="change-me", secret=True, help="that login's password"),
        Setting(
            "authentication",
            "SQL Server",
            choices=AUTH_CHOICES,
            help="`SQL Server` (the login above) or `Windows` (the account running the connector)",
        ),
        Setting(
            "driver",
            "",
            help=(
                "empty: the newest installed `ODBC Driver N for SQL Server` (via pyodbc), else the legacy"
                " Windows `SQL Server` driver, else pymssql; an exact ODBC driver name; or `pymssql` "
                "(`sqlite` is for tests only)"
            ),
        ),
        Setting(
            "encrypt",
            "yes",
            choices=ENCRYPT_CHOICES,
            help=(
                "TLS to SQL Server: `yes`, `no` or `strict` (ODBC Driver 18+); `verify_ssl = false` adds "
                "`TrustServerCertificate=yes`"
            ),
        ),
        Setting("login_timeout", "30", kind=Int(min=0), help="seconds to connect and log in"),
        Setting("query_timeout", "600", kind=Int(min=0), help="seconds a query may run (`0` = no limit)"),
        Setting("chunk_size", "500", kind=Int(1, MAX_CHUNK), help="computers read per round trip"),
    )
    default_mappings = {"APPLICATIONS": {"source": "software"}}
    default_converters = {"hardware.last_logon": "date_format"}

    def validate(self) -> None:
        sql_auth = self.setting("authentication") == "SQL Server"
        if (
            sql_auth
            and self.setting("driver") != "sqlite"
            and not (self.setting("username") and self.setting("password"))
        ):
            raise ConfigError(
                f"[{self.name}] authentication = SQL Server needs username and password "
                "(or set authentication = Windows)"
            )

    # -- connecting -------------------------------------------------------------------------------
    def _connector(self) -> tuple[Callable[[], Any], Dialect, str]:
        """(connect function, dialect, description of the driver) for the ``driver`` setting."""
        wanted = self.setting("driver").strip()
        if wanted == "sqlite":
            return self._sqlite()
        if wanted == "pymssql":
            return self._pymssql(required=True)  # type: ignore[return-value]
        try:
            import pyodbc  # imported here: needs the unixODBC/Windows driver manager
        except ImportError as exc:
            if wanted:
                raise ConfigError(
                    f"[{self.name}] driver = {wanted!r} needs pyodbc and an ODBC driver "
                    f"manager ({exc}); install unixODBC, or set driver = pymssql"
                ) from None
            log.info("[%s] pyodbc cannot be used (%s); trying pymssql", self.name, exc)
            return self._pymssql(required=True)  # type: ignore[return-value]
        try:
            name = choose_odbc_driver(pyodbc.drivers(), wanted)
        except ConfigError as exc:
            if wanted:
                raise ConfigError(f"[{self.name}] {exc}") from None
            fallback = self._pymssql(required=False)
            if fallback is None:
                raise ConfigError(f"[{self.name}] {exc}, or pip install pymssql") from None
            log.info("[%s] pyodbc finds no ODBC driver for SQL Server; using pymssql", self.name)
            return fallback
        if name == LEGACY_ODBC:
            log.warning(
                "[%s] using the legacy Windows 'SQL Server' ODBC driver: it cannot talk TLS 1.2 to "
                "current servers; install Microsoft ODBC Driver 18 for SQL Server",
                self.name,
            )
        conn_str = self._odbc_string(name)

        def connect() -> Any:
            conn = pyodbc.connect(conn_str, timeout=int(self.setting("login_timeout")), readonly=True)
            conn.timeout = int(self.setting("query_timeout"))
            return conn

        return connect, Dialect("odbc", True, pyodbc.Error, MSSQL_CATALOGUE), f"ODBC driver '{name}'"

    def _odbc_string(self, driver: str) -> str:
        parts = [
            f"DRIVER={{{driver.replace('}', '}}')}}}",
            f"SERVER={odbc_value(self.setting('server'))}",
            f"DATABASE={odbc_value(self.setting('database'))}",
        ]
        if self.setting("authentication") == "Windows":
            parts.append("Trusted_Connection=yes")
        else:
            parts += [
                f"UID={odbc_value(self.setting('username'))}",
                "PWD={" + self.setting("password").replace("}", "}}") + "}",
            ]
        parts.append(f"Encrypt={self.setting('encrypt')}")
        if "freetds" in driver.lower():  # FreeTDS's ODBC driver has its own keyword for it
            parts.append(f"Encryption={'off' if self.setting('encrypt') == 'no' else 'require'}")
        if not self.section.flag("verify_ssl"):
            parts.append("TrustServerCertificate=yes")
        parts.append("APP=oomnitza-connector")
        return ";".join(parts)

    def _pymssql(self, *, required: bool) -> tuple[Callable[[], Any], Dialect, str] | None:
        try:
            import pymssql
        except ImportError:
            if not required:
                return None
            raise ConfigError(
                f"[{self.name}] no SQL Server driver is usable: install Microsoft ODBC Driver 18 "
                f"for SQL Server ({ODBC_DOWNLOAD}) and pyodbc, or pip install pymssql"
            ) from None
        server, port = self.setting("server"), "1433"
        if "," in server:  # host,port as in ODBC
            server, _, port = server.partition(",")
        windows = self.setting("authentication") == "Windows"
        user = self.setting("username") if not windows or self.setting("password") else None
        options: dict[str, Any] = {
            "server": server.strip(),
            "port": port.strip(),
            "database": self.setting("database"),
            "user": user or None,
            "password": (self.setting("password") or None) if user else None,
            "login_timeout": int(self.setting("login_timeout")),
            "timeout": int(self.setting("query_timeout")),
            "appname": "oomnitza-connector",
            "encryption": "off" if self.setting("encrypt") == "no" else "require",
        }

        def connect() -> Any:
            return pymssql.connect(**options)

        return connect, Dialect("pymssql", False, pymssql.Error, MSSQL_CATALOGUE), "pymssql (FreeTDS)"

    def _sqlite(self) -> tuple[Callable[[], Any], Dialect, str]:
        path = Path(self.setting("server")).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"[{self.name}] driver = sqlite: server must be the path of an SQLite file (not found: {path})"
            )

        def connect() -> Any:
            conn = sqlite3.connect(":memory:", check_same_thread=False, uri=True)
            conn.execute("ATTACH DATABASE ? AS dbo", (f"{path.resolve().as_uri()}?mode=ro",))
            return conn

        log.warning("[%s] driver = sqlite reads %s: a test fixture, not an SCCM site database", self.name, path)
        return connect, Dialect("sqlite", True, sqlite3.Error, SQLITE_CATALOGUE), "SQLite (test fixture)"

    def _connect_error(self, exc: BaseException, driver: str) -> SourceError:
        text = db_message(exc)
        where = f"{self.setting('server')}/{self.setting('database')}"
        if any(mark in text for mark in LOGIN_FAILED):
            if self.setting("authentication") == "Windows":
                hint = "check that the account running the connector (its Kerberos ticket) may log in"
            else:
                hint = "check username and password"
            return SourceError(f"[{self.name}] SQL Server {where} rejected the login ({text}): {hint}")
        if "certificate" in text.lower():
            return SourceError(
                f"[{self.name}] cannot connect to SQL Server {where}: {text}; install a trusted "
                "certificate on the server, or set verify_ssl = false to trust it as it is"
            )
        hint = ""
        if driver.startswith("pymssql") and self.setting("encrypt") != "no":
            hint = " (if the server is reachable, it may not offer TLS, which encrypt = yes requires)"
        return SourceError(f"[{self.name}] cannot connect to SQL Server {where} with {driver}: {text}{hint}")

    def _query_hint(self, text: str) -> str:
        """The driver's message, plus what to do when SQL Server refused the read (error 229)."""
        if "permission was denied" in text.lower():
            return (
                f"{text}; grant the login db_datareader on {self.setting('database')} "
                "(or ConfigMgr's smsschm_users role)"
            )
        return text

    # -- reading ----------------------------------------------------------------------------------
    async def pages(self) -> AsyncIterator[list[Record]]:
        connect, dialect, driver = self._connector()
        try:
            db = await asyncio.to_thread(SiteDb, connect, dialect)
        except dialect.error as exc:
            raise self._connect_error(exc, driver) from None
        log.info("[%s] connected to %s/%s with %s", self.name, self.setting("server"), self.setting("database"), driver)
        try:
            async for page in self._read(db):
                yield page
        finally:
            await asyncio.to_thread(db.close)

    async def _read(self, db: SiteDb) -> AsyncIterator[list[Record]]:
        error = db.dialect.error
        try:
            present = await asyncio.to_thread(db.present_views, q.OPTIONAL_VIEWS)
        except error as exc:
            raise SourceError(
                f"[{self.name}] cannot list the views of {self.setting('database')}: {db_message(exc)}"
            ) from None
        for view, column in q.OPTIONAL_COLUMNS.items():
            if view.lower() not in present:
                log.warning(
                    "[%s] dbo.%s is not in the site database (its inventory class is off): %s is null",
                    self.name,
                    view,
                    column,
                )
        try:
            columns = await asyncio.to_thread(db.start, q.main_query(present))
        except error as exc:
            raise SourceError(f"[{self.name}] the hardware query failed: {self._query_hint(db_message(exc))}") from None
        chunk = int(self.setting("chunk_size"))
        last_id: Any = None
        while True:
            try:
                rows = await asyncio.to_thread(db.fetch, chunk)
            except error as exc:
                raise SourceError(f"[{self.name}] reading the hardware rows failed: {db_message(exc)}") from None
            if not rows:
                return
            hardware: list[dict[str, Any]] = []
            for row in rows:
                item = normalise(dict(zip(columns, row, strict=True)))
                if item["resource_id"] == last_id:
                    continue  # a view with two rows for one computer: keep the first
                last_id = item["resource_id"]
                hardware.append(item)
            ids = [h["resource_id"] for h in hardware]
            try:
                software_rows = await asyncio.to_thread(db.software, ids)
            except error as exc:
                raise SourceError(f"[{self.name}] the software query failed: {db_message(exc)}") from None
            software: dict[Any, list[dict[str, Any]]] = {}
            for rid, name, version, publisher in software_rows:
                software.setdefault(rid, []).append(
                    {"name": name, "version": version, "publisher": publisher, "path": None}
                )
            yield [{"hardware": h, "software": software.get(h["resource_id"], [])} for h in hardware]
