"""Taylor products of a conv layer's maps without back-propagating through its consumer conv.

For a producer map c feeding a consumer conv whose output goes through ReLU and a
non-overlapping max-pool, the product the Taylor criterion needs is

    Σ_pos dC/dp_c · p_c = Σ_{o, j} dC/dz_o[w(o, j)] · U[c, o, w(o, j)]

where ``U[c, o, pos]`` is what input map c adds to the consumer's pre-activation z_o at ``pos``
and ``w(o, j)`` is the position that wins pooling window j of map o (the only position the
gradient reaches). ``U`` does not change while the producer's weights do not, so once computed,
each scoring round costs one batched dot product over the winners (N·C·O·J multiply-adds)
instead of a transposed convolution (N·C·O·H·W·K multiply-adds) and two ReLU/pool backwards.
Removing consumer maps drops rows; removing producer maps moves some winners, which are
re-gathered from ``U``. The numbers equal the dense backward's up to float summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...surgery import take
from ...graph.chain import Stage

MEMORY_BUDGET = 1_000_000_000  # bytes ``U`` may take; larger layers use the dense backward
_RELU_FUNCTIONS = {F.relu, torch.relu}


def winner_pool(stage: Stage) -> nn.MaxPool2d | None:
    """The stage's max-pool if its output is exactly maxpool(relu(conv)) with disjoint windows."""
    if not isinstance(stage.module, nn.Conv2d) or stage.norms:
        return None
    if len(stage.activation) != 1 or not (stage.activation[0] in _RELU_FUNCTIONS
                                          or isinstance(stage.activation[0], nn.ReLU)):
        return None
    pools = [op for op in stage.reduce if not isinstance(op, (nn.Dropout, nn.Identity))]
    if len(pools) != 1 or not isinstance(pools[0], nn.MaxPool2d):
        return None
    pool = pools[0]
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    stride = pair(pool.stride if pool.stride is not None else pool.kernel_size)
    if (pair(pool.kernel_size) != stride or pair(pool.padding) != (0, 0)
            or pair(pool.dilation) != (1, 1) or pool.ceil_mode):
        return None
    return pool


class WinnerContributions:
    """``U`` and its winners for one consumer conv stage over a fixed set of cached inputs."""

    def __init__(self, stage: Stage, pool: nn.MaxPool2d, inputs: torch.Tensor, z: torch.Tensor) -> None:
        self.stage, self.pool = stage, pool
        self.U = self._contributions(stage.module, inputs)     # N × C0 × O0 × P, original size
        self.c_alive = torch.arange(self.U.shape[1], device=self.U.device)
        self.o_alive = torch.arange(self.U.shape[2], device=self.U.device)
        self.winners = self._winners(z)                          # N × O × J positions in P
        self.T = self._gather_all()                              # N × C × O × J

    @staticmethod
    def fits(stage: Stage, inputs: torch.Tensor) -> bool:
        n, c = inputs.shape[:2]
        return n * c * stage.n_maps * stage.map_numel * 4 <= MEMORY_BUDGET

    @staticmethod
    def _contributions(conv: nn.Conv2d, x: torch.Tensor, chunk: int = 125) -> torch.Tensor:
        """What each input map alone adds to each output map: a grouped convolution (one group
        per input map), several times faster than unfolding the input."""
        w = conv.weight.detach()
        o, c = w.shape[:2]
        per_input = w.transpose(0, 1).reshape(c * o, 1, *w.shape[2:])
        parts = []
        for s in range(0, len(x), chunk):
            u = F.conv2d(x[s:s + chunk], per_input, None, conv.stride, conv.padding, conv.dilation, groups=c)
            parts.append(u.view(u.shape[0], c, o, -1))                    # n × C × O × P
        return torch.cat(parts)

    def _winners(self, z: torch.Tensor) -> torch.Tensor:
        p = self.pool
        _, idx = F.max_pool2d(torch.relu(z), p.kernel_size, p.stride, return_indices=True)
        return idx.flatten(2)

    def _gather_all(self) -> torch.Tensor:
        n, o, j = self.winners.shape
        T = torch.empty(n, len(self.c_alive), o, j, device=self.U.device)
        for ci, c in enumerate(self.c_alive.tolist()):
            T[:, ci] = self.U[:, c].index_select(1, self.o_alive).gather(2, self.winners)
        return T

    def input_maps_removed(self, keep: torch.Tensor, z: torch.Tensor) -> None:
        """Producer maps were removed (``keep`` stay) and the consumer's ``z`` changed with them."""
        self.c_alive = self.c_alive[keep.to(self.U.device)]
        self.T = take(self.T, 1, keep)
        winners = self._winners(z)
        n, o, j = (winners != self.winners).nonzero(as_tuple=True)
        if len(n):
            pos = winners[n, o, j]
            moved = self.U[n[:, None], self.c_alive[None, :], self.o_alive[o][:, None], pos[:, None]]
            self.T[n, :, o, j] = moved
        self.winners = winners

    def output_maps_removed(self, keep: torch.Tensor) -> None:
        self.o_alive = self.o_alive[keep.to(self.U.device)]
        self.T = take(self.T, 2, keep)
        self.winners = take(self.winners, 1, keep)

    def grad_dot_input(self, grad_p: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Per example and producer map, Σ dC/dx · x over the map (x the consumer's input),
        from dC/dp and p, the gradient at and the value of the consumer stage's pooled output."""
        n, c, o, j = self.T.shape
        g_winners = (grad_p * (p > 0)).reshape(n, o * j, 1)   # ReLU's gate at the winners
        return torch.bmm(self.T.view(n, c, o * j), g_winners).squeeze(2)
