"""Sparse storage of a checkpoint: each weight matrix in CSR form (``torch.sparse_csr``
components: row pointers, column indices, values) when that is smaller than dense, so a model
with 90 % zeros weighs about a sixth of its dense file. Loading restores the exact dense tensors.

CSR costs 6 bytes per non-zero in float32 (value + an int16 column index; int32 for matrices
wider than 32,767 columns) plus 4 per row, dense 4 per weight: it only pays below about 65 %
density, and tensors above that stay dense in the same file."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..atomic import write_atomically
from ..errors import CheckpointError
from ..run.checkpoint import Checkpoint

FORMAT = "fmprune-sparse/1"
ROW_DTYPE = torch.int32


def column_dtype(columns: int) -> torch.dtype:
    """The narrowest integer type that holds every column index of the matrix."""
    return torch.int16 if columns <= torch.iinfo(torch.int16).max else torch.int32


@dataclass(frozen=True)
class SparseFile:
    path: Path
    bytes: int
    dense_bytes: int            # the same checkpoint with every tensor dense
    csr_tensors: list[str]      # tensors stored as CSR (the others are dense)

    @property
    def ratio(self) -> float:
        return self.dense_bytes / self.bytes


def encode_tensor(t: torch.Tensor) -> dict:
    """CSR components of ``t`` (as a rows x rest matrix) when smaller than dense, else dense."""
    t = t.detach().cpu()
    if t.dim() < 2 or not t.is_floating_point():
        return {"layout": "dense", "values": t.clone()}
    matrix = t.reshape(t.shape[0], -1)
    nnz = int(torch.count_nonzero(matrix))
    col_dtype = column_dtype(matrix.shape[1])
    csr_bytes = nnz * (t.element_size() + col_dtype.itemsize) + (matrix.shape[0] + 1) * ROW_DTYPE.itemsize
    if csr_bytes >= t.numel() * t.element_size():
        return {"layout": "dense", "values": t.clone()}
    with warnings.catch_warnings():   # "sparse CSR support is in beta": nothing the user can act on
        warnings.simplefilter("ignore")
        csr = matrix.to_sparse_csr()
    return {"layout": "csr", "shape": list(t.shape),
            "crow": csr.crow_indices().to(ROW_DTYPE), "col": csr.col_indices().to(col_dtype),
            "values": csr.values().clone()}


def decode_tensor(entry: dict) -> torch.Tensor:
    if entry["layout"] == "dense":
        return entry["values"]
    shape = torch.Size(entry["shape"])
    rows = shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        csr = torch.sparse_csr_tensor(entry["crow"].to(ROW_DTYPE), entry["col"].to(ROW_DTYPE), entry["values"],
                                      size=(rows, shape.numel() // rows if rows else 0),
                                      check_invariants=True)   # a damaged file fails here, not in a kernel
    return csr.to_dense().reshape(shape)


def _metadata(ckpt: Checkpoint) -> dict:
    return {f.name: getattr(ckpt, f.name) for f in fields(ckpt) if f.name != "state_dict"}


def _serialized_bytes(payload: dict) -> int:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.tell()


def save_sparse(ckpt: Checkpoint, path: Path | str) -> SparseFile:
    """Write ``ckpt`` with its weights in sparse form (atomically); sizes against dense."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: encode_tensor(t) for name, t in ckpt.state_dict.items()}
    payload = {"format": FORMAT, "checkpoint": _metadata(ckpt), "tensors": tensors}
    write_atomically(path, lambda tmp: torch.save(payload, tmp))
    dense = {**payload, "tensors": {n: {"layout": "dense", "values": t} for n, t in ckpt.state_dict.items()}}
    return SparseFile(path, path.stat().st_size, _serialized_bytes(dense),
                      [n for n, e in tensors.items() if e["layout"] == "csr"])


def load_sparse(path: Path | str) -> Checkpoint:
    """The dense :class:`Checkpoint` stored by :func:`save_sparse` (``.build()`` gives the model)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing sparse checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable sparse checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an fmprune sparse checkpoint (no '{FORMAT}' format tag)")
    try:
        state = {name: decode_tensor(entry) for name, entry in payload["tensors"].items()}
        return Checkpoint(**payload["checkpoint"], state_dict=state)
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: malformed sparse checkpoint ({type(e).__name__}: {e})") from None
