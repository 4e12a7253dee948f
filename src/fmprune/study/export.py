"""Deployable models: the compact model as a ``torch.export`` program (loads with plain PyTorch:
``torch.export.load(path).module()``) and as ONNX, both checked against the in-memory model."""

from __future__ import annotations

import functools
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import replace_together
from ..run.checkpoint import Checkpoint
from ..run.lock import locked
from ..errors import FmpruneError
from ..data.imagefolder import input_note as image_folder_input
from ..data.splits import RAW_INPUT
from ..onnx_export import onnx_bytes
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
    """Write ``model.pt2``, ``model.onnx`` and ``model.json`` to ``out_dir``; verify both models
    against the in-memory model on a batch of another size before any file is replaced.

    Everything is serialised in memory and checked first, then written to temporaries beside the
    targets and renamed, ``model.json`` last (:func:`~fmprune.atomic.replace_together`): a kill or
    a full disk leaves the previous export whole, and torch's C++ writers, which abort the process
    on a write error, never touch the disk."""
    model, graph = ckpt.build_traced()
    with locked(out_dir):
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        example = (_example(ckpt, 4, 0),)
        check = _example(ckpt, 33, 1)
        with torch.no_grad():
            expected = model(check)
        program, diff_program = _export_program(model, example, batch, check, expected)
        files = {out_dir / "model.pt2": program}
        diff_onnx = None
        if onnx:
            files[out_dir / "model.onnx"], diff_onnx = _export_onnx(model, example, check, expected)
        manifest = out_dir / "model.json"
        files[manifest] = _manifest(ckpt, graph).encode()
        replace_together({path: functools.partial(Path.write_bytes, data=data) for path, data in files.items()})
    return ExportResult(out_dir / "model.pt2", out_dir / "model.onnx" if onnx else None, manifest,
                        diff_program, diff_onnx)


def _manifest(ckpt: Checkpoint, graph) -> str:
    return json.dumps({
        "model": ckpt.spec.describe(), "input_shape": list(ckpt.input_shape), "n_classes": ckpt.n_classes,
        "map_counts": graph.sizes(), "accuracies": ckpt.accuracies, "data_fingerprint": ckpt.data_fingerprint,
        "input": f"{_input_note(ckpt)}; output: logits N x n_classes",
        "load": {"pytorch": "torch.export.load('model.pt2').module()",
                 "onnxruntime": "onnxruntime.InferenceSession('model.onnx')"},
    }, indent=2) + "\n"


def _input_note(ckpt: Checkpoint) -> str:
    """What the model takes, as its training data were (recorded since 2026-12-03; an image
    folder's checkpoint from before is known by its data name)."""
    if "input" in ckpt.recipe:
        return ckpt.recipe["input"]
    if str(ckpt.recipe.get("data", "")).startswith("imagefolder:"):
        return image_folder_input()
    return RAW_INPUT


def _export_program(model: torch.nn.Module, example: tuple[torch.Tensor], batch, check: torch.Tensor,
                    expected: torch.Tensor) -> tuple[bytes, float]:
    """The ``torch.export`` program as bytes, and its largest output difference once reloaded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
    data = buffer.getvalue()
    with torch.no_grad():
        got = torch.export.load(io.BytesIO(data)).module()(check)
    return data, float((got - expected).abs().max())


def _export_onnx(model: torch.nn.Module, example: tuple[torch.Tensor], check: torch.Tensor,
                 expected: torch.Tensor) -> tuple[bytes, float]:
    """The ONNX model as bytes, and its largest output difference in onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        raise FmpruneError("ONNX export needs onnx, onnxscript and onnxruntime: "
                           "pip install 'fmprune[export]' (or pass --no-onnx)") from None
    data = onnx_bytes(model, example, MAX_BATCH)
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": check.numpy()})[0]
    return data, float((torch.from_numpy(got) - expected).abs().max())


@dataclass
class SparseExportResult:
    stored: SparseFile
    max_diff: float


def export_sparse(ckpt: Checkpoint, out_dir: Path) -> SparseExportResult:
    """Write ``model.sparse.pt`` (weights as CSR where that is smaller; see
    :mod:`fmprune.unstructured.storage`) and check that it loads back to the same outputs."""
    with locked(out_dir):
        stored = save_sparse(ckpt, out_dir / "model.sparse.pt")
    check = _example(ckpt, 33, 1)
    with torch.no_grad():
        expected = ckpt.build()(check)
        got = load_sparse(stored.path).build()(check)
    return SparseExportResult(stored, float((got - expected).abs().max()))
