"""The Pruner under torchrun with 2 CPU processes (gloo): every rank removes the same maps as one
process that saw the same global batches, and ranks holding different models are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support.paths import ROOT, SUPPORT
from support.torchrun import torchrun

WORKER = SUPPORT / "ddp_pruner_worker.py"


def test_ddp_ranks_decide_as_one_process(tmp_path):
    single = tmp_path / "single.json"
    subprocess.run([sys.executable, str(WORKER), str(single)], check=True, timeout=300,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    done = torchrun(WORKER, str(tmp_path / "ddp.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    one = json.loads(single.read_text())
    ranks = [json.loads((tmp_path / f"ddp.json.{r}").read_text()) for r in range(2)]
    assert ranks[0]["removed"] == ranks[1]["removed"] == one["removed"]
    assert len(one["removed"]) == 3 and all(len(step) == 3 for step in one["removed"])
    assert ranks[0]["weights"] == ranks[1]["weights"]            # the ranks' models are identical
    assert ranks[0]["weights"] == pytest.approx(one["weights"], rel=1e-4, abs=1e-5)


def test_ranks_with_different_models_are_refused(tmp_path):
    done = torchrun(WORKER, str(tmp_path / "bad.json"), "--mismatch")
    assert done.returncode == 0, done.stderr[-2000:]
    for r in range(2):
        error = json.loads((tmp_path / f"bad.json.{r}").read_text())["error"]
        assert error.startswith("the ranks disagree on the model") and "\n" not in error


def test_the_classification_example_runs_under_torchrun(tmp_path):
    done = torchrun(ROOT / "examples" / "classification.py", "--iterations", "120", "--out", str(tmp_path / "c"))
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"c.{r}").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] and len(ranks[0]["removed"]) == 3
    assert "test accuracy" in done.stdout
