"""What the shared fixtures (conftest.py) are built from, for tests that build their own: genuine
IDX files of synthetic digits, and the narrow LeNet's spec."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from fmprune.models.spec import ModelSpec

SMALL_SPEC = ModelSpec("lenet", kwargs={"widths": (6, 8, 24)}, num_classes=10, input_shape=(1, 28, 28))


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
