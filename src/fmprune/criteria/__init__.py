"""Pruning criteria: a score per map, lower means "prune me first".

A criterion subclasses :class:`Criterion`, sets a ``name`` (its registry key) and overrides
:meth:`Criterion.score_layer`; it then works everywhere by name, as the seed project's
``select_fmap_to_prune`` did. Scores are computed on calibration batches from the training split.

``reads`` says what a criterion's scores depend on, so the pruning loop recomputes only what a
removal changed: ``weights`` (the layer's own filters), ``activations`` (its feature maps on the
calibration batches) and ``gradients`` (anything downstream). A new criterion reads all three
unless it says otherwise, which is always correct and only slower.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch

from ..errors import FmpruneError
from ..graph.chain import Stage

Scores = dict[str, torch.Tensor]
READS_ALL = frozenset({"weights", "activations", "gradients"})


class CalibrationProvider(Protocol):
    """What a criterion may look at, computed lazily on the calibration batches."""

    def activation(self, layer: str) -> torch.Tensor:
        """Post-activation feature maps a of ``layer``: N×C×H×W (conv) or N×C (linear)."""

    def grad_dot_activation(self, layer: str) -> torch.Tensor:
        """Per example and map, sum over the map of dC/da · a (C = per-example cross-entropy): N×C."""


class LayerContext:
    """Everything a criterion can use to score the maps of one layer."""

    def __init__(self, stage: Stage, provider: CalibrationProvider, generator: torch.Generator) -> None:
        self.stage, self._provider, self.generator = stage, provider, generator

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def n_maps(self) -> int:
        return self.stage.n_maps

    @property
    def weight(self) -> torch.Tensor:
        """The producer's weights, one row (filter) per map."""
        return self.stage.module.weight.detach()

    @property
    def map_numel(self) -> int:
        return self.stage.map_numel

    @property
    def activation(self) -> torch.Tensor:
        return self._provider.activation(self.name)

    @property
    def grad_dot_activation(self) -> torch.Tensor:
        return self._provider.grad_dot_activation(self.name)


class Criterion:
    """Base class: override :meth:`score_layer`."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
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

    def invalidated_by(self, removed_index: int, n_layers: int) -> range:
        """Stage indices whose scores change when maps of stage ``removed_index`` are removed
        (the removed layer itself only loses entries)."""
        if "gradients" in self.reads:
            return range(0, n_layers)
        if "activations" in self.reads:
            return range(removed_index + 1, n_layers)
        if "weights" in self.reads:
            return range(removed_index + 1, removed_index + 2)
        return range(0)


class RandomCriterion(Criterion):
    """Uniformly random order (seeded): the baseline every criterion must beat."""

    name = "random"
    reads = frozenset()

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return torch.rand(ctx.n_maps, generator=ctx.generator)


class MinWeightCriterion(Criterion):
    """Sum of absolute weights of the filter producing the map (the thesis' eq. 3.1)."""

    name = "min_weight"
    reads = frozenset({"weights"})

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return ctx.weight.abs().flatten(1).sum(1)


class MeanActivationCriterion(Criterion):
    """Mean post-ReLU activation of the map over positions and calibration examples."""

    name = "mean_activation"
    reads = frozenset({"weights", "activations"})

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        a = ctx.activation
        return a.flatten(2).mean(2).mean(0) if a.dim() > 2 else a.mean(0)


class TaylorCriterion(Criterion):
    """Molchanov et al. 2017, eq. 8: |(1/M) Σ_m dC/dz_m · z_m| per example, averaged over examples."""

    name = "taylor"

    def score_layer(self, ctx: LayerContext) -> torch.Tensor:
        return (ctx.grad_dot_activation / ctx.map_numel).abs().mean(0)


NORMALIZATIONS = ("none", "l1", "l2")


def available_criteria() -> list[str]:
    return sorted(Criterion.registry)


def create_criterion(name: str) -> Criterion:
    try:
        return Criterion.registry[name]()
    except KeyError:
        raise FmpruneError(f"unknown criterion {name!r} (available: {', '.join(available_criteria())})") from None


def normalize(scores: Scores, how: str) -> Scores:
    """Per-layer normalisation so layers of different sizes compete fairly (paper's eq. 9 left part)."""
    if how == "none":
        return dict(scores)
    if how == "l1":
        return {k: v / v.abs().sum().clamp_min(1e-30) for k, v in scores.items()}
    if how == "l2":
        return {k: v / v.norm().clamp_min(1e-30) for k, v in scores.items()}
    raise FmpruneError(f"unknown normalisation {how!r} (available: {', '.join(NORMALIZATIONS)})")


def flops_regularize(scores: Scores, flops_per_map: dict[str, float], lam: float) -> Scores:
    """Θ − λ·Θ_flops (paper's eq. 9): cheaper-to-keep maps are protected, costly ones pushed out.

    Θ_flops of a layer is the FLOPs (2 × MACs) per example that removing one of its maps saves
    (its own filter plus its slice of the consumer), in MFLOPs, recomputed as the network shrinks.
    """
    if lam == 0:
        return dict(scores)
    return {k: v - lam * flops_per_map[k] for k, v in scores.items()}


def mflops(macs: int) -> float:
    return 2 * macs / 1e6
