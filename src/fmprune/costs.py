"""Size and cost of a model: parameters, MACs (multiply-accumulates; the thesis calls them
FLOPs), serialized bytes, and measured CPU latency."""

from __future__ import annotations

import io
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from .graph.chain import Topology, stage_macs


@dataclass(frozen=True)
class LayerCost:
    name: str
    maps: int
    weights: int
    biases: int
    macs: int

    @property
    def params(self) -> int:
        return self.weights + self.biases


def layer_costs(topology: Topology) -> list[LayerCost]:
    """Per-layer weights, biases and MACs per example (BatchNorm affine counted as biases)."""
    modules = dict(topology.model.named_modules())
    out = []
    for s in topology.stages:
        bias = s.module.bias.numel() if s.module.bias is not None else 0
        bias += sum(p.numel() for n in s.norms for p in modules[n].parameters())
        out.append(LayerCost(s.name, s.n_maps, s.module.weight.numel(), bias, stage_macs(s)))
    return out


def total_params(topology: Topology) -> int:
    return sum(c.params for c in layer_costs(topology))


def total_macs(topology: Topology) -> int:
    return sum(c.macs for c in layer_costs(topology))


def model_bytes(model: nn.Module) -> int:
    """Size of the serialized state dict, what a deployed model weighs on disk."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def measure_latencies(models: list[nn.Module], input_shape: tuple[int, ...], batch: int,
                      repeats: int = 30, warmup: int = 5) -> list[float]:
    """Median seconds of one eval forward of ``batch`` examples on the CPU, for each model.

    The models take turns within every repeat, so drifts of a noisy machine (other processes,
    frequency changes) hit all of them alike and their ratios stay fair."""
    for m in models:
        m.eval()
    x = torch.rand(batch, *input_shape)
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for j, m in enumerate(models):
                start = time.perf_counter()
                m(x)
                if i >= warmup:
                    times[j].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def format_cost_table(costs: list[LayerCost]) -> str:
    """The per-layer table ``fmprune count`` prints (weights, biases, params, MACs)."""
    head = f"{'layer':<8}{'maps':>7}{'weights':>13}{'biases':>9}{'params':>13}{'MACs':>14}"
    lines = [head, "-" * len(head)]
    for c in costs:
        lines.append(f"{c.name:<8}{c.maps:>7}{c.weights:>13,}{c.biases:>9,}{c.params:>13,}{c.macs:>14,}")
    lines.append("-" * len(head))
    lines.append(f"{'total':<8}{sum(c.maps for c in costs[:-1]):>7}{sum(c.weights for c in costs):>13,}"
                 f"{sum(c.biases for c in costs):>9,}{sum(c.params for c in costs):>13,}"
                 f"{sum(c.macs for c in costs):>14,}")
    return "\n".join(lines)
