"""The import graph of our packages, read from the source with ``ast`` (nothing is imported).

    python scripts/import_graph.py            # layer violations and cycles, then the largest modules
    python scripts/import_graph.py --edges    # also every edge, module -> module

Layers, lowest first; a module may import its own layer and the ones below, never one above:

    core        nas.arch, nas.model, nas.graph, nas.space, nas.references, nas.errors, nas.precision, ...
    scorers     predictors.*, nas.distill.*, nas.finetune.* (not their cli modules)
    search      nas.search.* (not cli), nas.reproduce
    cli         nas.cli, nas.commands, */cli.py

Imports inside functions count too (they are how a lower layer reaches up lazily).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("nas", "predictors")
LAYERS = ("core", "scorers", "search", "cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    if module in ("nas.cli", "nas.commands") or module.endswith(".cli"):
        return "cli"
    if module.startswith("nas.search") or module == "nas.reproduce":  # consumers of the scorers
        return "search"
    if module.startswith(("predictors", "nas.distill", "nas.finetune")):
        return "scorers"
    return "core"


def imports(path: Path, modules: set[str]) -> set[str]:
    """Our modules that `path` imports (absolute and relative), resolved to the longest known name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    # `if TYPE_CHECKING:` imports are for annotations only; they never run.
    skipped = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
               for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module; `from mod import name` the module itself.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != here:
                found.add(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every edge")
    args = parser.parse_args()
    files = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph = {m: imports(p, set(files)) for m, p in files.items()}
    upward = [(m, d) for m, deps in graph.items() for d in deps if LAYERS.index(layer(d)) > LAYERS.index(layer(m))]
    print(f"{len(files)} modules, {sum(map(len, graph.values()))} edges")
    print(f"\nimports that go up a layer ({len(upward)}):")
    for m, d in sorted(upward):
        print(f"  {m} [{layer(m)}] -> {d} [{layer(d)}]")
    found = cycles(graph)
    print(f"\nimport cycles ({len(found)}):")
    for component in found:
        print("  " + " <-> ".join(component))
    print("\nlargest modules (lines):")
    for m, p in sorted(files.items(), key=lambda kv: -len(kv[1].read_text().splitlines()))[:8]:
        print(f"  {len(p.read_text().splitlines()):>5}  {m}")
    if args.edges:
        print("\nedges:")
        for m in sorted(graph):
            for d in sorted(graph[m]):
                print(f"  {m} -> {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
