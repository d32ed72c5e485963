"""The one contract every fusion model follows: `TaskSpec`, `ModalityBatch` in, `FusionOutput` out.

Modalities are keyed "a" (audio), "t" (text), "v" (vision). Missing modalities are masks:
`presence[:, m]` is False for an absent modality and `masks[m][b, t]` is False for an invalid frame.
A model must give the same output whatever values sit behind a False mask.

Conversation-level tasks (MoMKE, MCULoRA, GCNet-style) use the utterance axis of a dialogue as T and
carry one label per position; that is `TaskSpec.level == "conversation"`, not a model special case.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from affectflow.pipeline.core.names import MODALITIES


@dataclass(frozen=True)
class TaskSpec:
    """What is predicted and from which inputs.

    kind: "classification" (class_names required) or "regression" (one value, e.g. sentiment in [-3, 3]).
    level: "utterance" (one label per sample) or "conversation" (one label per position of T).
    input_dims: feature dimension per modality, e.g. {"a": 768, "t": 384, "v": 1024}.
    """

    kind: Literal["classification", "regression"]
    input_dims: dict[str, int]
    class_names: tuple[str, ...] = ()
    level: Literal["utterance", "conversation"] = "utterance"
    modalities: tuple[str, ...] = MODALITIES

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "regression"):
            raise ValueError(f"TaskSpec.kind must be 'classification' or 'regression', got {self.kind!r}")
        if self.level not in ("utterance", "conversation"):
            raise ValueError(f"TaskSpec.level must be 'utterance' or 'conversation', got {self.level!r}")
        if self.kind == "classification" and len(self.class_names) < 2:
            raise ValueError("a classification TaskSpec needs at least two class_names")
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; use a subset of {MODALITIES}")
        missing_dims = [m for m in self.modalities if m not in self.input_dims]
        if missing_dims:
            raise ValueError(f"TaskSpec.input_dims lacks modalities {missing_dims}")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "modalities", tuple(self.modalities))

    @property
    def num_outputs(self) -> int:
        """Logit count for classification, 1 for regression."""
        return len(self.class_names) if self.kind == "classification" else 1

    def to_dict(self) -> dict:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["modalities"] = list(self.modalities)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TaskSpec":
        return cls(
            kind=data["kind"],
            input_dims={k: int(v) for k, v in data["input_dims"].items()},
            class_names=tuple(data.get("class_names", ())),
            level=data.get("level", "utterance"),
            modalities=tuple(data.get("modalities", MODALITIES)),
        )


@dataclass
class ModalityBatch:
    """A batch of (possibly incomplete) multimodal inputs.

    features[m]: [B, T_m, D_m] float; masks[m]: [B, T_m] bool (True = valid frame);
    presence: [B, M] bool in the order of `modalities` (True = modality available for the sample).
    For conversation-level tasks T is the utterance axis and is shared by all modalities.
    """

    features: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    presence: torch.Tensor
    modalities: tuple[str, ...] = MODALITIES

    def __post_init__(self) -> None:
        batch = self.presence.shape[0]
        if self.presence.shape != (batch, len(self.modalities)):
            raise ValueError(f"presence must be [B, {len(self.modalities)}], got {tuple(self.presence.shape)}")
        for m in self.modalities:
            x, mask = self.features[m], self.masks[m]
            if x.ndim != 3 or mask.shape != x.shape[:2] or x.shape[0] != batch:
                raise ValueError(f"modality {m}: features {tuple(x.shape)} / mask {tuple(mask.shape)} do not match [B, T, D] / [B, T]")

    @property
    def batch_size(self) -> int:
        return int(self.presence.shape[0])

    @property
    def device(self) -> torch.device:
        return self.presence.device

    def present(self, modality: str) -> torch.Tensor:
        """[B] bool: whether `modality` is available per sample."""
        return self.presence[:, self.modalities.index(modality)]

    def valid(self, modality: str) -> torch.Tensor:
        """[B, T] bool: frame mask combined with sample presence."""
        return self.masks[modality] & self.present(modality)[:, None]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "ModalityBatch":
        return ModalityBatch(
            features={m: x.to(device, non_blocking=non_blocking) for m, x in self.features.items()},
            masks={m: x.to(device, non_blocking=non_blocking) for m, x in self.masks.items()},
            presence=self.presence.to(device, non_blocking=non_blocking),
            modalities=self.modalities,
        )

    def with_presence(self, presence: torch.Tensor) -> "ModalityBatch":
        """Same features with another [B, M] presence mask (e.g. a missing-modality protocol)."""
        return ModalityBatch(dict(self.features), dict(self.masks), presence.to(self.presence.device).bool(), self.modalities)


@dataclass
class FusionOutput:
    """What every fusion model returns.

    logits: [B, C] (or [B, T, C] for conversation level) for classification, else None.
    value: [B] (or [B, T]) for regression, else None.
    embedding: [B, E] (or [B, T, E]) fused representation.
    aux_losses: named auxiliary losses the model defines (scalars); the trainer weights and sums them.
    extras: anything worth inspecting (e.g. MoMKE router weights), never needed for the loss.
    """

    embedding: torch.Tensor
    logits: torch.Tensor | None = None
    value: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def prediction(self) -> torch.Tensor:
        """The main prediction tensor: logits for classification, value for regression."""
        return self.logits if self.logits is not None else self.value


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of x [B, T, D] over valid positions of mask [B, T]; all-invalid rows give zeros."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    total = (x * weights).sum(dim=dim)
    count = weights.sum(dim=dim).clamp(min=1.0)
    return total / count


def zero_masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x [B, T, D] with invalid positions set to exactly zero (so their values cannot leak)."""
    return torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
