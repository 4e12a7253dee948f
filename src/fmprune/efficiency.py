"""The params+ops efficiency score of the course's lab, and every input it needs, counted on a model.

    score = [1 − (p_s + p_u)] · (q_w/32) · w / 5.6e6  +  (1 − p_s) · (max(q_w, q_a)/32) · f / 2.8e8

*w* is every learnable parameter (conv and linear weights and biases, BatchNorm scale and shift:
the figure ``costs.count_params`` gives), *f* the MACs (multiply-accumulates) of one example. The
constants are ResNet-18's (CIFAR variant) counts at 16 bits in 32-bit units, rounded to two
significant digits: 11,173,962 parameters · 16/32 = 5.59e6 → 5.6e6 and 555,422,720 MACs · 16/32 =
2.78e8 → 2.8e8. That network therefore scores 1.990 at 16 bits and 0.995 at 8 bits, i.e. 2.0 and
1.0 to the precision the constants carry (counting weights without biases and BatchNorm,
11,164,352, rounds to the same constant).

w and f are counted on the model as it is: physically pruned maps are already gone from both, so
the formula's p_s is 0 (putting the structured fraction in again would count it twice). How much
structured pruning removed is reported against the unpruned architecture (a checkpoint's spec is
the unpruned model's) as two fractions, because removing maps cuts parameters and MACs by
different amounts while the formula has one p_s. p_u counts exact zeros among the same w
parameters (masked weights under ``torch.nn.utils.prune`` count as what the model computes with).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils.parametrize import ParametrizationList

from . import costs
from .atomic import write_atomically
from .errors import FmpruneError
from .models import build_model

if TYPE_CHECKING:
    from .run.checkpoint import Checkpoint

REFERENCE_PARAMS = 5.6e6   # ResNet-18 (CIFAR) parameters at 16 bits, in 32-bit units
REFERENCE_MACS = 2.8e8     # its MACs per 32×32 image at 16 bits, in 32-bit units
FULL_BITS = 32


class ScoreError(FmpruneError):
    """Inputs the score formula cannot take (negative counts, fractions outside [0, 1], bits)."""


@dataclass(frozen=True)
class ScoreInputs:
    """Every input of the formula, named as in it."""

    w: int                 # parameters of the model as it is
    f: int                 # MACs per example of the model as it is
    p_s: float = 0.0       # structured fraction still to apply (0 when w, f are counted after surgery)
    p_u: float = 0.0       # fraction of the w parameters that are zero (unstructured pruning)
    q_w: int = FULL_BITS   # bits per weight
    q_a: int = FULL_BITS   # bits per activation

    def check(self) -> None:
        if self.w < 0 or self.f < 0:
            raise ScoreError(f"parameter and MAC counts must be >= 0 (got w={self.w}, f={self.f})")
        for name in ("p_s", "p_u"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ScoreError(f"{name} must be a fraction in [0, 1] (got {value})")
        if self.p_s + self.p_u > 1.0:
            raise ScoreError(f"p_s + p_u must not exceed 1 (got {self.p_s} + {self.p_u})")
        for name in ("q_w", "q_a"):
            bits = getattr(self, name)
            if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= FULL_BITS:
                raise ScoreError(f"{name} must be a whole number of bits in 1..{FULL_BITS} (got {bits!r})")


@dataclass(frozen=True)
class Score:
    inputs: ScoreInputs
    param_term: float
    mac_term: float

    @property
    def total(self) -> float:
        return self.param_term + self.mac_term

    def to_dict(self) -> dict:
        return {**asdict(self.inputs), "param_term": self.param_term, "mac_term": self.mac_term,
                "score": self.total}


def efficiency_score(inputs: ScoreInputs) -> Score:
    """The two terms of the formula for these inputs."""
    inputs.check()
    i = inputs
    param_term = (1.0 - (i.p_s + i.p_u)) * (i.q_w / FULL_BITS) * i.w / REFERENCE_PARAMS
    mac_term = (1.0 - i.p_s) * (max(i.q_w, i.q_a) / FULL_BITS) * i.f / REFERENCE_MACS
    return Score(i, param_term, mac_term)


def effective_parameters(model: nn.Module) -> list[torch.Tensor]:
    """The parameter values the model computes with: for a weight under ``torch.nn.utils.prune``
    or a parametrization, the masked or parametrized tensor rather than the stored original."""
    values = []
    for module in model.modules():
        if isinstance(module, ParametrizationList):   # originals: their owner yields the values
            continue
        originals = getattr(module, "parametrizations", None)
        for name, param in module.named_parameters(recurse=False):
            if name.endswith("_orig") and hasattr(module, name[:-len("_orig")] + "_mask"):
                values.append(getattr(module, name[:-len("_orig")]))
            else:
                values.append(param)
        if originals is not None:
            values.extend(getattr(module, name) for name in originals.keys())
    return [v.detach() for v in values]


def zero_parameters(model: nn.Module) -> tuple[int, int]:
    """(exactly zero, all) among the parameters the model computes with."""
    values = effective_parameters(model)
    return sum(int((v == 0).sum()) for v in values), sum(v.numel() for v in values)


@dataclass(frozen=True)
class StructuredFraction:
    """What structured pruning removed, against the unpruned architecture."""

    base_w: int
    base_f: int
    w: int
    f: int

    @property
    def of_params(self) -> float:
        return 1.0 - self.w / self.base_w if self.base_w else 0.0

    @property
    def of_macs(self) -> float:
        return 1.0 - self.f / self.base_f if self.base_f else 0.0


@dataclass(frozen=True)
class ScoreReport:
    """A model's score, the zero count behind p_u, and its structured pruning when known."""

    score: Score
    zeros: int
    structured: StructuredFraction | None = None

    def to_dict(self) -> dict:
        out = {**self.score.to_dict(), "zeros": self.zeros}
        if self.structured is not None:
            s = self.structured
            out["unpruned"] = {"w": s.base_w, "f": s.base_f, "p_s_params": s.of_params, "p_s_macs": s.of_macs}
        return out


