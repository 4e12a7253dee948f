"""What the quantisation modules share: their error and a way to keep torch.ao quiet."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterator

from ..errors import FmpruneError


class QuantizationError(FmpruneError):
    """A quantisation request that cannot be met (bit width, backend, model)."""


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No deprecation notices, exporter progress or torch.ao warnings on the user's terminal:
    torch.ao and TorchScript warn that they are deprecated on every call, yet they are what holds
    working x86 integer kernels in this torch."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            onnx_logger.setLevel(level)
