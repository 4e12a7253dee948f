"""Shared fixtures: small real-shaped data written as genuine IDX files, and small LeNets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmprune.data import load_splits
from fmprune.models import LeNet
from fmprune.training import TrainConfig, train
from support.fixture_data import SMALL_SPEC, write_idx_dataset


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
    return write_idx_dataset(tmp_path_factory.mktemp("idx"))


@pytest.fixture(scope="session")
def splits(idx_dir):
    return load_splits(idx_dir)


@pytest.fixture(scope="session")
def small_trained(splits) -> LeNet:
    """A narrow LeNet (6, 8, 24 maps) trained briefly on the synthetic digits."""
    torch.manual_seed(0)
    model = LeNet(widths=(6, 8, 24))
    train(model, splits.train, TrainConfig(epochs=3, batch_size=50, lr=3e-3))
    return model


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Never touch the user's cache from tests."""
    monkeypatch.setenv("FMPRUNE_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def small_ckpt(small_trained, splits, tmp_path_factory) -> Path:
    """``small_trained`` saved as a checkpoint bound to the synthetic data."""
    from fmprune.run.checkpoint import make_checkpoint, save_checkpoint
    from fmprune.training import evaluate

    ckpt = make_checkpoint(small_trained, SMALL_SPEC, data_fingerprint=splits.fingerprint(),
                           accuracies={"val": evaluate(small_trained, splits.val)}, seed=0,
                           recipe={"epochs": 3, "batch_size": 50, "lr": 3e-3, "weight_decay": 0.0, "seed": 0})
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("ckpt") / "small.pt")
