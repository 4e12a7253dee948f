"""The one ONNX export of a float model (torch's dynamo exporter, a dynamic batch axis), used by
``fmprune export`` and the onnxruntime latency runtime. The int8 model's QDQ export is another
exporter (``quantize/int8.export_onnx``): only the TorchScript-based one knows torch.ao's ops."""

from __future__ import annotations

import torch
from torch import nn

from .quiet import quiet


def onnx_bytes(model: nn.Module, example: tuple[torch.Tensor, ...], max_batch: int) -> bytes:
    """``model`` as an ONNX model (inputs ``images``, outputs ``logits``, batch 1..``max_batch``),
    the exporter's progress and warnings muted."""
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with quiet():
        program = torch.onnx.export(model, example, None, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), dynamo=True, external_data=False)
    return program.model_proto.SerializeToString()
