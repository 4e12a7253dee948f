"""Torch's exporters and torch.ao, muted: no progress output, deprecation notices or warnings
about torch internals on the user's terminal (none of them is the user's business)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Standard output swallowed, warnings ignored and the ``torch.onnx`` logger at ERROR for the
    duration. torch.ao and TorchScript warn that they are deprecated on every call, yet they are
    what holds working x86 integer kernels in this torch; the ONNX exporter prints its progress."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            onnx_logger.setLevel(level)
