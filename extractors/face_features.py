"""Shared base of the vision extractors that embed face crops (FER, MA-Net, HF image encoders).

A `FaceTrack` holds crops for its valid frames only; a face extractor embeds all crops of a batch of
tracks in one pass (`embed_faces`) and places the rows back on each track's timeline: [T, D] with zeros
and mask False for faceless frames.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from affectflow.pipeline.core.records import FeatureSequence

from affectflow.extractors.base import Extractor


def check_face_track(name: str, item: Any) -> None:
    """Raise ValueError unless `item` is a FaceTrack-like object: uint8 crops [N, S, S, 3], one per valid frame."""
    for field in ("crops", "mask", "times"):
        if not hasattr(item, field):
            raise ValueError(f"{name}: vision input must be a FaceTrack (crops, mask, times), "
                             f"got {type(item).__name__}")
    crops, mask = np.asarray(item.crops), np.asarray(item.mask)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"{name}: face crops must be uint8 [N, S, S, 3] RGB, got {crops.dtype} {crops.shape}")
    if mask.dtype != np.bool_ or mask.ndim != 1 or np.asarray(item.times).shape != mask.shape:
        raise ValueError(f"{name}: FaceTrack mask must be bool [T] with times [T], got mask {mask.dtype} "
                         f"{mask.shape}, times {np.asarray(item.times).shape}")
    if int(mask.sum()) != crops.shape[0]:
        raise ValueError(f"{name}: FaceTrack has {crops.shape[0]} crops but {int(mask.sum())} valid frames")


def track_sequence(track: Any, frame_values: np.ndarray, dim: int, extractor_id: str) -> FeatureSequence:
    """Place per-face rows [N_valid, D] on the track's timeline: [T, D], zeros + mask False where no face.

    times are the track's own times (seconds in the file; the extraction job makes them segment-relative);
    a track without any face gives a sequence with no valid frame and missing_reason set.
    """
    mask = np.asarray(track.mask, dtype=bool)
    times = np.asarray(track.times, dtype=np.float32)
    if mask.shape[0] == 0:
        return FeatureSequence.missing(dim, extractor_id, "no video frames in the segment")
    values = np.zeros((mask.shape[0], dim), dtype=np.float32)
    values[mask] = frame_values
    reason = None if mask.any() else "no face detected in any frame"
    return FeatureSequence(values=values, times=times, mask=mask.copy(), extractor_id=extractor_id,
                           missing_reason=reason)


class FaceTrackExtractor(Extractor):
    """A vision extractor over FaceTracks: subclasses implement `embed_faces(crops) -> [N, D]`."""

    modality = "v"

    @property
    def frame_rate(self) -> None:
        """One output frame per sampled video frame (the face track's rate)."""
        return None

    def check_input(self, item: Any) -> None:
        """None (no video) passes; anything else must be a well-formed FaceTrack."""
        if item is not None:
            check_face_track(self.name, item)

    def embed_faces(self, crops: np.ndarray) -> np.ndarray:
        """Face crops uint8 [N, S, S, 3] RGB -> features float32 [N, output_dim]."""
        raise NotImplementedError

    def extract_batch(self, items: list[Any]) -> list[FeatureSequence]:
        """One [T, D] sequence per FaceTrack (None -> missing); the faces of all items go through one pass."""
        for item in items:
            self.check_input(item)
        present = [item.crops for item in items if item is not None and len(item.crops)]
        rows = (self.embed_faces(np.concatenate(present)) if present
                else np.zeros((0, self.output_dim), np.float32))
        results, offset = [], 0
        for item in items:
            if item is None:
                results.append(FeatureSequence.missing(self.output_dim, self.extractor_id, "no video"))
                continue
            count = len(item.crops)
            results.append(track_sequence(item, rows[offset: offset + count], self.output_dim, self.extractor_id))
            offset += count
        return results
