"""Saving and loading a pruned model of the user's own class, with no pickled code.

``save`` writes the state dict and the surviving structure: for every group, the maps still
alive (numbered as in the unpruned model) and the example input shapes the model was traced at.
``load`` rebuilds the unpruned architecture with the user's own code, traces it, removes the maps
that are gone, and loads the weights; the file is read with ``weights_only=True``, so loading a
file from elsewhere cannot run code.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..version import __version__
from ..atomic import write_atomically
from ..errors import FmpruneError, PruningError
from ..graph import Graph, Group, trace
from ..graph.restrict import restrict_to

FORMAT = "fmprune-pruned-model/1"


@dataclass(frozen=True)
class Structure:
    """What :func:`save` writes of a pruned model besides its weights, and what a later pruner
    numbers its maps by: the groups of the graph that pruned it (live: they follow its further
    removals), the example input shapes and dtypes, the traced-around ops. It holds no reference
    to the model, so remembering it lets the model be freed."""

    groups: tuple[Group, ...]
    input_shapes: list[list[int]]
    input_dtypes: list[str]
    ignore: list[str]

    @classmethod
    def of(cls, graph: Graph) -> "Structure":
        return cls(tuple(graph.groups), [list(t.shape) for t in graph.example_inputs],
                   [str(t.dtype).removeprefix("torch.") for t in graph.example_inputs], list(graph.ignore))


_structures: "weakref.WeakKeyDictionary[nn.Module, Structure]" = weakref.WeakKeyDictionary()


def remember(model: nn.Module, graph: Graph) -> None:
    """Let :func:`save` and a later :class:`~fmprune.Pruner` find how ``graph`` numbers
    ``model``'s maps (the unpruned model's numbering)."""
    _structures[model] = Structure.of(graph)


def remembered(model: nn.Module) -> Structure | None:
    """The structure a pruner (or :func:`load`) last recorded for ``model``, if any."""
    return _structures.get(model)


def save(model: nn.Module, path: str | Path, example_inputs: Any = None, ignore: Sequence[str] = ()) -> Path:
    """Write ``model``'s weights and structure to ``path`` (atomically). A model pruned by a
    :class:`~fmprune.Pruner` needs nothing else; otherwise give the ``example_inputs`` to trace it."""
    record = structure_record(model, example_inputs, ignore)
    path = Path(path)
    write_atomically(path, lambda tmp: torch.save(record, tmp))
    return path


def structure_record(model: nn.Module, example_inputs: Any = None, ignore: Sequence[str] = ()) -> dict:
    """What :func:`save` writes, in memory (plain containers and tensors)."""
    structure = _structures.get(model)
    if structure is None:
        if example_inputs is None:
            raise FmpruneError("save: this model was not pruned by a fmprune.Pruner; pass example_inputs= "
                               "to trace it")
        structure = Structure.of(trace(model, example_inputs, ignore=ignore))
    return {
        "format": FORMAT,
        "fmprune_version": __version__,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "alive": {g.name: list(g.original) for g in structure.groups},
        "input_shapes": structure.input_shapes,
        "input_dtypes": structure.input_dtypes,
        "ignore": structure.ignore,
    }


def load(build_fn: Callable[[], nn.Module], path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model of ``path``: ``build_fn()`` builds the unpruned architecture (the user's own
    code), which is shrunk to the stored structure and given the stored weights."""
    record = read_record(Path(path), map_location)
    model = build_fn()
    if not isinstance(model, nn.Module):
        raise FmpruneError(f"load: build_fn returned {type(model).__name__}, not an nn.Module")
    return shrink_to(model, record, str(path))


def shrink_to(model: nn.Module, record: dict, source: str = "record") -> nn.Module:
    """Shrink the unpruned ``model`` (in place) to ``record``'s structure and load its weights."""
    device = next(iter(model.parameters()), torch.zeros(0)).device
    examples = tuple(torch.zeros(shape, dtype=getattr(torch, dtype), device=device)
                     for shape, dtype in zip(record["input_shapes"], record["input_dtypes"]))
    graph = trace(model, examples, ignore=record["ignore"])
    try:
        restrict_to(graph, record["alive"])
    except PruningError as e:
        raise FmpruneError(f"load: {source}: {e}; is it the architecture the file was saved from?") from None
    try:
        model.load_state_dict(record["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise FmpruneError(f"load: {source}: the weights do not fit the rebuilt model ({first[1].strip() if len(first) > 1 else first[0]})") from None
    remember(model, graph)
    return model


def read_record(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """What :func:`save` wrote to ``path``, checked to be one."""
    if not path.is_file():
        raise FmpruneError(f"load: {path}: no such file")
    try:
        record = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise FmpruneError(f"load: {path}: not a readable fmprune model file ({type(e).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise FmpruneError(f"load: {path}: not a model saved by fmprune.save")
    return record
