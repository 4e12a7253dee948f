"""Train/validation/test splits as in-memory tensors, and the rule that cuts validation off the
end of the training images."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError, FmpruneError

DEFAULT_VAL_SIZE = 5000

# Each purpose draws training images from its own seeded stream, so one --seed gives the pruning
# calibration, the quantisation ranges and the rank-quality batches different images.
CALIBRATION_STREAM = 7919
QUANTIZATION_STREAM = 0
RANK_QUALITY_STREAM = 104729


def default_val_size(n_train: int) -> int:
    """MNIST's rule: 5,000 of 60,000 (a twelfth) for smaller sets."""
    return min(DEFAULT_VAL_SIZE, n_train // 12)


@dataclass(frozen=True)
class Split:
    """Images (N×C×H×W float32 in [0, 1]) and labels (N int64) of one split."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int | None) -> "Split":
        """The first ``n`` examples (all when ``n`` is None or larger than the split)."""
        if n is None or n >= len(self):
            return self
        return Split(self.images[:n], self.labels[:n])

    def to(self, device: torch.device) -> "Split":
        """The same examples on ``device`` (the split itself when already there)."""
        if self.images.device == device:
            return self
        return Split(self.images.to(device), self.labels.to(device))


def calibration_subset(train: Split, n: int, seed: int, stream: int = CALIBRATION_STREAM) -> Split:
    """``n`` training images drawn with a seeded permutation (never the split reporting accuracy):
    the first ``n`` of the permutation of ``seed + stream``."""
    if n > len(train):
        raise FmpruneError(f"calibration size {n} exceeds the {len(train)} training images; "
                           f"give --calibration {len(train)} or fewer")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + stream))[:n]
    return Split(train.images[idx], train.labels[idx])


RAW_INPUT = "float32 N x C x H x W in [0, 1]"


@dataclass(frozen=True)
class Splits:
    """The three splits of a dataset. ``classes`` is the declared class count (None: the largest
    label + 1); ``augmentation`` names the label-preserving augmentations that suit these images
    (e.g. ``("crop", "flip")`` for CIFAR; digits are not flipped); ``name`` says which dataset;
    ``input_note`` what its images are, so that an exported model says what to feed it."""

    train: Split
    val: Split
    test: Split
    source: str
    classes: int | None = None
    augmentation: tuple[str, ...] = ()
    name: str = ""
    input_note: str = RAW_INPUT

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])

    @property
    def n_classes(self) -> int:
        if self.classes is not None:
            return self.classes
        return int(max(s.labels.max().item() for s in (self.train, self.val, self.test))) + 1

    def fingerprint(self) -> str:
        """SHA-256 over every tensor, so a checkpoint knows which data it was trained on
        (computed once per object: hashing a large dataset takes seconds)."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256()
            for split in (self.train, self.val, self.test):
                h.update(split.images.numpy().tobytes())
                h.update(split.labels.numpy().tobytes())
            cached = h.hexdigest()[:16]
            self.__dict__["_fingerprint"] = cached   # frozen dataclass: bypass __setattr__ once
        return cached

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of the training images (for normalisation)."""
        x = self.train.images
        total = torch.zeros(x.shape[1], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for i in range(0, len(x), 4096):   # in chunks: a float64 copy of CIFAR would take 1.4 GB
            chunk = x[i:i + 4096].transpose(0, 1).reshape(x.shape[1], -1).double()
            total += chunk.sum(1)
            squares += (chunk * chunk).sum(1)
        n = x.shape[0] * x.shape[2] * x.shape[3]
        mean = total / n
        std = ((squares - n * mean * mean) / (n - 1)).clamp_min(0).sqrt()
        return mean.tolist(), std.tolist()


def make_splits(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                val_size: int | None, source: str, **meta) -> Splits:
    """Hold out the last ``val_size`` training images (default: :func:`default_val_size`)."""
    if val_size is None:
        val_size = default_val_size(len(train_x))
    if val_size < 1 or len(train_x) <= val_size:
        raise DataError(
            f"{source}: only {len(train_x)} training images, too few to hold out a validation split"
        )
    cut = len(train_x) - val_size
    as_split = lambda x, y: Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))  # noqa: E731
    return Splits(
        train=as_split(train_x[:cut], train_y[:cut]),
        val=as_split(train_x[cut:], train_y[cut:]),
        test=as_split(test_x, test_y),
        source=source,
        **meta,
    )
