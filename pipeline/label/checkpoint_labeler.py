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

from affectflow.extractors.base import extractor_from_spec
from affectflow.pipeline.core.names import IGNORE_INDEX, IMPORTED_PREFIX
from affectflow.pipeline.label.evidence import ClipEvidence
from affectflow.pipeline.label.labeler import SpanPrediction
from affectflow.pipeline.label.needs import EvidenceNeeds, FaceCrops
from affectflow.pipeline.train.checkpoint import load_bundle
from affectflow.pipeline.train.data import Item, collate


class ImportedFeaturesError(ValueError):
    """A bundle trained on imported (published) features: no extractor exists to compute them from media."""


def refuse_imported_features(bundle: str | Path, specs: dict) -> None:
    """Raise ImportedFeaturesError (one line) when any of the bundle's feature specs is an imported store."""
    imported = {m: spec for m, spec in specs.items() if spec is not None and spec.name.startswith(f"{IMPORTED_PREFIX}:")}
    if imported:
        names = ", ".join(sorted(spec.name for spec in imported.values()))
        raise ImportedFeaturesError(
            f"the bundle {Path(bundle).name!r} was trained on imported features ({names}; `affectflow "
            f"import-features`) and cannot label raw media: no extractor computes those features from a recording "
            f"(use `affectflow evaluate` on imported features, or train on features from `affectflow extract`)")


class CheckpointLabeler:
    """A bundle from `affectflow train` as a `Labeler`: its classes, its modalities, its extractors' face crops."""

    face_crop_size = 224

    def __init__(self, bundle: str | Path, device: torch.device | str = "cpu", *,
                 trust_remote_code: bool = False) -> None:
        """Load `bundle` and rebuild its extractors; ValueError naming the bundle when it is unusable.

        trust_remote_code: let an extractor whose recorded config asks for it run its model folder's code
        (the caller's explicit choice; a bundle alone never enables it).
        """
        self.model, self.info = load_bundle(bundle, device=device)
        if self.info.task_spec.kind != "classification":
            raise ValueError(f"{bundle}: labelling needs a classification bundle, this one is "
                             f"{self.info.task_spec.kind}")
        self.device = torch.device(device)
        self.model.eval()
        self.class_names = tuple(self.info.class_names)
        self.modalities = tuple(self.info.task_spec.modalities)
        refuse_imported_features(bundle, self.info.extractor_specs)
        self.extractors = {}
        for modality in self.modalities:
            spec = self.info.extractor_specs.get(modality)
            if spec is None:
                continue
            self.extractors[modality] = extractor_from_spec(spec, device=self.device, trust_remote_code=trust_remote_code,
                                                            source=f"{bundle}: extractors.{modality}")
        vision = self.extractors.get("v")
        if vision is not None and vision.contract.image_size:
            # Crop faces at the size the features were extracted with (affectflow extract does the same).
            self.face_crop_size = int(vision.contract.image_size[0])

    @property
    def evidence_needs(self) -> EvidenceNeeds:
        """Face crops at its vision extractor's size and the transcript; its extractors run on the spans'
        samples, crops and text themselves (no audio frames from the collector)."""
        return EvidenceNeeds(faces=FaceCrops(size=self.face_crop_size), transcript=True)

    def clip_state(self, evidence: ClipEvidence) -> None:
        """Nothing to precompute: features are extracted per span (the per-clip state is None)."""

    def _features(self, modality: str, evidence: ClipEvidence, start: float, end: float | None):
        extractor = self.extractors.get(modality)
        if extractor is None:
            return None
        if modality == "a":
            item = evidence.audio_between(start, end)
        elif modality == "t":  # low-confidence ASR text is not evidence (evidence.text_reliable)
            item = evidence.text_between(start, end) if evidence.text_reliable is not False else None
        else:
            item = evidence.faces_between(start, end)
        if item is None or (modality == "v" and item.is_missing):
            return None
        sequence = extractor.extract(item)
        return None if sequence.is_missing else sequence

    def _item(self, evidence, start: float, end: float | None) -> Item:
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
        return Item("clip", ["clip"], features, masks, present, target)

    @torch.no_grad()
    def predict(self, evidence: ClipEvidence, state: None, start: float, end: float | None) -> SpanPrediction:
        """Class probabilities [C] for the span (None when no modality the bundle uses is present)."""
        item = self._item(evidence, start, end)
        if not item.any_present:
            return SpanPrediction.nothing()
        batch = collate([item], self.info.task_spec).to(self.device)
        logits = self.model(batch.inputs).logits.reshape(-1, len(self.class_names))[0]
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64)
        return SpanPrediction(probs)


