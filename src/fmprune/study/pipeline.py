"""Follow-up steps of a sweep's runs: the lab recipe's "then sparsify, quantise and score every result".

An experiment file lists them as ``[[then]]`` tables; each runs on a finished run's model (or on
an earlier step's output, ``input = "NAME"``) and leaves a ``score.json`` for ``fmprune report``:

    [[then]]
    kind = "score"                 # the run's own model, in float: <run>/score.json

    [[then]]
    kind = "sparsify"              # SparsifyConfig fields: <run>/<name>/ (model.pt, score.json)
    name = "sparse50"
    method = "magnitude"
    amount = 0.5

    [[then]]
    kind = "quantize"              # QuantizeConfig fields: <run>/<name>/ (quantize.json, score.json)
    input = "sparse50"
    weight_bits = 8
    activation_bits = 8

The same steps run on the base checkpoint too (``<experiment>/base/``), so the unpruned model
has its points in the plot (``then_base = false`` in ``[experiment]`` leaves them out). A step whose ``score.json`` exists is done: a rerun does what is left.
Every point is labelled ``<run> <step>`` and its method names the whole chain
(e.g. ``taylor-l2 + magnitude 50% + int8 ptq``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..data import Splits
from ..efficiency import SCORE_FILE, ScoreRecord, method_of, read_score_record, save_checkpoint_score, \
    score_checkpoint, write_score_record
from ..errors import FmpruneError
from ..quantize.measure import QuantizeConfig, quantize_checkpoint
from ..run.checkpoint import load_checkpoint
from ..unstructured.sparsify_config import SparsifyConfig
from ..unstructured.run import run_sparsify

FOLLOW_UP_KINDS: dict[str, type | None] = {"score": None, "quantize": QuantizeConfig, "sparsify": SparsifyConfig}
STEP_KEYS = {"kind", "name", "input"}
BASE_LABEL = "base"   # the pseudo-run that applies the steps to the base checkpoint
QUICK_QUANTIZE = {"calibration": 100, "repeats": 3, "onnx": False}
QUICK_SPARSIFY = {"eval_size": 300}
QUICK_RETRAIN_DIVISOR = 25


@dataclass(frozen=True)
class FollowUp:
    kind: str
    name: str
    input: str = ""                 # "" : the run's model; else an earlier sparsify step's name
    settings: dict = field(default_factory=dict)   # the step's config fields (quantize, sparsify)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FollowUp":
        return cls(**d)

    def config(self):
        cls = FOLLOW_UP_KINDS[self.kind]
        return None if cls is None else cls(**self.settings)


def _default_name(kind: str, config: Any) -> str:
    if kind == "quantize":
        return f"{config.kind.replace(' ', '-')}-{config.mode}"
    if kind == "sparsify":
        return f"{config.method}-{config.scope}-{config.amount:g}"
    return "score"


def _quicken(kind: str, settings: dict) -> dict:
    out = dict(settings)
    if out.get("retrain"):
        out["retrain"] = max(1, round(out["retrain"] / QUICK_RETRAIN_DIVISOR))
    return {**out, **(QUICK_QUANTIZE if kind == "quantize" else QUICK_SPARSIFY if kind == "sparsify" else {})}


def parse_follow_ups(path: Path, tables: Any, quick: bool = False) -> list[FollowUp]:
    """The ``[[then]]`` tables of an experiment file, checked: kinds, keys, values, names, inputs."""
    def err(message: str) -> FmpruneError:
        return FmpruneError(f"experiment file {path}: {message}")

    if not isinstance(tables, list):
        raise err("'then' must be an array of tables ([[then]])")
    steps: list[FollowUp] = []
    for i, table in enumerate(tables):
        where = f"then[{i}]"
        if not isinstance(table, dict):
            raise err(f"'{where}' must be a table")
        kind = table.get("kind")
        if kind not in FOLLOW_UP_KINDS:
            raise err(f"'{where}.kind' = {kind!r} is not one of {', '.join(FOLLOW_UP_KINDS)}")
        cls = FOLLOW_UP_KINDS[kind]
        known = STEP_KEYS | ({f.name for f in fields(cls)} if cls is not None else set())
        for key in table:
            if key not in known:
                raise err(f"unknown key '{where}.{key}' (known: {', '.join(sorted(known))})")
        settings = {k: v for k, v in table.items() if k not in STEP_KEYS}
        if quick:
            settings = _quicken(kind, settings)
        try:
            config = cls(**settings) if cls is not None else None
            if kind == "quantize":
                config.check()
        except (FmpruneError, TypeError) as e:
            raise err(f"'{where}': {e}") from None
        name = str(table.get("name") or _default_name(kind, config))
        if not all(c.isalnum() or c in "-_." for c in name) or name in (n.name for n in steps):
            raise err(f"'{where}.name' = {name!r} must be unique and hold only letters, digits, '-', '_' and '.'")
        source = str(table.get("input", ""))
        earlier = {s.name: s for s in steps}
        if source and (source not in earlier or earlier[source].kind != "sparsify"):
            raise err(f"'{where}.input' = {source!r} must name an earlier sparsify step (steps so far: "
                      f"{', '.join(earlier) or 'none'})")
        if kind == "score" and source:
            raise err(f"'{where}': a score step scores the run's model; sparsify steps score their own")
        steps.append(FollowUp(kind, name, source, settings))
    return steps


def step_dir(run_dir: Path, step: FollowUp) -> Path:
    return run_dir if step.kind == "score" else run_dir / step.name


def pending(run_dir: Path, steps: list[FollowUp]) -> list[FollowUp]:
    """The steps whose score record is not written yet."""
    return [s for s in steps if not (step_dir(run_dir, s) / SCORE_FILE).is_file()]


def _relabel(path: Path, label: str, method: str) -> ScoreRecord:
    record = replace(read_score_record(path), label=label, method=method)
    write_score_record(path, record)
    return record


def run_follow_ups(run_dir: Path | str, model: Path | str, label: str, steps: list[FollowUp | dict],
                   splits: Splits, device: str = "cpu") -> str:
    """Run the steps not done yet on ``model`` (the run's checkpoint); one line saying what they scored."""
    run_dir, model = Path(run_dir), Path(model)
    steps = [s if isinstance(s, FollowUp) else FollowUp.from_dict(s) for s in steps]
    base = load_checkpoint(model)
    method = method_of(base) if label != BASE_LABEL else "base"
    outputs = {"": (model, method)}   # step name -> (checkpoint, method of that model)
    done = []
    for step in steps:
        source, source_method = outputs[step.input]
        where = step_dir(run_dir, step)
        if (where / SCORE_FILE).is_file():
            record = read_score_record(where / SCORE_FILE)
        elif step.kind == "score":
            save_checkpoint_score(run_dir, model, base, score_checkpoint(base), label)
            record = _relabel(run_dir / SCORE_FILE, label, source_method)
        elif step.kind == "sparsify":
            config = step.config()
            if not (where / "summary.json").is_file():   # else only its score was missing
                run_sparsify(source, splits, config, where, device)
            ckpt = load_checkpoint(where / "model.pt")
            save_checkpoint_score(where, where / "model.pt", ckpt, score_checkpoint(ckpt))
            record = _relabel(where / SCORE_FILE, f"{label} {step.name}",
                              f"{source_method} + {config.method} {config.amount:.0%}")
        else:
            config = step.config()
            quantize_checkpoint(source, splits, config, where)
            record = _relabel(where / SCORE_FILE, f"{label} {step.name}",
                              f"{source_method} + {config.kind} {config.mode}")
        if step.kind == "sparsify":
            outputs[step.name] = (where / "model.pt", record.method)
        done.append(f"{step.name} {record.score:.4g}")
    return "scores " + ", ".join(done) if done else "no follow-up steps"


def base_run(checkpoint: str, splits: Splits, config: dict, run_dir: str, device: str) -> str:
    """The sweep runner of the base pseudo-run: nothing to prune, only the follow-up steps."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return f"base checkpoint {checkpoint}"
