"""Recipe search with Optuna: every trial is a normal pruning run directory, the study lives in a
storage (SQLite by default) so a killed search resumes, and Optuna's pruner stops trials whose
per-step accuracy falls behind the others'.

Trials report accuracy against how far they have pruned: at every whole percent of the
objective's reduction (MACs, params or score) a run passes, its current error (1 - accuracy),
so trials with different step sizes compare at the same size. A pruned trial's directory is
left as a killed run's (resumable records) with ``pruned.json`` saying where and why it stopped.

A killed search leaves its running trials "running" in the storage: the next ``fmprune tune``
fails those whose process is gone from this host and gives their parameters and run directory to
a new trial, which resumes the run from its saved state.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import socket
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from ..data import DataRequest
from ..errors import FmpruneError, first_line
from ..run.loop import TARGET_REACHED, StepRecord, run_pruning
from ..run.lock import locked
from ..run.rundir import read_json, write_json_atomic
from .orphans import die_with_parent
from .ray_runner import ray_session, shared_data, shared_path
from .report import TunedTrial, read_curve, write_tune_report
from .tune_spec import Param, TuneSpec, given_targets

TUNE_INSTALL = "pip install 'fmprune[tune]'"
FINISHED = ("COMPLETE", "PRUNED")     # trial states that count towards the trials asked for
TRIALS_DIR = "trials"


def require_optuna() -> Any:
    """The ``optuna`` module, or a one-line error saying what to install."""
    try:
        import optuna
    except ImportError:
        raise FmpruneError(f"fmprune tune needs Optuna, which is not installed: {TUNE_INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_storage(out_dir: Path, spec: TuneSpec) -> str:
    return f"sqlite:///{(out_dir / spec.name / 'study.db').resolve()}"


def absolute_storage(url: str) -> str:
    """``sqlite:///relative.db`` made absolute: worker processes and Ray nodes resolve it alike."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url[len(prefix):] != ":memory:":
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


def make_sampler(spec: TuneSpec, offset: int = 0) -> Any:
    """The file's sampler seeded with ``seed + offset``: parallel workers and resumed searches
    get their own streams instead of drawing the same points again. A grid keeps ``seed``: its
    order must be the same everywhere, since a trial's number picks its point in it."""
    optuna = require_optuna()
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed + offset)
    if spec.sampler == "grid":   # one order in every process: trial k takes the order's point k
        return optuna.samplers.GridSampler(spec.grid, seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed + offset, n_startup_trials=spec.startup_trials)


def make_pruner(spec: TuneSpec) -> Any:
    optuna = require_optuna()
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=5, max_resource=100)
    return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=5)


def suggest(trial: Any, param: Param) -> Any:
    if param.kind == "choice":
        return trial.suggest_categorical(param.name, list(param.choices))
    if param.kind == "int":
        return trial.suggest_int(param.name, int(param.low), int(param.high), step=int(param.step or 1),
                                 log=param.log)
    return trial.suggest_float(param.name, param.low, param.high, step=param.step, log=param.log)


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_gone(who: str) -> bool:
    """The process ``host:pid`` is known to be dead (only this host's processes can be checked)."""
    host, _, pid = who.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def close_run_log(run_dir: Path) -> None:
    """Close the handlers still writing a run's ``run.log`` after the run was stopped by an
    exception (the loop closes them only when it finishes): no descriptor is left per pruned trial."""
    target = str((run_dir / "run.log").resolve())
    for logger in list(logging.Logger.manager.loggerDict.values()):
        for handler in list(getattr(logger, "handlers", [])):
            if isinstance(handler, logging.FileHandler) and handler.baseFilename == target:
                handler.close()
                logger.removeHandler(handler)


