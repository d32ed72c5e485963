"""Grouped layers: run G structurally identical modules (one per modality, pair or direction) as one batch.

A model with one transformer stack per modality or per modality pair spends its CPU time on the per-call
overhead of many tiny matrix products, not on arithmetic. The functions here compute G copies of a layer at
once from the G modules' own parameters (stacked on the fly, so gradients reach every module's parameters and
the state dict keeps its names): inputs carry a leading group axis, x [G, B, T, D], masks [G, B, T] bool.

A `StackedParameters` bank holds the grid of modules (layer x group) and stacks each parameter once per
forward for all layers. The `bank_*` functions reproduce `affectflow.fusion.layers` (up to float rounding):
`bank_attention` is `MaskedMultiheadAttention` (invalid keys never reach an output, a row without any valid
key or with an invalid query gives zeros) computed with `torch.nn.functional.scaled_dot_product_attention`,
`bank_pre_ln_block` is `PreLNTransformerBlock`, `bank_feed_forward` is `FeedForward`, `bank_layer_norm` and
`bank_linear` are nn.LayerNorm and nn.Linear. Dropout draws
its masks from the random stream in a different order than G separate calls would (same distribution).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from affectflow.fusion.contract import zero_masked
from affectflow.fusion.layers import safe_key_mask
from affectflow.fusion.stacked import batched_affine as grouped_linear  # one batched Linear for both stacking modules


class StackedParameters:
    """The parameters of a grid of identical modules, `grid[layer][group]`, stacked per name for one forward.

    `bank(layer, name)` -> [G, *shape]: the parameter `name` (dotted, relative to a grid module) of every group's
    module at `layer`. A name is stacked on first use for all layers at once (one copy, one gradient split);
    build a new bank for every forward, since it holds tensors of that forward's graph.
    """

    def __init__(self, grid: Sequence[Sequence[nn.Module]]) -> None:
        self.grid = [list(row) for row in grid]
        self.stacked: dict[str, tuple[torch.Tensor, ...]] = {}

    def __call__(self, layer: int, name: str) -> torch.Tensor:
        if name not in self.stacked:
            flat = torch.stack([module.get_parameter(name) for row in self.grid for module in row])
            self.stacked[name] = flat.reshape(len(self.grid), len(self.grid[0]), *flat.shape[1:]).unbind(0)
        return self.stacked[name][layer]

    def module(self, layer: int, name: str) -> nn.Module:
        """The first group's sub-module `name` at `layer` (for its settings: heads, dropout, eps...)."""
        return self.grid[layer][0].get_submodule(name)


def bank_linear(bank: StackedParameters, layer: int, name: str, x: torch.Tensor) -> torch.Tensor:
    """x [G, ..., D_in] through each group's nn.Linear `name` at `layer` -> [G, ..., D_out]."""
    bias = bank(layer, f"{name}.bias") if bank.module(layer, name).bias is not None else None
    return grouped_linear(x, bank(layer, f"{name}.weight"), bias)


def bank_layer_norm(bank: StackedParameters, layer: int, name: str, x: torch.Tensor) -> torch.Tensor:
    """x [G, ..., D] through each group's nn.LayerNorm `name` at `layer` (shape and eps from the first)."""
    norm = bank.module(layer, name)
    normed = F.layer_norm(x, norm.normalized_shape, eps=norm.eps)
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    return torch.addcmul(bank(layer, f"{name}.bias").reshape(shape), normed, bank(layer, f"{name}.weight").reshape(shape))


@dataclass
class GroupedAttentionMask:
    """Key and query masks of a grouped attention, prepared once and reused by every layer.

    keys: [G * B, 1, 1, T_k] bool (True = attend; a row without valid keys gets a dummy first key, see
    `safe_key_mask`); rows: [G, B, T_q] bool, the output rows that are kept (query valid and some key valid).
    """

    keys: torch.Tensor
    rows: torch.Tensor

    @classmethod
    def build(cls, key_mask: torch.Tensor, query_mask: torch.Tensor) -> "GroupedAttentionMask":
        """key_mask [G, B, T_k], query_mask [G, B, T_q] bool -> the prepared masks."""
        groups = key_mask.shape[0]
        usable, has_key = safe_key_mask(rearrange(key_mask, "g b t -> (g b) t"))
        rows = query_mask & rearrange(has_key, "(g b) -> g b 1", g=groups)
        return cls(rearrange(usable, "n t -> n 1 1 t"), rows)


