"""Small trained checkpoints for the weight/unit pruning tests (fc and LeNet from the zoo)."""

from __future__ import annotations

from pathlib import Path

import torch

from fmprune.models.spec import ModelSpec, build_model
from fmprune.run.checkpoint import make_checkpoint, save_checkpoint
from fmprune.training import TrainConfig, evaluate, train

SMALL_FC = ModelSpec("fc", {"hidden": (40, 30, 20)})
SMALL_LENET = ModelSpec("lenet", {"widths": (6, 8, 24)})


def trained_checkpoint(spec: ModelSpec, splits, path: Path, epochs: int = 2) -> Path:
    """``spec`` trained briefly on ``splits`` (seed 0) and saved as a checkpoint bound to them."""
    torch.manual_seed(0)
    model = build_model(spec)
    config = TrainConfig(epochs=epochs, batch_size=50, lr=3e-3)
    train(model, splits.train, config)
    ckpt = make_checkpoint(model, spec, data_fingerprint=splits.fingerprint(),
                           accuracies={"val": evaluate(model, splits.val)}, seed=0, recipe=config.to_dict())
    return save_checkpoint(ckpt, path)
