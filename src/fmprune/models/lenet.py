"""The thesis' LeNet, the project's reference model on MNIST."""

from __future__ import annotations

import torch
from torch import nn


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class LeNet(nn.Module):
    """The thesis' LeNet (TensorFlow tutorial "Deep MNIST"): conv5x5 same + ReLU + maxpool2, twice,
    then fc + ReLU + dropout 0.5 and the classifier. ``widths`` sets conv1, conv2, fc1 sizes, so a
    pruned LeNet is rebuilt as the same class, smaller; ``input_size`` (H, W) sizes fc1."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 input_size: int | tuple[int, int] = (28, 28),
                 widths: tuple[int, int, int] = (32, 64, 1024)) -> None:
        super().__init__()
        h, w = _pair(input_size)
        if h < 4 or w < 4:   # two 2x2 max-pools: fc1 would have no inputs (and torch warns at init)
            raise ValueError(f"LeNet needs inputs of at least 4x4 (two 2x2 max-pools), got {h}x{w}")
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(in_channels, w1, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(w1, w2, 5, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(w2 * (h // 4) * (w // 4), w3)
        self.relu3 = nn.ReLU()
        self.dropout = nn.Dropout(0.5)
        self.fc2 = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.dropout(self.relu3(self.fc1(self.flatten(x))))
        return self.fc2(x)
