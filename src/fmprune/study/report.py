"""Figures and tables from run directories: accuracy against maps pruned, remaining parameters
and remaining MACs (PNG and SVG), and a markdown report with a summary table per experiment."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .figures import plt, save_figure  # first: sets matplotlib up for files
from matplotlib.ticker import FuncFormatter, PercentFormatter

from ..efficiency import ScoreRecord, read_score_record
from ..errors import FmpruneError
from ..run.rundir import read_json
from ..tables import markdown_table
from . import rank_quality as rq
from .experiments import LABEL_SEPARATOR, quick_mode_warning
from .legend import run_names, style_keys
from .methods import METHODS

THRESHOLDS = (0.99, 0.98, 0.90)
FLOOR = THRESHOLDS[0]   # the thesis' 99 %: marked in every figure, the zoom's focus, the reduction column
X_AXES = {  # key: (x label, log scale)
    "maps": ("feature maps pruned (count)", False),
    "maps-zoom": ("feature maps pruned (count; zoom on where accuracy crosses 99 %)", False),
    "params": ("remaining parameters (fraction of the base model, log scale)", True),
    "macs": ("remaining MACs per image (fraction of the base model, log scale)", True),
}
NOT_REACHED = "not reached"   # the run stopped before accuracy fell under the threshold
ZOOM_ACCURACY = (0.95, 1.0)   # the zoomed figure's y range: the 99 % and 98 % crossings side by side


@dataclass
class Curve:
    """One run: the state after every step (step 0 is the base model)."""

    label: str
    path: Path
    config: dict
    maps: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    params: list[int] = field(default_factory=list)
    macs: list[int] = field(default_factory=list)
    seconds: float = 0.0
    summary: dict | None = None

    @property
    def scope(self) -> str:
        return self.config.get("scope", "all")

    @property
    def environment(self) -> str:
        """Where the run computed (runs recorded before devices existed ran on the CPU)."""
        return f"{self.config.get('device', 'cpu')}, torch {self.config.get('torch_version', 'unknown')}"

    @property
    def finished(self) -> bool:
        return self.summary is not None

    def last_step_above(self, threshold: float) -> int | None:
        """Index of the last step before accuracy first fell under ``threshold`` (None if the
        base model is already under it)."""
        if self.accuracy[0] < threshold:
            return None
        below = next((i for i, a in enumerate(self.accuracy) if a < threshold), len(self.accuracy))
        return below - 1

    def crossed(self, threshold: float) -> bool:
        """Accuracy fell under ``threshold`` within the run, or the run stopped because its next
        step would have fallen under a --min-accuracy floor at or under it. Otherwise the run stopped early
        and where it would have crossed is unknown."""
        if min(self.accuracy) < threshold:
            return True
        floor = self.config.get("min_accuracy")
        stop = str((self.summary or {}).get("stop_reason", ""))
        return floor is not None and threshold >= floor and stop.startswith("accuracy would fall under")

    def maps_before_below(self, threshold: float) -> int | None:
        """Maps pruned at the last step before accuracy first fell under ``threshold``."""
        i = self.last_step_above(threshold)
        return None if i is None else self.maps[i]

    def reduction_at(self, threshold: float) -> tuple[float, float] | None:
        """Parameter and MAC reduction (×) at that step: the thesis' Table 4.1 figures."""
        i = self.last_step_above(threshold)
        return None if i is None else (self.params[0] / self.params[i], self.macs[0] / self.macs[i])

    def area(self) -> float:
        """Area under accuracy against the fraction of removable maps pruned (1.0 = no loss over
        the whole range a complete run covers)."""
        removable = (self.summary or {}).get("extra", {}).get("removable") or max(self.maps[-1], 1)
        xs = [m / removable for m in self.maps]
        return sum((xs[i + 1] - xs[i]) * (self.accuracy[i + 1] + self.accuracy[i]) / 2
                   for i in range(len(xs) - 1))


def read_curve(run_dir: Path, label: str | None = None) -> Curve:
    config_path, steps_path = run_dir / "config.json", run_dir / "steps.csv"
    if not config_path.is_file() or not steps_path.is_file():
        raise FmpruneError(f"{run_dir}: not a run directory (needs config.json and steps.csv)")
    try:
        config = read_json(config_path)
        with open(steps_path, newline="") as f:
            rows = list(csv.DictReader(f))
        curve = Curve(label or run_dir.name, run_dir, config)
        maps = 0
        for i, r in enumerate(rows):
            if r["layer"]:
                maps += 1
            last_of_step = i + 1 == len(rows) or rows[i + 1]["step"] != r["step"]
            if last_of_step:
                curve.maps.append(maps)
                curve.accuracy.append(float(r["accuracy"]))
                curve.params.append(int(r["params"]))
                curve.macs.append(int(r["macs"]))
                curve.seconds = float(r["seconds"])
    except (ValueError, KeyError, TypeError) as e:
        raise FmpruneError(f"{run_dir}: malformed run records ({type(e).__name__}: {e})") from None
    if not curve.maps:
        raise FmpruneError(f"{steps_path}: no steps recorded")
    if (run_dir / "summary.json").is_file():
        curve.summary = read_json(run_dir / "summary.json")
    return curve


