"""Architectures by name. Models know nothing about pruning; they are plain ``nn.Module``s whose
layer sizes can be given explicitly, so a pruned model is rebuilt as the same class, smaller."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import FmpruneError


class LeNet(nn.Module):
    """The thesis' LeNet (TensorFlow tutorial "Deep MNIST"): conv5x5 same + ReLU + maxpool2, twice,
    then fc + ReLU + dropout 0.5 and the classifier. ``widths`` sets conv1, conv2, fc1 sizes."""

    def __init__(self, input_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10,
                 widths: tuple[int, int, int] = (32, 64, 1024)) -> None:
        super().__init__()
        c, h, w = input_shape
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(c, w1, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(w1, w2, 5, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(w2 * (h // 4) * (w // 4), w3)
        self.relu3 = nn.ReLU()
        self.dropout = nn.Dropout(0.5)
        self.fc2 = nn.Linear(w3, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.dropout(self.relu3(self.fc1(self.flatten(x))))
        return self.fc2(x)


MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {"lenet": LeNet}


def available_models() -> list[str]:
    return sorted(MODEL_REGISTRY)


def create_model(name: str, input_shape: tuple[int, int, int] = (1, 28, 28),
                 n_classes: int = 10) -> nn.Module:
    """A freshly initialised model of a registered architecture."""
    try:
        factory = MODEL_REGISTRY[name]
    except KeyError:
        raise FmpruneError(
            f"unknown model {name!r} (available: {', '.join(available_models())})"
        ) from None
    return factory(input_shape=tuple(input_shape), n_classes=n_classes)
