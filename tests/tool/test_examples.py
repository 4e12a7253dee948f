"""The library examples in examples/ run as a user runs them (small sizes here) and do what their
docs say: 2x fewer MACs for the U-Net, heads kept whole, a pruned model loaded back equal."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from support.paths import ROOT


def run_example(name: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True,
                          text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_segmentation_unet_pruned_to_half_the_macs_and_loaded_back(tmp_path):
    out = run_example("segmentation.py", "--train-iterations", "40", "--retrain-steps", "2",
                      "--save", str(tmp_path / "unet.pt"), "--run-dir", str(tmp_path / "run"))
    reduction = float(re.search(r"MACs x([\d.]+) fewer", out.splitlines()[-2]).group(1))
    assert reduction >= 2.0
    final = re.search(r"mean IoU [\d.]+ -> ([\d.]+)", out).group(1)
    assert re.search(rf"loaded back from .*: mean IoU {final}$", out.strip().splitlines()[-1])
    assert (tmp_path / "run" / "summary.json").exists() and (tmp_path / "run" / "steps.csv").exists()


def test_two_heads_keep_their_outputs():
    out = run_example("two_heads.py", "--iterations", "150")
    groups = dict(re.findall(r"^(\S+)\s+\d+ -> (\d+)$", out, re.M))
    assert set(groups) == {"body.0", "body.3", "classify.0"}        # heads' outputs are not groups
    assert "accuracy" in out and "regression RMSE" in out


def test_classification_single_process(tmp_path):
    out = run_example("classification.py", "--iterations", "120", "--out", str(tmp_path / "c.json"))
    assert "test accuracy" in out and (tmp_path / "c.json").exists()
