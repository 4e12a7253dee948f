"""Unstructured (weight) and unit pruning, the classic companions of feature-map pruning:
magnitude and random weight masks through ``torch.nn.utils.prune``, unit removal by L2 norm,
Han et al.'s iterative schedule with masks held through the optimizer, non-zero counts, and
sparse (CSR) storage."""

from .sparsify_config import METHODS, SparsifyConfig
from .density import LayerDensity, format_density_table, is_sparse, weight_density
from .masks import MaskHold, apply_mask, apply_masks, effective, finalize
from .run import RoundRecord, SparsifySummary, run_sparsify
from .schedule import prune_weights, round_amounts
from .select import prune_count, select_units, unit_norms, weight_masks
from .storage import SparseFile, load_sparse, save_sparse
from .units import prune_units, unit_masks

__all__ = [
    "METHODS", "SparsifyConfig", "LayerDensity", "format_density_table", "is_sparse", "weight_density",
    "MaskHold", "apply_mask", "apply_masks", "effective", "finalize", "RoundRecord", "SparsifySummary",
    "run_sparsify", "prune_weights", "round_amounts", "prune_count", "select_units", "unit_norms",
    "weight_masks", "SparseFile", "load_sparse", "save_sparse", "prune_units", "unit_masks",
]
