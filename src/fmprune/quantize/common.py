"""What the quantisation modules share: their error."""

from __future__ import annotations

from ..errors import FmpruneError


class QuantizationError(FmpruneError):
    """A quantisation request that cannot be met (bit width, backend, model)."""
