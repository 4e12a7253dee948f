"""Shared fixtures: small real-shaped data written as genuine IDX files, and small LeNets."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fmprune.data import load_splits
from fmprune.models import LeNet
from fmprune.models.spec import ModelSpec
from fmprune.training import TrainConfig, train


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write ``array`` (uint8) in the MNIST IDX format."""
    magic = 0x0801 if array.ndim == 1 else 0x0803
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images whose class is a bright 4x4 blob at a class-specific place, plus noise:
    learnable in a few hundred steps, so tests can check that training really learns."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 28, 28))
    for i, c in enumerate(labels):
        r, col = 3 + (c // 5) * 12 + rng.integers(0, 4), 2 + (c % 5) * 5 + rng.integers(0, 2)
        images[i, r:r + 5, col:col + 4] = 230
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_idx_dataset(directory: Path, n_train: int = 1200, n_test: int = 300, gz: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tx, ty = synthetic_digits(n_train, 1)
    sx, sy = synthetic_digits(n_test, 2)
    write_idx(directory / "train-images-idx3-ubyte", tx, gz)
    write_idx(directory / "train-labels-idx1-ubyte", ty, gz)
    write_idx(directory / "t10k-images-idx3-ubyte", sx, gz)
    write_idx(directory / "t10k-labels-idx1-ubyte", sy, gz)
    return directory


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
    return write_idx_dataset(tmp_path_factory.mktemp("idx"))


@pytest.fixture(scope="session")
def splits(idx_dir):
    return load_splits(idx_dir)


SMALL_SPEC = ModelSpec("lenet", kwargs={"widths": (6, 8, 24)}, num_classes=10, input_shape=(1, 28, 28))


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
