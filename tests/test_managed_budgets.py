"""Managed runs against hostile or broken cloud templates and check_managed answers, end to end:
the fake Oomnitza hands out configs, a fake SaaS answers them, the connector runs through its CLI
(in-process, or as a real process where signals and polling are the point)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.saas import FakeSaas

from .helpers import ROOT
from .test_managed import MAPPING, STATIC, ini, managed, portions_of, worked_example

ENDLESS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
# Loops for hours, but only for the second device: the other records of its page are fine.
HOSTILE = "{% if serial == 'C02XK2' %}" + ENDLESS + "{% endif %}{{ model }}"


@pytest.fixture
def oomnitza(fake_oomnitza: FakeOomnitza) -> FakeOomnitza:
    fake_oomnitza.set_managed_mapping(67, MAPPING)
    fake_oomnitza.sync_keys["67"] = ["serial_number"]
    return fake_oomnitza


def one_page(url: str, **changes: Any) -> dict[str, Any]:
    cfg = worked_example(url)
    cfg["inputs"]["page_size"] = {"value": "10"}
    cfg.update(changes)
    return cfg


def errors_of(oomnitza: FakeOomnitza) -> list[dict[str, Any]]:
    return [p for p in oomnitza.bulk_payloads if p.get("error")]


def test_hostile_mapping_fails_only_its_record(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    oomnitza.set_managed_mapping(67, {**MAPPING, "model": {"type": "attribute", "value": HOSTILE}})
    oomnitza.enqueue_managed(one_page(saas.url))
    result = managed(ini(tmp_path, oomnitza, STATIC + "template_cpu_seconds = 0.5\n"))
    assert result.code == 3, result.all  # a record failed: upload's exit code for it
    (error,) = errors_of(oomnitza)
    assert error["error"] == (
        f"Failed to process the mapping value: {HOSTILE}. "
        "The error is: template for field model exceeded its 0.5 s CPU budget"
    )
    assert error["records"][0]["serial"] == "C02XK2" and "error_type" not in error
    assert sorted(r["serial_number"] for r in oomnitza.records("assets")) == ["C02XK1", "C02XK3"]
    (portion,) = portions_of(oomnitza)
    assert portion.finalized and portion.records_after_finalize == 0
    assert "Traceback" not in result.all


@pytest.mark.parametrize(
    ("field", "template", "message"),
    [
        ("zero", "{{ 1 / 0 if serial == 'C02XK2' else 1 }}", "ZeroDivisionError: division by zero"),
        ("type", "{{ serial + 1 if serial == 'C02XK2' else 1 }}", "TypeError: can only concatenate str"),
        (
            "deep",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) if serial == 'C02XK2' else 1 }}",
            "RecursionError: maximum recursion depth exceeded",
        ),
        ("memory", "{{ 'a' * 10 ** 10 if serial == 'C02XK2' else 1 }}", "template for field memory exceeded its"),
        ("sandbox", "{{ import('os') if serial == 'C02XK2' else 1 }}", "template refused by the sandbox"),
        ("output", "{{ 'x' * 2000000 if serial == 'C02XK2' else 1 }}", "template for field output exceeded its 1 MiB"),
    ],
)
def test_any_exception_in_a_mapping_fails_that_record_only(
    tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza, field: str, template: str, message: str
) -> None:
    oomnitza.set_managed_mapping(67, {**MAPPING, field: {"type": "attribute", "value": template}})
    oomnitza.enqueue_managed(one_page(saas.url))
    result = managed(ini(tmp_path, oomnitza, STATIC + "template_memory_mib = 256\n"))
    assert result.code == 3 and "Traceback" not in result.all, result.all
    (error,) = errors_of(oomnitza)
    assert error["error"].startswith(f"Failed to process the mapping value: {template}. The error is: {message}")
    assert "\n" not in error["error"]
    assert sorted(r["serial_number"] for r in oomnitza.records("assets")) == ["C02XK1", "C02XK3"]
    assert portions_of(oomnitza)[0].finalized


def test_a_converter_that_raises_fails_that_record_only(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    oomnitza.enqueue_managed(one_page(saas.url))
    section = (
        STATIC
        + 'mapping.MODEL = {"source": "model", "converter": "picky"}\n\n[converters]\npicky:\n'
        + "    return value if record['serial'] != 'C02XK3' else 1 / 0\n"
    )
    assert managed(ini(tmp_path, oomnitza, section)).code == 3
    (error,) = errors_of(oomnitza)
    assert error["error"].startswith("Failed to process the mapping value: model. The error is: ")
    assert "division by zero" in error["error"] and error["records"][0]["serial"] == "C02XK3"
    assert sorted(r["serial_number"] for r in oomnitza.records("assets")) == ["C02XK1", "C02XK2"]


def test_exceptions_in_list_and_detail_templates(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    broken_list = one_page(saas.url)
    broken_list["list_behavior"]["result"] = "{{ list_response['devices'] | length / 0 }}"
    oomnitza.enqueue_managed(broken_list)
    result = managed(ini(tmp_path, oomnitza, STATIC))
    assert result.code == 1 and "Traceback" not in result.all
    (ready,) = oomnitza.ready_portions
    assert ready["failed"] == 1 and ready["error_type"] == "Fatal Error"
    assert ready["error_message"] == (
        "Failed to fetch the first block of data. The error is: ZeroDivisionError: division by zero. "
        "The further processing is impossible"
    )

    broken_detail = one_page(saas.url)
    broken_detail["detail_behavior"]["result"] = "{{ detail_response if detail_response['id'] != 'dv-1' else [] + 1 }}"
    oomnitza.enqueue_managed(broken_detail)
    assert managed(ini(tmp_path, oomnitza, STATIC)).code == 3
    (error,) = errors_of(oomnitza)
    assert error["error"].startswith("Failed to fetch the details of a single item from the block. The error is: ")
    assert "TypeError" in error["error"] and error["records"] == [{"id": "dv-1", "name": "MacBookPro18,3"}]
    assert sorted(r["serial_number"] for r in oomnitza.records("assets")) == ["C02XK2", "C02XK3"]


def only_for(item_id: str, template: str, variable: str = "list_response_item") -> str:
    return "{% if " + variable + "['id'] == '" + item_id + "' %}" + ENDLESS + "{% endif %}" + template


@pytest.mark.parametrize(
    ("where", "template", "label"),
    [
        (
            ("detail_behavior", "url"),
            only_for("dv-2", "{{ inputs.base_url }}/devices/{{ list_response_item['id'] }}"),
            "detail call url",
        ),
        (
            ("software_behavior", "name"),
            only_for("dv-2", "{{ software_response_item['title'] }}", "detail_response"),
            "software name",
        ),
    ],
)
def test_a_looping_call_or_software_template_fails_its_item(
    tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza, where: tuple[str, str], template: str, label: str
) -> None:
    cfg = one_page(saas.url)
    cfg[where[0]][where[1]] = template
    oomnitza.enqueue_managed(cfg)
    assert managed(ini(tmp_path, oomnitza, STATIC + "template_cpu_seconds = 0.2\n")).code == 3
    (error,) = errors_of(oomnitza)
    assert error["error"].endswith(f"The error is: template for {label} exceeded its 0.2 s CPU budget")
    assert error["records"] == [{"id": "dv-2", "name": "MacBookPro18,3"}]
    assert sorted(r["serial_number"] for r in oomnitza.records("assets")) == ["C02XK1", "C02XK3"]
    assert portions_of(oomnitza)[0].finalized


@pytest.mark.parametrize(
    ("where", "label"),
    [
        (("url",), "list call url"),
        (("pagination", "break_early"), "pagination break_early"),
        (("result",), "list result"),
    ],
)
def test_a_looping_list_template_fails_the_page(
    tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza, where: tuple[str, ...], label: str
) -> None:
    cfg = one_page(saas.url)
    spec = cfg["list_behavior"]
    for key in where[:-1]:
        spec = spec[key]
    spec[where[-1]] = ENDLESS + spec[where[-1]]
    oomnitza.enqueue_managed(cfg)
    assert managed(ini(tmp_path, oomnitza, STATIC + "template_cpu_seconds = 0.2\n")).code == 1
    (ready,) = oomnitza.ready_portions
    assert ready["error_message"] == (
        f"Failed to fetch the first block of data. The error is: template for {label} exceeded its 0.2 s CPU "
        "budget. The further processing is impossible"
    )


def test_budgets_come_from_the_local_section_only(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    big = "{{ 'x' * 2000000 }}"  # 2 MiB of text: over the default output budget
    oomnitza.set_managed_mapping(67, {**MAPPING, "notes": {"type": "attribute", "value": big}})
    # A cloud config cannot raise its own budget...
    oomnitza.enqueue_managed(one_page(saas.url, template_output_kib="100000", template_cpu_seconds="100000"))
    assert managed(ini(tmp_path, oomnitza, STATIC)).code == 3
    assert len(errors_of(oomnitza)) == 3
    assert all("exceeded its 1 MiB output budget" in e["error"] for e in errors_of(oomnitza))
    # ... the [managed.<id>] section can.
    oomnitza.reset()
    oomnitza.set_managed_mapping(67, {**MAPPING, "notes": {"type": "attribute", "value": big}})
    oomnitza.enqueue_managed(one_page(saas.url))
    assert managed(ini(tmp_path, oomnitza, STATIC + "template_output_kib = 4096\n")).code == 0
    assert not errors_of(oomnitza) and len(oomnitza.records("assets")) == 3


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("template_cpu_seconds = fast", "template_cpu_seconds = 'fast' must be a number of at least 0.01"),
        ("template_output_kib = 0", "template_output_kib = '0' must be a whole number of at least 1"),
        ("template_memory_mib = 1.5", "template_memory_mib = '1.5' must be a whole number of at least 64"),
    ],
)
def test_bad_budget_settings_are_reported(
    tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza, line: str, complaint: str
) -> None:
    oomnitza.enqueue_managed(one_page(saas.url))
    result = managed(ini(tmp_path, oomnitza, STATIC + line + "\n"))
    assert result.code == 1 and "Traceback" not in result.all
    (ready,) = oomnitza.ready_portions
    assert ready["error_message"] == f"Managed connector #67: [managed.67] {complaint}"
    assert complaint in result.err and not saas.calls("/v1/devices")


# -- check_managed answers ----------------------------------------------------------------------------


def test_malformed_entries_are_skipped_one_line_each(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    good = one_page(saas.url)
    answer = [
        "managed.67",
        {"name": "no id"},
        {"id": "../../api/v3/x", "type": "assets"},
        {"id": True, "type": "assets"},
        {"id": 70, "type": "assets", "inputs": ["a"]},
        {"id": 71, "type": "assets", "update_only": "perhaps"},
        {"id": 72, "type": ["assets"]},
        {"id": 73, "type": "assets", "list_behavior": "GET /devices"},
        good,
    ]
    oomnitza.fail("POST", "/api/v3/bulk/check_managed", 200, body=answer)
    result = managed(ini(tmp_path, oomnitza, STATIC))
    assert result.code == 0 and "Traceback" not in result.all, result.all
    lines = [line for line in result.err.splitlines() if "check_managed" in line]
    expected = [
        "entry 0 skipped: expected an object, got text",
        "entry 1 skipped: 'id' must be a whole number, got None",
        "entry 2 skipped: 'id' must be a whole number, got '../../api/v3/x'",
        "entry 3 skipped: 'id' must be a whole number, got True",
        "entry 4 skipped: integration 70: 'inputs' must be an object, got a list",
        "entry 5 skipped: integration 71: 'update_only' must be true or false, got 'perhaps'",
        "entry 6 skipped: integration 72: 'type' must be text, got a list",
        "entry 7 skipped: integration 73: 'list_behavior' must be an object, got text",
    ]
    assert len(lines) == len(expected) and all(e in line for e, line in zip(expected, lines, strict=True)), lines
    assert len(oomnitza.records("assets")) == 3 and portions_of(oomnitza)[0].finalized


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"configs": []}, "check_managed: expected a list of integrations, got an object; nothing started"),
        ("<html>maintenance</html>", "check_managed: Oomnitza's answer is not JSON; nothing started from it"),
        (42, "check_managed: expected a list of integrations, got a number; nothing started"),
    ],
)
def test_an_answer_that_is_not_a_list(tmp_path: Path, oomnitza: FakeOomnitza, body: Any, complaint: str) -> None:
    oomnitza.fail("POST", "/api/v3/bulk/check_managed", 200, body=body if not isinstance(body, int) else "42")
    result = managed(ini(tmp_path, oomnitza))
    assert result.code == 0 and "Traceback" not in result.all, result.all
    assert sum(complaint in line for line in result.err.splitlines()) == 1, result.err


# -- a real process: polling and signals while a template misbehaves ---------------------------------


POLL = ("--poll-interval", "0.05")


def start_connector(tmp_path: Path, oomnitza: FakeOomnitza, section: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "connector.py"), "managed", "--ini", str(ini(tmp_path, oomnitza, section)), *POLL],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )


def wait_for(condition: Callable[[], bool], what: str, limit: float = 120) -> None:
    """Wait for the connector to get somewhere (the limit only keeps a broken build from hanging)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def polls(oomnitza: FakeOomnitza) -> int:
    return len(oomnitza.find_requests("POST", "/api/v3/bulk/check_managed"))


