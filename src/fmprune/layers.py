"""Layer adapters: what pruning needs to know about one layer type, registered by type.

An adapter answers four questions for its layer, and nothing else (it knows no group policy):

* how channel *labels* flow through it (``output_labels``): a Conv2d creates new output maps, a
  BatchNorm passes its input's maps through, a depthwise conv ties each output to its input;
* how to cut it (``prune``): keep some input and/or output positions, in place;
* what one call costs (``macs``) in multiply-accumulates, from its current sizes;
* which weights make its output maps (``filters``), for weight-based criteria.

``register_layer(MyLayer, MyAdapter())`` teaches fmprune a custom layer without touching it; the
tracer then treats ``MyLayer`` as a leaf and never looks inside it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import FmpruneError
from .surgery import Slicer, slice_param, take

Labels = np.ndarray  # one integer label per position of a tensor's channel axis


class LabelContext(Protocol):
    """What the tracer offers adapters while labels flow: new labels, and pinning."""

    def fresh(self, n: int) -> Labels:
        """``n`` new labels: maps this layer creates."""

    def pin(self, labels: Labels, reason: str) -> None:
        """Mark maps as never removable (the reason is kept for ``Graph.notes``)."""


class LayerAdapter:
    """Base adapter: override what differs. ``channelwise`` layers keep their input's labels."""

    channelwise = False   # output map i is a function of input map i alone (BatchNorm, PReLU)

    def output_labels(self, module: nn.Module, inputs: Labels, ctx: LabelContext, name: str) -> Labels:
        return inputs if self.channelwise else ctx.fresh(self.out_size(module))

    def out_size(self, module: nn.Module) -> int:
        raise NotImplementedError

    def acts_on_channels(self, module: nn.Module, input_rank: int) -> bool:
        """Whether the layer's input/output channels are dim 1 of a tensor of this rank."""
        return True

    def channel_axis(self, module: nn.Module, input_rank: int) -> int | None:
        """The axis of an input of this rank whose positions the layer reads as its channels: 1
        for convolutions and BatchNorm, the last for a Linear or a LayerNorm (channels-last
        blocks after a permute); None when it leaves the channel axis alone."""
        return 1 if self.acts_on_channels(module, input_rank) else None

    def prune(self, module: nn.Module, keep_in: torch.Tensor | None, keep_out: torch.Tensor | None,
              optimizer: torch.optim.Optimizer | None) -> None:
        """Keep only ``keep_in`` input / ``keep_out`` output positions (None: unchanged)."""
        raise NotImplementedError

    def folds_constants(self, module: nn.Module) -> bool:
        """Whether removing an input position that holds a constant (a removed map after a bias or
        sigmoid) can move its contribution into the layer exactly (``fold_constant``); if not,
        such maps are kept."""
        return False

    def fold_constant(self, module: nn.Module, positions: torch.Tensor, values: torch.Tensor) -> None:
        """Add what input ``positions`` holding ``values`` contribute to every output, so the
        positions can then be cut without changing the layer's output."""
        raise NotImplementedError

    def cost(self, module: nn.Module, output_shape: tuple[int, ...], n_in: int, n_out: int) -> tuple[int, int]:
        """(parameters, multiply-accumulates per example) of the layer if it had ``n_in`` input
        and ``n_out`` output positions; ``output_shape`` gives the spatial size of one call."""
        return 0, 0

    def filters(self, module: nn.Module) -> torch.Tensor | None:
        """One row of weights per output map (for min_weight / l1_filter), or None."""
        return None

    def output_axis(self, module: nn.Module, param: str) -> int:
        """The axis of parameter ``param`` (e.g. ``"weight"``) that indexes the output maps."""
        return 0


def _kept_whole(module: nn.Module, inputs: Labels, ctx: LabelContext, what: str) -> Labels:
    """A layer whose channels cannot be cut evenly: its input and output maps are all kept."""
    ctx.pin(inputs, f"{what} keeps its input maps")
    out = ctx.fresh(module.out_channels)
    ctx.pin(out, f"{what} keeps its output maps")
    return out


