"""Modality-stacked functional versions of the small fusion blocks (one batched op for M modules).

A model that applies the same block type once per modality (M copies with their own weights) pays M
times the per-op overhead, which dominates on CPU at fusion sizes (rows of a few hundred, widths of a
few hundred). These functions take the M modules themselves (so parameter names and state dicts stay
those of the modules), stack their weights for the duration of one call and run one batched op
(`baddbmm`, one `scaled_dot_product_attention`) over a leading modality axis:

    x [M, B, T, D]  ->  [M, B, T, D_out]

They compute what the modules' own `forward` computes (same mathematics, float rounding aside); with
M = 1 they are also a leaner path for a single module (e.g. packed q/k/v projections, fused attention).
Masks are bool, True = valid, as everywhere in `affectflow.fusion`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from affectflow.fusion.layers import CrossModalBlock, FeedForward, MaskedConv1d, PreLNTransformerBlock


def stack_masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x [..., D] with positions where mask [...] is False set to exactly zero."""
    return torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout` (each element kept with probability 1 - p and scaled by 1 / (1 - p)) with a faster CPU mask.

    The mask is `uniform >= p` from `rand_like`: the same distribution as torch's CPU `bernoulli_`, which takes
    about twice as long (measured 3.6 vs 7.1 ms on [3, 16, 16, 1024] floats, one thread); dropout is several
    percent of a fusion training step. Other devices use `F.dropout`.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    return x * torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))


def _stacked(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """torch.stack that is a free view for a single tensor."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(list(tensors))


def _group_matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a [G, n, k] @ b [G, k, m] (+ bias [G, m]) -> [G, n, m] in one `bmm` / `baddbmm`.

    One `mm` per group was tried for several threads (torch's CPU `bmm` splits its threads over the G
    products): no faster for SDUMC and CM-ARR, and DQF's many small grouped products ran 1.2x slower per epoch
    (bench_fusion, 2 threads, alternated runs), so every case stays one batched call.
    """
    return torch.bmm(a, b) if bias is None else torch.baddbmm(bias.unsqueeze(1), a, b)


class _StackedAffine(torch.autograd.Function):
    """x [M, R, in] @ weight[m].T + bias[m] with a hand-written backward.

    Autograd's own baddbmm backward yields the weight gradient as a transposed view, which every
    parameter then copies into its own layout; here it comes out contiguous ([M, out, in]) directly.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _group_matmul(x, weight.transpose(1, 2), bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = _group_matmul(grad, weight) if ctx.needs_input_grad[0] else None
        grad_weight = _group_matmul(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


class _ListAffine(torch.autograd.Function):
    """x [G, R, in] @ weights[g].T + biases[g] from the G modules' own parameter tensors (no stacked copy).

    One `mm` / `addmm` per group into a slice of one output, and one per group in backward, each weight's
    gradient computed straight into its own tensor: stacking G weights costs a copy of every weight in
    forward and of every gradient in backward (per step, the size of the model), while for the few large
    products of SDUMC and CM-ARR (G = 3) separate calls run as fast as one `bmm`.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, count: int, *parameters: torch.Tensor) -> torch.Tensor:
        weights, biases = parameters[:count], parameters[count:]
        ctx.save_for_backward(x, *weights)
        ctx.count, ctx.has_bias = count, bool(biases)
        out = x.new_empty(x.shape[0], x.shape[1], weights[0].shape[0])
        for group, weight in enumerate(weights):
            if biases:
                torch.addmm(biases[group], x[group], weight.T, out=out[group])
            else:
                torch.mm(x[group], weight.T, out=out[group])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, *weights = ctx.saved_tensors
        count, needs = ctx.count, ctx.needs_input_grad
        grad_x = None
        if needs[0]:
            grad_x = x.new_empty(x.shape)
            for group, weight in enumerate(weights):
                torch.mm(grad[group], weight, out=grad_x[group])
        grad_weights = [torch.mm(grad[g].T, x[g]) if needs[2 + g] else None for g in range(count)]
        grad_biases = [grad[g].sum(0) if needs[2 + count + g] else None for g in range(count)] if ctx.has_bias else []
        return (grad_x, None, *grad_weights, *grad_biases)


def list_affine(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """x[g] @ weights[g].T + biases[g] without stacking the parameters: x [G, ..., in] -> [G, ..., out]."""
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    parameters = list(weights) + ([] if biases[0] is None else list(biases))
    return _ListAffine.apply(flat, len(weights), *parameters).reshape(*x.shape[:-1], weights[0].shape[0])


def stacked_linear(x: torch.Tensor, layers: Sequence[nn.Linear]) -> torch.Tensor:
    """layers[m](x[m]) for every m in one batched matmul: x [M, ..., in] -> [M, ..., out]."""
    return stacked_affine(x, [layer.weight for layer in layers], [layer.bias for layer in layers])


def stacked_affine(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """x[m] @ weights[m].T + biases[m]: x [M, ..., in], weights [out, in], biases [out] -> [M, ..., out]."""
    return list_affine(x, weights, biases)


def stack_linears(layers: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [M, out, in], bias [M, out] or None) of M linears, for `batched_affine` calls that reuse them."""
    bias = None if layers[0].bias is None else _stacked([layer.bias for layer in layers])
    return _stacked([layer.weight for layer in layers]), bias


def batched_affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x[m] @ weight[m].T + bias[m] with already stacked weight [M, out, in], bias [M, out]: x [M, ..., in]."""
    out = _StackedAffine.apply(x.reshape(x.shape[0], -1, x.shape[-1]), weight, bias)
    return out.reshape(*x.shape[:-1], weight.shape[1])


def stacked_layer_norm(x: torch.Tensor, norms: Sequence[nn.LayerNorm]) -> torch.Tensor:
    """norms[m](x[m]) for every m: x [M, ..., D] -> [M, ..., D]."""
    if len(norms) == 1:
        norm = norms[0]
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    shape = (len(norms),) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    weight = torch.stack([n.weight for n in norms]).reshape(shape)
    bias = torch.stack([n.bias for n in norms]).reshape(shape)
    return torch.addcmul(bias, F.layer_norm(x, norms[0].normalized_shape, eps=norms[0].eps), weight)


def stacked_feed_forward(x: torch.Tensor, blocks: Sequence[FeedForward], training: bool) -> torch.Tensor:
    """FeedForward (Linear, GELU, Dropout, Linear, Dropout) of every block: x [M, ..., D] -> [M, ..., D]."""
    first, second = [b.net[0] for b in blocks], [b.net[3] for b in blocks]
    p = blocks[0].net[2].p
    h = dropout(F.gelu(stacked_linear(x, first)), p, training)
    return dropout(stacked_linear(h, second), blocks[0].net[4].p, training)


def stacked_masked_conv1d(x: torch.Tensor, mask: torch.Tensor, convs: Sequence[MaskedConv1d],
                          input_is_masked: bool = False) -> torch.Tensor:
    """MaskedConv1d ('same' padding, invalid frames zero in and out) of every conv as one matmul.

    x [M, B, T, D_in], mask [M, B, T] -> [M, B, T, D_out]. `input_is_masked` skips re-zeroing an input that
    is already zero at invalid frames. The k-wide windows are unfolded so the convolution is a matmul
    with the [out, in * k] view of the weight (no transposes to channels-first and back).
    """
    modules = [c.conv for c in convs]
    kernel = modules[0].kernel_size[0]
    if not input_is_masked:
        x = stack_masked(x, mask)
    padded = F.pad(x, (0, 0, kernel // 2, kernel // 2))  # zero padding on T, per sample
    windows = padded.unfold(2, kernel, 1)  # [M, B, T, D_in, k]
    windows = windows.reshape(*x.shape[:3], x.shape[-1] * kernel)
    weights = [m.weight.reshape(m.weight.shape[0], -1) for m in modules]  # [out, in * k], index i * k + j
    return stack_masked(stacked_affine(windows, weights, [m.bias for m in modules]), mask)


def stacked_attention(attentions: Sequence[nn.MultiheadAttention], query: torch.Tensor, source: torch.Tensor | None,
                      key_mask: torch.Tensor, query_mask: torch.Tensor, training: bool,
                      projected: torch.Tensor | None = None) -> torch.Tensor:
    """MaskedMultiheadAttention of every module via packed projections and one fused SDPA call.

    query [M, B, Tq, D]; source [M, B, Tk, D] for cross-attention or None for self-attention (keys and
    values = query, projected by one packed matmul). key_mask [M, B, Tk], query_mask [M, B, Tq].
    `projected` [M, B, T, 3D]: self-attention's packed q/k/v projection of `query`, when the caller has it
    more cheaply (only its valid rows matter). Returns [M, B, Tq, D], exactly zero at invalid queries and
    for rows without any valid key (as `MaskedMultiheadAttention`); masked keys get zero attention weight
    whatever their values.
    """
    first = attentions[0]
    if not first._qkv_same_embed_dim:
        raise ValueError("stacked_attention needs nn.MultiheadAttention with kdim = vdim = embed_dim (packed in_proj)")
    heads, dim = first.num_heads, first.embed_dim
    count, batch, length = query.shape[:3]
    weights = [a.in_proj_weight for a in attentions]
    biases = [a.in_proj_bias for a in attentions]
    if source is None:
        q, k, v = (stacked_affine(query, weights, biases) if projected is None else projected).chunk(3, dim=-1)
    else:  # q rows and k/v rows of the packed projection (split: one cat in backward, not two zero-filled copies)
        weights = [w.split([dim, 2 * dim]) for w in weights]
        biases = [b.split([dim, 2 * dim]) for b in biases]
        q = stacked_affine(query, [w[0] for w in weights], [b[0] for b in biases])
        k, v = stacked_affine(source, [w[1] for w in weights], [b[1] for b in biases]).chunk(2, dim=-1)

    def split_heads(t: torch.Tensor) -> torch.Tensor:  # [M, B, T, D] -> [M * B, H, T, D / H]
        return t.reshape(count * batch, t.shape[2], heads, dim // heads).transpose(1, 2)

    has_key = key_mask.any(-1)  # [M, B]
    usable = key_mask.clone()
    usable[..., 0] |= ~has_key  # a row without keys attends to position 0; its output is zeroed below
    out = F.scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v),
                                         attn_mask=usable.reshape(count * batch, 1, 1, -1),
                                         dropout_p=first.dropout if training else 0.0)
    out = out.transpose(1, 2).reshape(count, batch, length, dim)
    out = stacked_linear(out, [a.out_proj for a in attentions])
    return stack_masked(out, query_mask & has_key.unsqueeze(-1))


def stacked_cross_modal(blocks: Sequence[CrossModalBlock], x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor,
                        y_mask: torch.Tensor, training: bool, input_is_masked: bool = False) -> torch.Tensor:
    """CrossModalBlock.forward of every block: x [M, B, Tx, D] attends to y [M, B, Ty, D] -> [M, B, Tx, D].

    `input_is_masked`: x is already zero where x_mask is False (skips re-zeroing it)."""
    if not input_is_masked:
        x = stack_masked(x, x_mask)
    source = stacked_layer_norm(y, [b.norm_source for b in blocks])
    attended = stacked_attention([b.attention.attention for b in blocks], stacked_layer_norm(x, [b.norm_query for b in blocks]),
                                 source, y_mask, x_mask, training)
    x = x + dropout(attended, blocks[0].dropout.p, training)
    x = x + stacked_feed_forward(stacked_layer_norm(x, [b.norm_ff for b in blocks]), [b.ff for b in blocks], training)
    return stack_masked(x, x_mask)


def transformer_block(block: PreLNTransformerBlock, x: torch.Tensor, mask: torch.Tensor, training: bool,
                      input_is_masked: bool = False) -> torch.Tensor:
    """PreLNTransformerBlock.forward with packed q/k/v and fused attention: x [B, T, D], mask [B, T] -> [B, T, D].

    `input_is_masked`: x is already zero where mask is False (skips re-zeroing it)."""
    x, mask = (x if input_is_masked else stack_masked(x, mask)).unsqueeze(0), mask.unsqueeze(0)
    h = stacked_layer_norm(x, [block.norm_attention])
    x = x + dropout(stacked_attention([block.attention.attention], h, None, mask, mask, training), block.dropout.p, training)
    x = x + stacked_feed_forward(stacked_layer_norm(x, [block.norm_ff]), [block.ff], training)
    return stack_masked(x, mask)[0]


__all__ = ["dropout", "stack_masked", "list_affine", "stacked_linear", "stacked_affine", "stack_linears", "batched_affine", "stacked_layer_norm", "stacked_feed_forward",
           "stacked_masked_conv1d", "stacked_attention", "stacked_cross_modal", "transformer_block"]
