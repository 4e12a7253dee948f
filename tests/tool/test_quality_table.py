"""benchmarks/quality.py --table: one table from results files written by separate processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "quality.py"


def results_file(path: Path, method: str, accs: list[float], base_acc: float = 0.9, retrain: int = 600) -> Path:
    """A results file as a run writes it: one row per seed at one target."""
    rows = [{"model": "resnet20", "target": "2x", "method": method, "seed": seed, "steps": 9, "macs_x": 2.0,
             "params_x": 1.8, "acc_pruned": 0.5, "acc_tuned": acc, "val_tuned": acc, "seconds_per_step": 3.0,
             "wall_seconds": 100.0, "widths": {}, "error": ""} for seed, acc in enumerate(accs)]
    base = {"model": "resnet20", "data": "fashion-mnist3x32", "checkpoint": "/c/base.pt", "base_iters": 2200,
            "test_accuracy": base_acc, "params": 1, "macs": 1}
    path.write_text(json.dumps({"machine": {}, "args": {"retrain": retrain, "distill": 0.5}, "bases": [base],
                                "means": [], "rows": rows, "wall_seconds": 300.0}))
    return path


def table(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--table", *map(str, paths)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_files_of_separate_processes_make_one_table(tmp_path):
    out = table(results_file(tmp_path / "a.json", "fmprune taylor+rms", [0.92, 0.93, 0.94]),
                results_file(tmp_path / "b.json", "tp taylor", [0.91, 0.91, 0.91]))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum("| base |" in line for line in lines) == 1   # the shared base model once
    ours = next(line for line in lines if "fmprune taylor+rms" in line)
    theirs = next(line for line in lines if "tp taylor" in line)
    assert "93.00 ± 1.00" in ours       # mean and sample standard deviation over the 3 seeds
    assert "91.00 ± 0.00" in theirs     # three equal seeds: a spread of 0, shown
    assert "6 rows from 2 files" in out.stdout


def test_one_seed_has_no_spread(tmp_path):
    out = table(results_file(tmp_path / "a.json", "tp L1", [0.9123]))
    assert out.returncode == 0, out.stderr
    assert "| 91.23 |" in out.stdout and "±" not in next(line for line in out.stdout.splitlines() if "tp L1" in line)


@pytest.mark.parametrize("other, says", [
    (dict(retrain=300), "retrained differently"),
    (dict(base_acc=0.8), "another resnet20 base model"),
])
def test_files_that_cannot_share_a_table_are_refused(tmp_path, other, says):
    out = table(results_file(tmp_path / "a.json", "fmprune taylor+rms", [0.92]),
                results_file(tmp_path / "b.json", "tp taylor", [0.91], **other))
    assert out.returncode != 0
    assert says in out.stderr and out.stderr.count("\n") == 1   # one line, no traceback
