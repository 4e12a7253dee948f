"""Checkpoints: weights plus what is needed to rebuild the model (architecture, input shape,
per-layer map counts, so pruned models load too), the data fingerprint, accuracies and seed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..atomic import write_atomically
from ..errors import CheckpointError
from ..models import create_model
from ..surgery import remove_maps
from ..graph.chain import Topology, trace

FORMAT = "fmprune-checkpoint/1"


@dataclass
class Checkpoint:
    arch: str
    input_shape: tuple[int, int, int]
    n_classes: int
    map_counts: dict[str, int]
    state_dict: dict[str, torch.Tensor]
    data_fingerprint: str = ""
    accuracies: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    recipe: dict = field(default_factory=dict)
    origin: dict = field(default_factory=dict)   # e.g. the base checkpoint a pruned model came from

    def build(self) -> tuple[nn.Module, Topology]:
        """The model with these weights, at its (possibly pruned) size, and its topology."""
        model = create_model(self.arch, self.input_shape, self.n_classes)
        topology = trace(model, self.input_shape)
        for name, count in self.map_counts.items():
            n = topology.stage(name).n_maps
            if count > n or count < 1:
                raise CheckpointError(f"checkpoint says layer {name!r} has {count} maps; "
                                      f"the architecture allows 1..{n}")
            if count < n:
                remove_maps(topology, name, list(range(count, n)))
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint weights do not fit {self.arch}: {first}") from None
        model.eval()
        return model, topology


def make_checkpoint(arch: str, topology: Topology, input_shape: tuple[int, ...], n_classes: int,
                    **extra) -> Checkpoint:
    return Checkpoint(
        arch=arch, input_shape=tuple(input_shape), n_classes=n_classes,
        map_counts={s.name: s.n_maps for s in topology.stages[:-1]},
        state_dict={k: v.detach().to("cpu", copy=True) for k, v in topology.model.state_dict().items()},
        **extra,
    )


def save_checkpoint(ckpt: Checkpoint, path: Path | str) -> Path:
    """Write atomically: a crash mid-write never leaves a half checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, **ckpt.__dict__, "input_shape": list(ckpt.input_shape)}
    return write_atomically(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path | str) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an fmprune checkpoint (no '{FORMAT}' format tag)")
    payload.pop("format")
    payload["input_shape"] = tuple(payload["input_shape"])
    try:
        return Checkpoint(**payload)
    except TypeError as e:
        raise CheckpointError(f"{path}: malformed checkpoint ({e})") from None