def bank_attention(bank: StackedParameters, layer: int, name: str, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor, mask: GroupedAttentionMask) -> torch.Tensor:
    """Each group's `MaskedMultiheadAttention` `name` at `layer`: query [G, B, T_q, D] over key / value
    [G, B, T_k, D] -> [G, B, T_q, D], computed with `scaled_dot_product_attention`.

    Keys and values behind the mask only ever meet a zero attention weight, so they are projected as they are
    (they must be finite, as every hidden state of the models using this is); rows outside `mask.rows` are zero.
    """
    attention = bank.module(layer, f"{name}.attention")
    if not attention._qkv_same_embed_dim:
        raise ValueError("grouped attention needs attentions whose key/value widths equal the model width")
    heads, dim = attention.num_heads, attention.embed_dim
    in_weight = bank(layer, f"{name}.attention.in_proj_weight")
    in_bias = bank(layer, f"{name}.attention.in_proj_bias")
    dropout = attention.dropout if attention.training else 0.0
    if key.shape[2] == 1:
        out = single_key_attention(value, in_weight[:, 2 * dim:], in_bias[:, 2 * dim:], query.shape[2], heads, dropout)
    else:
        out = _projected_attention(query, key, value, in_weight, in_bias, mask, heads, dropout)
    out = grouped_linear(out, bank(layer, f"{name}.attention.out_proj.weight"), bank(layer, f"{name}.attention.out_proj.bias"))
    return zero_masked(out, mask.rows)


def single_key_attention(value: torch.Tensor, value_weight: torch.Tensor, value_bias: torch.Tensor, query_length: int,
                         heads: int, dropout: float) -> torch.Tensor:
    """Attention over one key (T_k = 1, e.g. utterance-level vectors): value [G, B, 1, D] -> [G, B, T_q, D].

    The softmax over a single key is exactly 1 whatever the query and key, so only the value projection is
    computed; the weight 1 still goes through attention dropout, per (row, head). The query and key rows of the
    packed projection get exactly the zero gradient that the softmax gives them (through the slice).
    """
    projected = grouped_linear(value, value_weight, value_bias)
    if dropout == 0.0:
        return projected.expand(-1, -1, query_length, -1)
    groups, batch_size = value.shape[:2]
    weights = F.dropout(projected.new_ones(groups, batch_size, query_length, heads, 1), dropout, True)
    return rearrange(weights * rearrange(projected, "g b 1 (h e) -> g b 1 h e", h=heads), "g b t h e -> g b t (h e)")


def _projected_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, in_weight: torch.Tensor,
                         in_bias: torch.Tensor, mask: GroupedAttentionMask, heads: int, dropout: float) -> torch.Tensor:
    """Input projections + `scaled_dot_product_attention`: -> the heads' outputs [G, B, T_q, D] (before out_proj)."""
    dim = query.shape[-1]
    if query is key and key is value:
        q, k, v = grouped_linear(query, in_weight, in_bias).chunk(3, dim=-1)
    else:  # row slices of the packed projection are views: no copy of the weights
        q = grouped_linear(query, in_weight[:, :dim], in_bias[:, :dim])
        if key is value:
            k, v = grouped_linear(key, in_weight[:, dim:], in_bias[:, dim:]).chunk(2, dim=-1)
        else:
            k = grouped_linear(key, in_weight[:, dim:2 * dim], in_bias[:, dim:2 * dim])
            v = grouped_linear(value, in_weight[:, 2 * dim:], in_bias[:, 2 * dim:])
    split = "g b t (h e) -> (g b) h t e"
    q, k, v = (rearrange(x, split, h=heads) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.keys, dropout_p=dropout)
    return rearrange(out, "(g b) h t e -> g b t (h e)", g=query.shape[0])


def bank_feed_forward(bank: StackedParameters, layer: int, name: str, x: torch.Tensor) -> torch.Tensor:
    """Each group's `FeedForward` `name` at `layer`: x [G, ..., D] -> [G, ..., D] (Linear, GELU, Dropout, Linear, Dropout)."""
    net = bank.module(layer, f"{name}.net")
    hidden = F.dropout(F.gelu(bank_linear(bank, layer, f"{name}.net.0", x)), net[2].p, net[2].training)
    return F.dropout(bank_linear(bank, layer, f"{name}.net.3", hidden), net[4].p, net[4].training)


def bank_pre_ln_block(bank: StackedParameters, layer: int, x: torch.Tensor, mask: torch.Tensor,
                      attention_mask: GroupedAttentionMask) -> torch.Tensor:
    """Each group's `PreLNTransformerBlock` at `layer` (the grid's modules): x [G, B, T, D], mask [G, B, T]
    -> [G, B, T, D] (zero outside mask); `attention_mask` is `GroupedAttentionMask.build(mask, mask)`."""
    block = bank.grid[layer][0]
    x = zero_masked(x, mask)
    h = bank_layer_norm(bank, layer, "norm_attention", x)
    x = x + F.dropout(bank_attention(bank, layer, "attention", h, h, h, attention_mask), block.dropout.p, block.training)
    x = x + bank_feed_forward(bank, layer, "ff", bank_layer_norm(bank, layer, "norm_ff", x))
    return zero_masked(x, mask)


def pad_time(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad (False-pad for masks) x [B, T, ...] along T to `length`; unchanged if already that long."""
    if x.shape[1] == length:
        return x
    return torch.cat([x, x.new_zeros((x.shape[0], length - x.shape[1]) + tuple(x.shape[2:]))], dim=1)


__all__ = ["StackedParameters", "grouped_linear", "bank_linear", "bank_layer_norm", "GroupedAttentionMask",
           "bank_attention", "bank_feed_forward", "bank_pre_ln_block", "pad_time"]