class NoRunsError(FmpruneError):
    """No pruning run directory under the paths given to the report."""


@dataclass
class RunGroup:
    """The runs of one experiment (a sweep's directory), or loose runs sharing a parent."""

    name: str
    title: str
    description: str
    curves: list[Curve]
    quick: bool = False   # shrunk by ``fmprune sweep --quick``: a check that runs work, not results

    @property
    def quick_warning(self) -> str:
        """"quick mode: N steps, not the full experiment" for quick groups, "" otherwise."""
        return quick_warning([self]) if self.quick else ""


def quick_warning(groups: list[RunGroup]) -> str:
    """The warning quick runs carry, with the steps they were cut to (recorded, or as run)."""
    return quick_mode_warning([c.config.get("steps") or len(c.maps) - 1 for g in groups for c in g.curves])


def discover(paths: list[Path]) -> list[RunGroup]:
    """Every run directory under ``paths``, grouped by experiment, in the order ``paths`` name them."""
    by_parent: dict[Path, list[Path]] = {}
    for root in paths:
        if not root.exists():
            raise FmpruneError(f"{root}: no such directory")
        configs = [root / "config.json"] if (root / "config.json").is_file() else sorted(root.rglob("config.json"))
        for c in configs:
            if (c.parent / "steps.csv").is_file():
                by_parent.setdefault(c.parent.parent, []).append(c.parent)
    if not by_parent:
        raise NoRunsError(f"no run directories (config.json + steps.csv) under {', '.join(map(str, paths))}")
    groups = []
    for parent, runs in by_parent.items():
        manifest = read_json(parent / "experiment.json") if (parent / "experiment.json").is_file() else {}
        order = {label: i for i, label in enumerate(manifest.get("runs", []))}
        runs = sorted(dict.fromkeys(runs), key=lambda r: (order.get(r.name, len(order)), r.name))
        groups.append(RunGroup(manifest.get("name", parent.name), manifest.get("title", parent.name),
                            manifest.get("description", ""),
                            [read_curve(r, r.name) for r in runs], bool(manifest.get("quick"))))
    return groups


def _x(curve: Curve, axis: str) -> list[float]:
    if axis.startswith("maps"):
        return curve.maps
    values = curve.params if axis == "params" else curve.macs
    return [v / values[0] for v in values]


def legend_labels(curves: list[Curve]) -> list[str]:
    """What tells these runs apart, in words ("Taylor + L2", "retraining 50 it./step"); the run
    directory's name where the settings cannot."""
    fallbacks = [", ".join(p for p in c.label.split(LABEL_SEPARATOR) if p != c.scope) or c.label for c in curves]
    return run_names([c.config for c in curves], fallbacks)


LINE_STYLES = ("-", "--", "-.", (0, (1, 1)))


