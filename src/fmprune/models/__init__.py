"""Architectures: the zoo by name, torchvision classifiers, and users' own factories.

Models know nothing about pruning; they are plain ``nn.Module``s whose layer sizes can be given
explicitly. A :class:`ModelSpec` records how to rebuild one (it is stored in checkpoints);
:func:`build_model` turns it into a module or says in one line why it cannot.
"""

from __future__ import annotations

from torch import nn

from .fc import MLP
from .lenet import LeNet
from .mobilenetv2 import MobileNetV2
from .normalize import Normalize, Normalized
from .request import ModelRequest, parse_input_shape, parse_model_args, parse_value
from .resnet import ResNet
from .resnet_cifar import CifarResNet
from .spec import (ModelSpec, available_zoo, build_model, build_network, check_output, default_input_shape,
                   model_kind)
from .torchvision_models import import_torchvision, torchvision_classifiers
from .vgg import VGG
from .zoo import ZOO, available_models, register_model, zoo_entry

__all__ = [
    "CifarResNet", "LeNet", "MLP", "MobileNetV2", "ModelRequest", "ModelSpec", "Normalize", "Normalized",
    "ResNet", "VGG", "ZOO", "available_models", "available_zoo", "build_model", "build_network",
    "check_output", "create_model", "default_input_shape", "import_torchvision", "model_kind",
    "parse_input_shape", "parse_model_args", "parse_value", "register_model", "torchvision_classifiers",
    "zoo_entry",
]


def create_model(name: str, input_shape: tuple[int, int, int] | None = None, n_classes: int = 10) -> nn.Module:
    """A freshly initialised model of a registered architecture (shorthand for :func:`build_model`)."""
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(name)
    return build_model(ModelSpec(name, {}, n_classes, shape))
