"""Loading the user's own Python files named on the command line (``FILE.py:factory`` for a
model or a dataset) once per process, with one-line errors for whatever goes wrong in them."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from .errors import FmpruneError, first_line

_modules: dict[Path, ModuleType] = {}


def load_user_file(path_text: str, what: str = "model") -> ModuleType:
    """The module of ``path_text`` (imported once; ``what`` names it in errors: model, data)."""
    path = Path(path_text).expanduser().resolve()
    if path in _modules:
        return _modules[path]
    if not path.is_file():
        raise FmpruneError(f"{what} file {path_text}: missing file")
    name = f"fmprune_user_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise FmpruneError(f"{what} file {path_text}: not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module   # dataclasses and pickling inside the file need it registered
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file may fail in any way
        del sys.modules[name]
        first = first_line(e)
        raise FmpruneError(f"{what} file {path_text} cannot be imported: {type(e).__name__}: {first}") from None
    _modules[path] = module
    return module


def factory_in(module: ModuleType, source: str, attr: str) -> Callable[..., Any]:
    """``module.attr`` when callable, else a one-line error listing the callables defined there."""
    factory = getattr(module, attr, None)
    if not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise FmpruneError(f"{source} has no factory {attr!r} (callables defined there: {', '.join(found) or 'none'})")
    return factory
