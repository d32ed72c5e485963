"""The offline default labeller: real pretrained components only, 7 MELD/FER classes.

- Vision: the FER2013 mini-Xception port on MTCNN face crops; per-frame expression probabilities are
  averaged over the face frames of the span (FER's angry/happy/sad map to anger/joy/sadness).
- Text: the real all-MiniLM-L6-v2 sentence embedding (mean of the last layer over tokens, L2-normalised by
  the head) -> a temperature-calibrated linear emotion head (`text_head.TextEmotionHead`) trained by
  `scripts/train_default_text_head.py` on the real MELD train annotations and selected on MELD dev (the
  head file and its provenance JSON, with the MELD train `class_prior`, ship with the package).
- Audio: no pretrained speech-emotion weights can be had offline, so audio carries no emotion evidence;
  it decides `has_audio` and feeds the ASR that produces the transcript.
- Fusion of present modalities: weighted log-linear pooling,
  p(c) ∝ Π_m p_m(c)^{w_m}, with w_text and w_vision stored in the head's JSON (see README for values).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from affectflow.extractors.base import create_extractor
from affectflow.extractors.fer import FER_CLASSES, fer_probabilities, load_fer_model
from affectflow.pipeline.label.evidence import ClipEvidence
from affectflow.pipeline.label.labeler import SpanPrediction
from affectflow.pipeline.label.text_head import TextEmotionHead

CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
FER_TO_CLASSES = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "joy",
                  "sad": "sadness", "surprise": "surprise", "neutral": "neutral"}
HEAD_PATH = Path(__file__).with_name("default_text_head.safetensors")
HEAD_INFO_PATH = Path(__file__).with_name("default_text_head.json")
TEXT_EXTRACTOR = {"name": "hf_text", "config": {"model": "minilm", "layers": "last"}}


def log_linear_pool(posteriors: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """p(c) ∝ Π_m p_m(c)^{w_m} over the given modalities: posteriors {m: [C]} -> [C] summing to 1."""
    if not posteriors:
        raise ValueError("log_linear_pool needs at least one modality posterior")
    log_total = sum(weights.get(m, 1.0) * np.log(np.clip(p, 1e-8, 1.0)) for m, p in posteriors.items())
    log_total = log_total - log_total.max()
    pooled = np.exp(log_total)
    return (pooled / pooled.sum()).astype(np.float64)


@dataclass(frozen=True)
class DefaultClipState:
    """Per-clip state of the DefaultLabeler: FER class probabilities [N_valid, C] of the clip's face
    frames (rows follow `evidence.faces.crops`), None when the clip has no face."""

    vision_frame_probs: np.ndarray | None

    def frame_probs_between(self, evidence: ClipEvidence, start: float, end: float | None) -> np.ndarray | None:
        """The rows of the face frames in [start, end) ([K, C]; K may be 0), None without faces."""
        if self.vision_frame_probs is None:
            return None
        return self.vision_frame_probs[evidence.face_indices_between(start, end)]


class DefaultLabeler:
    """FER vision + MiniLM text head, fused by weighted log-linear pooling (see module docstring)."""

    class_names = CLASSES
    modalities = ("t", "v")
    face_crop_size = 96

    def __init__(self, device: torch.device | str = "cpu", head_path: str | Path = HEAD_PATH) -> None:
        self.device = torch.device(device)
        self.head = TextEmotionHead.load(head_path, expected_classes=CLASSES)
        self.weights = {"t": float(self.head.info.get("weight_text", 1.0)),
                        "v": float(self.head.info.get("weight_vision", 1.0))}
        self.text_extractor = create_extractor(TEXT_EXTRACTOR["name"], device=self.device, **TEXT_EXTRACTOR["config"])
        self.fer_model = load_fer_model(device=self.device)
        self._fer_order = [FER_CLASSES.index(next(k for k, v in FER_TO_CLASSES.items() if v == c)) for c in CLASSES]

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """MiniLM sentence embeddings [N, 384] (mean of the last layer over tokens)."""
        sequences = self.text_extractor.extract_batch(list(texts))
        return np.stack([s.utterance() for s in sequences])

    def text_posterior(self, text: str | None) -> np.ndarray | None:
        """[C] class probabilities of a transcript, or None when it is empty."""
        if text is None or not text.strip():
            return None
        return self.head.probabilities(self.text_embeddings([text]))[0]

    def vision_frame_posteriors(self, crops: np.ndarray) -> np.ndarray:
        """Face crops uint8 [N, S, S, 3] -> per-frame class probabilities [N, C] in CLASSES order."""
        if len(crops) == 0:
            return np.zeros((0, len(CLASSES)), np.float32)
        return fer_probabilities(crops, model=self.fer_model)[:, self._fer_order]

    def prepare(self, evidence: ClipEvidence) -> DefaultClipState:
        """Once per clip: FER probabilities of every face frame, shared by the span predictions."""
        if not evidence.has_vision:
            return DefaultClipState(None)
        return DefaultClipState(self.vision_frame_posteriors(evidence.faces.crops))

    def predict(self, evidence: ClipEvidence, state: DefaultClipState, start: float,
                end: float | None) -> SpanPrediction:
        """Class probabilities for the span [start, end) of a clip's evidence, fused over text and vision."""
        per_modality: dict[str, np.ndarray] = {}
        text_probs = self.text_posterior(evidence.text_between(start, end))
        if text_probs is not None:
            per_modality["t"] = text_probs
        frame_probs = state.frame_probs_between(evidence, start, end)
        if frame_probs is not None and len(frame_probs):
            per_modality["v"] = frame_probs.mean(axis=0)
        fused = log_linear_pool(per_modality, self.weights) if per_modality else None
        return SpanPrediction(fused, per_modality)
