"""VGG with BatchNorm in its CIFAR form: the 3x3 conv stacks of Simonyan & Zisserman (configs A
and D), five max-pools taking 32x32 to 1x1, global average pooling and one linear classifier in
place of the ImageNet 4096-4096 head. Convolutions carry no bias: the BatchNorm after each one
has its own."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FmpruneError
from .blocks import init_conv_bn

POOL = "M"
CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg16": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL,
              512, 512, 512, POOL),
}


class VGG(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, config: str = "vgg16",
                 batch_norm: bool = True) -> None:
        super().__init__()
        try:
            layout = CONFIGS[config]
        except KeyError:
            raise FmpruneError(f"unknown VGG config {config!r} (available: {', '.join(CONFIGS)})") from None
        layers: list[nn.Module] = []
        channels = in_channels
        for item in layout:
            if item == POOL:
                layers.append(nn.MaxPool2d(2))
                continue
            layers.append(nn.Conv2d(channels, int(item), 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(item)))
            layers.append(nn.ReLU())
            channels = int(item)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def vgg11_bn(num_classes: int = 10, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-11 with BatchNorm, CIFAR variant (9.2 M parameters)."""
    return VGG(num_classes, in_channels, config="vgg11", **kwargs)


def vgg16_bn(num_classes: int = 10, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-16 with BatchNorm, CIFAR variant (14.7 M parameters)."""
    return VGG(num_classes, in_channels, config="vgg16", **kwargs)
