"""Measure the package's shape from its source (issue 28): size, back-arrows, cycles, local imports.

    python scripts/shape_metrics.py            # summary
    python scripts/shape_metrics.py --detail   # and every back-arrow, cycle and local import

Everything is read statically with `ast`; nothing is imported, so the numbers do not depend on
which optional packages are installed.

* Layers (low to high, from docs/DESIGN.md and what the modules are for). A module may import its
  own layer or lower ones; an import of a higher layer is a *back-arrow*, and so is any import of
  the package ``fmprune/__init__`` from inside (it re-exports the whole library, so it sits on top).
  ``run/`` (config, run directory, checkpoints, the prune loop) is the run infrastructure that the
  other methods (one-shot baselines, sparsify, quantise, the Pruner) build on, so it is below them.
* Edges go to the module that defines a name: ``from ..engine import create_engine`` is followed
  through ``engine/__init__`` to the submodule it re-exports from, so a package's re-exports do
  not make every package one knot. Imports under ``if TYPE_CHECKING:`` are left out (they never
  run); function-local imports are in.
* A cycle is a strongly connected component of more than one module.
* A duplicate name is a module file name (``__init__.py`` aside) found in more than one folder
  (two ``chain.py``): an import or a traceback then says less than it seems to. ``cli/`` is left
  out: its modules are named after the command families they hold (``cli/latency.py`` is
  ``fmprune latency-table``), so a name there mirrors the library module it calls.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "fmprune"

# Lowest first. The key is the first part of the module path below fmprune.
LAYERS: list[tuple[str, ...]] = [
    ("version", "errors", "atomic", "seeding", "devices", "progress", "validate", "userfiles", "modes",
     "tables", "quiet", "onnx_export", "timing", "surgery", "layers", "runtimes", "distillation"),
    ("graph", "costs", "latency", "data", "models"),
    ("criteria", "engine", "training"),
    ("run",),
    ("efficiency", "baselines", "unstructured", "quantize", "pruner"),
    ("study",),
    ("cli", "__main__"),
    ("__init__",),
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


@dataclass
class Module:
    name: str                       # dotted, e.g. fmprune.engine.general
    path: Path
    is_package: bool
    lines: int
    tree: ast.Module
    # name defined here or re-exported: name -> module that defines it (filled for packages)
    exports: dict[str, str] = field(default_factory=dict)


@dataclass
class Import:
    source: str
    target: str
    line: int
    local: bool                     # inside a function body


def dotted(path: Path, package: Path = PACKAGE) -> tuple[str, bool]:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def load_modules(package: Path = PACKAGE) -> dict[str, Module]:
    modules = {}
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        name, is_package = dotted(path, package)
        modules[name] = Module(name, path, is_package, len(text.splitlines()), ast.parse(text))
    return modules


def base_of(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.name.split(".")
    if not module.is_package:
        parts = parts[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def walk_imports(tree: ast.AST):
    """(import node, inside a function) for every import that runs, TYPE_CHECKING blocks skipped."""
    def visit(node, local):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for other in child.orelse:
                    yield from visit_one(other, local)
                continue
            yield from visit_one(child, local)

    def visit_one(node, local):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, local
        inner = local or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from visit(node, inner)

    yield from visit(tree, False)


def resolve(modules: dict[str, Module], base: str, name: str, seen: frozenset = frozenset()) -> str:
    """The module that `from base import name` really reads from."""
    if f"{base}.{name}" in modules:
        return f"{base}.{name}"
    module = modules.get(base)
    if module is None or not module.is_package or (base, name) in seen:
        return base
    for node, local in walk_imports(module.tree):
        if local or not isinstance(node, ast.ImportFrom):
            continue
        for alias in node.names:
            if (alias.asname or alias.name) == name:
                return resolve(modules, base_of(module, node), alias.name, seen | {(base, name)})
    return base


def imports_of(modules: dict[str, Module]) -> list[Import]:
    found = []
    for module in modules.values():
        for node, local in walk_imports(module.tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = base_of(module, node)
                # a name from the root package is an import of its __init__, wherever it is defined
                targets = [base if base == "fmprune" and f"{base}.{a.name}" not in modules
                           else resolve(modules, base, a.name) for a in node.names]
            for target in targets:
                if target.split(".")[0] == "fmprune" and target in modules and target != module.name:
                    found.append(Import(module.name, target, node.lineno, local))
    return found


def layer_key(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def back_arrows(imports: list[Import]) -> list[Import]:
    arrows, unknown = {}, set()
    for imp in imports:
        src, dst = layer_key(imp.source), layer_key(imp.target)
        if src not in LAYER_OF or dst not in LAYER_OF:
            unknown.add(imp.source if src not in LAYER_OF else imp.target)
            continue
        upward = LAYER_OF[dst] > LAYER_OF[src]
        to_root = imp.target == "fmprune" and imp.source != "fmprune"
        if upward or to_root:
            arrows.setdefault((imp.source, imp.target), imp)
    for name in sorted(unknown):
        print(f"shape_metrics: {name} is in no layer (add it to LAYERS); its imports are not judged", file=sys.stderr)
    return list(arrows.values())


def cycles(names: list[str], imports: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph = {n: sorted({i.target for i in imports if i.source == n}) for n in names}
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in names:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def local_imports(modules: dict[str, Module]) -> list[tuple[str, int, str, bool]]:
    """(module, line, what, internal) for every import inside a function body."""
    found = []
    for module in modules.values():
        for node, local in walk_imports(module.tree):
            if not local:
                continue
            if isinstance(node, ast.Import):
                what = ", ".join(a.name for a in node.names)
                internal = any(a.name.split(".")[0] == "fmprune" for a in node.names)
            else:
                base = base_of(module, node)
                internal = base.split(".")[0] == "fmprune"
                what = ", ".join(sorted({resolve(modules, base, a.name) for a in node.names})) if internal else base
            found.append((module.name, node.lineno, what, internal))
    return found


MIRRORS = ("cli",)   # folders whose module names mirror the library's on purpose


def duplicate_names(modules: dict[str, Module]) -> dict[str, list[str]]:
    """File name -> the modules (dotted) that have it, for every name held by two or more modules
    outside :data:`MIRRORS`."""
    by_name: dict[str, list[str]] = {}
    for module in modules.values():
        parts = module.name.split(".")
        if module.is_package or (len(parts) > 2 and parts[1] in MIRRORS):
            continue
        by_name.setdefault(parts[-1], []).append(module.name)
    return {name: sorted(found) for name, found in sorted(by_name.items()) if len(found) > 1}


def short(name: str) -> str:
    return name.removeprefix("fmprune.").replace(".", "/") if name != "fmprune" else "__init__"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detail", action="store_true", help="list every back-arrow, cycle and local import")
    args = parser.parse_args()

    modules = load_modules()
    imports = imports_of(modules)
    largest = max(modules.values(), key=lambda m: m.lines)
    arrows = back_arrows(imports)
    knots = cycles(sorted(modules), imports)
    local = local_imports(modules)
    internal_local = [entry for entry in local if entry[3]]
    duplicates = duplicate_names(modules)
    readme = ROOT / "README.md"

    print(f"files (.py) in src/fmprune:   {len(modules)}")
    print(f"lines in src/fmprune:         {sum(m.lines for m in modules.values())}")
    print(f"largest module:               {largest.path.relative_to(PACKAGE)} ({largest.lines} lines)")
    print(f"back-arrows:                  {len(arrows)}")
    print(f"import cycles:                {len(knots)}"
          + (f" ({', '.join(str(len(k)) for k in knots)} modules)" if knots else ""))
    print(f"function-local imports:       {len(local)} ({len(internal_local)} of fmprune modules,"
          f" {len(local) - len(internal_local)} of optional/heavy packages)")
    print(f"duplicate module names:       {len(duplicates)} (cli/, named after command families, aside)")
    print(f"README.md:                    {readme.stat().st_size} bytes, {len(readme.read_text().splitlines())} lines")
    if not args.detail:
        return
    print("\nback-arrows:")
    for imp in sorted(arrows, key=lambda i: (i.source, i.target)):
        print(f"  {short(imp.source)}:{imp.line} -> {short(imp.target)}{'  (local)' if imp.local else ''}")
    print("\ncycles:")
    for knot in knots:
        print("  " + " <-> ".join(short(n) for n in knot))
    print("\nduplicate module names:")
    for name, found in duplicates.items():
        print(f"  {name}.py: {', '.join(short(n) for n in found)}")
    print("\nfunction-local imports of fmprune modules:")
    for name, line, what, _ in sorted(internal_local):
        print(f"  {short(name)}:{line}  {', '.join(short(w) for w in what.split(', '))}")
    print("\nfunction-local imports of other packages:")
    for name, line, what, _ in sorted(entry for entry in local if not entry[3]):
        print(f"  {short(name)}:{line}  {what}")


if __name__ == "__main__":
    main()
