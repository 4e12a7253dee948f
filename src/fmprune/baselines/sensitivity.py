"""Sensitivity analysis (Li et al. 2017, section 3.2): each layer pruned alone at 10 %, 20 %, …,
90 % of its maps, lowest-scoring first, without retraining, and the accuracy measured each time.
Layers whose accuracy holds can be pruned hard; the others are spared. :meth:`SensitivityResult.ratios_within`
turns the curves into per-layer ratios for one-shot pruning.
"""

from __future__ import annotations

import copy
import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..atomic import write_atomically
from ..criteria import Criterion, create_criterion
from ..criteria.thinet import check_thinet_scope, contributions, greedy_removal
from ..data import Split
from ..errors import FmpruneError
from ..graph import Graph, trace
from ..training import evaluate
from .plan import count_for, lowest_maps
from .scores import group_scores
from .thinet_rescale import remove_and_rescale

DEFAULT_RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 10))
RESULT_FILE = "sensitivity.json"
CSV_FILE = "sensitivity.csv"


@dataclass
class SensitivityResult:
    """Accuracy of the model with one layer pruned at each ratio (``accuracy[layer][i]`` at ``ratios[i]``)."""

    criterion: str
    eval_split: str
    base_accuracy: float
    ratios: list[float]
    maps: dict[str, int]                                  # maps per layer before pruning
    removed: dict[str, list[int]] = field(default_factory=dict)    # how many maps each ratio removed, per layer
    accuracy: dict[str, list[float]] = field(default_factory=dict)
    source: str = ""                                      # the checkpoint analysed

    def ratios_within(self, max_drop: float) -> dict[str, float]:
        """Per layer, the largest ratio up to which every tested ratio keeps the accuracy at most
        ``max_drop`` under the base model's; 0 when even the smallest ratio falls further."""
        if max_drop < 0:
            raise FmpruneError(f"max drop must be >= 0, got {max_drop}")
        out = {}
        for layer, accs in self.accuracy.items():
            best = 0.0
            for ratio, acc in zip(self.ratios, accs):
                if acc < self.base_accuracy - max_drop:
                    break
                best = ratio
            out[layer] = best
        return out

    def pruned_within(self, max_drop: float) -> dict[str, float]:
        """:meth:`ratios_within` without the layers it leaves whole: the ``--ratios`` of one-shot
        pruning (empty when no layer takes even the smallest ratio)."""
        return {k: v for k, v in self.ratios_within(max_drop).items() if v > 0}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SensitivityResult":
        return cls(**d)


def save_result(result: SensitivityResult, path: Path) -> Path:
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def save_csv(result: SensitivityResult, path: Path) -> Path:
    """One row per layer and ratio (layer, maps, ratio, removed, accuracy), for spreadsheets."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["layer", "maps", "ratio", "removed", "accuracy"])
            for layer, accs in result.accuracy.items():
                for ratio, removed, acc in zip(result.ratios, result.removed[layer], accs):
                    writer.writerow([layer, result.maps[layer], ratio, removed, f"{acc:.6f}"])
    return write_atomically(path, write)


def load_result(path: Path | str) -> SensitivityResult:
    """A ``sensitivity.json`` (or the directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    try:
        return SensitivityResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise FmpruneError(f"{path}: not a sensitivity result written by `fmprune sensitivity` "
                           f"({type(e).__name__})") from None


def check_ratios(ratios: tuple[float, ...] | list[float]) -> list[float]:
    out = sorted({float(r) for r in ratios})
    if not out or any(not 0 < r < 1 for r in out):
        raise FmpruneError(f"sensitivity ratios must lie in (0, 1), got {list(ratios)}")
    return out


def _copy(graph: Graph) -> Graph:
    """An independent model and graph with the same weights and numbering."""
    return trace(copy.deepcopy(graph.model), graph.example_inputs, graph.ignore)


class _ThiNetLayer:
    """ThiNet pruning of one layer at several ratios from one set of sampled contributions: the
    greedy order is a prefix for every count, the rescale is solved per count."""

    def __init__(self, graph: Graph, name: str, calibration: Split, seed: int) -> None:
        self.x = contributions(graph, name, calibration, seed=seed)
        self.order = greedy_removal(self.x).order

    def apply(self, shadow: Graph, name: str, n: int) -> list[int]:
        return remove_and_rescale(shadow, name, self.x, self.order[:n]).removed


def layer_sensitivity(graph: Graph, criterion: Criterion | str, evaluation: Split, calibration: Split,
                      ratios: tuple[float, ...] | list[float] = DEFAULT_RATIOS, scope: list[str] | None = None,
                      seed: int = 0, on_point: Callable[[str, float, float], None] | None = None,
                      source: str = "", eval_split: str = "val") -> SensitivityResult:
    """Prune each group of ``scope`` alone at every ratio (its lowest-scoring maps, scores computed
    once on the unpruned model; ThiNet also rescales the next layer) and measure the accuracy on
    ``evaluation``; the model of ``graph`` itself is never changed."""
    criterion = create_criterion(criterion) if isinstance(criterion, str) else criterion
    ratios = check_ratios(ratios)
    scope = graph.names if scope is None else scope
    thinet = criterion.name == "thinet"
    if thinet:
        check_thinet_scope(graph, scope)   # a layer ThiNet cannot prune is refused before any is measured
    scores = {} if thinet else group_scores(graph, criterion, calibration, scope, seed)
    result = SensitivityResult(criterion.name, eval_split, evaluate(graph.model, evaluation), ratios,
                               {n: graph.group(n).size for n in scope}, source=source)
    for name in scope:
        layer = _ThiNetLayer(graph, name, calibration, seed) if thinet else None
        result.accuracy[name], result.removed[name] = [], []
        for ratio in ratios:
            n = count_for(graph.group(name).size, ratio)
            shadow = _copy(graph)
            if n == 0:
                removed = []
            elif layer is not None:
                removed = layer.apply(shadow, name, n)
            else:
                removed = lowest_maps(scores[name], n)
                shadow.remove(name, removed)
            accuracy = evaluate(shadow.model, evaluation)
            result.accuracy[name].append(accuracy)
            result.removed[name].append(len(removed))
            if on_point is not None:
                on_point(name, ratio, accuracy)
    return result


def format_table(result: SensitivityResult) -> str:
    """Accuracy per layer (rows) and ratio (columns), base accuracy on top."""
    head = f"{'layer':<12}{'maps':>6}" + "".join(f"{r:>9.0%}" for r in result.ratios)
    lines = [f"base {result.eval_split} accuracy {result.base_accuracy:.4%}; {result.criterion}, each layer "
             "pruned alone, no retraining", head, "-" * len(head)]
    for layer, accs in result.accuracy.items():
        lines.append(f"{layer:<12}{result.maps[layer]:>6}" + "".join(f"{a:>9.2%}" for a in accs))
    return "\n".join(lines)
