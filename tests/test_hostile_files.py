"""Damaged and hostile CSV and JSON files, through the CLI into the embedded local store.

A broken row costs that row (named by its line), never the rows after it; memory is bounded by
bytes (a row, a page), not by the number of rows; deep nesting never reaches the JSON parser.
"""

from __future__ import annotations

import csv
import io
import json
import random
import tracemalloc
from pathlib import Path

import pytest

from oomnitza_connector.oomnitza.local_store import LocalStore
from oomnitza_connector.sources.csv_files import _Feed, _parse, _physical_lines, _Records

from .helpers import CliResult, run_cli
from .sourcekit import assert_accounted

MiB = 1 << 20


def csv_ini(tmp_path: Path, source: str, *extra: str) -> Path:
    lines = [
        "[oomnitza]",
        f"url = sqlite:///{tmp_path}/store.db",
        "",
        "[csv_assets]",
        "enable = True",
        source,
        "sync_field = SERIAL",
        'mapping.SERIAL = {"source": "Serial"}',
        'mapping.NOTES = {"source": "Notes"}',
        *extra,
    ]
    path = tmp_path / "config.ini"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def upload_csv(tmp_path: Path, text: str | bytes, *extra: str) -> CliResult:
    path = tmp_path / "a.csv"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return run_cli("upload", "csv_assets", "--ini", str(csv_ini(tmp_path, f"filename = {path}", *extra)))


def stored(tmp_path: Path, data_type: str = "assets") -> dict[str, dict]:
    store = LocalStore(tmp_path / "store.db")
    try:
        records = store.records(data_type)
    finally:
        store.close()
    key = "SERIAL" if data_type == "assets" else "USER"
    return {r[key]: r for r in records}


def problems(result: CliResult) -> list[str]:
    return [line for line in result.err.splitlines() if line.startswith("WARNING [") and " record " in line]


# -- CSV: quotes ------------------------------------------------------------------------------------


def test_an_unterminated_quote_costs_one_row_not_the_rest_of_the_file(tmp_path: Path) -> None:
    text = (
        "Serial,Notes\n"
        "S1,ok\n"
        'S2,"a note\nover two lines"\n'
        'S3,"never closed\n'  # line 5: the stray quote
        "S4,fine\n"
        'S5,"quoted, with a comma"\n'
        'S6,"says ""hi"""\n'
    )
    result = upload_csv(tmp_path, text)
    assert result.code == 3, result.all
    assert_accounted(result, "csv_assets", pulled=6, sent=5)
    (problem,) = problems(result)
    assert "a.csv line 5: a quoted value starts on this line and is never closed" in problem
    assert "the row is not sent" in problem
    recs = stored(tmp_path)
    assert sorted(recs) == ["S1", "S2", "S4", "S5", "S6"]
    assert recs["S2"]["NOTES"] == "a note\nover two lines"
    assert recs["S5"]["NOTES"] == "quoted, with a comma" and recs["S6"]["NOTES"] == 'says "hi"'
    assert "Traceback" not in result.all


def test_a_quote_open_past_max_row_size_is_cut_there(tmp_path: Path) -> None:
    # No quote follows the stray one: it is reported as soon as the open value passes
    # max_row_size, and every row after it still syncs.
    rows = [f"S{i},note {i}\n" for i in range(3, 300)]
    text = 'Serial,Notes\nS1,ok\nS2,"oops\n' + "".join(rows)
    result = upload_csv(tmp_path, text, "max_row_size = 1K")
    assert result.code == 3, result.all
    (problem,) = problems(result)
    assert "a.csv line 3: a quoted value starts on this line and is still open after 1 KiB (max_row_size)" in problem
    recs = stored(tmp_path)
    assert len(recs) == 1 + len(rows) and "S2" not in recs
    assert recs["S299"]["NOTES"] == "note 299"


def test_quote_tracking_agrees_with_the_csv_module() -> None:
    """Records are delimited before the csv module sees them; on every input the two must agree,
    up to the first record found broken (always where a quote is involved)."""
    rnd = random.Random(12)
    alphabet = ["a", ",", '"', "\n", "\r\n", ";", " ", "\r"]
    for _ in range(20_000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12)))
        expected = list(csv.reader(io.StringIO(text, newline="")))
        feed = _Feed()
        reader = csv.reader(feed)
        got: list[list[str]] = []
        for rec in _Records(_physical_lines([text], 1 << 20), ",", 1 << 20, "utf-8"):
            row, _ = _parse(rec, feed, reader, ",")
            if row is None:
                assert '"' in text, text
                assert got == expected[: len(got)], text
                break
            got.append(row)
        else:
            assert got == expected, text


# -- CSV: sizes -------------------------------------------------------------------------------------


