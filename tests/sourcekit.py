"""The standard end-to-end checks every source gets, through the CLI against the fake Oomnitza.

A source's test module builds an INI for its fake vendor and calls these helpers; each asserts
what the fake Oomnitza stored and how every record was accounted for.
"""

from __future__ import annotations

import os
from pathlib import Path

from oomnitza_connector.sync import BUCKETS
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.vendor import FakeVendor

from .helpers import CliResult, run_cli


def write_config(
    tmp_path: Path,
    oomnitza: FakeOomnitza,
    section: str,
    settings: dict[str, str],
    mappings: dict[str, str] | None = None,
) -> Path:
    """An INI with [oomnitza] pointing at the fake and one enabled source section."""
    lines = [
        "[oomnitza]",
        f"url = {oomnitza.url}",
        f"api_token = {oomnitza.token}",
        "",
        f"[{section}]",
        "enable = True",
    ]
    for key, value in settings.items():
        if "\n" in value:
            lines.append(f"{key}:")
            lines += ["    " + line for line in value.splitlines()]
        else:
            lines.append(f"{key} = {value}")
    lines += [f"mapping.{field} = {spec}" for field, spec in (mappings or {}).items()]
    path = tmp_path / "config.ini"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def forget_sync_state() -> None:
    """Forget what change-aware sync remembers (the test's own state directory), so the next run
    sends every record: for a test that runs a section again (after resetting the fake Oomnitza,
    or with other settings) and checks what arrives."""
    (Path(os.environ["OOMNITZA_STATE_DIR"]) / "sync-state.db").unlink(missing_ok=True)


def upload(ini: Path, section: str, *args: str) -> CliResult:
    return run_cli("upload", section, "--ini", str(ini), *args)


def summary_row(result: CliResult, section: str) -> dict[str, int]:
    """The counters of the summary table row of ``section``."""
    row = next(line for line in result.err.splitlines() if "│" in line and f" {section} " in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    keys = ("pulled", *BUCKETS)  # the table's counter columns, in order
    return dict(zip(keys, map(int, cells[2 : 2 + len(keys)]), strict=True))


def assert_accounted(result: CliResult, section: str, *, pulled: int, sent: int | None = None) -> dict[str, int]:
    """Every record pulled landed in exactly one bucket."""
    counts = summary_row(result, section)
    assert counts["pulled"] == pulled, result.err
    assert sum(v for k, v in counts.items() if k != "pulled") == pulled, result.err
    if sent is not None:
        assert counts["sent"] == sent, result.err
    return counts


def assert_one_line_error(result: CliResult, *needles: str) -> None:
    """The run failed with a clear message and no traceback."""
    assert result.code != 0, result.all
    assert "Traceback" not in result.all, result.all
    for needle in needles:
        assert needle in result.err, result.err


# The transient faults every HTTP source must ride out with nothing lost (brief: "Faults are part of
# every feature"). Run a source's test with ``request_timeout = STALL_TIMEOUT`` so the stall is cut short.
# The timings cost no idle wait: "Retry-After: 0" (honoured: try again now) and a stall the client cuts
# after STALL_TIMEOUT (the fake stops waiting when the client leaves). How long the retry policy
# waits is proven with an injected clock in tests/test_http_retry.py.
STANDARD_FAULTS = ("429_retry_after", "429_no_retry_after", "5xx_once", "stall")
STALL_TIMEOUT = "1"


def inject_fault(
    vendor: FakeVendor, fault: str, method: str | None, path_prefix: str, *, query: dict[str, str] | None = None
) -> None:
    """Arm one of STANDARD_FAULTS on the next matching request of ``vendor``."""
    if fault == "429_retry_after":
        vendor.fail(method, path_prefix, 429, headers={"Retry-After": "0"}, query=query)
    elif fault == "429_no_retry_after":
        vendor.fail(method, path_prefix, 429, query=query)
    elif fault == "5xx_once":
        vendor.fail(method, path_prefix, 503, body="<html><body>Service Unavailable</body></html>", query=query)
    elif fault == "stall":
        vendor.stall(method, path_prefix, 3.0, query=query)
    else:
        raise ValueError(f"unknown fault {fault!r}")
