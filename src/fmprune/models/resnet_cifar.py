"""He et al.'s CIFAR ResNets (depth 6n+2: ResNet-20, -32, -44, -56, -110).

A 3x3 stem of 16 maps, three stages of n basic blocks at 16, 32, 64 maps (the last two halve the
resolution), global average pooling and the classifier. Shortcuts that change shape use option
"B" (1x1 projection + BN) by default: 272,474 / 855,770 parameters for ResNet-20 / -56 at 10
classes, and they prune like any residual add. Option "A" (``shortcut="A"``, zero-padded
identity, the paper's CIFAR choice) has 269,722 / 853,018 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FmpruneError
from .blocks import basic_stage, init_conv_bn


class CifarResNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, depth: int = 20,
                 shortcut: str = "B", widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise FmpruneError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(in_channels, w1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU()
        self.layer1 = basic_stage(w1, w1, n, 1, shortcut)
        self.layer2 = basic_stage(w1, w2, n, 2, shortcut)
        self.layer3 = basic_stage(w2, w3, n, 2, shortcut)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w3, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


def resnet20(num_classes: int = 10, in_channels: int = 3, **kwargs) -> CifarResNet:
    """ResNet-20 for CIFAR (He et al. 2016, 0.27 M parameters)."""
    return CifarResNet(num_classes, in_channels, depth=20, **kwargs)


def resnet56(num_classes: int = 10, in_channels: int = 3, **kwargs) -> CifarResNet:
    """ResNet-56 for CIFAR (He et al. 2016, 0.86 M parameters)."""
    return CifarResNet(num_classes, in_channels, depth=56, **kwargs)
