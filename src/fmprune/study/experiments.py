"""Experiment files: one small TOML file describes a sweep of pruning runs.

    [experiment]
    name = "whole-network-no-retrain"          # directory name of the sweep's runs
    title = "Whole network, no retraining"     # heading in reports
    checkpoint = "default"                     # or a path; "default" is the cached base LeNet

    [settings]                                 # shared PruneConfig fields
    scope = "all"

    [axes]                                     # lists; every combination is one run
    criterion = ["random", "min_weight", "mean_activation", "taylor"]
    normalize = ["none", "l2"]

    [[runs]]                                   # optional explicit variants, each combined with the axes
    retrain = 0

    [quick]                                    # optional overrides for --quick (CI-sized runs)
    steps = 5

    [resources]                                # optional, read by `sweep --ray`: per-run cpus, gpus
    cpus = 1

``experiment.kind = "sparsify"`` makes every run a weight/unit pruning run (SparsifyConfig
fields instead of PruneConfig's), ``"oneshot"`` a one-shot baseline run (OneShotConfig).
``[[then]]`` tables add follow-up steps on every finished run and on the base checkpoint
(sparsify, quantise, score: ``study/pipeline.py``); ``checkpoint = "train:MODEL"`` trains the
base model first if it is not cached, with the ``[train]`` table's recipe options. Every key is checked; a wrong one is named in a one-line error.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import FmpruneError
from ..run.loop import PruneConfig
from .methods import METHODS
from .resources import Resources, parse_resources
from ..training import SGDConfig, TrainConfig
from ..validate import check_number
from .pipeline import FollowUp, parse_follow_ups

SECTIONS = {"experiment", "settings", "axes", "runs", "quick", "resources", "then", "train"}
EXPERIMENT_KEYS = {"name", "title", "description", "checkpoint", "kind", "then_base"}
CONFIG_FIELDS = {f.name: f for f in fields(PruneConfig)}
TRAIN_KEYS = {f.name for c in (TrainConfig, SGDConfig) for f in fields(c) if f.init} | {"model_arg"}   # [train]
QUICK_DEFAULTS = {"steps": 6, "calibration": 100, "eval_size": 300, "save_every": 2}
QUICK_RETRAIN_DIVISOR = 25   # retraining 10/50/100 becomes 1/2/4 iterations: still distinct
LABEL_SEPARATOR = "+"   # between settings in a run's name; "_" occurs inside criterion names
# short names for run directories and legends
SHORT = {"criterion": "", "normalize": "", "flops_lambda": "lambda", "scope": "", "retrain": "retrain",
         "retrain_only_pruned_layer": "layer-only", "rank_once": "rank-once", "maps_per_step": "k",
         "seed": "seed", "method": "", "amount": "k", "rounds": "rounds", "optimizer": "",
         "target_macs": "macs", "target_params": "params", "ratio": "ratio", "threshold": "under",
         "target_latency": "latency", "latency_lambda": "lat-lambda", "round_to": "round", "latency_runtime": "",
         "latency_batch": "batch"}


@dataclass
class Experiment:
    path: Path
    name: str
    title: str
    description: str
    checkpoint: str
    runs: list[tuple[str, PruneConfig]] = field(default_factory=list)   # (label, config)
    varying: list[str] = field(default_factory=list)
    kind: str = "prune"                                                  # a run method (study.methods)
    quick: bool = False   # shrunk by --quick: checks that every run works, gives no results
    resources: Resources = field(default_factory=Resources)   # what each run asks of a Ray node
    then: list[FollowUp] = field(default_factory=list)        # follow-up steps on every finished run
    train: dict = field(default_factory=dict)                 # recipe options for checkpoint = "train:MODEL"
    then_base: bool = True                                    # the [[then]] steps also on the base checkpoint

    @property
    def quick_warning(self) -> str:
        """What every output of a quick sweep says first ("" for a full-size one)."""
        return quick_mode_warning([getattr(c, "steps", None) for _, c in self.runs]) if self.quick else ""


def quick_mode_warning(steps: list[int | None]) -> str:
    """"quick mode: 6 steps, not the full experiment": quick runs must never read like results."""
    counts = sorted({s for s in steps if s is not None})
    return f"quick mode: {'/'.join(map(str, counts)) or 'few'} steps, not the full experiment"


def _err(path: Path, message: str) -> FmpruneError:
    return FmpruneError(f"experiment file {path}: {message}")


def _check_keys(path: Path, where: str, table: Any, known: set[str]) -> dict:
    if not isinstance(table, dict):
        raise _err(path, f"'{where}' must be a table")
    for key in table:
        if key not in known:
            raise _err(path, f"unknown key '{where}.{key}' (known: {', '.join(sorted(known))})")
    return table


def _check_value(path: Path, where: str, key: str, value: Any, known: dict = CONFIG_FIELDS) -> None:
    expected = known[key].type
    kinds = {"str": str, "int": int, "float": (int, float), "bool": bool}
    allowed = tuple(t for name, t in kinds.items() if name in str(expected))
    flat = tuple(x for t in allowed for x in (t if isinstance(t, tuple) else (t,)))
    if value is None or isinstance(value, bool) and bool not in flat or not isinstance(value, flat):
        raise _err(path, f"'{where}.{key}' = {value!r} should be {expected}")


def read_toml(path: Path, kind: str) -> dict:
    """The parsed TOML of an experiment or tune file (``kind``); missing or invalid: one line."""
    if not path.is_file():
        raise FmpruneError(f"{path}: missing {kind} file")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FmpruneError(f"{kind} file {path}: not valid TOML ({e})") from None


def load_experiment(path: Path | str, quick: bool = False) -> Experiment:
    path = Path(path)
    doc = read_toml(path, "experiment")
    _check_keys(path, "top level", doc, SECTIONS)
    meta = _check_keys(path, "experiment", doc.get("experiment", {}), EXPERIMENT_KEYS)
    if "name" not in meta or not str(meta["name"]).strip():
        raise _err(path, "'experiment.name' is required")
    name = str(meta["name"])
    if not all(c.isalnum() or c in "-_." for c in name):
        raise _err(path, f"'experiment.name' = {name!r} may hold only letters, digits, '-', '_' and '.'")
    kind = str(meta.get("kind", "prune"))
    if kind not in METHODS:
        raise _err(path, f"'experiment.kind' = {kind!r} is not one of {', '.join(METHODS)}")
    config_class = METHODS[kind].config
    known = {f.name: f for f in fields(config_class)}
    settings = _check_keys(path, "settings", doc.get("settings", {}), set(known))
    axes = _check_keys(path, "axes", doc.get("axes", {}), set(known))
    quick_table = _check_keys(path, "quick", doc.get("quick", {}), set(known))
    resources = parse_resources(doc.get("resources", {}), f"experiment file {path}")
    then = parse_follow_ups(path, doc.get("then", []), quick)
    train = _check_keys(path, "train", doc.get("train", {}), TRAIN_KEYS)
    for key, value in train.items():   # checked now, not when the base model's training starts
        try:
            check_number(key, value)
        except FmpruneError as e:
            raise _err(path, f"'train.{key}': {e}") from None
    variants = doc.get("runs", [{}])
    if not isinstance(variants, list) or not variants:
        raise _err(path, "'runs' must be a non-empty array of tables ([[runs]])")
    for i, v in enumerate(variants):
        _check_keys(path, f"runs[{i}]", v, set(known))
    for where, table in [("settings", settings), ("quick", quick_table)] + \
                        [(f"runs[{i}]", v) for i, v in enumerate(variants)]:
        for key, value in table.items():
            _check_value(path, where, key, value, known)
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise _err(path, f"'axes.{key}' must be a non-empty list")
        for value in values:
            _check_value(path, "axes", key, value, known)

    varying = [k for k in known if len(axes.get(k, [])) > 1
               or len({repr(v.get(k)) for v in variants}) > 1]
    runs: list[tuple[str, PruneConfig]] = []
    for combo in itertools.product(*axes.values()):
        for variant in variants:
            values = {**settings, **dict(zip(axes, combo)), **variant}
            config = _config(path, values, config_class)
            label = run_label(config, varying)        # quick runs keep the full runs' names
            quick_values = _quicken(values, quick_table, set(known))
            runs.append((label, _config(path, quick_values, config_class) if quick else config))
    labels = [label for label, _ in runs]
    if len(set(labels)) != len(labels):
        raise _err(path, "two runs have the same settings")
    if quick:
        name += "-quick"   # never mixed with, or mistaken for, the full-size runs
    return Experiment(path, name, str(meta.get("title", name)), str(meta.get("description", "")),
                      str(meta.get("checkpoint", "default")), runs, varying, kind, quick=quick,
                      resources=resources, then=then, train=train, then_base=bool(meta.get("then_base", True)))


def _config(path: Path, values: dict, config_class: type = PruneConfig) -> PruneConfig:
    try:
        return config_class(**values)
    except (FmpruneError, TypeError) as e:
        raise _err(path, f"run {values}: {e}") from None


def _quicken(values: dict, overrides: dict, known: set[str] = set(CONFIG_FIELDS)) -> dict:
    """CI-sized version of a run: few steps, small evaluation and calibration sets."""
    out = {**values, **{k: v for k, v in QUICK_DEFAULTS.items() if k in known}}
    if out.get("retrain"):
        out["retrain"] = max(1, round(out["retrain"] / QUICK_RETRAIN_DIVISOR))
    if "steps" in known:   # a step-limited run stops early anyway; a one-shot run's target is its size
        for key in ("min_accuracy", "target_params", "target_macs", "target_latency"):
            out.pop(key, None)
    return {**out, **overrides}


def run_label(config: PruneConfig, varying: list[str]) -> str:
    """A readable, filesystem-safe name from the settings that differ between runs."""
    parts = []
    for key in varying or [next(iter(vars(config)))]:   # one run: named by its first setting
        value = getattr(config, key)
        prefix = SHORT.get(key, key)
        if isinstance(value, bool):
            parts.append(prefix if value else f"no-{prefix}")
        else:
            parts.append(f"{prefix}{value}" if prefix else str(value))
    return LABEL_SEPARATOR.join(parts).replace("/", "-")