def test_a_cell_over_the_csv_modules_default_limit_is_read(tmp_path: Path) -> None:
    big = "x" * 300_000  # the csv module refuses fields over 131,072 characters by default
    result = upload_csv(tmp_path, f'Serial,Notes\nS1,{big}\nS2,"{big}"\nS3,small\n')
    assert result.code == 0, result.all
    recs = stored(tmp_path)
    assert recs["S1"]["NOTES"] == big and recs["S2"]["NOTES"] == big and recs["S3"]["NOTES"] == "small"


def test_a_cell_over_max_cell_size_fails_its_row_only(tmp_path: Path) -> None:
    big = "y" * 5000
    result = upload_csv(tmp_path, f'Serial,Notes\nS1,{big}\nS2,"{big}\n{big}"\nS3,ok\n', "max_cell_size = 4K")
    assert result.code == 3, result.all
    found = problems(result)
    assert len(found) == 2
    assert "a.csv line 2: a cell of 4.9 KiB is larger than max_cell_size (4 KiB); the row is not sent" in found[0]
    assert "(raise max_cell_size in [csv_assets] if such rows are expected)" in found[0]
    assert "a.csv line 3: a cell of 9.8 KiB" in found[1]
    assert list(stored(tmp_path)) == ["S3"]


def test_one_huge_line_costs_bounded_memory_and_fails_alone(tmp_path: Path) -> None:
    huge = "z" * (24 * MiB)  # one line, far over max_row_size: never held whole
    text = f"Serial,Notes\nS1,ok\nS2,{huge}\nS3,ok\nS4,{huge}"
    (tmp_path / "a.csv").write_text(text, encoding="ascii")
    del huge, text
    ini = csv_ini(tmp_path, f"filename = {tmp_path / 'a.csv'}", "max_row_size = 1M")
    tracemalloc.start()
    try:
        result = run_cli("upload", "csv_assets", "--ini", str(ini))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.code == 3, result.all
    found = problems(result)
    assert "a.csv line 3: the line is 24 MiB, more than max_row_size; the row is not sent" in found[0]
    assert "a.csv line 5: the line is 24 MiB" in found[1]
    assert sorted(stored(tmp_path)) == ["S1", "S3"]
    assert peak < 16 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_a_hundred_thousand_columns_take_bytes_not_gigabytes(tmp_path: Path) -> None:
    # 40 rows of 100,000 cells: as pages of 1,000 rows this would need gigabytes; pages are cut
    # by their estimated memory, so only a few rows are held at once.
    width = 100_000
    header = "Serial," + ",".join(f"c{i}" for i in range(width - 1))
    filler = "," + ",".join("v" for _ in range(width - 1))
    text = header + "\n" + "".join(f"S{i}{filler}\n" for i in range(40))
    (tmp_path / "a.csv").write_text(text, encoding="ascii")
    del text
    ini = csv_ini(tmp_path, f"filename = {tmp_path / 'a.csv'}")
    tracemalloc.start()
    try:
        result = run_cli("upload", "csv_assets", "--ini", str(ini), "--batch-size", "5")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.code == 0, result.all
    assert len(stored(tmp_path)) == 40
    assert peak < 200 * MiB, f"peak {peak / MiB:.0f} MiB"


