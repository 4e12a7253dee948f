"""A dataset of the user's own: ``--data FILE.py:factory`` (or ``--data-dir FILE.py:factory``).

The factory is called with no arguments and returns the splits as ``(train, val)`` or
``(train, val, test)``, each a ``torch.utils.data.Dataset`` or ``DataLoader`` of ``(image, label)``
pairs (or a :class:`~fmprune.data.Splits`). They are read once into memory, like every dataset
fmprune reads; a missing test split is the validation split again (said in ``source``).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import torch

from ..errors import DataError, first_line
from ..userfiles import factory_in, load_user_file
from .splits import Split, Splits

FACTORY = re.compile(r"^(?P<file>.+\.py):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)$")


def is_data_factory(text: str) -> bool:
    return bool(FACTORY.match(text))


def load_data_factory(text: str) -> Splits:
    """The splits the factory ``FILE.py:NAME`` returns, in memory."""
    match = FACTORY.match(text)
    module = load_user_file(match["file"], "data")
    factory = factory_in(module, match["file"], match["attr"])
    try:
        made = factory()
    except Exception as e:  # noqa: BLE001 - the user's code may fail in any way
        first = first_line(e)
        raise DataError(f"data factory {text} failed: {type(e).__name__}: {first}") from None
    if isinstance(made, Splits):
        return made
    if not isinstance(made, (tuple, list)) or len(made) not in (2, 3):
        raise DataError(f"data factory {text} must return (train, val) or (train, val, test) datasets or "
                        f"loaders, got {type(made).__name__}")
    parts = [_to_split(part, name, text) for part, name in zip(made, ("train", "val", "test"))]
    test = parts[2] if len(parts) == 3 else parts[1]
    source = f"factory:{text}" + ("" if len(parts) == 3 else " (no test split: test = val)")
    return Splits(parts[0], parts[1], test, source, name=match["attr"],
                  input_note=f"float32 N x C x H x W as {text} gives them (fmprune does not rescale them)")


def _to_split(data: Any, name: str, text: str) -> Split:
    """A Dataset or DataLoader of (image, label) pairs, stacked into tensors."""
    images, labels = [], []
    batched = isinstance(data, torch.utils.data.DataLoader)
    for item in _iterate(data, name, text):
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise DataError(f"data factory {text}: {name} must yield (image, label) pairs, got {type(item).__name__}")
        x, y = torch.as_tensor(item[0]), torch.as_tensor(item[1])
        images.append(x if batched else x.unsqueeze(0))
        labels.append(y.reshape(-1) if batched else y.reshape(1))
    if not images:
        raise DataError(f"data factory {text}: the {name} split is empty")
    try:
        return Split(torch.cat(images).float(), torch.cat(labels).long())
    except RuntimeError:
        raise DataError(f"data factory {text}: the {name} images do not all have one shape") from None


def _iterate(data: Any, name: str, text: str) -> Iterable:
    try:
        return iter(data)
    except TypeError:
        raise DataError(f"data factory {text}: {name} is a {type(data).__name__}, not a dataset or loader") from None