def _spatial(output_shape: tuple[int, ...]) -> int:
    return int(np.prod(output_shape[2:], dtype=np.int64)) if len(output_shape) > 2 else 1


def _rows(keep: torch.Tensor, dim: int) -> Slicer:
    return lambda t: take(t, dim, keep)


class ConvAdapter(LayerAdapter):
    """Conv1d/2d/3d. groups == 1: a producer. groups == in_channels (depthwise, any multiplier):
    output channel j belongs to input channel j // multiplier, so the labels are tied. Other
    grouped convs keep all their channels (pinned): removing maps would unbalance the groups."""

    def out_size(self, module: nn.Conv2d) -> int:
        return module.out_channels

    @staticmethod
    def depthwise(module: nn.Conv2d) -> bool:
        return module.groups > 1 and module.groups == module.in_channels

    def output_labels(self, module, inputs, ctx, name):
        if module.groups == 1:
            return ctx.fresh(module.out_channels)
        if self.depthwise(module):
            return np.repeat(inputs, module.out_channels // module.in_channels)
        return _kept_whole(module, inputs, ctx, f"grouped convolution {name!r} (groups={module.groups})")

    def prune(self, module, keep_in, keep_out, optimizer):
        if keep_out is not None:
            slice_param(module, "weight", _rows(keep_out, 0), optimizer)
            slice_param(module, "bias", _rows(keep_out, 0), optimizer)
            module.out_channels = len(keep_out)
        if keep_in is not None:
            if self.depthwise(module):
                module.groups = len(keep_in)
            else:
                slice_param(module, "weight", _rows(keep_in, 1), optimizer)
            module.in_channels = len(keep_in)

    def cost(self, module, output_shape, n_in, n_out):
        kernel = int(np.prod(module.kernel_size))
        per_group = 1 if self.depthwise(module) else n_in // module.groups   # inputs each output reads
        weights = n_out * per_group * kernel
        biases = n_out if module.bias is not None else 0
        return weights + biases, weights * _spatial(output_shape)

    def filters(self, module):
        return module.weight.detach().flatten(1)


class ConvTransposeAdapter(ConvAdapter):
    """ConvTranspose1d/2d/3d: weight is (in, out / groups, *kernel), so the roles swap dims."""

    def output_labels(self, module, inputs, ctx, name):
        if module.groups == 1:
            return ctx.fresh(module.out_channels)
        return _kept_whole(module, inputs, ctx, f"grouped transposed convolution {name!r} (groups={module.groups})")

    def prune(self, module, keep_in, keep_out, optimizer):
        if keep_out is not None:
            slice_param(module, "weight", _rows(keep_out, 1), optimizer)
            slice_param(module, "bias", _rows(keep_out, 0), optimizer)
            module.out_channels = len(keep_out)
        if keep_in is not None:
            slice_param(module, "weight", _rows(keep_in, 0), optimizer)
            module.in_channels = len(keep_in)

    def cost(self, module, output_shape, n_in, n_out):
        kernel = int(np.prod(module.kernel_size))
        weights = n_in * (n_out // module.groups) * kernel
        biases = n_out if module.bias is not None else 0
        # every input position scatters its products: input positions = output positions / stride
        inputs = _spatial(output_shape) // int(np.prod(module.stride))
        return weights + biases, weights * inputs

    def filters(self, module):
        return module.weight.detach().transpose(0, 1).flatten(1)

    def output_axis(self, module, param):
        return 1 if param == "weight" and module.groups == 1 else 0


class LinearAdapter(LayerAdapter):
    """nn.Linear on (N, features) inputs: a producer of ``out_features`` maps."""

    def out_size(self, module: nn.Linear) -> int:
        return module.out_features

    def prune(self, module, keep_in, keep_out, optimizer):
        if keep_out is not None:
            slice_param(module, "weight", _rows(keep_out, 0), optimizer)
            slice_param(module, "bias", _rows(keep_out, 0), optimizer)
            module.out_features = len(keep_out)
        if keep_in is not None:
            slice_param(module, "weight", _rows(keep_in, 1), optimizer)
            module.in_features = len(keep_in)

    def acts_on_channels(self, module, input_rank):
        return input_rank == 2

    def channel_axis(self, module, input_rank):
        return input_rank - 1   # its features are the last axis; every other axis is a row

    def folds_constants(self, module):
        return module.bias is not None   # a constant input feature is a bias term: exact

    @torch.no_grad()
    def fold_constant(self, module, positions, values):
        weight = module.weight.index_select(1, positions.to(module.weight.device))
        module.bias.add_(weight @ values.to(weight))

    def cost(self, module, output_shape, n_in, n_out):
        weights = n_in * n_out
        rows = int(np.prod(output_shape[1:-1], dtype=np.int64))   # (N, H, W, C): one row per pixel
        return weights + (n_out if module.bias is not None else 0), weights * rows

    def filters(self, module):
        return module.weight.detach()


class ChannelwiseAdapter(LayerAdapter):
    """Per-channel layers with per-channel tensors (BatchNorm, InstanceNorm, PReLU with one slope
    per channel): the same positions go in and out; ``size_attrs`` are set to the new count."""

    channelwise = True

    def __init__(self, tensors: tuple[str, ...], size_attrs: tuple[str, ...]) -> None:
        self.tensors, self.size_attrs = tensors, size_attrs

    def prune(self, module, keep_in, keep_out, optimizer):
        keep = keep_out if keep_out is not None else keep_in
        if keep is None:
            return
        for attr in self.tensors:
            value = getattr(module, attr, None)
            if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] > 1:
                slice_param(module, attr, _rows(keep, 0), optimizer)
        for attr in self.size_attrs:
            setattr(module, attr, len(keep))

    def cost(self, module, output_shape, n_in, n_out):
        per_channel = sum(1 for attr in self.tensors
                          if isinstance(getattr(module, attr, None), nn.Parameter) and getattr(module, attr).numel() > 1)
        return per_channel * n_out, 0


class PReLUAdapter(ChannelwiseAdapter):
    """PReLU: one shared slope passes any map through; one slope per channel is cut with them."""

    def __init__(self) -> None:
        super().__init__(("weight",), ("num_parameters",))

    def prune(self, module, keep_in, keep_out, optimizer):
        if module.num_parameters > 1:
            super().prune(module, keep_in, keep_out, optimizer)

    def cost(self, module, output_shape, n_in, n_out):
        return (n_out if module.num_parameters > 1 else 1), 0


class NormAcrossChannelsAdapter(LayerAdapter):
    """GroupNorm whose statistics mix channels: removing one map would change the
    others, so the maps through it are kept (pinned). GroupNorm with one channel per group is
    per-channel and prunes like BatchNorm."""

    channelwise = True
    _per_channel = ChannelwiseAdapter(("weight", "bias"), ("num_groups", "num_channels"))

    @staticmethod
    def per_channel(module: nn.Module) -> bool:
        return isinstance(module, nn.GroupNorm) and module.num_groups == module.num_channels

    def output_labels(self, module, inputs, ctx, name):
        if not self.per_channel(module):
            ctx.pin(inputs, f"{type(module).__name__} {name!r} normalises across channels: "
                            "its maps are kept")
        return inputs

    def prune(self, module, keep_in, keep_out, optimizer):
        self._per_channel.prune(module, keep_in, keep_out, optimizer)

    def cost(self, module, output_shape, n_in, n_out):
        if self.per_channel(module):   # its maps can go: a weight and a bias per map left
            return self._per_channel.cost(module, output_shape, n_in, n_out)
        return sum(p.numel() for p in module.parameters(recurse=False)), 0   # kept whole


class LayerNormAdapter(ChannelwiseAdapter):
    """LayerNorm over one axis: the last (``nn.LayerNorm(C)``, channels-last blocks such as
    ConvNeXt's after a permute) or ``axis`` (torchvision's ``LayerNorm2d`` normalises axis 1).
    Its statistics run over all channels, so removing a map is *not* zeroing it: pruning slices
    the affine parameters and the norm then normalises over the kept channels (the model with the
    removed maps left out of the statistics, which is what a LayerNorm of the smaller width is).
    A LayerNorm over several axes, or a subclass with its own forward and no ``axis``, mixes
    channels in ways fmprune does not know: its maps are kept."""

    def __init__(self, axis: int | None = None) -> None:
        super().__init__(("weight", "bias"), ())
        self.axis = axis

    def _known(self, module: nn.Module) -> bool:
        """Whether it normalises exactly one axis that fmprune knows."""
        return len(module.normalized_shape) == 1 and (
            self.axis is not None or type(module).forward is nn.LayerNorm.forward)

    def channel_axis(self, module, input_rank):
        if not self._known(module):
            return 1   # taken as normalising the channels, which output_labels then keeps
        return self.axis % input_rank if self.axis is not None else input_rank - 1

    def output_labels(self, module, inputs, ctx, name):
        if not self._known(module):
            ctx.pin(inputs, f"{type(module).__name__} {name!r} normalises across channels over "
                            f"{tuple(module.normalized_shape)}: its maps are kept (a subclass normalising one "
                            "axis alone: fmprune.register_layer(ItsClass, fmprune.layers.LayerNormAdapter(axis=...)))")
        return inputs

    def prune(self, module, keep_in, keep_out, optimizer):
        keep = keep_out if keep_out is not None else keep_in
        if keep is not None and self._known(module):
            super().prune(module, keep_in, keep_out, optimizer)
            module.normalized_shape = (len(keep),)


class ParameterAdapter(ChannelwiseAdapter):
    """A tensor of a module used directly in its forward with one entry per channel (ConvNeXt's
    ``layer_scale`` of shape (C, 1, 1), a learned offset): cut along ``dim`` with the maps it
    scales or shifts. ``mirrors`` hold the same tensor under the same name (the traced graph
    module's copy, which evaluation replays) and are given the cut one."""

    def __init__(self, attr: str, dim: int, mirrors: tuple[nn.Module, ...] = ()) -> None:
        super().__init__((attr,), ())
        self.attr, self.dim, self.mirrors = attr, dim, mirrors

    def prune(self, module, keep_in, keep_out, optimizer):
        keep = keep_out if keep_out is not None else keep_in
        if keep is None:
            return
        slice_param(module, self.attr, _rows(keep, self.dim), optimizer)
        for mirror in self.mirrors:
            if mirror is not module:
                setattr(mirror, self.attr, getattr(module, self.attr))

    def cost(self, module, output_shape, n_in, n_out):
        value = getattr(module, self.attr)
        return value.numel() // value.shape[self.dim] * n_out, 0


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` once fmprune has cut it. torch's forward derives the head size
    from the query's width (``embed_dim // num_heads``), so it cannot run with heads removed
    (inner width ``num_heads * head_dim`` below the embedding) nor with embedding channels removed
    (``head_dim`` would change): this forward computes the same attention with ``head_dim`` as
    it was. The pruned module takes this class in place (``module.__class__``), so it stays the
    same object, its parameters and optimizer state where they were."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        heads, size = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        n, length, _ = query.shape
        q, k, v = (F.linear(t, w, b).view(n, t.shape[1], heads, size).transpose(1, 2)
                   for t, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v)))
        scores = (q * size ** -0.5) @ k.transpose(-2, -1)          # (N, H, L, S)
        scores = scores + _attention_bias(attn_mask, key_padding_mask, is_causal, scores)
        weights = F.dropout(scores.softmax(-1), self.dropout, self.training)
        out = (weights @ v).transpose(1, 2).reshape(n, length, heads * size)
        out = self.out_proj(out)
        if unbatched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = weights.mean(1) if average_attn_weights else weights
        return out, weights.squeeze(0) if unbatched else weights


def _attention_bias(attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, is_causal: bool,
                    scores: torch.Tensor) -> torch.Tensor:
    """What torch's attention adds to the scores (N, H, L, S): boolean masks (True: not attended)
    as -inf, float masks as they are; a 3-D ``attn_mask`` holds one (L, S) per example and head."""
    n, heads, length, keys = scores.shape
    bias = scores.new_zeros(())
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(length, keys, dtype=torch.bool, device=scores.device).triu(1)
    for mask, per_example in ((attn_mask, attn_mask is not None and attn_mask.dim() == 3),
                              (key_padding_mask, True)):
        if mask is None:
            continue
        if mask.dtype == torch.bool:
            mask = scores.new_zeros(mask.shape).masked_fill(mask, float("-inf"))
        mask = mask.to(scores.dtype)
        bias = bias + (mask.view(n, -1, mask.shape[-2] if mask.dim() == 3 else 1, keys) if per_example else mask)
    return bias


def _attention_cost(module: nn.MultiheadAttention, shape: tuple[int, ...], n_in: int, n_out: int,
                    heads: int) -> tuple[int, int]:
    """(parameters, MACs per example) of multi-head attention with ``n_in`` embedding inputs,
    ``n_out`` outputs and ``heads`` heads of ``head_dim``; ``shape`` is (query tokens, key tokens).
    Every term but out_proj's bias is proportional to the heads: a head costs its q, k, v rows,
    its scores, its weighted values and its out_proj columns."""
    queries, keys = shape[-2], shape[-1]
    inner = heads * module.head_dim
    params = 3 * inner * n_in + n_out * inner
    params += (3 * inner if module.in_proj_bias is not None else 0) + (n_out if module.out_proj.bias is not None else 0)
    macs = inner * n_in * (queries + 2 * keys) + 2 * queries * keys * inner + queries * inner * n_out
    return params, macs


class MultiheadAttentionAdapter(LayerAdapter):
    """``nn.MultiheadAttention`` as one layer: its embedding inputs (the same positions of query,
    key and value: in_proj's columns) and outputs (out_proj's rows). Its heads are a group of
    their own (``AttentionHeadsAdapter``), traced with it. ``embedding=False`` (the default) keeps
    every embedding map it reads or writes: the residual stream of a transformer touches the patch
    embedding, every LayerNorm, the class token, the positional embedding and the head, and a
    width change there is rarely wanted; ``register_layer(nn.MultiheadAttention,
    MultiheadAttentionAdapter(embedding=True))`` makes it one prunable group."""

    def __init__(self, embedding: bool = False) -> None:
        self.embedding = embedding

    def channel_axis(self, module, input_rank):
        return input_rank - 1

    @staticmethod
    def supported(module: nn.MultiheadAttention) -> bool:
        """The layouts the pruned forward computes: one in_proj for q, k and v, no bias_k/bias_v,
        no zero attention."""
        return module._qkv_same_embed_dim and module.bias_k is None and not module.add_zero_attn

    def output_labels(self, module, inputs, ctx, name):
        out = ctx.fresh(module.out_proj.out_features)
        if not (self.embedding and self.supported(module)):
            why = ("the embedding every nn.MultiheadAttention reads and writes is kept (to prune it: fmprune.register_layer("
                   "nn.MultiheadAttention, fmprune.layers.MultiheadAttentionAdapter(embedding=True)))"
                   if self.supported(module) else f"attention {name!r} has no single in_proj: its embedding is kept")
            ctx.pin(inputs, why)
            ctx.pin(out, why)
        return out

    def prune(self, module, keep_in, keep_out, optimizer):
        if keep_in is not None:
            slice_param(module, "in_proj_weight", _rows(keep_in, 1), optimizer)
            module.embed_dim = module.kdim = module.vdim = len(keep_in)
        if keep_out is not None:
            LinearAdapter().prune(module.out_proj, None, keep_out, optimizer)
        if keep_in is not None or keep_out is not None:
            module.__class__ = PrunedMultiheadAttention

    def cost(self, module, output_shape, n_in, n_out):
        return _attention_cost(module, output_shape, n_in, n_out, module.num_heads)

    def filters(self, module):
        return module.out_proj.weight.detach()


class AttentionHeadsAdapter(LayerAdapter):
    """The heads of an ``nn.MultiheadAttention``, one map each: removing head h cuts its
    ``head_dim`` rows of q, k and v in in_proj and its columns of out_proj, and lowers
    ``num_heads``. Exact: the model with the head's v rows and out_proj columns zeroed (its output
    is then 0 whatever its attention weights) is the model without it. Its cost is the change
    from the present number of heads (the attention layer's own record counts the whole)."""

    inner = True   # no parameters of its own in layer listings: the attention layer's record has them

    def prune(self, module, keep_in, keep_out, optimizer):
        if keep_out is None:
            return
        size, heads = module.head_dim, module.num_heads
        per_head = (keep_out[:, None] * size + torch.arange(size)).flatten()
        rows = torch.cat([per_head + block * heads * size for block in range(3)])
        slice_param(module, "in_proj_weight", _rows(rows, 0), optimizer)
        slice_param(module, "in_proj_bias", _rows(rows, 0), optimizer)
        slice_param(module.out_proj, "weight", _rows(per_head, 1), optimizer)
        module.out_proj.in_features = len(per_head)
        module.num_heads = len(keep_out)
        module.__class__ = PrunedMultiheadAttention

    def cost(self, module, output_shape, n_in, n_out):
        e_in, e_out = module.in_proj_weight.shape[1], module.out_proj.out_features
        params, macs = _attention_cost(module, output_shape, e_in, e_out, n_out)
        now_params, now_macs = _attention_cost(module, output_shape, e_in, e_out, module.num_heads)
        return params - now_params, macs - now_macs

    def filters(self, module):
        """One row per head: its q, k, v rows and its out_proj columns."""
        size, heads = module.head_dim, module.num_heads
        qkv = module.in_proj_weight.detach().view(3, heads, size, -1).transpose(0, 1).flatten(1)
        out = module.out_proj.weight.detach().view(-1, heads, size).transpose(0, 1).flatten(1)
        return torch.cat([qkv, out], 1)


class KeptLayerAdapter(LayerAdapter):
    """A block over the last axis that fmprune does not cut (Swin's shifted-window attention and
    patch merging, whose fx-wrapped functions the label flow cannot follow): a leaf whose input
    and output maps are all kept, so that what surrounds it (the MLPs between them) still prunes.
    ``output`` is the Linear whose outputs it returns; its cost counts its Linears per token, and
    ``window`` adds the products of attention within windows (2 · tokens · window area · width)."""

    def __init__(self, output: str, window: bool = False) -> None:
        self.output, self.window = output, window

    def channel_axis(self, module, input_rank):
        return input_rank - 1

    def output_labels(self, module, inputs, ctx, name):
        why = f"{type(module).__name__} {name!r} is kept whole: the maps it reads and writes are kept"
        ctx.pin(inputs, why)
        out = ctx.fresh(module.get_submodule(self.output).out_features)
        ctx.pin(out, why)
        return out

    def prune(self, module, keep_in, keep_out, optimizer):
        raise NotImplementedError("a kept layer is never cut")   # its maps are pinned

    def cost(self, module, output_shape, n_in, n_out):
        tokens = int(np.prod(output_shape[1:-1], dtype=np.int64))
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        macs = tokens * sum(m.in_features * m.out_features for m in linears)
        if self.window:
            macs += 2 * tokens * int(np.prod(module.window_size)) * n_out
        return sum(p.numel() for p in module.parameters()), macs


_REGISTRY: dict[type, LayerAdapter] = {}
# classes of other libraries, known by qualified name (importing them would make them
# dependencies); a type registered with register_layer wins over these
_BY_NAME: dict[str, LayerAdapter] = {
    "torchvision.models.convnext.LayerNorm2d": LayerNormAdapter(axis=1),   # permutes to NHWC inside
    "torchvision.models.swin_transformer.ShiftedWindowAttention": KeptLayerAdapter("proj", window=True),
    "torchvision.models.swin_transformer.PatchMerging": KeptLayerAdapter("reduction"),
    "torchvision.models.swin_transformer.PatchMergingV2": KeptLayerAdapter("reduction"),
    # MaxViT's window/grid attention: heads split off a channels-last qkv by reshape and permute
    "torchvision.models.maxvit.RelativePositionalMultiHeadAttention": KeptLayerAdapter("merge"),
}


def register_layer(layer_type: type, adapter: LayerAdapter) -> None:
    """Teach fmprune a layer type (also one of your own); the most specific registered type wins.
    Registered types are traced as leaves: fmprune never looks inside them."""
    if not isinstance(adapter, LayerAdapter):
        raise TypeError(f"adapter for {layer_type.__name__} must be a LayerAdapter, got {type(adapter).__name__}")
    _REGISTRY[layer_type] = adapter


def unregister_layer(layer_type: type) -> None:
    """Forget ``layer_type``'s adapter (a registration made for a while, e.g. in a notebook or a
    test); its modules are then traced into like any other. Unknown types: a one-line error."""
    if layer_type not in _REGISTRY:
        raise FmpruneError(f"{layer_type.__name__} is not a registered layer type")
    del _REGISTRY[layer_type]


def adapter_for(module: nn.Module) -> LayerAdapter | None:
    """The adapter of ``module``'s most specific registered type, or None."""
    for cls in type(module).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
        known = _BY_NAME.get(f"{cls.__module__}.{cls.__qualname__}")
        if known is not None:
            return known
    return None


def registered_layer_types() -> tuple[type, ...]:
    """Every layer type with an adapter, built-in or added with ``register_layer``, in the order
    registered: what a caller (a test, a listing) can enumerate without reaching into the
    registry. Classes of other libraries that fmprune adapts by qualified name, without importing
    them (torchvision's LayerNorm2d, Swin's and MaxViT's attention blocks), are not listed, nor can
    they be unregistered; ``adapter_for`` finds them."""
    return tuple(_REGISTRY)


def is_registered(module: nn.Module) -> bool:
    return adapter_for(module) is not None


# BatchNorm by type, not by adapter: its adapter is shared with InstanceNorm, but network
# slimming's |γ| (and --bn-l1, which trains it) is defined on BatchNorm scales only.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batch_norm_scale(module: nn.Module) -> nn.Parameter | None:
    """The scale γ of a BatchNorm with one, else None."""
    return module.weight if isinstance(module, BATCH_NORMS) and module.weight is not None else None


def _register_builtins() -> None:
    for t in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        register_layer(t, ConvAdapter())
    for t in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
        register_layer(t, ConvTransposeAdapter())
    register_layer(nn.Linear, LinearAdapter())
    norm = ChannelwiseAdapter(("weight", "bias", "running_mean", "running_var"), ("num_features",))
    for t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
              nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d):
        register_layer(t, norm)
    register_layer(nn.PReLU, PReLUAdapter())
    register_layer(nn.GroupNorm, NormAcrossChannelsAdapter())
    register_layer(nn.LayerNorm, LayerNormAdapter())
    register_layer(nn.MultiheadAttention, MultiheadAttentionAdapter())


_register_builtins()

