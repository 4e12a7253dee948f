"""Criterion quality as in Molchanov et al. 2017 (their Table 2): how well each criterion's ranking
of the maps agrees with the oracle's — the true change of loss when each map is removed alone —
measured by Spearman's rank correlation, per layer and over the whole network, on several
disjoint calibration batches (mean and spread).

A criterion entry is a registered criterion, optionally with a per-layer normalisation:
``taylor+l2``. Normalisation changes nothing within one layer, only the whole-network ranking.
The oracle's own scores are never normalised: they are loss changes, comparable across layers.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..criteria import NORMALIZATIONS, create_criterion, normalize
from ..data import RANK_QUALITY_STREAM, Split, calibration_subset
from ..engine import create_engine
from ..errors import FmpruneError
from ..graph import Graph
from ..tables import markdown_table
from .figures import plt, save_figure
from .legend import criterion_name

DEFAULT_CRITERIA = ("taylor", "taylor+l2", "weight_grad", "obd", "mean_activation", "activation_std", "apoz",
                    "min_weight", "taylor_bn", "random")
REFERENCES = ("oracle_abs", "oracle")
ALL_LAYERS = "all layers"       # whole-network ranking (every layer's maps in one list)
MEAN_OF_LAYERS = "mean of layers"   # the average of the per-layer correlations (the paper's "per layer")
RESULT_FILE = "rank_quality.json"


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties sharing the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered) != 0) + 1]
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's on average ranks); NaN when one side is constant."""
    ra, rb = average_ranks(np.asarray(a, dtype=np.float64)), average_ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def parse_entry(entry: str) -> tuple[str, str]:
    """``taylor+l2`` -> ("taylor", "l2"); ``taylor`` -> ("taylor", "none"). Checks both names."""
    name, _, norm = entry.strip().partition("+")
    norm = norm.strip() or "none"
    if norm not in NORMALIZATIONS:
        raise FmpruneError(f"criterion {entry!r}: unknown normalisation {norm!r} (available: {', '.join(NORMALIZATIONS)})")
    create_criterion(name.strip())
    return name.strip(), norm


def entry_label(entry: str) -> str:
    return criterion_name(*parse_entry(entry))


def calibration_batches(train: Split, batches: int, size: int, seed: int) -> list[Split]:
    """``batches`` disjoint sets of ``size`` training images, drawn with a seeded permutation."""
    if batches < 1 or size < 2:
        raise FmpruneError(f"need at least one batch of two images, got {batches} batches of {size}")
    if batches * size > len(train):
        raise FmpruneError(f"{batches} batches of {size} images need {batches * size:,} training images; "
                           f"there are {len(train):,}: use fewer or smaller batches")
    drawn = calibration_subset(train, batches * size, seed, RANK_QUALITY_STREAM)
    return [Split(drawn.images[i * size:(i + 1) * size], drawn.labels[i * size:(i + 1) * size]) for i in range(batches)]


@dataclass
class RankQuality:
    """Spearman correlations of criteria with the oracle, one row per (reference, criterion,
    layer, batch); ``seconds`` is the mean time per batch to score the whole scope."""

    layers: list[str]
    criteria: list[str]
    batches: int
    batch_size: int
    seed: int
    source: str = ""
    rows: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    maps: dict[str, int] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [*self.layers, MEAN_OF_LAYERS, ALL_LAYERS] if len(self.layers) > 1 else list(self.layers)

    def values(self, reference: str, criterion: str, column: str) -> list[float]:
        return [r["spearman"] for r in self.rows
                if r["reference"] == reference and r["criterion"] == criterion and r["layer"] == column]

    def summary(self, reference: str, criterion: str, column: str) -> tuple[float, float]:
        """(mean, standard deviation) over batches, NaN-free where possible."""
        v = np.array(self.values(reference, criterion, column), dtype=np.float64)
        v = v[~np.isnan(v)]
        if not len(v):
            return float("nan"), float("nan")
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    def best(self, reference: str, column: str) -> str | None:
        """The criterion with the highest mean correlation in ``column`` (oracle entries excluded)."""
        scored = [(self.summary(reference, c, column)[0], c) for c in self.criteria if not c.startswith("oracle")]
        scored = [(m, c) for m, c in scored if not np.isnan(m)]
        return max(scored)[1] if scored else None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "RankQuality":
        return cls(**d)


