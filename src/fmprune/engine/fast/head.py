"""Taylor products of the layers feeding a two-layer linear head, without a backward pass per step.

For a chain ending in ``... → stage h-2 → stage h-1 → fc_h → ReLU → fc_L`` (LeNet: conv1, conv2,
fc1, fc2), the gradient of the per-example loss at the logits, ``g[n, k]`` (K = classes), reaches
every earlier feature map linearly:

    Σ_f dC/dp_{h-1}[n, f] · p_{h-1}[n, f]  over map c  =  Σ_k g[n, k] · R_V[n, k, c]
    R_V[n, k, c] = Σ_u J[n, k, u] · V[n, u, c],   J[n, k, u] = W_L[k, u] · [z_h[n, u] > 0],
    V[n, u, c]   = Σ_{f ∈ c} W_h[u, f] · p_{h-1}[n, f]

and, when stage h-1 is ``maxpool(relu(conv))`` with disjoint windows (see ``winners``), the same
for stage h-2 with ``Y[n, u, c0] = Σ_{o, j} W_h[u, (o, j)] · gate[n, o, j] · T[n, c0, o, j]``, T the
contribution of input map c0 to output map o at the position winning pooling window j.

``R`` is N × K × C: a scoring round costs N·K·C multiply-adds instead of a backward pass through
fc_h and the conv (N·U·F + N·C0·O·P·K). Removing units of fc_h — most steps of a whole-network run
— leaves J and V of the other units unchanged, so ``R`` loses exactly the removed units' terms
(subtracted, accumulated in float64). Removing maps of earlier stages changes the gates, so ``R`` is
recomputed; ``Y`` (N × U × C0) loses the removed conv maps' terms, and is rebuilt when stage h-2 or
earlier changes. Numbers equal the dense backward's up to float summation order.

Surgery replaces parameters and never writes into them, so the weights held here are the ones the
cached activations were computed with until :meth:`HeadProjection.after_removal` refreshes them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...graph.chain import Stage, Topology
from ...surgery import take
from .winners import winner_pool

CHUNK = 100        # examples per block when building the N × U × C tensors (bounds transient memory)
_RELU_FUNCTIONS = {F.relu, torch.relu}


def _is_relu(op) -> bool:
    return op in _RELU_FUNCTIONS or isinstance(op, nn.ReLU)


def head_index(topology: Topology) -> int | None:
    """Index h of the first of the last two stages when they form ``fc_h → ReLU → fc_L`` (dropout
    allowed) fed by at least one earlier stage; None when the chain ends otherwise."""
    stages = topology.stages
    h = len(stages) - 2
    if h < 1:
        return None
    head, last = stages[h], stages[h + 1]
    if not (isinstance(head.module, nn.Linear) and isinstance(last.module, nn.Linear)) or last.flatten_input:
        return None
    if head.norms or len(head.activation) != 1 or not _is_relu(head.activation[0]):
        return None
    if any(not isinstance(op, (nn.Dropout, nn.Identity)) for op in head.reduce):
        return None
    return h


class HeadProjection:
    """``R`` for stage h-1 (and h-2 when its consumer pools disjointly) over one cached split.

    ``cache`` is the :class:`~fmprune.engine.fast.chain_engine.ActivationCache` it reads (``z``, ``p``)."""

    def __init__(self, topology: Topology, h: int, cache) -> None:
        self.topology, self.h, self.cache = topology, h, cache
        self.pool = winner_pool(topology.stages[h - 1]) if h >= 2 and _plain_padding(topology.stages[h - 1]) else None
        self.lowest = h - 2 if self.pool is not None else h - 1
        self._refresh_weights()
        self.Y: torch.Tensor | None = None      # N × C0 × U' (U' ≥ U: rows of removed units linger)
        self.y_rows = torch.empty(0, dtype=torch.long)   # column of Y for each alive unit of fc_h
        self._old_winners: tuple[torch.Tensor, torch.Tensor] | None = None
        self._p_t: torch.Tensor | None = None
        if self.pool is not None:
            self._build_y()
        self._recompute_r()

    # -- the stages and weights involved
    @property
    def stages(self) -> list[Stage]:
        return self.topology.stages

    def _refresh_weights(self) -> None:
        s = self.stages
        self.w_h = s[self.h].module.weight.detach()
        self.w_last = s[self.h + 1].module.weight.detach()
        self.w_conv = s[self.h - 1].module.weight.detach() if self.pool is not None else None

    def _features(self, p: torch.Tensor) -> torch.Tensor:
        """p_{h-1} as N × C × F (F features per map after the flatten)."""
        return p.reshape(len(p), -1, self.stages[self.h].flatten_factor)

    def _w_h_maps(self, w_h: torch.Tensor) -> torch.Tensor:
        """W_h as U × C × F."""
        return w_h.view(len(w_h), -1, self.stages[self.h].flatten_factor)

    # -- building
    def _jacobian(self, start: int, stop: int, units: torch.Tensor | None = None,
                  w_last: torch.Tensor | None = None) -> torch.Tensor:
        """J[n, k, u] = W_L[k, u] · [z_h[n, u] > 0] for examples start:stop (all units or ``units``)."""
        z = self.cache.z[self.h][start:stop]
        w = self.w_last if w_last is None else w_last
        if units is not None:
            z, w = z[:, units], w[:, units]
        return w.unsqueeze(0) * (z > 0).to(w.dtype).unsqueeze(1)

    def _v(self, start: int, stop: int, w_h: torch.Tensor) -> torch.Tensor:
        """V[n, u, c] for examples start:stop and the units whose rows ``w_h`` holds."""
        w = self._w_h_maps(w_h)                                           # u × C × F
        if self._p_t is None:   # p_{h-1} as C × N × F, kept until p_{h-1} changes
            self._p_t = self._features(self.cache.p[self.h - 1]).transpose(0, 1).contiguous()
        return torch.matmul(self._p_t[:, start:stop], w.permute(1, 2, 0)).permute(1, 2, 0)  # n × u × C

    def _winners(self, z: torch.Tensor) -> torch.Tensor:
        p = self.pool
        return F.max_pool2d(torch.relu(z), p.kernel_size, p.stride, return_indices=True)[1].flatten(2)

    def _gated_t(self, x: torch.Tensor, z: torch.Tensor, p: torch.Tensor, w_conv: torch.Tensor) -> torch.Tensor:
        """gate · T for a block of examples: n × C0 × O × J, from the conv's input ``x``, its
        pre-activation ``z``, its pooled output ``p`` and its weights (O × C0 × kh × kw)."""
        conv = self.stages[self.h - 1].module
        o, c0 = w_conv.shape[:2]
        per_input = w_conv.transpose(0, 1).reshape(c0 * o, 1, *w_conv.shape[2:])  # each input map alone
        u = F.conv2d(x, per_input, None, conv.stride, conv.padding, conv.dilation, groups=c0)
        u = u.view(len(x), c0, o, -1)                                              # n × C0 × O × P
        win = self._winners(z)                                                     # n × O × J
        t = u.gather(3, win.unsqueeze(1).expand(-1, c0, -1, -1))
        return t * (p.flatten(2) > 0).to(t.dtype).unsqueeze(1)

    def _build_y(self) -> None:
        """Y[n, c0, u] = Σ_{o,j} W_h[u, (o,j)] · gate · T[n, c0, o, j]: one GEMM per block."""
        cache, h = self.cache, self.h
        n = len(cache.p[h])
        self.Y = None
        self.Y = torch.empty(n, self.w_conv.shape[1], self.w_h.shape[0])
        for s in range(0, n, CHUNK):
            e = min(n, s + CHUNK)
            tg = self._gated_t(cache.p[h - 2][s:e], cache.z[h - 1][s:e], cache.p[h - 1][s:e], self.w_conv)
            torch.matmul(tg.flatten(2), self.w_h.t(), out=self.Y[s:e])              # n × C0 × U
        self.y_rows = torch.arange(self.Y.shape[2])

    def _recompute_r(self) -> None:
        """R from the current caches: N × K × (C_{h-1} + C_{h-2}), float64 so that the
        subtractions of later unit removals do not accumulate rounding."""
        n = len(self.cache.p[self.h])
        c1 = self.w_h.shape[1] // self.stages[self.h].flatten_factor
        c0 = self.Y.shape[1] if self.Y is not None else 0
        self.r = torch.empty(n, self.w_last.shape[0], c1 + c0, dtype=torch.float64)
        dense = self.Y is not None and torch.equal(self.y_rows, torch.arange(self.Y.shape[2]))
        for s in range(0, n, CHUNK):
            e = min(n, s + CHUNK)
            j = self._jacobian(s, e)                                                 # n × K × U
            self.r[s:e, :, :c1] = torch.bmm(j, self._v(s, e, self.w_h))
            if self.Y is not None:
                y = self.Y[s:e] if dense else self.Y[s:e][:, :, self.y_rows]      # n × C0 × U
                self.r[s:e, :, c1:] = torch.bmm(y, j.transpose(1, 2)).transpose(1, 2)

    def _a(self, start: int, stop: int, units: torch.Tensor | None = None, w_h: torch.Tensor | None = None) -> torch.Tensor:
        """[V | Yᵀ] for examples start:stop and all alive units (or ``units`` with their rows
        ``w_h``): n × u × (C_{h-1} + C_{h-2})."""
        v = self._v(start, stop, self.w_h if units is None else w_h)
        if self.Y is None:
            return v
        rows = self.y_rows if units is None else self.y_rows[units]
        return torch.cat([v, self.Y[start:stop][:, :, rows].transpose(1, 2)], 2)

    # -- scoring
    def grad_dot(self, g: torch.Tensor) -> dict[int, torch.Tensor]:
        """Σ dC/dp · p per example and map of stages h-1 (and h-2), from dC/dz_L = ``g`` (N × K)."""
        both = torch.bmm(g.double().unsqueeze(1), self.r).squeeze(1).to(g.dtype)
        c = self.w_h.shape[1] // self.stages[self.h].flatten_factor
        out = {self.h - 1: both[:, :c]}
        if self.Y is not None:
            out[self.h - 2] = both[:, c:]
        return out

    # -- removals (the cache calls these around its own update)
    def before_removal(self, index: int, keep: torch.Tensor) -> None:
        """Maps of stage ``index`` were cut (``keep`` stay); the caches still hold the old values
        and ``self`` the old weights."""
        self._old_winners = None
        if index == self.h:
            self._units_removed(keep)
        elif index == self.h - 1 and self.Y is not None:
            self._conv_maps_removed(keep)
        elif index == self.h - 2 and self.Y is not None:
            z, p = self.cache.z[self.h - 1], self.cache.p[self.h - 1]
            self._old_winners = (self._winners(z), p.flatten(2) > 0)

    def after_removal(self, index: int, keep: torch.Tensor) -> None:
        """The caches are updated: refresh weights, rebuild what the removal invalidated."""
        self._refresh_weights()
        if index == self.h:
            return
        self._p_t = None
        if index == self.h - 2 and self._old_winners is not None:
            self._input_maps_removed(keep, *self._old_winners)
            self._old_winners = None
        elif index < self.h - 2 and self.Y is not None:
            self._build_y()           # the conv's input changed: winners, gates and T move
        self._recompute_r()           # the gates of fc_h changed

    def _units_removed(self, keep: torch.Tensor) -> None:
        """Units of fc_h go: subtract their terms from R; J and V of the others do not change."""
        drop = _complement(keep, self.w_h.shape[0])
        n = len(self.cache.p[self.h])
        step = max(1, CHUNK * 64 // len(drop))       # one block for the usual few units
        w_rows = self.w_h[drop]
        for s in range(0, n, step):
            e = min(n, s + step)
            j = self._jacobian(s, e, drop).double()                                  # n × K × d
            self.r[s:e].baddbmm_(j, self._a(s, e, drop, w_rows).double(), alpha=-1)
        self.y_rows = self.y_rows[keep]

    def _conv_maps_removed(self, keep: torch.Tensor) -> None:
        """Maps of stage h-1 go: Y loses their terms (the other maps' winners and gates stay)."""
        h, cache = self.h, self.cache
        drop = _complement(keep, self.w_conv.shape[0])
        self.Y = self.Y[:, :, self.y_rows]                                      # compact: alive units only
        self.y_rows = torch.arange(self.Y.shape[2])
        w_drop = self._w_h_maps(self.w_h)[:, drop, :].reshape(len(self.w_h), -1)  # U × (d·J)
        z_drop, p_drop = take(cache.z[h - 1], 1, drop), take(cache.p[h - 1], 1, drop)
        n = len(cache.p[h])
        for s in range(0, n, CHUNK):
            e = min(n, s + CHUNK)
            tg = self._gated_t(cache.p[h - 2][s:e], z_drop[s:e], p_drop[s:e], self.w_conv[drop])  # n × C0 × d × J
            self.Y[s:e] -= torch.matmul(tg.flatten(2), w_drop.t())                  # n × C0 × U

    def _input_maps_removed(self, keep: torch.Tensor, old_win: torch.Tensor, old_gate: torch.Tensor) -> None:
        """Maps of stage h-2 went and stage h-1's pre-activation moved: for the surviving input
        maps T is unchanged, so Y changes only where a pooling window's winner moved or its gate
        flipped; those terms are swapped (or Y rebuilt when too many moved)."""
        h, cache = self.h, self.cache
        win = self._winners(cache.z[h - 1])
        gate = cache.p[h - 1].flatten(2) > 0
        changed = (gate | old_gate) & ((win != old_win) | (gate != old_gate))
        n_e, o_e, j_e = changed.nonzero(as_tuple=True)
        if len(n_e) * 4 > changed.numel():
            self._build_y()
            return
        self.Y = self.Y[:, keep][:, :, self.y_rows]
        self.y_rows = torch.arange(self.Y.shape[2])
        x = self._padded(cache.p[h - 2])
        f_e = o_e * win.shape[2] + j_e
        delta = torch.empty(len(n_e), self.Y.shape[1])
        for s in range(0, len(n_e), 4096):
            b = slice(s, s + 4096)
            nb, ob, jb = n_e[b], o_e[b], j_e[b]
            new = self._t_at(x, self.w_conv, nb, ob, win[nb, ob, jb]) * gate[nb, ob, jb].unsqueeze(1)
            delta[b] = new - self._t_at(x, self.w_conv, nb, ob, old_win[nb, ob, jb]) * old_gate[nb, ob, jb].unsqueeze(1)
        self._add_sparse(n_e, f_e, delta)

    def _add_sparse(self, n_e: torch.Tensor, f_e: torch.Tensor, delta: torch.Tensor) -> None:
        """Y[n, :, u] += Σ_e delta[e] · W_h[u, f_e] over the entries e of example n (``n_e``
        sorted): batched products over blocks of examples with similar entry counts, each block
        padded to its largest count with a zero entry."""
        n, c0, units = self.Y.shape
        counts = torch.bincount(n_e, minlength=n)
        starts = torch.cumsum(counts, 0) - counts
        delta = torch.cat([delta, delta.new_zeros(1, c0)])                         # entry E: zero
        w_t = torch.cat([self.w_h.t(), self.w_h.new_zeros(1, units)])              # row F: zero
        f_e = torch.cat([f_e, f_e.new_full((1,), len(w_t) - 1)])
        order = torch.argsort(counts)
        order = order[counts[order] > 0]
        i = 0
        while i < len(order):
            width = int(counts[order[min(len(order), i + 64) - 1]])
            b = max(1, min(len(order) - i, 2 ** 22 // (width * units)))
            ex = order[i:i + b]
            width = int(counts[ex[-1]])
            k = torch.arange(width)
            idx = torch.where(k < counts[ex].unsqueeze(1), starts[ex].unsqueeze(1) + k, len(delta) - 1)
            self.Y.index_add_(0, ex, torch.bmm(delta[idx].transpose(1, 2), w_t[f_e[idx]]))
            i += b

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """The conv's input zero-padded, channels last: N × (Hp·Wp) × C0, so that gathering one
        input position reads C0 contiguous values."""
        ph, pw = self.stages[self.h - 1].module.padding
        x = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
        return x.permute(0, 2, 3, 1).reshape(len(x), -1, x.shape[1])

    def _t_at(self, x_pad: torch.Tensor, w_conv: torch.Tensor, n: torch.Tensor, o: torch.Tensor,
              pos: torch.Tensor) -> torch.Tensor:
        """T for single entries: what each input map adds to output map ``o[e]`` (a row of
        ``w_conv``) of example ``n[e]`` at output position ``pos[e]`` (flat), E × C0."""
        conv = self.stages[self.h - 1].module
        (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
        width = self.cache.z[self.h - 1].shape[3]
        wp = self.cache.p[self.h - 2].shape[3] + 2 * conv.padding[1]
        k_off = (torch.arange(kh) * dh * wp).unsqueeze(1) + torch.arange(kw) * dw    # kh × kw
        base = (pos // width) * sh * wp + (pos % width) * sw
        idx = base.unsqueeze(1) + k_off.flatten().unsqueeze(0)                        # E × K
        patch = x_pad[n.unsqueeze(1), idx]                                             # E × K × C0
        return (patch * w_conv.flatten(2)[o].transpose(1, 2)).sum(1)


def _plain_padding(stage: Stage) -> bool:
    """Zero padding given as numbers (T is gathered from a zero-padded copy of the input)."""
    m = stage.module
    return isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and not isinstance(m.padding, str)


def _complement(keep: torch.Tensor, size: int) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[keep] = False
    return mask.nonzero().flatten()
