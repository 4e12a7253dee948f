"""Non-zero weights per layer: what unstructured pruning changes (the parameter count of a
sparse model is the dense one; its non-zeros are what a sparse format stores)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .weight_layers import weight_layers
from .masks import effective


@dataclass(frozen=True)
class LayerDensity:
    name: str
    weights: int
    nonzero: int

    @property
    def density(self) -> float:
        return self.nonzero / self.weights if self.weights else 0.0


def weight_density(model: nn.Module) -> list[LayerDensity]:
    """Weights and non-zero weights of every Linear/Conv layer (the effective, masked weight when
    torch's prune API is active), in model order."""
    rows = []
    for name, module in weight_layers(model).items():
        w = effective(module).detach()
        rows.append(LayerDensity(name, w.numel(), int(torch.count_nonzero(w))))
    return rows


def total_density(rows: list[LayerDensity]) -> LayerDensity:
    return LayerDensity("total", sum(r.weights for r in rows), sum(r.nonzero for r in rows))


def format_density_table(rows: list[LayerDensity]) -> str:
    """The per-layer table ``fmprune count`` prints for a sparse model, with a total row."""
    width = max([len(r.name) for r in rows] + [len("total"), len("layer")]) + 2
    head = f"{'layer':<{width}}{'weights':>13}{'non-zero':>13}{'density':>10}"
    lines = [head, "-" * len(head)]
    for r in rows + [total_density(rows)]:
        if r.name == "total":
            lines.append("-" * len(head))
        lines.append(f"{r.name:<{width}}{r.weights:>13,}{r.nonzero:>13,}{r.density:>10.2%}")
    return "\n".join(lines)


def is_sparse(model: nn.Module, min_zeros: float = 0.01) -> bool:
    """Whether some layer has at least ``min_zeros`` of its weights at zero (a pruned model worth
    showing densities for; a freshly initialised one can hold an exact zero by chance)."""
    return any(r.weights - r.nonzero >= max(1, min_zeros * r.weights) for r in weight_density(model))
