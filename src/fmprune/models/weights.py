"""Starting from someone else's weights (transfer learning): a state dict from a local file —
torchvision's published ImageNet weights, or anything saved with ``torch.save(model.state_dict())``
— loaded into a freshly built zoo or torchvision model. When the file's classifier predicts another
number of classes, the model keeps its fresh head of ``--num-classes`` outputs (the head is
replaced). Nothing is ever downloaded: the error for a missing file says where to get one.

``freeze_features`` then leaves only the classifier trainable, as the VGG16 cats-and-dogs
tutorial does before pruning.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data import sha256_file
from ..errors import FmpruneError
from .torchvision_models import import_torchvision

HEAD_TYPES = (nn.Linear, nn.Conv2d)
CLASSIFIER_NAMES = ("classifier", "fc", "head", "heads")   # torchvision's names for the classifier block


def output_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The classifier's last layer: the last Linear (or conv, e.g. SqueezeNet) the model registers."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, HEAD_TYPES)]
    if not found:
        raise FmpruneError(f"{type(model).__name__} has no Linear or Conv2d layer to serve as its classifier head")
    return found[-1]


def where_to_get(model_name: str) -> str:
    """Advice for a missing weights file: torchvision's own URL for its models (not fetched here)."""
    if model_name.startswith("torchvision:"):
        try:
            weights = import_torchvision().models.get_model_weights(model_name.split(":", 1)[1])
            return f"download {weights.DEFAULT.url} ({weights.DEFAULT}) yourself and pass its path"
        except Exception:  # noqa: BLE001 - advice only: any failure falls back to the general words
            pass
    return "save one with torch.save(model.state_dict(), FILE) and pass its path"


def require_file(path: Path, model_name: str) -> None:
    """A missing weights file fails at once, saying where to get one."""
    if not path.is_file():
        raise FmpruneError(f"--weights {path}: no such file; fmprune downloads nothing: {where_to_get(model_name)}")


def read_state_dict(path: Path, model_name: str) -> dict[str, torch.Tensor]:
    """A state dict from ``path``: a plain one, or a dict holding one under ``state_dict``/``model``
    (fmprune checkpoints, training scripts); a ``module.`` prefix (DataParallel) is dropped."""
    require_file(path, model_name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file, in one line
        raise FmpruneError(f"--weights {path}: not a readable state dict ({type(e).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise FmpruneError(f"--weights {path}: holds no state dict (a dict of parameter name -> tensor)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_pretrained(model: nn.Module, path: Path, model_name: str) -> dict:
    """Load ``path`` into ``model`` (the bare network, without fmprune's normalisation layer);
    returns what a checkpoint records about it: file, SHA-256, whether the head was replaced."""
    state = read_state_dict(path, model_name)
    own = model.state_dict()
    head_name, _ = output_layer(model)
    head_keys = {k for k in own if k.startswith(head_name + ".")}
    replaced = any(k in state and tuple(state[k].shape) != tuple(own[k].shape) for k in head_keys)
    wanted = {k for k in own if not (replaced and k in head_keys)}
    missing = sorted(wanted - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:3])}{'…' if len(missing) > 3 else ''}"] if missing else []) + \
                ([f"unknown {', '.join(unexpected[:3])}{'…' if len(unexpected) > 3 else ''}"] if unexpected else [])
        raise FmpruneError(f"--weights {path} does not fit {model_name} ({'; '.join(parts)}): weights of another "
                           "architecture?")
    for k in sorted(wanted):
        if tuple(state[k].shape) != tuple(own[k].shape):
            raise FmpruneError(f"--weights {path}: {k} has shape {tuple(state[k].shape)} in the file, "
                               f"{tuple(own[k].shape)} in {model_name}")
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)
    return {"file": path.name, "sha256": sha256_file(path), "head": head_name, "head_replaced": replaced}


def freeze_features(model: nn.Module) -> str:
    """Leave only the classifier trainable: the model's ``classifier``/``fc``/``head`` block when it
    has one, else its output layer. Returns the trainable module's name."""
    children = dict(model.named_children())
    name = next((n for n in CLASSIFIER_NAMES if n in children), None)
    if name is None:
        name, _ = output_layer(model)
    head = model.get_submodule(name)
    keep = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return name
