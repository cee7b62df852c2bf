"""The documentation: the site builds with --strict, every relative link resolves, every page is in the nav.

The link check reads the Markdown as GitHub shows it (README.md and docs/ are read there too), with
GitHub's heading anchors; the strict build checks the same links as the site serves them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, require

DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS.rglob("*.md")])

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK_TARGET = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"(`+)(.*?)\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of a Markdown file outside fenced code blocks, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower-cased, without punctuation, spaces as '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = CODE_SPAN.sub(lambda m: m.group(2), text).replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings; GitHub numbers repeated ones (``-1``, ``-2``)."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            found.add(f"{slug}-{counts[slug]}" if slug in counts else slug)
            counts[slug] = counts.get(slug, 0) + 1
    return found


def relative_links(path: Path) -> list[tuple[int, str]]:
    links = []
    for number, line in prose_lines(path):
        line = CODE_SPAN.sub(lambda m: "`" + m.group(2).replace("](", "] (") + "`", line)
        links += [(number, target) for target in LINK_TARGET.findall(line) if not SCHEME.match(target)]
    return links


def test_pages_exist() -> None:
    assert (ROOT / "README.md").is_file() and (ROOT / "CHANGELOG.md").is_file()
    assert len(PAGES) > 30


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for number, target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(ROOT)}:{number}: {target}"
        if path.startswith("/"):
            broken.append(f"{where} (absolute path: GitHub and the site resolve it differently)")
        elif not resolved.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{where} (no heading with that anchor in {resolved.name})")
    assert not broken, "\n".join(broken)


def nav_pages() -> set[str]:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:") :]
    return set(re.findall(r"(?:^|\s)([\w./-]+\.md)\s*$", nav, flags=re.M))


def test_every_page_is_in_the_nav() -> None:
    pages = {str(p.relative_to(DOCS)).replace(os.sep, "/") for p in DOCS.rglob("*.md")}
    generated = {"index.md", "changelog.md"}  # README.md and CHANGELOG.md, added by mkdocs_hooks.py
    nav = nav_pages()
    assert pages - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - pages - generated == set(), "nav entries without a page"


def test_readme_starts_with_the_quick_start() -> None:
    """A newcomer's first two commands stay at the top of the README."""
    headings = [line for _, line in prose_lines(ROOT / "README.md") if line.startswith("## ")]
    assert headings[0] == "## Quick start"
    quick_start = (ROOT / "README.md").read_text(encoding="utf-8").split("## ", 2)[1]
    assert "make demo" in quick_start and "make test" in quick_start


def mkdocs_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("mkdocs", "material", "pymdownx"))


def test_site_builds_strict(tmp_path: Path) -> None:
    require(mkdocs_available(), "mkdocs and mkdocs-material are not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    build = ["build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)]
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", *build],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").is_file()
    assert "make demo" in (site / "index.html").read_text(encoding="utf-8")  # the README is the home page
    for page in ("changelog", "runs", "sources/okta"):
        assert (site / page / "index.html").is_file(), page
