"""The house limits of issue 15, measured: files over 600 lines, functions over 80 lines and import cycles among
the project's own modules in shoal/, services/ and agent/ (function-level imports count: they close a cycle as
surely as top-level ones, only later; so do `if TYPE_CHECKING:` imports, which close it for the type checker and
for every reader who must understand both modules at once). Run `python scripts/house_limits.py` for the report;
tests/unit/test_house_limits.py holds the tree to the limits."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shoal", "services", "agent")
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


@dataclass
class Report:
    long_files: list[tuple[str, int]] = field(default_factory=list)
    long_functions: list[tuple[str, int]] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)


def sources(root: Path = ROOT) -> dict[str, Path]:
    """Module name → file, for every .py file of the project's packages."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


_NAMES_FROM = "<names>"  # marks `from pkg import name`: the package's own __init__ must have run to give `name`


def _imports(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """Absolute names a module imports, anywhere in it, `if TYPE_CHECKING:` blocks included."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
            if base and any(alias.name != "*" for alias in node.names):
                names.add(f"{base}.{_NAMES_FROM}")
    return names


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the project modules it imports (importing a.b.c runs a/__init__ and a/b/__init__ too)."""
    files = sources(root)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        imported = _imports(tree, module, path.name == "__init__.py")
        for name in imported:
            parts = name.split(".")
            if parts[-1] == _NAMES_FROM:
                # `from pkg import a, b` inside pkg needs pkg/__init__ finished only if a name is not a submodule
                base = ".".join(parts[:-1])
                if base in files and base != module and any(
                        n.rsplit(".", 1)[0] == base and n not in files and not n.endswith(_NAMES_FROM)
                        for n in imported):
                    edges.add(base)
                continue
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in files and target != module and not module.startswith(target + "."):
                    edges.add(target)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def measure(root: Path = ROOT) -> Report:
    report = Report()
    for path in sources(root).values():
        text = path.read_text()
        rel = str(path.relative_to(root))
        lines = text.count("\n")
        if lines > MAX_FILE_LINES:
            report.long_files.append((rel, lines))
        for node in ast.walk(ast.parse(text, rel)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                span = node.end_lineno - node.lineno + 1
                if span > MAX_FUNCTION_LINES:
                    report.long_functions.append((f"{rel}:{node.lineno} {node.name}", span))
    report.cycles = cycles(import_graph(root))
    return report


def main() -> int:
    report = measure()
    print(f"files over {MAX_FILE_LINES} lines: {len(report.long_files)}")
    for name, n in sorted(report.long_files, key=lambda x: -x[1]):
        print(f"  {n:5d} {name}")
    print(f"functions over {MAX_FUNCTION_LINES} lines: {len(report.long_functions)}")
    for name, n in sorted(report.long_functions, key=lambda x: -x[1]):
        print(f"  {n:5d} {name}")
    print(f"import cycles: {len(report.cycles)}")
    for component in report.cycles:
        print("  " + " <-> ".join(component))
    return 0 if not (report.long_files or report.long_functions or report.cycles) else 1


if __name__ == "__main__":
    raise SystemExit(main())
