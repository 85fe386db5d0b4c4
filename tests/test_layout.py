"""The layout holds: the core never imports a platform, and no module imports itself round a circle.

Imports are read from the source (every `import`, also inside functions, where circles used to hide); only
`if TYPE_CHECKING:` blocks are left out, since they never run. Platforms and importers reach the core through
entry points, which are not imports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bridge", "adapters")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    found: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports: `from a.b import c` is a.b.c when that is a module, else a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_core_never_imports_a_platform() -> None:
    offending = {
        name: sorted(m for m in targets if m.split(".")[0] == "adapters")
        for name, targets in graph().items()
        if name.split(".")[0] == "bridge"
    }
    assert {k: v for k, v in offending.items() if v} == {}


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_checks_see_cycles_and_core_imports() -> None:
    """The walker itself: a planted circle and a lazy import inside a function are both found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    lazy = ast.parse("def f():\n    from adapters.console import ConsoleAdapter\n")
    names = [n.module for n in _runtime_nodes(lazy) if isinstance(n, ast.ImportFrom)]
    assert names == ["adapters.console"]
    hidden = ast.parse("if TYPE_CHECKING:\n    import adapters.console\n")
    assert not [n for n in _runtime_nodes(hidden) if isinstance(n, ast.Import)]


def test_benchmarks_do_not_import_the_tests() -> None:
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] == "tests"], path.name


def _architecture_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Architecture")
    return readme[start : readme.index("\n## ", start + 1)]


def test_the_readme_map_names_only_modules_that_exist_and_every_core_module() -> None:
    """The README's architecture section is the map: every file it names exists, and every module of the core and
    of the platforms is on it (a module added without a word there fails here)."""
    section = _architecture_section()
    named = {match.rstrip("/") for match in re.findall(r"`((?:bridge|adapters|tests|benchmarks)/[\w/.]*)`", section)}
    missing = sorted(path for path in named if not (ROOT / path).exists() and not re.search(r"NAME|FORMAT", path))
    assert missing == [], "the README names files that do not exist"
    unmapped = sorted(
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py" and not _on_map(path.relative_to(ROOT), named, section)
    )
    assert unmapped == [], "modules the README's architecture section does not mention"


def _on_map(path: Path, named: set[str], section: str) -> bool:
    """A core module is named itself (or by its file name beside its folder's entry: `text.py` under
    `bridge/history/importers/`); a platform's modules are covered by its folder (`adapters/telegram/`)."""
    text = str(path)
    if text in named or f"`{path.name}`" in section:
        return True
    platform = path.parts[0] == "adapters" and len(path.parts) > 2
    return platform and "/".join(path.parts[:2]) in named


def test_no_test_imports_from_conftest_and_conftest_holds_only_fixtures() -> None:
    """Helpers live in tests/helpers.py and the fakes in tests/fakes/; conftest.py is pytest's, for fixtures."""
    tests = ROOT / "tests"
    pattern = re.compile(r"^from tests\.conftest import|^import tests\.conftest", re.MULTILINE)
    importing = [p.name for p in tests.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert importing == []
    tree = ast.parse((tests / "conftest.py").read_text(encoding="utf-8"))
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    plain = [f.name for f in functions if not any("fixture" in ast.unparse(d) for d in f.decorator_list)]
    assert plain == [], "helpers in conftest.py"
