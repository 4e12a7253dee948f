"""scripts/shape_metrics.py: back-arrows, cycles and local imports found on a small package
written here, and none of the first two in fmprune."""

import importlib.util
import sys
from pathlib import Path

import pytest

from support.paths import ROOT

SCRIPT = ROOT / "scripts" / "shape_metrics.py"


@pytest.fixture(scope="module")
def shape():
    spec = importlib.util.spec_from_file_location("shape_metrics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "fmprune" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "fmprune"


def test_a_small_package_has_the_arrows_cycles_and_local_imports_written_into_it(shape, tmp_path):
    package = write(tmp_path, {
        "__init__.py": "from .version import __version__\n",
        "version.py": "__version__ = '0'\n",
        "graph/__init__.py": "from .graph import Graph\n",
        # graph imports study (up: a back-arrow) and study imports Graph through graph/__init__,
        # which the script follows to graph/graph.py: one cycle of two modules
        "graph/graph.py": "from ..study.report import write\nclass Graph: pass\n",
        "study/__init__.py": "",
        "study/report.py": "from ..graph import Graph\ndef write():\n    from .. import version\n    import json\n",
        "run/loop.py": "from .. import __version__\n",     # the package __init__: a back-arrow
        "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .study.report import write\n",
    })
    modules = shape.load_modules(package)
    imports = shape.imports_of(modules)
    arrows = {(a.source, a.target) for a in shape.back_arrows(imports)}
    assert arrows == {("fmprune.graph.graph", "fmprune.study.report"), ("fmprune.run.loop", "fmprune")}
    assert shape.cycles(sorted(modules), imports) == [["fmprune.graph.graph", "fmprune.study.report"]]
    local = shape.local_imports(modules)
    assert [(name, what, internal) for name, _, what, internal in local] == [
        ("fmprune.study.report", "fmprune.version", True), ("fmprune.study.report", "json", False)]


def test_fmprune_has_no_back_arrows_no_cycles_and_no_local_imports_of_its_own_modules(shape):
    modules = shape.load_modules()
    imports = shape.imports_of(modules)
    assert [f"{a.source} -> {a.target}" for a in shape.back_arrows(imports)] == []
    assert shape.cycles(sorted(modules), imports) == []
    assert [(name, line) for name, line, _, internal in shape.local_imports(modules) if internal] == []


def test_a_name_held_by_two_folders_is_a_duplicate_but_not_a_cli_mirror_or_a_package(shape, tmp_path):
    package = write(tmp_path, {
        "__init__.py": "",
        "latency.py": "",
        "cli/__init__.py": "",
        "cli/latency.py": "",                  # mirrors a command family: not counted
        "graph/__init__.py": "",
        "graph/chain.py": "",
        "engine/__init__.py": "",
        "engine/chain.py": "",
        "engine/fast/__init__.py": "",         # a package named like nothing else; __init__ never counts
        "engine/fast/chain.py": "",
    })
    assert shape.duplicate_names(shape.load_modules(package)) == {
        "chain": ["fmprune.engine.chain", "fmprune.engine.fast.chain", "fmprune.graph.chain"]}


def test_fmprune_module_names_are_unique_outside_cli(shape):
    assert shape.duplicate_names(shape.load_modules()) == {}