def line_styles(labels: list[str]) -> list[dict]:
    """Colour by the first setting of a label, line style by the rest ("taylor, l2": colour for
    taylor, style for l2), so a 4 × 3 sweep stays readable; one colour per line otherwise."""
    parts = [(head, tail) for head, _, tail in (label.partition(", ") for label in labels)]
    heads = list(dict.fromkeys(h for h, _ in parts))
    tails = list(dict.fromkeys(t for _, t in parts))
    if 1 < len(heads) <= 10 and 1 < len(tails) <= len(LINE_STYLES):
        return [{"color": f"C{heads.index(h)}", "ls": LINE_STYLES[tails.index(t)]} for h, t in parts]
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return [{"color": cmap(i % cmap.N), "ls": LINE_STYLES[i // cmap.N % len(LINE_STYLES)]}
            for i in range(len(labels))]


def plot_group(group: RunGroup, axis: str, out_dir: Path) -> list[Path]:
    """One figure, a panel per scope, a line per run; base accuracy and the 99 % line marked."""
    scopes = list(dict.fromkeys(c.scope for c in group.curves))
    fig, axes = plt.subplots(1, len(scopes), figsize=(6.4 * len(scopes), 4.8), squeeze=False)
    xlabel, log = X_AXES[axis]
    for ax, scope in zip(axes[0], scopes):
        curves = [c for c in group.curves if c.scope == scope]
        styles = line_styles(style_keys([c.config for c in curves]))
        for c, name, style in zip(curves, legend_labels(curves), styles):
            ax.plot(_x(c, axis), c.accuracy, label=name + ("" if c.finished else " (unfinished)"),
                    lw=1.4, **style)
        base = curves[0].accuracy[0]
        ax.axhline(base, color="0.35", ls=":", lw=1, label=f"base model {base:.2%}")
        if base >= FLOOR:   # the thesis' floor means something only for a base model above it
            ax.axhline(FLOOR, color="black", ls="--", lw=1, label=f"{FLOOR:.0%} floor (thesis)")
        if log:
            ax.set_xscale("log")
            ax.invert_xaxis()
        if axis == "maps-zoom":
            crossings = [c.maps_before_below(FLOOR) or 0 for c in curves]
            ax.set_xlim(0.8 * min(crossings), max(c.maps[-1] for c in curves) * 1.01)
            ax.set_ylim(*ZOOM_ACCURACY)
        else:
            ax.set_ylim(0, 1.005)
        ax.set_xlabel(xlabel)
        split = {"val": "validation", "test": "test"}.get(curves[0].config.get("eval_split", "val"), "")
        ax.set_ylabel(f"{split} accuracy (%)".strip())
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if axis != "maps-zoom" else 1))
        ax.set_title(f"scope: {scope}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{group.title} ({group.quick_warning})" if group.quick else group.title,
                 color="firebrick" if group.quick else "black")
    fig.tight_layout()
    return save_figure(fig, out_dir / f"{group.name}-accuracy-vs-{axis}")


def summary_rows(group: RunGroup) -> list[dict[str, str]]:
    rows = []
    for c, name in zip(group.curves, legend_labels(group.curves)):
        row = {"run": name, "scope": c.scope, "steps": str(len(c.maps) - 1), "maps pruned": str(c.maps[-1])}
        for t in THRESHOLDS:
            n = c.maps_before_below(t)
            row[f"maps before < {t:.0%}"] = "-" if n is None else str(n) if c.crossed(t) else NOT_REACHED
        at_floor = c.reduction_at(FLOOR)
        row[f"params x at {FLOOR:.0%}"], row[f"MACs x at {FLOOR:.0%}"] = (
            ("-", "-") if at_floor is None else (f"{at_floor[0]:.1f}", f"{at_floor[1]:.1f}") if c.crossed(FLOOR)
            else (NOT_REACHED, NOT_REACHED))
        row["area"] = f"{c.area():.3f}"
        row["final accuracy"] = f"{c.accuracy[-1]:.4f}"
        row["params x"] = f"{c.params[0] / c.params[-1]:.1f}"
        row["MACs x"] = f"{c.macs[0] / c.macs[-1]:.1f}"
        row["seconds"] = f"{c.seconds:.0f}"
        row["status"] = "finished" if c.finished else "unfinished"
        rows.append(row)
    return rows


def write_report(paths: list[Path], out_dir: Path) -> Path:
    """Figures for every experiment found under ``paths`` and ``report.md`` embedding them."""
    try:
        groups = discover(paths)
    except NoRunsError:
        if not find_score_records(paths) and not find_sparsify_runs(paths) and not find_rank_quality(paths):   # these alone still make a report
            raise
        groups = []
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / "figures"
    lines = ["# fmprune report", ""]
    if groups:
        lines += ["Accuracy after every pruning step (the evaluation split of each run), from "
                  f"{sum(len(g.curves) for g in groups)} runs. *maps before < 99 %*: maps pruned before accuracy "
                  "first fell under 99 %; *area*: area under accuracy against the fraction of removable maps "
                  "pruned (1.0 would be no loss over a complete run); *not reached*: the run stopped before "
                  "accuracy fell under that threshold.", ""]
    quick = [g for g in groups if g.quick]
    if quick:
        lines[1:1] = ["", f"> **Warning: {quick_warning(quick)}.** Runs made by `fmprune sweep --quick` are "
                      "shrunk (few steps, small calibration and evaluation sets) to check that everything runs; "
                      "their numbers are not the experiment's results."]
    for g in groups:
        lines += [f"## {g.title}", ""] + ([f"> **Warning: {g.quick_warning}.**", ""] if g.quick else [])
        if g.description:
            lines += [g.description, ""]
        environments = sorted({c.environment for c in g.curves})
        lines += [f"Ran on {'; '.join(environments)} (the *seconds* column is wall time there).", ""]
        for axis in X_AXES:
            png = plot_group(g, axis, fig_dir)[0]
            lines += [f"![{g.title}: accuracy against {X_AXES[axis][0]}]({png.relative_to(out_dir)})", ""]
        lines += [markdown_table(summary_rows(g), text_columns=2), ""]
    lines += score_section(paths, out_dir)
    lines += sparsity_section(paths, out_dir)
    lines += rank_quality_section(paths, out_dir)
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


