"""Managed mode end to end: the fake Oomnitza hands out cloud configs, a fake SaaS answers them."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.saas import KEY, FakeSaas
from tests.fakes.server import serving

from .helpers import ROOT, cheap_keyring_kdf, export_config, run_cli

MAPPING = {
    "serial_number": {"type": "attribute", "value": "serial"},
    "model": {"type": "attribute", "value": "{{ model }}"},
    "equipment_type": {"type": "value", "value": "Laptop"},
    "sim_phone": {"type": "attribute", "value": "{{ phone|as_is }}"},
}


def worked_example(url: str) -> dict[str, Any]:
    """The spec's worked example (managed-mode.md §10) pointed at the fake SaaS."""
    return {
        "id": 67,
        "name": "Fleetwise devices",
        "type": "assets",
        "reports_service": False,
        "update_only": "False",
        "insert_only": "False",
        "inputs": {"base_url": {"value": f"{url}/v1"}, "page_size": {"value": "2"}},
        "list_behavior": {
            "url": "{{ inputs.base_url }}/devices",
            "http_method": "GET",
            "headers": [{"key": "Accept", "value": "application/json"}],
            "params": [{"key": "per_page", "value": "{{ inputs.page_size }}"}],
            "result": "{{ list_response['devices'] }}",
            "pagination": {
                "break_early": "{{ iteration > 0 and not list_response['paging']['next_cursor'] }}",
                "add_if": "{{ iteration > 0 }}",
                "headers": [],
                "params": [{"key": "cursor", "value": "{{ list_response['paging']['next_cursor'] }}"}],
            },
        },
        "detail_behavior": {
            "url": "{{ inputs.base_url }}/devices/{{ list_response_item['id'] }}",
            "http_method": "GET",
            "headers": [{"key": "Accept", "value": "application/json"}],
            "params": [],
        },
        "software_behavior": {
            "enabled": True,
            "url": "",
            "http_method": "",
            "headers": [],
            "params": [],
            "result": "{{ detail_response['apps'] }}",
            "name": "{{ software_response_item['title'] }}",
            "version": "{{ software_response_item['ver'] }}",
        },
        "saas_behavior": {"enabled": False},
    }


@pytest.fixture
def oomnitza(fake_oomnitza: FakeOomnitza) -> FakeOomnitza:
    fake_oomnitza.set_managed_mapping(67, MAPPING)
    fake_oomnitza.sync_keys["67"] = ["serial_number"]
    return fake_oomnitza


def ini(tmp_path: Path, oomnitza: FakeOomnitza, section: str = "") -> Path:
    path = tmp_path / "config.ini"
    path.write_text(f"[oomnitza]\nurl = {oomnitza.url}\napi_token = {oomnitza.token}\n\n{section}\n", encoding="utf-8")
    return path


STATIC = f'[managed.67]\nsaas_authorization = {{"headers": {{"X-Fleetwise-Key": "{KEY}"}}}}\n'


def managed(path: Path, *args: str):
    return run_cli("managed", "--ini", str(path), "--exit-when-idle", "--poll-interval", "0.05", *args)


def portions_of(fake: FakeOomnitza, ident: int = 67) -> list:
    return [p for p in fake.portions.values() if p.connector == ident]


