"""Pruning criteria by name, and how their scores become selection scores."""

from .base import READS_ALL, CalibrationProvider, Criterion, LayerContext, Scores, available_criteria, create_criterion
from .scoring import COSTS, NORMALIZATIONS, check_cost, REDUCTIONS, flops_regularize, mflops, normalize, per_cost, reduce_members
from .simple import L1FilterCriterion, MeanActivationCriterion, MinWeightCriterion, RandomCriterion
from .taylor import TaylorCriterion
from .activation_stats import ActivationStdCriterion, ApozCriterion
from .obd import ObdCriterion, ObdHutchinsonCriterion
from .oracle import OracleAbsCriterion, OracleCriterion
from .taylor_bn import TaylorBNCriterion
from .weight_grad import WeightGradCriterion
from .structural import GroupCriterion
from .slimming import SlimmingCriterion
from .thinet import ThiNetCriterion

__all__ = ["READS_ALL", "CalibrationProvider", "Criterion", "LayerContext", "Scores", "available_criteria",
           "create_criterion", "COSTS", "check_cost", "per_cost", "NORMALIZATIONS", "REDUCTIONS", "flops_regularize", "mflops", "normalize",
           "reduce_members", "L1FilterCriterion", "MeanActivationCriterion", "MinWeightCriterion",
           "RandomCriterion", "TaylorCriterion", "ActivationStdCriterion", "ApozCriterion",
           "ObdCriterion", "ObdHutchinsonCriterion", "OracleAbsCriterion", "OracleCriterion", "TaylorBNCriterion", "WeightGradCriterion",
           "GroupCriterion", "SlimmingCriterion", "ThiNetCriterion"]
