"""The settings tables of the per-source docs, generated from the setting declarations.

Each ``docs/sources/<page>.md`` holds its table between ``<!-- settings:begin -->`` and
``<!-- settings:end -->``; the table is that of the source named like the page, or of the source
named in the marker (``<!-- settings:begin csv_users -->``) where a page documents several. Text
outside the markers is the page's own prose and is never touched.

    python -m oomnitza_connector.docgen            rewrite the tables (make docs-tables)
    python -m oomnitza_connector.docgen --check    exit 1 naming every page whose table is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .settings import Setting, Text
from .sources.base import load_source_class

BEGIN = re.compile(r"^<!-- settings:begin(?: (?P<module>[\w.]+))? -->$", re.MULTILINE)
END = "<!-- settings:end -->"
COMMAND = "make docs-tables"
DEFAULT_DOCS = Path("docs") / "sources"

# Outside `code`, Markdown that would turn help text into something else: an HTML tag, emphasis.
_ESCAPES = (("\\", "\\\\"), ("<", "&lt;"), ("*", "\\*"), ("__", "\\_\\_"))


def _cell(text: str) -> str:
    """Help text as a table cell: `code` spans kept, the rest escaped; a ``|`` is escaped everywhere
    (GitHub ends a cell at a bare ``|`` even inside a code span)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        for raw, escaped in _ESCAPES:
            parts[i] = parts[i].replace(raw, escaped)
    return "`".join(parts).replace("|", "\\|")


def _kind(setting: Setting) -> str:
    return "text" if isinstance(setting.kind, Text) else _cell(setting.describe())


def _default(setting: Setting) -> str:
    if setting.required:
        return "required"
    return f"`{setting.default}`" if setting.default else ""


def settings_table(module: str) -> str:
    """The Markdown table of a source's own settings (the common ones are in the README)."""
    rows = ["| setting | kind | default | meaning |", "|---|---|---|---|"]
    for setting in load_source_class(module).settings:
        rows.append(f"| `{setting.name}` | {_kind(setting)} | {_default(setting)} | {_cell(setting.help)} |")
    return "\n".join(rows)


def render_page(text: str, page: str) -> str:
    """``text`` with every settings region replaced by the table generated for it."""
    out: list[str] = []
    pos = 0
    for match in BEGIN.finditer(text):
        if match.start() < pos:
            continue
        end = text.find(END, match.end())
        if end < 0:
            raise ValueError(f"{page}.md: '{match.group(0)}' has no '{END}' after it")
        module = match.group("module") or page
        out += [text[pos : match.end()], "\n", settings_table(module), "\n"]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def documented_modules(text: str, page: str) -> list[str]:
    return [m.group("module") or page for m in BEGIN.finditer(text)]


def stale_pages(docs: Path) -> list[Path]:
    return [p for p in sorted(docs.glob("*.md")) if render_page(p.read_text("utf-8"), p.stem) != p.read_text("utf-8")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oomnitza_connector.docgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is out of date")
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="folder of the source pages (docs/sources)")
    args = parser.parse_args(argv)
    if not args.docs.is_dir():
        print(f"error: {args.docs} is not a folder; run this from the repository root or pass --docs", file=sys.stderr)
        return 2
    stale = stale_pages(args.docs)
    if args.check:
        for page in stale:
            print(f"error: {page}: the settings table differs from the declarations; run: {COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    for page in stale:
        page.write_text(render_page(page.read_text("utf-8"), page.stem), encoding="utf-8")
        print(f"{page}: settings table rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
