"""CM-ARR (Sun et al., 2024): cross-modal alignment, reconstruction and refinement.

Implements, from `cm-arr-alignment-reconstruction-refinement.txt`:
- Alignment (Sec. 3.1.2, Eq. 1-5): the uncertainty modelling component (`UncertaintyModule`: input
  projection, multi-head self-attention and a GELU MLP with LayerNorms -> mean mu and variance Sigma per
  position), the 2-Wasserstein distance between diagonal Gaussians (`wasserstein2_squared`) and the
  distribution-based InfoNCE with scale a < 0, shift b and learned temperature tau (`distribution_infonce`),
  summed over the speech-text, text-video and speech-video pairs: aux loss ``udcl`` (alpha = 1).
- Reconstruction (Sec. 3.2, Eq. 6-9): Conv1D projection to a common width, one normalizing flow per
  modality (`NormalizingFlow`, affine coupling layers with exact inverse and log-determinant), the
  missing Z estimated as the mean of the available Z's (Eq. 7) and inverted by the missing modality's
  flow (Eq. 8), then a 1D residual-channel-attention reconstruction module (`ReconstructionModule`,
  RCAB blocks with Conv1d instead of Conv2d) and L_rec (Eq. 9): aux loss ``rec`` (lambda = 10).
- Refinement (Sec. 3.3): supervised point-based contrastive loss over all modality views, positives =
  same label (`supervised_contrastive_loss`, Khosla et al.): aux loss ``spcl`` (beta = 0.1); and the
  fusion of Eq. 10-13: text queries cross-attend to video and speech, concatenation, self-attention.

Training with simulated vs real missingness. L_rec needs the real features of the modality that is
reconstructed, so it is computed wherever they exist:
- every modality available to the model is also reconstructed leave-one-out from the *other*
  available ones (Eq. 7 with the remaining modalities) and compared with its own features, so plain
  `forward(batch, targets)` on complete or partly missing data always trains the flows and the
  reconstruction modules;
- `forward(batch, targets, dropped=...)` reproduces the paper's protocol exactly: `dropped` [B, M] marks
  modalities that are present in `batch` but must be treated as missing (simulated missingness). The
  prediction never sees them (it uses their reconstruction); only L_rec compares against them.
  A modality whose presence is False (really missing) is never read. `accepts_dropped = True`, so the
  trainer passes the simulated drops of the training schedules (`Batch.dropped`) this way; the paper
  recipe (`affectflow.pipeline.train.recipes`) trains under random simulated drops.

Deliberate differences (the paper leaves them open or they would break the fusion contract):
- Sec. 3.2's Conv1D projects "each modality's features" without saying whether these are R_n or the
  UMC output. With frozen, pre-extracted R_n the alignment of Sec. 3.1 could then never reach the
  reconstruction or the prediction, so the projection takes the UMC mean mu_n (the aligned
  representation) as its input.
- Frame-level inputs of different lengths are resampled onto a fixed grid of `num_positions` positions
  (linear interpolation over each sample's valid frames) so that Eq. 7 can average Z's position-wise;
  at conversation level the positions are the utterances and nothing is resampled.
- Eq. 1 writes ||Sigma_n - Sigma_m||^2 with Sigma the variance vector; the 2-Wasserstein closed form for
  diagonal Gaussians uses the standard deviations, ||Sigma_n^(1/2) - Sigma_m^(1/2)||^2, which we use.
- The shift b of Eq. 5 cancels in the softmax of Eq. 3 (it is added to every logit of a row), so it
  would never receive a gradient; it is kept as a fixed buffer (`shift`, default 0) rather than a dead
  parameter. The scale a (kept negative as -exp(.)) and the temperature tau are learned.
- L_rec is the squared Frobenius norm of Eq. 9 divided by the number of entries (a mean squared error),
  so lambda = 10 means the same for any width or sequence length. Its target X_t is detached (as in
  DiCMoR's released code, on which CM-ARR's flows and RCAB module build): L_rec trains the flows, the
  reconstruction modules and the *source* modalities' encoders, never the target modality's encoder.
- Eq. 10-13 define two cross-attentions (text <- video, text <- speech); the prose's "three cross-modal
  blocks" is not specified further, so we follow the equations. For regression tasks the supervised
  contrastive loss uses the sign of the target as its class (the paper only treats classification).
- The paper does not give widths, flow depth or RCAB count; defaults below are ours. The UMC adds fixed
  sinusoidal positions before its attention, and the RCAB channel attention uses GELU instead of RCAN's
  ReLU (with few squeezed channels a ReLU unit can die for a whole batch).
- Eq. 14 has no likelihood term for the flows, and neither do we: the flows learn only through L_rec
  (and the prediction), so Z_n is not explicitly pushed towards a Gaussian as in DiCMoR, whose
  flow/reconstruction design CM-ARR reuses (DiCMoR adds a Gaussian negative log-likelihood).
- Weights: Sec. 4.2 sets alpha = 1, beta = 0.1, lambda = 10 (our defaults); Sec. 4.5 calls 0.5 the best
  L_spcl weight. Optimiser (Sec. 4.2): lr 1e-5, batch size 16, 100 epochs; the paper does not name the
  optimiser, `recommended_optimizer` assumes Adam.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from affectflow.fusion.base import FusionModel
from affectflow.fusion.contract import FusionOutput, ModalityBatch, TaskSpec, masked_mean, zero_masked
from affectflow.fusion.layers import (CrossModalBlock, FeedForward, MaskedConv1d, MaskedMultiheadAttention, PreLNTransformerBlock,
                     SinusoidalPositionalEmbedding)
from affectflow.fusion.registry import register_fusion
from affectflow.pipeline.core.names import IGNORE_INDEX


def wasserstein2_squared(mu_a: torch.Tensor, var_a: torch.Tensor, mu_b: torch.Tensor, var_b: torch.Tensor) -> torch.Tensor:
    """CM-ARR Eq. 1: squared 2-Wasserstein distance between diagonal Gaussians, broadcasting over leading dims.

    mu_*, var_* [..., d] (variances > 0) -> [...]: ||mu_a - mu_b||^2 + ||sqrt(var_a) - sqrt(var_b)||^2.
    """
    return (mu_a - mu_b).pow(2).sum(-1) + (var_a.sqrt() - var_b.sqrt()).pow(2).sum(-1)


def distribution_infonce(mu_a: torch.Tensor, var_a: torch.Tensor, mu_b: torch.Tensor, var_b: torch.Tensor,
                         scale: torch.Tensor, shift: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """CM-ARR Eq. 2-5: L^{a2b} + L^{b2a} with S = scale * D_2W + shift, logits S / temperature.

    mu_*, var_*: [N, d], row i of a and row i of b come from the same instance (positives).
    scale (negative), shift, temperature (> 0): scalars. Returns the mean over anchors (a scalar).
    """
    distance = wasserstein2_squared(mu_a[:, None], var_a[:, None], mu_b[None], var_b[None])  # [N, N]
    logits = (scale * distance + shift) / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)


def supervised_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) on L2-normalised features.

    features: [N, E]; labels: [N] int (same label = positive). Anchors without positives are skipped;
    returns 0 (with a graph) when no anchor has a positive.
    """
    z = F.normalize(features, dim=-1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positives.sum(1)
    has_positive = count > 0
    if not bool(has_positive.any()):
        return features.sum() * 0.0
    per_anchor = -torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1) / count.clamp(min=1)
    return per_anchor[has_positive].mean()


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