def stop(proc: subprocess.Popen[str], signals: int = 1) -> str:
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    _out, err = proc.communicate(timeout=60)
    return err


def test_polling_goes_on_while_a_template_loops(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    """A mapping that would loop for hours: the poller keeps polling meanwhile, the record fails
    with the budget message, the others of its page are sent and the sync is closed. Malformed
    answers before it are skipped and polling goes on."""
    oomnitza.fail("POST", "/api/v3/bulk/check_managed", 200, body={"not": "a list"})
    oomnitza.fail("POST", "/api/v3/bulk/check_managed", 200, body="not JSON")
    oomnitza.set_managed_mapping(67, {**MAPPING, "model": {"type": "attribute", "value": HOSTILE}})
    oomnitza.enqueue_managed(one_page(saas.url))
    proc = start_connector(tmp_path, oomnitza, STATIC + "template_cpu_seconds = 1\n")
    try:
        wait_for(lambda: bool(portions_of(oomnitza)) and portions_of(oomnitza)[0].finalized, "the sync to finish")
        wait_for(lambda: polls(oomnitza) >= 8, "more polls")
    finally:
        err = stop(proc)
    assert proc.returncode == 143, err  # 128 + SIGTERM
    (error,) = errors_of(oomnitza)
    assert error["error"].endswith("The error is: template for field model exceeded its 1 s CPU budget")
    assert sorted(r["serial_number"] for r in oomnitza.records("assets")) == ["C02XK1", "C02XK3"]
    # While the template was looping (from the run's mapping fetch to its error record), polls went on.
    log = [(r.method, r.path, r.query.get("connector_id")) for r in oomnitza.api_requests]
    run_start = log.index(("GET", "/api/v2/mappings", "67"))
    error_at = next(i for i, r in enumerate(oomnitza.api_requests) if r.path == "/api/v3/bulk" and r.body.get("error"))
    assert sum(1 for m, p, _c in log[run_start:error_at] if p == "/api/v3/bulk/check_managed") >= 3
    assert "expected a list of integrations, got an object" in err and "answer is not JSON" in err
    assert "Traceback" not in err


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes in /proc")
def test_sigterm_while_a_template_loops(tmp_path: Path, saas: FakeSaas, oomnitza: FakeOomnitza) -> None:
    """With a generous budget the template is still looping when SIGTERM comes: the poller takes
    the signal, the sync stops as an upload does (the page being mapped is not sent, the stop is
    reported, the session finalized) and its worker process is killed, not left looping."""
    oomnitza.set_managed_mapping(67, {**MAPPING, "model": {"type": "attribute", "value": HOSTILE}})
    oomnitza.enqueue_managed(one_page(saas.url))
    proc = start_connector(tmp_path, oomnitza, STATIC + "template_cpu_seconds = 600\n")
    try:
        wait_for(lambda: len(saas.calls("/v1/devices/")) == 3, "the detail calls")
        wait_for(lambda: bool(workers_of(proc.pid)), "a template worker")
        workers = workers_of(proc.pid)
        polled = polls(oomnitza)
        wait_for(lambda: polls(oomnitza) >= polled + 3, "polls while the template loops")
    finally:
        err = stop(proc)
    assert proc.returncode == 143, err
    assert "stop requested" in err and "Traceback" not in err
    # Stopped long before the budget: no record was judged; the run reports that it was stopped.
    (report,) = errors_of(oomnitza)
    assert report["error_type"] == "Fatal Error" and "terminated (SIGTERM)" in report["error"]
    assert oomnitza.records("assets") == [] and portions_of(oomnitza)[0].finalized
    for pid in workers:  # killed with the sync, not left looping
        wait_for(lambda pid=pid: not running(pid), f"worker {pid} to end", limit=10)


def workers_of(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"worker_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
