"""python -m scripts.import_graph — which refign subpackage imports which, and the layers that follow.

A module's subpackage is its first component under ``refign`` (``refign.engine.trainer`` → ``engine``); the
top-level modules (``train``, ``build``, …) count as one each. Only imports of refign itself are read, from the
source text (nothing is executed), including imports inside functions. Layers: a subpackage's layer is one
more than the highest layer it imports (a cycle is reported instead), so an arrow can only point down.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "refign"


def unit(module: str) -> str:
    """``refign.a.b.c`` → ``a``; ``refign.train`` → ``train``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "refign"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of the refign modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # ``from refign import build`` imports the module ``refign.build``
            found |= {f"{base}.{a.name}" for a in node.names} if base == "refign" else {base}
    return {m for m in found if m == "refign" or m.startswith("refign.")}


def graph() -> dict[str, set[str]]:
    """subpackage → the other subpackages it imports."""
    edges: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        src = unit(module_name(path))
        deps = edges.setdefault(src, set())
        deps |= {unit(m) for m in imports_of(path)} - {src, "refign"}
    return edges


def layers(edges: dict[str, set[str]]) -> dict[str, int]:
    """Longest import chain below each subpackage; raises on a cycle, naming it."""
    level: dict[str, int] = {}

    def visit(node: str, stack: tuple[str, ...]) -> int:
        if node in stack:
            raise ValueError("import cycle: " + " -> ".join((*stack[stack.index(node) :], node)))
        if node not in level:
            level[node] = 1 + max((visit(d, (*stack, node)) for d in edges.get(node, ())), default=-1)
        return level[node]

    for node in edges:
        visit(node, ())
    return level


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args()
    edges = graph()
    for src in sorted(edges):
        print(f"{src:14s} -> {', '.join(sorted(edges[src])) or '-'}")
    try:
        level = layers(edges)
    except ValueError as err:
        print(err)
        return 1
    print()
    for n in range(max(level.values()) + 1):
        print(f"layer {n}: {', '.join(sorted(k for k, v in level.items() if v == n))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
