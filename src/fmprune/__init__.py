"""fmprune: feature-map (structured) pruning of convolutional networks.

    import fmprune
    graph = fmprune.trace(model, example_inputs)
    for g in graph.groups: print(g.name, g.size)
    graph.remove(name, indices)

and the whole protocol in one call: ``fmprune.run_pruning(checkpoint, splits, fmprune.PruneConfig(...), run_dir)``.
"""

from .version import __version__

from . import costs  # noqa: E402
from .errors import FmpruneError, UnsupportedModelError  # noqa: E402
from .graph import Graph, Group, trace  # noqa: E402
from .layers import LayerAdapter, register_layer, unregister_layer  # noqa: E402
from .run.checkpoint import load_checkpoint  # noqa: E402
from .run.config import PruneConfig  # noqa: E402
from .run.loop import run_pruning  # noqa: E402
from .pruner import Pruner, PruneReport, PruneResult, load, prune, save  # noqa: E402
from .latency import LatencyTable, latency_table  # noqa: E402
from .distillation import Distillation, distillation_loss  # noqa: E402

__all__ = ["trace", "Graph", "Group", "UnsupportedModelError", "FmpruneError", "register_layer", "unregister_layer",
           "LayerAdapter", "PruneConfig", "run_pruning", "load_checkpoint", "Pruner", "PruneReport", "prune", "PruneResult", "save", "load",
           "LatencyTable", "latency_table", "Distillation", "distillation_loss", "__version__"]
