"""Latency tables: what each prunable layer costs in time at a grid of (input, output) widths, on
one runtime, batch size and device, measured here; a model's latency predicted from them.

MACs are a proxy for speed that the runtime bends: eager PyTorch pays a fixed cost per op, thin
layers do not fill the vector units, memory-bound ops shrink with the maps while a conv's MACs
shrink with the product of its input and output maps. A table measured on the target runtime
answers the question pruning asks — how much time does removing this map save now — as HALP
(Shen et al. 2022) does with a lookup table per layer width.

A layer is timed alone: a copy of the module cut to the grid's widths by its own adapter, run on
a random input of the shape it sees in the model. Between grid points, the time is interpolated
bilinearly (linearly along an axis the graph cannot change, and along the one axis of a layer
whose input and output move together: BatchNorm, a depthwise conv). A model's predicted latency
is the sum of its layers at their current widths plus the *rest*: what the layers do not account
for (activations, pooling, residual adds, the runtime's per-op dispatch, layers the graph cannot
change), measured on the whole model cut uniformly to every grid fraction and read by the feature
volume (memory-bound ops cost in proportion to the maps they touch). A prediction ignores fusion
(onnxruntime, compile) that joins a layer to its neighbours, caches shared between consecutive
layers, and how unevenly a model is cut (the rest sees only the total volume).

Tables are cached under ``$FMPRUNE_HOME/latency`` (``~/.cache/fmprune/latency``), keyed by model,
its architecture, runtime, batch, device, torch version, grid, repeats and clock; the spread of
the repeats is kept with every cell.
"""

from __future__ import annotations

import copy
import hashlib
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .atomic import write_bytes_atomically
from .data.files import fmprune_home
from .errors import FmpruneError
from .graph import Graph, trace
from .layers import adapter_for
from .modes import eval_mode
from .runtimes import channel_multiple, check_runtimes, prepare
from .timing import CLOCKS, clock_threads, time_runners

GRID = (0.125, 0.25, 0.5, 0.75, 1.0)
GPU_RUNTIMES = ("eager", "eager-cl")


@dataclass
class LayerLatency:
    """One layer's median milliseconds ``ms[i][j]`` at input width ``ins[i]`` and output width
    ``outs[j]`` (positions of its channel axes, as :meth:`Graph.layer_widths` counts them), and
    the relative spread of the repeats at each cell. ``tied``: input and output move together
    (one column; the output width is the input's times the base ratio)."""

    name: str
    kind: str
    ins: list[int]
    outs: list[int]
    ms: list[list[float]]
    spread: list[list[float]]
    tied: bool = False

    def at(self, n_in: int, n_out: int) -> float:
        """Milliseconds at (``n_in``, ``n_out``): bilinear between grid points, linear beyond the
        grid's ends, never below zero."""
        i0, i1, ti = _bracket(self.ins, n_in)
        if self.tied or len(self.outs) == 1:
            return max(0.0, (1 - ti) * self.ms[i0][0] + ti * self.ms[i1][0])
        j0, j1, tj = _bracket(self.outs, n_out)
        value = ((1 - ti) * (1 - tj) * self.ms[i0][j0] + (1 - ti) * tj * self.ms[i0][j1]
                 + ti * (1 - tj) * self.ms[i1][j0] + ti * tj * self.ms[i1][j1])
        return max(0.0, value)


def _one_map(graph: Graph, group: str) -> dict[str, tuple[int, int]]:
    """(input, output) positions one map of ``group`` occupies in each layer it touches."""
    return {layer: (len(where["in"]), len(where["out"])) for layer, where in graph.positions(group, [0]).items()}


