"""How to rebuild a model: a small JSON-safe record (stored in checkpoints) and the one function
that turns it into an ``nn.Module``, whatever the model's origin:

- a zoo name (``resnet20``),
- ``torchvision:NAME`` (any torchvision classifier, random weights),
- ``path/to/file.py:factory`` or ``package.module:factory`` (the user's own code, imported and
  called; loading a checkpoint of such a model runs that code again, as building it did).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch
from torch import nn

from ..errors import FmpruneError, first_line
from ..modes import eval_mode
from ..userfiles import factory_in, load_user_file
from .normalize import Normalized
from .torchvision_models import build_torchvision
from .zoo import ZOO, zoo_entry

TORCHVISION_PREFIX = "torchvision:"
TORCHVISION_INPUT = (3, 224, 224)
_SCALARS = (str, int, float, bool, type(None))


def model_kind(name: str) -> str:
    """'zoo', 'torchvision', 'file' (path/to/file.py:factory) or 'module' (package.module:factory)."""
    if name.startswith(TORCHVISION_PREFIX):
        return "torchvision"
    if ":" not in name:
        return "zoo"
    source = name.rsplit(":", 1)[0]
    return "file" if source.endswith(".py") or "/" in source or "\\" in source else "module"


def default_input_shape(name: str) -> tuple[int, int, int] | None:
    """The input a zoo entry was designed for, (3, 224, 224) for torchvision, None otherwise."""
    kind = model_kind(name)
    if kind == "zoo":
        return zoo_entry(name).input_shape
    return TORCHVISION_INPUT if kind == "torchvision" else None


def _json_safe(value: Any, where: str) -> Any:
    """Tuples become lists; anything a weights-only checkpoint cannot hold is refused."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (tuple, list)):
        return [_json_safe(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v, where) for k, v in value.items()}
    raise FmpruneError(f"{where}: {type(value).__name__} values cannot be stored (use numbers, "
                       "booleans, strings or tuples of them)")


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture (the weights live beside it)."""

    name: str = "lenet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (1, 28, 28)
    normalize: dict[str, list[float]] | None = None   # {"mean": [...], "std": [...]}: a first layer

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise FmpruneError(f"input shape must be C,H,W with positive sizes, got {self.input_shape}")
        if int(self.num_classes) < 1:
            raise FmpruneError(f"number of classes must be positive, got {self.num_classes}")
        _json_safe(self.kwargs, f"model argument of {self.name}")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "num_classes", int(self.num_classes))
        object.__setattr__(self, "kwargs", _tuples(dict(self.kwargs)))

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def kind(self) -> str:
        return model_kind(self.name)

    def to_dict(self) -> dict:
        """Plain str/int/float/bool/list/dict/None, loadable with ``torch.load(weights_only=True)``."""
        return {"name": self.name, "kwargs": _json_safe(self.kwargs, self.name),
                "num_classes": self.num_classes, "in_channels": self.in_channels,
                "input_shape": list(self.input_shape),
                "normalize": None if self.normalize is None else _json_safe(self.normalize, self.name)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        try:
            spec = cls(name=str(d["name"]), kwargs=dict(d.get("kwargs") or {}), num_classes=int(d["num_classes"]),
                       input_shape=tuple(d["input_shape"]), normalize=d.get("normalize"))
        except (KeyError, TypeError, ValueError) as e:
            raise FmpruneError(f"malformed model spec {d!r} ({type(e).__name__}: {e})") from None
        if "in_channels" in d and int(d["in_channels"]) != spec.in_channels:
            raise FmpruneError(f"malformed model spec: in_channels {d['in_channels']} but input shape {spec.input_shape}")
        return spec

    def with_normalization(self, mean: list[float], std: list[float]) -> "ModelSpec":
        return ModelSpec(self.name, self.kwargs, self.num_classes, self.input_shape,
                         {"mean": [float(m) for m in mean], "std": [float(s) for s in std]})

    def describe(self) -> str:
        """One line, e.g. ``resnet20(shortcut='A'), input 3x32x32, 10 classes``."""
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.kwargs.items()))
        norm = ", normalised input" if self.normalize else ""
        return (f"{self.name}{f'({args})' if args else ''}, input {'x'.join(map(str, self.input_shape))}, "
                f"{self.num_classes} classes{norm}")

    def slug(self) -> str:
        """A file-name-safe label: the name, plus a digest of the rest when it is not the default."""
        base = self.name.rsplit(":", 1)
        label = base[0] if self.kind == "zoo" else (base[1] if self.kind == "torchvision"
                                                    else f"{Path(base[0]).stem}-{base[1]}")
        label = "".join(c if c.isalnum() or c in "-_" else "-" for c in label)
        if not self.kwargs and self.kind in ("zoo", "torchvision"):
            return label if self.kind == "zoo" else f"torchvision-{label}"
        digest = hashlib.sha256(repr((self.name, sorted(self.kwargs.items()))).encode()).hexdigest()[:8]
        return f"{label}-{digest}"


# ---------------------------------------------------------------------------- building
def _call_factory(factory: Callable[..., Any], label: str, spec: ModelSpec) -> nn.Module:
    """Offer ``num_classes`` and ``in_channels`` (and ``input_size`` / ``input_shape`` where the
    factory names them) to factories that accept them, then the user's own arguments."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    offered: dict[str, Any] = {"num_classes": spec.num_classes, "in_channels": spec.in_channels}
    args = {k: v for k, v in offered.items() if k in params or var_kw}
    if "input_size" in params:
        args["input_size"] = spec.input_shape[1:]
    if "input_shape" in params:
        args["input_shape"] = spec.input_shape
    clash = sorted(set(args) & set(spec.kwargs) & {"num_classes", "in_channels", "input_size", "input_shape"})
    if clash:
        raise FmpruneError(f"{label}: give {clash[0]} through --num-classes/--input-shape, not --model-arg")
    try:
        model = factory(**args, **spec.kwargs)
    except FmpruneError as e:
        raise FmpruneError(f"{label} cannot be built: {e}") from None
    except SystemExit as e:   # a factory's sys.exit(0) would end fmprune "successfully" with nothing done
        raise FmpruneError(f"{label} cannot be built: it called sys.exit({e.code!r})") from None
    except Exception as e:  # noqa: BLE001 - the user's factory may raise anything; say it in one line
        first = first_line(e)
        raise FmpruneError(f"{label} cannot be built: {type(e).__name__}: {first}") from None
    if not isinstance(model, nn.Module):
        raise FmpruneError(f"{label} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_module(module_name: str) -> ModuleType:
    """Import as ``python -m`` would: from the current directory first, then installed packages."""
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise FmpruneError(f"model module {module_name}: no module named {e.name!r}") from None
    except Exception as e:  # noqa: BLE001
        first = first_line(e)
        raise FmpruneError(f"model module {module_name} cannot be imported: {type(e).__name__}: {first}") from None


def _factory(spec: ModelSpec) -> Callable[..., Any]:
    source, attr = spec.name.rsplit(":", 1)
    module = load_user_file(source) if spec.kind == "file" else _load_module(source)
    return factory_in(module, source, attr)


def build_network(spec: ModelSpec) -> nn.Module:
    """The bare architecture of ``spec`` (no normalisation layer), freshly initialised."""
    if spec.kind == "zoo":
        return _call_factory(zoo_entry(spec.name).factory, spec.name, spec)
    if spec.kind == "torchvision":
        name = spec.name[len(TORCHVISION_PREFIX):]
        return build_torchvision(name, spec.num_classes, spec.in_channels, dict(spec.kwargs))
    return _call_factory(_factory(spec), spec.name, spec)


def build_model(spec: ModelSpec) -> nn.Module:
    """The model ``spec`` describes, with random weights; behind its input normalisation when the
    spec carries one. Any reason it cannot be built is one FmpruneError line."""
    net = build_network(spec)
    if spec.normalize is None:
        return net
    try:
        return Normalized(net, spec.normalize["mean"], spec.normalize["std"])
    except (KeyError, TypeError) as e:
        raise FmpruneError(f"malformed normalisation {spec.normalize!r} ({type(e).__name__}: {e})") from None


@torch.no_grad()
def check_output(model: nn.Module, spec: ModelSpec) -> None:
    """One forward on zeros: the model accepts ``spec.input_shape`` and predicts
    ``spec.num_classes`` logits, or a one-line error says which of the two fails."""
    try:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        with eval_mode(model):
            out = model(torch.zeros(2, *spec.input_shape, device=device))
    except Exception as e:  # noqa: BLE001 - a shape mismatch deep inside the model
        first = first_line(e)
        raise FmpruneError(f"{spec.name} does not accept input {'x'.join(map(str, spec.input_shape))}: "
                           f"{type(e).__name__}: {first}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, spec.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FmpruneError(f"{spec.name} outputs {shape} for a batch of 2, expected (2, {spec.num_classes}) "
                           "(set the classes with --num-classes or the factory's arguments)")


def available_zoo() -> dict[str, tuple[tuple[int, int, int], str]]:
    """name -> (default input shape, one-line summary)."""
    return {name: (e.input_shape, e.summary) for name, e in sorted(ZOO.items())}
