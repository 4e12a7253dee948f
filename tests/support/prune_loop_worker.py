"""Run by tests/pruner/test_prune_loop.py in a subprocess: fmprune.prune on a small LeNet with a run
directory, optionally killed with SIGKILL right after step KILL_AT has been recorded."""

from __future__ import annotations

import os
import signal
import sys

import torch
import torch.nn.functional as F

import fmprune
from fmprune.models.lenet import LeNet


def setup():
    torch.manual_seed(0)
    model = LeNet(widths=(6, 8, 24))
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]

    def loss_fn(model, batch):
        return F.cross_entropy(model(batch[0]), batch[1])

    def evaluate(model):
        model.eval()
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    return model, batches, loss_fn, evaluate


def main(run_dir: str, kill_at: int) -> None:
    model, batches, loss_fn, evaluate = setup()

    def on_step(step, metric, params, macs):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    fmprune.prune(model, torch.zeros(1, 1, 28, 28), batches, loss_fn, evaluate, maps_per_step=2,
                  calibration_batches=2, retrain_steps=0, max_steps=6, run_dir=run_dir, on_step=on_step,
                  verbose=False)
    fmprune.load(lambda: LeNet(widths=(6, 8, 24)), os.path.join(run_dir, "model.pt"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
