"""A fully connected ReLU network, as in the weight- vs unit-pruning study (hidden layers of
1000, 1000, 500, 200 units on 28x28 digits, no biases). Every layer is a plain ``nn.Linear``
named fc1, fc2, ... so unit pruning removes rows of one layer and columns of the next."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .lenet import _pair


class MLP(nn.Sequential):
    """Flatten, then one ReLU layer per entry of ``hidden`` and the classifier. ``bias`` applies
    to every layer (default off, as in the study)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int | tuple[int, int] = (28, 28),
                 hidden: tuple[int, ...] | int = (1000, 1000, 500, 200), bias: bool = False) -> None:
        h, w = _pair(input_size)
        sizes = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        features = in_channels * h * w
        for i, units in enumerate(sizes, 1):
            layers[f"fc{i}"] = nn.Linear(features, int(units), bias=bias)
            layers[f"relu{i}"] = nn.ReLU()
            features = int(units)
        layers[f"fc{len(sizes) + 1}"] = nn.Linear(features, num_classes, bias=bias)
        super().__init__(layers)


def fc(num_classes: int = 10, in_channels: int = 1, input_size: int | tuple[int, int] = (28, 28), **kwargs) -> MLP:
    """MLP, hidden 1000-1000-500-200 by default, no biases (``--model-arg bias=true`` adds them)."""
    return MLP(num_classes, in_channels, input_size, **kwargs)