# --- accuracy against the efficiency score (the lab recipe's figure and table) -------------------

SCORE_TARGET = 0.90   # the course's bar: beat ResNet-18 on CIFAR-10 at >= 90 % test accuracy
SCORE_FILES = ("score.json", "*.score.json")


def find_score_records(paths: list[Path]) -> list[tuple[Path, ScoreRecord]]:
    """Every score record (written by ``fmprune quantize`` or ``fmprune score --save``) under ``paths``."""
    found: dict[Path, None] = {}
    for root in paths:
        if root.is_file() and root.name.endswith("score.json"):
            found[root] = None
        elif root.is_dir():
            for pattern in SCORE_FILES:
                found.update(dict.fromkeys(sorted(root.rglob(pattern))))
    return [(p, read_score_record(p)) for p in found]


def pareto_front(records: list[ScoreRecord]) -> list[ScoreRecord]:
    """The records no other beats on both counts (lower or equal score and higher or equal
    accuracy, one of them strictly), by increasing score; records without accuracy are left out."""
    ordered = sorted((r for r in records if r.accuracy is not None), key=lambda r: (r.score, -r.accuracy))
    front, best = [], float("-inf")
    for r in ordered:
        if r.accuracy > best:
            front.append(r)
            best = r.accuracy
    return front


