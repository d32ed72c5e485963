"""Frozen reference copy of fusion/dqf.py as of commit e49d3d7 (before the issue 15 speed-up).

Test-only: the equivalence tests load it by path and compare losses and gradients of the package model
with this one on the same state dict. Never imported by the package; not registered. Do not edit.

DQF — Dual-Query Fusion (Miyoshi, Otani, Okafuji; ../shared/papers/dqf-dual-query-fusion.txt).

Implemented equations:
- Sec. 3.1 random frame masking: `dqf_frame_masking` replaces a ratio g_m ~ U[0, 1] (drawn per modality
  and mini-batch) of each sample's valid frames by zero vectors. The model is not told (masks stay True),
  as in the paper; the harness applies it to training batches (`affectflow.pipeline.train.schedules`, "dqf").
- Eq. 2: a temporal Conv1D per modality (d_m -> dim, 'same' padding).
- Eq. 3-4 (Q-UA): learnable queries Q_m, updated before every transformer layer by
  Q <- LayerNorm(MHSA(Q) + Q) and added element-wise to the layer input: H <- Layer(H + Q).
- Eq. 5-8 (Q-CA) for every modality pair (a, b): a shared learnable query Q_ab, updated by self-attention
  (Eq. 3), then Attention(Attention(Q, H_a, Q), H_b, H_b) for a->b and symmetrically for b->a; the two
  directions are concatenated, passed through a Linear (Eq. 7) and average-pooled (Eq. 8).
- Eq. 9: MHSA (a pre-LN transformer block, `fusion_layers` of them) over the pooled pair features and a
  learnable [CLS] token; "Pool" is read as taking the [CLS] output, which is H_ca.
- Eq. 1: one MLP head per granularity (a, t, v, each pair, and all modalities = H_ca) gives the aux losses
  `head_<granularity>` (weight 1, the task's CE / MAE); the main head reads the concatenation of all
  granularity features (its loss is L_task, computed by the harness).

Deliberate differences / choices the paper leaves open (say so when reporting results):
- Queries are position-indexed tables of `max_length` rows (the paper's Q_m is T_m x d_m for a fixed
  T_m); a sequence uses the first T rows. In Eq. 5 the inner Attention(Q, H_a, Q) takes its values from
  the query, which needs one query row per frame of H_a: the a->b direction uses the first T_a rows of
  Q_ab, the b->a direction the first T_b rows. The paper's features are aligned (T_a = T_b); for
  unaligned lengths each direction is average-pooled before the Linear of Eq. 7, which is exactly
  Eq. 7-8 when the lengths agree (a Linear commutes with averaging).
- Each Q-CA layer wraps the three attentions in residual + LayerNorm (as Eq. 3 does for the query
  self-attention) and ends with a feed-forward sublayer, like a transformer decoder layer; the query
  state is carried from layer to layer. Q-UA layers are pre-LN transformer blocks.
- Missing frames: frames marked invalid *inside* a sample's span (up to its last valid frame) are
  treated as the paper treats missing frames: zero input (plus the query). Positions after the last
  valid frame are padding and are masked out of every attention, so a sample never depends on how far
  the batch was padded. A modality with no valid frame gives zero features.
- Hidden size, Conv1D kernel, dropout and the momentum value are not given in the paper (128, 3, 0.1,
  0.9 here). The [CLS]/pair tokens whose modalities are both absent are masked out of Eq. 9.
- At conversation level nothing is pooled over T: heads predict per position.

On the real CMU-MOSI features (scripts/bench_mosi_real.py, docs/recipes.md "Real tri-modal benchmark"): DQF at
conversation level with its dqf schedule is the best model (79.4 +- 0.3 Acc2, above the 76.8 logistic
floor), but under {a} alone it is below the floor (37.9 at utterance level, every seed): with text and
video frames zeroed its output is constant (std 0.04 over the 751 test utterances, mean -0.54, seed 1), so
every utterance is called negative and the score is the test split's negative share. Not a bug we found:
the audio features carry little sentiment (the floor reaches 54.5 on {a}, below the 62% majority), the L1
regression target's train median is -0.2 while the speaker-independent test split is 62% positive (an
uninformative input is answered with a negative score). At conversation level, trained with its schedule,
{a} reaches 48.1 +- 7.1.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn as nn
from einops import rearrange, repeat

from affectflow.fusion.base import FusionModel
from affectflow.fusion.contract import FusionOutput, ModalityBatch, TaskSpec, masked_mean, zero_masked
from affectflow.fusion.layers import FeedForward, MaskedMultiheadAttention, PreLNTransformerBlock, TransformerEncoder


def dqf_frame_masking(batch: ModalityBatch, generator: np.random.Generator | torch.Generator,
                      mark_invalid: bool = False) -> ModalityBatch:
    """DQF's training-time frame masking (Sec. 3.1): per modality draw g ~ U[0, 1] for the mini-batch and
    replace round(g * n_valid) randomly chosen valid frames of every sample by zeros.

    features [B, T, D] keep their shape; masks stay as they are (the model is not told, as in the paper)
    unless `mark_invalid`. Counts use stochastic rounding so T = 1 inputs are masked with probability g.
    """
    if isinstance(generator, torch.Generator):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        generator = np.random.default_rng(seed)
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"dqf_frame_masking needs a numpy or torch Generator, got {type(generator).__name__}")
    features, masks = dict(batch.features), dict(batch.masks)
    for modality in batch.modalities:
        valid = batch.valid(modality).cpu().numpy()
        ratio = generator.random()
        exact = ratio * valid.sum(axis=1)
        counts = np.floor(exact).astype(np.int64) + (generator.random(valid.shape[0]) < exact - np.floor(exact))
        keys = np.where(valid, generator.random(valid.shape), np.inf)  # only valid frames can be chosen
        ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
        hit = torch.from_numpy(ranks < counts[:, None]).to(batch.device) & batch.valid(modality)
        features[modality] = zero_masked(features[modality], ~hit)
        if mark_invalid:
            masks[modality] = masks[modality] & ~hit
    return ModalityBatch(features, masks, batch.presence, batch.modalities)


def sequence_span(valid: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: positions up to each row's last valid frame (all False for a row without one)."""
    positions = torch.arange(1, valid.shape[1] + 1, device=valid.device)
    last = (valid.long() * positions).max(dim=1).values
    return positions[None, :] <= last[:, None]


