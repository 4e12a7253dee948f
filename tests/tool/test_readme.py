"""The README and the documentation pages tell the truth: their deterministic command blocks print
what the page shows, and every Python example in them runs (on the small synthetic data and a
small step budget).

A command block is a fenced block whose lines ``$ fmprune ...`` are each followed by that
command's output. Commands whose output depends on the machine or on training (times,
accuracies) are not compared; those listed in ``DETERMINISTIC`` are, after replacing the one
machine-dependent value they print, the cache directory. Every page is read: README.md and every
``docs/**/*.md``, so a block keeps being checked wherever it moves. A ```` ```python ```` block that
is a fragment of the reader's own program (``model``, ``loader`` are theirs) says so on the line
before its fence, ``<!-- not run: why -->``, and is left out.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import fmprune.data
import fmprune.run.loop
from fmprune.cli import main
from fmprune.criteria import Criterion
from fmprune.run.loop import PruneConfig, run_pruning
from support.paths import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
DETERMINISTIC = ("fmprune count", "fmprune data info", "fmprune models", "fmprune criteria")
NEEDS_MNIST = ("fmprune data info",)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
NOT_RUN = re.compile(r"<!-- not run: [^>]+ -->\s*$")
CACHE_PATH = re.compile(r"(pkl:)\S*/(mnist\.pkl\.gz)")
BUDGET_STEPS, BUDGET_CALIBRATION, BUDGET_RETRAIN = 3, 200, 10


@dataclass
class Block:
    """One fenced block of a page."""

    page: str        # relative to the repository root
    language: str
    body: str
    line: int        # of the block's first line inside the fence
    not_run: bool    # marked as a fragment of the reader's program


@dataclass
class Shown:
    """One ``$ command`` of a page and the output shown under it."""

    page: str
    command: str
    output: str
    line: int


def page_blocks(pages: list[Path] = PAGES) -> list[Block]:
    blocks = []
    for path in pages:
        text = path.read_text()
        for m in FENCE.finditer(text):
            before = text[:m.start()]
            blocks.append(Block(str(path.relative_to(ROOT)), m.group(1), m.group(2),
                                before.count("\n") + 2, bool(NOT_RUN.search(before))))
    return blocks


def shown_commands(pages: list[Path] = PAGES) -> list[Shown]:
    shown = []
    for block in page_blocks(pages):
        lines = block.body.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("$ ")] + [len(lines)]
        for a, b in zip(starts, starts[1:]):
            output = "\n".join(lines[a + 1:b]).rstrip()
            shown.append(Shown(block.page, lines[a][2:].strip(), output, block.line + a))
    return shown


def deterministic(pages: list[Path] = PAGES) -> list[Shown]:
    return [s for s in shown_commands(pages) if s.command.startswith(DETERMINISTIC)]


def normalised(text: str) -> str:
    """Without what differs between machines: where the cache is; trailing spaces."""
    text = CACHE_PATH.sub(r"\1<cache>/\2", text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def run_cli(args: list[str], monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", ["fmprune", *args])
    # criteria that other test modules register are not part of what a user's `criteria` lists
    shipped = {k: v for k, v in Criterion.registry.items() if v.__module__.startswith("fmprune.")}
    monkeypatch.setattr(Criterion, "registry", shipped)
    main()   # a failing command exits: the test fails with its one-line error
    return capsys.readouterr().out


def real_mnist_cache() -> list[Path]:
    """The MNIST files of this machine's cache (the file, and its decoded copy if made), or none."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "fmprune"
    if not (base / fmprune.data.MNIST_PKL_NAME).is_file():
        return []
    return [base / fmprune.data.MNIST_PKL_NAME, *sorted(base.glob("mnist-splits-*.pt"))]


def test_the_readme_shows_the_deterministic_commands():
    commands = {s.command for s in deterministic([README])}
    for needed in ("fmprune count", "fmprune data info"):
        assert needed in commands, f"README.md shows no block with `$ {needed}` and its output"


