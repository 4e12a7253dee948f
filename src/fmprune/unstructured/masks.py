"""Masks through ``torch.nn.utils.prune``: while pruning, a masked tensor is PyTorch's own
reparameterisation (``weight_orig`` parameter, ``weight_mask`` buffer, forward pre-hook), so a
user can keep working on the model with PyTorch's API; :func:`finalize` applies ``prune.remove``
so what is saved is a plain model whose pruned weights are zeros.

:class:`MaskHold` keeps pruned weights at exactly zero through an optimizer: the mask already
zeroes the gradient, but momentum and Adam moments accumulated before pruning would keep moving
``weight_orig``; the hold zeroes those entries of the parameter and of every state tensor after
each step."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import prune


def is_masked(module: nn.Module, tensor: str = "weight") -> bool:
    """Whether ``module.<tensor>`` is under torch's prune reparameterisation."""
    return any(n == f"{tensor}_orig" for n, _ in module.named_parameters(recurse=False))


def apply_mask(module: nn.Module, mask: torch.Tensor, tensor: str = "weight") -> None:
    """Mask ``module.<tensor>`` with ``mask`` (1 keeps, 0 prunes) through ``prune.custom_from_mask``.
    A tensor already masked gets the new mask instead of a stacked one; the parameter object
    stays the same, so an optimizer built earlier keeps updating it."""
    if is_masked(module, tensor):
        prune.remove(module, tensor)
    orig = getattr(module, tensor)
    prune.custom_from_mask(module, tensor, mask.to(device=orig.device, dtype=orig.dtype))


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor], tensor: str = "weight") -> None:
    """:func:`apply_mask` for each ``{module name: mask}``."""
    for name, mask in masks.items():
        apply_mask(model.get_submodule(name), mask, tensor)


def masked_tensors(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """``(module name, module, tensor name)`` of every tensor masked with torch's prune API."""
    for name, module in model.named_modules():
        for pname, _ in list(module.named_parameters(recurse=False)):
            if pname.endswith("_orig") and hasattr(module, pname[:-5] + "_mask"):
                yield name, module, pname[:-5]


def current_mask(module: nn.Module, tensor: str = "weight") -> torch.Tensor | None:
    """The mask buffer torch's prune API keeps on ``module`` (None when unmasked)."""
    return getattr(module, f"{tensor}_mask") if is_masked(module, tensor) else None


def effective(module: nn.Module, tensor: str = "weight") -> torch.Tensor:
    """The tensor the module computes with now: ``orig * mask`` when masked (the attribute torch
    keeps is refreshed only at the next forward, so it lags behind an optimizer step)."""
    if is_masked(module, tensor):
        return getattr(module, f"{tensor}_orig") * getattr(module, f"{tensor}_mask")
    return getattr(module, tensor)


def finalize(model: nn.Module) -> nn.Module:
    """``prune.remove`` on every masked tensor: a plain model with zeros where weights were
    pruned, loadable without fmprune."""
    for _, module, tensor in list(masked_tensors(model)):
        prune.remove(module, tensor)
    return model


class MaskHold:
    """Keep pruned entries at zero through ``optimizer``, momentum included.

    :meth:`enforce` after each mask change is what matters: with the parameter and its state zero
    where the mask is, a zero gradient keeps them zero in SGD (momentum, weight decay), Adam and
    AdamW. The step post-hook repeats it after every step, so masks changed with torch's API
    directly (without calling :meth:`enforce`) are held from the next step on."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self._handle = optimizer.register_step_post_hook(lambda *_: self.enforce())

    @torch.no_grad()
    def enforce(self) -> None:
        """Zero the pruned entries of each masked parameter and of its optimizer state (Adam's
        moments, SGD's momentum buffer): call it after changing masks, before the next step."""
        for _, module, tensor in masked_tensors(self.model):
            param, mask = getattr(module, f"{tensor}_orig"), getattr(module, f"{tensor}_mask")
            param.mul_(mask)
            for value in self.optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value.mul_(mask)

    def remove(self) -> None:
        self._handle.remove()
