"""Typed records that flow between affectflow's stages.

`Recording` describes a media file, `Segment` a labelled time span inside one, and
`FeatureSequence` the frame-level features an extractor produced for a segment.
Labels are typed fields, never a free-form dict (see ../shared/STYLE.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from affectflow.pipeline.core.names import MODALITIES, MODALITY_NAMES  # noqa: F401  (kept importable from here)
from affectflow.pipeline.core.spans import check_span


@dataclass(frozen=True)
class Recording:
    """A media file as probed: what streams it has and their basic geometry."""

    path: Path
    duration: float
    has_video: bool
    has_audio: bool
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    audio_sample_rate: int | None = None


@dataclass(frozen=True)
class Segment:
    """A labelled time span inside one media file (never a pre-cut clip).

    `end=None` means "to the end of the file". Times are in seconds: a finite start >= 0 and a finite
    end after it (`affectflow.pipeline.core.spans`); anything else raises SpanError naming the segment.
    Corpus-specific typed extras (dialogue position, face side, V/A/D) are optional fields.
    """

    id: str
    media_path: str
    start: float = 0.0
    end: float | None = None
    speaker: str | None = None
    text: str | None = None
    emotion: str | None = None
    sentiment: float | None = None
    split: str | None = None
    corpus: str | None = None
    dialogue_id: str | None = None
    utterance_index: int | None = None
    face_side: str | None = None
    valence: float | None = None
    arousal: float | None = None
    dominance: float | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("Segment id must be a non-empty string")
        check_span(self.id, self.start, self.end)  # SpanError (a ValueError) naming the segment
        if self.face_side not in (None, "left", "right"):
            raise ValueError(f"segment {self.id}: face_side must be 'left', 'right' or None, got {self.face_side!r}")

    @property
    def duration(self) -> float | None:
        """Length in seconds, or None when the segment runs to the end of the file."""
        return None if self.end is None else self.end - self.start

    def with_(self, **changes) -> "Segment":
        """A copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class FeatureSequence:
    """Frame-level features of one segment from one extractor.

    values: [T, D] float32; times: [T] seconds from the segment start; mask: [T] bool (True = valid).
    A modality that is entirely missing has T >= 0 and no valid frame (`is_missing`).
    """

    values: np.ndarray
    times: np.ndarray
    mask: np.ndarray
    extractor_id: str
    missing_reason: str | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise ValueError(f"FeatureSequence values must be [T, D], got shape {self.values.shape}")
        t = self.values.shape[0]
        if self.times.shape != (t,) or self.mask.shape != (t,):
            raise ValueError(
                f"FeatureSequence times {self.times.shape} and mask {self.mask.shape} must both be ({t},)"
            )
        if self.mask.dtype != np.bool_:
            raise ValueError("FeatureSequence mask must be boolean")

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def num_frames(self) -> int:
        return int(self.values.shape[0])

    @property
    def is_missing(self) -> bool:
        """True when no frame is valid (the modality is absent for this segment)."""
        return not bool(self.mask.any())

    def utterance(self) -> np.ndarray:
        """Masked mean over valid frames: [D]; zeros when the modality is missing."""
        if self.is_missing:
            return np.zeros(self.dim, dtype=np.float32)
        return self.values[self.mask].mean(axis=0).astype(np.float32)

    @classmethod
    def missing(cls, dim: int, extractor_id: str, reason: str) -> "FeatureSequence":
        """An empty sequence that marks the modality as missing, with the reason."""
        return cls(
            values=np.zeros((0, dim), dtype=np.float32),
            times=np.zeros((0,), dtype=np.float32),
            mask=np.zeros((0,), dtype=bool),
            extractor_id=extractor_id,
            missing_reason=reason,
        )