class LatencyWalk:
    """The predicted latency of a model as maps are removed from it one at a time, updated by the
    layers each removal touches (a step over thousands of maps stays cheap). Sums of one-map
    savings go wrong over many maps where a layer's time is flat between grid points (a
    runtime's blocked layout pads channels) and the rest moves: the sum can stay short of a
    target the model reached long before, and a step that trusts it removes every map it has."""

    def __init__(self, table: "LatencyTable", graph: Graph) -> None:
        self.table, self.graph = table, graph
        self.widths = {n: w for n, w in graph.layer_widths().items() if n in table.layers}
        self.per_layer = {n: table.layers[n].at(*w) for n, w in self.widths.items()}
        self.layers_ms = sum(self.per_layer.values())
        self.volume = table.volume(self.widths)   # a fraction of the base's, as the rest reads it
        self.base_volume = table.base_volume()
        self.deltas: dict[str, dict[str, tuple[int, int]]] = {}

    @property
    def ms(self) -> float:
        """Predicted milliseconds at the widths reached so far."""
        return self.table.rest_ms(self.volume) + self.layers_ms

    def remove(self, group: str) -> float:
        """Remove one map of ``group`` (in the walk only, not the model); the predicted ms after."""
        if group not in self.deltas:
            self.deltas[group] = {n: d for n, d in _one_map(self.graph, group).items() if n in self.widths}
        for layer, (d_in, d_out) in self.deltas[group].items():
            n_in, n_out = self.widths[layer]
            self.widths[layer] = (n_in - d_in, n_out - d_out)
            now = self.table.layers[layer].at(*self.widths[layer])
            self.layers_ms += now - self.per_layer[layer]
            self.per_layer[layer] = now
            self.volume -= d_out * self.table.map_volume.get(layer, 0) / self.base_volume
        return self.ms


def _bracket(grid: list[int], x: float) -> tuple[int, int, float]:
    """Indices of the grid points around ``x`` and its position between them (outside the grid:
    the end segment, extrapolated)."""
    if len(grid) == 1:
        return 0, 0, 0.0
    hi = next((k for k in range(1, len(grid)) if x <= grid[k]), len(grid) - 1)
    lo = hi - 1
    if grid[hi] == grid[lo]:   # two cuts of a tiny model can land on the same size
        return lo, hi, 0.0
    return lo, hi, (x - grid[lo]) / (grid[hi] - grid[lo])


