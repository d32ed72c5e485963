"""Baseline fusion models: late fusion, early fusion and a MulT-style cross-modal transformer.

- `late_fusion`: one MLP head per modality on its masked-mean-pooled features; the logits (or values)
  are averaged over the modalities present for the sample (per utterance at conversation level).
- `early_fusion`: masked mean-pool per modality, concatenated with the presence bits, then an MLP.
  Absent modalities contribute exact zeros plus a 0 presence bit.
- `mult`: MulT (Tsai et al., ACL 2019): Conv1D projection + sinusoidal positions per modality, one
  cross-modal transformer per (target <- source) pair, a self-attention transformer over each target's
  concatenated cross-modal streams, then a residual MLP on the concatenated per-target readouts.
  Deliberate differences: key-padding masks everywhere (an absent source contributes no attention,
  an absent target contributes zeros), and the readout is a masked mean over valid frames instead of
  the last time step (padded sequences have no meaningful "last" step).

At conversation level (`TaskSpec.level == "conversation"`) nothing is pooled over T: every model
predicts per position of T.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from affectflow.fusion.base import FusionModel
from affectflow.fusion.contract import FusionOutput, ModalityBatch, TaskSpec, zero_masked
from affectflow.fusion.layers import CrossModalBlock, MaskedConv1d, TransformerEncoder, modality_readout, sinusoidal_positions
from affectflow.fusion.registry import register_fusion


def mlp(in_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """LayerNorm -> Linear -> ReLU -> Dropout: in_dim -> hidden."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))


