"""Every run method of the registry (``fmprune.study.methods.METHODS``), run small: its directory
carries the shared stamps, a sweep and a report read it, a second run returns the first's
result, and every other method, or the same method with another configuration or base
checkpoint, is refused there. A method added to the registry is tested here with no test edit."""

from __future__ import annotations

import json
import shutil
from dataclasses import MISSING, fields

import pytest

from fmprune.data import sha256_file
from fmprune.errors import FmpruneError
from fmprune.run.checkpoint import load_checkpoint, save_checkpoint
from fmprune.run.rundir import PRUNE_KIND, recorded_method
from fmprune.study.methods import METHODS, method
from fmprune.study.report import write_report
from fmprune.version import __version__

STAMPS = {"base_checkpoint", "base_checkpoint_sha256", "data_fingerprint", "fmprune_version", "torch_version",
          "device"}


def files(run):
    """The run's files and their modification times (the lock file aside: refusing takes it)."""
    return sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def runs(small_ckpt, splits, tmp_path_factory):
    """One small run of every method, and its one-line outcome."""
    root = tmp_path_factory.mktemp("methods")
    return {name: (root / name, m.sweep_run(str(small_ckpt), splits, m.example, root / name, "cpu"))
            for name, m in METHODS.items()}


@pytest.mark.parametrize("name", list(METHODS))
def test_a_run_carries_the_stamps_and_is_read_again(name, runs, small_ckpt, splits):
    run, line = runs[name]
    m = METHODS[name]
    config = json.loads((run / "config.json").read_text())
    assert STAMPS <= set(config) and config["base_checkpoint"] == str(small_ckpt)
    assert config["base_checkpoint_sha256"] == sha256_file(small_ckpt) and config["fmprune_version"] == __version__
    assert {k: config[k] for k in m.config.from_dict(m.example).to_dict()} == m.config.from_dict(m.example).to_dict()
    assert recorded_method(run) == name and (config.get("kind") is None) == (name == PRUNE_KIND)
    assert (run / "summary.json").is_file() and (run / "model.pt").is_file()
    assert load_checkpoint(run / "model.pt").input_shape == load_checkpoint(small_ckpt).input_shape
    assert line and "\n" not in line
    mtime = (run / "summary.json").stat().st_mtime_ns
    assert m.sweep_run(str(small_ckpt), splits, m.example, run, "cpu") == line   # its result, not a new run
    assert (run / "summary.json").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("name", list(METHODS))
def test_a_report_reads_the_run(name, runs, tmp_path):
    run, _ = runs[name]
    report = write_report([run], tmp_path / "report").read_text()
    assert report.startswith("# fmprune report") and (str(run) in report or run.name in report)


@pytest.mark.parametrize("name", list(METHODS))
def test_other_methods_and_other_runs_are_refused(name, runs, small_ckpt, splits, tmp_path):
    run, _ = runs[name]
    before = files(run)
    for other in METHODS.values():
        if other.name != name:
            with pytest.raises(FmpruneError, match=f"holds a {name} run, not a {other.name} run"):
                other.sweep_run(str(small_ckpt), splits, other.example, run, "cpu")
    m = METHODS[name]
    changed = {**m.example, "seed": 1}
    with pytest.raises(FmpruneError, match="holds a run with a different configuration"):
        m.sweep_run(str(small_ckpt), splits, changed, run, "cpu")
    other_base = tmp_path / "other.pt"
    ckpt = load_checkpoint(small_ckpt)
    ckpt.state_dict["fc2.bias"] += 1.0
    save_checkpoint(ckpt, other_base)
    with pytest.raises(FmpruneError, match="another base checkpoint"):
        m.sweep_run(str(other_base), splits, m.example, run, "cpu")
    assert files(run) == before   # nothing of it changed


def test_an_unknown_method_is_one_line():
    with pytest.raises(FmpruneError, match="run method 'nope' is not one of prune, sparsify, oneshot"):
        method("nope")


@pytest.mark.parametrize("name", list(METHODS))
def test_a_run_from_before_a_setting_existed_is_the_same_run_at_its_default(name, runs, small_ckpt, splits, tmp_path):
    """A config.json written before a setting was added lacks its key: the run is still this
    run when the setting is at its default (the default keeps the old behaviour), and another
    run when it is not."""
    run, line = runs[name]
    old = tmp_path / "old"
    shutil.copytree(run, old)
    m = METHODS[name]
    defaults = {f.name: f.default for f in fields(m.config) if f.name not in m.example
                and isinstance(f.default, (bool, int, float)) and f.default is not MISSING}
    key = sorted(defaults)[0]
    config = json.loads((old / "config.json").read_text())
    del config[key]
    (old / "config.json").write_text(json.dumps(config))
    assert m.sweep_run(str(small_ckpt), splits, m.example, old, "cpu") == line
    changed = {**m.example, key: (not defaults[key]) if isinstance(defaults[key], bool) else defaults[key] + 1}
    with pytest.raises(FmpruneError, match="holds a run with a different configuration"):
        m.sweep_run(str(small_ckpt), splits, changed, old, "cpu")
