"""Real int8 models with torch.ao's FX graph mode on the x86 backend (FBGEMM with oneDNN kernels):
post-training quantisation calibrated on training images, or quantisation-aware training, then
conversion to integer kernels. The result is saved as TorchScript, the format these kernels
serialise to (``torch.export`` cannot carry their packed weights), and as QDQ ONNX.

torch.ao warns that it is deprecated in favour of torchao; it is what torch 2.13 ships with
working x86 integer kernels, so its warnings are silenced (``fmprune.quiet``).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from ..quiet import quiet
from .common import QuantizationError

BACKEND = "x86"
ONNX_OPSET = 17


def use_backend() -> None:
    if BACKEND not in torch.backends.quantized.supported_engines:
        raise QuantizationError(f"this PyTorch build has no {BACKEND} quantised engine "
                                f"(it has: {', '.join(torch.backends.quantized.supported_engines)})")
    torch.backends.quantized.engine = BACKEND


def _prepare(model: nn.Module, example: torch.Tensor, qat: bool) -> nn.Module:
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    use_backend()
    model = copy.deepcopy(model).train(qat)
    try:
        with quiet():
            if qat:
                return prepare_qat_fx(model, get_default_qat_qconfig_mapping(BACKEND), (example,))
            return prepare_fx(model, get_default_qconfig_mapping(BACKEND), (example,))
    except Exception as e:   # torch.fx cannot follow data-dependent Python control flow
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise QuantizationError(f"torch.fx cannot trace this model for int8 quantisation: {first}") from None


def prepare_ptq(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with observers, ready for :func:`calibrate_observers`."""
    return _prepare(model, example, qat=False)


def prepare_qat(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with fake-quantisation modules, in training mode, ready to train."""
    return _prepare(model, example, qat=True)


@torch.no_grad()
def calibrate_observers(prepared: nn.Module, images: torch.Tensor, batch: int = 500) -> None:
    prepared.eval()
    for i in range(0, len(images), batch):
        prepared(images[i:i + batch])


def convert(prepared: nn.Module) -> nn.Module:
    """The integer model: quantised conv/linear kernels, int8 weights, uint8 activations."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with quiet():
        return convert_fx(copy.deepcopy(prepared).eval())


def to_torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace and freeze: a file ``torch.jit.load`` runs without fmprune, at any batch size."""
    with quiet(), torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(model.eval(), example))


def save_torchscript(module: torch.jit.ScriptModule, target: Path | BinaryIO) -> None:
    with quiet():   # torch.jit.save warns it is deprecated; torch.export cannot hold packed int8 weights
        torch.jit.save(module, target if isinstance(target, io.IOBase) else str(target))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path | BinaryIO) -> Path | BinaryIO:
    """QDQ ONNX (QuantizeLinear/DequantizeLinear around float Conv/Gemm, int8 weights stored) that
    onnxruntime fuses into integer kernels. Only the TorchScript-based exporter knows torch.ao's
    quantised operators; the dynamo exporter refuses them."""
    try:
        with quiet(), torch.no_grad():
            target = path if isinstance(path, io.IOBase) else str(path)
            torch.onnx.export(torch.jit.trace(model.eval(), example), (example,), target, dynamo=False,
                              opset_version=ONNX_OPSET, input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise QuantizationError(f"ONNX export of the int8 model failed: {first}") from None
    return path