def test_a_header_too_wide_for_max_row_size_skips_that_file_only(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a_wide.csv").write_text("Serial," + ",".join(f"c{i}" for i in range(5000)) + "\nW1\n")
    (inbox / "b_ok.csv").write_text("Serial,Notes\nB1,ok\n")
    ini = csv_ini(tmp_path, f"directory = {inbox}", "max_row_size = 64K")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 3, result.all
    (problem,) = problems(result)
    assert "a_wide.csv line 1: the header has 5,001 columns; max_row_size = 64 KiB allows 1,024" in problem
    assert "the file is not read" in problem
    assert list(stored(tmp_path)) == ["B1"]


def test_size_settings_are_checked(tmp_path: Path) -> None:
    result = upload_csv(tmp_path, "Serial\nS1\n", "max_cell_size = lots")
    assert result.code == 1
    assert "[csv_assets] max_cell_size = 'lots' is not a size (write e.g. 512K, 8M or 1G)" in result.err
    assert "Traceback" not in result.all


# -- CSV: encodings and delimiters --------------------------------------------------------------------


def test_an_undecodable_line_fails_alone(tmp_path: Path) -> None:
    data = "Serial,Notes\nS1,ok\nS2,Caf\xe9\nS3,ok\n".encode("cp1252")
    result = upload_csv(tmp_path, data)
    assert result.code == 3, result.all
    (problem,) = problems(result)
    assert "a.csv line 3 is not valid utf-8-sig (byte 0xe9 at column 7); the row is not sent" in problem
    assert "set encoding = <the file's encoding> (e.g. cp1252) in [csv_assets]" in problem
    assert sorted(stored(tmp_path)) == ["S1", "S3"]


def test_utf16_with_a_stray_quote_and_a_multiline_value(tmp_path: Path) -> None:
    text = 'Serial\tNotes\r\nS1\t"two\r\nlines"\r\nS2\t"stray\r\nS3\tÜber\r\n'
    result = upload_csv(tmp_path, text.encode("utf-16"), "encoding = utf-16", "delimiter = tab")
    assert result.code == 3, result.all
    assert "a.csv line 4: a quoted value starts on this line and is never closed" in result.err
    recs = stored(tmp_path)
    assert recs["S1"]["NOTES"] == "two\r\nlines" and recs["S3"]["NOTES"] == "Über" and "S2" not in recs


def test_auto_delimiter_on_a_hostile_header(tmp_path: Path) -> None:
    # The csv Sniffer is quadratic in its sample (100,000 characters of this take about a minute):
    # only the start of the header line is sniffed.
    header = "Serial;Notes;" + ";".join(f'c{i};"' for i in range(30_000))
    result = upload_csv(tmp_path, header + "\nS1;ok\n", "delimiter = auto")
    assert result.code == 0, result.all
    assert stored(tmp_path)["S1"]["NOTES"] == "ok"


# -- JSON -------------------------------------------------------------------------------------------


def json_ini(tmp_path: Path, inbox: Path, *extra: str) -> Path:
    path = tmp_path / "config.ini"
    lines = [
        "[oomnitza]",
        f"url = sqlite:///{tmp_path}/store.db",
        "",
        "[json_users]",
        "enable = True",
        f"directory = {inbox}",
        "sync_field = USER",
        'mapping.USER = {"source": "login"}',
        'mapping.NOTE = {"source": "note"}',
        *extra,
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_deep_nesting_never_reaches_the_parser(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # 200,000 levels: the streaming parser's cost grows with the square of the depth.
    (inbox / "a_array.json").write_text(
        '[{"login": "a1"}, {"login": "a2", "x": ' + deep(200_000) + '}, {"login": "a3"}]', encoding="utf-8"
    )
    (inbox / "b_object.json").write_text('{"login": "b", "x": ' + deep(5000) + "}", encoding="utf-8")
    (inbox / "c_wide.json").write_bytes(('{"login": "c", "x": ' + deep(5000) + "}").encode("utf-16"))
    (inbox / "d_lines.jsonl").write_text(
        '{"login": "d1"}\n{"login": "d2", "x": ' + deep(3000) + '}\n{"login": "d3"}\n', encoding="utf-8"
    )
    # Brackets inside strings do not count, escaped quotes included.
    (inbox / "e_ok.json").write_text(json.dumps([{"login": "e", "note": '\\"[' * 500 + "{" * 500}]))
    result = run_cli("upload", "json_users", "--ini", str(json_ini(tmp_path, inbox)))
    assert result.code == 3, result.all
    assert_accounted(result, "json_users", pulled=8, sent=4)
    found = "\n".join(problems(result))
    assert "a_array.json: item #1 nests deeper than 100 levels; the rest of the file is not read" in found
    assert "b_object.json nests deeper than 100 levels" in found
    assert "c_wide.json nests deeper than 100 levels" in found
    assert "d_lines.jsonl line 2 nests deeper than 100 levels" in found
    assert sorted(stored(tmp_path, "users")) == ["a1", "d1", "d3", "e"]  # a3 came after the bad item
    assert stored(tmp_path, "users")["e"]["NOTE"] == '\\"[' * 500 + "{" * 500
    assert "Traceback" not in result.all


def test_a_record_over_max_record_size_fails_with_one_line(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    huge = "h" * (3 * MiB)
    (inbox / "a.json").write_text(json.dumps([{"login": "a1"}, {"login": "a2", "note": huge}]), encoding="utf-8")
    (inbox / "b.json").write_text(json.dumps({"login": "b", "note": huge}), encoding="utf-8")
    (inbox / "c.jsonl").write_text(
        json.dumps({"login": "c1"}) + "\n" + json.dumps({"login": "c2", "note": huge}) + "\n" + '{"login": "c3"}\n'
    )
    tracemalloc.start()
    try:
        result = run_cli("upload", "json_users", "--ini", str(json_ini(tmp_path, inbox, "max_record_size = 1M")))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.code == 3, result.all
    found = problems(result)
    assert len(found) == 3, result.err
    assert "a.json: item #1 is larger than max_record_size (1 MiB); the rest of the file is not read" in found[0]
    assert "b.json: a file that is not an array larger than max_record_size (1 MiB)" in found[1]
    assert "c.jsonl line 2: 3 MiB, larger than max_record_size (1 MiB)" in found[2]
    assert sorted(stored(tmp_path, "users")) == ["a1", "c1", "c3"]
    assert peak < 8 * MiB, f"peak {peak / MiB:.0f} MiB"


@pytest.mark.parametrize("value", ["0", "-1", "8X", ""])
def test_max_record_size_is_checked(tmp_path: Path, value: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    result = run_cli("upload", "json_users", "--ini", str(json_ini(tmp_path, inbox, f"max_record_size = {value}")))
    if value == "":  # empty means the default
        assert result.code == 0, result.all
        return
    assert result.code == 1 and "[json_users] max_record_size" in result.err and "is not a size" in result.err
