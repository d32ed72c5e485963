"""Small shared building blocks for fusion models: masked attention, positions, pre-LN blocks.

Every block here takes boolean masks (True = valid position) and guarantees two things the fusion
contract needs:
- values at invalid key positions never reach any output (they are masked out of attention and zeroed
  before convolutions), and
- a query row whose keys are *all* invalid gets exactly zero output instead of NaN (the usual
  `nn.MultiheadAttention` behaviour), so absent modalities and fully padded samples stay finite.

Outputs at invalid *query* positions are zeroed as well, so stacking blocks never lets padding leak.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from einops import rearrange

from affectflow.fusion.contract import ModalityBatch, masked_mean, zero_masked


def safe_key_mask(key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Make a key mask usable by softmax attention.

    key_mask: [B, Tk] bool (True = valid). Returns (usable [B, Tk], has_key [B]): rows without any valid
    key get their first position unmasked (its output is discarded later via `has_key`).
    """
    has_key = key_mask.any(dim=1)
    usable = key_mask.clone()
    usable[:, 0] = usable[:, 0] | ~has_key
    return usable, has_key


class MaskedMultiheadAttention(nn.Module):
    """Multi-head attention with boolean key/query masks and NaN-free all-masked rows.

    Wraps `nn.MultiheadAttention(batch_first=True)`; `key_dim`/`value_dim` allow cross-modal attention
    between modalities of different widths.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0,
                 key_dim: int | None = None, value_dim: int | None = None) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"attention dim {dim} is not divisible by num_heads {num_heads}")
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True,
                                               kdim=key_dim, vdim=value_dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None, query_mask: torch.Tensor | None = None,
                return_weights: bool = False):
        """Attend query [B, Tq, D] over key [B, Tk, Dk] / value [B, Tk, Dv] (value defaults to key).

        key_mask: [B, Tk] bool (True = attend), query_mask: [B, Tq] bool (False rows are zeroed).
        Returns [B, Tq, D] (and head-averaged weights [B, Tq, Tk] if `return_weights`).
        """
        value = key if value is None else value
        if key_mask is None:
            key_mask = torch.ones(key.shape[:2], dtype=torch.bool, device=key.device)
        usable, has_key = safe_key_mask(key_mask)
        # Zero invalid keys/values too: masking already removes them from softmax, zeroing also makes the
        # result bit-identical whatever sat there (no 0 * inf, no tiny float differences).
        key = zero_masked(key, usable)
        value = zero_masked(value, usable)
        out, weights = self.attention(query, key, value, key_padding_mask=~usable,
                                      need_weights=return_weights, average_attn_weights=True)
        row_valid = has_key[:, None].expand(-1, query.shape[1])
        if query_mask is not None:
            row_valid = row_valid & query_mask
        out = zero_masked(out, row_valid)
        if return_weights:
            weights = weights * row_valid.unsqueeze(-1).to(weights.dtype)
            return out, weights
        return out


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed sinusoidal position table (Vaswani et al.) of shape [length, dim]; works for any length."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * frequencies)
    table[:, 1::2] = torch.cos(position * frequencies[: dim // 2])
    return table.to(dtype)


class SinusoidalPositionalEmbedding(nn.Module):
    """Adds fixed sinusoidal positions to x [B, T, D] (no parameters, any T)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> x + PE[:T] (same shape)."""
        return x + sinusoidal_positions(x.shape[1], self.dim, x.device, x.dtype).unsqueeze(0)


class LearnedPositionalEmbedding(nn.Module):
    """Adds learned absolute positions (up to `max_length`) to x [B, T, D]."""

    def __init__(self, dim: int, max_length: int = 512) -> None:
        super().__init__()
        self.max_length = max_length
        self.table = nn.Parameter(torch.randn(max_length, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> x + P[:T]; raises ValueError if T > max_length."""
        if x.shape[1] > self.max_length:
            raise ValueError(f"sequence length {x.shape[1]} exceeds the learned position table "
                             f"(max_length={self.max_length}); build the model with a larger max_length")
        return x + self.table[: x.shape[1]].unsqueeze(0)


class FeedForward(nn.Module):
    """Position-wise MLP D -> hidden -> D with GELU and dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] -> [..., D]."""
        return self.net(x)


class PreLNTransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + MHSA(LN(x)), then x + FFN(LN(x)), with a key padding mask.

    Invalid positions come out as exact zeros and never influence valid ones. `attention_dropout` is the
    dropout on the attention weights (None: the same as `dropout`, which also drops the residual branches).
    """

    def __init__(self, dim: int, num_heads: int, ff_mult: float = 4.0, dropout: float = 0.0,
                 attention_dropout: float | None = None) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(dim)
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.attention = MaskedMultiheadAttention(dim, num_heads, dropout=attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, int(dim * ff_mult), dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, D], mask [B, T] bool (True = valid) -> [B, T, D]."""
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        x = zero_masked(x, mask)
        h = self.norm_attention(x)
        x = x + self.dropout(self.attention(h, h, h, key_mask=mask, query_mask=mask))
        x = x + self.ff(self.norm_ff(x))
        return zero_masked(x, mask)


class TransformerEncoder(nn.Module):
    """A stack of `PreLNTransformerBlock`s followed by a final LayerNorm (`attention_dropout`: see the block)."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, ff_mult: float = 4.0, dropout: float = 0.0,
                 attention_dropout: float | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(PreLNTransformerBlock(dim, num_heads, ff_mult, dropout, attention_dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, D], mask [B, T] bool -> [B, T, D] (invalid positions zero)."""
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        return x if mask is None else zero_masked(x, mask)


class CrossModalBlock(nn.Module):
    """MulT-style cross-modal block: target x attends to source y (pre-LN on both), then an FFN.

    x: [B, Tx, D] target (queries), y: [B, Ty, D] source (keys/values).
    """

    def __init__(self, dim: int, num_heads: int, ff_mult: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_source = nn.LayerNorm(dim)
        self.attention = MaskedMultiheadAttention(dim, num_heads, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, int(dim * ff_mult), dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        """x [B, Tx, D] (mask [B, Tx]), y [B, Ty, D] (mask [B, Ty]) -> [B, Tx, D]; zero where x_mask is False."""
        x = zero_masked(x, x_mask)
        source = self.norm_source(y)
        x = x + self.dropout(self.attention(self.norm_query(x), source, source, key_mask=y_mask, query_mask=x_mask))
        x = x + self.ff(self.norm_ff(x))
        return zero_masked(x, x_mask)


class MaskedConv1d(nn.Module):
    """Temporal Conv1d over x [B, T, D_in] -> [B, T, D_out] ('same' padding) that ignores invalid frames.

    Invalid frames are zeroed before the convolution (so their values cannot leak into neighbours) and
    after it (so padding stays zero).
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 1, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"MaskedConv1d needs an odd kernel_size for 'same' padding, got {kernel_size}")
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, D_in], mask [B, T] bool -> [B, T, D_out] with invalid frames zero."""
        h = self.conv(rearrange(zero_masked(x, mask), "b t d -> b d t"))
        return zero_masked(rearrange(h, "b d t -> b t d"), mask)


def conversation_or_pooled(x: torch.Tensor, mask: torch.Tensor, per_position: bool) -> torch.Tensor:
    """Readout helper: x [B, T, D] unchanged if `per_position` (conversation level), else masked mean [B, D]."""
    if per_position:
        return zero_masked(x, mask)
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def modality_readout(batch: ModalityBatch, modality: str, x: torch.Tensor,
                     per_position: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Read out x [B, T, D] computed from `modality`: masked mean over its valid frames, or per position.

    Returns (features [B, D] or [B, T, D], present [B] or [B, T] bool); absent rows are exact zeros.
    """
    valid = batch.valid(modality)
    if per_position:
        return zero_masked(x, valid), valid
    return masked_mean(x, valid), valid.any(dim=1)


__all__ = [
    "safe_key_mask", "MaskedMultiheadAttention", "sinusoidal_positions", "SinusoidalPositionalEmbedding",
    "LearnedPositionalEmbedding", "FeedForward", "PreLNTransformerBlock", "TransformerEncoder",
    "CrossModalBlock", "MaskedConv1d", "conversation_or_pooled", "modality_readout",
]
