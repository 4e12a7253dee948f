"""Which tensors weight and unit pruning act on: the weights of every Linear and Conv layer,
named by the module's qualified name (``fc1``, ``features.0``). Biases and normalisation
parameters are never weight-pruned: they are few and carry offsets a zero would destroy."""

from __future__ import annotations

from torch import nn

from ..errors import PruningError

LAYER_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear/Conv module of ``model`` by qualified name, in registration order (for the
    models of the zoo that is the order data flows through them)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)}


def parse_layer_list(text: str | None) -> list[str] | None:
    """``"fc1, fc2"`` -> ``["fc1", "fc2"]``; None or an empty string means every layer."""
    if text is None or not text.strip():
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise PruningError(f"layer list {text!r} names a layer twice")
    return names


def choose_layers(available: list[str], wanted: list[str] | None, what: str) -> list[str]:
    """``wanted`` in the model's order, checked against ``available`` (one line naming an
    unknown layer); all of ``available`` when nothing is asked for."""
    if wanted is None:
        return list(available)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise PruningError(f"unknown layer {unknown[0]!r} for {what} (available: {', '.join(available)})")
    return [n for n in available if n in wanted]
