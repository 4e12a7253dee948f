"""``fmprune.Pruner``: dependency groups, criteria and physical removal inside the user's own loop.

    pruner = fmprune.Pruner(model, example_inputs, criterion="taylor", normalize="l2")
    for x, y in loader:
        loss = my_loss(model(x), y); loss.backward()
        pruner.accumulate()                       # Taylor products of this batch, any loss
        optimizer.step(); optimizer.zero_grad()
        if it % 100 == 0:
            pruner.step(maps=8, optimizer=optimizer)

It is an engine like ``fmprune prune``'s (:class:`~fmprune.engine.EngineBase`): the same group
scoring, normalisation, FLOPs term, selection and surgery; only where the criterion's inputs come
from differs: hooks on the user's passes (:mod:`.taps`) instead of a replay of the traced graph
on a calibration split with a cross-entropy loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..criteria import NORMALIZATIONS, REDUCTIONS, Criterion, check_cost, create_criterion
from ..criteria.structural import GroupCriterion, group_probe
from ..engine.engine_base import EngineBase, data_free_scope
from ..engine.selection import Selected, select_minimum
from ..engine.targets import check_target_fraction, smallest_size, trim_to_target
from ..errors import FmpruneError
from ..graph import Graph, trace
from ..latency import LatencyTable, latency_target
from . import rank_sync
from .passes import LossPasses
from .saving import remember, remembered
from .stale import mark_replaced, parameters_by_id
from .taps import Taps, TapProvider

OWN_PASSES = ("masked_loss", "hessian")   # criteria that need passes of their own over data


@dataclass
class PruneReport:
    """Sizes before and now; ``groups`` maps each group in scope to (maps at start, maps now)."""

    params: tuple[int, int]
    macs: tuple[int, int]
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)
    steps: int = 0

    def __str__(self) -> str:
        lines = [f"params {self.params[0]:,} -> {self.params[1]:,} (x{self.params[0] / self.params[1]:.2f} fewer), "
                 f"MACs {self.macs[0]:,} -> {self.macs[1]:,} (x{self.macs[0] / self.macs[1]:.2f} fewer), "
                 f"{self.steps} steps"]
        width = max((len(n) for n in self.groups), default=5)
        lines.append(f"{'group':<{width}}  maps")
        lines += [f"{n:<{width}}  {a} -> {b}" for n, (a, b) in self.groups.items()]
        return "\n".join(lines)


def _ignored_names(model: nn.Module, ignore: Sequence[nn.Module | str]) -> list[str]:
    """Module objects or names -> names; anything not in ``model`` is an error."""
    by_id = {id(m): n for n, m in model.named_modules()}
    names = set(by_id.values())
    out = []
    for item in ignore:
        if isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise FmpruneError(f"ignore: module {type(item).__name__} is not part of the model")
            out.append(by_id[id(item)])
        elif isinstance(item, str):
            if item not in names:
                raise FmpruneError(f"ignore: no module named {item!r} in the model")
            out.append(item)
        else:
            raise FmpruneError(f"ignore: expected modules or module names, got {type(item).__name__}")
    return out


def _numbered_as_before(model: nn.Module, graph: Graph) -> Graph:
    """``graph`` (a fresh trace of ``model``) numbering its maps as the graph that last pruned
    ``model`` (or :func:`fmprune.load`) did, when that structure still fits (same groups and
    sizes, same traced-around ops): a loaded model pruned further then reports and saves original
    indices. The fresh trace keeps the model's modules, device and dtype as they are now."""
    known = remembered(model)
    if known is not None and known.ignore == list(graph.ignore):
        graph.adopt_numbering(known.groups)
    return graph


def _inside(name: str, containers: list[str]) -> bool:
    return any(name == c or name.startswith(c + ".") or c == "" for c in containers)


