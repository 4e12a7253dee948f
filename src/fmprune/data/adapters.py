"""Presenting a dataset in another image format, so models built for it run on real images here.

``rgb32`` turns 1×28×28 digits into 3×32×32 images: 2 pixels of black border on every side and
the grey channel repeated three times, the input the CIFAR zoo models expect. The channel repeat
is a view (no copy), so MNIST costs 290 MB in memory instead of 860 MB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DataError
from .splits import Split, Splits


def _rgb32(images: torch.Tensor) -> torch.Tensor:
    n, c, h, w = images.shape
    if c != 1 or h > 32 or w > 32:
        raise DataError(f"the rgb32 adapter takes 1-channel images of at most 32x32, got {c}x{h}x{w}")
    top, left = (32 - h) // 2, (32 - w) // 2
    padded = F.pad(images, (left, 32 - w - left, top, 32 - h - top))
    return padded.expand(n, 3, 32, 32)


ADAPTERS = {"rgb32": (_rgb32, "3x32")}   # name -> (conversion, suffix of the dataset name)


def adapt(splits: Splits, adapter: str) -> Splits:
    """``splits`` with every image passed through ``adapter``; the labels are untouched, and the
    fingerprint (over the adapted tensors) differs from the original's."""
    try:
        fn, suffix = ADAPTERS[adapter]
    except KeyError:
        raise DataError(f"unknown data adapter {adapter!r} (available: {', '.join(ADAPTERS)})") from None
    convert = lambda s: Split(fn(s.images), s.labels)  # noqa: E731
    return Splits(convert(splits.train), convert(splits.val), convert(splits.test),
                  source=f"{adapter}:{splits.source}", classes=splits.classes,
                  augmentation=splits.augmentation, name=f"{splits.name or 'data'}{suffix}",
                  input_note=splits.input_note)