@register_fusion("late_fusion")
class LateFusion(FusionModel):
    """Per-modality heads averaged over present modalities.

    Embedding: the concatenated per-modality hidden vectors [B, M * hidden] (zeros for absent ones).
    """

    def __init__(self, task_spec: TaskSpec, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__(task_spec, hidden=hidden, dropout=dropout)
        self.encoders = nn.ModuleDict({m: mlp(task_spec.input_dims[m], hidden, dropout) for m in task_spec.modalities})
        self.heads = nn.ModuleDict({m: nn.Linear(hidden, task_spec.num_outputs) for m in task_spec.modalities})

    @classmethod
    def tiny_config(cls) -> dict:
        """Small hyperparameters for tests."""
        return {"hidden": 16, "dropout": 0.0}

    def forward(self, batch: ModalityBatch, targets: torch.Tensor | None = None) -> FusionOutput:
        """Average of per-modality predictions over present modalities: [B, C] (or [B, T, C])."""
        per_position = self.task_spec.level == "conversation"
        total, count, embeddings = 0.0, 0.0, []
        for m in self.task_spec.modalities:
            pooled, present = modality_readout(batch, m, batch.features[m], per_position)
            weight = present.to(pooled.dtype).unsqueeze(-1)
            hidden = self.encoders[m](pooled) * weight
            total = total + self.heads[m](hidden) * weight
            count = count + weight
            embeddings.append(hidden)
        prediction = total / torch.as_tensor(count).clamp(min=1.0)
        return self.package(prediction, torch.cat(embeddings, dim=-1))


@register_fusion("early_fusion")
class EarlyFusion(FusionModel):
    """Masked mean-pool per modality, concatenated with presence bits, then an MLP head.

    Embedding: the MLP's hidden vector [B, hidden] (or [B, T, hidden]).
    """

    def __init__(self, task_spec: TaskSpec, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__(task_spec, hidden=hidden, dropout=dropout)
        in_dim = sum(task_spec.input_dims[m] for m in task_spec.modalities) + len(task_spec.modalities)
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, task_spec.num_outputs)

    @classmethod
    def tiny_config(cls) -> dict:
        """Small hyperparameters for tests."""
        return {"hidden": 32, "dropout": 0.0}

    def forward(self, batch: ModalityBatch, targets: torch.Tensor | None = None) -> FusionOutput:
        """[pooled_a, pooled_t, pooled_v, presence bits] -> MLP -> [B, C] (or [B, T, C])."""
        per_position = self.task_spec.level == "conversation"
        parts, bits = [], []
        for m in self.task_spec.modalities:
            pooled, present = modality_readout(batch, m, batch.features[m], per_position)
            parts.append(pooled)
            bits.append(present.to(pooled.dtype).unsqueeze(-1))
        hidden = self.body(torch.cat(parts + bits, dim=-1))
        return self.package(self.head(hidden), hidden)


class CrossModalStream(nn.Module):
    """A stack of `CrossModalBlock`s: target [B, Tx, D] repeatedly attends to one source [B, Ty, D]."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(CrossModalBlock(dim, num_heads, dropout=dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        """x [B, Tx, D] (mask [B, Tx]) attends to y [B, Ty, D] (mask [B, Ty]) -> [B, Tx, D]."""
        for block in self.blocks:
            x = block(x, y, x_mask, y_mask)
        return zero_masked(self.norm(x), x_mask)


@register_fusion("mult")
class MulT(FusionModel):
    """MulT-style cross-modal transformer with key-padding masks (see module docstring).

    Embedding: the residual-MLP output on the concatenated per-target readouts [B, M * (M-1) * dim].
    """

    def __init__(self, task_spec: TaskSpec, dim: int = 30, num_heads: int = 5, cross_layers: int = 5,
                 self_layers: int = 3, kernel_size: int = 1, dropout: float = 0.1, output_dropout: float = 0.0) -> None:
        super().__init__(task_spec, dim=dim, num_heads=num_heads, cross_layers=cross_layers, self_layers=self_layers,
                         kernel_size=kernel_size, dropout=dropout, output_dropout=output_dropout)
        modalities = task_spec.modalities
        if len(modalities) < 2:
            raise ValueError(f"MulT needs at least two modalities, got {modalities}")
        self.dim = dim
        self.projections = nn.ModuleDict({m: MaskedConv1d(task_spec.input_dims[m], dim, kernel_size) for m in modalities})
        self.cross = nn.ModuleDict({f"{target}_from_{source}": CrossModalStream(dim, num_heads, cross_layers, dropout)
                                    for target in modalities for source in modalities if source != target})
        stream_dim = dim * (len(modalities) - 1)
        self.memory = nn.ModuleDict({m: TransformerEncoder(stream_dim, num_heads, self_layers, dropout=dropout)
                                     for m in modalities})
        fused_dim = stream_dim * len(modalities)
        self.residual = nn.Sequential(nn.Linear(fused_dim, fused_dim), nn.ReLU(), nn.Dropout(output_dropout),
                                      nn.Linear(fused_dim, fused_dim))
        self.head = nn.Linear(fused_dim, task_spec.num_outputs)

    @classmethod
    def tiny_config(cls) -> dict:
        """Small hyperparameters for tests."""
        return {"dim": 16, "num_heads": 2, "cross_layers": 1, "self_layers": 1, "dropout": 0.0}

    def embed(self, batch: ModalityBatch, modality: str) -> torch.Tensor:
        """Project one modality and add scaled sinusoidal positions: [B, T, D_m] -> [B, T, dim]."""
        valid = batch.valid(modality)
        h = self.projections[modality](batch.features[modality], valid) * math.sqrt(self.dim)
        h = h + sinusoidal_positions(h.shape[1], self.dim, h.device, h.dtype).unsqueeze(0)
        return zero_masked(h, valid)

    def forward(self, batch: ModalityBatch, targets: torch.Tensor | None = None) -> FusionOutput:
        """Cross-modal streams per target -> self-attention memory -> readout -> [B, C] (or [B, T, C])."""
        per_position = self.task_spec.level == "conversation"
        modalities = self.task_spec.modalities
        embedded = {m: self.embed(batch, m) for m in modalities}
        readouts = []
        for target in modalities:
            mask = batch.valid(target)
            streams = [self.cross[f"{target}_from_{source}"](embedded[target], embedded[source], mask, batch.valid(source))
                       for source in modalities if source != target]
            memory = self.memory[target](torch.cat(streams, dim=-1), mask)
            pooled, _ = modality_readout(batch, target, memory, per_position)
            readouts.append(pooled)
        fused = torch.cat(readouts, dim=-1)
        fused = fused + self.residual(fused)
        return self.package(self.head(fused), fused)