@register_fusion("cmarr")
class CMARR(FusionModel):
    """CM-ARR: UMC alignment, flow-based reconstruction of missing modalities, refinement and fusion.

    Input: ModalityBatch (frame level: any T_m; conversation level: shared T). Optional `dropped` [B, M]
    bool marks present modalities to treat as missing (simulated missingness; used only by L_rec).
    Output: logits [B, C] / value [B] (or [B, T, ...]); embedding [B, 2d] (or [B, T, 2d]).
    Aux losses (unweighted; `loss_weights` holds alpha, beta, lambda of Eq. 14): "udcl", "rec" (always),
    "spcl" (with targets). Extras: "variance" [B, M] mean predicted variance per modality (0 if absent).

    On real CMU-MOSI (README, "Real tri-modal benchmark", full config) its paper recipe stays below the
    linear floor at utterance level. Measured (`python scripts/bench_mosi_real.py --config full --levels
    utterance --seeds 1 --jobs 1 --models cmarr`; default sizes, 13.4 M parameters, paper recipe at
    --budget 0.08 with lr raised to 1e-3; one seed): complete-input test Acc2 62.3 with the paper's `random`
    schedule but 77.1 trained on `full` (logistic-regression floor 76.8; `tiny_config()` random: 72.6 ±
    1.5, 3 seeds). The loss is where video meets text: {t} 75.0 and {a,t} 74.3, but {t,v} and {a,t,v}
    62.3 (the `full` arm: 77.2 / 77.1). Why, from what was measured: the published train features come out
    of unimodal networks trained on the train split, so a logistic regression on video alone separates
    train 93.0 % and the carved-out validation 87.7 % but test only 53.5 %. Trained with text dropped in
    part of the batches, the 256-d model appears to lean on video when it is there, and the validation (MAE averaged
    over conditions, 1.33 to 0.94 over the 8 epochs, epoch 7 selected) rewards that; nothing carved out
    of train can show that it does not transfer to the test speakers.
    """

    loss_weights = {"udcl": 1.0, "spcl": 0.1, "rec": 10.0}
    accepts_dropped = True
    recommended_optimizer = {"name": "adam", "lr": 1e-5, "batch_size": 16, "epochs": 100}

    def __init__(self, task_spec: TaskSpec, hidden_dim: int = 256, num_heads: int = 4, num_positions: int = 16,
                 conv_kernel: int = 3, flow_layers: int = 4, flow_hidden: int = 256, rcab_blocks: int = 2,
                 rcab_reduction: int = 4, dropout: float = 0.1, query_modality: str = "t",
                 alignment_temperature: float = 0.07, contrastive_temperature: float = 0.07, shift: float = 0.0) -> None:
        super().__init__(task_spec, hidden_dim=hidden_dim, num_heads=num_heads, num_positions=num_positions,
                         conv_kernel=conv_kernel, flow_layers=flow_layers, flow_hidden=flow_hidden,
                         rcab_blocks=rcab_blocks, rcab_reduction=rcab_reduction, dropout=dropout,
                         query_modality=query_modality, alignment_temperature=alignment_temperature,
                         contrastive_temperature=contrastive_temperature, shift=shift)
        mods, d = task_spec.modalities, hidden_dim
        if query_modality not in mods:
            raise ValueError(f"CM-ARR: query_modality {query_modality!r} is not one of the task's modalities {mods}")
        if num_positions < 1:
            raise ValueError(f"CM-ARR: num_positions must be >= 1, got {num_positions}")
        self.num_positions, self.query_modality = num_positions, query_modality
        self.contrastive_temperature = contrastive_temperature
        self.uncertainty = nn.ModuleDict({m: UncertaintyModule(task_spec.input_dims[m], d, num_heads, dropout) for m in mods})
        self.log_neg_scale = nn.Parameter(torch.tensor(-math.log(d)))  # a = -exp(.) < 0, starts at -1/d
        self.log_temperature = nn.Parameter(torch.tensor(math.log(alignment_temperature)))
        self.register_buffer("shift", torch.tensor(float(shift)))
        self.projections = nn.ModuleDict({m: MaskedConv1d(d, d, conv_kernel) for m in mods})
        self.flows = nn.ModuleDict({m: NormalizingFlow(d, flow_hidden, flow_layers) for m in mods})
        self.reconstructors = nn.ModuleDict({m: ReconstructionModule(d, rcab_blocks, rcab_reduction, conv_kernel)
                                             for m in mods})
        self.sources = [m for m in mods if m != query_modality]
        self.cross = nn.ModuleDict({m: CrossModalBlock(d, num_heads, 4.0, dropout) for m in self.sources})
        fused_dim = d * max(1, len(self.sources))
        self.self_attention = PreLNTransformerBlock(fused_dim, num_heads, 4.0, dropout)
        self.norm = nn.LayerNorm(fused_dim)
        self.head = self.make_head(fused_dim, hidden=d, dropout=dropout)

    @classmethod
    def tiny_config(cls) -> dict:
        """Small hyperparameters for tests."""
        return {"hidden_dim": 16, "num_heads": 2, "num_positions": 4, "flow_layers": 2, "flow_hidden": 16,
                "rcab_blocks": 1, "dropout": 0.0}

    @property
    def per_position(self) -> bool:
        """True at conversation level (one prediction per position of T)."""
        return self.task_spec.level == "conversation"

    def _positions(self, batch: ModalityBatch, m: str, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Modality m on the shared position axis: ([B, P, D_m], valid [B, P])."""
        x = batch.features[m]
        if self.per_position:
            return zero_masked(x, valid), valid
        grid, present = resample_valid_frames(x, valid, self.num_positions)
        return grid, present.unsqueeze(1).expand(-1, self.num_positions)

    def _check(self, batch: ModalityBatch, dropped: torch.Tensor | None) -> None:
        mods = self.task_spec.modalities
        if self.per_position and len({batch.features[m].shape[1] for m in mods}) > 1:
            raise ValueError(f"conversation-level batch: modalities must share T, got "
                             f"{ {m: batch.features[m].shape[1] for m in mods} }")
        if dropped is not None and tuple(dropped.shape) != (batch.batch_size, len(batch.modalities)):
            raise ValueError(f"dropped must be [B, M] = {(batch.batch_size, len(batch.modalities))}, got {tuple(dropped.shape)}")

    def forward(self, batch: ModalityBatch, targets: torch.Tensor | None = None,
                dropped: torch.Tensor | None = None) -> FusionOutput:
        """Align (UMC), project, flow, reconstruct what is missing, fuse; see the module docstring."""
        self._check(batch, dropped)
        mods = self.task_spec.modalities
        mu, var, real, avail, features = {}, {}, {}, {}, {}
        for m in mods:
            real_valid = batch.valid(m)
            x, real[m] = self._positions(batch, m, real_valid)
            if dropped is not None:  # simulated missingness: hidden from the prediction, kept for L_rec
                real[m] = real[m] & batch.present(m).unsqueeze(1)
                avail[m] = real[m] & ~dropped[:, batch.modalities.index(m)].to(torch.bool).unsqueeze(1)
            else:
                avail[m] = real[m]
            mu[m], var[m] = self.uncertainty[m](x, real[m])
            features[m] = self.projections[m](mu[m], real[m])  # X_m (Eq. 6 input)
        latents = {m: self.flows[m](features[m])[0] for m in mods}  # Z_m = F_m(X_m), Eq. 6
        final, rec_error, rec_count = {}, features[mods[0]].new_zeros(()), 0.0
        any_avail = torch.stack([avail[m] for m in mods]).any(0)  # [B, P]
        for m in mods:
            reconstructed, has_other = self._reconstruct(m, latents, avail)
            final[m] = torch.where(avail[m].unsqueeze(-1), features[m], reconstructed)
            target_valid = real[m] & has_other
            # The real features are the target, not a trainable end: without the stop-gradient, lambda = 10
            # pulls every modality's UMC/projection towards easily reconstructed (shrunken) features.
            error = (reconstructed - features[m].detach()).pow(2).mean(-1)
            rec_error = rec_error + (error * target_valid.to(error.dtype)).sum()
            rec_count = rec_count + target_valid.sum()
        aux = {"rec": rec_error / torch.as_tensor(rec_count).clamp(min=1.0),
               "udcl": self._alignment_loss(mu, var, avail)}
        fused = self._fuse(final, any_avail)
        if targets is not None:
            aux["spcl"] = self._refinement_loss(final, any_avail, targets)
        embedding = fused if self.per_position else masked_mean(fused, any_avail)
        variance = torch.stack([masked_mean(var[m], avail[m]).mean(-1) * avail[m].any(1) for m in mods], dim=1)
        return self.package(self.head(embedding), embedding, aux, {"variance": variance.detach()})

    def _reconstruct(self, m: str, latents: dict[str, torch.Tensor],
                     avail: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 7-8 + RCAB: X^_m from the mean Z of the available modalities other than m -> ([B, P, d], [B, P])."""
        others = [n for n in self.task_spec.modalities if n != m]
        if not others:
            z = latents[m]
            return torch.zeros_like(z), torch.zeros(z.shape[:2], dtype=torch.bool, device=z.device)
        weights = torch.stack([avail[n] for n in others]).to(latents[m].dtype).unsqueeze(-1)  # [O, B, P, 1]
        count = weights.sum(0)
        z_mean = (torch.stack([zero_masked(latents[n], avail[n]) for n in others]) * weights).sum(0) / count.clamp(min=1.0)
        has_other = count.squeeze(-1) > 0
        estimate = zero_masked(self.flows[m].inverse(z_mean), has_other)  # X~_m = F_m^-1(Z~_m)
        return self.reconstructors[m](estimate, has_other), has_other

    def _instances(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-instance vectors: utterance level pools positions ([B, d], [B]); conversation flattens ([B*T, d], [B*T])."""
        if self.per_position:
            return x.flatten(0, 1), valid.flatten()
        return masked_mean(x, valid), valid.any(1)

    def _alignment_loss(self, mu: dict, var: dict, avail: dict) -> torch.Tensor:
        """Eq. 2: L_udcl summed over modality pairs, over instances where both modalities are available."""
        mods = self.task_spec.modalities
        scale, temperature = -self.log_neg_scale.exp(), self.log_temperature.exp()
        total = mu[mods[0]].new_zeros(())
        for i, a in enumerate(mods):
            for b in mods[i + 1:]:
                mu_a, ok_a = self._instances(mu[a], avail[a])
                mu_b, ok_b = self._instances(mu[b], avail[b])
                var_a, var_b = self._instances(var[a], avail[a])[0], self._instances(var[b], avail[b])[0]
                both = ok_a & ok_b
                if int(both.sum()) >= 2:
                    total = total + distribution_infonce(mu_a[both], var_a[both], mu_b[both], var_b[both],
                                                         scale, self.shift, temperature)
        return total

    def _refinement_loss(self, final: dict, any_avail: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """L_spcl: supervised contrastive loss over every (instance, modality) view with a usable label."""
        targets = targets.reshape(-1)
        if self.task_spec.kind == "classification":
            labels, usable = targets.long(), targets.long() != IGNORE_INDEX
        else:
            labels, usable = (targets >= 0).long(), ~torch.isnan(targets)
        views, view_labels = [], []
        for m in self.task_spec.modalities:
            vectors, ok = self._instances(final[m], any_avail)
            keep = ok & usable
            views.append(vectors[keep])
            view_labels.append(labels[keep])
        return supervised_contrastive_loss(torch.cat(views), torch.cat(view_labels), self.contrastive_temperature)

    def _fuse(self, final: dict, valid: torch.Tensor) -> torch.Tensor:
        """Eq. 10-13: query modality cross-attends to each other one, concat, self-attention -> [B, P, d * S]."""
        query = final[self.query_modality]
        streams = [self.cross[m](query, final[m], valid, valid) for m in self.sources] or [query]
        fused = self.self_attention(torch.cat(streams, dim=-1), valid)
        return zero_masked(self.norm(fused), valid)


__all__ = ["CMARR", "UncertaintyModule", "NormalizingFlow", "AffineCoupling", "ReconstructionModule",
           "ResidualChannelAttentionBlock", "wasserstein2_squared", "distribution_infonce",
           "supervised_contrastive_loss", "resample_valid_frames"]
