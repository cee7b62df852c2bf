"""Tests of the fake Oomnitza server itself, over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token"


@pytest.fixture
def client(fake_oomnitza: FakeOomnitza) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_oomnitza.url, headers={"Authorization2": TOKEN}, timeout=10) as c:
        yield c


def payload(records: list[dict[str, Any]], portion: str | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "connector_version": "3.0.0",
        "sync_field": ["SERIAL_NUMBER"],
        "records": records,
        "portion": portion or str(uuid.uuid4()),
        "data_type": "assets",
        "insert_only": False,
        "update_only": False,
        "error": None,
        "connector_name": "CSV_assets",
    }
    body.update(overrides)
    return body


def post_bulk(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.post("/api/v3/bulk", json=body)


# ------------------------------------------------------------------------------------------ auth


def test_token_required_on_api_routes(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    anon = httpx.get(f"{fake_oomnitza.url}/api/v2/mappings?name=AuthTest", timeout=10)
    assert anon.status_code == 401
    assert anon.json()["error"] == "unauthorized"
    wrong = httpx.get(f"{fake_oomnitza.url}/api/v3/locations", headers={"Authorization2": "nope"}, timeout=10)
    assert wrong.status_code == 401
    # The scheme-less header is the only accepted form (no "Authorization: Bearer").
    bearer = httpx.get(f"{fake_oomnitza.url}/api/v3/locations", headers={"Authorization": TOKEN}, timeout=10)
    assert bearer.status_code == 401
    ok = client.get("/api/v2/mappings", params={"name": "AuthTest"})
    assert (ok.status_code, ok.json()) == (200, {})
    stats = fake_oomnitza.stats()
    assert stats["statuses"] == {"200": 1, "401": 3}
    assert stats["requests"] == {"GET /api/v2/mappings": 2, "GET /api/v3/locations": 2}


def test_login_with_form_credentials(fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.username, fake_oomnitza.password = "oomnitza-sa", "s3cret"
    url = f"{fake_oomnitza.url}/api/request_token"
    ok = httpx.post(url, data={"login": "oomnitza-sa", "password": "s3cret"}, timeout=10)
    assert ok.status_code == 200
    assert ok.json() == {"token": TOKEN}
    assert httpx.post(url, data={"login": "oomnitza-sa", "password": "bad"}, timeout=10).status_code == 401
    assert httpx.post(url, data={"login": "oomnitza-sa"}, timeout=10).status_code == 400
    method, path, _query, headers, body = fake_oomnitza.requests[0]
    assert (method, path, body) == ("POST", "/api/request_token", {"login": "oomnitza-sa", "password": "s3cret"})
    assert headers["content-type"] == "application/x-www-form-urlencoded"


def test_login_refused_when_no_user_configured(fake_oomnitza: FakeOomnitza) -> None:
    r = httpx.post(f"{fake_oomnitza.url}/api/request_token", data={"login": "", "password": ""}, timeout=10)
    assert r.status_code == 401


def test_token_expiry_until_relogin(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.username, fake_oomnitza.password = "u", "p"
    fake_oomnitza.expire_token_after(2)
    assert [client.get("/api/v3/locations").status_code for _ in range(4)] == [200, 200, 401, 401]
    assert client.get("/api/v3/locations").json()["detail"] == "token expired"
    assert client.post("/api/request_token", data={"login": "u", "password": "p"}).status_code == 200
    assert client.get("/api/v3/locations").status_code == 200


def test_integration_token(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.add_integration_token(7, "per-integration")
    r = client.get("/api/v3/auth/oomnitza_tokens/7")
    assert r.json() == {"token": "per-integration"}
    assert client.get("/api/v3/auth/oomnitza_tokens/8").status_code == 404
    other = httpx.get(
        f"{fake_oomnitza.url}/api/v2/mappings?name=AuthTest", headers={"Authorization2": "per-integration"}, timeout=10
    )
    assert other.status_code == 200


def test_csrf_token_echo(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.csrf_token = "csrf-1"
    probe = client.get("/api/v2/mappings", params={"name": "AuthTest"})
    assert probe.headers["x-csrf-token"] == "csrf-1"
    assert client.get("/api/v3/locations").status_code == 403
    assert client.get("/api/v3/locations", headers={"X-CSRF-Token": "csrf-1"}).status_code == 200


# -------------------------------------------------------------------------------------- mappings


def test_mappings_by_name_and_connector_id(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.set_mapping("CSV_assets", {"serial": "SERIAL_NUMBER", "name": ["NAME", "HOSTNAME"]})
    fake_oomnitza.set_managed_mapping(42, {"SERIAL_NUMBER": {"type": "attribute", "value": "serialNumber"}})
    assert client.get("/api/v2/mappings", params={"name": "CSV_assets"}).json()["name"] == ["NAME", "HOSTNAME"]
    assert client.get("/api/v2/mappings", params={"name": "LDAP"}).json() == {}
    managed = client.get("/api/v2/mappings", params={"connector_id": "42"}).json()
    assert managed["SERIAL_NUMBER"]["type"] == "attribute"
    assert client.get("/api/v2/mappings", params={"connector_id": "43"}).json() == {}
    assert client.get("/api/v2/mappings").status_code == 400


# ---------------------------------------------------------------------------------- bulk upserts


def test_insert_then_update_merges_fields(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    first = post_bulk(client, payload([{"SERIAL_NUMBER": "A1", "MODEL": "X1", "NOTES": "old"}]))
    assert first.status_code == 200
    assert first.json()["inserted"] == 1
    second = post_bulk(client, payload([{"SERIAL_NUMBER": "A1", "NOTES": None, "OS": "Linux"}]))
    assert second.json()["updated"] == 1
    assert fake_oomnitza.records("assets") == [{"SERIAL_NUMBER": "A1", "MODEL": "X1", "NOTES": None, "OS": "Linux"}]
    assert fake_oomnitza.records("users") == []
    assert len(fake_oomnitza.portions) == 2
    counts = [(p.inserted, p.updated) for p in fake_oomnitza.portions.values()]
    assert counts == [(1, 0), (0, 1)]


def test_insert_only_and_update_only(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    post_bulk(client, payload([{"SERIAL_NUMBER": "A1", "MODEL": "X1"}]))
    r = post_bulk(client, payload([{"SERIAL_NUMBER": "A1", "MODEL": "X2"}, {"SERIAL_NUMBER": "B2"}], insert_only=True))
    assert (r.json()["inserted"], r.json()["skipped"]) == (1, 1)
    r = post_bulk(client, payload([{"SERIAL_NUMBER": "A1", "MODEL": "X3"}, {"SERIAL_NUMBER": "C3"}], update_only=True))
    assert (r.json()["updated"], r.json()["skipped"]) == (1, 1)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="A1") == {"SERIAL_NUMBER": "A1", "MODEL": "X3"}
    assert fake_oomnitza.record("assets", serial_number="C3") is None
    assert len(fake_oomnitza.records("assets")) == 2


def test_both_flags_rejected(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    r = post_bulk(client, payload([{"SERIAL_NUMBER": "A1"}], insert_only=True, update_only=True))
    assert r.status_code == 400
    assert any("both" in d for d in r.json()["details"])
    assert fake_oomnitza.records("assets") == []


def test_missing_sync_value_fails_record(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    recs = [{"SERIAL_NUMBER": "A1"}, {"MODEL": "no serial"}, {"SERIAL_NUMBER": ""}, {"SERIAL_NUMBER": None}]
    r = post_bulk(client, payload(recs))
    assert (r.status_code, r.json()["inserted"], r.json()["failed"]) == (200, 1, 3)
    portion = fake_oomnitza.portion()
    assert portion.failed == 3
    assert portion.errors[0]["record"] == {"MODEL": "no serial"}


def test_error_payload_is_failed_not_stored(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    pid = str(uuid.uuid4())
    r = post_bulk(client, payload([{"raw": "item"}], pid, error="Traceback: boom"))
    assert r.status_code == 200
    r = post_bulk(client, payload([{}], pid, error="list failed", error_type="Fatal Error"))
    assert r.status_code == 200
    portion = fake_oomnitza.portion(pid)
    assert (portion.failed, portion.fatal, portion.status) == (2, True, "failed")
    assert portion.errors[0] == {"error": "Traceback: boom", "error_type": None, "records": [{"raw": "item"}]}
    assert fake_oomnitza.records("assets") == []


def test_field_ids_case_insensitive(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    post_bulk(client, payload([{"SERIAL_NUMBER": "A1", "MODEL": "X1"}]))
    r = post_bulk(client, payload([{"serial_number": "A1", "model": "X2"}], sync_field=["serial_number"]))
    assert r.json()["updated"] == 1
    assert fake_oomnitza.records("assets") == [{"SERIAL_NUMBER": "A1", "MODEL": "X2"}]


def test_composite_sync_key(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    sync = ["SERIAL_NUMBER", "MANUFACTURER"]
    post_bulk(client, payload([{"SERIAL_NUMBER": "A1", "MANUFACTURER": "Dell", "V": 1}], sync_field=sync))
    r = post_bulk(
        client,
        payload(
            [
                {"SERIAL_NUMBER": "A1", "MANUFACTURER": "HP", "V": 2},
                {"SERIAL_NUMBER": "A1", "MANUFACTURER": "Dell", "V": 3},
            ],
            sync_field=sync,
        ),
    )
    assert (r.json()["inserted"], r.json()["updated"]) == (1, 1)
    assert sorted(rec["V"] for rec in fake_oomnitza.records("assets")) == [2, 3]


def test_changing_sync_field_matches_existing_objects(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    post_bulk(client, payload([{"USER": "jdoe", "EMAIL": "j@x.com"}], data_type="users", sync_field=["USER"]))
    r = post_bulk(
        client,
        payload([{"USER": "jdoe", "EMAIL": "j@x.com", "TITLE": "Dev"}], data_type="users", sync_field=["EMAIL"]),
    )
    assert r.json()["updated"] == 1
    post_bulk(client, payload([{"USER": "jdoe", "EMAIL": "new@x.com"}], data_type="users", sync_field=["USER"]))
    r = post_bulk(client, payload([{"EMAIL": "new@x.com", "TITLE": "Lead"}], data_type="users", sync_field=["EMAIL"]))
    assert r.json()["updated"] == 1
    assert fake_oomnitza.records("users") == [{"USER": "jdoe", "EMAIL": "new@x.com", "TITLE": "Lead"}]


def test_empty_sync_field_uses_server_side_key(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    r = post_bulk(client, payload([{"SERIAL_NUMBER": "A1"}], sync_field=[]))
    assert r.json()["failed"] == 1
    fake_oomnitza.sync_keys["CSV_assets"] = ["SERIAL_NUMBER"]
    r = post_bulk(client, payload([{"SERIAL_NUMBER": "A1"}], sync_field=[]))
    assert r.json()["inserted"] == 1


def test_retried_post_is_deduplicated_within_portion(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    body = payload([{"SERIAL_NUMBER": "A1", "V": 1}, {"SERIAL_NUMBER": "B2", "V": 1}])
    post_bulk(client, body)
    body["records"][0]["V"] = 2
    r = post_bulk(client, body)
    assert r.json()["duplicates"] == 2
    p = fake_oomnitza.portion()
    assert (p.received, p.inserted, p.updated, p.duplicates, p.payloads) == (4, 2, 0, 2, 2)
    assert fake_oomnitza.record("assets", SERIAL_NUMBER="A1") == {"SERIAL_NUMBER": "A1", "V": 2}
    dump = fake_oomnitza.records_dump("assets")
    assert dump["count"] == 2
    assert dump["records"][0] == {
        "data_type": "assets",
        "key": ["A1"],
        "record": {"SERIAL_NUMBER": "A1", "V": 2},
        "portion": p.id,
        "writes": 2,
    }


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"portion": "not-a-uuid"}, "portion"),
        ({"data_type": "Assets"}, "data_type"),
        ({"records": {"SERIAL_NUMBER": "A1"}}, "records"),
        ({"records": ["x"]}, "records[0]"),
        ({"sync_field": "SERIAL_NUMBER"}, "sync_field"),
        ({"insert_only": "false"}, "insert_only"),
        ({"error": 5}, "error"),
        ({"connector_id": 5}, "exactly one"),
        ({"connector_version": ""}, "connector_version"),
        ({"surprise": 1}, "unknown"),
        ({"test_run": "yes"}, "test_run"),
    ],
)
def test_bulk_validation(client: httpx.Client, change: dict[str, Any], fragment: str) -> None:
    r = post_bulk(client, {**payload([{"SERIAL_NUMBER": "A1"}]), **change})
    assert r.status_code == 400
    assert r.json()["error"] == "malformed bulk payload"
    assert any(fragment in d for d in r.json()["details"]), r.json()


def test_bulk_validation_body_and_content_type(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    body = json.dumps(payload([{"SERIAL_NUMBER": "A1"}])).encode()
    assert client.post("/api/v3/bulk", content=body, headers={"Content-Type": "text/plain"}).status_code == 400
    latin = {"Content-Type": "application/json; charset=latin-1"}
    assert client.post("/api/v3/bulk", content=body, headers=latin).status_code == 400
    bad = client.post("/api/v3/bulk", content=b"{nope", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400
    assert fake_oomnitza.requests[-1].body == "{nope"
    missing = payload([{"SERIAL_NUMBER": "A1"}])
    del missing["connector_name"], missing["error"]
    assert len(post_bulk(client, missing).json()["details"]) == 2
    utf8 = {"Content-Type": "application/json; charset=utf-8"}
    assert client.post("/api/v3/bulk", content=body, headers=utf8).status_code == 200


def test_lenient_and_head_fields(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    head = payload([{"SERIAL_NUMBER": "A1"}], connector_id=9, test_run=True, multi_str_input_value=None)
    del head["connector_name"]
    assert post_bulk(client, head).status_code == 200
    assert fake_oomnitza.portion().test_run is True
    fake_oomnitza.lenient = True
    assert post_bulk(client, payload([{"SERIAL_NUMBER": "B1"}], surprise=1)).status_code == 200


def test_portion_keeps_data_type_and_connector(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    pid = str(uuid.uuid4())
    assert post_bulk(client, payload([{"SERIAL_NUMBER": "A1"}], pid)).status_code == 200
    assert post_bulk(client, payload([{"USER": "u"}], pid, data_type="users")).status_code == 400
    assert post_bulk(client, payload([{"SERIAL_NUMBER": "A2"}], pid, connector_name="LDAP")).status_code == 400
    assert len(fake_oomnitza.bulk_payloads) == 1  # rejected payloads are only in `requests`
    assert [r.status for r in fake_oomnitza.requests] == [200, 400, 400]


# ------------------------------------------------------------------------------------- portions


def test_finalize_idempotent_and_late_records(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    pid = str(uuid.uuid4())
    assert client.get(f"/api/v3/bulk/{pid}").json()["canceled"] is False
    post_bulk(client, payload([{"SERIAL_NUMBER": "A1"}], pid))
    first = client.post(f"/api/v3/bulk/{pid}/finalize", json={})
    second = client.post(f"/api/v3/bulk/{pid}/finalize", json={})
    assert (first.status_code, second.status_code) == (200, 200)
    post_bulk(client, payload([{"SERIAL_NUMBER": "B2"}, {"SERIAL_NUMBER": "C3"}], pid))
    p = fake_oomnitza.portion(pid)
    assert (p.finalized, p.finalize_count, p.records_after_finalize) == (True, 2, 2)
    assert p.events == [("info", 0), ("bulk", 1), ("finalize", 0), ("finalize", 0), ("bulk", 2)]
    unknown = str(uuid.uuid4())
    assert client.post(f"/api/v3/bulk/{unknown}/finalize", json={}).status_code == 200
    assert client.post(f"/api/v3/bulk/{uuid.uuid4()}/finalize").status_code == 200  # empty body
    assert fake_oomnitza.portion(unknown).received == 0


def test_portion_info_and_cancel(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    pid = str(uuid.uuid4())
    info = client.get(f"/api/v3/bulk/{pid}").json()
    assert (info["canceled"], info["status"]) == (False, "unknown")
    fake_oomnitza.cancel(pid)
    assert client.get(f"/api/v3/bulk/{pid}").json()["canceled"] is True
    fake_oomnitza.cancel(after_records=2)
    other = str(uuid.uuid4())
    assert client.get(f"/api/v3/bulk/{other}").json()["canceled"] is False
    post_bulk(client, payload([{"SERIAL_NUMBER": "A"}, {"SERIAL_NUMBER": "B"}], other))
    assert client.get(f"/api/v3/bulk/{other}").json()["canceled"] is True


def test_add_ready_portion(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    body = {"correlation_id": str(uuid.uuid4()), "failed": 1, "error_message": "boom", "error_type": "Fatal Error"}
    assert client.post("/api/v3/bulk/77/add_ready_portion", json=body).status_code == 200
    assert client.post("/api/v3/bulk/77/add_ready_portion", json={"added": 1}).status_code == 400
    assert fake_oomnitza.ready_portions == [{"integration_id": "77", **body}]


# --------------------------------------------------------------------------------------- managed


def test_check_managed_returns_queued_configs_once(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    assert client.post("/api/v3/bulk/check_managed", json={"version": "3.0.0"}).json() == []
    fake_oomnitza.enqueue_managed({"id": 5, "type": "assets", "name": "Demo"}, {"id": 6, "type": "users"})
    assert [c["id"] for c in client.post("/api/v3/bulk/check_managed", json={"version": "3.0.0"}).json()] == [5, 6]
    assert client.post("/api/v3/bulk/check_managed", json={"version": "3.0.0"}).json() == []


def test_secret_and_credential(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.set_secret("cred-1", headers={"Authorization": "Bearer xyz"}, name="Okta prod")
    request = {"url": "https://saas/api", "http_method": "GET", "params": {}, "headers": {}, "body": ""}
    r = client.post("/api/v3/auth/cred-1/secret", json=request)
    assert r.json() == {"headers": {"Authorization": "Bearer xyz"}, "params": {}}
    assert client.get("/api/v3/auth/cred-1").json()["name"] == "Okta prod"
    assert client.post("/api/v3/auth/cred-2/secret", json=request).status_code == 404
    fake_oomnitza.secrets["cred-3"] = lambda body: {"headers": {"X-Signed": body["url"]}, "params": {}}
    assert client.post("/api/v3/auth/cred-3/secret", json=request).json()["headers"] == {"X-Signed": "https://saas/api"}


# ------------------------------------------------------------------------------------------ misc


def test_locations_and_global_variables(fake_oomnitza_factory: Any) -> None:
    fake = fake_oomnitza_factory(locations=[{"location_id": "L1", "name": "Berlin"}])
    fake.global_variables = [{"name": "region", "value": "eu"}]
    with httpx.Client(base_url=fake.url, headers={"Authorization2": TOKEN}, timeout=10) as c:
        assert c.get("/api/v3/locations").json() == [{"location_id": "L1", "name": "Berlin"}]
        assert c.get("/api/v3/settings/global_variables").json() == [{"name": "region", "value": "eu"}]


def test_media_storage_listing_and_download(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.add_media_file("a.csv", b"a,b\n", creation_date=100, created_by_id=12, uid="u1")
    fake_oomnitza.add_media_file("b.csv", b"c,d\n", creation_date=200, created_by_id=12, uid="u2")
    fake_oomnitza.add_media_file("c.csv", b"x", creation_date=300, created_by_id=99, uid="u3")
    flt = "(creation_date gt 100) and (created_by_type eq 'reports_connectors')"
    query = {"filter": flt, "created_by_id": "12", "sortby": "creation_date asc"}
    files = client.get("/api/v3/media_storage", params=query).json()
    assert [f["uid"] for f in files] == ["u2"]
    # created_by_id inside the filter (before 2.3.8) narrows nothing: every integration's files.
    old_style = client.get("/api/v3/media_storage", params={"filter": f"{flt} and (created_by_id eq '12')"}).json()
    assert [f["uid"] for f in old_style] == ["u2", "u3"]
    head_style = client.get(
        "/api/v3/media_storage",
        params={"filter": "(creation_date gt 0) and (created_by_type eq 'reports_connectors')", "created_by_id": "12"},
    ).json()
    assert [f["uid"] for f in head_style] == ["u1", "u2"]
    download = httpx.get(files[0]["url"], timeout=10)  # pre-signed: no Authorization2
    assert (download.status_code, download.content) == (200, b"c,d\n")


def test_request_log(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    body = payload([{"SERIAL_NUMBER": "A1"}])
    post_bulk(client, body)
    client.get("/api/v2/mappings", params={"name": "AuthTest"})
    bulk, probe = fake_oomnitza.requests
    method, path, query, headers, logged_body = bulk
    assert (method, path, query) == ("POST", "/api/v3/bulk", {})
    assert headers["authorization2"] == TOKEN
    assert logged_body == body
    assert fake_oomnitza.bulk_payloads == [body]
    assert fake_oomnitza.bulk_payloads[0] is logged_body  # stored once, not copied
    assert (probe.query, probe.body, probe.status) == ({"name": "AuthTest"}, None, 200)
    assert fake_oomnitza.find_requests("GET", "/api/v2/") == [probe]
    # Stored objects are copies: later merges must not rewrite the logged payload.
    post_bulk(client, payload([{"SERIAL_NUMBER": "A1", "MODEL": "M"}]))
    assert fake_oomnitza.bulk_payloads[0]["records"] == [{"SERIAL_NUMBER": "A1"}]


def test_keep_log_false_keeps_counters_only(fake_oomnitza_factory: Any) -> None:
    fake = fake_oomnitza_factory(keep_log=False)
    with httpx.Client(base_url=fake.url, headers={"Authorization2": TOKEN}, timeout=10) as c:
        assert post_bulk(c, payload([{"SERIAL_NUMBER": "A1"}, {"SERIAL_NUMBER": "B2"}])).status_code == 200
        stats = c.get("/__fake/stats").json()  # control routes need no token
        records = c.get("/__fake/records", params={"data_type": "assets"}).json()
    assert fake.requests == [] and fake.bulk_payloads == []
    assert fake.portion().events == []
    assert (stats["records_received"], stats["records_stored"], stats["inserted"]) == (2, 2, 2)
    assert stats["requests"] == {"POST /api/v3/bulk": 1}
    assert stats["bulk_payloads"]["count"] == 1
    assert records["count"] == 2


def test_control_routes(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    anon = httpx.Client(base_url=fake_oomnitza.url, timeout=10)
    assert anon.post("/__fake/fail", json={"method": "GET", "path_prefix": "/api/v3/loc", "status": 500}).is_success
    assert client.get("/api/v3/locations").status_code == 500
    assert anon.post("/__fake/managed", json={"id": 1, "type": "users"}).is_success
    assert client.post("/api/v3/bulk/check_managed", json={"version": "3"}).json() == [{"id": 1, "type": "users"}]
    pid = str(uuid.uuid4())
    assert anon.post(f"/__fake/portions/{pid}/cancel").is_success
    assert client.get(f"/api/v3/bulk/{pid}").json()["canceled"] is True
    assert anon.post("/__fake/reset").is_success
    assert fake_oomnitza.portions == {}
    anon.close()


def test_reset(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.set_mapping("LDAP", {"uid": "USER"})
    post_bulk(client, payload([{"SERIAL_NUMBER": "A1"}]))
    fake_oomnitza.fail("GET", "/api/", 500)
    fake_oomnitza.reset()
    assert fake_oomnitza.records("assets") == [] and fake_oomnitza.portions == {} and fake_oomnitza.requests == []
    assert client.get("/api/v2/mappings", params={"name": "LDAP"}).json() == {"uid": "USER"}


# ------------------------------------------------------------------------------- fault injection


def test_fail_503_twice_then_success(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.fail("POST", "/api/v3/bulk", 503, times=2)
    body = payload([{"SERIAL_NUMBER": "A1"}])
    assert [post_bulk(client, body).status_code for _ in range(3)] == [503, 503, 200]
    assert len(fake_oomnitza.records("assets")) == 1
    assert [r.status for r in fake_oomnitza.requests] == [503, 503, 200]
    assert fake_oomnitza.stats()["requests"] == {"POST /api/v3/bulk": 3}


def test_fail_429_with_retry_after(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.fail("*", "/api/", 429, headers={"Retry-After": "1"}, body="slow down")
    r = client.get("/api/v3/locations")
    assert (r.status_code, r.headers["retry-after"], r.text) == (429, "1", "slow down")
    assert client.get("/api/v3/locations").status_code == 200


def test_fault_applies_before_auth_and_only_to_matching(fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.fail("GET", "/api/v3/locations", 502)
    r = httpx.get(f"{fake_oomnitza.url}/api/v3/settings/global_variables", timeout=10)
    assert r.status_code == 401  # other path: not consumed
    r = httpx.get(f"{fake_oomnitza.url}/api/v3/locations", timeout=10)
    assert r.status_code == 502


def test_latency_applied(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    client.get("/api/v3/locations")  # warm the connection
    fake_oomnitza.latency = 0.3
    start = time.monotonic()
    assert client.get("/api/v3/locations").status_code == 200
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    client.get("/__fake/health")  # control routes are not slowed
    assert time.monotonic() - start < 0.3


def test_delay_causes_client_timeout(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.delay("GET", "/api/v3/locations", 1.0)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/api/v3/locations", timeout=0.2)
    assert client.get("/api/v3/locations").status_code == 200


def test_stall_answers_504_and_stores_nothing(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.stall("POST", "/api/v3/bulk$", 0.2)
    body = payload([{"SERIAL_NUMBER": "S1"}])
    r = post_bulk(client, body)
    assert r.status_code == 504 and "text/html" in r.headers["content-type"]
    assert fake_oomnitza.records("assets") == []
    assert post_bulk(client, body).status_code == 200  # the exact path only, once


def test_an_exact_path_fault_spares_longer_paths(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.fail("POST", "/api/v3/bulk$", 503, times=5)
    portion = str(uuid.uuid4())
    assert client.post(f"/api/v3/bulk/{portion}/finalize", json={}).status_code == 200
    assert post_bulk(client, payload([{"SERIAL_NUMBER": "S1"}])).status_code == 503


def test_html_page_with_status_200(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.html_page("POST", "/api/v3/bulk")
    r = post_bulk(client, payload([{"SERIAL_NUMBER": "S1"}]))
    assert r.status_code == 200 and r.text.startswith("<!DOCTYPE html>")
    assert fake_oomnitza.records("assets") == []


def test_bodies_over_max_body_bytes_get_nginx_413(fake_oomnitza: FakeOomnitza, client: httpx.Client) -> None:
    fake_oomnitza.max_body_bytes = 1000
    big = payload([{"SERIAL_NUMBER": f"S{i}", "NOTE": "x" * 50} for i in range(20)])
    r = post_bulk(client, big)
    assert r.status_code == 413 and "413 Request Entity Too Large" in r.text
    assert post_bulk(client, payload([{"SERIAL_NUMBER": "S1"}])).status_code == 200
    assert len(fake_oomnitza.records("assets")) == 1


def test_peak_in_flight(fake_oomnitza: FakeOomnitza) -> None:
    fake_oomnitza.latency = 0.3
    codes: list[int] = []

    def one() -> None:
        codes.append(httpx.get(f"{fake_oomnitza.url}/api/v3/locations", headers={"Authorization2": TOKEN}).status_code)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert codes == [200] * 4
    stats = fake_oomnitza.stats()
    assert stats["peak_in_flight"] == 4
    assert stats["client_connections_seen"] == 4


# --------------------------------------------------------------------------------- server helper


def test_serve_binds_real_port_and_cleans_up() -> None:
    fake = FakeOomnitza()
    before = threading.active_count()
    with serve(fake.app, dedicated=True) as url:
        port = int(url.rsplit(":", 1)[1])
        assert url.startswith("http://127.0.0.1:") and port > 0
        assert httpx.get(f"{url}/__fake/health", timeout=10).json() == {"ok": True}
    assert threading.active_count() == before
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_serve_lends_a_running_server_to_one_app_at_a_time() -> None:
    first, second = FakeOomnitza(), FakeOomnitza(token="second-token")
    with serve(first.app) as url:
        assert httpx.get(f"{url}/api/v3/locations", headers={"Authorization2": TOKEN}, timeout=10).status_code == 200
        with serve(second.app) as other_url:  # in use: another server
            assert other_url != url
    answer = httpx.get(f"{url}/api/v3/locations", headers={"Authorization2": TOKEN}, timeout=10)
    assert answer.status_code == 503 and "no fake" in answer.text  # the app is gone with its block
    with serve(second.app) as again:
        assert again in (url, other_url)  # reused, not started anew
        assert httpx.get(f"{again}/api/v3/locations", headers={"Authorization2": "second-token"}, timeout=10).is_success
    assert len(first.requests) == 1 and len(second.requests) == 1


def test_tls(fake_oomnitza_tls: Any) -> None:
    r = httpx.get(
        f"{fake_oomnitza_tls.url}/api/v3/locations",
        headers={"Authorization2": TOKEN},
        verify=ssl.create_default_context(cafile=fake_oomnitza_tls.ca_file),
        timeout=10,
    )
    assert fake_oomnitza_tls.url.startswith("https://")
    assert r.status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{fake_oomnitza_tls.url}/api/v3/locations", timeout=10)  # untrusted CA


def test_mutual_tls_login(fake_oomnitza_mtls: Any) -> None:
    ctx = ssl.create_default_context(cafile=fake_oomnitza_mtls.ca_file)
    with pytest.raises(httpx.TransportError):  # no client certificate: handshake refused
        httpx.post(f"{fake_oomnitza_mtls.url}/api/request_token", data={"login": "", "password": ""}, verify=ctx)
    ctx.load_cert_chain(fake_oomnitza_mtls.client_pem)
    r = httpx.post(
        f"{fake_oomnitza_mtls.url}/api/request_token", data={"login": "", "password": ""}, verify=ctx, timeout=10
    )
    assert r.json() == {"token": TOKEN}


# ------------------------------------------------------------------------------------------- CLI


def test_cli_serves_and_writes_state_on_sigterm(tmp_path: Path) -> None:
    port_file, state_file = tmp_path / "port", tmp_path / "state.json"
    cmd = [sys.executable, "-m", "tests.fakes.oomnitza", "--port", "0", "--latency-ms", "20", "--token", "T"]
    cmd += ["--port-file", str(port_file), "--state-file", str(state_file)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists() or not port_file.read_text():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "fake did not start"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        with httpx.Client(base_url=url, headers={"Authorization2": "T"}, timeout=10) as c:
            pid = str(uuid.uuid4())
            assert post_bulk(c, payload([{"SERIAL_NUMBER": "A1"}, {"SERIAL_NUMBER": "B2"}], pid)).status_code == 200
            assert c.post(f"/api/v3/bulk/{pid}/finalize", json={}).status_code == 200
            assert c.get("/api/v3/locations", headers={"Authorization2": "x"}).status_code == 401
            assert c.get("/__fake/stats").json()["records_stored"] == 2
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.splitlines()[0] == f"listening on {url}"
    state = json.loads(state_file.read_text())
    stats = state["stats"]
    assert stats["requests"]["POST /api/v3/bulk"] == 1
    assert stats["requests"]["GET /api/v3/locations"] == 1
    assert stats["bulk_payloads"]["count"] == 1
    assert (stats["records_received"], stats["records_stored"], stats["inserted"]) == (2, 2, 2)
    assert stats["portions"][pid]["finalized"] is True
    assert stats["portions"][pid]["records_after_finalize"] == 0
    assert stats["peak_in_flight"] >= 1
    assert state["records"]["count"] == 2
    assert state["records"]["records"][0]["record"] == {"SERIAL_NUMBER": "A1"}