def score_model(model: nn.Module, example_inputs: torch.Tensor | tuple, q_w: int = FULL_BITS,
                q_a: int = FULL_BITS, unpruned: nn.Module | None = None, sparsity: bool = True) -> ScoreReport:
    """Count w, f and p_u on ``model`` as it is and score it at ``q_w``/``q_a`` bits.

    ``example_inputs`` is one example (batch 1), so f is per example. ``unpruned`` is the same
    architecture before structured pruning, used only to report p_s. ``sparsity=False`` scores an
    architecture without trained weights (p_u = 0: a fresh model's zero-initialised biases are
    not pruning)."""
    w = costs.count_params(model)
    f = costs.count_macs(model, example_inputs)
    zeros, total = zero_parameters(model) if sparsity else (0, w)
    if total != w:
        raise ScoreError(f"parameters counted two ways disagree ({total} vs {w}): "
                         "the model holds parameters the cost counter does not know")
    structured = None
    if unpruned is not None:
        structured = StructuredFraction(costs.count_params(unpruned), costs.count_macs(unpruned, example_inputs), w, f)
    score = efficiency_score(ScoreInputs(w=w, f=f, p_s=0.0, p_u=zeros / w if w else 0.0, q_w=q_w, q_a=q_a))
    return ScoreReport(score, zeros, structured)


