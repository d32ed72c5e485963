"""The label room's row schema: `LabelRow`, one output row, and how rows are built from a labeller's answers.

A clip gives its span rows (one per window or utterance, when asked) and then its file-level row
(`window_start` None). Workers, the labelling loop, the Ray actors and the writer pass `LabelRow`s;
only `output.py` turns them into CSV/JSONL text (`render_rows`) and reads text back (`label_row`).

    error_rows("bad.mp4", error)                   # the one row of a clip that could not be labelled
    span_row("a.mp4", evidence, prediction, class_names, 0.0, 1.0)   # a window's (or utterance's) row

This module imports only the standard library: `pending.py` -> `output.py` -> here stays torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: evidence.py and labeler.py import torch and numpy
    from affectflow.pipeline.label.evidence import ClipEvidence
    from affectflow.pipeline.label.labeler import SpanPrediction

NO_MODALITY_IN_SPAN = "no usable modality in this span (no face, no speech/transcript)"


@dataclass(frozen=True)
class LabelRow:
    """One output row: a span of a clip (window_start/window_end in seconds) or the whole clip (both None).

    probs: class -> fused probability (empty when `label` is None); modality_probs: modality key ("a", "t",
    "v") -> class -> that modality's probability (JSONL only). The per-clip fields (has_*, face_frames_ratio,
    transcript_source, duration_s, audio_note, text_reliable, text_unreliable_reason) repeat on every row of
    the clip; a clip that could not be read (an error row) leaves the unknown ones None. text_weight: the
    weight the transcript had in this row's fused label (1 = full, 0 = left out because its words carry no
    emotion, `experts.text_gate_weight`; None when no text counted or the labeller does not say; JSONL only).
    """

    clip: str
    label: str | None = None
    error: str = ""
    probs: Mapping[str, float] = field(default_factory=dict)
    modality_probs: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    window_start: float | None = None
    window_end: float | None = None
    transcript: str = ""
    transcript_source: str = "none"
    has_audio: bool = False
    has_text: bool = False
    has_vision: bool = False
    face_frames_ratio: float | None = None
    duration_s: float | None = None
    audio_note: str | None = None
    text_reliable: bool | None = None
    text_unreliable_reason: str | None = None
    text_weight: float | None = None

    @property
    def is_file_level(self) -> bool:
        """True for the clip's file-level row (the last of its rows), False for a window or utterance row."""
        return self.window_start is None

    @property
    def failed(self) -> bool:
        """True when the row has no label because of an error (an unreadable clip, no usable modality)."""
        return self.label is None and bool(self.error)


def error_rows(clip: str, error: BaseException | str) -> list[LabelRow]:
    """The single row of a clip that could not be labelled: label None and the error's type and text."""
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return [LabelRow(clip, error=message)]


def _rounded(values: Any, class_names: tuple[str, ...]) -> dict[str, float]:
    """class -> probability rounded to 6 decimals (what the output holds), from a float [C] sequence."""
    return {name: round(float(value), 6) for name, value in zip(class_names, values)}


def clip_fields(evidence: ClipEvidence) -> dict[str, Any]:
    """The per-clip fields every row of the clip repeats (modality flags, transcript source, duration), as
    plain Python values."""
    return {"has_audio": bool(evidence.has_audio), "has_text": bool(evidence.has_text),
            "has_vision": bool(evidence.has_vision),
            "face_frames_ratio": round(float(evidence.faces.face_ratio), 4) if evidence.faces is not None else 0.0,
            "transcript_source": evidence.transcript_source,
            "duration_s": round(float(evidence.recording.duration), 3),
            "audio_note": evidence.audio_note or "", "text_reliable": evidence.text_reliable,
            "text_unreliable_reason": evidence.text_unreliable_reason}


def span_row(clip: str, evidence: ClipEvidence, prediction: SpanPrediction, class_names: tuple[str, ...],
             start: float | None, end: float | None) -> LabelRow:
    """The row of one span (start None = the file-level row): label (the most probable class; the first on
    a tie), probabilities, the span's transcript, the clip's fields, and why there is no label or the
    sidecar was not used."""
    if prediction.probs is None:
        label, probs = None, {}
        error = NO_MODALITY_IN_SPAN if start is not None else "no usable modality: " + ", ".join(evidence.absences())
    else:
        raw = [float(value) for value in prediction.probs]
        label, error = class_names[max(range(len(raw)), key=raw.__getitem__)], ""  # the first of equal maxima
        probs = _rounded(raw, class_names)
    if evidence.transcript_problem:  # labelled without the sidecar: say so (and a re-run retries the clip)
        error = "; ".join(filter(None, [error, f"transcript not used: {evidence.transcript_problem}"]))
    return LabelRow(clip, label=label, error=error, probs=probs,
                    modality_probs={m: _rounded(values, class_names) for m, values in prediction.per_modality.items()},
                    window_start=start, window_end=end, transcript=evidence.text_between(start or 0.0, end) or "",
                    text_weight=round(float(prediction.weights["t"]), 4) if "t" in prediction.weights else None,
                    **clip_fields(evidence))
