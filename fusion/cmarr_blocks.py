"""CM-ARR's building blocks (see `affectflow.fusion.cmarr` for the model and the paper's equations).

Each block's own `forward` is the readable single-modality definition; `CMARR.forward` runs the three
modalities' copies together on stacked tensors with the same parameters (`affectflow.fusion.stacked`),
and tests/fusion pins that both agree.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from affectflow.fusion.contract import masked_mean, zero_masked
from affectflow.fusion.layers import FeedForward, MaskedConv1d, MaskedMultiheadAttention, SinusoidalPositionalEmbedding


def resample_valid_frames(x: torch.Tensor, valid: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Linearly resample each sample's valid frames (in order) onto `length` evenly spaced positions.

    x [B, T, D], valid [B, T] bool -> (resampled [B, length, D], present [B] bool); samples without
    valid frames give zeros. Invalid frames never influence the result.
    """
    batch, _, dim = x.shape
    x = zero_masked(x, valid)
    order = torch.argsort((~valid).long(), dim=1, stable=True)  # valid frames first, in time order
    compact = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, dim))
    count = valid.sum(1)
    last = (count.clamp(min=1) - 1).unsqueeze(1)  # [B, 1]
    grid = (torch.arange(length, device=x.device, dtype=x.dtype) + 0.5) / length
    position = (grid.unsqueeze(0) * count.clamp(min=1).unsqueeze(1).to(x.dtype) - 0.5).clamp(min=0.0)
    position = torch.minimum(position, last.to(x.dtype))
    low = position.floor().long()
    high = torch.minimum(low + 1, last)
    frac = (position - low.to(x.dtype)).unsqueeze(-1)
    pick = lambda index: torch.gather(compact, 1, index.unsqueeze(-1).expand(-1, -1, dim))  # noqa: E731
    present = count > 0
    return zero_masked((1 - frac) * pick(low) + frac * pick(high), present.unsqueeze(1).expand(-1, length)), present


class UncertaintyModule(nn.Module):
    """UMC (CM-ARR Fig. 3): projection, MHA (sequence level) and GELU MLP (feature level) -> mu, Sigma.

    x [B, P, D_in], mask [B, P] -> (mu [B, P, d], variance [B, P, d] > 0), zero / one at invalid positions.
    """

    def __init__(self, in_dim: int, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, dim)
        self.positions = SinusoidalPositionalEmbedding(dim)
        self.attention = MaskedMultiheadAttention(dim, num_heads, dropout=dropout)
        self.norm_attention = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, 4 * dim, dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mean = nn.Linear(dim, dim)
        self.log_variance = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See class docstring."""
        h = zero_masked(self.positions(self.project(zero_masked(x, mask))), mask)
        h = self.norm_attention(h + self.attention(h, h, h, key_mask=mask, query_mask=mask))
        h = self.norm_mlp(h + self.mlp(h))
        mu = zero_masked(self.mean(h), mask)
        variance = torch.where(mask.unsqueeze(-1), self.log_variance(h).clamp(-10.0, 10.0).exp(), torch.ones_like(mu))
        return mu, variance


class AffineCoupling(nn.Module):
    """RealNVP affine coupling on [..., d]: y2 = x2 * exp(s(x1)) + t(x1), y1 = x1 (s bounded by tanh)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.split = dim // 2
        self.net = nn.Sequential(nn.Linear(self.split, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * (dim - self.split)))
        nn.init.normal_(self.net[-1].weight, std=1e-3)  # near-identity start, but every layer gets gradients
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self.net(x1).chunk(2, dim=-1)
        return torch.tanh(log_scale), shift

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [..., d] -> (y [..., d], log|det J| [...])."""
        x1, x2 = x[..., : self.split], x[..., self.split:]
        log_scale, shift = self._scale_shift(x1)
        return torch.cat([x1, x2 * log_scale.exp() + shift], dim=-1), log_scale.sum(-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Exact inverse: y [..., d] -> x [..., d]."""
        y1, y2 = y[..., : self.split], y[..., self.split:]
        log_scale, shift = self._scale_shift(y1)
        return torch.cat([y1, (y2 - shift) * (-log_scale).exp()], dim=-1)


class NormalizingFlow(nn.Module):
    """CM-ARR Eq. 6/8: a stack of affine couplings with feature reversal between them (F_n and F_n^-1)."""

    def __init__(self, dim: int, hidden: int, num_layers: int) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"NormalizingFlow needs a width of at least 2, got {dim}")
        self.layers = nn.ModuleList(AffineCoupling(dim, hidden) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Z = F(X): x [..., d] -> (z [..., d], log|det dz/dx| [...])."""
        log_det = x.new_zeros(x.shape[:-1])
        for layer in self.layers:
            x, layer_log_det = layer(x)
            x = x.flip(-1)  # permutation (|det| = 1) so every feature gets transformed
            log_det = log_det + layer_log_det
        return x, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """X = F^-1(Z): z [..., d] -> x [..., d]."""
        for layer in reversed(self.layers):
            z = layer.inverse(z.flip(-1))
        return z


class ResidualChannelAttentionBlock(nn.Module):
    """RCAB with Conv1d: x + CA(conv(relu(conv(x)))), CA = sigmoid(MLP(masked mean over positions))."""

    def __init__(self, dim: int, reduction: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = MaskedConv1d(dim, dim, kernel_size)
        self.conv2 = MaskedConv1d(dim, dim, kernel_size)
        squeezed = max(1, dim // reduction)
        # GELU rather than RCAN's ReLU: with few squeezed channels a ReLU unit can die for a whole batch.
        self.channel_attention = nn.Sequential(nn.Linear(dim, squeezed), nn.GELU(), nn.Linear(squeezed, dim), nn.Sigmoid())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, P, d], mask [B, P] -> [B, P, d] (zero at invalid positions)."""
        h = self.conv2(F.relu(self.conv1(x, mask)), mask)
        weights = self.channel_attention(masked_mean(h, mask)).unsqueeze(1)
        return zero_masked(x + h * weights, mask)


class ReconstructionModule(nn.Module):
    """CM-ARR Sec. 3.2: RCAB stack + Conv1d with a long skip: X~ [B, P, d] -> X^ [B, P, d]."""

    def __init__(self, dim: int, num_blocks: int, reduction: int, kernel_size: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResidualChannelAttentionBlock(dim, reduction, kernel_size) for _ in range(num_blocks))
        self.out = MaskedConv1d(dim, dim, kernel_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """See class docstring; invalid positions come out as zeros."""
        h = x
        for block in self.blocks:
            h = block(h, mask)
        return zero_masked(x + self.out(h, mask), mask)


__all__ = ["resample_valid_frames", "UncertaintyModule", "AffineCoupling", "NormalizingFlow",
           "ResidualChannelAttentionBlock", "ReconstructionModule"]
