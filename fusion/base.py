"""`FusionModel`: the base class every registered fusion model derives from.

Protocol (what the training harness relies on):
- `__init__(task_spec, **hyperparameters)`; `self.hyperparameters` records them for checkpoints.
- `forward(batch: ModalityBatch, targets: Tensor | None = None) -> FusionOutput`. Auxiliary losses that need
  labels (per-granularity heads, supervised contrastive, Rank-N-Contrast...) are computed only when `targets`
  is given: class indices [B] (or [B, T] at conversation level, IGNORE_INDEX = -100 = ignore) for classification, float
  values [B] (or [B, T]) for regression. Aux losses are returned unweighted in `FusionOutput.aux_losses`;
  `loss_weights[name]` holds the paper's weight (default 1.0). The main task loss (CE / MSE or L1 on
  `FusionOutput.prediction`) is computed by the harness, not by the model.
- Multi-stage training (MoMKE, MCULoRA, SDUMC...): `stages` names them in order; the harness calls
  `set_stage(name)` before each, then builds its optimizer from `trainable_parameters()`. `stage` is the
  current one (a single-stage model has the one stage "main").
- `recommended_optimizer` (the paper's optimiser, may be empty) and `tiny_config()` (small hyperparameters
  for smoke runs) have defaults here; the harness reads them directly, without `hasattr`.
- Simulated vs real missingness: a training schedule that hides a recorded modality (a simulated drop)
  passes the model the real features plus `dropped=` [B, M] when the model sets `accepts_dropped` (its
  forward then takes `dropped`, keeps those modalities out of the prediction and may use their real
  features for auxiliary losses, e.g. CM-ARR's L_rec); other models get the inputs with the dropped
  modalities' presence set False, exactly like real absence.
- The paper's training recipe (schedule, epochs per stage, batch size, protocols) is plain data in
  `affectflow.pipeline.train.recipes`, keyed by the registered name; the model only carries what the
  paper fixes about itself (`recommended_optimizer`, whose batch_size / epochs that recipe reads).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from affectflow.fusion.contract import FusionOutput, ModalityBatch, TaskSpec
from affectflow.pipeline.core.names import IGNORE_INDEX


class FusionModel(nn.Module):
    """Base class: task spec, hyperparameters, heads, stages, loss weights."""

    fusion_name: str = ""
    stages: tuple[str, ...] = ("main",)
    loss_weights: dict[str, float] = {}
    regression_loss: str = "l1"
    """Regression task loss: "l1" (MAE, the MOSEI/MOSI convention) or "mse" (papers that say MSE)."""
    recommended_optimizer: dict[str, Any] = {}
    """The paper's optimiser settings ({"name", "lr", "weight_decay", "momentum", "batch_size", "epochs"}, any
    subset); empty: the harness default (Adam, lr 1e-3). Explicit training options override it; batch_size
    and epochs are used by the model's paper recipe (`--recipe paper`), not by the quick default recipe."""
    accepts_dropped: bool = False
    """True when `forward(batch, targets, dropped=[B, M])` is supported: simulated drops are then passed
    with the real features kept (see the module docstring)."""

    def __init__(self, task_spec: TaskSpec, **hyperparameters: Any) -> None:
        super().__init__()
        self.task_spec = task_spec
        self.hyperparameters = dict(hyperparameters)
        self.stage = self.stages[0]

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        """Small hyperparameters for tests and smoke runs (default: none, i.e. the model's own defaults)."""
        return {}

    def set_stage(self, stage: str) -> None:
        """Switch training stage (freezing/unfreezing what the paper prescribes)."""
        if stage not in self.stages:
            raise ValueError(f"{self.fusion_name}: unknown stage {stage!r}; stages are {self.stages}")
        self.stage = stage

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the current stage trains (default: all with requires_grad)."""
        return [p for p in self.parameters() if p.requires_grad]

    def loss_weight(self, name: str) -> float:
        return float(self.loss_weights.get(name, 1.0))

    # --- helpers shared by models ---------------------------------------------------------------
    def make_head(self, in_dim: int, hidden: int | None = None, dropout: float = 0.0) -> nn.Module:
        """A prediction head in_dim -> task outputs (optionally through one hidden layer)."""
        out_dim = self.task_spec.num_outputs
        if hidden is None:
            return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def package(self, head_output: torch.Tensor, embedding: torch.Tensor,
                aux_losses: dict[str, torch.Tensor] | None = None,
                extras: dict[str, torch.Tensor] | None = None) -> FusionOutput:
        """Wrap a head output [..., C] into a FusionOutput (regression squeezes the last axis)."""
        if self.task_spec.kind == "classification":
            return FusionOutput(embedding=embedding, logits=head_output, aux_losses=aux_losses or {}, extras=extras or {})
        return FusionOutput(embedding=embedding, value=head_output.squeeze(-1), aux_losses=aux_losses or {}, extras=extras or {})

    def task_loss(self, prediction: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The task's supervised loss on a prediction: CE (ignore_index=IGNORE_INDEX), or for regression the
        model's `regression_loss` ("l1" by default, "mse" where the paper says so); NaN targets are ignored.

        Models use this for auxiliary heads (e.g. DQF's per-granularity heads); the harness uses the
        same function for the main prediction so both agree.
        """
        if self.task_spec.kind == "classification":
            return nn.functional.cross_entropy(prediction.reshape(-1, prediction.shape[-1]), targets.reshape(-1).long(),
                                               ignore_index=IGNORE_INDEX)
        valid = ~torch.isnan(targets)
        if not bool(valid.any()):
            return prediction.sum() * 0.0
        loss = nn.functional.mse_loss if self.regression_loss == "mse" else nn.functional.l1_loss
        return loss(prediction[valid], targets[valid].to(prediction.dtype))

    def forward(self, batch: ModalityBatch, targets: torch.Tensor | None = None) -> FusionOutput:  # pragma: no cover
        raise NotImplementedError
