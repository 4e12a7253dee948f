"""Where a pruning run computes: ``cpu`` (the default, the reference numbers) or a CUDA device.

Everything index-like (kept maps, rankings, scores) stays on the CPU; the model, the data and
the cached activations live on the chosen device, so one code path serves both."""

from __future__ import annotations

import torch

from .errors import FmpruneError


def resolve_device(name: str | torch.device | None) -> torch.device:
    """A usable ``torch.device`` for ``name``, or one clear error naming what is missing."""
    try:
        device = torch.device(name or "cpu")
    except RuntimeError:
        raise FmpruneError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise FmpruneError(f"unsupported device {name!r} (use cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise FmpruneError(f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise FmpruneError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    # Same run, same numbers: no autotuned (possibly nondeterministic) convolution algorithms.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return device


def rng_state(device: torch.device) -> dict:
    """Every generator dropout may draw from while retraining on ``device``."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict | torch.Tensor, device: torch.device) -> None:
    if isinstance(state, torch.Tensor):   # resume states written before devices existed
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def device_description(device: torch.device) -> str:
    """What a run records about where it ran, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return "cpu"
