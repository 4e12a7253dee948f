"""Reading dataset pickles without running code: a pickle may name any callable, so only the
few that rebuild numpy arrays (and Python 3's way of storing bytes) are let through."""

from __future__ import annotations

import codecs
import io
import pickle

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,   # written by numpy 1.x / Python 2
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,                      # bytes in a Python 3 protocol-2 pickle
}


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only; anything else is refused."""

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle protocol
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def load_array_pickle(data: bytes):
    """Unpickle ``data`` (Python 2 strings decoded as latin-1, as numpy's own loader does)."""
    return ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
