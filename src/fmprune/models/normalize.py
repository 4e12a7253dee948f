"""Input normalisation as part of the model.

A model trained on normalised inputs is only correct together with its mean and std. Keeping
them as buffers of a first layer means every consumer (evaluation, pruning, latency, export to
ONNX) sees raw [0, 1] images and gets the same answers, with no separate preprocessing to forget.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import FmpruneError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; no trainable parameters, nothing to prune."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise FmpruneError(f"normalisation needs one mean and one std per channel, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise FmpruneError(f"normalisation std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def stats(self) -> dict[str, list[float]]:
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}


class Normalized(nn.Module):
    """``net`` behind a :class:`Normalize` layer; the network's own layers keep their names under
    ``net.`` (e.g. ``net.layer1.0.conv1``)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))
