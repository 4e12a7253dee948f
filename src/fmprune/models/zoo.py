"""The zoo: architectures registered by name, each with the input it was designed for.

Every factory takes ``(num_classes, in_channels, **kwargs)``; those that size a layer from the
image (LeNet's and the MLP's first Linear) also take ``input_size=(H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import FmpruneError
from .fc import fc
from .lenet import LeNet
from .mobilenetv2 import mobilenetv2
from .resnet import resnet18
from .resnet_cifar import resnet20, resnet56
from .vgg import vgg11_bn, vgg16_bn
from .vit import vit_tiny


@dataclass(frozen=True)
class ZooEntry:
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]   # (C, H, W) the architecture was designed for
    summary: str


ZOO: dict[str, ZooEntry] = {}


def register_model(name: str, factory: Callable[..., nn.Module], input_shape: tuple[int, int, int],
                   summary: str) -> None:
    """Add an architecture under ``name`` (``--model name``)."""
    if ":" in name:
        raise FmpruneError(f"zoo names cannot contain ':' ({name!r}); that form names a factory")
    ZOO[name] = ZooEntry(factory, tuple(input_shape), summary)


def available_models() -> list[str]:
    return sorted(ZOO)


def zoo_entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise FmpruneError(
            f"unknown model {name!r} (available: {', '.join(available_models())}; "
            "or torchvision:NAME, path/to/file.py:factory, package.module:factory)"
        ) from None


MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
register_model("lenet", LeNet, MNIST, "the thesis' LeNet: 2 conv 5x5 + pool, fc 1024, dropout")
register_model("fc", fc, MNIST, "MLP 1000-1000-500-200, ReLU, no biases (weight/unit pruning study)")
register_model("resnet20", resnet20, CIFAR, "He et al. CIFAR ResNet-20, 1x1 projection shortcuts")
register_model("resnet56", resnet56, CIFAR, "He et al. CIFAR ResNet-56, 1x1 projection shortcuts")
register_model("resnet18", resnet18, CIFAR, "ResNet-18, CIFAR variant (3x3 stem, no max-pool)")
register_model("vgg11_bn", vgg11_bn, CIFAR, "VGG-11 with BatchNorm, CIFAR variant (one linear head)")
register_model("vgg16_bn", vgg16_bn, CIFAR, "VGG-16 with BatchNorm, CIFAR variant (one linear head)")
register_model("mobilenetv2", mobilenetv2, CIFAR, "MobileNetV2, CIFAR variant (overall stride 8)")
register_model("vit_tiny", vit_tiny, MNIST, "ViT: patch 7, width 64, 4 blocks of 4 heads, MLP 128 (heads, MLP units prune)")
