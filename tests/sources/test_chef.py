"""[chef] end to end through the CLI against the fake Chef Infra Server and the fake Oomnitza.

The fake verifies every request's signature with the client's public key, so each passing test
also proves the signing (1.3 by default, 1.0 where asked)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.chef import FakeChef, linux_node, mac_node, new_key, partial_row, pem, windows_node
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve
from tests.helpers import run_cli
from tests.sourcekit import (
    STALL_TIMEOUT,
    STANDARD_FAULTS,
    assert_accounted,
    assert_one_line_error,
    forget_sync_state,
    inject_fault,
    upload,
    write_config,
)

KEY = new_key()
MAPPINGS = {
    "NAME": '{"source": "hardware.name"}',
    "SERIAL_NUMBER": '{"source": "hardware.serial_number"}',
    "MODEL": '{"source": "hardware.model"}',
    "MEMORY": '{"source": "hardware.total_memory_mb"}',
    "HDD": '{"source": "hardware.total_hdd_mb"}',
    "CPU": '{"source": "hardware.cpu"}',
    "CPU_COUNT": '{"source": "hardware.cpu_count"}',
    "IP": '{"source": "hardware.ip_address"}',
    "PLATFORM": '{"source": "hardware.platform"}',
}
WEB_07 = {
    "NAME": "web-07",
    "SERIAL_NUMBER": None,
    "MODEL": None,
    "MEMORY": 15931.98046875,
    "HDD": 99053.671875,
    "CPU": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
    "CPU_COUNT": 8,
    "IP": "10.1.0.7",
    "PLATFORM": "ubuntu",
}
MBP = {
    "NAME": "mbp-jdoe",
    "SERIAL_NUMBER": "C02FAKE0MD6R",
    "MODEL": "Mac15,6",
    "MEMORY": 32768,
    "HDD": 971350180 / 1024,
    "CPU": "Apple M3 Pro",
    "CPU_COUNT": 1,
    "IP": "10.20.30.41",
    "PLATFORM": "mac_os_x",
}
WIN = {
    "NAME": "win-042",
    "SERIAL_NUMBER": "00330-80000-00000-AA123",  # the OS product id, as the reference reads it
    "MODEL": "Latitude 7440",
    "MEMORY": 32768.0,
    "HDD": 498000000 / 1024,  # first filesystem entry
    "CPU": "Intel(R) Core(TM) i7-1365U",
    "CPU_COUNT": 1,
    "IP": "10.20.30.42",
    "PLATFORM": "windows",
}


def fleet() -> list[dict[str, Any]]:
    nodes = [mac_node(), linux_node(), windows_node()]
    nodes += [linux_node(f"app-{i:02d}", serial=f"VMW-{i:02d}") for i in range(4)]
    return nodes  # 7 nodes


@pytest.fixture
def chef() -> Iterator[FakeChef]:
    fake = FakeChef(fleet(), clients={"oomnitza-sync": KEY.public_key()}, max_rows=3)
    with serve(fake.app, date_header=False) as url:  # the fake sends its own (skewed) Date
        fake.url = url
        yield fake


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "oomnitza-sync.pem"
    path.write_bytes(pem(KEY))
    return path


def settings(chef: FakeChef, key_file: Path, **extra: str) -> dict[str, str]:
    return {
        "url": f"{chef.url}/organizations/acme/",  # the seed README writes a trailing slash
        "client": "oomnitza-sync",
        "key_file": str(key_file),
        "sync_field": "NAME",
        **extra,
    }


def run(
    tmp_path: Path,
    oomnitza: FakeOomnitza,
    chef: FakeChef,
    key_file: Path,
    mappings: dict[str, str] | None = None,
    **extra: str,
) -> Any:
    ini = write_config(tmp_path, oomnitza, "chef", settings(chef, key_file, **extra), MAPPINGS | (mappings or {}))
    return upload(ini, "chef")


def test_partial_search_several_pages_signed_1_3(
    tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, chef, key_file)
    assert result.code == 0, result.all
    assert_accounted(result, "chef", pulled=7, sent=7)
    calls = chef.calls("/organizations/acme/search/node")
    assert [c.method for c in calls] == ["POST", "POST", "POST"]  # 3 + 3 + 1 rows: the fake caps at 3
    assert [c.query["start"] for c in calls] == ["0", "3", "6"]
    assert calls[0].query == {"q": "name:*", "rows": "1000", "start": "0"}
    assert calls[0].headers["x-ops-sign"] == "algorithm=sha256;version=1.3"
    assert calls[0].headers["x-ops-server-api-version"] == "1"
    assert calls[0].headers["accept"] == "application/json"
    wanted = json.loads(calls[0].body)
    # Partial search reads the merged attributes: paths carry no precedence level.
    assert wanted["platform"] == ["platform"] and wanted["memory.total"] == ["memory", "total"]
    assert not any(path[0] in ("automatic", "normal", "default", "override") for path in wanted.values())
    assert not any(path[0] == "packages" for path in wanted.values())  # no whole Ohai tree
    assert chef.verified == ["algorithm=sha256;version=1.3"] * 3
    assert fake_oomnitza.record("assets", NAME="web-07") == WEB_07
    assert fake_oomnitza.record("assets", NAME="mbp-jdoe") == MBP
    assert fake_oomnitza.record("assets", NAME="win-042") == WIN
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "Chef"


def test_full_search_gives_the_same_records(
    tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, chef, key_file, partial_search="false")
    assert result.code == 0, result.all
    assert_accounted(result, "chef", pulled=7, sent=7)
    assert {c.method for c in chef.calls()} == {"GET"}
    assert fake_oomnitza.record("assets", NAME="web-07") == WEB_07
    assert fake_oomnitza.record("assets", NAME="mbp-jdoe") == MBP
    assert fake_oomnitza.record("assets", NAME="win-042") == WIN


def test_protocol_1_0_and_pkcs8_key(tmp_path: Path, chef: FakeChef, fake_oomnitza: FakeOomnitza) -> None:
    key_file = tmp_path / "pkcs8.pem"
    key_file.write_bytes(pem(KEY, pkcs8=True))
    result = run(tmp_path, fake_oomnitza, chef, key_file, signing_protocol="1.0")
    assert result.code == 0, result.all
    assert_accounted(result, "chef", pulled=7, sent=7)
    assert chef.verified == ["algorithm=sha1;version=1.0;"] * 3
    assert "x-ops-server-api-version" not in chef.calls()[0].headers
    assert fake_oomnitza.record("assets", NAME="web-07") == WEB_07


def test_wrong_key_is_rejected_once(tmp_path: Path, chef: FakeChef, fake_oomnitza: FakeOomnitza) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(pem(new_key()))
    result = run(tmp_path, fake_oomnitza, chef, other)
    assert_one_line_error(
        result,
        "[chef] Chef Infra Server rejected the signed request (401: Failed to authenticate as 'oomnitza-sync'",
        "check client, key_file",
    )
    assert "BEGIN" not in result.all  # the key never appears
    assert len(chef.calls()) == 1  # a rejected credential is not retried
    assert chef.last_reject == "bad signature"
    assert fake_oomnitza.records("assets") == []


def test_clock_skew_is_named(tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza) -> None:
    chef.clock_offset = dt.timedelta(hours=1)
    result = run(tmp_path, fake_oomnitza, chef, key_file)
    assert_one_line_error(result, "rejected the signed request (401", "clock differs from the server's by about 60 min")
    assert chef.last_reject == "clock skew"
    assert fake_oomnitza.records("assets") == []


def test_429_retry_after_resigns(tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza) -> None:
    chef.fail("POST", "/organizations/acme/search/node", 429, headers={"Retry-After": "1"})
    result = run(tmp_path, fake_oomnitza, chef, key_file)
    assert result.code == 0, result.all
    assert_accounted(result, "chef", pulled=7, sent=7)
    calls = chef.calls()
    assert len(calls) == 4
    assert calls[0].headers["x-ops-timestamp"] != calls[1].headers["x-ops-timestamp"]  # signed afresh


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
def test_transient_fault_on_a_later_page(
    tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza, fault: str
) -> None:
    inject_fault(chef, fault, "POST", "/organizations/acme/search/node", query={"start": "3"})
    result = run(tmp_path, fake_oomnitza, chef, key_file, request_timeout=STALL_TIMEOUT)
    assert result.code == 0, result.all
    assert_accounted(result, "chef", pulled=7, sent=7)
    assert len(fake_oomnitza.records("assets")) == 7


def test_5xx_retried(tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza) -> None:
    chef.fail("POST", "/organizations/acme/search/node", 503, times=2)
    result = run(tmp_path, fake_oomnitza, chef, key_file)
    assert result.code == 0, result.all
    assert_accounted(result, "chef", pulled=7, sent=7)


def test_empty_org(tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza) -> None:
    chef.nodes.clear()
    result = run(tmp_path, fake_oomnitza, chef, key_file)
    assert result.code == 0, result.all
    assert_accounted(result, "chef", pulled=0)
    assert len(chef.calls()) == 1
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_malformed_body_fails_loudly(
    tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    chef.fail(
        "POST",
        "/organizations/acme/search/node",
        200,
        body="<html>upgrade</html>",
        headers={"Content-Type": "text/html"},
    )
    result = run(tmp_path, fake_oomnitza, chef, key_file)
    assert_one_line_error(result, "returned a body that is not JSON (content-type text/html)")
    assert fake_oomnitza.records("assets") == []


def test_api_error_mid_run_fails_the_run(
    tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    # The reference collected everything first, then logged and sent zero records; we stream page
    # by page, so the first page is sent, and the run fails loudly.
    chef.broken_from = 3
    result = run(tmp_path, fake_oomnitza, chef, key_file)
    assert_one_line_error(result, "failed: 400")
    assert_accounted(result, "chef", pulled=3, sent=3)
    assert len(fake_oomnitza.records("assets")) == 3


def test_wrong_organization(tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza) -> None:
    s = settings(chef, key_file, url=f"{chef.url}/organizations/acmee")
    result = upload(write_config(tmp_path, fake_oomnitza, "chef", s, MAPPINGS), "chef")
    assert_one_line_error(result, "answered 404", "check the organization in url")


def test_extensions_per_platform_default_and_override(
    tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    unconverged = {"name": "placeholder", "chef_environment": "_default", "normal": {}, "automatic": {}}
    chef.nodes[:] = [mac_node(), linux_node(), windows_node(), unconverged]
    extension = json.dumps(
        {
            "__default__": {
                "env": "chef_environment",
                "first_tag": "normal.tags.0",
                "serial_number": "automatic.dmi.system.serial_number",
            },
            "mac_os_x": {"machine_name": "automatic.machinename", "serial_number": "automatic.hardware.serial_number"},
            "windows": {"machine_name": "automatic.kernel.cs_info.model"},
        }
    )
    extra = {
        "ENV": '{"source": "hardware.env"}',
        "TAG": '{"source": "hardware.first_tag"}',
        "MACHINE": '{"source": "hardware.machine_name"}',
    }
    for partial in ("true", "false"):
        fake_oomnitza.reset()
        forget_sync_state()  # a new Oomnitza: send everything again
        result = run(
            tmp_path, fake_oomnitza, chef, key_file, extra, attribute_extension=extension, partial_search=partial
        )
        assert result.code == 0, result.all
        assert_accounted(result, "chef", pulled=4, sent=4)
        mac = fake_oomnitza.record("assets", NAME="mbp-jdoe")
        assert (mac["ENV"], mac["TAG"], mac["MACHINE"], mac["SERIAL_NUMBER"]) == (
            "_default",
            "laptop",
            "mbp-jdoe",
            "C02FAKE0MD6R",
        )  # the later mac_os_x block wins
        web = fake_oomnitza.record("assets", NAME="web-07")
        assert (web["ENV"], web["TAG"], web["MACHINE"], web["SERIAL_NUMBER"]) == (
            "production",
            None,
            None,
            "VMW-4221-FAKE",
        )
        win = fake_oomnitza.record("assets", NAME="win-042")
        assert (win["MACHINE"], win["SERIAL_NUMBER"]) == ("Latitude 7440", None)  # __default__ overrides
        placeholder = fake_oomnitza.record("assets", NAME="placeholder")  # no platform: __default__ only
        assert (placeholder["ENV"], placeholder["PLATFORM"], placeholder["MACHINE"]) == ("_default", None, None)


def test_node_mappings(tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza) -> None:
    node_mappings = json.dumps(
        {
            "__default__": {
                "serial_number": "automatic.dmi.system.serial_number",
                "model": "automatic.dmi.system.product_name",
            }
        }
    )
    result = run(tmp_path, fake_oomnitza, chef, key_file, node_mappings=node_mappings)
    assert result.code == 0, result.all
    web = fake_oomnitza.record("assets", NAME="web-07")
    assert (web["SERIAL_NUMBER"], web["MODEL"]) == ("VMW-4221-FAKE", "VMware Virtual Platform")
    mac = fake_oomnitza.record("assets", NAME="mbp-jdoe")  # no DMI on macOS: the built-in rule stays
    assert (mac["SERIAL_NUMBER"], mac["MODEL"]) == ("C02FAKE0MD6R", "Mac15,6")


def test_extension_config_is_per_section(
    tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    # The reference kept the extension process-wide: the section built last won for both.
    ini = write_config(
        tmp_path,
        fake_oomnitza,
        "chef",
        settings(chef, key_file, attribute_extension='{"__default__": {"x": "automatic.kernel.name"}}'),
        {"NAME": "hardware.name", "X": "hardware.x"},
    )
    text = ini.read_text() + "\n".join(
        [
            "",
            "[chef.lab]",
            "enable = True",
            f"url = {chef.url}/organizations/acme",
            "client = oomnitza-sync",
            f"key_file = {key_file}",
            "sync_field = NAME",
            'attribute_extension = {"__default__": {"x": "chef_environment"}}',
            "mapping.NAME = hardware.name",
            "mapping.X = hardware.x",
            "",
        ]
    )
    ini.write_text(text)
    result = run_cli("upload", "chef", "chef.lab", "--ini", str(ini))
    assert result.code == 0, result.all
    first, second = (p for p in fake_oomnitza.bulk_payloads if p["records"])
    assert first["portion"] != second["portion"]
    assert {r["NAME"]: r["X"] for r in first["records"]}["web-07"] == "Linux"
    assert {r["NAME"]: r["X"] for r in second["records"]}["web-07"] == "production"


def test_bad_settings_are_config_errors(
    tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    result = run(tmp_path, fake_oomnitza, chef, key_file, attribute_extension="{'__default__': 1}")
    assert_one_line_error(result, "[chef] attribute_extension is not valid JSON")
    result = run(tmp_path, fake_oomnitza, chef, tmp_path / "missing.pem")
    assert_one_line_error(result, "[chef] key_file", "missing.pem' does not exist")
    assert chef.calls() == []


def test_fake_partial_search_reads_the_merged_node() -> None:
    """The fake answers partial search the way chef-server does (ejson_for_indexing): what the
    source sends is tested against that, not against our own idea of it."""
    node = linux_node()
    node["normal"] = {"tags": ["n"], "owner": "normal-owner"}
    node["default"] = {"tags": ["d"], "owner": "default-owner", "rack": {"row": "A"}}
    node["override"] = {"rack": {"unit": 7}}
    wanted = {
        "seed_style": ["automatic", "ipaddress"],
        "ip": ["ipaddress"],
        "kernel": ["kernel", "name"],
        "owner": ["owner"],
        "tags": ["tags"],
        "rack": ["rack"],
        "env": ["chef_environment"],
        "role": ["role"],
        "empty": [],
    }
    assert partial_row(node, wanted) == {
        "seed_style": None,  # a precedence level is not a key of the indexed node
        "ip": "10.1.0.7",
        "kernel": "Linux",
        "owner": "normal-owner",  # normal beats default
        "tags": ["n"],  # lists are replaced, not merged
        "rack": {"row": "A", "unit": 7},  # objects merge
        "env": "production",
        "role": ["web"],
        "empty": None,
    }


def test_partial_and_full_search_agree_on_merged_attributes(
    tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    node = linux_node("db-01")
    node["normal"] = {"tags": ["n"], "owner": "normal-owner"}
    node["default"] = {"tags": ["d"], "owner": "default-owner", "rack": {"row": "A"}}
    node["override"] = {"rack": {"unit": 7}}
    chef.nodes[:] = [node, mac_node(), windows_node()]
    extension = json.dumps(
        {
            "__default__": {
                "owner": "normal.owner",
                "first_tag": "default.tags.0",
                "rack_row": "override.rack.row",
                "rack_unit": "rack.unit",
                "kernel": "automatic.kernel.name",
            }
        }
    )
    extra = {
        "OWNER": '{"source": "hardware.owner"}',
        "TAG": '{"source": "hardware.first_tag"}',
        "ROW": '{"source": "hardware.rack_row"}',
        "UNIT": '{"source": "hardware.rack_unit"}',
        "KERNEL": '{"source": "hardware.kernel"}',
        "ROLE": '{"source": "role.0"}',  # top-level keys of the indexed node, mapped directly
        "ENV": '{"source": "chef_environment"}',
        "NORMAL_OWNER": '{"source": "normal.owner"}',  # a seed-style path mapped directly
    }
    stored = {}
    for partial in ("true", "false"):
        fake_oomnitza.reset()
        forget_sync_state()  # a new Oomnitza: send everything again
        result = run(
            tmp_path, fake_oomnitza, chef, key_file, extra, attribute_extension=extension, partial_search=partial
        )
        assert result.code == 0, result.all
        assert_accounted(result, "chef", pulled=3, sent=3)
        stored[partial] = sorted(fake_oomnitza.records("assets"), key=lambda r: r["NAME"])
    assert stored["true"] == stored["false"]
    db = next(r for r in stored["true"] if r["NAME"] == "db-01")
    assert {k: db[k] for k in extra} == {
        "OWNER": "normal-owner",
        "TAG": "n",  # the merged list: normal's replaced default's
        "ROW": "A",
        "UNIT": 7,
        "KERNEL": "Linux",
        "ROLE": "web",
        "ENV": "production",
        "NORMAL_OWNER": "normal-owner",
    }
    body = json.loads(next(c.body for c in chef.calls() if c.method == "POST"))
    assert body["owner"] == ["owner"] and body["rack.unit"] == ["rack", "unit"] and body["role"] == ["role"]


def test_field_mapped_only_in_oomnitza_is_requested(
    tmp_path: Path, chef: FakeChef, key_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    fake_oomnitza.set_mapping("Chef", {"automatic.kernel.name": "KERNEL", "hardware.fqdn": "FQDN"})
    result = run(tmp_path, fake_oomnitza, chef, key_file)
    assert result.code == 0, result.all
    assert_accounted(result, "chef", pulled=7, sent=7)
    body = json.loads(chef.calls()[0].body)
    assert body["kernel.name"] == ["kernel", "name"]
    web = fake_oomnitza.record("assets", NAME="web-07")
    assert (web["KERNEL"], web["FQDN"]) == ("Linux", "web-07.prod.example")
    assert fake_oomnitza.record("assets", NAME="win-042")["KERNEL"] == "Microsoft Windows 11 Enterprise"
    assert fake_oomnitza.record("assets", NAME="mbp-jdoe")["KERNEL"] is None
