"""Label with a trained bundle: rebuild its extractors from their recorded specs, then its fusion model.

For each span of a clip the same evidence the default labeller uses (16 kHz audio, the timed transcript,
face crops) goes through the bundle's extractors; features are normalised with the bundle's train
statistics and fed to the fusion model as a one-sample `ModalityBatch` (a conversation-level model sees
the clip as a dialogue of one utterance). Modalities the bundle was trained without stay absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


from affectflow.pipeline.core.names import IGNORE_INDEX
from affectflow.pipeline.train.data import collate
from affectflow.pipeline.media.faces import FaceTrack


def _span_faces(evidence, start: float, end: float | None) -> FaceTrack | None:
    """The clip's FaceTrack restricted to frames in [start, end) (crops of valid frames only)."""
    faces = evidence.faces
    if faces is None:
        return None
    keep = faces.times >= start - 1e-6
    if end is not None:
        keep &= faces.times < end
    crop_rows = np.flatnonzero(keep[faces.mask])
    return FaceTrack(faces.crops[crop_rows], faces.mask[keep], faces.times[keep], faces.boxes[keep],
                     faces.probabilities[keep], faces.landmarks[keep])


def _span_audio(evidence, start: float, end: float | None) -> np.ndarray | None:
    if not evidence.has_audio:
        return None
    rate = evidence.audio.sample_rate
    first = int(round(start * rate))
    last = None if end is None else int(round(end * rate))
    samples = evidence.audio.samples[first:last]
    return samples if samples.size else None


class CheckpointLabeler:
    """A bundle from `affectflow train`, usable as a labeller (`class_names`, `prepare`, `predict`)."""

    face_crop_size = 224

    def __init__(self, bundle: str | Path, device: torch.device | str = "cpu") -> None:
        from affectflow.extractors.base import extractor_from_spec

        from affectflow.pipeline.train.checkpoint import load_bundle

        self.model, self.info = load_bundle(bundle, device=device)
        if self.info.task_spec.kind != "classification":
            raise ValueError(f"{bundle}: labelling needs a classification bundle, this one is "
                             f"{self.info.task_spec.kind}")
        self.device = torch.device(device)
        self.model.eval()
        self.class_names = tuple(self.info.class_names)
        self.modalities = tuple(self.info.task_spec.modalities)
        self.extractors = {}
        for modality in self.modalities:
            spec = self.info.extractor_specs.get(modality)
            if spec is None:
                continue
            self.extractors[modality] = extractor_from_spec(spec, device=self.device)
        vision = self.extractors.get("v")
        if vision is not None and vision.contract.image_size:
            # Crop faces at the size the features were extracted with (affectflow extract does the same).
            self.face_crop_size = int(vision.contract.image_size[0])

    def prepare(self, evidence) -> None:
        """Nothing to precompute: features are extracted per span."""

    def _features(self, modality: str, evidence, start: float, end: float | None):
        extractor = self.extractors.get(modality)
        if extractor is None:
            return None
        if modality == "a":
            item = _span_audio(evidence, start, end)
        elif modality == "t":
            item = evidence.text_between(start, end)
        else:
            item = _span_faces(evidence, start, end) if evidence.has_vision else None
        if item is None or (modality == "v" and item.is_missing):
            return None
        sequence = extractor.extract(item)
        return None if sequence.is_missing else sequence

    def _item(self, evidence, start: float, end: float | None) -> dict:
        task = self.info.task_spec
        features, masks, present = {}, {}, {}
        for modality in task.modalities:
            dim = task.input_dims[modality]
            sequence = self._features(modality, evidence, start, end)
            if sequence is None:
                values, mask = np.zeros((1, dim), np.float32), np.zeros(1, bool)
            elif self.info.frame_level and task.level == "utterance":
                values, mask = sequence.values.astype(np.float32), sequence.mask.copy()
            else:
                values, mask = sequence.utterance()[None, :], np.ones(1, bool)
            if self.info.normalizer is not None and mask.any():
                values = np.where(mask[:, None], self.info.normalizer.apply(modality, values), 0.0).astype(np.float32)
            features[modality], masks[modality], present[modality] = values, mask, bool(mask.any())
        target = np.full(1, IGNORE_INDEX) if task.level == "conversation" else IGNORE_INDEX
        return {"id": "clip", "ids": ["clip"], "features": features, "masks": masks, "present": present,
                "target": target}

    @torch.no_grad()
    def predict(self, evidence, start: float, end: float | None) -> dict:
        """Class probabilities [C] for the span, or None when no modality the bundle uses is present."""
        item = self._item(evidence, start, end)
        if not any(item["present"].values()):
            return {"probs": None, "per_modality": {}}
        batch = collate([item], self.info.task_spec).to(self.device)
        logits = self.model(batch.inputs).logits.reshape(-1, len(self.class_names))[0]
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64)
        return {"probs": probs, "per_modality": {}}