class Pruner(EngineBase):
    """Scores and removes feature maps of ``model`` inside the user's training loop.

    ``criterion`` is any registered name (``fmprune criteria``) or a :class:`Criterion`;
    ``normalize`` (none/l1/l2/rms/mean/lamp), ``flops_lambda``, ``reduction`` and ``per_cost`` are
    ``fmprune prune``'s ``--normalize``, ``--flops-lambda``, ``--group-reduction`` and ``--per-cost``; ``ignore`` lists modules (or
    their names, a container covers what it holds) whose output maps are kept: every group one of
    them produces stays whole, their inputs may still shrink. ``trace_ignore`` is ``fmprune.trace``'s
    ``ignore`` (ops to leave alone, pinning every map through them); ``scope`` is ``"all"`` or
    group names. ``auto=True`` accumulates at every backward without calls to :meth:`accumulate`.
    ``loss_fn(model) -> loss``: for the criteria that need passes of their own (``oracle``,
    ``oracle_abs``, ``obd_hutchinson``), the scalar loss they evaluate (e.g. the user's loss on a
    fixed calibration batch). ``graph``: a graph this model was already traced into (pruned models keep the numbering of
    the unpruned one: ``steps`` and ``save`` report original map indices); not given, the model is
    traced afresh and numbered as :func:`fmprune.load` (or an earlier pruner) left it, while
    that structure still fits. ``latency_table``
    (:func:`fmprune.latency_table` of this model) enables ``step(target_latency=...)``,
    ``latency_lambda`` (the latency term, Θ − λ·ms a removal saves) and ``per_cost="latency"``;
    ``round_to`` keeps every group's size a multiple of it (or its original size): a step removes
    whole chunks, so possibly a few more maps than asked. Not given, it is the latency table's
    ``channel_multiple`` (8 for onnxruntime on a CPU, whose blocked layout runs other widths
    slower than the unpruned model) with a table, 1 without.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, criterion: str | Criterion = "taylor",
                 normalize: str = "rms", ignore: Sequence[nn.Module | str] = (), scope: str | Sequence[str] = "all",
                 trace_ignore: Sequence[str] = (), graph: Graph | None = None,
                 flops_lambda: float = 0.0, reduction: str = "sum", seed: int = 0, auto: bool = False,
                 per_cost: str = "none", loss_fn: Callable[[nn.Module], torch.Tensor] | None = None,
                 activation_examples: int = 256, latency_table: LatencyTable | None = None,
                 latency_lambda: float = 0.0, round_to: int | None = None) -> None:
        criterion = create_criterion(criterion) if isinstance(criterion, str) else criterion
        own_passes = any(r in criterion.reads for r in OWN_PASSES)
        if own_passes and (loss_fn is None or criterion.name == "obd"):
            raise FmpruneError(f"criterion {criterion.name!r} needs passes of its own over data: give "
                               "loss_fn=lambda model: <a scalar loss on a calibration batch> (the oracle, "
                               "obd_hutchinson); obd's per-example Fisher runs in `fmprune prune`")
        if normalize not in NORMALIZATIONS or reduction not in REDUCTIONS:
            raise FmpruneError(f"normalize must be one of {', '.join(NORMALIZATIONS)} and reduction one of "
                               f"{', '.join(REDUCTIONS)}; got {normalize!r}, {reduction!r}")
        for option, value in (("flops_lambda", flops_lambda), ("latency_lambda", latency_lambda)):
            if not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
                raise FmpruneError(f"{option} must be a finite number >= 0, got {value!r}")
        if round_to is None:
            round_to = latency_table.channel_multiple if latency_table is not None else 1
        if not (isinstance(round_to, int) and round_to >= 1):
            raise FmpruneError(f"round_to must be a positive integer, got {round_to!r}")
        if latency_table is None and (latency_lambda or per_cost == "latency"):
            raise FmpruneError("latency_lambda and per_cost='latency' need latency_table=fmprune.latency_table(...)")
        kept = _ignored_names(model, ignore)
        if graph is None or graph.model is not model:   # a graph of this model keeps its numbering
            graph = _numbered_as_before(model, trace(model, example_inputs, ignore=list(trace_ignore)))
        names = [n for n in graph.scope(scope if isinstance(scope, str) else ",".join(scope))
                 if not any(_inside(m.name, kept) for m in graph.members(n))]
        names, left_out = data_free_scope(graph, names, criterion)
        if left_out and scope != "all":
            raise FmpruneError(f"group {left_out[0]!r} has no feature maps (attention heads): criterion "
                               f"{criterion.name!r} cannot score it; leave it out of the scope or use a weight "
                               "criterion (l1_filter, min_weight)")
        graph.notes.extend(note for note in (f"{n}: no feature maps (attention heads): not scored by "
                                             f"{criterion.name}" for n in left_out) if note not in graph.notes)
        if not names:
            raise FmpruneError("nothing to prune: the model has no prunable group in scope "
                               f"(notes: {'; '.join(graph.notes) or 'none'})")
        super().__init__(graph, criterion, names, normalize, float(flops_lambda), seed)
        self.per_cost = check_cost(per_cost)
        self.latency, self.latency_lambda, self.round_to = latency_table, float(latency_lambda), round_to
        self.base_ms = latency_table.predict(graph) if latency_table is not None else None
        self.model, self.reduction, self.auto = model, reduction, auto
        remember(model, graph)
        self.base_params, self.base_macs = graph.total_params(), graph.total_macs()
        self.start_sizes = {n: graph.group(n).size for n in names}
        self.steps = 0
        reads = criterion.reads
        self.loss_fn = loss_fn if own_passes else None
        self.reads_data = (not isinstance(criterion, GroupCriterion) and not own_passes
                           and bool(reads & {"activations", "gradients"}))
        want_grad = "gradients" in reads
        wheres = {"feature"} | ({"output", "norm"} if "parameter_gradients" in reads else set())
        members = [m for n in names for m in graph.members(n)] if self.reads_data else []
        self.taps = Taps(graph, members, wheres, "activations" in reads and not want_grad, want_grad,
                         activation_examples, auto)

    # -- statistics from the user's passes
    def accumulate(self) -> int:
        """Add the forwards and backwards since the last call to the statistics (a data-reading
        criterion's scores are the mean over everything accumulated since the last step); returns
        the number of examples added. Call it after ``loss.backward()``."""
        if not self.reads_data:
            return 0
        return self.taps.accumulate()

    @property
    def recording(self) -> bool:
        """Whether forwards are recorded. Set it False on the iterations whose statistics you do not
        need (e.g. all but the last few before each ``step``): the hooks then cost nothing."""
        return self.taps.recording

    @recording.setter
    def recording(self, value: bool) -> None:
        self.taps.recording = bool(value)

    @property
    def examples(self) -> int:
        """Examples accumulated since the last step."""
        return self.taps.examples

    @property
    def notes(self) -> list[str]:
        """What was pinned when tracing, and where a criterion reads before a functional activation."""
        return self.graph.notes + self.taps.notes

    def raw_scores(self):
        stale = [n for n in self.scope if self.raw[n] is None]
        if stale:
            passes = LossPasses(self.graph, self.loss_fn) if self.loss_fn is not None else None
            self.score_groups(stale, TapProvider(self.taps, self._group_probe, passes), self.reduction)
        return {n: self.raw[n] for n in self.scope}

    def _group_probe(self, layer: str, quantity: str) -> torch.Tensor | None:
        compute = group_probe(quantity)
        if compute is None:
            return None
        try:
            return compute(self.graph, None, layer)
        except (AttributeError, TypeError):
            raise FmpruneError(f"criterion {quantity!r} needs a calibration split of its own: not available "
                               "inside a training loop; use `fmprune prune` for it") from None

    def scores(self) -> dict[str, torch.Tensor]:
        """Final scores per group in scope (after normalisation and the FLOPs term), lowest first
        to go; ``alive`` gives each position's map in the unpruned numbering."""
        self._require_statistics()
        self._share_statistics()
        return self.final_scores()

    # -- removal
    def step(self, maps: int | None = None, fraction: float | None = None, target_macs: float | None = None,
             target_params: float | None = None, optimizer: torch.optim.Optimizer | None = None,
             target_latency: float | None = None) -> list[Selected]:
        """Remove the lowest-scoring maps over the groups in scope: ``maps`` of them, a ``fraction``
        of those left, or as many as needed to reach ``target_macs`` / ``target_params`` (fractions
        of the model's size when the pruner was created) / ``target_latency`` (a fraction of its
        latency then, predicted by ``latency_table``); a count and a target together remove at
        most that many, stopping where the target is met. The cut layers get new parameter
        tensors: ``optimizer`` is pointed at them, its state sliced with the weights; another
        optimizer made before the step is refused at its next ``step()`` (:mod:`.stale`).
        Returns what was removed; the statistics start over."""
        counts = sum(v is not None for v in (maps, fraction))
        if counts > 1 or (counts == 0 and target_macs is None and target_params is None and target_latency is None):
            raise FmpruneError("step() takes maps= or fraction=, or a target (target_macs=, target_params=, "
                               "target_latency=), or a count and a target (at most that many, stopping at the target)")
        latency = latency_target(self.latency, self.base_ms, target_latency)
        self._require_statistics()
        removable = sum(len(self.graph.alive(n)) - 1 for n in self.scope)
        if maps is not None:
            if not (isinstance(maps, int) and maps >= 1):
                raise FmpruneError(f"maps must be a positive integer, got {maps!r}")
            if maps > removable:
                raise FmpruneError(f"maps={maps} is more than the {removable} maps that can still be removed "
                                   "(one map per group stays)")
        if fraction is not None and not (0 < fraction <= 1):
            raise FmpruneError(f"fraction must be in (0, 1], got {fraction!r}")
        for name, target in (("target_macs", target_macs), ("target_params", target_params)):
            if target is not None:
                self._check_target(name, target)
        self._share_statistics()
        if maps is not None or fraction is not None:
            k = maps if maps is not None else max(1, int(fraction * sum(len(self.graph.alive(n)) for n in self.scope)))
            chosen = trim_to_target(self.graph, self.select(min(k, removable)), (self.base_params, self.base_macs),
                                    target_params, target_macs, latency, self.round_to)
            self.remove_selected(chosen, optimizer)
        else:
            chosen = self._to_target(target_macs, target_params, optimizer, latency)
        if chosen:
            self.steps += 1
        self.taps.clear()
        self.invalidate_all()
        return chosen

    def remove(self, group: str, maps: Sequence[int], optimizer: torch.optim.Optimizer | None = None) -> None:
        before = parameters_by_id(self.model)
        self.graph.remove(group, maps, optimizer)
        mark_replaced(before, self.model)
        self.raw[group] = None

    def _to_target(self, target_macs: float | None, target_params: float | None,
                   optimizer: torch.optim.Optimizer | None, latency=None) -> list[Selected]:
        """Walk this step's ranking and remove in rounds until every target is met; each round
        removes the prefix of what is still removable that the current per-map costs predict is
        missing (:func:`~fmprune.engine.targets.trim_to_target`)."""
        final = self.final_scores()
        order = [(s.layer, s.original, s.score)
                 for s in select_minimum(final, self.alive, sum(len(v) for v in final.values()))]
        base = (self.base_params, self.base_macs)
        removed: list[Selected] = []
        while order:
            left = {n: len(self.graph.alive(n)) for n in self.scope}
            candidates = []
            for layer, original, score in order:
                alive = self.graph.alive(layer)
                if left[layer] > 1 and original in alive:
                    left[layer] -= 1
                    candidates.append(Selected(layer, alive.index(original), original, score))
            round_ = trim_to_target(self.graph, self.round(candidates, len(candidates)), base, target_params,
                                    target_macs, latency, self.round_to)
            if not round_:
                break
            self.remove_selected(round_, optimizer)
            removed += round_
            done = {(s.layer, s.original) for s in round_}
            order = [o for o in order if (o[0], o[1]) not in done]
        return removed

    def _check_target(self, name: str, target: float) -> None:
        check_target_fraction(name, target)
        params, macs = smallest_size(self.graph, self.scope, self.round_to)
        smallest, base = (macs, self.base_macs) if name == "target_macs" else (params, self.base_params)
        if target * base < smallest:
            per_group = "one map" if self.round_to == 1 else f"round_to={self.round_to} maps"
            raise FmpruneError(f"{name}={target} ({int(target * base):,}) is below the smallest model the scope "
                               f"can reach ({smallest:,}, {per_group} per group); raise it or widen the scope")

    def _require_statistics(self) -> None:
        if self.auto and self.reads_data and self.taps.active:
            self.taps.commit_completed()
        if not self.taps.active and self.reads_data:
            raise FmpruneError("the pruner's hooks were removed (remove_hooks()); create a new Pruner")
        if self.reads_data and self.taps.examples == 0 and rank_sync.world_size() == 1:
            raise FmpruneError(f"criterion {self.criterion.name!r} reads data: run forward and loss.backward(), "
                               "then pruner.accumulate(), before step()")

    def _share_statistics(self) -> None:
        """Under torch.distributed: check every rank holds the same model, then give every rank
        all ranks' statistics, so each removes the same maps."""
        if rank_sync.world_size() > 1:
            rank_sync.check_ranks_agree(self.graph.sizes(), self.taps.examples, self.reads_data)
            if self.reads_data:
                rank_sync.gather_taps(self.taps)
            self.invalidate_all()

    # -- the end
    def report(self, print_it: bool = True) -> PruneReport:
        """Params and MACs at the start -> now, maps per group; printed unless ``print_it=False``."""
        report = PruneReport((self.base_params, self.graph.total_params()), (self.base_macs, self.graph.total_macs()),
                             {n: (self.start_sizes[n], len(self.graph.alive(n))) for n in self.scope}, self.steps)
        if print_it:
            print(report)
        return report

    def remove_hooks(self) -> None:
        """Remove every hook: the model is a plain ``nn.Module`` again (the pruner can no longer
        read data; weight criteria still work)."""
        self.taps.remove()
