"""Run a sweep's runs as Ray tasks: on a local Ray started for the sweep, or on a cluster.

The plan (what is finished, what is left) and the run itself are the local runner's
(:func:`~fmprune.study.sweep.plan_sweep`, :func:`~fmprune.study.sweep.run_task`), so the run
directories, resumption and the report are the same. Ray only decides where each run computes,
with the CPUs/GPUs the experiment's ``[resources]`` table asks for.

Storage: run directories, the base checkpoint and the data directory must be at the same paths on
every node (a shared file system, e.g. NFS); runs write there directly, nothing is gathered back.
On a local Ray that is simply this machine's disk.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

from ..data import DataRequest
from ..errors import FmpruneError
from ..run.lock import locked
from .experiments import Experiment
from .resources import Resources
from .sweep import RunOutcome, RunTask, plan_sweep, run_task, worker_died

RAY_INSTALL = "pip install 'fmprune[ray]'"
LOCAL = "local"   # --ray without an address: a Ray started for this command and stopped after it


def require_ray() -> Any:
    """The ``ray`` module, or a one-line error saying what to install."""
    try:
        import ray
    except ImportError:
        raise FmpruneError(f"--ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


@contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[Any]:
    """Connected Ray for the duration of the block. No address (or ``local``): start a local
    Ray with ``num_cpus`` CPUs and stop it afterwards; ``auto`` or ``ray://host:port``: join that
    cluster. A Ray the caller already initialised (a notebook) is used and left running."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        if not address or address == LOCAL:
            ray.init(address=LOCAL, num_cpus=num_cpus or os.cpu_count() or 1, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = "a local Ray" if not address or address == LOCAL else f"Ray at {address}"
        raise FmpruneError(f"cannot start or reach {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                           " (a cluster address is 'auto' or ray://HOST:PORT)") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_device(device: str, resources: Resources) -> None:
    """Refuse, before any run starts, a device that Ray's GPU assignment would contradict."""
    if device.startswith("cuda:"):
        raise FmpruneError(f"--device {device} with --ray: pass --device cuda, Ray picks each run's GPU")
    if device == "cuda" and resources.gpus <= 0:
        raise FmpruneError("--device cuda with --ray needs GPUs per run in the experiment file: "
                           "[resources] gpus = 1 (or a fraction such as 0.25 to share one GPU among 4 runs)")
    if device == "cpu" and resources.gpus > 0:
        raise FmpruneError(f"the experiment file asks for [resources] gpus = {resources.gpus:g} but runs compute "
                           "on the CPU: pass --device cuda, or remove 'gpus'")


def shared_path(value: str | Path) -> str:
    """An absolute path: Ray workers do not share the driver's working directory."""
    return str(Path(value).expanduser().resolve())


def shared_data(data: DataRequest | str | None) -> DataRequest:
    """``data`` with a data directory that is a path made absolute; names such as ``mnist3x32`` stay."""
    data = DataRequest.of(data)
    if data.path is None or not Path(data.path).expanduser().exists():
        return data
    return replace(data, path=shared_path(data.path))


def check_fits(ray: Any, resources: Resources) -> None:
    """Refuse a run no node of this Ray could ever take (Ray would wait for it forever)."""
    total = ray.cluster_resources()
    for key, want in (("CPU", resources.cpus), ("GPU", resources.gpus)):
        if want > total.get(key, 0):
            raise FmpruneError(f"each run asks for {want:g} {key}s ([resources] {key.lower()}s) but this Ray has "
                               f"{total.get(key, 0):g}: lower it or add nodes")


def run_on_node(task: RunTask, data: DataRequest, threads: int) -> RunOutcome:
    """The Ray task: refuse a node that cannot see the shared files, else run as locally."""
    if not Path(task.checkpoint).is_file():
        return RunOutcome(task.label, Path(task.run_dir), "failed",
                          f"checkpoint {task.checkpoint} not found on Ray node {socket.gethostname()}: the "
                          "checkpoint, data and output directory must be on storage every node shares")
    return run_task(task, data, threads)


def run_sweep_ray(experiment: Experiment, checkpoint: str, out_dir: Path, data: DataRequest | str | None = None,
                  address: str | None = None, workers: int | None = None, quick: bool = False,
                  on_outcome: Callable[[RunOutcome], None] | None = None,
                  device: str = "cpu", tensorboard: Path | None = None) -> list[RunOutcome]:
    """:func:`~fmprune.study.sweep.run_sweep` with every run a Ray task. ``workers`` caps the runs
    in flight (default: as many as the cluster's resources allow; a local Ray gets that many CPUs)."""
    with locked(Path(shared_path(out_dir)) / experiment.name):
        return _run_sweep_ray(experiment, checkpoint, out_dir, data, address, workers, quick, on_outcome,
                              device, tensorboard)


def _run_sweep_ray(experiment: Experiment, checkpoint: str, out_dir: Path, data: DataRequest | str | None,
                   address: str | None, workers: int | None, quick: bool,
                   on_outcome: Callable[[RunOutcome], None] | None, device: str,
                   tensorboard: Path | None) -> list[RunOutcome]:
    resources = experiment.resources
    check_device(device, resources)
    require_ray()
    outcomes, pending = plan_sweep(experiment, shared_path(checkpoint), Path(shared_path(out_dir)), quick,
                                   on_outcome, device,
                                   Path(shared_path(tensorboard)) if tensorboard is not None else None)
    if not pending:
        return outcomes
    data = shared_data(data)
    local_cpus = max(workers or os.cpu_count() or 1, math.ceil(resources.cpus))
    with ray_session(address, local_cpus) as ray:
        check_fits(ray, resources)
        remote = ray.remote(num_cpus=resources.cpus, num_gpus=resources.gpus)(run_on_node)
        waiting = list(pending)
        in_flight: dict[Any, RunTask] = {}
        limit = workers or len(pending)
        while waiting or in_flight:
            while waiting and len(in_flight) < limit:
                task = waiting.pop(0)
                in_flight[remote.remote(task, data, resources.threads)] = task
            [ready], _ = ray.wait(list(in_flight), num_returns=1)
            task = in_flight.pop(ready)
            try:
                outcome = ray.get(ready)
            except Exception as e:   # the task's worker or node died, and Ray's retries with it
                outcome = worker_died(task, e)
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
    return outcomes
