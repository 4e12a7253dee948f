"""torchvision classification models by name (``--model torchvision:resnet18``), random weights.

torchvision is an optional extra (``pip install 'fmprune[torchvision]'``, pinned to 0.28.0, the
release for torch 2.13). PyPI's torchvision wheels are built against PyPI's CUDA torch: beside
the CPU torch their compiled operators (nms, roi_align, ... used by detection models, never by
classifiers) cannot load, and torchvision 0.28 then fails at import on an unguarded fake-kernel
registration for ``torchvision::nms`` (pytorch/vision#9085). In exactly that case, and only
then, we declare the two operator schemas that registration needs (no kernels) and import again:
the pure-Python model definitions then load as usual, and calling a compiled operator still fails
with torchvision's own "Couldn't load custom C++ ops" error. Where torchvision's operators do
load (a matching CUDA or +cpu build), nothing here changes anything.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import torch
from torch import nn

from ..errors import FmpruneError

INSTALL_HINT = "pip install 'fmprune[torchvision]' (torchvision==0.28.0, the release for torch 2.13)"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_missing_ops_library: torch.library.Library | None = None   # kept alive: dropping it unregisters


def _forget_partial_import() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def torchvision_installed() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def import_torchvision() -> ModuleType:
    """torchvision, importable even where its compiled operators are not (see the module doc)."""
    global _missing_ops_library
    if not torchvision_installed():
        raise FmpruneError(f"torchvision is not installed: {INSTALL_HINT}")
    try:
        import torchvision
        return torchvision
    except RuntimeError as e:
        if "torchvision::nms does not exist" not in str(e):
            raise FmpruneError(f"torchvision cannot be imported (RuntimeError: {e}); {INSTALL_HINT}") from None
    except Exception as e:  # noqa: BLE001 - e.g. a missing dependency of torchvision
        raise FmpruneError(f"torchvision cannot be imported ({type(e).__name__}: {e}); {INSTALL_HINT}") from None
    _forget_partial_import()
    if _missing_ops_library is None:
        _missing_ops_library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            _missing_ops_library.define(schema)
    try:
        import torchvision
    except Exception as e:  # noqa: BLE001 - any failure here is an installation problem
        raise FmpruneError(f"torchvision cannot be imported ({type(e).__name__}: {e}); {INSTALL_HINT}") from None
    return torchvision


def torchvision_classifiers() -> list[str]:
    """Names of torchvision's image classification models (not detection, video, ...)."""
    tv = import_torchvision()
    return sorted(tv.models.list_models(module=tv.models))


def build_torchvision(name: str, num_classes: int, in_channels: int, kwargs: dict) -> nn.Module:
    """``torchvision.models.NAME(weights=None, num_classes=...)`` with the user's arguments."""
    if in_channels != 3:
        raise FmpruneError(f"torchvision:{name} takes 3 input channels, the input has {in_channels} "
                           "(for MNIST use --data-dir mnist3x32)")
    tv = import_torchvision()
    names = torchvision_classifiers()
    if name not in names:
        raise FmpruneError(f"torchvision {tv.__version__} has no classification model {name!r} "
                           f"(see `fmprune models --torchvision`)")
    if "weights" in kwargs and kwargs["weights"] is not None:
        raise FmpruneError("pretrained torchvision weights cannot be downloaded here; models start from random weights")
    try:
        return tv.models.get_model(name, **{**kwargs, "weights": None, "num_classes": num_classes})
    except Exception as e:  # noqa: BLE001 - the constructor's own complaint, in one line
        raise FmpruneError(f"torchvision:{name} cannot be built: {type(e).__name__}: {e}") from None