class StepReporter:
    """The run's ``on_step`` hook: reports error against the whole percents of reduction passed
    and raises ``TrialPruned`` when the study's pruner says so."""

    def __init__(self, trial: Any, spec: TuneSpec, run_dir: Path) -> None:
        self.trial, self.spec, self.run_dir = trial, spec, run_dir
        self.base: tuple[int, int] | None = None
        self.reported = -1
        self.stopped: dict | None = None

    def __call__(self, record: StepRecord, total: int) -> None:
        if record.step == 0:    # the base model: the same for every trial, nothing to judge
            return
        if self.base is None:   # step 0 of steps.csv is the base model (also after a resume)
            curve = read_curve(self.run_dir)
            self.base = (curve.params[0], curve.macs[0])
            self.base_value = self.spec.objective.value(*self.base, *self.base)
        value = self.spec.objective.value(record.params, record.macs, *self.base)
        percent = int(100 * (1 - value / self.base_value))
        for p in range(self.reported + 1, percent + 1):
            self.trial.report(1.0 - record.accuracy, p)
        self.reported = max(self.reported, percent)
        if percent >= 0 and self.trial.should_prune():
            self.stopped = {"step": record.step, "reduction_percent": percent, "accuracy": record.accuracy,
                            "reason": f"Optuna's {self.spec.pruner} pruner: accuracy {record.accuracy:.4f} at "
                                      f"{percent} % less {self.spec.objective.size} fell behind other trials"}
            raise require_optuna().TrialPruned(self.stopped["reason"])


@dataclass
class TrialContext:
    """What every trial of a search needs, in plain values a worker process or Ray node receives."""

    spec: TuneSpec
    checkpoint: str
    out_dir: str          # <out>/<study name>
    data: DataRequest | str | None   # a --data-dir value is read with the defaults
    device: str = "cpu"
    announce: bool = False           # print a line as each trial starts (a trial runs for minutes)


_splits_cache: dict[DataRequest, Any] = {}


def _splits(data: DataRequest | str | None) -> Any:
    request = DataRequest.of(data)
    if request not in _splits_cache:
        _splits_cache[request] = request.load()
    return _splits_cache[request]


def run_trial(trial: Any, ctx: TrialContext) -> float:
    """The Optuna objective: one pruning run with the trial's parameters; its value is the
    objective at the run's best point that keeps the accuracy."""
    optuna = require_optuna()
    spec = ctx.spec
    values = {p.name: suggest(trial, p) for p in spec.params}
    try:
        config = spec.config(values)
    except FmpruneError as e:
        trial.set_user_attr("error", str(e))
        raise
    run_dir = Path(trial.user_attrs.get("resume_dir") or Path(ctx.out_dir) / TRIALS_DIR / f"trial-{trial.number:04d}")
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("owner", owner())
    if ctx.announce:
        print(f"trial {trial.number} started: {params_text(trial)}; run: {run_dir}", flush=True)
    reporter = StepReporter(trial, spec, run_dir)
    try:
        if (run_dir / "summary.json").is_file():   # finished before the search was killed
            summary = read_json(run_dir / "summary.json")
        else:
            summary = run_pruning(ctx.checkpoint, _splits(ctx.data), config, run_dir, on_step=reporter,
                                  device=ctx.device).to_dict()
    except optuna.TrialPruned:
        close_run_log(run_dir)
        write_json_atomic(run_dir / "pruned.json", {"trial": trial.number, **(reporter.stopped or {})})
        trial.set_user_attr("stopped", (reporter.stopped or {}).get("reason", "pruned"))
        raise
    except FmpruneError as e:   # this trial's combination makes no run: the search goes on
        close_run_log(run_dir)
        trial.set_user_attr("error", str(e))
        raise
    except KeyboardInterrupt:
        close_run_log(run_dir)
        trial.set_user_attr("interrupted", True)   # resumed by the next search, like a killed one
        raise
    curve = read_curve(run_dir)
    step, value, accuracy, reached = spec.objective.best_point(curve, summary["final_accuracy"],
                                                               summary["stop_reason"] == TARGET_REACHED)
    for key, v in {"best_step": step, "accuracy": accuracy, "reached": reached,
                   "params_x": curve.params[0] / curve.params[step], "macs_x": curve.macs[0] / curve.macs[step]}.items():
        trial.set_user_attr(key, v)
    return value


