"""The operations the tracer understands without an adapter, grouped by how channels flow through
them. Anything else is refused (``UnsupportedModelError``) unless the user ignores it.

* ``UNARY``: output map i depends on input map i alone (activations, dropout, pooling, padding,
  resizing); the channel axis passes through unchanged. The ``ELEMENTWISE`` ones among them act
  on each value alone, so they also pass channels through on whatever axis a permute moved them
  to; pooling, resizing and padding read axis 1 as the channel axis and need it there.
* ``ACTIVATIONS``: the unary ops that belong to a feature map (the criteria's *a*): a producer's
  feature map is read after its norms and activations, before pooling or dropout.
* ``BINARY``: elementwise arithmetic with broadcasting: operands that carry the channel axis are
  coupled map by map (a residual add ties its producers into one group).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATION_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Identity,
)
ELEMENTWISE_MODULES: tuple[type, ...] = ACTIVATION_MODULES + (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)
UNARY_MODULES: tuple[type, ...] = ELEMENTWISE_MODULES + (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool2d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
    nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
)
FLATTEN_MODULES: tuple[type, ...] = (nn.Flatten,)

ACTIVATION_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, torch.sigmoid, F.sigmoid,
    torch.tanh, F.tanh, F.leaky_relu, F.elu, F.selu, F.celu, F.mish, F.softplus, F.hardtanh,
    torch.clamp, torch.clip,
}
ELEMENTWISE_FUNCTIONS = ACTIVATION_FUNCTIONS | {
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
    torch.abs, operator.neg, torch.neg, torch.exp, torch.square, torch.sqrt,
}
# functions of other libraries, known by qualified name (importing them would make them
# dependencies). torchvision's stochastic depth (EfficientNet, ConvNeXt) multiplies whole examples
# by 0 or 1/(1-p) in training and is the identity in eval: each map stays where it is either way.
ELEMENTWISE_FUNCTION_NAMES = {"torchvision.ops.stochastic_depth.stochastic_depth"}
UNARY_FUNCTIONS = ELEMENTWISE_FUNCTIONS | {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.interpolate,
}
ACTIVATION_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip"}
ELEMENTWISE_METHODS = UNARY_METHODS = ACTIVATION_METHODS | {
    "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "abs", "neg", "exp",
    "square", "sqrt", "type_as",
}

PAD_FUNCTIONS = {F.pad}
BINARY_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
    operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum,
    torch.minimum,
}
BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
# how a binary op treats a zero operand (what a removed map leaves behind): 0 * x = 0, 0 / x = 0
PRODUCTS = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
QUOTIENTS = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}

CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
SPLIT_FUNCTIONS = {torch.split, torch.chunk, torch.tensor_split}
SPLIT_METHODS = {"split", "chunk", "tensor_split"}
FLATTEN_FUNCTIONS = {torch.flatten}
RESHAPE_METHODS = {"flatten", "view", "reshape"}
RESHAPE_FUNCTIONS = {torch.reshape}
# broadcasts of size-1 axes (a class token expanded over the batch): every value stays on its channel
EXPAND_METHODS = {"expand", "expand_as"}
SQUEEZE_METHODS = {"squeeze", "unsqueeze"}
SQUEEZE_FUNCTIONS = {torch.squeeze, torch.unsqueeze}
REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}
# ops that reorder axes: the channel labels go where the channel axis goes
PERMUTE_FUNCTIONS = {torch.permute, torch.transpose, torch.swapaxes, torch.swapdims}
PERMUTE_METHODS = {"permute", "transpose", "swapaxes", "swapdims"}
# results that are not tensors (shapes, sizes): no channels to follow
SHAPE_METHODS = {"size", "dim", "numel"}
GETITEM = operator.getitem
INPLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub,
                     operator.imul: operator.mul, operator.itruediv: operator.truediv}


def _qualified_name(target: object) -> str:
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"


def is_elementwise_function(target: object) -> bool:
    """Acts on each value alone (activations, dropout, stochastic depth): any layout passes."""
    return target in ELEMENTWISE_FUNCTIONS or _qualified_name(target) in ELEMENTWISE_FUNCTION_NAMES


def is_unary_function(target: object) -> bool:
    """Output map i depends on input map i alone, with channels on axis 1 (adds pooling, resizing)."""
    return target in UNARY_FUNCTIONS or is_elementwise_function(target)


def is_elementwise_module(module: nn.Module) -> bool:
    return isinstance(module, ELEMENTWISE_MODULES)


def is_activation_module(module: nn.Module) -> bool:
    return isinstance(module, ACTIVATION_MODULES)


def is_unary_module(module: nn.Module) -> bool:
    return isinstance(module, UNARY_MODULES)


def is_flatten_module(module: nn.Module) -> bool:
    return isinstance(module, FLATTEN_MODULES)
