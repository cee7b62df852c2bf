"""TLS options against an https fake Oomnitza, concurrency bounds and finalize ordering."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.netbox import V2_TOKEN, FakeNetbox, device
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serving
from tests.sourcekit import write_config

from .helpers import run_cli


def make_ini(tmp_path: Path, fake: FakeOomnitza, oomnitza_extra: str = "", rows: int = 5) -> Path:
    (tmp_path / "a.csv").write_text("serial\n" + "".join(f"S{i}\n" for i in range(rows)), encoding="utf-8")
    text = "\n".join(
        [
            "[oomnitza]",
            f"url = {fake.url}",
            *oomnitza_extra.splitlines(),
            "",
            "[csv_assets]",
            "enable = True",
            f"filename = {tmp_path}/a.csv",
            "sync_field = SERIAL",
            'mapping.SERIAL = {"source": "serial"}',
            "",
        ]
    )
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    return path


def test_untrusted_certificate_is_a_clear_error(tmp_path: Path, fake_oomnitza_tls: FakeOomnitza) -> None:
    ini = make_ini(tmp_path, fake_oomnitza_tls, "api_token = test-token")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 1
    assert "TLS certificate not trusted" in result.err and "cacert_file" in result.err
    assert "Traceback" not in result.all


def test_cacert_file_is_used_for_https(tmp_path: Path, fake_oomnitza_tls: FakeOomnitza) -> None:
    extra = f"api_token = test-token\ncacert_file = {fake_oomnitza_tls.ca_file}"
    result = run_cli("upload", "csv_assets", "--ini", str(make_ini(tmp_path, fake_oomnitza_tls, extra)))
    assert result.code == 0, result.all
    assert len(fake_oomnitza_tls.records("assets")) == 5


def test_verify_ssl_false(tmp_path: Path, fake_oomnitza_tls: FakeOomnitza) -> None:
    extra = "api_token = test-token\nverify_ssl = false"
    result = run_cli("upload", "csv_assets", "--ini", str(make_ini(tmp_path, fake_oomnitza_tls, extra)))
    assert result.code == 0, result.all


def test_client_certificate_login(tmp_path: Path, fake_oomnitza_mtls: FakeOomnitza) -> None:
    extra = f"cacert_file = {fake_oomnitza_mtls.ca_file}\nuser_pem_file = {fake_oomnitza_mtls.client_pem}"
    result = run_cli("upload", "csv_assets", "--ini", str(make_ini(tmp_path, fake_oomnitza_mtls, extra)))
    assert result.code == 0, result.all
    assert fake_oomnitza_mtls.find_requests("POST", "/api/request_token")[0].body == {"login": "", "password": ""}
    assert len(fake_oomnitza_mtls.records("assets")) == 5


def test_without_client_certificate_the_handshake_fails_cleanly(
    tmp_path: Path, fake_oomnitza_mtls: FakeOomnitza
) -> None:
    extra = f"cacert_file = {fake_oomnitza_mtls.ca_file}\napi_token = test-token"
    result = run_cli("upload", "csv_assets", "--ini", str(make_ini(tmp_path, fake_oomnitza_mtls, extra)))
    assert result.code == 1
    assert "Traceback" not in result.all
    assert result.err.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_in_flight_batches_never_exceed_workers(tmp_path: Path, fake_oomnitza: FakeOomnitza, workers: int) -> None:
    fake_oomnitza.latency = 0.05
    ini = make_ini(tmp_path, fake_oomnitza, "api_token = test-token", rows=400)
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--workers", str(workers), "--batch-size", "20")
    assert result.code == 0, result.all
    peak = fake_oomnitza.stats()["peak_in_flight"]
    assert peak == workers  # used fully, never exceeded
    assert len(fake_oomnitza.records("assets")) == 400


def test_finalize_waits_for_every_in_flight_send(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.delay("POST", "/api/v3/bulk", 0.5, times=3)  # the first batches answer late
    ini = make_ini(tmp_path, fake_oomnitza, "api_token = test-token", rows=500)
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--workers", "4")
    assert result.code == 0, result.all
    portion = fake_oomnitza.portion()
    assert portion.finalized and portion.records_after_finalize == 0
    assert portion.events[-1][0] == "finalize"
    assert portion.received == 500


def test_session_is_finalized_even_when_the_source_fails(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    # NetBox answers the first page, then refuses the second (a 404 is not retried): the records of
    # the first page are sent, the run reports the error, and the session is closed.
    netbox = FakeNetbox([device(i) for i in range(7)], max_page=3)
    netbox.fail("GET", "/api/dcim/devices/", 404, body={"detail": "Not found."}, query={"offset": "3"})
    with serving(netbox):
        ini = write_config(
            tmp_path,
            fake_oomnitza,
            "netbox",
            {"url": netbox.url, "auth_token": V2_TOKEN, "sync_field": "NAME"},
            {"NAME": '{"source": "name"}'},
        )
        result = run_cli("upload", "netbox", "--ini", str(ini))
    assert result.code == 1, result.all
    assert "Traceback" not in result.all
    portion = fake_oomnitza.portion()
    assert portion.finalized
    assert len(fake_oomnitza.records("assets")) == 3  # every record of the page before the failure was sent
    # The failure is reported before the session is closed, so Oomnitza does not see a complete sync.
    assert portion.events[-2:] == [("error", 1), ("finalize", 0)] and portion.fatal
    assert "404" in portion.errors[0]["error"]
