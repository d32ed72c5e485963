"""What a labeller is: the `Labeler` protocol the labelling loop calls, and the `SpanPrediction` it returns.

    class MyLabeler:                       # no base class needed: the protocol is structural
        class_names = ("negative", "positive")
        modalities = ("t",)
        face_crop_size = 96

        def clip_state(self, evidence: ClipEvidence) -> None:       # once per clip
            return None

        def predict(self, evidence, state, start, end) -> SpanPrediction:   # per span
            ...

`DefaultLabeler` (default_model.py) and `CheckpointLabeler` (checkpoint_labeler.py) implement it.
Optional members the labelling loop uses when present: `predict_spans(evidence, state, spans)` -> one
SpanPrediction per (start, end) (so a labeller can batch its models over a clip's windows), and
`evidence_needs` (an `EvidenceNeeds`, needs.py: the face crops, audio frames and transcript the evidence
collector gathers for it; on the class when it is known before loading, so the evidence workers start
early). Without it, `face_crop_size` and an optional `evidence_audio_features` ({"name", "config"} of an
audio extractor the collector runs for it) say the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from affectflow.pipeline.core.names import MODALITY_NAMES
from affectflow.pipeline.label.evidence import ClipEvidence

StateT = TypeVar("StateT")


@dataclass(frozen=True)
class SpanPrediction:
    """A labeller's answer for one span of a clip.

    probs: float [C] class probabilities in the labeller's `class_names` order, or None when no modality
    could say anything about the span; per_modality: modality key ("a", "t", "v") -> float [C]
    probabilities of that modality alone (empty when the labeller does not expose them); weights: modality key
    -> the weight that modality's expert had in `probs` (0 = left out; empty when the labeller does not say).
    """

    probs: np.ndarray | None
    per_modality: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.per_modality) - set(MODALITY_NAMES))
        if unknown:
            raise ValueError(f"SpanPrediction: unknown modality keys {unknown} (expected some of {sorted(MODALITY_NAMES)})")

    @classmethod
    def nothing(cls) -> "SpanPrediction":
        """The prediction of a span without any usable modality."""
        return cls(None, {})


@runtime_checkable
class Labeler(Protocol[StateT]):
    """Class probabilities for spans of a clip's evidence.

    class_names: the classes, in the order of `SpanPrediction.probs`; modalities: the modality keys it
    can use ("a", "t", "v"; they name the per-modality output columns); face_crop_size: side in pixels of
    the face crops it wants in `ClipEvidence.faces`.
    """

    class_names: tuple[str, ...]
    modalities: tuple[str, ...]
    face_crop_size: int

    def clip_state(self, evidence: ClipEvidence) -> StateT:
        """Once per clip, before its spans: precompute what every span shares (the per-clip state)."""
        ...

    def predict(self, evidence: ClipEvidence, state: StateT, start: float, end: float | None) -> SpanPrediction:
        """Probabilities for the span [start, end) seconds of the clip (`end` None = to the end)."""
        ...


LabelerFactory = Callable[[torch.device], Labeler]
"""Builds a labeller on a torch.device (cpu, cuda:0); Ray actors each build their own with it (picklable)."""