@dataclass
class LatencyTable:
    """Per-layer latency grids of one model on one runtime, batch and device, with the measured
    latency of the whole base model (see the module docstring for what a prediction ignores)."""

    model: str
    runtime: str
    batch: int
    device: str
    torch: str
    grid: list[float]
    repeats: int
    clock: str                  # wall, or cpu (the process's CPU time, one thread)
    base_widths: dict[str, tuple[int, int]]
    layers: dict[str, LayerLatency]
    measured_ms: float          # the whole base model, median of the repeats
    measured_spread: float      # its relative spread
    map_volume: dict[str, int]  # output positions per map of each layer (H·W of a conv), per example
    rest: list[tuple[float, float]]   # (feature volume / base volume, rest ms) of uniform cuts, ascending
    path: str = field(default="", compare=False)   # where it is cached
    cached: bool = field(default=False, compare=False)   # read from the cache rather than measured

    # -- predictions
    def layers_ms(self, widths: dict[str, tuple[int, int]]) -> float:
        """The sum over the table's layers at ``widths`` (layer -> (in, out))."""
        return sum(t.at(*widths[name]) for name, t in self.layers.items() if name in widths)

    def volume(self, widths: dict[str, tuple[int, int]]) -> float:
        """The feature volume at ``widths`` (every table layer's output positions per example)
        as a fraction of the base model's: what the rest's memory-bound ops scale with."""
        return sum(widths[n][1] * v for n, v in self.map_volume.items() if n in widths) / self.base_volume()

    def base_volume(self) -> int:
        """The base model's feature volume: output positions per example of every table layer."""
        return max(1, sum(self.base_widths[n][1] * v for n, v in self.map_volume.items()))

    def rest_ms(self, volume: float = 1.0) -> float:
        """What the timed layers do not account for (activations, pooling, adds, dispatch), at a
        feature ``volume`` (fraction of the base's): linear between the uniform cuts measured."""
        points = [v for v, _ in self.rest]
        i0, i1, t = _bracket(points, volume)
        return (1 - t) * self.rest[i0][1] + t * self.rest[i1][1]

    def predict_widths(self, widths: dict[str, tuple[int, int]]) -> float:
        """Predicted milliseconds at ``widths`` (layer -> (in, out))."""
        return self.rest_ms(self.volume(widths)) + self.layers_ms(widths)

    def predict(self, graph: Graph) -> float:
        """Predicted milliseconds of ``graph``'s model at its current widths."""
        return self.predict_widths(graph.layer_widths())

    def map_saving(self, graph: Graph, group: str) -> float:
        """Milliseconds that removing one map of ``group`` saves at the current widths: the
        drop of every layer it touches (its producers' outputs, its consumers' inputs). A local
        slope: it can be zero or negative where a layer's time is flat between grid points while
        the rest grows with the volume freed (onnxruntime, whose blocked layouts pad channels)."""
        widths = graph.layer_widths()
        after = dict(widths)
        for layer, (d_in, d_out) in _one_map(graph, group).items():
            if layer in after:
                after[layer] = (widths[layer][0] - d_in, widths[layer][1] - d_out)
        return self.predict_widths(widths) - self.predict_widths(after)

    def walk(self, graph: Graph) -> "LatencyWalk":
        """Predicted milliseconds as maps are removed one after another from ``graph``'s current
        widths (:class:`LatencyWalk`): a prefix of a ranking is judged by the table's prediction
        of the model it leaves, not by a sum of one-map savings taken at the current widths."""
        return LatencyWalk(self, graph)

    @property
    def channel_multiple(self) -> int:
        """Widths this table's runtime runs at full speed are multiples of it (8 for onnxruntime on
        a CPU, 1 elsewhere; :func:`fmprune.runtimes.channel_multiple`): the ``round_to`` that
        pruning for its latency uses unless told otherwise."""
        return channel_multiple(self.runtime, self.device)

    def noise(self) -> tuple[float, float, str]:
        """(median, max) relative spread over every cell, and where the max is."""
        cells = [(s, f"{name} at {t.ins[i]}" + ("" if t.tied else f"x{t.outs[j]}"))
                 for name, t in self.layers.items() for i, row in enumerate(t.spread) for j, s in enumerate(row)]
        if not cells:
            return 0.0, 0.0, "-"
        worst = max(cells, key=lambda c: c[0])
        return statistics.median(c[0] for c in cells), worst[0], worst[1]

    # -- storage
    def to_json(self) -> str:
        d = asdict(self)
        d.pop("path"), d.pop("cached")
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str, path: str = "") -> "LatencyTable":
        d = json.loads(text)
        d["layers"] = {n: LayerLatency(**t) for n, t in d["layers"].items()}
        d["base_widths"] = {n: tuple(w) for n, w in d["base_widths"].items()}
        d["rest"] = [tuple(p) for p in d["rest"]]
        return cls(**d, path=path, cached=True)

    def format(self) -> str:
        """The table as ``fmprune latency-table`` prints it: every layer's grid (ms), the whole
        model measured against the sum of its layers, and the noise."""
        lines = [f"latency table: {self.model}, runtime {self.runtime}, batch {self.batch}, {self.device}, "
                 f"torch {self.torch}, {self.repeats} repeats, {self.clock} clock"
                 + (" (cached)" if self.cached else "")]
        for name, t in self.layers.items():
            base_in, base_out = self.base_widths[name]
            if t.tied or len(t.outs) == 1:
                axis = "in=out" if t.tied else f"out={t.outs[0]}"
                lines.append(f"{name} ({t.kind}, {axis}; ms by input width)")
                lines.append("  " + "  ".join(f"{w}: {row[0]:.4f}" for w, row in zip(t.ins, t.ms)))
                continue
            lines.append(f"{name} ({t.kind}, base {base_in}x{base_out}; ms, rows: input width, columns: output width)")
            lines.append(f"{'':>9}" + "".join(f"{o:>10}" for o in t.outs))
            lines += [f"{i:>9}" + "".join(f"{v:>10.4f}" for v in row) for i, row in zip(t.ins, t.ms)]
        med, worst, where = self.noise()
        summed = self.layers_ms(self.base_widths)
        lines.append(f"base model: measured {self.measured_ms:.4f} ms (spread {100 * self.measured_spread:.1f} %), "
                     f"sum of layers {summed:.4f} ms, rest {self.rest_ms():.4f} ms")
        lines.append("rest by feature volume (uniform cuts): "
                     + ", ".join(f"{v:.2f}: {ms:.4f} ms" for v, ms in self.rest))
        lines.append(f"noise: spread (interquartile range / median) over {self.repeats} repeats: median "
                     f"{100 * med:.1f} %, max {100 * worst:.1f} % ({where})")
        if self.path:
            lines.append(f"cache: {self.path}")
        return "\n".join(lines)


def check_clock(clock: str, device: torch.device) -> str:
    """``clock`` if usable: ``cpu`` (the CPU time of one thread, :func:`~fmprune.timing.clock_threads`)
    only on the CPU."""
    if clock not in CLOCKS:
        raise FmpruneError(f"unknown clock {clock!r} (available: {', '.join(CLOCKS)})")
    if clock == "cpu" and device.type != "cpu":
        raise FmpruneError(f"clock 'cpu' measures one thread on the CPU, not {device}: use the wall clock there")
    return clock


