"""MkDocs hooks: the README is the site's home page and CHANGELOG.md its changelog.

Both live at the top of the repository (where GitHub shows them), outside docs/. They are added to
the site as generated pages, and every relative link in every page is rewritten from the
repository's layout to the site's (``docs/runs.md`` in the README becomes ``runs.md``,
``../README.md`` in a page becomes ``index.md``), so one text serves both.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

# site page -> the repository file it is made from
GENERATED = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}
DOCS_DIR = "docs"
LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def _repo_root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def on_files(files: Files, *, config: Any) -> Files:
    root = _repo_root(config)
    for page, source in GENERATED.items():
        files.append(File.generated(config, page, content=(root / source).read_text(encoding="utf-8")))
    return files


def _site_path(repo_path: str) -> str | None:
    """Where a repository file is in the site, or None when the site does not have it."""
    for page, source in GENERATED.items():
        if repo_path == source:
            return page
    if repo_path.startswith(DOCS_DIR + "/"):
        return repo_path[len(DOCS_DIR) + 1 :]
    return None


def rewrite_links(markdown: str, page: str) -> str:
    """Rewrite the relative links of a site page from repository paths to site paths."""
    repo_page = GENERATED.get(page, f"{DOCS_DIR}/{page}")

    def fix(match: re.Match[str]) -> str:
        target = match.group(2)
        path, hash_, anchor = target.partition("#")
        if not path or re.match(r"^[a-z][a-z0-9+.-]*:", path) or path.startswith("/"):
            return match.group(0)
        site = _site_path(posixpath.normpath(posixpath.join(posixpath.dirname(repo_page), path)))
        if site is None:
            return match.group(0)  # outside the site: --strict reports it
        relative = posixpath.relpath(site, posixpath.dirname(page) or ".")
        return f"{match.group(1)}{relative}{hash_}{anchor}{match.group(3)}"

    return LINK.sub(fix, markdown)


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Files) -> str:
    return rewrite_links(markdown, page.file.src_uri)