def plot_accuracy_vs_score(records: list[ScoreRecord], out_dir: Path, stem: str = "accuracy-vs-score") -> list[Path]:
    """Accuracy against score (log x), a colour and marker per method, the 90 % line, the Pareto
    front drawn as steps with its points named."""
    points = [r for r in records if r.accuracy is not None]
    if not points:
        raise FmpruneError("no score record has an accuracy to plot")
    fig, ax = plt.subplots(figsize=(7.2, 5.0))
    methods = list(dict.fromkeys(r.method for r in points))
    markers = "osD^vP*X<>"
    for i, method in enumerate(methods):
        mine = [r for r in points if r.method == method]
        ax.scatter([r.score for r in mine], [r.accuracy for r in mine], label=method, s=40, zorder=3,
                   color=f"C{i % 10}", marker=markers[(i + i // 10) % len(markers)], alpha=0.8)
    front = pareto_front(points)
    ax.step([r.score for r in front], [r.accuracy for r in front], where="post", color="0.2", lw=1,
            ls="--", zorder=2, label="Pareto front")
    for r in front:
        ax.annotate(r.label, (r.score, r.accuracy), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.axhline(SCORE_TARGET, color="black", ls=":", lw=1, label=f"{SCORE_TARGET:.0%}")
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")   # 0.04, 0.1, 2 rather than 4×10⁻²
    ax.xaxis.set_major_formatter(plain)
    scores = [r.score for r in points]
    if max(scores) < 100 * min(scores):            # two decades or less: label the minor ticks too
        ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="both", labelsize=7)
    ax.set_xlabel("efficiency score (params + ops; lower is better)")
    splits = sorted({r.split for r in points})
    ax.set_ylabel(f"{'/'.join(splits)} accuracy")
    ax.set_title("Accuracy against efficiency score")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, out_dir / stem)


def score_rows(records: list[ScoreRecord]) -> list[dict[str, str]]:
    """One row per record, by increasing score: the table under the figure."""
    front = {id(r) for r in pareto_front(records)}
    rows = []
    for r in sorted(records, key=lambda r: (r.score, -(r.accuracy or 0.0))):
        v = r.values
        rows.append({
            "result": r.label, "method": r.method,
            "accuracy": "-" if r.accuracy is None else f"{r.accuracy:.4f}", "split": r.split or "-",
            "score": f"{r.score:.4g}", "param term": f"{v.get('param_term', 0.0):.4g}",
            "MAC term": f"{v.get('mac_term', 0.0):.4g}", "w": f"{v.get('w', 0):,}", "f": f"{v.get('f', 0):,}",
            "p_u": f"{v.get('p_u', 0.0):.3f}", "q_w/q_a": f"{v.get('q_w', 32)}/{v.get('q_a', 32)}",
            "Pareto": "yes" if id(r) in front else "",
        })
    return rows


def score_section(paths: list[Path], out_dir: Path) -> list[str]:
    """The report's accuracy-vs-score section (figure and table), or nothing without score records."""
    records = [r for _, r in find_score_records(paths)]
    if not records:
        return []
    lines = ["## Accuracy against efficiency score", "",
             f"{len(records)} scored results (`fmprune quantize`, `fmprune score --save`). Score: "
             "[1 − (p_s + p_u)] · q_w/32 · w / 5.6e6 + (1 − p_s) · max(q_w, q_a)/32 · f / 2.8e8 "
             f"(ResNet-18 at 16 bits scores 2.0); the dotted line is the course's {SCORE_TARGET:.0%} bar.", ""]
    if any(r.accuracy is not None for r in records):
        png = plot_accuracy_vs_score(records, out_dir / "figures")[0]
        lines += [f"![accuracy against efficiency score]({png.relative_to(out_dir)})", ""]
    return lines + [markdown_table(score_rows(records), text_columns=2), ""]


# --- weight and unit pruning: accuracy against the fraction pruned, k (fmprune sparsify) ---------

SPARSIFY_KIND = METHODS["sparsify"].name   # config.json "kind" of a sparsify run
HELD_WITHIN = 0.01           # "holds up": accuracy within 1 percentage point of the base model


@dataclass(frozen=True)
class SparsityPoint:
    """One sparsify run: a method's accuracy at one amount k."""

    run: Path
    series: str
    amount: float
    accuracy: float
    base_accuracy: float
    weights_left: float      # non-zero weights / weights before
    params_left: float       # parameters / parameters before (falls only with unit pruning)
    eval_split: str


def sparsity_series(config: dict) -> str:
    """The line a run belongs to: weight (magnitude/random) or unit, scope, retraining."""
    method = config.get("method", "magnitude")
    name = "unit" if method == "unit" else f"weight, {method}"
    name += f", {config.get('scope', 'layer')}"
    if config.get("retrain"):
        name += f", retrain {config['rounds']}x{config['retrain']}"
    return name


def find_sparsify_runs(paths: list[Path]) -> list[Path]:
    """Every finished sparsify run directory under ``paths`` (config.json kind + summary.json)."""
    found: dict[Path, None] = {}
    for root in paths:
        configs = [root / "config.json"] if (root / "config.json").is_file() else sorted(root.rglob("config.json"))
        for c in configs:
            if (c.parent / "summary.json").is_file() and read_json(c).get("kind") == SPARSIFY_KIND:
                found[c.parent] = None
    return list(found)


def read_sparsity_point(run: Path) -> SparsityPoint:
    config, summary = read_json(run / "config.json"), read_json(run / "summary.json")
    try:
        return SparsityPoint(run, sparsity_series(config), float(summary["amount"]), float(summary["final_accuracy"]),
                             float(summary["base_accuracy"]), summary["nonzero_after"] / summary["weights"],
                             summary["params_after"] / summary["params_before"], summary["eval_split"])
    except (KeyError, TypeError, ZeroDivisionError) as e:
        raise FmpruneError(f"{run}: malformed sparsify summary ({type(e).__name__}: {e})") from None


@dataclass(frozen=True)
class KPoint:
    """A series at one k, over the seeds it ran with (random pruning varies with the draw)."""

    series: str
    amount: float
    accuracies: tuple[float, ...]
    weights_left: float

    @property
    def accuracy(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)


def series_order(series: str) -> tuple[int, str]:
    """Magnitude lines first, then the random baseline, then unit pruning."""
    return (2 if series.startswith("unit") else 1 if "random" in series else 0, series)


def by_series_and_k(points: list[SparsityPoint]) -> dict[str, list[KPoint]]:
    """Points grouped per series (in :func:`series_order`) and k (ascending), seeds pooled."""
    pooled: dict[tuple[str, float], list[SparsityPoint]] = {}
    for p in points:
        pooled.setdefault((p.series, p.amount), []).append(p)
    order = sorted(dict.fromkeys(p.series for p in points), key=series_order)
    out: dict[str, list[KPoint]] = {s: [] for s in order}
    for (series, amount), same in sorted(pooled.items(), key=lambda kv: kv[0][1]):
        out[series].append(KPoint(series, amount, tuple(p.accuracy for p in same), same[0].weights_left))
    return out


def plot_accuracy_vs_k(points: list[SparsityPoint], title: str, stem: Path) -> list[Path]:
    """Accuracy against k (left) and against the non-zero weights left (right, log: at equal
    weights, which way of pruning keeps more accuracy), a line per series: weight pruning solid,
    unit pruning dashed, the random baseline dotted (its mean over seeds, the band from the worst
    to the best seed); the base accuracy marked."""
    fig, axes = plt.subplots(1, 2, figsize=(12.8, 4.8), sharey=True)
    for i, (series, ks) in enumerate(by_series_and_k(points).items()):
        style = {"ls": ":" if "random" in series else "--" if series.startswith("unit") else "-",
                 "marker": "o", "ms": 3.5, "lw": 1.4, "color": f"C{i % 10}"}
        seeds = max(len(k.accuracies) for k in ks)
        label = series + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
        for ax, xs in zip(axes, ([100 * k.amount for k in ks], [k.weights_left for k in ks])):
            ax.plot(xs, [k.accuracy for k in ks], label=label, **style)
            if seeds > 1:
                ax.fill_between(xs, [min(k.accuracies) for k in ks], [max(k.accuracies) for k in ks],
                                color=style["color"], alpha=0.15, lw=0)
    base = points[0].base_accuracy
    for ax in axes:
        ax.axhline(base, color="0.35", ls=":", lw=1, label=f"base {base:.2%}")
        ax.set_ylim(0, 1.005)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_xlabel("k: weights (or units) pruned, %")
    axes[0].set_ylabel(f"{points[0].eval_split} accuracy")
    axes[0].legend(fontsize=8, loc="lower left")
    axes[1].set_xscale("log")
    axes[1].invert_xaxis()
    axes[1].set_xlabel("non-zero weights left (fraction of the base model, log scale)")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, stem)


def accuracy_by_k_rows(points: list[SparsityPoint]) -> list[dict[str, str]]:
    """One row per k, a column per series: accuracy (several seeds: mean [worst–best, n seeds]),
    and in brackets the non-zero weights left."""
    grouped = by_series_and_k(points)
    table = {(k.series, k.amount): k for ks in grouped.values() for k in ks}
    rows = []
    for amount in sorted({p.amount for p in points}):
        row = {"k": f"{amount:.0%}"}
        for series in grouped:
            k = table.get((series, amount))
            if k is None:
                row[series] = "-"
                continue
            spread = (f" [{min(k.accuracies):.3f}–{max(k.accuracies):.3f}, {len(k.accuracies)} seeds]"
                      if len(k.accuracies) > 1 else "")
            row[series] = f"{k.accuracy:.4f}{spread} ({k.weights_left:.1%})"
        rows.append(row)
    return rows


def held_k(points: list[SparsityPoint], series: str) -> tuple[float | None, bool]:
    """The largest k up to which ``series`` (its mean over seeds) stays within 1 pp of the base,
    and whether it then fell under (False: it held at every k it ran, so the limit is higher)."""
    held = None
    base = points[0].base_accuracy
    for k in by_series_and_k(points).get(series, []):
        if k.accuracy < base - HELD_WITHIN:
            return held, True
        held = k.amount
    return held, False


def sparsity_discussion(points: list[SparsityPoint]) -> list[str]:
    """Why weight pruning holds up longer than unit pruning, with this experiment's numbers."""
    series = list(by_series_and_k(points))
    facts = []
    for s in series:
        k, fell = held_k(points, s)
        facts.append(f"*{s}* stays within {HELD_WITHIN * 100:.0f} pp of the base "
                     + ("at no k" if k is None else f"up to k = {k:.0%}" if fell else
                        f"at every k run (up to {k:.0%})"))
    lines = ["; ".join(facts) + ".", ""]
    units = [p for p in points if p.series.startswith("unit") and p.amount > 0]
    if units:
        p = max(units, key=lambda p: p.amount)
        lines += [f"Removing a fraction k of the units takes far more than k of the weights: a unit's "
                  f"row goes and so does its column in the next layer, so a hidden layer between two pruned "
                  f"ones keeps about (1 − k)² of its weights; at k = {p.amount:.0%} unit pruning left "
                  f"{p.weights_left:.2%} of the weights, weight pruning {1 - p.amount:.0%}. Weight pruning "
                  "also keeps every unit alive with its largest incoming weights, so each still computes a "
                  "sparse version of its feature, while a removed unit's feature is gone altogether.", ""]
    lines += ["The right panel compares the methods at equal non-zero weights left, which takes the "
              "(1 − k)² effect out and leaves the cost of structure itself. What unit (and feature-map) "
              "pruning buys in exchange is a smaller dense model: its "
              "parameters and MACs fall with k and every dense kernel runs faster. Unstructured "
              "zeros cost the same MACs in a dense kernel; they save time only where a sparse kernel "
              "beats the dense one (`benchmarks/sparse.py` measures that crossover; on the README's 2-core "
              "CPU, torch's CSR kernel won below about 9 % density for single images and 25 % for "
              "batches of 256). At equal MACs, feature-map pruning therefore wins "
              "whenever latency or energy is the budget; weight pruning wins on accuracy per stored "
              "weight, i.e. on compressed file size.", ""]
    return lines


def sparsity_section(paths: list[Path], out_dir: Path) -> list[str]:
    """The report's accuracy-vs-k section: one figure, table and discussion per base model (all
    sparsify runs from the same checkpoint share a figure, whichever experiment ran them), or
    nothing when there are no sparsify runs."""
    runs = find_sparsify_runs(paths)
    if not runs:
        return []
    by_base: dict[tuple[str, str], list[tuple[Path, SparsityPoint]]] = {}
    for run in runs:
        config = read_json(run / "config.json")
        point = read_sparsity_point(run)
        key = (config.get("base_checkpoint_sha256") or config.get("base_checkpoint", ""), point.eval_split)
        by_base.setdefault(key, []).append((run, point))
    lines = []
    for (sha, _), members in by_base.items():
        points = [p for _, p in members]
        model = read_json(members[0][0] / "config.json").get("model", "model")
        experiments = []
        for run, _ in members:
            manifest = run.parent / "experiment.json"
            title = read_json(manifest).get("title", run.parent.name) if manifest.is_file() else run.parent.name
            experiments.append(title)
        title = f"Weight vs unit pruning: {model}"
        lines += [f"## {title}", "",
                  f"{len(points)} `fmprune sparsify` runs from one base checkpoint (sha256 {sha[:12]}…): "
                  f"{'; '.join(dict.fromkeys(experiments))}.", ""]
        stem = out_dir / "figures" / f"sparsity-{sha[:12] or 'runs'}-{points[0].eval_split}-accuracy-vs-k"
        png = plot_accuracy_vs_k(points, title, stem)[0]
        lines += [f"![{title}: accuracy against k]({png.relative_to(out_dir)})", "",
                  f"{points[0].eval_split} accuracy after pruning k (in brackets: non-zero weights left, "
                  "as a fraction of the base model's).", "",
                  markdown_table(accuracy_by_k_rows(points), text_columns=2), ""]
        lines += sparsity_discussion(points)
    return lines


# --- recipe search (fmprune tune): optimisation history, parameter importances, trial table ------

@dataclass
class TunedTrial:
    """One trial of a search as the report shows it (read from the study by ``study.tune``)."""

    number: int
    state: str                      # COMPLETE, PRUNED, FAIL, RUNNING or WAITING
    value: float | None             # the objective (complete trials)
    params: dict
    accuracy: float | None = None   # at the trial's best point
    params_x: float | None = None
    macs_x: float | None = None
    run_dir: str = ""


def plot_tune_history(trials: list[TunedTrial], value_label: str, title: str, stem: Path) -> list[Path]:
    """Objective of every complete trial by trial number, the best so far as a step line;
    pruned trials marked along the bottom (they have no objective value)."""
    done = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    ax.scatter([t.number for t in done], [t.value for t in done], s=28, color="C0", zorder=3, label="complete trial")
    best, line = float("inf"), []
    for t in done:
        best = min(best, t.value)
        line.append(best)
    ax.step([t.number for t in done], line, where="post", color="C3", lw=1.4, label="best so far")
    pruned = [t.number for t in trials if t.state == "PRUNED"]
    if pruned:
        ax.scatter(pruned, [0] * len(pruned), marker="x", color="0.4", s=24, transform=ax.get_xaxis_transform(),
                   clip_on=False, label="pruned trial (stopped early)")
    ax.set_xlabel("trial")
    ax.set_ylabel(value_label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem)


def plot_param_importances(importances: dict[str, float], title: str, stem: Path) -> list[Path]:
    """How much each parameter decides the objective (Optuna's default evaluator, PED-ANOVA),
    largest on top."""
    names = sorted(importances, key=importances.get)
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(names) + 1.6))
    ax.barh(names, [importances[n] for n in names], color="C0")
    for i, n in enumerate(names):
        ax.annotate(f"{importances[n]:.2f}", (importances[n], i), xytext=(3, -3), textcoords="offset points",
                    fontsize=8)
    ax.set_xlabel("importance for the objective (PED-ANOVA, sums to 1)")
    ax.set_title(title)
    ax.set_xlim(0, max(1e-9, max(importances.values())) * 1.15)
    fig.tight_layout()
    return save_figure(fig, stem)