def span_readout(x: torch.Tensor, span: torch.Tensor, per_position: bool) -> torch.Tensor:
    """Average x [B, T, D] over span [B, T] (Eq. 8's AvgPool) -> [B, D], or keep [B, T, D] per position."""
    return zero_masked(x, span) if per_position else masked_mean(x, span)


class QueryTable(nn.Module):
    """Learnable position-indexed queries [max_length, dim]; `take(B, T)` -> [B, T, dim]."""

    def __init__(self, max_length: int, dim: int) -> None:
        super().__init__()
        self.max_length = max_length
        self.weight = nn.Parameter(torch.randn(max_length, dim) * 0.02)

    def take(self, batch_size: int, length: int) -> torch.Tensor:
        """The first `length` queries for each of `batch_size` samples: [B, T, dim]."""
        if length > self.max_length:
            raise ValueError(f"DQF: sequence length {length} exceeds the learnable query table "
                             f"(max_length={self.max_length}); build the model with a larger max_length")
        return repeat(self.weight[:length], "t d -> b t d", b=batch_size)


class QueryUpdate(nn.Module):
    """Eq. 3: Q_hat = LayerNorm(MHSA(Q) + Q), attention restricted to `mask`."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = MaskedMultiheadAttention(dim, num_heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """query [B, T, D], mask [B, T] bool -> [B, T, D] (zero outside mask)."""
        return zero_masked(self.norm(self.attention(query, query, query, key_mask=mask, query_mask=mask) + query), mask)


class QueryUnimodalEncoder(nn.Module):
    """Conv1D (Eq. 2) + Q-UA (Eq. 3-4): X [B, T, D_m] -> H [B, T, dim] over the sample's span."""

    def __init__(self, in_dim: int, dim: int, num_heads: int, num_layers: int, kernel_size: int,
                 max_length: int, dropout: float) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"DQF conv_kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv1d(in_dim, dim, kernel_size, padding=kernel_size // 2)
        self.queries = QueryTable(max_length, dim)
        self.updates = nn.ModuleList(QueryUpdate(dim, num_heads, dropout) for _ in range(num_layers))
        self.layers = nn.ModuleList(PreLNTransformerBlock(dim, num_heads, dropout=dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        """x [B, T, D_m], valid/span [B, T] bool -> H [B, T, dim] (zero outside span)."""
        x = zero_masked(x, valid)  # missing frames are zero vectors, as in the paper
        h = zero_masked(rearrange(self.conv(rearrange(x, "b t d -> b d t")), "b d t -> b t d"), span)
        query = self.queries.take(x.shape[0], x.shape[1])
        for update, layer in zip(self.updates, self.layers):
            query = update(query, span)
            h = layer(h + query, span)
        return zero_masked(self.norm(h), span)


class QueryCrossLayer(nn.Module):
    """One Q-CA layer (Eq. 3 + Eq. 5): Z <- LN(Z + MHSA(Z)); Z <- LN(Z + Attn(Z, H_a, Z));
    Z <- LN(Z + Attn(Z, H_b, H_b)); Z <- LN(Z + FFN(Z))."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.query_update = QueryUpdate(dim, num_heads, dropout)
        self.inner = MaskedMultiheadAttention(dim, num_heads, dropout=dropout)
        self.outer = MaskedMultiheadAttention(dim, num_heads, dropout=dropout)
        self.norm_inner, self.norm_outer, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = FeedForward(dim, 4 * dim, dropout)

    def forward(self, z: torch.Tensor, h_a: torch.Tensor, span_a: torch.Tensor,
                h_b: torch.Tensor, span_b: torch.Tensor) -> torch.Tensor:
        """z [B, T_a, D] (aligned with h_a [B, T_a, D]), h_b [B, T_b, D] -> [B, T_a, D] (zero outside span_a)."""
        z = self.query_update(z, span_a)
        # Eq. 5 inner: keys are the frames of H_a, values the query rows aligned with them.
        z = self.norm_inner(z + self.inner(z, h_a, z, key_mask=span_a, query_mask=span_a))
        z = self.norm_outer(z + self.outer(z, h_b, h_b, key_mask=span_b, query_mask=span_a))
        return zero_masked(self.norm_ff(z + self.ff(z)), span_a)


class QueryCrossDirection(nn.Module):
    """Q-CA_{a->b} (Eq. 5) as a stack of `QueryCrossLayer`s started from the shared query Q_ab."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(QueryCrossLayer(dim, num_heads, dropout) for _ in range(num_layers))

    def forward(self, query: torch.Tensor, h_a: torch.Tensor, span_a: torch.Tensor,
                h_b: torch.Tensor, span_b: torch.Tensor) -> torch.Tensor:
        """query [B, T_a, D] (rows of Q_ab) -> H_{a->b} [B, T_a, D]."""
        z = zero_masked(query, span_a)
        for layer in self.layers:
            z = layer(z, h_a, span_a, h_b, span_b)
        return z


class QueryCrossAttention(nn.Module):
    """Q-CA for one modality pair (Eq. 5-8): both directions from a shared query, concat + Linear, AvgPool."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, max_length: int, dropout: float) -> None:
        super().__init__()
        self.queries = QueryTable(max_length, dim)
        self.forward_direction = QueryCrossDirection(dim, num_heads, num_layers, dropout)
        self.backward_direction = QueryCrossDirection(dim, num_heads, num_layers, dropout)
        self.merge = nn.Linear(2 * dim, dim)

    def forward(self, h_a: torch.Tensor, span_a: torch.Tensor, h_b: torch.Tensor, span_b: torch.Tensor,
                per_position: bool) -> torch.Tensor:
        """H_a [B, T_a, D], H_b [B, T_b, D] -> pooled H~_ab [B, D] (or [B, T, D] at conversation level)."""
        batch_size = h_a.shape[0]
        a_to_b = self.forward_direction(self.queries.take(batch_size, h_a.shape[1]), h_a, span_a, h_b, span_b)
        b_to_a = self.backward_direction(self.queries.take(batch_size, h_b.shape[1]), h_b, span_b, h_a, span_a)
        merged = self.merge(torch.cat([span_readout(a_to_b, span_a, per_position),
                                       span_readout(b_to_a, span_b, per_position)], dim=-1))
        if per_position:
            return zero_masked(merged, span_a | span_b)
        return merged * (span_a.any(1) | span_b.any(1))[:, None].to(merged.dtype)


class DQF(FusionModel):
    """Dual-Query Fusion: Conv1D + Q-UA per modality, Q-CA per pair, MHSA + [CLS], multi-granularity heads.

    Embedding: the concatenated granularity features [B, G * dim] (G = 7 for a, t, v), or [B, T, G * dim].
    Aux losses (with targets): `head_<g>` for every granularity g (a, t, v, at, av, tv, atv), weight 1.
    """

    stages = ("main",)
    recommended_optimizer = {"name": "sgd", "lr": 1e-5, "momentum": 0.9, "batch_size": 64, "epochs": 100}

    def __init__(self, task_spec: TaskSpec, dim: int = 128, num_heads: int = 4, num_layers: int = 6,
                 fusion_layers: int = 1, conv_kernel_size: int = 3, max_length: int = 1024,
                 dropout: float = 0.1) -> None:
        super().__init__(task_spec, dim=dim, num_heads=num_heads, num_layers=num_layers, fusion_layers=fusion_layers,
                         conv_kernel_size=conv_kernel_size, max_length=max_length, dropout=dropout)
        modalities = task_spec.modalities
        if len(modalities) < 2:
            raise ValueError(f"DQF fuses at least two modalities, got {modalities}")
        self.encoders = nn.ModuleDict({m: QueryUnimodalEncoder(task_spec.input_dims[m], dim, num_heads, num_layers,
                                                               conv_kernel_size, max_length, dropout)
                                       for m in modalities})
        self.pairs = [(a, b) for a, b in itertools.combinations(modalities, 2)]
        self.cross = nn.ModuleDict({a + b: QueryCrossAttention(dim, num_heads, num_layers, max_length, dropout)
                                    for a, b in self.pairs})
        self.cls_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.fusion = TransformerEncoder(dim, num_heads, fusion_layers, dropout=dropout)
        self.all_name = "".join(modalities) if len(modalities) > 2 else "all"
        self.granularities = list(modalities) + [a + b for a, b in self.pairs] + [self.all_name]
        self.heads = nn.ModuleDict({g: self.make_head(dim, hidden=dim, dropout=dropout) for g in self.granularities})
        self.main_head = self.make_head(len(self.granularities) * dim, hidden=dim, dropout=dropout)

    @classmethod
    def tiny_config(cls) -> dict:
        """Small hyperparameters for tests."""
        return {"dim": 16, "num_heads": 2, "num_layers": 1, "max_length": 16, "dropout": 0.0}

    def fuse_pairs(self, pair_features: list[torch.Tensor], pair_valid: list[torch.Tensor]) -> torch.Tensor:
        """Eq. 9: MHSA over [H~_ab..., CLS] -> the [CLS] output. Inputs [B, D] / [B] (or [B, T, D] / [B, T])."""
        tokens = torch.stack(pair_features + [self.cls_token.expand_as(pair_features[0])], dim=-2)
        valid = torch.stack(pair_valid + [torch.ones_like(pair_valid[0])], dim=-1)
        if tokens.ndim == 4:  # conversation level: one token set per position
            batch_size = tokens.shape[0]
            tokens, valid = rearrange(tokens, "b t n d -> (b t) n d"), rearrange(valid, "b t n -> (b t) n")
            return rearrange(self.fusion(tokens, valid)[:, -1], "(b t) d -> b t d", b=batch_size)
        return self.fusion(tokens, valid)[:, -1]

    def forward(self, batch: ModalityBatch, targets: torch.Tensor | None = None) -> FusionOutput:
        """Predict from all granularities: logits [B, C] / value [B] (or per position [B, T, ...])."""
        per_position = self.task_spec.level == "conversation"
        spans, hidden, features = {}, {}, {}
        for m in self.task_spec.modalities:
            valid = batch.valid(m)
            spans[m] = sequence_span(valid)
            hidden[m] = self.encoders[m](batch.features[m], valid, spans[m])
            features[m] = span_readout(hidden[m], spans[m], per_position)
        pair_valid = []
        for a, b in self.pairs:
            features[a + b] = self.cross[a + b](hidden[a], spans[a], hidden[b], spans[b], per_position)
            pair_valid.append(spans[a] | spans[b] if per_position else spans[a].any(1) | spans[b].any(1))
        fused = self.fuse_pairs([features[a + b] for a, b in self.pairs], pair_valid)
        if per_position:
            fused = zero_masked(fused, torch.stack(pair_valid, dim=-1).any(-1))
        features[self.all_name] = fused
        embedding = torch.cat([features[g] for g in self.granularities], dim=-1)
        aux_losses = {}
        if targets is not None:
            aux_losses = {f"head_{g}": self.task_loss(self.package_prediction(self.heads[g](features[g])), targets)
                          for g in self.granularities}
        return self.package(self.main_head(embedding), embedding, aux_losses)

    def package_prediction(self, head_output: torch.Tensor) -> torch.Tensor:
        """Head output [..., C] -> logits [..., C] (classification) or values [...] (regression)."""
        return head_output if self.task_spec.kind == "classification" else head_output.squeeze(-1)
