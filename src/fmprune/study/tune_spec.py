"""Tune files: which pruning recipe parameters a search varies, in which ranges, towards what.

    [study]
    name = "lenet-recipe"          # directory and Optuna study name
    title = "LeNet: fewest MACs at >= 98 %"
    checkpoint = "default"         # or a path (relative to this file), as in experiment files
    trials = 30                    # trials that finish (complete or pruned)
    sampler = "tpe"                # tpe, random, or grid: every combination once (choices and
                                   #   ranges with a step only; trials beyond the grid are not run)
    pruner = "median"              # median, hyperband or none: stops trials early on per-step accuracy
    seed = 0
    startup_trials = 5             # trials drawn at random and never pruned before the sampler learns

    [objective]
    minimize = "macs"              # macs, params (fractions of the base model's) or score (efficiency score)
    accuracy = 0.98                # ... at >= this accuracy on the runs' evaluation split
    # or: maximize = "accuracy"    # the final accuracy at the size target [settings] gives
    #                                (target_macs, target_params or target_latency); no floor

    [settings]                     # PruneConfig fields every trial shares
    scope = "all"

    [params]                       # PruneConfig fields searched: ranges or choices
    maps_per_step = { low = 1, high = 16, log = true, type = "int" }
    retrain = { low = 0, high = 50, step = 10 }
    retrain_lr = { low = 1e-5, high = 1e-3, log = true }
    flops_lambda = { low = 0.0, high = 1.0 }
    min_accuracy = { low = 0.97, high = 0.99 }        # the floor
    criterion = { choices = ["taylor", "min_weight"] }

    [resources]                    # per trial, for --ray (as in experiment files)
    cpus = 1

Unless the file sets or searches ``min_accuracy``, every run stops at the objective's accuracy
(the floor), since what comes after cannot count. ``maximize = "accuracy"`` asks the other
question, the one a size budget poses: which recipe keeps the most accuracy at 3x fewer MACs; a
trial whose run stops short of the target counts as accuracy 0. Every key is checked; a wrong one is named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from math import prod
from pathlib import Path
from typing import Any

from ..efficiency import ScoreInputs, efficiency_score
from ..errors import FmpruneError
from ..run.config import PruneConfig
from ..validate import check_number
from .experiments import read_toml
from .report import Curve
from .resources import Resources, parse_resources

SECTIONS = {"study", "objective", "settings", "params", "resources"}
STUDY_KEYS = {"name", "title", "checkpoint", "trials", "sampler", "pruner", "seed", "startup_trials"}
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
METRICS = ("macs", "params", "score")   # minimised at >= an accuracy
SIZE_TARGETS = ("target_macs", "target_params", "target_latency")   # what maximize = "accuracy" needs
RANGE_KEYS = {"low", "high", "step", "log", "type"}
CONFIG_FIELDS = {f.name: f for f in fields(PruneConfig)}


@dataclass(frozen=True)
class Param:
    """One searched parameter: a numeric range, or choices."""

    name: str
    kind: str                          # "int", "float" or "choice"
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()

    def grid(self) -> tuple | None:
        """The values a grid search tries: the choices, or the range at its step (an int range
        steps by 1 unless told); None for a range with no grid (a float range without a step, a
        log range)."""
        if self.kind == "choice":
            return self.choices
        if self.log or (self.kind == "float" and self.step is None):
            return None
        step = self.step or 1
        count = int((self.high - self.low) / step + 1e-9) + 1
        values = [self.low + k * step for k in range(count)]
        return tuple(int(v) for v in values) if self.kind == "int" else tuple(round(v, 12) for v in values)


@dataclass(frozen=True)
class Objective:
    metric: str                        # a METRICS entry, minimised; or "accuracy", maximised at the size target
    accuracy: float = 0.0              # the accuracy a point must keep to count (not for "accuracy")

    @property
    def size(self) -> str:
        """What trials report their progress against: the metric, or MACs for "accuracy"."""
        return "macs" if self.metric == "accuracy" else self.metric

    def value(self, params: int, macs: int, base_params: int, base_macs: int) -> float:
        """The size of one model: a fraction of the base model's params or MACs, or its
        efficiency score (32-bit weights and activations)."""
        if self.size == "macs":
            return macs / base_macs
        if self.size == "params":
            return params / base_params
        return efficiency_score(ScoreInputs(w=params, f=macs)).total

    def best_point(self, curve: Curve, final_accuracy: float | None = None,
                   target_met: bool = True) -> tuple[int, float, float, bool]:
        """(step, value, accuracy, reached) of the run's best model that keeps the accuracy: the
        last step when the run's final accuracy (after any final tuning) keeps it, else the last
        step before accuracy first fell under it. ``reached`` is False when the base model is
        already under it (step, value and accuracy are then the base model's).
        For "accuracy", the final model's error (1 − accuracy, minimised), or 1 when the run
        stopped short of its size target (``target_met`` False)."""
        last = len(curve.accuracy) - 1
        if self.metric == "accuracy":
            accuracy = curve.accuracy[last] if final_accuracy is None else final_accuracy
            return last, (1.0 - accuracy) if target_met else 1.0, accuracy, target_met
        if final_accuracy is not None and final_accuracy >= self.accuracy:
            return last, self.at(curve, last), final_accuracy, True
        i = curve.last_step_above(self.accuracy)
        if i is None:
            return 0, self.at(curve, 0), curve.accuracy[0], False
        return i, self.at(curve, i), curve.accuracy[i], True

    def at(self, curve: Curve, i: int) -> float:
        return self.value(curve.params[i], curve.macs[i], curve.params[0], curve.macs[0])

    def describe(self, value: float) -> str:
        """The value in words: "MACs x3.10 fewer (0.3226 of the base)"."""
        if self.metric == "accuracy":
            return f"accuracy {1 - value:.2%} at the size target" if value < 1 else "size target not reached"
        if self.metric == "score":
            return f"efficiency score {value:.4f}"
        name = "MACs" if self.metric == "macs" else "params"
        return f"{name} x{1 / value:.2f} fewer ({value:.4f} of the base)" if value > 0 else f"{name} 0"


@dataclass
class TuneSpec:
    path: Path
    name: str
    title: str
    checkpoint: str
    trials: int
    sampler: str
    pruner: str
    seed: int
    startup_trials: int
    objective: Objective
    settings: dict[str, Any]
    params: list[Param]
    resources: Resources = field(default_factory=Resources)

    @property
    def grid(self) -> dict[str, list]:
        """Every searched parameter's grid values (a grid sampler's search space)."""
        return {p.name: list(p.grid() or ()) for p in self.params}

    @property
    def grid_size(self) -> int | None:
        """Points of the grid (None: not a grid search)."""
        return prod(len(v) for v in self.grid.values()) if self.sampler == "grid" else None

    def trials_wanted(self, requested: int | None = None) -> int:
        """Finished trials to aim for: ``requested`` or the file's; for a grid, at most its size
        (a grid point is worth one trial; Optuna would re-run one to fill the count)."""
        trials = requested or self.trials
        return min(trials, self.grid_size) if self.grid_size else trials

    def trials_text(self, requested: int | None = None) -> str:
        """"2 trials", or "1 trial of a grid of 2" when the count leaves grid points untried."""
        n = self.trials_wanted(requested)
        grid = f" of a grid of {self.grid_size}" if self.grid_size and n < self.grid_size else ""
        return f"{n} trial{'s' if n != 1 else ''}{grid}"

    def config(self, values: dict[str, Any]) -> PruneConfig:
        """The run configuration of one trial (searched values over the shared settings)."""
        merged = {**self.settings, **values}
        if "ignore" in merged:
            merged["ignore"] = tuple(merged["ignore"])
        return PruneConfig(**merged)

    def fingerprint(self) -> str:
        """What decides the search (not its length): a study resumes only under the same one."""
        return json.dumps({"objective": [self.objective.metric, self.objective.accuracy],
                           "settings": self.settings, "params": [p.__dict__ for p in self.params],
                           "checkpoint": self.checkpoint, "sampler": self.sampler, "pruner": self.pruner},
                          sort_keys=True, default=list)


def _err(path: Path, message: str) -> FmpruneError:
    return FmpruneError(f"tune file {path}: {message}")


def _table(path: Path, doc: dict, name: str, known: set[str] | None) -> dict:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise _err(path, f"'{name}' must be a table")
    for key in table:
        if known is not None and key not in known:
            raise _err(path, f"unknown key '{name}.{key}' (known: {', '.join(sorted(known))})")
    return table


def _number(path: Path, where: str, value: Any, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise _err(path, f"'{where}' = {value!r} should be {'an integer' if kind is int else 'a number'}")
    return kind(value)


def _param(path: Path, name: str, table: Any) -> Param:
    where = f"params.{name}"
    if name not in CONFIG_FIELDS:
        raise _err(path, f"unknown parameter '{where}' (PruneConfig fields: {', '.join(CONFIG_FIELDS)})")
    if isinstance(table, dict) and "choices" in table:
        if set(table) != {"choices"}:
            raise _err(path, f"'{where}' has choices and other keys; give choices alone")
        choices = table["choices"]
        if not isinstance(choices, list) or not choices or any(isinstance(c, (list, dict)) for c in choices):
            raise _err(path, f"'{where}.choices' must be a non-empty list of values")
        return Param(name, "choice", choices=tuple(choices))
    if not isinstance(table, dict) or not {"low", "high"} <= set(table):
        raise _err(path, f"'{where}' must be a table with low and high, or with choices")
    for key in table:
        if key not in RANGE_KEYS:
            raise _err(path, f"unknown key '{where}.{key}' (known: choices, {', '.join(sorted(RANGE_KEYS))})")
    field_type = str(CONFIG_FIELDS[name].type)
    default_kind = "int" if "int" in field_type and "float" not in field_type else "float"
    if "float" not in field_type and "int" not in field_type:
        raise _err(path, f"'{where}' is not numeric ({field_type}): give choices = [...]")
    kind = table.get("type", default_kind)
    if kind not in ("int", "float") or (kind == "float" and default_kind == "int"):
        raise _err(path, f"'{where}.type' = {kind!r} should be " + ("'int'" if default_kind == "int" else "'int' or 'float'"))
    cast = int if kind == "int" else float
    low, high = (_number(path, f"{where}.{k}", table[k], cast) for k in ("low", "high"))
    step = _number(path, f"{where}.step", table["step"], cast) if "step" in table else None
    log = table.get("log", False)
    if not isinstance(log, bool):
        raise _err(path, f"'{where}.log' = {log!r} should be true or false")
    for bound, value in (("low", low), ("high", high)):
        try:   # a searched value obeys the rule the option and the [settings] key obey
            check_number(name, value)
        except FmpruneError as e:
            raise _err(path, f"'{where}.{bound}': {e}") from None
    if not low < high:
        raise _err(path, f"'{where}': low {low} must be under high {high}")
    if log and low <= 0:
        raise _err(path, f"'{where}': a log range needs low > 0 (got {low})")
    if log and step is not None:
        raise _err(path, f"'{where}': give step or log, not both")
    if step is not None and step <= 0:
        raise _err(path, f"'{where}.step' must be positive (got {step})")
    return Param(name, kind, low, high, step, log)


def load_tune_file(path: Path | str) -> TuneSpec:
    """Read and check a tune file; a wrong key or value is named in a one-line error."""
    path = Path(path)
    doc = read_toml(path, "tune")
    for key in doc:
        if key not in SECTIONS:
            raise _err(path, f"unknown section '{key}' (known: {', '.join(sorted(SECTIONS))})")
    study = _table(path, doc, "study", STUDY_KEYS)
    name = str(study.get("name", "")).strip()
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise _err(path, "'study.name' is required: letters, digits, '-', '_' and '.'")
    trials = _number(path, "study.trials", study.get("trials", 20), int)
    startup = _number(path, "study.startup_trials", study.get("startup_trials", 5), int)
    seed = _number(path, "study.seed", study.get("seed", 0), int)
    if trials < 1 or startup < 0:
        raise _err(path, "'study.trials' must be >= 1 and 'study.startup_trials' >= 0")
    for key, allowed in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if study.get(key, allowed[0]) not in allowed:
            raise _err(path, f"'study.{key}' = {study[key]!r} is not one of {', '.join(allowed)}")

    objective_table = _table(path, doc, "objective", {"minimize", "accuracy", "maximize"})
    settings = dict(_table(path, doc, "settings", set(CONFIG_FIELDS)))
    if "maximize" in objective_table:
        objective = _accuracy_objective(path, objective_table, settings)
    else:
        if objective_table.get("minimize") not in METRICS:
            raise _err(path, f"'objective.minimize' must be one of {', '.join(METRICS)} (or maximize = \"accuracy\")")
        accuracy = _number(path, "objective.accuracy", objective_table.get("accuracy", 0.0))
        if not 0 < accuracy <= 1:
            raise _err(path, "'objective.accuracy' must be a fraction in (0, 1], e.g. 0.98")
        objective = Objective(objective_table["minimize"], accuracy)

    params_table = _table(path, doc, "params", None)
    if not params_table:
        raise _err(path, "'params' names no parameter to search")
    params = [_param(path, name, table) for name, table in params_table.items()]
    both = sorted(set(settings) & set(params_table))
    if both:
        raise _err(path, f"'{both[0]}' is both in settings and in params; keep one")
    if objective.metric != "accuracy" and "min_accuracy" not in settings and "min_accuracy" not in params_table:
        settings["min_accuracy"] = objective.accuracy
    spec = TuneSpec(path, name, str(study.get("title", name)), str(study.get("checkpoint", "default")), trials,
                    study.get("sampler", SAMPLERS[0]), study.get("pruner", PRUNERS[0]), seed, startup, objective,
                    settings, params, parse_resources(doc.get("resources", {}), f"tune file {path}"))
    if spec.sampler == "grid":
        for p in params:
            if p.grid() is None:
                raise _err(path, f"'params.{p.name}': sampler = \"grid\" needs choices, an int range or a "
                                 "float range with a step (not a log range)")
    _check_corners(spec)
    return spec


def given_targets(settings: dict) -> dict[str, float]:
    """The size targets ``settings`` sets (of SIZE_TARGETS), in that order."""
    return {t: settings[t] for t in SIZE_TARGETS if settings.get(t) is not None}


def _accuracy_objective(path: Path, table: dict, settings: dict) -> Objective:
    """``maximize = "accuracy"``: alone in [objective], with a size target in [settings] (the
    accuracy of a run that prunes to the end says nothing about a budget)."""
    if table["maximize"] != "accuracy":
        raise _err(path, f"'objective.maximize' = {table['maximize']!r}: only \"accuracy\" is maximised")
    if set(table) != {"maximize"}:
        raise _err(path, "'objective.maximize' goes alone: the size is fixed by a target in [settings], "
                         "not minimised at an accuracy")
    if not given_targets(settings):
        raise _err(path, "maximize = \"accuracy\" needs a size target in [settings]: "
                         + ", ".join(SIZE_TARGETS) + " (e.g. target_macs = 0.33)")
    return Objective("accuracy")


def _check_corners(spec: TuneSpec) -> None:
    """Build the configurations at the ranges' ends: a range PruneConfig refuses fails now."""
    for end in ("low", "high"):
        values = {p.name: (p.choices[0] if end == "low" else p.choices[-1]) if p.kind == "choice"
                  else getattr(p, end) for p in spec.params}
        try:
            spec.config(values)
        except (FmpruneError, TypeError) as e:
            raise _err(spec.path, f"the {end} ends of the ranges {values} make no run: {e}") from None
