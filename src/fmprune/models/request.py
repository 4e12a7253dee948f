"""What a user asked for on the command line (``--model``, ``--model-arg``, ``--input-shape``,
``--num-classes``), turned into a :class:`ModelSpec` once the data (if any) is known."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import FmpruneError
from .spec import ModelSpec, default_input_shape, model_kind


def parse_value(text: str) -> Any:
    """``3`` int, ``0.5`` float, ``true``/``false`` bool, ``none`` None, ``a,b`` or ``(a,b)`` a
    tuple of such values (``500,`` a one-element tuple), anything else the string itself."""
    s = text.strip()
    if s.startswith("(") and s.endswith(")") or s.startswith("[") and s.endswith("]"):
        s = s[1:-1].strip()
        if not s:
            return ()
        if "," not in s:
            s += ","
    if "," in s:
        return tuple(parse_value(part) for part in s.split(",") if part.strip())
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(s)
        except ValueError:
            pass
    return s


def parse_model_args(items: Iterable[str]) -> dict[str, Any]:
    """``["depth=20", "widths=16,32,64"]`` -> ``{"depth": 20, "widths": (16, 32, 64)}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise FmpruneError(f"--model-arg {item!r}: expected key=value with a Python identifier as key")
        if key in out:
            raise FmpruneError(f"--model-arg {key} given twice")
        out[key] = parse_value(value)
    return out


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """``3,32,32`` (also ``3x32x32``) -> ``(3, 32, 32)``."""
    parts = [p for p in text.replace("x", ",").replace("(", "").replace(")", "").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise FmpruneError(f"--input-shape {text!r}: expected C,H,W with positive integers, e.g. 3,32,32")
    return shape  # type: ignore[return-value]


def canonical_name(name: str) -> str:
    """A user file's path made absolute, so a checkpoint rebuilds it from any directory."""
    if model_kind(name) != "file":
        return name
    source, attr = name.rsplit(":", 1)
    return f"{Path(source).expanduser().resolve()}:{attr}"


@dataclass(frozen=True)
class ModelRequest:
    """The model options of one command; ``explicit`` tells whether ``--model`` was given."""

    name: str = "lenet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None
    explicit: bool = False

    @classmethod
    def from_options(cls, model: str, model_args: Iterable[str], input_shape: str | None,
                     num_classes: int | None, explicit: bool = True) -> "ModelRequest":
        return cls(canonical_name(model), parse_model_args(model_args),
                   parse_input_shape(input_shape) if input_shape else None, num_classes, explicit)

    def spec(self, data_shape: tuple[int, ...] | None = None, data_classes: int | None = None) -> ModelSpec:
        """The spec for this request: input shape from ``--input-shape``, else the data, else the
        zoo entry; classes from ``--num-classes``, else the data, else 10."""
        if self.input_shape and data_shape and tuple(self.input_shape) != tuple(data_shape):
            raise FmpruneError(f"--input-shape {','.join(map(str, self.input_shape))} does not match the data's "
                               f"images {','.join(map(str, data_shape))}")
        if self.num_classes and data_classes and self.num_classes < data_classes:
            raise FmpruneError(f"--num-classes {self.num_classes} is fewer than the data's {data_classes} classes")
        shape = self.input_shape or (tuple(data_shape) if data_shape else None) or default_input_shape(self.name)
        if shape is None:
            raise FmpruneError(f"{self.name} has no default input shape: give --input-shape C,H,W")
        return ModelSpec(self.name, self.kwargs, self.num_classes or data_classes or 10, tuple(shape))
