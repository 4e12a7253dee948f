"""The criterion interface: a score per map, lower means "prune me first".

A criterion subclasses :class:`Criterion`, sets a ``name`` (its registry key) and overrides
:meth:`Criterion.score_layer`, which scores the output maps of one producing layer; it then works
everywhere by name, on chains and on dependency groups (whose score combines their producers',
see ``scoring.reduce_members``). Scores are computed on calibration batches from the training split.

``reads`` says what a criterion's scores depend on, so the pruning loop recomputes only what a
removal changed: ``weights`` (the layer's own filters), ``activations`` (its feature maps on the
calibration batches) and ``gradients`` (anything downstream). A new criterion reads all three
unless it says otherwise, which is always correct and only slower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, ClassVar, Protocol

import torch

from ..errors import FmpruneError

if TYPE_CHECKING:
    from ..graph import Graph

Scores = dict[str, torch.Tensor]
READS_ALL = frozenset({"weights", "activations", "gradients"})


class CalibrationProvider(Protocol):
    """What a criterion may look at, computed lazily on the calibration batches."""

    def activation(self, layer: str) -> torch.Tensor:
        """Feature maps a of ``layer`` (after its BatchNorm and activation): N×C×H×W or N×C."""

    def grad_dot_activation(self, layer: str) -> torch.Tensor:
        """Per example and map, sum over the map of dC/da · a (C = per-example cross-entropy): N×C."""


class LayerContext:
    """Everything a criterion can use to score the output maps of one producing layer."""

    def __init__(self, name: str, module: torch.nn.Module, n_maps: int, map_numel: int,
                 filters: Callable[[], torch.Tensor], provider: CalibrationProvider,
                 generator: torch.Generator) -> None:
        self.name, self.module, self.n_maps, self.map_numel = name, module, n_maps, map_numel
        self._filters, self._provider, self.generator = filters, provider, generator

    @property
    def weight(self) -> torch.Tensor:
        """The producer's weights, one row (filter) per map."""
        return self._filters()

    @property
    def activation(self) -> torch.Tensor:
        return self._provider.activation(self.name)

    @property
    def grad_dot_activation(self) -> torch.Tensor:
        return self._provider.grad_dot_activation(self.name)

    def probe(self, quantity: str, **options):
        """A further calibration quantity (``loss_change``, ``grad_dot_output``, ``grad_dot_norm``,
        ``hessian_diagonal``: see ``fmprune.engine.general.probes``); only the general engine path offers
        them, and it is chosen for every criterion whose ``reads`` go beyond :data:`READS_ALL`."""
        reader = getattr(self._provider, "probe", None)
        if reader is None:
            raise FmpruneError(f"{quantity!r} is computed only by the general engine path "
                               f"(fmprune.engine.GraphEngine), not by {type(self._provider).__name__}")
        return reader(self.name, quantity, **options)


class Criterion:
    """Base class: override :meth:`score_layer`; set ``paper`` to the reference it implements."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    reads: ClassVar[frozenset[str]] = READS_ALL
    registry: ClassVar[dict[str, type["Criterion"]]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            Criterion.registry[cls.name] = cls
            if not cls.display_name:
                cls.display_name = "".join(part.capitalize() for part in cls.name.split("_"))

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        """One score per map of ``ctx.name`` (a 1-D tensor of length ``ctx.n_maps``)."""
        raise NotImplementedError

    def check_scope(self, graph: Graph, names: list[str]) -> None:
        """Raise a one-line error if a group in ``names`` is one this criterion cannot score (a
        BatchNorm criterion and a group with none), so an engine or a pruner refuses it when it is
        made, not at its first scoring after the user's training."""

    def invalidated_by(self, removed_index: int, n_layers: int) -> range:
        """Chain stage indices whose scores change when maps of stage ``removed_index`` are
        removed (the removed layer itself only loses entries)."""
        if "gradients" in self.reads:
            return range(0, n_layers)
        if "activations" in self.reads:
            return range(removed_index + 1, n_layers)
        if "weights" in self.reads:
            return range(removed_index + 1, removed_index + 2)
        return range(0)


def available_criteria() -> list[str]:
    return sorted(Criterion.registry)


def create_criterion(name: str) -> Criterion:
    try:
        return Criterion.registry[name]()
    except KeyError:
        raise FmpruneError(f"unknown criterion {name!r} (available: {', '.join(available_criteria())})") from None
