"""A zoo ResNet-20 through the command line, as a user runs it on real-shaped images: trained a
few iterations on digits presented as 3×32×32, pruned with retraining (residual groups), killed
with SIGKILL mid-run and resumed to exactly the uninterrupted run's decisions, then counted,
compared and exported from the checkpoint alone."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from fmprune.run.checkpoint import load_checkpoint
from test_cli import fmprune


@pytest.fixture(scope="module")
def resnet_ckpt(idx_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("r20") / "resnet20.pt"
    fmprune("train", "--model", "resnet20", "--model-arg", "widths=4,8,8", "--data-dir", f"mnist3x32:{idx_dir}",
            "--max-iters", 3, "--batch-size", 32, "--quiet", "--out", out)
    return out


def _decisions(run_dir):
    with open(run_dir / "steps.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_train_records_how_to_rebuild_the_resnet(resnet_ckpt):
    ckpt = load_checkpoint(resnet_ckpt)
    assert ckpt.arch == "resnet20" and tuple(ckpt.input_shape) == (3, 32, 32)
    counted = fmprune("count", "--checkpoint", resnet_ckpt).stdout
    assert "total" in counted and "layer1.0.conv1" in counted


def test_killed_resnet_prune_resumes_to_the_uninterrupted_run(resnet_ckpt, idx_dir, tmp_path):
    args = ["prune", "--checkpoint", resnet_ckpt, "--data-dir", f"mnist3x32:{idx_dir}", "--retrain", 4,
            "--retrain-batch", 16, "--calibration", 64, "--save-every", 2, "--steps", 12, "--quiet"]
    fmprune(*args, "--run-dir", tmp_path / "whole")
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "fmprune", *map(str, args), "--run-dir", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steps = run / "steps.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if steps.exists() and len(steps.read_text().splitlines()) >= 7:   # header, step 0, >= 5 steps
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists()
    fmprune(*args, "--run-dir", run)
    assert _decisions(run) == _decisions(tmp_path / "whole")
    assert len(_decisions(run)) == 13 and "Resumed at step" in (run / "run.log").read_text()
    # the pruned checkpoint rebuilds with no other flag: compare and export read it alone
    out = fmprune("compare", run, "--no-scratch", "--repeats", 1, "--runtime", "eager,eager-cl",
                  "--data-dir", f"mnist3x32:{idx_dir}").stdout
    assert any(line.startswith("pruned ") for line in out.splitlines()), out
    assert any(line.startswith("eager-cl ") for line in out.splitlines()), out   # its own table rows
    exported = fmprune("export", run, "--out-dir", tmp_path / "deploy").stdout
    assert "run with onnxruntime" in exported
