"""The oracle's measurement: the change of the calibration loss when one map of a group is
removed alone, for every map of the group, without touching the model.

Removing a map means its consumers (the convs and linears reading it, through concatenations,
adds and flattens) no longer see it: exactly as if their input positions carrying it were zero.
So the graph's prefix runs once per calibration chunk with the inputs of those consumers kept;
then only the consumers and what follows them are replayed, for many maps at once — the batch
holds one replica of the chunk per map, replica r with map r hidden. A consumer whose input no
replica changes (a Linear or an ungrouped conv fed by the prefix) is not even re-run: each replica
is its recorded output minus the hidden channels' share, one grouped convolution for all replicas.

Cost per group of G maps: G × (forward of everything after the consumers) on the calibration
set, plus one forward of the prefix per chunk.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ...data import Split
from ...graph import Graph
from ...modes import logits_of
from .replay import Recorder, downstream, replaying

CHUNK = 250                 # calibration examples per prefix pass
REPLAY_BUDGET = 1 << 24     # floats of one downstream tensor of a replay (replicas × examples × its size)
CONVS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


class MapPositions:
    """Where each group map enters one consumer: ``index[p]`` is the map at input position p (-1:
    another map); ``table`` holds each map's positions as a row when every map has as many."""

    def __init__(self, index: torch.Tensor, n_maps: int) -> None:
        self.index = index
        valid = (index >= 0).nonzero().flatten()
        maps = index[valid]
        counts = torch.bincount(maps, minlength=n_maps)
        ordered = valid[torch.argsort(maps, stable=True)]
        k = int(counts[0]) if n_maps else 0
        self.table = ordered.view(n_maps, k) if k > 0 and bool((counts == k).all()) else None
        self._ragged = None if self.table is not None else list(torch.split(ordered, counts.tolist()))

    def of(self, j: int) -> torch.Tensor:
        return self.table[j] if self.table is not None else self._ragged[j]

    def keep_mask(self, chosen: torch.Tensor, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(replicas × input width): 0 where replica r's map ``chosen[r]`` enters, else 1."""
        keep = torch.ones(len(chosen), width, dtype=dtype)
        if self.table is not None:
            keep.scatter_(1, self.table[chosen], 0.0)
        else:
            for r, j in enumerate(chosen.tolist()):
                keep[r, self.of(j)] = 0
        return keep.to(device)


def subtracts_exactly(module: nn.Module) -> bool:
    """Whether a hidden map's share of ``module``'s output is a product we can take alone:
    Linear, and convolutions without groups that pad with zeros."""
    if type(module) is nn.Linear:
        return True
    return type(module) in CONVS and module.groups == 1 and module.padding_mode == "zeros"


def hidden_shares(module: nn.Module, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """For each row of input positions (one row per replica), what those inputs of ``x`` add to
    ``module``'s output (no bias): replicas stacked along the batch axis."""
    b, k = rows.shape
    n = x.shape[0]
    flat = rows.flatten().to(x.device)
    xs = x.index_select(1, flat)                                   # n × (b·k) × ...
    w = module.weight.index_select(1, flat)                        # out × (b·k) × ...
    if type(module) is nn.Linear:
        out = torch.einsum("nbk,obk->bno", xs.view(n, b, k), w.view(-1, b, k))
        return out.reshape(b * n, -1)
    c_out = w.shape[0]
    w = w.view(c_out, b, k, *w.shape[2:]).transpose(0, 1).reshape(b * c_out, k, *w.shape[2:])
    y = CONVS[type(module)](xs, w, None, module.stride, module.padding, module.dilation, b)
    return y.view(n, b, c_out, *y.shape[2:]).transpose(0, 1).reshape(b * n, c_out, *y.shape[2:])


class MaskedReplay(Recorder):
    """Replays the graph from a prepared environment whose batch holds one replica of ``n``
    examples per map in ``chosen``; every consumer in ``hidden`` sees replica r without map
    ``chosen[r]``. Consumers in ``direct`` are not run: (input, output) recorded on the chunk."""

    def __init__(self, gm: fx.GraphModule, hidden: dict[fx.Node, MapPositions], chosen: torch.Tensor, n: int,
                 direct: dict[fx.Node, tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__(gm, set())
        self.hidden, self.chosen, self.n, self.direct = hidden, chosen, n, direct

    def run_node(self, node: fx.Node):
        where = self.hidden.get(node)
        if where is None:
            return super().run_node(node)
        b = len(self.chosen)
        if node in self.direct:
            x, out = self.direct[node]
            module = self.fetch_attr(node.target)
            if where.table is not None:
                rows = where.table[self.chosen]
                shares = hidden_shares(module, x, rows)
            else:
                shares = torch.cat([hidden_shares(module, x, where.of(j)[None]) for j in self.chosen.tolist()])
            return out.repeat(b, *([1] * (out.dim() - 1))) - shares
        args, kwargs = self.fetch_args_kwargs_from_env(node)
        x = args[0]
        keep = where.keep_mask(self.chosen, x.shape[1], x.dtype, x.device).repeat_interleave(self.n, 0)
        keep = keep.view(*keep.shape, *([1] * (x.dim() - 2)))
        return getattr(self, node.op)(node.target, (x * keep, *args[1:]), kwargs)


def consumers(graph: Graph, group: str) -> dict[fx.Node, MapPositions]:
    """The call nodes of the layers that read group ``group``'s maps (convs, linears; not its
    per-channel layers such as BatchNorm), with where each map enters them."""
    g = graph.group(group)
    map_of = {root: j for j, root in enumerate(g.roots)}
    out: dict[fx.Node, MapPositions] = {}
    for record in g.records:
        if record.adapter.channelwise or record.inputs is None:
            continue
        index = torch.tensor([map_of.get(root, -1) for root in record.inputs.tolist()], dtype=torch.long)
        if (index >= 0).any():
            where = MapPositions(index, g.size)
            out.update({node: where for node in record.nodes})
    return out


def _per_example_floats(nodes: Iterable[fx.Node]) -> int:
    """The largest per-example size among the values of ``nodes`` (the trace's shapes: an upper
    bound once maps are removed)."""
    largest = 1
    for n in nodes:
        shape = getattr(n.meta.get("tensor_meta"), "shape", None)
        if shape is not None and len(shape) >= 1:
            numel = 1
            for d in shape[1:]:
                numel *= int(d)
            largest = max(largest, numel)
    return largest


@torch.no_grad()
def group_loss_change(graph: Graph, split: Split, group: str) -> torch.Tensor:
    """Per map of ``group``: mean cross-entropy on ``split`` with the map removed alone, minus
    the model's (float64, CPU). The model is evaluated in eval mode and left unchanged."""
    gm = graph.graph_module
    calls = consumers(graph, group)
    n_maps = graph.group(group).size
    down = downstream(calls) | set(calls)
    direct = {c for c in calls if c.op == "call_module" and c.all_input_nodes[0] not in down
              and subtracts_exactly(gm.get_submodule(c.target))}
    needed = {a for n in down - direct for a in n.all_input_nodes if a not in down}
    batchy = {n for n in gm.graph.nodes if n.op == "placeholder"}
    batchy |= downstream(batchy)
    per_example = _per_example_floats(down | needed)
    total = torch.zeros(n_maps, dtype=torch.float64)
    with replaying(graph.model):
        for start in range(0, len(split), CHUNK):
            x, y = split.images[start:start + CHUNK], split.labels[start:start + CHUNK]
            recorder = Recorder(gm, needed | direct | {c.all_input_nodes[0] for c in direct})
            base = F.cross_entropy(logits_of(recorder.run(x)), y, reduction="sum").double().cpu()
            known = {d: (recorder.values[d.all_input_nodes[0]], recorder.values[d]) for d in direct}
            width = max(1, min(n_maps, REPLAY_BUDGET // max(1, len(y) * per_example)))
            done = 0
            while done < n_maps:
                chosen = torch.arange(done, min(n_maps, done + width))
                try:
                    losses = _replay(gm, calls, down, needed, batchy, recorder.values, known, y, chosen)
                except RuntimeError:
                    if width == 1:
                        raise
                    width = 1   # a model that reads the batch size off a prefix value: one map at a time
                    continue
                total[chosen] += losses - base
                done += len(chosen)
    return total / max(1, len(split))


def _replay(gm: fx.GraphModule, calls: dict[fx.Node, MapPositions], down: set[fx.Node], needed: set[fx.Node],
            batchy: set[fx.Node], values: dict[fx.Node, object], known: dict[fx.Node, tuple[torch.Tensor, torch.Tensor]],
            y: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Summed loss over the chunk for each map in ``chosen`` removed alone."""
    b, n = len(chosen), len(y)

    def replicate(node: fx.Node) -> object:
        v = values[node]
        if b == 1 or node not in batchy or not torch.is_tensor(v) or v.dim() == 0 or v.shape[0] != n:
            return v
        return v.unsqueeze(0).expand(b, *v.shape).reshape(b * n, *v.shape[1:])

    env = {node: (replicate(node) if node in needed else None) for node in gm.graph.nodes if node not in down}
    logits = logits_of(MaskedReplay(gm, calls, chosen, n, known).run(initial_env=env))
    if logits.shape[0] != b * n:
        raise RuntimeError("replicas were not kept apart")
    ce = F.cross_entropy(logits, y.repeat(b), reduction="none").double()
    return ce.view(b, n).sum(1).cpu()