def _scores(graph: Graph, criterion: str, batch: Split, scope: list[str], seed: int) -> dict[str, np.ndarray]:
    engine = create_engine(graph, create_criterion(criterion), batch, batch, scope, seed=seed)
    return {n: s.double().numpy() for n, s in engine.raw_scores().items()}


def measure(graph: Graph, train: Split, layers: list[str] | None = None, criteria: list[str] | None = None,
            batches: int = 3, batch_size: int = 500, seed: int = 0, source: str = "",
            on_progress: Callable[[str], None] | None = None) -> RankQuality:
    """Score the unpruned model of ``graph`` with every criterion and with the oracle on each
    calibration batch and correlate; criteria that cannot score this model (e.g. ``taylor_bn``
    without BatchNorm) are skipped with the reason."""
    layers = graph.scope("all") if layers is None else list(layers)
    for name in layers:
        graph.group(name)
    entries = list(DEFAULT_CRITERIA if criteria is None else criteria)
    parsed = {e: parse_entry(e) for e in entries}
    result = RankQuality(layers, entries, batches, batch_size, seed, source,
                         maps={n: graph.group(n).size for n in layers})
    spent: dict[str, float] = {}
    for b, batch in enumerate(calibration_batches(train, batches, batch_size, seed)):
        start = time.perf_counter()
        oracle = _scores(graph, "oracle", batch, layers, seed + b)
        spent["oracle"] = spent.get("oracle", 0.0) + time.perf_counter() - start
        if on_progress:
            on_progress(f"batch {b + 1}/{batches}: oracle {time.perf_counter() - start:.1f} s")
        raw: dict[str, dict[str, np.ndarray]] = {}
        for entry, (name, norm) in parsed.items():
            if entry in result.skipped:
                continue
            if name not in raw:
                start = time.perf_counter()
                try:
                    raw[name] = _scores(graph, name, batch, layers, seed + b)
                except FmpruneError as e:
                    result.skipped.update({e2: str(e) for e2, (n2, _) in parsed.items() if n2 == name})
                    continue
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
            scores = normalize({n: torch.from_numpy(v) for n, v in raw[name].items()}, norm)
            _correlate(result, entry, {n: v.numpy() for n, v in scores.items()}, oracle, b)
    result.seconds = {k: v / batches for k, v in spent.items()}
    return result


def _correlate(result: RankQuality, entry: str, scores: dict[str, np.ndarray], oracle: dict[str, np.ndarray],
               batch: int) -> None:
    for reference in REFERENCES:
        ref = {n: (np.abs(v) if reference == "oracle_abs" else v) for n, v in oracle.items()}
        per_layer = {n: spearman(scores[n], ref[n]) for n in result.layers}
        values = dict(per_layer)
        if len(result.layers) > 1:
            finite = [v for v in per_layer.values() if not np.isnan(v)]
            values[MEAN_OF_LAYERS] = float(np.mean(finite)) if finite else float("nan")
            values[ALL_LAYERS] = spearman(np.concatenate([scores[n] for n in result.layers]),
                                          np.concatenate([ref[n] for n in result.layers]))
        for column, value in values.items():
            result.rows.append({"reference": reference, "criterion": entry, "layer": column, "batch": batch,
                                "spearman": value})


# --- outputs ---------------------------------------------------------------------------------------

def _cell(mean: float, std: float) -> str:
    return "n/a" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def table_rows(result: RankQuality, reference: str) -> list[dict[str, str]]:
    """One row per criterion: mean ± S.d. over batches per column, and the scoring time."""
    rows = []
    for entry in result.criteria:
        if entry in result.skipped:
            continue
        row = {"criterion": entry_label(entry)}
        row.update({col: _cell(*result.summary(reference, entry, col)) for col in result.columns})
        seconds = result.seconds.get(parse_entry(entry)[0])
        row["s per batch"] = f"{seconds:.2f}" if seconds is not None else ""
        rows.append(row)
    return rows