def check_grid(grid: str | tuple[float, ...] | list[float]) -> list[float]:
    """Fractions of each layer's base width in (0, 1], sorted; 1 always included."""
    try:
        values = [float(v) for v in (grid.split(",") if isinstance(grid, str) else grid)]
    except ValueError:
        raise FmpruneError(f"grid must be fractions separated by commas (e.g. 0.25,0.5,1), got {grid!r}") from None
    if not values or not all(0 < v <= 1 for v in values):
        raise FmpruneError(f"grid fractions must lie in (0, 1], got {grid!r}")
    return sorted(set(values) | {1.0})


def latency_table(model: nn.Module, graph: Graph, name: str, runtime: str = "eager", batch: int = 1,
                  device: str = "cpu", grid: str | tuple[float, ...] | list[float] = GRID, repeats: int = 20,
                  warmup: int = 3, clock: str = "wall", cache_dir: Path | str | None = None,
                  cache: bool = True, refresh: bool = False, progress=None) -> LatencyTable:
    """The latency table of ``model`` (traced into ``graph``), measured or read from the cache.

    Only layers whose widths pruning can change are timed (the others belong to the rest). Layers
    with the same module and input shape (a ResNet's repeated blocks) are timed once. ``name``
    keys the cache (with the architecture, so a pruned model of the same name is another table);
    ``cache_dir`` defaults to ``$FMPRUNE_HOME/latency``; ``cache=False`` neither reads nor writes."""
    check_runtimes([runtime])
    if not (isinstance(batch, int) and batch >= 1) or not (isinstance(repeats, int) and repeats >= 1):
        raise FmpruneError(f"batch and repeats must be positive integers, got {batch!r}, {repeats!r}")
    dev = torch.device(device)
    if dev.type != "cpu" and runtime not in GPU_RUNTIMES:
        raise FmpruneError(f"runtime {runtime!r} runs on the CPU only; on {device} use {' or '.join(GPU_RUNTIMES)}")
    fractions = check_grid(grid)
    check_clock(clock, dev)
    found = _layer_shapes(model, graph)
    shapes = {n: shape for n, (shape, _) in found.items()}
    widths = graph.layer_widths()
    moving = _moving_axes(graph)
    layers = [n for n in widths if n in shapes and (moving[n][0] or moving[n][1])]
    key = {"model": name, "runtime": runtime, "batch": batch, "device": str(dev), "torch": torch.__version__,
           "grid": fractions, "repeats": repeats, "warmup": warmup, "clock": clock, "format": 1,
           # the wall clock depends on the threads torch (and onnxruntime, which copies it) uses
           "threads": torch.get_num_threads() if clock == "wall" else 1,
           "architecture": [(n, repr(model.get_submodule(n)), shapes[n], moving[n]) for n in layers]}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = None
    if cache:
        cache_dir = cache_dir if cache_dir is not None else fmprune_home() / "latency"
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]
        path = Path(cache_dir) / f"{slug}-{runtime}-b{batch}-{dev.type}-{digest}.json"
        if path.exists() and not refresh:
            try:
                return LatencyTable.from_json(path.read_text(), str(path))
            except (OSError, ValueError, TypeError, KeyError):   # unreadable or another format: measure again
                pass
    with clock_threads(clock):   # the cpu clock: one thread
        sync = torch.cuda.synchronize if dev.type == "cuda" else None
        timed: dict[tuple, tuple[float, float]] = {}
        tables = {}
        for k, layer in enumerate(layers):
            if progress is not None:
                progress(k, len(layers), layer)
            tables[layer] = _measure_layer(model, layer, widths[layer], moving[layer], shapes[layer], fractions,
                                           runtime, batch, dev, repeats, warmup, sync, clock, timed)
        if progress is not None:
            progress(len(layers), len(layers), "whole model, uniform cuts")
        cuts = [_cut_uniformly(model, graph, f) for f in fractions]
        runners = [prepare([m.to(dev)], runtime, tuple(graph.example_inputs[0].shape[1:]))[0] for m, _ in cuts]
        x = torch.rand(batch, *graph.example_inputs[0].shape[1:], device=dev)
        whole = [_median_spread(t) for t in time_runners(runners, [x] * len(runners), repeats, warmup, sync, clock)]
        table = LatencyTable(name, runtime, batch, str(dev), torch.__version__, fractions, repeats, clock,
                             {n: widths[n] for n in layers}, tables, *whole[-1],
                             {n: found[n][1] for n in layers}, [])
        table.rest = [(table.volume(g.layer_widths()), ms - table.layers_ms(g.layer_widths()))
                      for (_, g), (ms, _) in zip(cuts, whole)]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(path, table.to_json().encode())
        table.path = str(path)
    return table


