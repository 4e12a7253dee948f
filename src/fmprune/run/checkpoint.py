"""Checkpoints: weights plus how to rebuild the model — its spec (zoo name, torchvision name or
factory, arguments, input shape, classes) and, for a pruned model, the maps still alive in each
group (original numbering) — the data fingerprint, accuracies and seed. Loaded with
``torch.load(weights_only=True)``: nothing in a checkpoint can run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..atomic import write_atomically
from ..errors import CheckpointError, FmpruneError, PruningError
from ..graph import Graph, trace
from ..graph.restrict import restrict_to
from ..models.spec import ModelSpec, build_model

FORMAT = "fmprune-checkpoint/2"
OLD_FORMAT = "fmprune-checkpoint/1"   # LeNet only: an ``arch`` name and kept-map counts


@dataclass
class Checkpoint:
    model_spec: dict                              # ModelSpec.to_dict() of the unpruned model
    state_dict: dict[str, torch.Tensor]
    alive: dict[str, list[int]] = field(default_factory=dict)   # group -> original maps kept (pruned groups only)
    ignore: list[str] = field(default_factory=list)             # what tracing kept as it is (trace's ignore)
    data_fingerprint: str = ""
    accuracies: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    recipe: dict = field(default_factory=dict)
    origin: dict = field(default_factory=dict)   # e.g. the base checkpoint a pruned model came from
    path: str = field(default="", compare=False)  # where it was loaded from (not saved): for messages

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.model_spec)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    @property
    def n_classes(self) -> int:
        return self.spec.num_classes

    @property
    def arch(self) -> str:
        return self.spec.name

    def build_traced(self, ignore: list[str] | tuple[str, ...] = ()) -> tuple[nn.Module, Graph]:
        """The model at its (possibly pruned) size with these weights, in eval mode, and its graph
        (traced with the checkpoint's own ``ignore`` plus the given one)."""
        spec = self.spec
        where = f"{self.path}: " if self.path else ""
        try:
            model = build_model(spec)
        except FmpruneError as e:
            raise CheckpointError(f"{where}cannot rebuild the checkpoint's model: {e}") from None
        graph = trace(model, torch.zeros(1, *spec.input_shape), list(dict.fromkeys([*self.ignore, *ignore])))
        try:
            restrict_to(graph, self.alive)
        except PruningError as e:
            raise CheckpointError(f"{where}checkpoint of {spec.name}: {e}") from None
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            detail = _first_mismatch(str(e)) or first
            raise CheckpointError(f"{where}checkpoint weights do not fit {spec.describe()} with the maps the "
                                  f"checkpoint records ({detail}); it was edited or written by another version") from None
        model.eval()
        return model, graph

    def build(self) -> nn.Module:
        return self.build_traced()[0]

    def map_counts(self) -> dict[str, int]:
        """Maps per group of this model (pruned groups at their pruned size)."""
        return self.build_traced()[1].sizes()


def _first_mismatch(message: str) -> str:
    """``conv2.weight: checkpoint 8x6x5x5, model 6x6x5x5`` from load_state_dict's message."""
    for line in message.splitlines():
        line = line.strip()
        if line.startswith("size mismatch for "):
            name, _, rest = line[len("size mismatch for "):].partition(":")
            shapes = [part.split("torch.Size(")[1].split(")")[0] for part in rest.split("shape")[1:] if "torch.Size(" in part]
            if len(shapes) == 2:
                fmt = lambda s: "x".join(d.strip() for d in s.strip("[]").split(",") if d.strip())  # noqa: E731
                return f"{name}: checkpoint {fmt(shapes[0])}, model {fmt(shapes[1])}"
            return line
        if line.startswith(("Missing key", "Unexpected key")):
            return line
    return ""


def make_checkpoint(model: nn.Module, spec: ModelSpec | dict, graph: Graph | None = None, **extra) -> Checkpoint:
    """A checkpoint of ``model`` built from ``spec``; ``graph`` (the model's traced graph) records
    which maps pruning kept, so the smaller model can be rebuilt from the spec."""
    spec_dict = spec.to_dict() if isinstance(spec, ModelSpec) else dict(spec)
    alive = {g.name: list(g.original) for g in graph.groups if g.size < g.traced_size} if graph is not None else {}
    return Checkpoint(
        model_spec=spec_dict, alive=alive, ignore=list(graph.ignore) if graph is not None else [],
        state_dict={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        **extra,
    )


def save_checkpoint(ckpt: Checkpoint, path: Path | str) -> Path:
    """Write atomically: a crash mid-write never leaves a half checkpoint behind."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, **{k: v for k, v in ckpt.__dict__.items() if k != "path"}}
    return write_atomically(path, lambda tmp: torch.save(payload, tmp))


def _from_old_format(payload: dict) -> dict:
    """fmprune-checkpoint/1 (LeNet, map counts: the first maps of each layer were kept)."""
    shape = list(payload.pop("input_shape"))
    spec = ModelSpec(name=payload.pop("arch"), num_classes=payload.pop("n_classes"), input_shape=tuple(shape))
    counts = payload.pop("map_counts")
    full = build_model(spec)
    sizes = trace(full, torch.zeros(1, *spec.input_shape)).sizes()
    payload["model_spec"] = spec.to_dict()
    payload["alive"] = {n: list(range(c)) for n, c in counts.items() if n in sizes and c < sizes[n]}
    return payload


def load_checkpoint_for(path: Path | str, splits) -> Checkpoint:
    """:func:`load_checkpoint`, refusing a model trained on other data than ``splits`` (its
    accuracies and any pruning decisions would mean nothing there)."""
    ckpt = load_checkpoint(path)
    if ckpt.data_fingerprint and ckpt.data_fingerprint != splits.fingerprint():
        raise CheckpointError(f"{path}: trained on other data (fingerprint {ckpt.data_fingerprint}, "
                              f"these data {splits.fingerprint()}); pass the --data-dir it was trained on")
    return ckpt


def check_input_shape(ckpt: Checkpoint, splits) -> None:
    """Refuse data whose images the checkpoint's model does not take (one line, before any work)."""
    if tuple(splits.input_shape) != tuple(ckpt.input_shape):
        raise FmpruneError(f"data images have shape {tuple(splits.input_shape)}, the checkpoint's "
                           f"model expects {tuple(ckpt.input_shape)}")


def resolve_model_path(path: Path) -> Path:
    """A checkpoint file, or a run directory holding ``model.pt``."""
    if path.is_dir():
        if not (path / "model.pt").is_file():
            raise FmpruneError(f"{path}: run directory without model.pt (is the run finished?)")
        return path / "model.pt"
    return path


def load_checkpoint(path: Path | str) -> Checkpoint:
    """A checkpoint file, or the ``model.pt`` of the run directory ``path``."""
    path = resolve_model_path(Path(path))
    if not path.is_file():
        raise CheckpointError(f"{path}: missing checkpoint file; train one with `fmprune train --out {path}`, "
                              "or give a finished run's directory (its model.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}); the file is damaged or "
                              f"not a checkpoint: train one again with `fmprune train --out {path}`") from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, OLD_FORMAT):
        raise CheckpointError(f"{path}: not an fmprune checkpoint (no '{FORMAT}' format tag; a bare state_dict?); "
                              "fmprune reads checkpoints written by `fmprune train` or "
                              "fmprune.run.checkpoint.save_checkpoint")
    fmt = payload.pop("format")
    try:
        if fmt == OLD_FORMAT:
            payload = _from_old_format(payload)
        ckpt = Checkpoint(**payload, path=str(path))
        ckpt.spec  # a spec that cannot be read fails here, naming the file
    except (TypeError, KeyError, FmpruneError) as e:
        raise CheckpointError(f"{path}: malformed checkpoint ({e})") from None
    return ckpt