def open_study(spec: TuneSpec, storage: str, create: bool = True) -> Any:
    """The study named in the file, created or resumed; a storage holding a study of that name
    from other settings is refused."""
    optuna = require_optuna()
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, load_if_exists=True, direction="minimize",
                                    sampler=make_sampler(spec), pruner=make_pruner(spec))
    except Exception as e:   # SQLAlchemy/driver errors: a bad URL or an unwritable file
        why = first_line(e)
        # a full disk or a read-only file is a write failure, named as every other writer names it
        verb = "write" if any(s in why for s in ("disk is full", "No space left", "readonly")) else "open"
        raise FmpruneError(f"cannot {verb} the study storage {storage}: {why}") from None
    known = study.user_attrs.get("fingerprint")
    if known is None:
        study.set_user_attr("fingerprint", spec.fingerprint())
        study.set_user_attr("file", str(spec.path))
    elif known != spec.fingerprint():
        raise FmpruneError(f"{storage} holds a study '{spec.name}' searched with other settings, parameters or "
                           "objective; rename the study or use another --storage")
    return study


def recover_killed_trials(study: Any, storage: str) -> list[int]:
    """Trials a killed search left running (their process is gone) or an interrupted one
    stopped are failed, and their parameters and run directory given to new trials that resume
    the runs. Returns the numbers of the trials recovered."""
    optuna = require_optuna()
    state = optuna.trial.TrialState
    backend = optuna.storages.get_storage(storage)
    study_id = backend.get_study_id_from_name(study.study_name)
    trials = study.get_trials(deepcopy=False)
    claimed = {t.user_attrs.get("resume_dir") for t in trials if t.state in (state.WAITING, state.RUNNING)}
    claimed |= {t.user_attrs.get("run_dir") for t in trials if t.state in (state.COMPLETE, state.PRUNED)}
    recovered = []
    for t in trials:
        killed = t.state == state.RUNNING and owner_gone(t.user_attrs.get("owner", ""))
        interrupted = t.state == state.FAIL and t.user_attrs.get("interrupted")
        if not (killed or interrupted):
            continue
        if killed:
            trial_id = backend.get_trial_id_from_study_id_trial_number(study_id, t.number)
            backend.set_trial_state_values(trial_id, state.FAIL)
        run_dir = t.user_attrs.get("run_dir")
        if run_dir and run_dir not in claimed:
            study.enqueue_trial(t.params, user_attrs={"resume_dir": run_dir})
            if "grid_id" in t.system_attrs:   # a grid's trial: the resumed one stands for the same point
                number = study.get_trials(deepcopy=False)[-1].number
                queued = backend.get_trial_id_from_study_id_trial_number(study_id, number)
                for key in ("grid_id", "search_space"):
                    backend.set_trial_system_attr(queued, key, t.system_attrs[key])
            claimed.add(run_dir)
            recovered.append(t.number)
    return recovered


def finished_trials(study: Any) -> int:
    return sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))


def grid_points(study: Any, states: tuple[str, ...]) -> int:
    """Distinct points of a grid tried by trials in ``states`` (a point re-run counts once)."""
    return len({tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False) if t.state.name in states
                and (t.state.name != "FAIL" or "error" in t.user_attrs)})


def trials_done(study: Any, spec: TuneSpec) -> int:
    """What counts towards the trials asked for: finished trials; for a grid, the points done,
    a point whose combination made no run included (it would fail again: it is not retried)."""
    return grid_points(study, FINISHED + ("FAIL",)) if spec.grid_size else finished_trials(study)


