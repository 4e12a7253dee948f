"""`fmprune prune --distributed` under torchrun (2 CPU processes, gloo): retraining split over the
ranks with DDP removes the same maps as one process retraining on the whole minibatches."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from support.torchrun import torchrun


def steps(run_dir) -> list[tuple[str, str, str]]:
    with open(run_dir / "steps.csv") as f:
        return [(r["step"], r["layer"], r["map"]) for r in csv.DictReader(f)]


def accuracies(run_dir) -> list[float]:
    with open(run_dir / "steps.csv") as f:
        return [float(r["accuracy"]) for r in csv.DictReader(f)]


def test_distributed_retraining_decides_as_one_process(small_ckpt, idx_dir, tmp_path):
    args = ["prune", "--checkpoint", str(small_ckpt), "--data-dir", str(idx_dir), "--steps", "3",
            "--maps-per-step", "2", "--retrain", "4", "--retrain-batch", "20", "--calibration", "100", "--quiet"]
    single = subprocess.run([sys.executable, "-m", "fmprune", *args, "--run-dir", str(tmp_path / "one")],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr
    done = torchrun("-m", "fmprune", *args, "--distributed", "--run-dir", str(tmp_path / "ddp"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert steps(tmp_path / "ddp") == steps(tmp_path / "one") and len(steps(tmp_path / "one")) == 7
    assert accuracies(tmp_path / "ddp") == pytest.approx(accuracies(tmp_path / "one"), abs=2e-3)
    assert steps(tmp_path / "ddp" / ".rank1") == steps(tmp_path / "ddp")       # rank 1's own copy
    assert done.stdout.count("3 steps in") == 1                                # rank 0 reports


def test_distributed_outside_torchrun_is_one_line(small_ckpt, idx_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run([sys.executable, "-m", "fmprune", "prune", "--checkpoint", str(small_ckpt), "--data-dir",
                           str(idx_dir), "--distributed", "--run-dir", str(tmp_path / "x")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "fmprune: error: --distributed runs under torchrun: torchrun --nproc_per_node N -m fmprune prune "
        "--distributed ..."]


def test_each_rank_takes_its_share_of_every_minibatch(splits):
    import torch

    from fmprune.run.distributed import ShardedStream
    from fmprune.training import BatchStream

    whole = BatchStream(splits.train, 20, seed=0)
    shares = [ShardedStream(BatchStream(splits.train, 20, seed=0), r, 2) for r in range(2)]
    for _ in range(3):
        x, y = next(whole)
        parts = [next(s) for s in shares]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
        assert len(parts[0][1]) == 10
