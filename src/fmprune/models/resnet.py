"""ResNet-18/34 in their common CIFAR form: a 3x3 stride-1 stem and no max-pool, so a 32x32
image keeps its resolution into the first stage (11,173,962 parameters and about 0.56 G MACs
for ResNet-18 at 32x32 and 10 classes). Shortcuts that change shape are 1x1 projections + BN."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import basic_stage, init_conv_bn


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, blocks: tuple[int, ...] = (2, 2, 2, 2),
                 widths: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages, in_planes = [], widths[0]
        for i, (n, planes) in enumerate(zip(blocks, widths)):
            stages.append(basic_stage(in_planes, planes, n, 1 if i == 0 else 2, "B"))
            in_planes = planes
        self.layers = len(stages)
        for i, stage in enumerate(stages, 1):
            self.add_module(f"layer{i}", stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.layers + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(self.flatten(self.pool(x)))


def resnet18(num_classes: int = 10, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-18, CIFAR variant (3x3 stem, no max-pool; 11.17 M parameters)."""
    return ResNet(num_classes, in_channels, blocks=(2, 2, 2, 2), **kwargs)
