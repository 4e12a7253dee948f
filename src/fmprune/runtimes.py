"""Where a latency is measured: eager PyTorch (default or channels-last tensors), torch.compile
(inductor) or onnxruntime, on the CPU.

A pruned model's speed-up depends on the runtime as much as on its MACs: eager PyTorch pays a
fixed cost per op that small layers do not amortise, a compiled graph or onnxruntime much less.
:func:`prepare` turns models into callables for one runtime (exporting or compiling once), so
``costs.measure_latencies`` can time any batch size with them.
"""

from __future__ import annotations

import copy
import importlib.util
from shutil import which
from typing import Callable

import torch
from torch import nn

from .errors import FmpruneError
from .onnx_export import onnx_bytes

RUNTIMES = {
    "eager": "eager PyTorch",
    "eager-cl": "eager PyTorch, channels-last tensors",
    "compile": "torch.compile (inductor, C++ CPU kernels)",
    "onnxruntime": "onnxruntime (CPU execution provider)",
}
Runner = Callable[[torch.Tensor], object]

# Channel counts a runtime runs at full speed. onnxruntime's CPU convolutions use a blocked layout
# (NCHWc, 8 or 16 channels a block): a model whose widths are not multiples of 8 leaves that path
# and runs slower than the unpruned one (ResNet-20, batch 64: widths 16/32/47 in 42.7 ms, 16/32/48
# in 34.2, the base in 37.5; benchmarks/channel_multiples.py, the run docs/latency.md shows). Eager
# PyTorch has no such step.
CHANNEL_MULTIPLES = {"onnxruntime": 8}


def available_runtimes() -> list[str]:
    """Runtimes usable here: eager always; compile with a C++ compiler; onnxruntime when the
    ``export`` extra (onnx, onnxscript, onnxruntime) is installed."""
    out = ["eager", "eager-cl"]
    if which("c++") or which("g++") or which("clang++"):
        out.append("compile")
    if all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime")):
        out.append("onnxruntime")
    return out


def check_runtimes(names: list[str]) -> list[str]:
    """``names`` validated: unknown or unavailable runtimes are one clear error."""
    for name in names:
        if name not in RUNTIMES:
            raise FmpruneError(f"unknown runtime {name!r} (known: {', '.join(RUNTIMES)})")
        if name not in available_runtimes():
            need = "pip install 'fmprune[export]'" if name == "onnxruntime" else "a C++ compiler (g++)"
            raise FmpruneError(f"runtime {name!r} is not available here: it needs {need}")
    return list(names)


def channel_multiple(runtime: str, device: str = "cpu") -> int:
    """The multiple of channels ``runtime`` on ``device`` runs without a penalty (1: any count):
    what pruning for its latency should keep every width a multiple of (``round_to``)."""
    return CHANNEL_MULTIPLES.get(runtime, 1) if str(device).startswith("cpu") else 1


def prepare(models: list[nn.Module], runtime: str, input_shape: tuple[int, ...]) -> list[Runner]:
    """One callable per model running an eval-mode forward in ``runtime`` on a float32 batch."""
    check_runtimes([runtime])
    for m in models:
        m.eval()
    if runtime == "eager":
        return [_eager(m) for m in models]
    if runtime == "eager-cl":
        return [_channels_last(m) for m in models]
    if runtime == "compile":
        return [_compiled(m) for m in models]
    return [_onnxruntime(m, input_shape) for m in models]


def _eager(model: nn.Module) -> Runner:
    def run(x: torch.Tensor):
        with torch.inference_mode():
            return model(x)
    return run


def _channels_last(model: nn.Module) -> Runner:
    """Conv and pooling kernels over channels-last tensors vectorise across channels, which pays
    most for thin (pruned) layers; the caller's model keeps its layout (a copy is converted)."""
    converted = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def run(x: torch.Tensor):
        with torch.inference_mode():
            return converted(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
    return run


def _compiled(model: nn.Module) -> Runner:
    compiled = torch.compile(model, dynamic=False)

    def run(x: torch.Tensor):
        with torch.no_grad():
            return compiled(x)
    return run


def _onnxruntime(model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
    import onnxruntime

    data = onnx_bytes(model, (torch.zeros(2, *input_shape),), max_batch=1 << 16)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()   # the same threads as PyTorch
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor):
        return session.run(None, {name: x.numpy()})
    return run
