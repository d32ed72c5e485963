"""Tiny labellers of the `Labeler` protocol for the labelling tests (no model loading)."""

from __future__ import annotations

import numpy as np

from affectflow.pipeline.label.evidence import ClipEvidence
from affectflow.pipeline.label.labeler import SpanPrediction


class VisionLabeler:
    """A tiny labeller of the Labeler protocol: "excited" wherever a face is seen."""

    class_names = ("calm", "excited")
    modalities = ("v",)
    face_crop_size = 64

    def clip_state(self, evidence: ClipEvidence) -> None:
        return None

    def predict(self, evidence: ClipEvidence, state: None, start: float, end: float | None) -> SpanPrediction:
        faces = evidence.faces_between(start, end)
        if faces is None or faces.is_missing:
            return SpanPrediction.nothing()
        probs = np.array([0.25, 0.75])
        return SpanPrediction(probs, {"v": probs})