def markdown(result: RankQuality) -> str:
    """The "Spearman" tables (against oracle_abs and against the signed oracle) as markdown."""
    lines = [f"Spearman rank correlation with the oracle, mean ± S.d. over {result.batches} disjoint "
             f"calibration batches of {result.batch_size} training images; *{MEAN_OF_LAYERS}*: the per-layer "
             f"correlations averaged; *{ALL_LAYERS}*: one ranking of every map of the scope. The oracle "
             f"itself took {result.seconds.get('oracle', float('nan')):.1f} s per batch."]
    for reference in REFERENCES:
        title = "|Δloss| (oracle-abs)" if reference == "oracle_abs" else "Δloss (signed oracle)"
        rows = table_rows(result, reference)
        lines += ["", f"**Against {title}**", "", markdown_table(rows)]
    for entry, reason in result.skipped.items():
        lines += ["", f"Skipped {entry}: {reason}."]
    return "\n".join(lines) + "\n"


def plot(result: RankQuality, stem: Path) -> list[Path]:
    """Grouped bars: a group per criterion, a bar per layer (and the whole network), error bars
    one S.d. over batches; one panel per reference."""
    entries = [e for e in result.criteria if e not in result.skipped]
    columns = result.columns
    fig, axes = plt.subplots(1, len(REFERENCES), figsize=(max(7.0, 1.1 * len(entries)) * 1.6, 4.6), sharey=True)
    width = 0.8 / len(columns)
    for ax, reference in zip(axes, REFERENCES):
        for i, column in enumerate(columns):
            stats = [result.summary(reference, e, column) for e in entries]
            xs = np.arange(len(entries)) + (i - (len(columns) - 1) / 2) * width
            ax.bar(xs, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=2, label=column)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(np.arange(len(entries)), [entry_label(e) for e in entries], rotation=35, ha="right")
        ax.set_ylim(-1, 1)
        ax.set_title("against |Δloss| (oracle-abs)" if reference == "oracle_abs" else "against Δloss (oracle)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Spearman rank correlation")
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Criterion rankings against the oracle ({result.batches} batches of {result.batch_size} images)")
    fig.tight_layout()
    return save_figure(fig, stem)


