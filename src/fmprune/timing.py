"""Timing forwards on a busy machine: runners taking turns, a wall or a CPU-time clock."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_runners(runners: list, inputs: list[torch.Tensor], repeats: int = 30, warmup: int = 5,
                 sync=None, clock: str = "wall") -> list[list[float]]:
    """Seconds of every repeat of ``runners[j](inputs[j])``, the runners taking turns within each
    repeat (drifts of a busy machine hit all alike). ``sync`` (e.g. ``torch.cuda.synchronize``)
    is called before each clock read where work is asynchronous. ``clock="cpu"`` reads the
    process's CPU time: single-threaded, that is the latency without the time other processes
    took the core, far steadier on a shared machine (see docs/latency.md)."""
    now = CLOCKS[clock]
    times: list[list[float]] = [[] for _ in runners]
    for i in range(warmup + repeats):
        for j, run in enumerate(runners):
            if sync is not None:
                sync()
            start = now()
            run(inputs[j])
            if sync is not None:
                sync()
            if i >= warmup:
                times[j].append(now() - start)
    return times


@contextmanager
def clock_threads(clock: str) -> Iterator[None]:
    """For the ``cpu`` clock, torch (and a runtime prepared inside) computes on one thread for
    the duration: the CPU time of one thread is its latency, of several their sum."""
    if clock != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
