"""Fake quantisation at any bit width from 2 to 16: the model still computes in float, but every
conv and linear layer sees its weights and its input rounded to the grid a ``bits``-bit integer
kernel would use. It measures the accuracy the efficiency score's q_w and q_a stand for, at widths
no CPU kernel offers, and trains through the rounding (straight-through gradients) for QAT.

Weights: per output channel, symmetric, zero exact: scale = max|w| / (2^(b-1) − 1).
Activations: per tensor, affine over the observed range (widened to contain 0), 2^b levels;
the range is the min/max over calibration batches, then a moving average while training.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..quiet import quiet
from .common import QuantizationError

MIN_BITS, MAX_BITS = 2, 16
AVERAGING = 0.01   # moving-average weight of a training batch's range (torch.ao's default)
QUANTIZED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def check_bits(bits: int, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise QuantizationError(f"{what} must be a whole number in {MIN_BITS}..{MAX_BITS} (got {bits!r})")
    return bits


class WeightQuantizer(nn.Module):
    """Parametrization: the weight rounded per output channel to a symmetric ``bits``-bit grid."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits, "weight bits")
        self.levels = 2 ** (bits - 1) - 1

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        reduce = tuple(range(1, weight.dim()))
        scale = weight.detach().abs().amax(dim=reduce).float().clamp_min(1e-12) / self.levels
        zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -self.levels, self.levels)


class ActivationQuantizer(nn.Module):
    """An input rounded to a per-tensor ``bits``-bit affine grid. While ``observing`` it records the
    range and passes the input through untouched (calibration); in training mode it follows the
    range with a moving average; otherwise it uses the range it has."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits, "activation bits")
        self.top = 2 ** bits - 1
        self.observing = False
        self.register_buffer("low", torch.tensor(float("inf")))
        self.register_buffer("high", torch.tensor(float("-inf")))

    def observe(self, x: torch.Tensor) -> None:
        low, high = x.detach().min().float(), x.detach().max().float()
        if self.observing or not torch.isfinite(self.low):
            self.low.copy_(torch.minimum(self.low, low))
            self.high.copy_(torch.maximum(self.high, high))
        else:
            self.low.lerp_(low, AVERAGING)
            self.high.lerp_(high, AVERAGING)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero point) of the grid covering [low, high] ∪ {0}."""
        if not torch.isfinite(self.low):
            raise QuantizationError("activation ranges unknown: calibrate the fake-quantised model first")
        low, high = self.low.clamp(max=0.0), self.high.clamp(min=0.0)
        scale = ((high - low) / self.top).clamp_min(1e-12)
        zero = torch.round(-low / scale).clamp(0, self.top).to(torch.int32)
        return scale, zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing or self.training:
            self.observe(x)
        if self.observing:
            return x
        scale, zero = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, self.top)


def _quantize_input(layer: nn.Module, args: tuple) -> tuple:
    return (layer.input_quantizer(args[0]),) + tuple(args[1:])


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with each BatchNorm folded into the conv before it, as
    integer kernels run them (torch.ao's ``fuse_fx``); an unfolded copy when torch.fx cannot trace
    the model."""
    from torch.ao.quantization.quantize_fx import fuse_fx

    copied = copy.deepcopy(model).eval()
    try:
        with quiet():
            return fuse_fx(copied)
    except Exception:   # untraceable Python control flow: quantise the layers as they are
        return copied


def fake_quantize(model: nn.Module, weight_bits: int, activation_bits: int) -> nn.Module:
    """A copy of ``model`` whose conv and linear layers compute on fake-quantised weights and
    inputs (calibrate it before use); BatchNorm is folded first, so the weights rounded are the
    ones an integer kernel would hold. The original model is left as it was."""
    check_bits(weight_bits, "weight bits")
    check_bits(activation_bits, "activation bits")
    quantized = fold_batchnorm(model)
    layers = [m for m in quantized.modules() if isinstance(m, QUANTIZED_LAYERS)]
    if not layers:
        raise QuantizationError("the model has no conv or linear layer to quantise")
    for layer in layers:
        parametrize.register_parametrization(layer, "weight", WeightQuantizer(weight_bits))
        layer.input_quantizer = ActivationQuantizer(activation_bits)
        layer.register_forward_pre_hook(_quantize_input)
    return quantized


def activation_quantizers(model: nn.Module) -> list[ActivationQuantizer]:
    return [m for m in model.modules() if isinstance(m, ActivationQuantizer)]


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor, batch: int = 500) -> nn.Module:
    """Set every activation range to the min/max over ``images`` (float activations, as torch.ao
    observers see them), leaving the model in eval mode, ready to measure."""
    quantizers = activation_quantizers(model)
    model.eval()
    for q in quantizers:
        q.low.fill_(float("inf"))
        q.high.fill_(float("-inf"))
        q.observing = True
    try:
        for i in range(0, len(images), batch):
            model(images[i:i + batch])
    finally:
        for q in quantizers:
            q.observing = False
    return model
