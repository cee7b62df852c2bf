"""The settings tables in docs/sources/*.md are generated from the setting declarations; these tests
fail when a page and the code disagree, and say which command brings the page up to date."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomnitza_connector import docgen
from oomnitza_connector.sources.base import REGISTRY

from .helpers import ROOT

DOCS = ROOT / "docs" / "sources"
PAGES = sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_settings_table_matches_the_declarations(page: Path) -> None:
    text = page.read_text("utf-8")
    assert docgen.render_page(text, page.stem) == text, (
        f"{page.relative_to(ROOT)}: the settings table differs from the source's setting declarations; "
        f"run: {docgen.COMMAND}"
    )


def test_every_source_has_exactly_one_generated_table() -> None:
    documented: dict[str, list[str]] = {}
    for page in PAGES:
        for module in docgen.documented_modules(page.read_text("utf-8"), page.stem):
            documented.setdefault(module, []).append(page.name)
    assert not set(documented) - set(REGISTRY), f"tables of unknown sources: {set(documented) - set(REGISTRY)}"
    missing = sorted(set(REGISTRY) - set(documented))
    assert not missing, f"no generated settings table for {missing}: add <!-- settings:begin --> markers"
    assert all(len(pages) == 1 for pages in documented.values()), documented


def test_regions_are_rewritten_and_prose_kept() -> None:
    page = "# netbox\n\nintro\n\n<!-- settings:begin -->\nold table\n<!-- settings:end -->\n\nafter\n"
    text = docgen.render_page(page, "netbox")
    assert text.startswith("# netbox\n\nintro\n\n<!-- settings:begin -->\n| setting | kind | default | meaning |")
    assert "old table" not in text and text.endswith("<!-- settings:end -->\n\nafter\n")
    assert "| `page_size` | whole number from 1 to 1000 | `1000` |" in text
    assert docgen.render_page(text, "netbox") == text
    both = docgen.render_page(page.replace("begin -->", "begin okta -->"), "netbox")
    assert "| `dpop` |" in both and "| `auth_token` |" not in both
    with pytest.raises(ValueError, match="no '<!-- settings:end -->'"):
        docgen.render_page("<!-- settings:begin -->\n", "netbox")


def test_cells_escape_markdown_outside_code() -> None:
    assert docgen._cell('JSON: {"<platform or __default__>": 1}') == 'JSON: {"&lt;platform or \\_\\_default\\_\\_>": 1}'
    assert docgen._cell("`*,modifyTimestamp` or * | x") == "`*,modifyTimestamp` or \\* \\| x"


def test_check_mode_names_the_stale_page_and_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "okta.md").write_text("<!-- settings:begin -->\nstale\n<!-- settings:end -->\n", encoding="utf-8")
    assert docgen.main(["--check", "--docs", str(tmp_path)]) == 1
    assert f"{tmp_path / 'okta.md'}: the settings table differs" in capsys.readouterr().err
    assert docgen.main(["--docs", str(tmp_path)]) == 0
    assert docgen.main(["--check", "--docs", str(tmp_path)]) == 0
    assert "| `dpop` |" in (tmp_path / "okta.md").read_text("utf-8")