def tune_rows(trials: list[TunedTrial], value_label: str) -> list[dict[str, str]]:
    """One row per trial, best first, then pruned and failed ones by number."""
    names = list(dict.fromkeys(k for t in trials for k in t.params))
    order = {"COMPLETE": 0, "PRUNED": 1}
    rows = []
    for t in sorted(trials, key=lambda t: (order.get(t.state, 2), t.value if t.value is not None else 0, t.number)):
        row = {"trial": str(t.number), "state": t.state.lower(),
               value_label: "-" if t.value is None or t.state != "COMPLETE" else f"{t.value:.4g}",
               "accuracy": "-" if t.accuracy is None else f"{t.accuracy:.4f}",
               "params x": "-" if t.params_x is None else f"{t.params_x:.2f}",
               "MACs x": "-" if t.macs_x is None else f"{t.macs_x:.2f}"}
        for n in names:
            v = t.params.get(n)
            row[n] = "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
        row["run"] = Path(t.run_dir).name if t.run_dir else "-"
        rows.append(row)
    return rows


def write_tune_report(title: str, objective: str, value_label: str, trials: list[TunedTrial],
                      importances: dict[str, float] | None, out_dir: Path, notes: list[str] = ()) -> Path:
    """``report.md`` of a search: what it minimised, the history and importance figures, and the
    trial table; ``notes`` (e.g. why importances are missing) go under the heading."""
    fig_dir = out_dir / "figures"
    lines = [f"# {title}", "", f"Objective: {objective}. {len(trials)} trials: "
             + ", ".join(f"{sum(t.state == s for t in trials)} {s.lower()}"
                         for s in dict.fromkeys(t.state for t in trials)) + ".", ""]
    lines += [f"> {n}" for n in notes] + ([""] if notes else [])
    if any(t.state == "COMPLETE" for t in trials):
        png = plot_tune_history(trials, value_label, f"{title}: optimisation history", fig_dir / "tune-history")[0]
        lines += [f"![optimisation history]({png.relative_to(out_dir)})", ""]
    if importances:
        png = plot_param_importances(importances, f"{title}: parameter importances", fig_dir / "tune-importances")[0]
        lines += [f"![parameter importances]({png.relative_to(out_dir)})", ""]
    if trials:
        lines += [markdown_table(tune_rows(trials, value_label), text_columns=2), ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


# --- criterion quality: Spearman correlation with the oracle (fmprune rank-quality) ------------

def find_rank_quality(paths: list[Path]) -> list[Path]:
    """Every ``rank_quality.json`` under ``paths``."""
    found: dict[Path, None] = {}
    for root in paths:
        if root.is_file() and root.name == rq.RESULT_FILE:
            found[root] = None
        elif root.is_dir():
            found.update(dict.fromkeys(sorted(root.rglob(rq.RESULT_FILE))))
    return list(found)


def rank_quality_section(paths: list[Path], out_dir: Path) -> list[str]:
    """The criterion-quality section: per result, the Spearman tables against the oracle, the
    figure, and the conclusions of Molchanov et al. 2017 (Table 2) checked on these numbers."""
    files = find_rank_quality(paths)
    if not files:
        return []
    lines = ["## Criterion quality: rankings against the oracle", "",
             "The oracle ranks each map by the true change of the calibration loss when it alone is removed; "
             "Molchanov et al. 2017 (Table 2) compare criteria with it by Spearman's rank correlation, on VGG-16 and "
             "AlexNet fine-tuned on Birds-200 and Flowers-102 and AlexNet on ImageNet. They find Taylor closest to "
             "the oracle everywhere, activation statistics (mean, S.d.) next, APoZ and OBD lower and weight "
             "magnitude weakest, and normalise scores per layer (L2) so that one ranking can span the network.", ""]
    for i, file in enumerate(files):
        result = rq.read(file)
        lines += [f"### {result.source or file.parent.name}", "",
                  f"Layers {', '.join(f'{n} ({result.maps[n]} maps)' for n in result.layers)}.", ""]
        png = rq.plot(result, out_dir / "figures" / f"rank-quality-{i}")[0]
        lines += [rq.markdown(result), f"![Spearman correlation with the oracle]({png.relative_to(out_dir)})", "",
                  "Which of the paper's conclusions hold here:", ""]
        lines += [f"- {c}" for c in rq.conclusions(result)] + [""]
    return lines