def test_the_docs_pages_are_read():
    """The blocks that moved from the README into docs/ are still found there."""
    moved = {(s.page, s.command) for s in deterministic()}
    assert ("docs/guides/criteria.md", "fmprune criteria") in moved
    assert any(e.page.startswith("docs/") for e in python_examples())


@pytest.mark.parametrize("shown", deterministic(), ids=lambda s: f"{s.page}:{s.line}:{s.command}")
def test_a_command_block_prints_what_the_readme_shows(shown, monkeypatch, capsys, tmp_path):
    if shown.command.startswith(NEEDS_MNIST):
        cached = real_mnist_cache()
        if not cached:
            pytest.skip("MNIST is not cached on this machine (fmprune data fetch)")
        home = Path(os.environ["FMPRUNE_HOME"])   # the tests' own, empty cache: the real files linked in
        home.mkdir(parents=True, exist_ok=True)
        for path in cached:
            (home / path.name).symlink_to(path)
    printed = run_cli(shlex.split(shown.command)[1:], monkeypatch, capsys)
    assert normalised(printed) == normalised(shown.output), (
        f"{shown.page} line {shown.line}: `{shown.command}` prints\n{printed}")


# ---------------------------------------------------------------------------- Python examples
def python_examples() -> list[Block]:
    return [b for b in page_blocks() if b.language == "python" and not b.not_run]


def test_the_readme_has_python_examples():
    assert any(e.page == "README.md" for e in python_examples()), "README.md has no ```python example"


PATH_LITERAL = re.compile(r"""["']([\w./-]+\.(?:pt2?|onnx|json|csv|toml|py))["']""")


def export_deploy(small_ckpt: Path, directory: Path) -> None:
    """What `fmprune export RUN --out-dir deploy` leaves, from the small checkpoint."""
    pytest.importorskip("onnxruntime")
    from fmprune.run.checkpoint import load_checkpoint
    from fmprune.study.export import export_model
    export_model(load_checkpoint(small_ckpt), directory / "deploy", onnx=True)


# files an example may read, and how the test makes them (a README command makes them for a user)
PRODUCERS = {
    "deploy/model.pt2": export_deploy,
    "deploy/model.onnx": export_deploy,
    "base.pt": lambda ckpt, d: shutil.copy(ckpt, d / "base.pt"),
    "pruned.pt": lambda ckpt, d: None,      # written by the example itself (fmprune.save)
}


def budget_config(**kwargs) -> PruneConfig:
    """The example's configuration, cut to a few steps, a small calibration set and short retraining."""
    steps = min(kwargs.pop("steps", None) or BUDGET_STEPS, BUDGET_STEPS)
    calibration = min(kwargs.pop("calibration", BUDGET_CALIBRATION), BUDGET_CALIBRATION)
    retrain = min(kwargs.pop("retrain", 0), BUDGET_RETRAIN)
    return PruneConfig(steps=steps, calibration=calibration, retrain=retrain, **kwargs)


@pytest.mark.parametrize("example", python_examples(), ids=lambda e: f"{e.page}:{e.line}")
def test_a_python_example_runs(example, small_ckpt, splits, tmp_path, monkeypatch):
    code, line = example.body, example.line
    needed = set(PATH_LITERAL.findall(code))
    unknown = sorted(p for p in needed if p not in PRODUCERS)
    if unknown:
        pytest.skip(f"{example.page} line {line} needs {', '.join(unknown)}, which an earlier command produces")
    for producer in {id(PRODUCERS[p]): PRODUCERS[p] for p in needed}.values():
        producer(small_ckpt, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fmprune.data, "load_splits", lambda *a, **k: splits)   # the small data
    monkeypatch.setattr(fmprune.run.loop, "PruneConfig", budget_config)
    monkeypatch.setattr(Criterion, "registry", dict(Criterion.registry))       # examples may register
    before = set(Criterion.registry)
    exec(compile(code, f"{example.page}:{line}", "exec"), {"__name__": "readme_example"})
    for name in sorted(set(Criterion.registry) - before):   # "works everywhere by name": prune with it
        summary = run_pruning(small_ckpt, splits, PruneConfig(criterion=name, steps=2, calibration=100),
                              tmp_path / f"with-{name}")
        assert summary.steps == 2