def format_score(report: ScoreReport, bits_source: str = "") -> str:
    """Every input, the two terms and the total, as ``fmprune score`` prints them."""
    s, i = report.score, report.score.inputs
    lines = [
        f"{'w':<12}{i.w:,} parameters (weights, biases, BatchNorm scale and shift) of the model as it is",
        f"{'f':<12}{i.f:,} MACs (multiply-accumulates) per example",
        f"{'p_s':<12}{i.p_s:g} in the formula: pruned maps are already gone from w and f",
    ]
    if report.structured is not None:
        st = report.structured
        lines.append(f"{'':<12}against the unpruned architecture ({st.base_w:,} parameters, {st.base_f:,} MACs): "
                     f"{st.of_params:.4f} of the parameters and {st.of_macs:.4f} of the MACs removed")
    lines += [
        f"{'p_u':<12}{i.p_u:.6f} ({report.zeros:,} of {i.w:,} parameters are zero)",
        f"{'q_w, q_a':<12}{i.q_w}, {i.q_a} bits" + (f" ({bits_source})" if bits_source else ""),
        f"{'param term':<12}[1 - ({i.p_s:g} + {i.p_u:.6f})] * ({i.q_w}/32) * {i.w:,} / {REFERENCE_PARAMS:.2g}"
        f" = {s.param_term:.6f}",
        f"{'MAC term':<12}(1 - {i.p_s:g}) * (max({i.q_w}, {i.q_a})/32) * {i.f:,} / {REFERENCE_MACS:.2g}"
        f" = {s.mac_term:.6f}",
        f"{'score':<12}{s.total:.6f}",
    ]
    return "\n".join(lines)


def unpruned_model(ckpt: Checkpoint) -> nn.Module:
    """The checkpoint's architecture before structured pruning (its spec is the unpruned model's)."""
    return build_model(ckpt.spec)


def score_checkpoint(ckpt: Checkpoint, q_w: int = FULL_BITS, q_a: int = FULL_BITS) -> ScoreReport:
    """Score a checkpoint's model as it is, with p_s reported against its unpruned architecture."""
    example = torch.zeros(1, *ckpt.input_shape)
    return score_model(ckpt.build(), example, q_w, q_a, unpruned_model(ckpt))


def method_of(ckpt: Checkpoint) -> str:
    """How a checkpoint was made, for labels: its pruning criterion and normalisation, a one-shot
    baseline's criterion, or "base"."""
    oneshot = ckpt.origin.get("oneshot") if isinstance(ckpt.origin, dict) else None
    if isinstance(oneshot, dict) and "criterion" in oneshot:
        return f"{oneshot['criterion']} one-shot"
    pruning = ckpt.origin.get("pruning") if isinstance(ckpt.origin, dict) else None
    if not isinstance(pruning, dict) or "criterion" not in pruning:
        return "base"
    return "-".join(str(pruning[k]) for k in ("criterion", "normalize") if pruning.get(k))


SCORE_FILE = "score.json"


@dataclass(frozen=True)
class ScoreRecord:
    """One scored result as the report reads it: what it is, how accurate, how it scores."""

    label: str
    method: str
    accuracy: float | None
    split: str
    score: float
    values: dict       # every input and both terms (ScoreReport.to_dict)
    source: str = ""   # the checkpoint the counts come from

    def to_dict(self) -> dict:
        return asdict(self)


def write_score_record(path: Path, record: ScoreRecord) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(json.dumps(record.to_dict(), indent=2) + "\n"))


def read_score_record(path: Path) -> ScoreRecord:
    try:
        data = json.loads(path.read_text())
        record = ScoreRecord(**data)
        float(record.score)
    except (OSError, ValueError, TypeError) as e:
        raise FmpruneError(f"{path}: not a score record ({type(e).__name__}: {e})") from None
    return record


def recorded_accuracy(ckpt: Checkpoint) -> tuple[float | None, str]:
    """The checkpoint's test accuracy when recorded, else the first split it recorded."""
    if "test" in ckpt.accuracies:
        return float(ckpt.accuracies["test"]), "test"
    for split, value in ckpt.accuracies.items():
        return float(value), split
    return None, ""


def save_checkpoint_score(path: Path, ckpt_path: Path, ckpt: Checkpoint, report: ScoreReport,
                          label: str | None = None) -> Path:
    """score.json in a run directory, or ``<name>.score.json`` beside a checkpoint file."""
    out = path / SCORE_FILE if path.is_dir() else path.with_name(f"{path.stem}.{SCORE_FILE}")
    acc, split = recorded_accuracy(ckpt)
    return write_score_record(out, ScoreRecord(
        label=label or (path.name if path.is_dir() else path.stem), method=method_of(ckpt), accuracy=acc,
        split=split, score=report.score.total, values=report.to_dict(), source=str(Path(ckpt_path).resolve())))