def optimize(ctx: TrialContext, storage: str, trials: int, offset: int = 0, threads: int | None = None,
             on_trial: Callable[[Any], None] | None = None) -> int:
    """Run trials in this process until the study has ``trials`` finished ones (or this process
    has run ``trials``, so that failing trials cannot loop forever). Returns the trials run."""
    optuna = require_optuna()
    if threads:
        torch.set_num_threads(threads)
    study = optuna.load_study(study_name=ctx.spec.name, storage=storage, sampler=make_sampler(ctx.spec, offset),
                              pruner=make_pruner(ctx.spec))
    if trials_done(study, ctx.spec) >= trials:
        return 0
    if on_trial is None and ctx.announce:   # a worker process: its trials' lines come from it
        on_trial = lambda trial: print(trial_text(trial, ctx.spec), flush=True)  # noqa: E731
    count = [0]

    def after(study: Any, trial: Any) -> None:
        count[0] += 1
        if on_trial:
            on_trial(trial)
        if trials_done(study, ctx.spec) >= trials:
            study.stop()

    study.optimize(lambda trial: run_trial(trial, ctx), n_trials=trials, catch=(FmpruneError,), callbacks=[after])
    return count[0]


def _optimize_in_worker(ctx: TrialContext, storage: str, trials: int, offset: int, threads: int) -> int:
    return optimize(ctx, storage, trials, offset, threads)


def run_tune(ctx: TrialContext, storage: str, trials: int | None = None, workers: int = 1,
             ray_address: str | None = None, on_trial: Callable[[Any], None] | None = None) -> Any:
    """Create or resume the study and run its trials: in this process (one worker), in
    ``workers`` local processes, or as ``workers`` Ray tasks (``ray_address``; each takes the
    file's ``[resources]``). Returns the study."""
    spec = ctx.spec
    storage = absolute_storage(storage)
    ctx = replace(ctx, checkpoint=shared_path(ctx.checkpoint), out_dir=shared_path(ctx.out_dir),
                  data=shared_data(ctx.data))
    trials = spec.trials_wanted(trials)
    with locked(Path(ctx.out_dir)):   # one search per output directory at a time
        return _run_tune(ctx, storage, trials, workers, ray_address, on_trial)


def _run_tune(ctx: TrialContext, storage: str, trials: int, workers: int, ray_address: str | None,
              on_trial: Callable[[Any], None] | None) -> Any:
    spec = ctx.spec
    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    Path(ctx.out_dir, TRIALS_DIR).mkdir(parents=True, exist_ok=True)
    study = open_study(spec, storage)
    recover_killed_trials(study, storage)
    write_json_atomic(Path(ctx.out_dir) / "tune.json", {
        "name": spec.name, "title": spec.title, "file": str(spec.path), "storage": storage,
        "checkpoint": ctx.checkpoint, "objective": objective_record(spec)})
    offset = len(study.trials)
    if ray_address is not None:
        with ray_session(ray_address, workers) as ray:
            remote = ray.remote(num_cpus=spec.resources.cpus, num_gpus=spec.resources.gpus)(_optimize_in_worker)
            ray.get([remote.remote(ctx, storage, trials, offset + i, spec.resources.threads) for i in range(workers)])
    elif workers > 1:
        context = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent,
                                    initargs=(os.getpid(),)) as pool:
            for future in [pool.submit(_optimize_in_worker, ctx, storage, trials, offset + i, 1)
                           for i in range(workers)]:
                future.result()
    else:
        optimize(ctx, storage, trials, offset, on_trial=on_trial)
    return require_optuna().load_study(study_name=spec.name, storage=storage)


def tuned_trials(study: Any) -> list[TunedTrial]:
    """The study's trials in the report's terms."""
    out = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        out.append(TunedTrial(t.number, t.state.name, t.value if t.state.name == "COMPLETE" else None, dict(t.params),
                              a.get("accuracy"), a.get("params_x"), a.get("macs_x"), a.get("run_dir", "")))
    return out


