"""Run every pruning run of an experiment file in parallel worker processes, resumably.

Each run goes to ``<out>/<experiment name>/<label>/``. A finished run (``summary.json``) is
skipped; an unfinished one resumes from its saved state. A failing run is reported with its
error and does not stop the others. :func:`plan_sweep` decides what is left to run and
:func:`run_task` runs one run in any process, so the Ray runner (``ray_runner``) shares both.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from ..data import DataRequest
from ..errors import FmpruneError
from ..study.experiments import Experiment
from ..run.lock import locked
from ..run.rundir import read_json, write_json_atomic
from ..run.tensorboard import TensorBoardLogger, resumed_step
from .methods import METHODS
from .orphans import die_with_parent
from .pipeline import BASE_LABEL, base_run, pending as pending_steps, run_follow_ups


@dataclass
class RunOutcome:
    label: str
    run_dir: Path
    status: str                  # "done", "skipped" (finished before) or "failed"
    message: str
    seconds: float = 0.0


class RunTask(NamedTuple):
    """One run still to do, in plain values a worker process (or a Ray node) can receive."""

    label: str
    checkpoint: str
    config: dict
    run_dir: str
    device: str
    kind: str = "prune"
    then: tuple = ()             # follow-up steps (FollowUp dicts) on the finished run
    tensorboard: str | None = None   # event files of a pruning run go here, written as it runs


_worker_splits = None
_worker_data: DataRequest | None = None


def _init_worker(data: DataRequest | str | None, threads: int) -> None:
    """Each worker loads the data once (as the command did: same folder, image shape, corrupt-image
    policy) and uses ``threads`` torch threads."""
    global _worker_splits, _worker_data
    torch.set_num_threads(threads)
    _worker_data = DataRequest.of(data)
    _worker_splits = _worker_data.load()


def _init_pool_worker(parent: int, data: DataRequest | str | None, threads: int) -> None:
    """A local pool worker: dies with the sweep (:mod:`.orphans`), then loads the data."""
    die_with_parent(parent)
    _init_worker(data, threads)


def _method_run(kind: str, checkpoint: str, config: dict, run_dir: str, device: str,
                tensorboard: str | None) -> str:
    """One run of the method ``kind``; a method with per-step records logs them to ``tensorboard``."""
    method = METHODS[kind]
    if tensorboard is None or method.step_hook is None:
        return method.sweep_run(checkpoint, _worker_splits, config, run_dir, device)
    with TensorBoardLogger(tensorboard, prefix=f"{kind}/", purge_step=resumed_step(run_dir)) as tb:
        return method.sweep_run(checkpoint, _worker_splits, config, run_dir, device,
                                **{method.step_hook: tb.on_prune_step})


def _run_one(label: str, checkpoint: str, config: dict, run_dir: str, device: str,
             kind: str = "prune", then: tuple = (), tensorboard: str | None = None) -> RunOutcome:
    start = time.perf_counter()
    try:
        if kind == BASE_LABEL:   # the follow-up steps on the base checkpoint itself
            message = base_run(checkpoint, _worker_splits, config, run_dir, device)
        elif not Path(run_dir, "summary.json").is_file():
            message = _method_run(kind, checkpoint, config, run_dir, device, tensorboard)
        else:
            message = "finished before"   # only follow-up steps were left
        if then:
            model = checkpoint if kind == BASE_LABEL else str(Path(run_dir, "model.pt"))
            message += "; " + run_follow_ups(run_dir, model, label, list(then), _worker_splits, device)
    except FmpruneError as e:
        return RunOutcome(label, Path(run_dir), "failed", str(e), time.perf_counter() - start)
    except Exception as e:  # a bug must not stop the other runs; its trace is kept in the run dir
        Path(run_dir).mkdir(parents=True, exist_ok=True)   # a run refused at once leaves no directory
        Path(run_dir, "error.txt").write_text(traceback.format_exc())
        return RunOutcome(label, Path(run_dir), "failed", f"{type(e).__name__}: {e} (see error.txt)",
                          time.perf_counter() - start)
    return RunOutcome(label, Path(run_dir), "done", message, time.perf_counter() - start)


def run_task(task: RunTask, data: DataRequest | str | None, threads: int = 1) -> RunOutcome:
    """Run one task in this process; the data are loaded once per process and data request
    (a Ray worker process runs many tasks)."""
    if _worker_splits is None or _worker_data != DataRequest.of(data):
        _init_worker(data, threads)
    torch.set_num_threads(threads)
    return _run_one(*task)


def write_experiment_manifest(experiment: Experiment, directory: Path, checkpoint: str, quick: bool) -> None:
    """What the report needs to group and title the runs of this experiment."""
    write_json_atomic(directory / "experiment.json", {
        "name": experiment.name, "title": experiment.title, "description": experiment.description,
        "file": str(experiment.path), "checkpoint": checkpoint, "varying": experiment.varying, "quick": quick,
        "kind": experiment.kind,
        "runs": [label for label, _ in experiment.runs],
    })


def plan_sweep(experiment: Experiment, checkpoint: str, out_dir: Path, quick: bool = False,
               on_outcome: Callable[[RunOutcome], None] | None = None,
               device: str = "cpu", tensorboard: Path | None = None) -> tuple[list[RunOutcome], list[RunTask]]:
    """Write the manifest; return the outcomes of runs already finished (skipped, or refused
    because their directory holds other settings) and the tasks still to run. With
    ``tensorboard``, each pruning run logs to ``tensorboard/<experiment>/<label>/``."""
    directory = out_dir / experiment.name
    directory.mkdir(parents=True, exist_ok=True)
    write_experiment_manifest(experiment, directory, checkpoint, quick)
    outcomes: list[RunOutcome] = []
    pending = []
    then = tuple(step.to_dict() for step in experiment.then)
    if then and experiment.then_base and pending_steps(directory / BASE_LABEL, experiment.then):   # base points
        pending.append(RunTask(BASE_LABEL, checkpoint, {}, str(directory / BASE_LABEL), device, BASE_LABEL, then))
    for label, config in experiment.runs:
        run_dir = directory / label
        events = str(tensorboard / experiment.name / label) if tensorboard is not None else None
        task = RunTask(label, checkpoint, config.to_dict(), str(run_dir), device, experiment.kind, then, events)
        if (run_dir / "summary.json").exists():
            previous = read_json(run_dir / "config.json")
            same = {k: previous.get(k) for k in config.to_dict()} == config.to_dict()
            if same and pending_steps(run_dir, experiment.then):
                pending.append(task)
                continue
            outcome = (RunOutcome(label, run_dir, "skipped", "finished before") if same else
                       RunOutcome(label, run_dir, "failed", f"{run_dir} holds a finished run with other "
                                  "settings; move it away or rename the experiment"))
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
        else:
            pending.append(task)
    return outcomes, pending


def run_sweep(experiment: Experiment, checkpoint: str, out_dir: Path, data: DataRequest | str | None = None,
              workers: int | None = None, quick: bool = False,
              on_outcome: Callable[[RunOutcome], None] | None = None,
              device: str = "cpu", tensorboard: Path | None = None) -> list[RunOutcome]:
    """Run (or resume) every run of ``experiment`` on ``device`` with ``data`` (a request, or a
    ``--data-dir`` value read with the defaults); returns one outcome per run.
    On a GPU the workers share it: its runs are small, so several keep it busier than one. The
    experiment's directory is held (:mod:`fmprune.run.lock`) until the last worker is done."""
    with locked(out_dir / experiment.name):
        return _run_sweep(experiment, checkpoint, out_dir, data, workers, quick, on_outcome, device, tensorboard)


def _run_sweep(experiment: Experiment, checkpoint: str, out_dir: Path, data: DataRequest | str | None,
               workers: int | None, quick: bool, on_outcome: Callable[[RunOutcome], None] | None,
               device: str, tensorboard: Path | None) -> list[RunOutcome]:
    outcomes, pending = plan_sweep(experiment, checkpoint, out_dir, quick, on_outcome, device, tensorboard)
    if not pending:
        return outcomes
    workers = max(1, min(workers or os.cpu_count() or 1, len(pending)))
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_pool_worker,
                                initargs=(os.getpid(), DataRequest.of(data), 1)) as pool:
        futures = [pool.submit(_run_one, *args) for args in pending]
        for future in cf.as_completed(futures):
            try:
                outcome = future.result()
            except Exception as e:   # the worker process itself died (e.g. out of memory)
                index = futures.index(future)
                outcome = worker_died(pending[index], e)
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
    return outcomes


def worker_died(task: RunTask, error: BaseException) -> RunOutcome:
    """The outcome of a run whose process died under it (e.g. out of memory): rerun to resume."""
    return RunOutcome(task.label, Path(task.run_dir), "failed", f"worker died: {type(error).__name__}: {error}")