def write(result: RankQuality, out_dir: Path) -> dict[str, Path]:
    """``rank_quality.json``, ``spearman.csv`` (every batch), ``spearman-summary.csv``,
    ``spearman.md`` and the figure (PNG, SVG) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / RESULT_FILE, "csv": out_dir / "spearman.csv",
             "summary": out_dir / "spearman-summary.csv", "markdown": out_dir / "spearman.md"}
    paths["json"].write_text(json.dumps(result.to_json(), indent=1))
    with paths["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, ["reference", "criterion", "layer", "batch", "spearman"])
        w.writeheader()
        w.writerows({**r, "spearman": f"{r['spearman']:.6f}"} for r in result.rows)
    with paths["summary"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["reference", "criterion", "layer", "mean", "std", "batches"])
        for reference in REFERENCES:
            for entry in result.criteria:
                if entry in result.skipped:
                    continue
                for column in result.columns:
                    mean, std = result.summary(reference, entry, column)
                    w.writerow([reference, entry, column, f"{mean:.6f}", f"{std:.6f}",
                                len(result.values(reference, entry, column))])
    paths["markdown"].write_text(markdown(result))
    paths["figure"] = plot(result, out_dir / "spearman")[0]
    return paths


def read(path: Path) -> RankQuality:
    """A saved result (the directory holding ``rank_quality.json``, or the file)."""
    file = path / RESULT_FILE if path.is_dir() else path
    try:
        return RankQuality.from_json(json.loads(file.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise FmpruneError(f"{file}: not a readable rank-quality result ({type(e).__name__})") from None


# --- the paper's Table 2 conclusions, checked on a result --------------------------------------

PAPER_CRITERIA = ("min_weight", "mean_activation", "activation_std", "apoz", "obd", "taylor")   # its Table 2 columns


def _mean(result: RankQuality, entry: str, column: str, reference: str = "oracle_abs") -> float | None:
    if entry not in result.criteria or entry in result.skipped:
        return None
    value = result.summary(reference, entry, column)[0]
    return None if np.isnan(value) else value


def conclusions(result: RankQuality) -> list[str]:
    """What Molchanov et al. 2017 conclude from their Table 2 (against oracle-abs), each checked
    on ``result``: "holds", "does not hold", or left out when the criteria needed were not measured."""
    per_layer = MEAN_OF_LAYERS if len(result.layers) > 1 else result.layers[0]
    whole = ALL_LAYERS if len(result.layers) > 1 else result.layers[0]
    out = []

    def verdict(ok: bool) -> str:
        return "**holds**" if ok else "**does not hold**"

    paper_set = [c for c in PAPER_CRITERIA if _mean(result, c, per_layer) is not None]
    if "taylor" in paper_set and len(paper_set) > 1:
        best = max(paper_set, key=lambda c: _mean(result, c, per_layer))
        out.append(f"Taylor correlates best with the oracle among the paper's criteria ({', '.join(entry_label(c) for c in paper_set)}), "
                   f"per layer: {verdict(best == 'taylor')} (best here: {entry_label(best)}, "
                   f"{_mean(result, best, per_layer):.2f}; Taylor {_mean(result, 'taylor', per_layer):.2f}).")
    overall = [c for c in result.criteria if not c.startswith("oracle") and _mean(result, c, per_layer) is not None]
    extra = [c for c in overall if parse_entry(c)[0] not in (*PAPER_CRITERIA, "random")]
    if "taylor" in overall and extra:
        best = max(overall, key=lambda c: _mean(result, c, per_layer))
        out.append(f"Counting criteria the paper did not compare ({', '.join(entry_label(c) for c in extra)}), the "
                   f"best per layer is {entry_label(best)} ({_mean(result, best, per_layer):.2f}).")
    raw, l2 = _mean(result, "taylor", whole), _mean(result, "taylor+l2", whole)
    if len(result.layers) > 1 and raw is not None and l2 is not None:
        out.append(f"Per-layer L2 normalisation makes Taylor's whole-network ranking closer to the oracle's: "
                   f"{verdict(l2 > raw)} ({raw:.2f} raw, {l2:.2f} with L2).")
    weight = _mean(result, "min_weight", whole)
    others = [c for c in ("mean_activation", "activation_std", "taylor") if _mean(result, c, whole) is not None]
    if len(result.layers) > 1 and weight is not None and others:
        out.append(f"Weight magnitude ranks the whole network worst of {', '.join(entry_label(c) for c in ['min_weight', *others])}: "
                   f"{verdict(all(weight < _mean(result, c, whole) for c in others))} ({weight:.2f}).")
    act = [c for c in ("mean_activation", "activation_std") if _mean(result, c, per_layer) is not None]
    apoz = _mean(result, "apoz", per_layer)
    if act and apoz is not None:
        out.append(f"Activation mean and S.d. beat APoZ per layer: {verdict(all(_mean(result, c, per_layer) > apoz for c in act))} "
                   f"(APoZ {apoz:.2f}; {', '.join(f'{entry_label(c)} {_mean(result, c, per_layer):.2f}' for c in act)}).")
    obd, taylor = _mean(result, "obd", per_layer), _mean(result, "taylor", per_layer)
    if obd is not None and taylor is not None:
        cost = result.seconds.get("obd", float("nan")) / max(1e-9, result.seconds.get("taylor", float("nan")))
        out.append(f"Taylor, first-order, matches or beats second-order OBD per layer: {verdict(taylor >= obd)} "
                   f"(OBD {obd:.2f}, at {cost:.0f}× Taylor's scoring time).")
    rnd = _mean(result, "random", whole)
    if rnd is not None:
        out.append(f"Random ranking is uncorrelated with the oracle: {verdict(abs(rnd) < 0.1)} ({rnd:.2f}).")
    return out
