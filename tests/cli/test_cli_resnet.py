"""A zoo ResNet-20 through the command line, as a user runs it on real-shaped images: trained a
few iterations on digits presented as 3×32×32, pruned with retraining (residual groups), killed
with SIGKILL mid-run and resumed to exactly the uninterrupted run's decisions, then counted,
compared and exported from the checkpoint alone."""

from __future__ import annotations

import pytest

from fmprune.run.checkpoint import load_checkpoint
from support.entry_point import decisions, fmprune, kill_minus_9_after


@pytest.fixture(scope="module")
def resnet_ckpt(idx_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("r20") / "resnet20.pt"
    fmprune("train", "--model", "resnet20", "--model-arg", "widths=4,8,8", "--data-dir", f"mnist3x32:{idx_dir}",
            "--max-iters", 3, "--batch-size", 32, "--quiet", "--out", out)
    return out


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
    kill_minus_9_after(args, run, steps=5, timeout=300)
    fmprune(*args, "--run-dir", run)
    assert decisions(run) == decisions(tmp_path / "whole")
    assert len(decisions(run)) == 13 and "Resumed at step" in (run / "run.log").read_text()
    # the pruned checkpoint rebuilds with no other flag: compare and export read it alone
    out = fmprune("compare", run, "--no-scratch", "--repeats", 1, "--runtime", "eager,eager-cl",
                  "--data-dir", f"mnist3x32:{idx_dir}").stdout
    assert any(line.startswith("pruned ") for line in out.splitlines()), out
    assert any(line.startswith("eager-cl ") for line in out.splitlines()), out   # its own table rows
    exported = fmprune("export", run, "--out-dir", tmp_path / "deploy").stdout
    assert "run with onnxruntime" in exported
