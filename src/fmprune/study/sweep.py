"""Run every pruning run of an experiment file in parallel worker processes, resumably.

Each run goes to ``<out>/<experiment name>/<label>/``. A finished run (``summary.json``) is
skipped; an unfinished one resumes from its saved state. A failing run is reported with its
error and does not stop the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import FmpruneError
from ..study.experiments import Experiment
from ..run.loop import PruneConfig, run_pruning
from ..run.rundir import read_json, write_json_atomic


@dataclass
class RunOutcome:
    label: str
    run_dir: Path
    status: str                  # "done", "skipped" (finished before) or "failed"
    message: str
    seconds: float = 0.0


_worker_splits = None


def _init_worker(data_dir: str | None, threads: int) -> None:
    """Each worker loads the data once and uses ``threads`` torch threads."""
    global _worker_splits
    torch.set_num_threads(threads)
    from ..data import load_splits
    _worker_splits = load_splits(data_dir)


def _run_one(label: str, checkpoint: str, config: dict, run_dir: str, device: str) -> RunOutcome:
    start = time.perf_counter()
    try:
        summary = run_pruning(checkpoint, _worker_splits, PruneConfig.from_dict(config), run_dir, device=device)
    except FmpruneError as e:
        return RunOutcome(label, Path(run_dir), "failed", str(e), time.perf_counter() - start)
    except Exception as e:  # a bug must not stop the other runs; its trace is kept in the run dir
        Path(run_dir, "error.txt").write_text(traceback.format_exc())
        return RunOutcome(label, Path(run_dir), "failed", f"{type(e).__name__}: {e} (see error.txt)",
                          time.perf_counter() - start)
    message = (f"{summary.steps} steps, {summary.eval_split} accuracy {summary.base_accuracy:.4f} -> "
               f"{summary.final_accuracy:.4f}, x{summary.compression:.1f} params, {summary.stop_reason}")
    return RunOutcome(label, Path(run_dir), "done", message, time.perf_counter() - start)


def write_experiment_manifest(experiment: Experiment, directory: Path, checkpoint: str, quick: bool) -> None:
    """What the report needs to group and title the runs of this experiment."""
    write_json_atomic(directory / "experiment.json", {
        "name": experiment.name, "title": experiment.title, "description": experiment.description,
        "file": str(experiment.path), "checkpoint": checkpoint, "varying": experiment.varying, "quick": quick,
        "runs": [label for label, _ in experiment.runs],
    })


def run_sweep(experiment: Experiment, checkpoint: str, out_dir: Path, data_dir: str | None = None,
              workers: int | None = None, quick: bool = False,
              on_outcome: Callable[[RunOutcome], None] | None = None,
              device: str = "cpu") -> list[RunOutcome]:
    """Run (or resume) every run of ``experiment`` on ``device``; returns one outcome per run.
    On a GPU the workers share it: its runs are small, so several keep it busier than one."""
    directory = out_dir / experiment.name
    directory.mkdir(parents=True, exist_ok=True)
    write_experiment_manifest(experiment, directory, checkpoint, quick)
    outcomes: list[RunOutcome] = []
    pending = []
    for label, config in experiment.runs:
        run_dir = directory / label
        if (run_dir / "summary.json").exists():
            previous = read_json(run_dir / "config.json")
            same = {k: previous.get(k) for k in config.to_dict()} == config.to_dict()
            outcome = (RunOutcome(label, run_dir, "skipped", "finished before") if same else
                       RunOutcome(label, run_dir, "failed", f"{run_dir} holds a finished run with other "
                                  "settings; move it away or rename the experiment"))
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
        else:
            pending.append((label, checkpoint, config.to_dict(), str(run_dir), device))
    if not pending:
        return outcomes
    workers = max(1, min(workers or os.cpu_count() or 1, len(pending)))
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                initargs=(data_dir, 1)) as pool:
        futures = [pool.submit(_run_one, *args) for args in pending]
        for future in cf.as_completed(futures):
            try:
                outcome = future.result()
            except Exception as e:   # the worker process itself died (e.g. out of memory)
                index = futures.index(future)
                outcome = RunOutcome(pending[index][0], Path(pending[index][3]), "failed",
                                     f"worker died: {type(e).__name__}: {e}")
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
    return outcomes
