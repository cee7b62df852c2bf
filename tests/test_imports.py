"""The package has no import cycles: neither between modules nor between its parts (config,
sources, the sink side, managed mode, the server...), and every module imports on its own.

A cycle is read from the source (every ``import``, also inside functions; imports under
``if TYPE_CHECKING:`` are for the type checker only and do not count), so a lazy import that
closes a loop is caught too."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from .helpers import ROOT

PACKAGE = "oomnitza_connector"
SRC = ROOT / "src" / PACKAGE


def modules() -> dict[str, tuple[Path, bool]]:
    """Module name → (file, is a package)."""
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(module: str, package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".")[: None if package else -1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    out = set()
    for name in names:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != module and name != PACKAGE:
            out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, (path, package) in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(child)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and _type_checking(node)
            for child in ast.walk(node)
        }
        graph[module] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in typing_only:
                graph[module] |= _imported(module, package, node, set(known))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def part_of(module: str) -> str:
    """``oomnitza_connector.sources.okta`` → ``oomnitza_connector.sources``; modules stay themselves."""
    return ".".join(module.split(".")[:2])


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(import_graph()) == []


def test_no_two_parts_of_the_package_import_each_other() -> None:
    parts: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        parts.setdefault(part_of(module), set()).update(
            part_of(other) for other in imported if part_of(other) != part_of(module)
        )
    assert cycles(parts) == []


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.server.cli" in graph[f"{PACKAGE}.cli"]  # imported lazily, inside main()
    assert f"{PACKAGE}.config" not in graph[f"{PACKAGE}.sources.base"]  # only under TYPE_CHECKING


def test_every_module_imports_first() -> None:
    """Each module imported before any other of the package (in one interpreter, forgetting the
    package between modules): an order-dependent cycle would fail with a partly initialised module."""
    names = sorted(modules())
    script = textwrap.dedent(
        f"""
        import importlib, sys
        failed = []
        for name in {names!r}:
            for loaded in [m for m in sys.modules if m == {PACKAGE!r} or m.startswith({PACKAGE!r} + ".")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] == {PACKAGE!r}:
                    failed.append(f"{{name}}: {{exc}}")
                # else: an optional library of one source is not installed here
            except Exception as exc:
                failed.append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
        print("\\n".join(failed))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