def _layer_shapes(model: nn.Module, graph: Graph) -> dict[str, tuple[tuple[int, ...], int]]:
    """Each adapter layer's input shape per example and its output positions per map (H·W of a
    conv; one eval forward of the example inputs; layers called more than once, or not on one
    tensor, are left out)."""
    shapes: dict[str, tuple[tuple[int, ...], int]] = {}
    calls: dict[str, int] = {}
    hooks = []
    widths = graph.layer_widths()
    for name in widths:
        try:
            module = model.get_submodule(name)
        except AttributeError:   # a tensor of the model (ParameterAdapter), not a module
            continue

        def hook(module, args, output, name=name):
            calls[name] = calls.get(name, 0) + 1
            if args and torch.is_tensor(args[0]) and torch.is_tensor(output) and widths[name][1]:
                shapes[name] = (tuple(args[0].shape[1:]), output.numel() // len(output) // widths[name][1])
        hooks.append(module.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(*graph.example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return {n: s for n, s in shapes.items() if calls[n] == 1}


def _moving_axes(graph: Graph) -> dict[str, tuple[bool, bool, bool]]:
    """Per layer: whether pruning can change its input width, its output width, and whether they
    move together (one group on both sides: BatchNorm, a depthwise conv)."""
    moving = {n: [False, False, False] for n in graph.layer_widths()}
    for group in graph.names:
        for layer, where in graph.positions(group, [0]).items():
            if layer in moving:
                moving[layer][0] |= bool(where["in"])
                moving[layer][1] |= bool(where["out"])
                moving[layer][2] |= bool(where["in"]) and bool(where["out"])
    return {n: tuple(v) for n, v in moving.items()}


def _measure_layer(model: nn.Module, name: str, base: tuple[int, int], moving: tuple[bool, bool, bool],
                   shape: tuple[int, ...], fractions: list[float], runtime: str, batch: int, dev: torch.device,
                   repeats: int, warmup: int, sync, clock: str, timed: dict) -> LayerLatency:
    module = model.get_submodule(name)
    adapter = adapter_for(module)
    tied = moving[2]
    axis = 1 if adapter.acts_on_channels(module, len(shape) + 1) else len(shape)

    def points(n: int, moves: bool) -> list[int]:
        return sorted({max(1, round(f * n)) for f in fractions}) if moves else [n]
    ins = points(base[0], moving[0])
    outs = [base[1]] if tied else points(base[1], moving[1])
    cells = ([(i, max(1, round(i * base[1] / base[0]))) for i in ins] if tied
             else [(i, o) for i in ins for o in outs])
    todo = []
    for i, o in cells:
        signature = (repr(module), shape, i, o)
        if signature in timed:
            continue
        cut = copy.deepcopy(module)
        keep_in = torch.arange(i) if moving[0] and i != base[0] else None
        keep_out = torch.arange(o) if moving[1] and o != base[1] else None
        if keep_in is not None or keep_out is not None:
            adapter.prune(cut, keep_in, keep_out, None)
        cut_shape = list(shape)
        cut_shape[axis - 1] = i
        todo.append((signature, cut.to(dev), tuple(cut_shape)))
    if todo:
        runners = [prepare([m], runtime, s)[0] for _, m, s in todo]
        inputs = [torch.rand(batch, *s, device=dev) for _, _, s in todo]
        samples = time_runners(runners, inputs, repeats, warmup, sync, clock)
        for (signature, _, _), t in zip(todo, samples):
            timed[signature] = _median_spread(t)
    values = {(i, o): timed[(repr(module), shape, i, o)] for i, o in cells}
    if tied:
        ms = [[values[c][0]] for c in cells]
        spread = [[values[c][1]] for c in cells]
    else:
        ms = [[values[i, o][0] for o in outs] for i in ins]
        spread = [[values[i, o][1] for o in outs] for i in ins]
    return LayerLatency(name, type(module).__name__, ins, outs, ms, spread, tied)


def _median_spread(seconds: list[float]) -> tuple[float, float]:
    """(median ms, interquartile range / median)."""
    ms = sorted(1000 * s for s in seconds)
    med = statistics.median(ms)
    if len(ms) < 4:
        return med, (ms[-1] - ms[0]) / med if med > 0 else 0.0
    q1, _, q3 = statistics.quantiles(ms, n=4)
    return med, (q3 - q1) / med if med > 0 else 0.0


def _cut_uniformly(model: nn.Module, graph: Graph, fraction: float) -> tuple[nn.Module, Graph]:
    """A copy of ``model`` with every group cut to ``fraction`` of its maps (at least one): where
    the rest (ops without a table) is measured."""
    cut = copy.deepcopy(model)
    cut_graph = trace(cut, graph.example_inputs, ignore=graph.ignore)
    for name in cut_graph.names:
        size = cut_graph.group(name).size
        keep = max(1, round(fraction * size))
        if keep < size:
            cut_graph.remove(name, list(range(keep, size)))
    return cut, cut_graph


def measure_model(model: nn.Module, graph: Graph, runtime: str, batch: int, device: str | torch.device = "cpu",
                  repeats: int = 20, warmup: int = 3, sync=None, clock: str = "wall") -> list[float]:
    """Seconds of every repeat of ``model``'s forward of a ``batch`` (shaped like the graph's
    example input) in ``runtime``; the model is back on its own device afterwards."""
    dev = torch.device(device)
    if sync is None and dev.type == "cuda":   # else only the kernel launches would be timed
        sync = torch.cuda.synchronize
    shape = tuple(graph.example_inputs[0].shape[1:])
    original = next(iter(model.parameters())).device
    try:
        with clock_threads(clock):
            runner = prepare([model.to(dev)], runtime, shape)[0]
            return time_runners([runner], [torch.rand(batch, *shape, device=dev)], repeats, warmup, sync, clock)[0]
    finally:
        model.to(original)


@dataclass(frozen=True)
class LatencyTarget:
    """A latency target: the predicted latency at most ``fraction`` of ``base_ms`` (the model's
    prediction when pruning began), both from ``table``."""

    table: LatencyTable
    fraction: float
    base_ms: float

    def missing(self, graph: Graph) -> float:
        """Milliseconds still to save (<= 0: met)."""
        return self.table.predict(graph) - self.fraction * self.base_ms


def latency_target(table: LatencyTable | None, base_ms: float | None, fraction: float | None) -> LatencyTarget | None:
    """The target ``fraction`` of ``base_ms`` (the model's predicted latency when pruning began;
    None without a fraction)."""
    if fraction is None:
        return None
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise FmpruneError(f"target latency must be a fraction in (0, 1] of the model's latency, got {fraction!r}")
    if table is None or base_ms is None:
        raise FmpruneError("a latency target needs a latency table (fmprune latency-table, fmprune.latency_table)")
    return LatencyTarget(table, float(fraction), base_ms)


def format_latencies(latency: dict) -> str:
    """The lines ``fmprune prune`` ends with: predicted and measured latency of the base and the
    pruned model (a run summary's ``extra["latency"]``)."""
    def speedup(kind: str) -> float:
        return latency[f"base_{kind}_ms"] / max(latency[f"final_{kind}_ms"], 1e-12)
    return (f"latency ({latency['runtime']}, batch {latency['batch']}, {latency['device']}, {latency['clock']} clock): "
            f"predicted {latency['base_predicted_ms']:.3f} -> {latency['final_predicted_ms']:.3f} ms "
            f"(x{speedup('predicted'):.2f}), measured {latency['base_measured_ms']:.3f} -> "
            f"{latency['final_measured_ms']:.3f} ms (x{speedup('measured'):.2f}); table noise "
            f"{100 * latency['table_noise']:.0f} % (median spread of its cells)" + _rounding_note(latency))


def _rounding_note(latency: dict) -> str:
    """A second line when the run chose the widths' multiple itself (the runtime's channel multiple)."""
    if not latency.get("round_to_chosen") or latency.get("round_to", 1) == 1:
        return ""
    return (f"\nwidths kept multiples of {latency['round_to']}: {latency['runtime']} runs other widths slower "
            "(docs/latency.md; --round-to 1 allows any)")