def param_importances(study: Any) -> tuple[dict[str, float] | None, str]:
    """Importances of the searched parameters (Optuna's default evaluator), or None; and a note
    for the report (why there are none, or the evaluator's warnings)."""
    optuna = require_optuna()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return None, f"Parameter importances need at least 2 complete trials ({len(complete)} so far)."
    with warnings.catch_warnings(record=True) as caught:   # few trials: said in the report, not on stderr
        warnings.simplefilter("always")
        try:
            importances = dict(optuna.importance.get_param_importances(study))
        except (RuntimeError, ValueError, ZeroDivisionError) as e:   # e.g. every complete trial has one value
            return None, f"No parameter importances: {str(e).splitlines()[0] or type(e).__name__}."
    notes = " ".join(dict.fromkeys(str(w.message) for w in caught))
    return importances, f"Parameter importances from {len(complete)} complete trials: {notes}" if notes else ""


def objective_record(spec: TuneSpec) -> dict:
    """The objective as tune.json records it."""
    if spec.objective.metric == "accuracy":
        return {"maximize": "accuracy", **given_targets(spec.settings)}
    return {"minimize": spec.objective.metric, "accuracy": spec.objective.accuracy}


def value_label(spec: TuneSpec) -> str:
    return {"macs": "MACs (fraction of base)", "params": "params (fraction of base)",
            "score": "efficiency score", "accuracy": "error (1 - accuracy) at the size target"}[spec.objective.metric]


def objective_text(spec: TuneSpec) -> str:
    split = {"val": "validation", "test": "test"}[spec.settings.get("eval_split", "val")]
    if spec.objective.metric == "accuracy":
        targets = ", ".join(f"{t.removeprefix('target_')} {v:g}" for t, v in given_targets(spec.settings).items())
        return f"highest {split} accuracy at {targets} of the base"
    what = {"macs": "fewest MACs", "params": "fewest parameters", "score": "lowest efficiency score"}
    return f"{what[spec.objective.metric]} at >= {spec.objective.accuracy:.2%} {split} accuracy"


def write_study_report(study: Any, spec: TuneSpec, out_dir: Path) -> Path:
    """``<out>/report/report.md`` with the history and importance figures and the trial table."""
    importances, note = param_importances(study)
    return write_tune_report(spec.title, objective_text(spec), value_label(spec), tuned_trials(study),
                             importances, out_dir / "report", [note] if note else [])


def trial_text(trial: Any, spec: TuneSpec) -> str:
    """One line per finished trial, for the progress output."""
    a = trial.user_attrs
    if trial.state.name == "COMPLETE":
        return f"trial {trial.number} complete: {result_text(trial, spec)}; {params_text(trial)}"
    if trial.state.name == "PRUNED":
        return f"trial {trial.number} pruned: {a.get('stopped', 'stopped early')}"
    return f"trial {trial.number} {trial.state.name.lower()}: {a.get('error', 'see the log')}"


def best_trial_text(study: Any, spec: TuneSpec) -> str:
    """One line: the best trial's objective, accuracy, parameters and run directory."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return "no trial completed"
    best = study.best_trial
    run_dir = best.user_attrs.get("run_dir", "-")
    size, points = spec.grid_size, grid_points(study, ("COMPLETE",))
    untried = f" ({points} of the grid's {size} points complete)" if size and points < size else ""
    return f"best: trial {best.number}{untried}, {result_text(best, spec)}; {params_text(best)}; run: {run_dir}"


def params_text(trial: Any) -> str:
    """A trial's searched values: "normalize=lamp, flops_lambda=0.6028"."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())


def result_text(trial: Any, spec: TuneSpec) -> str:
    """A complete trial's objective in words: "MACs x3.10 fewer (...) at accuracy 0.9810", or
    "accuracy 91.20% at the size target (MACs x3.01 fewer)"."""
    a = trial.user_attrs
    if spec.objective.metric == "accuracy":
        return f"{spec.objective.describe(trial.value)} (MACs x{a.get('macs_x', float('nan')):.2f} fewer)"
    reached = "" if a.get("reached", True) else f" (even the base model is under {spec.objective.accuracy:.2%})"
    return f"{spec.objective.describe(trial.value)} at accuracy {a.get('accuracy', float('nan')):.4f}{reached}"
