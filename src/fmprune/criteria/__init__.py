"""Pruning criteria by name, and how their scores become selection scores."""

from .base import READS_ALL, CalibrationProvider, Criterion, LayerContext, Scores, available_criteria, create_criterion
from .scoring import NORMALIZATIONS, REDUCTIONS, flops_regularize, mflops, normalize, reduce_members
from .simple import L1FilterCriterion, MeanActivationCriterion, MinWeightCriterion, RandomCriterion
from .taylor import TaylorCriterion

__all__ = ["READS_ALL", "CalibrationProvider", "Criterion", "LayerContext", "Scores", "available_criteria",
           "create_criterion", "NORMALIZATIONS", "REDUCTIONS", "flops_regularize", "mflops", "normalize",
           "reduce_members", "L1FilterCriterion", "MeanActivationCriterion", "MinWeightCriterion",
           "RandomCriterion", "TaylorCriterion"]