def test_worked_example(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    oomnitza.enqueue_managed(worked_example(saas.url))
    result = managed(ini(tmp_path, oomnitza, STATIC))
    assert result.code == 0, result.all
    records = {r["serial_number"]: r for r in oomnitza.records("assets")}
    assert records["C02XK1"] == {
        "serial_number": "C02XK1",
        "model": "MacBookPro18,3",
        "equipment_type": "Laptop",
        "sim_phone": "5550101",
        "APPLICATIONS": [
            {"name": "Slack", "version": "4.41", "path": None},
            {"name": "Zoom", "version": None, "path": None},
        ],
    }
    assert set(records) == {"C02XK1", "C02XK2", "C02XK3"}
    lists = saas.calls("/v1/devices", "GET")
    pages = [c for c in lists if c.path == "/v1/devices"]
    assert [p.query for p in pages] == [{"per_page": "2"}, {"per_page": "2", "cursor": "c2"}]
    assert all(c.headers["x-fleetwise-key"] == KEY and c.headers["user-agent"] == "Oomnitza Connector" for c in lists)
    (portion,) = portions_of(oomnitza)
    assert portion.finalized and portion.records_after_finalize == 0
    payload = oomnitza.bulk_payloads[0]
    assert payload["connector_id"] == 67 and "connector_name" not in payload and payload["data_type"] == "assets"
    assert oomnitza.find_requests("POST", "/api/v3/bulk/check_managed")[0].body == {"version": _version()}
    assert KEY not in result.all


def _version() -> str:
    from oomnitza_connector import __version__

    return __version__


def test_link_header_and_page_number_pagination(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    saas.devices += [dict(d, id=f"dv-{i}", serial=f"S{i}") for i, d in enumerate(saas.devices * 2, start=10)]
    link = worked_example(saas.url)
    link["list_behavior"] = {
        "url": "{{ list_response_links['next']['url'] if iteration > 0 else inputs.base_url[:-3] + '/v2/devices' }}",
        "http_method": "GET",
        "headers": [],
        "params": [],
        "result": "{{ list_response }}",
        "pagination": {
            "break_early": "{{ iteration > 0 and not list_response_links.get('next') }}",
            "headers": [],
            "params": [],
        },
    }
    link["detail_behavior"] = {}
    paged = copy.deepcopy(link)
    paged["id"] = 68
    paged["list_behavior"] = {
        "url": "{{ inputs.base_url[:-3] }}/v3/devices",
        "http_method": "GET",
        "headers": [],
        "params": [],
        "result": "{{ list_response['items'] }}",
        "pagination": {
            "break_early": "{{ iteration > 0 and not list_response['has_more'] }}",
            "headers": [],
            "params": [{"key": "page", "value": "{{ iteration + 1 }}"}],
        },
    }
    oomnitza.set_managed_mapping(68, MAPPING)
    oomnitza.sync_keys["68"] = ["serial_number"]
    oomnitza.enqueue_managed(link, paged)
    section = STATIC + STATIC.replace("managed.67", "managed.68")
    result = managed(ini(tmp_path, oomnitza, section))
    assert result.code == 0, result.all
    assert len(saas.calls("/v2/devices")) == 5 and len(saas.calls("/v3/devices")) == 5
    assert len(oomnitza.records("assets")) == 9
    assert all(p.finalized for p in oomnitza.portions.values())


def test_xml_list_and_single_page(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    cfg = worked_example(saas.url)
    cfg["list_behavior"] = {
        "url": "{{ inputs.base_url[:-3] }}/xml/devices",
        "http_method": "GET",
        "headers": [],
        "params": [],
        "result": "{{ list_response['devices']['device'] }}",
        "pagination": {"break_early": "{{ iteration > 0 }}", "headers": [], "params": []},
    }
    cfg["detail_behavior"] = {}
    cfg["software_behavior"] = {"enabled": False}
    oomnitza.enqueue_managed(cfg)
    assert managed(ini(tmp_path, oomnitza, STATIC)).code == 0
    assert len(saas.calls("/xml/devices")) == 1
    assert {r["serial_number"] for r in oomnitza.records("assets")} == {"C02XK1", "C02XK2", "C02XK3"}


def test_runaway_pagination_is_stopped_and_reported(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    cfg = worked_example(saas.url)
    cfg["list_behavior"]["pagination"] = {"add_if": "{{ False }}", "headers": [], "params": []}  # no stop rule
    oomnitza.enqueue_managed(cfg)
    result = managed(ini(tmp_path, oomnitza, STATIC))
    assert result.code == 1  # the integration failed: --exit-when-idle says so
    fatal = [p for p in oomnitza.bulk_payloads if p.get("error_type") == "Fatal Error"]
    assert len(fatal) == 1 and "same page twice" in fatal[0]["error"] and fatal[0]["records"] == [{}]
    assert portions_of(oomnitza)[0].finalized
    assert len(saas.calls("/v1/devices", "GET")) < 10


def session_config(url: str) -> dict[str, Any]:
    cfg = worked_example(url)
    cfg["saas_authorization"] = {
        "type": "session",
        "behavior": {
            "url": f"{url}/login",
            "http_method": "POST",
            "headers": [{"key": "Content-Type", "value": "application/json"}],
            "params": [],
            "body": '{"username": "{{ inputs.username }}", "password": "{{ inputs.password }}"}',
            "result": {
                "headers": [{"key": "Authorization", "value": "Bearer {{ response.access_token }}"}],
                "params": [],
            },
        },
    }
    return cfg


def test_session_login_once_per_sync_and_again_after_401(
    tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza
) -> None:
    oomnitza.enqueue_managed(session_config(saas.url))
    section = '[managed.67]\nlocal_inputs = {"username": "svc", "password": "s3ss10n-pw"}\n'
    result = managed(ini(tmp_path, oomnitza, section))
    assert result.code == 0, result.all
    assert saas.logins == 1  # one login for two pages and three details
    assert len(oomnitza.records("assets")) == 3
    assert "s3ss10n-pw" not in result.all
    # A session that expires mid-run: one new login, nothing lost.
    oomnitza.reset()
    saas.fail("GET", "/v1/devices/dv-2", 401, body={"error": "expired"})
    oomnitza.enqueue_managed(session_config(saas.url))
    result = managed(ini(tmp_path, oomnitza, section))
    assert result.code == 0
    assert saas.logins == 3 and len(oomnitza.records("assets")) == 3


def test_first_page_failure_is_a_failed_synthetic_portion(
    tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza
) -> None:
    cfg = worked_example(saas.url)
    cfg["inputs"]["base_url"]["value"] = f"{saas.url}/nowhere"
    oomnitza.enqueue_managed(cfg)
    assert managed(ini(tmp_path, oomnitza, STATIC)).code == 1
    (ready,) = oomnitza.ready_portions
    body = ready
    assert body["failed"] == 1 and body["error_type"] == "Fatal Error"
    assert body["error_message"].startswith("Failed to fetch the first block of data. The error is: GET ")
    assert "404" in body["error_message"]
    assert oomnitza.bulk_payloads == [] and not oomnitza.find_requests("POST", "/api/v3/bulk/")[:0]
    assert not any(r.path.endswith("/finalize") for r in oomnitza.requests)


def test_later_page_failure_is_fatal_then_finalized(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    cfg = worked_example(saas.url)
    oomnitza.enqueue_managed(cfg)
    saas.fail("GET", "/v1/devices", 410, query={"cursor": "c2"}, body={"error": "gone"})
    assert managed(ini(tmp_path, oomnitza, STATIC)).code == 1
    fatal = [p for p in oomnitza.bulk_payloads if p.get("error_type") == "Fatal Error"]
    assert len(fatal) == 1
    assert fatal[0]["error"].startswith("Failed to fetch the next block of data. The error is: GET ")
    assert "cursor" not in fatal[0]["error"]  # query strings (which may hold keys) never reach the cloud
    assert len(oomnitza.records("assets")) == 2
    assert portions_of(oomnitza)[0].finalized


def test_item_and_mapping_failures_are_error_records(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    oomnitza.set_managed_mapping(67, {**MAPPING, "hw_serial": {"type": "attribute", "value": "hw.serial"}})
    saas.devices[2]["hw"] = {"serial": "H3"}
    saas.fail("GET", "/v1/devices/dv-1", 404, times=1, body={"error": "not found"})
    oomnitza.enqueue_managed(worked_example(saas.url))
    assert managed(ini(tmp_path, oomnitza, STATIC)).code == 3  # records failed, as upload says it
    errors = [p for p in oomnitza.bulk_payloads if p["error"]]
    detail = [p for p in errors if p["error"].startswith("Failed to fetch the details")]
    conversion = [p for p in errors if p["error"].startswith("Failed to process the mapping value: hw.serial")]
    assert len(detail) == 1 and detail[0]["records"] == [{"id": "dv-1", "name": "MacBookPro18,3"}]
    assert len(conversion) == 1 and conversion[0]["records"][0]["id"] == "dv-2"
    assert all("error_type" not in p for p in errors)
    assert [r["serial_number"] for r in oomnitza.records("assets")] == ["C02XK3"]


def test_empty_first_page(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    saas.devices.clear()
    oomnitza.enqueue_managed(worked_example(saas.url))
    assert managed(ini(tmp_path, oomnitza, STATIC)).code == 0
    (ready,) = oomnitza.ready_portions
    body = ready
    assert body.get("is_empty_run") is True


@pytest.mark.parametrize(
    "template",
    [
        "{{ import('os').system('touch PWNED') }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",
        "{{ import('uuid').os }}/x",
    ],
)
def test_templates_cannot_reach_the_host(
    tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch, template: str
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = worked_example(saas.url)
    cfg["list_behavior"]["url"] = template
    oomnitza.enqueue_managed(cfg)
    result = managed(ini(tmp_path, oomnitza, STATIC))
    assert result.code == 1 and "Traceback" not in result.all
    assert not (tmp_path / "PWNED").exists()
    (ready,) = oomnitza.ready_portions
    assert ready["failed"] == 1


def test_sandboxed_mapping_value(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    oomnitza.set_managed_mapping(67, {**MAPPING, "x": {"type": "attribute", "value": "{{ import('os').getcwd() }}"}})
    oomnitza.enqueue_managed(worked_example(saas.url))
    assert managed(ini(tmp_path, oomnitza, STATIC)).code == 3
    errors = [p["error"] for p in oomnitza.bulk_payloads if p["error"]]
    assert len(errors) == 3 and all("not safely importable" in e for e in errors)


def test_oomnitza_authorization_forms(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    oomnitza.add_integration_token(5, "integration-token-5")
    cfg = worked_example(saas.url)
    cfg["oomnitza_authorization"] = {"token_id": 5}
    oomnitza.enqueue_managed(cfg)
    assert managed(ini(tmp_path, oomnitza, STATIC)).code == 0
    bulk = [r for r in oomnitza.requests if r.path == "/api/v3/bulk"]
    assert bulk and all(r.headers["authorization2"] == "integration-token-5" for r in bulk)
    oomnitza.reset()
    oomnitza.add_integration_token(9, "ini-token-9")
    oomnitza.enqueue_managed(worked_example(saas.url))
    assert managed(ini(tmp_path, oomnitza, STATIC + "oomnitza_authorization = ini-token-9\n")).code == 0
    bulk = [r for r in oomnitza.requests if r.path == "/api/v3/bulk"]
    assert bulk and all(r.headers["authorization2"] == "ini-token-9" for r in bulk)


def test_credential_id_authorization(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    oomnitza.set_secret("c0ffee42", params={"api_key": KEY})
    cfg = worked_example(saas.url)
    cfg["saas_authorization"] = {"credential_id": "c0ffee42"}
    oomnitza.enqueue_managed(cfg)
    assert managed(ini(tmp_path, oomnitza)).code == 0
    assert len(oomnitza.records("assets")) == 3
    asked = oomnitza.find_requests("POST", "/api/v3/auth/c0ffee42/secret")
    assert asked and asked[0].body["http_method"] == "GET" and asked[0].body["url"].endswith("/v1/devices")


def test_catalog_and_credential_input_fields(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    oomnitza.set_secret("c0ffee42", params={"api_key": KEY}, name="Fleetwise production")
    oomnitza.set_managed_mapping(
        67,
        {
            **MAPPING,
            "vendor": {"type": "catalog_input", "value": "page_size"},
            "source_account": {"type": "credential_input", "value": "credential"},
        },
    )
    cfg = worked_example(saas.url)
    cfg["saas_authorization"] = {"credential_id": "c0ffee42"}
    oomnitza.enqueue_managed(cfg)
    assert managed(ini(tmp_path, oomnitza)).code == 0
    records = oomnitza.records("assets")
    assert len(records) == 3
    assert {(r["vendor"], r["source_account"]) for r in records} == {("2", "Fleetwise production")}
    assert len(oomnitza.find_requests("GET", "/api/v3/auth/c0ffee42")) == 1  # once per run, not per record


def test_bad_saas_authorization_is_reported(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    oomnitza.enqueue_managed(worked_example(saas.url))
    result = managed(ini(tmp_path, oomnitza, '[managed.67]\nsaas_authorization = {"headers": {}, "params": {}}\n'))
    assert result.code == 1
    assert "SaaS authorization format is invalid" in result.err
    (ready,) = oomnitza.ready_portions
    assert "SaaS authorization format is invalid" in ready["error_message"]


@pytest.mark.parametrize("line", ["insert_only = maybe", "update_only = 2x"])
def test_a_flag_that_is_not_a_boolean_is_one_config_line(
    tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza, line: str
) -> None:
    oomnitza.enqueue_managed(worked_example(saas.url))
    result = managed(ini(tmp_path, oomnitza, STATIC + line + "\n"))
    assert result.code == 1 and "Traceback" not in result.all, result.all
    key, value = (part.strip() for part in line.split("="))
    complaint = f"[managed.67] {key} = '{value}' must be true or false"
    assert complaint in result.err
    (ready,) = oomnitza.ready_portions  # reported to the cloud (without the file's path); nothing ran
    assert ready["error_message"].startswith(f"Managed connector #67: {complaint}")
    assert not saas.calls("/v1/devices")


def test_testmode_prints_the_payloads_and_sends_nothing(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    oomnitza.enqueue_managed(worked_example(saas.url))
    result = managed(ini(tmp_path, oomnitza, STATIC), "--testmode")
    assert result.code == 0, result.all
    printed = json.loads(result.out)  # upload's test-mode printer: one payload, pretty-printed
    assert printed["connector_id"] == 67 and {r["serial_number"] for r in printed["records"]} == {
        "C02XK1",
        "C02XK2",
        "C02XK3",
    }
    assert oomnitza.bulk_payloads == [] and oomnitza.ready_portions == []
    assert not any(r.path.endswith("/finalize") for r in oomnitza.requests)
    assert "Sync summary (test mode: nothing was sent)" in result.err and KEY not in result.all


def test_local_inputs_override_cloud_inputs(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    cfg = worked_example(saas.url)
    cfg["inputs"]["page_size"] = {"value": "1"}
    oomnitza.enqueue_managed(cfg)
    section = STATIC + 'local_inputs = {"page_size": "3"}\n'
    assert managed(ini(tmp_path, oomnitza, section)).code == 0
    assert saas.calls("/v1/devices")[0].query["per_page"] == "3"


def test_same_config_is_not_run_twice_at_once(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    oomnitza.enqueue_managed(worked_example(saas.url), worked_example(saas.url))
    result = managed(ini(tmp_path, oomnitza, STATIC))
    assert result.code == 0
    assert len(portions_of(oomnitza)) == 1
    assert "still running" in result.err


def test_maintenance(tmp_path: Path, oomnitza: FakeOomnitza) -> None:
    oomnitza.fail("POST", "/api/v3/bulk/check_managed", 503, times=3)
    result = managed(ini(tmp_path, oomnitza))
    assert result.code == 1
    assert "--ignore-cloud-maintenance" in result.err and "Traceback" not in result.all
    oomnitza.fail("POST", "/api/v3/bulk/check_managed", 503, times=3)
    result = managed(ini(tmp_path, oomnitza), "--ignore-cloud-maintenance")
    assert result.code == 0, result.all
    assert "maintenance" in result.err


def test_wrong_base_token(tmp_path: Path, oomnitza: FakeOomnitza) -> None:
    path = tmp_path / "config.ini"
    path.write_text(f"[oomnitza]\nurl = {oomnitza.url}\napi_token = nope-nope\n", encoding="utf-8")
    result = managed(path)
    assert result.code == 1 and "rejected the api_token" in result.err


def test_sigterm_stops_the_sync_gracefully(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    """SIGTERM while an upload is in flight: the upload gets the stop grace and lands, the failure
    report and the finalize are sent, and the process exits 143, as an upload does."""
    oomnitza.enqueue_managed(worked_example(saas.url))
    env = {**os.environ}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "connector.py"),
            "managed",
            "--ini",
            str(ini(tmp_path, oomnitza, STATIC)),
            "--poll-interval",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )

    def uploads() -> list[Any]:
        return [r for r in oomnitza.requests if r.method == "POST" and r.path == "/api/v3/bulk"]

    deadline = time.monotonic() + 20
    while not oomnitza.find_requests("POST", "/api/v3/bulk/check_managed") and time.monotonic() < deadline:
        time.sleep(0.05)
    oomnitza.delay("POST", "/api/v3/bulk", 1.0, times=1)  # the next one: the run's upload
    while not uploads() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err  # 128 + SIGTERM, as shells report it
    (portion,) = portions_of(oomnitza)
    assert portion.finalized and len(oomnitza.records("assets")) == 3
    assert "Traceback" not in err


# -- export file -----------------------------------------------------------------------------------


def test_export_file_downloads_and_keeps_a_watermark(
    tmp_path: Path, oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    oomnitza.add_media_file("assets.csv", b"a,b\n1,2\n", creation_date=1767225600, created_by_id=90, uid="9f2c")
    oomnitza.add_media_file("../../evil.csv", b"x\n", creation_date=1767225700, created_by_id=90, uid="e1")
    oomnitza.enqueue_managed(export_config(tmp_path / "exports"))
    assert managed(ini(tmp_path, oomnitza)).code == 0
    files = sorted(p.name for p in (tmp_path / "exports").iterdir())
    assert files == ["20260101000000_assets.csv", "20260101000140_evil.csv"]
    assert not (tmp_path.parent / "evil.csv").exists()
    assert (tmp_path / "exports" / "20260101000000_assets.csv").read_bytes() == b"a,b\n1,2\n"
    bodies = [r for r in oomnitza.ready_portions]
    assert {b["correlation_id"] for b in bodies} == {"9f2c", "e1"} and all(b["added"] == 1 for b in bodies)
    # The next poll asks only for newer files.
    oomnitza.reset()
    oomnitza.enqueue_managed(export_config(tmp_path / "exports"))
    assert managed(ini(tmp_path, oomnitza)).code == 0
    listing = oomnitza.find_requests("GET", "/api/v3/media_storage")[0]
    assert "creation_date gt 1767225700" in listing.query["filter"]
    assert oomnitza.ready_portions == []


def test_export_file_retries_a_failed_download(
    tmp_path: Path, oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    meta = oomnitza.add_media_file("a.csv", b"1\n", creation_date=100, created_by_id=90, uid="u1")
    oomnitza.fail("GET", f"/media/{meta['uid']}", 404, times=1)
    oomnitza.enqueue_managed(export_config(tmp_path / "out", overwrite_reports="True"))
    assert managed(ini(tmp_path, oomnitza)).code == 0
    body = [r for r in oomnitza.ready_portions]
    assert body and body[0]["failed"] == 1
    oomnitza.reset()
    oomnitza.enqueue_managed(export_config(tmp_path / "out", overwrite_reports="True"))
    assert managed(ini(tmp_path, oomnitza)).code == 0
    assert (tmp_path / "out" / "a.csv").read_bytes() == b"1\n"


def test_export_file_follows_a_paged_listing(
    tmp_path: Path, oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    oomnitza.media_page_size = 2
    for i in range(5):
        oomnitza.add_media_file(f"r{i}.csv", f"{i}\n".encode(), creation_date=1000 + i, created_by_id=90)
    oomnitza.enqueue_managed(export_config(tmp_path / "out", overwrite_reports="True"))
    section = f"[managed_reports.90]\nstate_dir = {tmp_path / 'state'}\n"
    assert managed(ini(tmp_path, oomnitza, section)).code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"r{i}.csv" for i in range(5)]
    assert (tmp_path / "state" / "state.db").is_file() and not (tmp_path / "state.db").exists()
    listings = oomnitza.find_requests("GET", "/api/v3/media_storage")
    marks = [r.query["filter"].split(")")[0] for r in listings]
    assert marks == [
        "(creation_date gt 0",
        "(creation_date gt 1001",
        "(creation_date gt 1003",
        "(creation_date gt 1004",
    ]  # the last one answered nothing new: done for this poll


def test_managed_section_secrets_from_the_keyring(
    tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from oomnitza_connector.secrets.strongbox import main as strongbox

    cheap_keyring_kdf(monkeypatch)
    monkeypatch.setenv("OOMNITZA_KEYRING", "cryptfile")
    monkeypatch.setenv("OOMNITZA_KEYRING_PASSWORD", "unlock")
    monkeypatch.setenv("OOMNITZA_KEYRING_FILE", str(tmp_path / "kr.cfg"))
    value = json.dumps({"headers": {"X-Fleetwise-Key": KEY}})
    assert (
        strongbox(
            ["--connector", "managed.67", "--key", "saas_authorization", "--value", "-"],
            stdin=io.StringIO(value),
            stderr=io.StringIO(),
        )
        == 0
    )
    oomnitza.enqueue_managed(worked_example(saas.url))
    result = managed(ini(tmp_path, oomnitza, "[managed.67]\nvault_keys = saas_authorization\n"))
    assert result.code == 0, result.all
    assert len(oomnitza.records("assets")) == 3
    assert KEY not in result.all


def test_doubled_percent_in_a_managed_section(tmp_path: Path) -> None:
    from oomnitza_connector.config import load_managed_section
    from oomnitza_connector.converters import ConverterRegistry

    path = tmp_path / "c.ini"
    path.write_text(
        '[managed.5]\nlocal_inputs = {"password": "50%%off"}\nsaas_authorization = {"params": {"k": "a%b"}}\n',
        encoding="utf-8",
    )
    section = load_managed_section(path, "managed.5", ConverterRegistry())
    assert section is not None
    assert section.settings["local_inputs"] == '{"password": "50%off"}'  # written for the old parser
    assert section.settings["saas_authorization"] == '{"params": {"k": "a%b"}}'  # a lone % is kept
    assert load_managed_section(path, "managed.6", ConverterRegistry()) is None


def test_users_with_saas_behavior_and_test_run(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    saas.devices += [dict(d, id=f"dv-{i}", serial=f"S{i}") for i, d in enumerate(saas.devices * 4, start=10)]
    cfg = worked_example(saas.url)
    cfg.update(
        id=70,
        type="users",
        test_run=True,
        software_behavior={"enabled": False},
        saas_behavior={"enabled": True, "sync_key": "fleetwise", "name": "Fleetwise {{ inputs.page_size }}"},
    )
    oomnitza.set_managed_mapping(70, {"USER": {"type": "attribute", "value": "serial"}})
    oomnitza.sync_keys["70"] = ["USER"]
    oomnitza.enqueue_managed(cfg)
    assert managed(ini(tmp_path, oomnitza, STATIC.replace("managed.67", "managed.70"))).code == 0
    users = oomnitza.records("users")
    assert len(users) == 10  # a test run stops after 10 records
    assert users[0]["SAAS"] == {"sync_key": "fleetwise", "name": "Fleetwise 2"}
    assert all(p["test_run"] is True for p in oomnitza.bulk_payloads)


# -- HTTP behaviour of SaaS calls ------------------------------------------------------------------


def test_saas_calls_honour_retry_after_and_retry_5xx(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    saas.fail("GET", "/v1/devices", 429, headers={"Retry-After": "1"}, query={"cursor": "c2"})
    saas.fail("GET", "/v1/devices/dv-1", 503)
    oomnitza.enqueue_managed(worked_example(saas.url))
    started = time.monotonic()
    result = managed(ini(tmp_path, oomnitza, STATIC))
    assert result.code == 0, result.all
    assert len(oomnitza.records("assets")) == 3
    second = [c for c in saas.calls("/v1/devices", "GET") if c.query.get("cursor") == "c2"]
    assert len(second) == 2 and time.monotonic() - started >= 1.0  # waited as told, then asked again
    assert len(saas.calls("/v1/devices/dv-1", "GET")) == 2
    (portion,) = portions_of(oomnitza)
    assert portion.finalized and oomnitza.ready_portions == []


def test_detail_calls_run_concurrently_within_a_bound(tmp_path: Path, oomnitza: FakeOomnitza) -> None:
    from oomnitza_connector.managed.engine import DETAIL_CONCURRENCY

    fake = FakeSaas(count=24, page_size=24)
    fake.detail_delay = 0.1
    with serving(fake):
        cfg = worked_example(fake.url)
        cfg["inputs"]["page_size"] = {"value": "24"}
        oomnitza.enqueue_managed(cfg)
        result = managed(ini(tmp_path, oomnitza, STATIC))
    assert result.code == 0, result.all
    assert len(oomnitza.records("assets")) == 24
    assert 1 < fake.max_details_in_flight <= DETAIL_CONCURRENCY


def test_verify_ssl_applies_to_saas_calls(tmp_path: Path, oomnitza: FakeOomnitza, tls_files: dict[str, str]) -> None:
    fake = FakeSaas()
    with serving(fake, ssl_certfile=tls_files["server_cert"], ssl_keyfile=tls_files["server_key"]):
        oomnitza.enqueue_managed(worked_example(fake.url))
        result = managed(ini(tmp_path, oomnitza, STATIC))
        assert result.code == 1, result.all
        (ready,) = oomnitza.ready_portions  # an untrusted certificate: the first page failed
        assert "certificate" in ready["error_message"].lower() and fake.calls("/v1/devices") == []
        assert oomnitza.records("assets") == []

        oomnitza.reset()
        oomnitza.enqueue_managed(worked_example(fake.url))
        result = managed(ini(tmp_path, oomnitza, STATIC + f"cacert_file = {tls_files['ca']}\n"))
        assert result.code == 0, result.all
        assert len(oomnitza.records("assets")) == 3 and oomnitza.ready_portions == []


def test_secrets_in_urls_never_reach_the_cloud(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    saas.fail("GET", "/v1/devices", 404, body={"error": f"no such key {KEY}"})
    oomnitza.enqueue_managed(worked_example(saas.url))
    section = f'[managed.67]\nsaas_authorization = {{"params": {{"api_key": "{KEY}"}}}}\n'
    result = managed(ini(tmp_path, oomnitza, section))
    assert result.code == 1, result.all
    assert saas.calls("/v1/devices")[0].query["api_key"] == KEY  # the key did travel in the URL
    (ready,) = oomnitza.ready_portions
    assert "404" in ready["error_message"] and "/v1/devices" in ready["error_message"]
    sent_to_cloud = json.dumps([r.body for r in oomnitza.requests])
    assert KEY not in sent_to_cloud and KEY not in result.all
