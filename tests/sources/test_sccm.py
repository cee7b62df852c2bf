"""[sccm] end to end through the CLI: the production SQL runs on a real engine (SQLite, attached as
``dbo``) loaded with SCCM-shaped tables from tests/fixtures/sccm, selected by ``driver = sqlite``."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from oomnitza_connector.errors import ConfigError
from oomnitza_connector.sources.sccm import choose_odbc_driver, db_message, odbc_value
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.sccm import FakeSqlServer
from tests.helpers import require
from tests.sourcekit import assert_accounted, assert_one_line_error, upload, write_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sccm"
MAPPINGS = {
    "SERIAL_NUMBER": "hardware.serial_number",
    "NAME": "hardware.computer_name",
    "CPU": "hardware.cpu",
    "HDD": "hardware.hdd_total_mb",
    "IP": "hardware.ipv4_address",
    "MAC": "hardware.mac_address",
    "MEMORY": "hardware.memory_total_kb",
    "LAST_LOGON": "hardware.last_logon",
    "ENCRYPTED": "hardware.c_drive_encrypted",
    "ANTIVIRUS": "hardware.antivirus_enabled",
    "PRIMARY_USER": "hardware.primary_user",
    "OS": "hardware.os_version",
    "RESOURCE_ID": "hardware.resource_id",
}


def site_db(tmp_path: Path, *extra: str, data: bool = True) -> Path:
    """An SQLite file with the SCCM-shaped tables (schema.sql, data.sql, then ``extra`` statements)."""
    path = tmp_path / "site.db"
    path.unlink(missing_ok=True)
    con = sqlite3.connect(":memory:")
    con.execute("ATTACH DATABASE ? AS dbo", (str(path),))
    script = (FIXTURES / "schema.sql").read_text(encoding="utf-8")
    if data:
        script += (FIXTURES / "data.sql").read_text(encoding="utf-8")
    con.executescript(script + "\n".join(extra))
    con.commit()
    con.close()
    return path


def run(tmp_path: Path, oomnitza: FakeOomnitza, db: Path, **extra: str):  # type: ignore[no-untyped-def]
    settings = {"server": str(db), "driver": "sqlite", "sync_field": "NAME", **extra}
    return upload(write_config(tmp_path, oomnitza, "sccm", settings, MAPPINGS), "sccm")


def more_computers(first: int, count: int) -> list[str]:
    sql = []
    for rid in range(first, first + count):
        sql.append(
            f"INSERT INTO dbo.v_GS_COMPUTER_SYSTEM VALUES ({rid}, 1, 'PC-{rid}', 'CORP', 'Lenovo', "
            f"'ThinkPad T14', 'x64-based PC', 'CORP\\u{rid}');"
        )
        sql.append(f"INSERT INTO dbo.v_GS_PC_BIOS VALUES ({rid}, 1, 'SN{rid}');")
        sql.append(f"INSERT INTO dbo.v_GS_DISK VALUES ({rid}, 1, 512000);")
        sql.append(f"INSERT INTO dbo.v_GS_ADD_REMOVE_PROGRAMS VALUES ({rid}, 1, 'App of {rid}', '1.{rid}', 'Acme');")
        sql.append(f"INSERT INTO dbo.v_GS_ADD_REMOVE_PROGRAMS_64 VALUES ({rid}, 1, 'Tool64', '2.0', 'Acme');")
    return sql


def test_fixture_one_record_per_computer(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, site_db(tmp_path))
    assert result.code == 0, result.all
    # two disks x two adapters x two active users gave the reference 8 rows for WKS-0042; we send 1
    assert_accounted(result, "sccm", pulled=2, sent=2)
    rec = fake_oomnitza.record("assets", NAME="WKS-0042")
    assert rec == {
        "SERIAL_NUMBER": "7XK2P93",
        "NAME": "WKS-0042",
        "CPU": "13th Gen Intel(R) Core(TM) i7-1365U",  # the first processor instance only
        "HDD": 476940 + 953867,  # both physical disks
        "IP": "10.20.30.42,fe80::1c2d:3e4f:5a6b:7c8d",  # the adapter with a default gateway
        "MAC": "B0:7B:25:AA:BB:CC",
        "MEMORY": 33275780,
        "LAST_LOGON": int(datetime(2026, 11, 24, 8, 1, 2, tzinfo=UTC).timestamp()),  # date_format by default
        "ENCRYPTED": 1,  # the C: volume, not D:
        "ANTIVIRUS": True,
        "PRIMARY_USER": "corp\\jdoe",  # active, newest; not the inactive one
        "OS": "Microsoft Windows 11 Enterprise",
        "RESOURCE_ID": 16777220,
        "APPLICATIONS": [  # UNION removed the duplicate, the nameless row is dropped
            {"name": "7-Zip 23.01 (x64)", "version": "23.01", "publisher": "Igor Pavlov", "path": None},
            {"name": "Microsoft Edge", "version": "131.0.2903.70", "publisher": "Microsoft Corporation", "path": None},
        ],
    }
    kiosk = fake_oomnitza.record("assets", NAME="KIOSK-07")
    assert kiosk["SERIAL_NUMBER"] == "CZC0FAKE77"
    assert kiosk["APPLICATIONS"] == []
    assert kiosk.get("CPU") is None and kiosk.get("PRIMARY_USER") is None and kiosk.get("ANTIVIRUS") is None
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "SCCM"


def test_streams_in_chunks_with_software_per_chunk(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    db = site_db(tmp_path, *more_computers(20000000, 9))
    result = run(tmp_path, fake_oomnitza, db, chunk_size="4")
    assert result.code == 0, result.all
    assert_accounted(result, "sccm", pulled=11, sent=11)
    for rid in (20000000, 20000003, 20000004, 20000008):  # first/last of chunks: software not mixed up
        rec = fake_oomnitza.record("assets", NAME=f"PC-{rid}")
        assert [a["name"] for a in rec["APPLICATIONS"]] == [f"App of {rid}", "Tool64"], rid
    assert len(fake_oomnitza.record("assets", NAME="WKS-0042")["APPLICATIONS"]) == 2


def test_duplicate_rows_in_a_one_to_one_view_across_a_chunk_edge(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    # a second BIOS row for WKS-0042 (re-inventory glitch): still one record, the first row wins
    db = site_db(tmp_path, "INSERT INTO dbo.v_GS_PC_BIOS VALUES (16777220, 2, '7XK2P93-B');")
    result = run(tmp_path, fake_oomnitza, db, chunk_size="1")
    assert result.code == 0, result.all
    assert_accounted(result, "sccm", pulled=2, sent=2)
    assert fake_oomnitza.record("assets", NAME="WKS-0042")["SERIAL_NUMBER"] in ("7XK2P93", "7XK2P93-B")


def test_missing_required_view_fails_the_run(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    db = site_db(tmp_path, "DROP TABLE dbo.v_GS_PC_BIOS;")
    result = run(tmp_path, fake_oomnitza, db)
    assert_one_line_error(result, "the hardware query failed", "v_GS_PC_BIOS")
    assert_accounted(result, "sccm", pulled=0)
    assert fake_oomnitza.records("assets") == []  # not "success with zero records"


def test_optional_views_missing_give_nulls(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    db = site_db(tmp_path, "DROP TABLE dbo.v_GS_AntimalwareHealthStatus;", "DROP TABLE dbo.v_GS_ENCRYPTABLE_VOLUME;")
    result = run(tmp_path, fake_oomnitza, db)
    assert result.code == 0, result.all
    assert_accounted(result, "sccm", pulled=2, sent=2)
    assert "dbo.v_GS_AntimalwareHealthStatus is not in the site database" in result.err
    rec = fake_oomnitza.record("assets", NAME="WKS-0042")
    assert rec.get("ANTIVIRUS") is None and rec.get("ENCRYPTED") is None
    assert rec["CPU"] == "13th Gen Intel(R) Core(TM) i7-1365U"


def test_failing_software_query_fails_instead_of_sending_empty_software(
    tmp_path: Path, fake_oomnitza: FakeOomnitza
) -> None:
    db = site_db(tmp_path, "DROP TABLE dbo.v_GS_ADD_REMOVE_PROGRAMS_64;")
    result = run(tmp_path, fake_oomnitza, db)
    assert_one_line_error(result, "the software query failed", "v_GS_ADD_REMOVE_PROGRAMS_64")
    assert_accounted(result, "sccm", pulled=0)
    assert fake_oomnitza.records("assets") == []


def test_empty_site(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, site_db(tmp_path, data=False))
    assert result.code == 0, result.all
    assert_accounted(result, "sccm", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_not_a_database(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"<html>this is not a site database</html>" * 200)
    result = run(tmp_path, fake_oomnitza, garbage)
    assert_one_line_error(result, "[sccm]", "file is not a database")
    assert fake_oomnitza.records("assets") == []


def test_record_count_stops_early(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    db = site_db(tmp_path, *more_computers(30000000, 8))
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "sccm",
        {"server": str(db), "driver": "sqlite", "sync_field": "NAME", "chunk_size": "3"},
        MAPPINGS,
    )
    result = upload(ini, "sccm", "--record-count", "4")
    assert result.code == 0, result.all
    assert_accounted(result, "sccm", pulled=4, sent=4)


def test_sql_auth_needs_credentials(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, site_db(tmp_path), driver="")
    assert_one_line_error(result, "authentication = SQL Server needs username and password")


def test_unreachable_server_falls_back_to_pymssql(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    """Auto driver choice on a machine without an ODBC SQL Server driver takes pymssql (pure pip)."""
    require(_importable("pymssql"), "pymssql is not installed")
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    choices = {
        "server": f"127.0.0.1,{port}",
        "driver": "",
        "username": "oomnitza_ro",
        "password": "Secr3t;}pw",
        "login_timeout": "3",
    }
    result = run(tmp_path, fake_oomnitza, Path("unused"), **choices)
    assert_one_line_error(result, f"cannot connect to SQL Server 127.0.0.1,{port}/CM_DCT with ")
    if not _odbc_usable():
        assert "with pymssql (FreeTDS)" in result.err
    assert "Secr3t" not in result.all


def test_login_failed_is_one_clear_line(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    """A real driver (pymssql/FreeTDS) against a fake SQL Server speaking TDS that refuses the login."""
    require(_importable("pymssql"), "pymssql is not installed")
    sql = FakeSqlServer()
    with sql.serve() as port:
        choices = {
            "server": f"127.0.0.1,{port}",
            "database": "CM_P01",
            "driver": "pymssql",
            "username": "oomnitza_ro",
            "password": "Wr0ng;}pass",
            "encrypt": "no",
        }
        result = run(tmp_path, fake_oomnitza, Path("unused"), **choices)
    assert_one_line_error(
        result,
        f"SQL Server 127.0.0.1,{port}/CM_P01 rejected the login (Login failed for user 'oomnitza_ro'.",
        "): check username and password",
    )
    assert "Wr0ng" not in result.all
    assert len(sql.logins) == 1  # not retried
    login = sql.logins[0]
    assert (login["user"], login["password"], login["database"], login["app"]) == (
        "oomnitza_ro",
        "Wr0ng;}pass",
        "CM_P01",
        "oomnitza-connector",
    )
    assert fake_oomnitza.records("assets") == []


def test_login_failed_through_odbc(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    """The pyodbc path with a real ODBC driver (FreeTDS's, Debian package tdsodbc) and the fake TDS server."""
    require(_importable("pyodbc"), "pyodbc cannot be loaded (is unixODBC installed?)")
    import pyodbc

    require("FreeTDS" in pyodbc.drivers(), "the FreeTDS ODBC driver (tdsodbc) is not installed")
    sql = FakeSqlServer()
    with sql.serve() as port:
        choices = {
            "server": f"127.0.0.1,{port}",
            "database": "CM_P01",
            "driver": "FreeTDS",
            "username": "oomnitza_ro",
            "password": "Wr0ng;pass",
            "encrypt": "no",
        }
        result = run(tmp_path, fake_oomnitza, Path("unused"), **choices)
        assert_one_line_error(
            result,
            f"SQL Server 127.0.0.1,{port}/CM_P01 rejected the login ([42000] [FreeTDS]"
            "[SQL Server]Login failed for user 'oomnitza_ro'. (18456)",
            "check username and password",
        )
        assert "Wr0ng" not in result.all
        assert [(x["user"], x["password"], x["app"]) for x in sql.logins] == [
            ("oomnitza_ro", "Wr0ng;pass", "oomnitza-connector")
        ]
        # encrypt = yes (the default): FreeTDS must not log in to a server without TLS
        result = run(tmp_path, fake_oomnitza, Path("unused"), **{**choices, "encrypt": "yes"})
        assert_one_line_error(
            result, f"cannot connect to SQL Server 127.0.0.1,{port}/CM_P01", "with ODBC driver 'FreeTDS'"
        )
        assert len(sql.logins) == 1
    assert fake_oomnitza.records("assets") == []


def test_encryption_required_by_default(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    """encrypt = yes (the default): a server without TLS never sees the password."""
    require(_importable("pymssql"), "pymssql is not installed")
    sql = FakeSqlServer()
    with sql.serve() as port:
        result = run(
            tmp_path,
            fake_oomnitza,
            Path("unused"),
            server=f"127.0.0.1,{port}",
            driver="pymssql",
            username="oomnitza_ro",
            password="Secr3t-pw",
        )
    assert_one_line_error(result, f"cannot connect to SQL Server 127.0.0.1,{port}/CM_DCT with pymssql")
    assert sql.prelogins == 1 and sql.logins == []


def _odbc_usable() -> bool:
    try:
        import pyodbc
    except ImportError:
        return False
    return any("SQL Server" in name for name in pyodbc.drivers())


# -- pure helpers -----------------------------------------------------------------------------------


def test_driver_choice() -> None:
    installed = [
        "SQL Server",
        "ODBC Driver 9 for SQL Server",
        "ODBC Driver 18 for SQL Server",
        "ODBC Driver 17 for SQL Server",
        "PostgreSQL Unicode",
    ]
    assert choose_odbc_driver(installed) == "ODBC Driver 18 for SQL Server"  # by number, not as strings
    assert choose_odbc_driver(["SQL Server", "MySQL"]) == "SQL Server"
    assert choose_odbc_driver(installed, "ODBC Driver 17 for SQL Server") == "ODBC Driver 17 for SQL Server"
    with pytest.raises(ConfigError, match="installed: SQL Server, ODBC Driver 9"):
        choose_odbc_driver(installed, "ODBC Driver 19 for SQL Server")
    with pytest.raises(ConfigError, match="download-odbc-driver-for-sql-server"):
        choose_odbc_driver(["PostgreSQL Unicode"])


def test_connection_string_values_are_escaped() -> None:
    assert odbc_value("sql01.corp.example") == "sql01.corp.example"
    assert odbc_value("sql01\\SCCM") == "sql01\\SCCM"
    assert odbc_value("pa;ss}word") == "{pa;ss}}word}"
    assert odbc_value(" spaced ") == "{ spaced }"


def test_driver_messages_are_one_line() -> None:
    odbc = Exception(
        "28000",
        "[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"
        "Login failed for user 'oomnitza_ro'. (18456) (SQLDriverConnect)",
    )
    assert db_message(odbc).startswith("[28000] [Microsoft]")
    tds = Exception(
        (
            18456,
            b"Login failed for user 'oomnitza_ro'.DB-Lib error message 20018, severity 14:\nGeneral SQL Server error",
        )
    )
    assert db_message(tds) == "Login failed for user 'oomnitza_ro'."


def test_odbc_connection_string(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    from oomnitza_connector.config import load_config
    from oomnitza_connector.sources.sccm import Sccm

    settings = {
        "server": "sql01\\SCCM",
        "database": "CM_P01",
        "username": "oomnitza_ro",
        "password": "p;w}d",
        "verify_ssl": "false",
    }
    section = load_config(write_config(tmp_path, fake_oomnitza, "sccm", settings)).section("sccm")
    assert Sccm(section)._odbc_string("ODBC Driver 18 for SQL Server") == (
        "DRIVER={ODBC Driver 18 for SQL Server};SERVER=sql01\\SCCM;DATABASE=CM_P01;UID=oomnitza_ro;PWD={p;w}}d};"
        "Encrypt=yes;TrustServerCertificate=yes;APP=oomnitza-connector"
    )
    windows = load_config(
        write_config(
            tmp_path, fake_oomnitza, "sccm", {"server": "sql01,1433", "authentication": "Windows", "encrypt": "strict"}
        )
    ).section("sccm")
    assert Sccm(windows)._odbc_string("ODBC Driver 18 for SQL Server") == (
        "DRIVER={ODBC Driver 18 for SQL Server};SERVER=sql01,1433;DATABASE=CM_DCT;Trusted_Connection=yes;"
        "Encrypt=strict;APP=oomnitza-connector"
    )


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# -- a real driver against the fake SQL Server (TDS): reading, and the faults of a SQL source -------

# No "}" in it: FreeTDS's ODBC driver does not read "}}" in a braced value as "}" (Microsoft's does).
TDS_USER, TDS_PASSWORD = "oomnitza_ro", "R3ad;Only=pw"


def tds_hardware(count: int) -> list[dict[str, object]]:
    return [
        {
            "resource_id": 16777300 + i,
            "computer_name": f"PC-{i:03d}",
            "serial_number": f"SN{i:05d}",
            "cpu": "Intel(R) Core(TM) Ultra 7 165U",
            "hdd_total_mb": 953867,
            "last_logon": datetime(2026, 11, 24, 8, 1, 2),
            "antivirus_enabled": i % 2 == 0,
            "primary_user": f"corp\\user{i}",
        }
        for i in range(count)
    ]


def tds_drivers() -> list[str]:
    drivers = ["pymssql"]
    try:
        import pyodbc

        if "FreeTDS" in pyodbc.drivers():
            drivers.append("FreeTDS")
    except ImportError:
        pass
    return drivers


def run_tds(tmp_path: Path, oomnitza: FakeOomnitza, port: int, driver: str, **extra: str):  # type: ignore[no-untyped-def]
    require(_importable("pymssql" if driver == "pymssql" else "pyodbc"), f"{driver} cannot be loaded")
    settings = {
        "server": f"127.0.0.1,{port}",
        "database": "CM_P01",
        "driver": driver,
        "username": TDS_USER,
        "password": TDS_PASSWORD,
        "encrypt": "no",
        "sync_field": "NAME",
        "login_timeout": "5",
        "query_timeout": "10",
        **extra,
    }
    return upload(write_config(tmp_path, oomnitza, "sccm", settings, MAPPINGS), "sccm")


@pytest.mark.parametrize("driver", tds_drivers())
def test_real_driver_reads_several_chunks(tmp_path: Path, fake_oomnitza: FakeOomnitza, driver: str) -> None:
    hardware = tds_hardware(7)
    software = {16777300: [{"name": "7-Zip 24.08 (x64)", "version": "24.08", "publisher": "Igor Pavlov"}]}
    sql = FakeSqlServer(accept=(TDS_USER, TDS_PASSWORD), hardware=hardware, software=software)
    with sql.serve() as port:
        result = run_tds(tmp_path, fake_oomnitza, port, driver, chunk_size="3")
    assert result.code == 0, result.all
    assert_accounted(result, "sccm", pulled=7, sent=7)
    first = fake_oomnitza.record("assets", NAME="PC-000")
    assert first["SERIAL_NUMBER"] == "SN00000" and first["ANTIVIRUS"] is True
    assert first["LAST_LOGON"] == int(datetime(2026, 11, 24, 8, 1, 2, tzinfo=UTC).timestamp())
    assert first["APPLICATIONS"] == [
        {"name": "7-Zip 24.08 (x64)", "version": "24.08", "publisher": "Igor Pavlov", "path": None}
    ]
    # One software query per chunk of 3 computers, not one per computer.
    assert len([b for b in sql.batches if "ADD_REMOVE_PROGRAMS" in b]) == 3
    assert TDS_PASSWORD not in result.all


@pytest.mark.parametrize("driver", tds_drivers())
def test_real_driver_empty_site(tmp_path: Path, fake_oomnitza: FakeOomnitza, driver: str) -> None:
    sql = FakeSqlServer(accept=(TDS_USER, TDS_PASSWORD))
    with sql.serve() as port:
        result = run_tds(tmp_path, fake_oomnitza, port, driver)
    assert result.code == 0, result.all
    assert_accounted(result, "sccm", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


@pytest.mark.parametrize("driver", tds_drivers())
def test_permission_denied_on_a_view(tmp_path: Path, fake_oomnitza: FakeOomnitza, driver: str) -> None:
    # A login without read access to the views: SQL Server's error 229.
    denied = "The SELECT permission was denied on the object 'v_GS_COMPUTER_SYSTEM', database 'CM_P01', schema 'dbo'."
    sql = FakeSqlServer(accept=(TDS_USER, TDS_PASSWORD), hardware=tds_hardware(2), query_error=(229, denied))
    with sql.serve() as port:
        result = run_tds(tmp_path, fake_oomnitza, port, driver)
    assert_one_line_error(
        result,
        "[sccm] the hardware query failed: ",
        "The SELECT permission was denied on the object 'v_GS_COMPUTER_SYSTEM'",
        "grant the login db_datareader on CM_P01",
    )
    assert_accounted(result, "sccm", pulled=0)
    assert fake_oomnitza.records("assets") == []


@pytest.mark.parametrize("driver", tds_drivers())
def test_connection_lost_mid_read_fails_the_run(tmp_path: Path, fake_oomnitza: FakeOomnitza, driver: str) -> None:
    # The server goes away after 5 of 9 rows: what was read is sent, and the run fails (not "success").
    sql = FakeSqlServer(accept=(TDS_USER, TDS_PASSWORD), hardware=tds_hardware(9), drop_after=5)
    with sql.serve() as port:
        result = run_tds(tmp_path, fake_oomnitza, port, driver, chunk_size="2")
    assert_one_line_error(result, "[sccm] reading the hardware rows failed: ")
    counts = assert_accounted(result, "sccm", pulled=4)
    assert len(fake_oomnitza.records("assets")) == counts["sent"] == 4
    assert TDS_PASSWORD not in result.all
