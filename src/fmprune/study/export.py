"""Deployable models: the compact model as a ``torch.export`` program (loads with plain PyTorch:
``torch.export.load(path).module()``) and as ONNX, both checked against the in-memory model."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..run.checkpoint import Checkpoint
from ..errors import FmpruneError
from ..unstructured.storage import SparseFile, load_sparse, save_sparse

MAX_BATCH = 65536


@dataclass
class ExportResult:
    program: Path
    onnx: Path | None
    manifest: Path
    max_diff_program: float
    max_diff_onnx: float | None


def _example(ckpt: Checkpoint, n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, *ckpt.input_shape, generator=torch.Generator().manual_seed(seed))


def export_model(ckpt: Checkpoint, out_dir: Path, onnx: bool = True) -> ExportResult:
    """Write ``model.pt2``, ``model.onnx`` and ``model.json`` to ``out_dir``; verify both files by
    reloading them and comparing outputs with the in-memory model on a batch of another size."""
    model, graph = ckpt.build_traced()
    out_dir.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = (_example(ckpt, 4, 0),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
        program_path = out_dir / "model.pt2"
        torch.export.save(program, program_path)
    check = _example(ckpt, 33, 1)
    with torch.no_grad():
        expected = model(check)
        diff_program = float((torch.export.load(program_path).module()(check) - expected).abs().max())
    onnx_path, diff_onnx = None, None
    if onnx:
        onnx_path = out_dir / "model.onnx"
        diff_onnx = _export_onnx(model, example, batch, onnx_path, check, expected)
    manifest = out_dir / "model.json"
    manifest.write_text(json.dumps({
        "model": ckpt.spec.describe(), "input_shape": list(ckpt.input_shape), "n_classes": ckpt.n_classes,
        "map_counts": graph.sizes(), "accuracies": ckpt.accuracies, "data_fingerprint": ckpt.data_fingerprint,
        "input": "float32 N x C x H x W in [0, 1]; output: logits N x n_classes",
        "load": {"pytorch": "torch.export.load('model.pt2').module()",
                 "onnxruntime": "onnxruntime.InferenceSession('model.onnx')"},
    }, indent=2) + "\n")
    return ExportResult(program_path, onnx_path, manifest, diff_program, diff_onnx)


def _export_onnx(model: torch.nn.Module, example: tuple[torch.Tensor], batch, path: Path,
                 check: torch.Tensor, expected: torch.Tensor) -> float:
    try:
        import onnxruntime
    except ImportError:
        raise FmpruneError("ONNX export needs onnx, onnxscript and onnxruntime: "
                           "pip install 'fmprune[export]' (or pass --no-onnx)") from None
    # the exporter prints its progress and warns about torch internals: neither is the user's business
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_logger.setLevel(logging.ERROR)
        try:
            torch.onnx.export(model, example, path, input_names=["images"], output_names=["logits"],
                              dynamic_shapes=({0: batch},), dynamo=True, external_data=False)
        finally:
            onnx_logger.setLevel(level)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": check.numpy()})[0]
    return float((torch.from_numpy(got) - expected).abs().max())


@dataclass
class SparseExportResult:
    stored: SparseFile
    max_diff: float


def export_sparse(ckpt: Checkpoint, out_dir: Path) -> SparseExportResult:
    """Write ``model.sparse.pt`` (weights as CSR where that is smaller; see
    :mod:`fmprune.unstructured.storage`) and check that it loads back to the same outputs."""
    stored = save_sparse(ckpt, out_dir / "model.sparse.pt")
    check = _example(ckpt, 33, 1)
    with torch.no_grad():
        expected = ckpt.build()(check)
        got = load_sparse(stored.path).build()(check)
    return SparseExportResult(stored, float((got - expected).abs().max()))
