"""Quantisation: real int8 with torch.ao (``int8``), fake quantisation at 2 to 16 bits (``fake``),
and quantising a checkpoint with its measurements against float (``measure``)."""

from .common import QuantizationError
from .fake import calibrate, fake_quantize
from .measure import MODES, QuantizeConfig, QuantizeResult, quantize_checkpoint
from .record import ScoreTarget, is_quantize_run, score_target

__all__ = ["MODES", "QuantizationError", "QuantizeConfig", "QuantizeResult", "ScoreTarget", "calibrate",
           "fake_quantize", "is_quantize_run", "quantize_checkpoint", "score_target"]
