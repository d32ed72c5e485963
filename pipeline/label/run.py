"""Batch labelling of a folder of recordings: one output row per file, always; resumable.

For each media file: probe it, decode its audio (missing when there is no stream or the track is silent),
find its transcript (sidecar, `--transcripts` CSV, else offline ASR when there is speech), detect faces
on sampled frames (vision missing when no frame has a face), then ask a labeller for class probabilities
of the whole clip and, with `segment_seconds`, of each window. A file that cannot be read gets a row with
its error and the batch goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from affectflow.pipeline.core.errors import AffectflowError, MediaError
from affectflow.pipeline.media.faces import FaceDetector, FaceTrack, track_faces
from affectflow.pipeline.label.output import ResumableRowWriter
from affectflow.pipeline.media.decode import AudioClip, probe, read_audio
from affectflow.pipeline.core.records import Recording
from affectflow.pipeline.media.transcripts import (
    SpeechRecognizer, TimedText, TranscriptError, find_sidecar, read_transcript_file, speech_seconds,
)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a")
MIN_SPEECH_SECONDS = 0.2


def find_media(folder: str | Path) -> list[Path]:
    """Video and audio files under `folder` (recursive, case-insensitive suffixes), sorted."""
    folder = Path(folder)
    suffixes = VIDEO_SUFFIXES + AUDIO_SUFFIXES
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


@dataclass
class ClipEvidence:
    """What the job found in one file: streams, audio, transcript, faces; `cache` is for the labeller."""

    recording: Recording
    audio: AudioClip | None
    has_audio: bool
    transcript: TimedText | None
    transcript_source: str
    faces: FaceTrack | None
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def has_text(self) -> bool:
        return self.transcript is not None and not self.transcript.is_empty

    @property
    def has_vision(self) -> bool:
        return self.faces is not None and not self.faces.is_missing

    def is_whole(self, start: float, end: float | None) -> bool:
        return start <= 0 and (end is None or end >= self.recording.duration)

    def text_between(self, start: float, end: float | None) -> str | None:
        """Transcript of the span; for a window, only a timed transcript can say (else None)."""
        if not self.has_text:
            return None
        if self.is_whole(start, end):
            return self.transcript.text
        return self.transcript.text_between(start, end if end is not None else float("inf")) or None

    def face_indices_between(self, start: float, end: float | None) -> np.ndarray:
        """Indices into `faces.crops` of the face frames whose time lies in [start, end)."""
        if not self.has_vision:
            return np.zeros(0, np.int64)
        valid_times = self.faces.valid_times
        keep = valid_times >= start - 1e-6
        if end is not None:
            keep &= valid_times < end
        return np.flatnonzero(keep)

    def vision_probs_between(self, start: float, end: float | None) -> np.ndarray | None:
        """Per-frame probabilities the labeller cached under "vision_frame_probs", restricted to the span."""
        probs = self.cache.get("vision_frame_probs")
        if probs is None:
            return None
        return probs[self.face_indices_between(start, end)]


@dataclass
class LabelingOptions:
    """Knobs of a labelling run."""

    segment_seconds: float | None = None
    face_fps: float = 2.0
    transcripts: dict[str, str] | None = None
    use_asr: bool = True
    device: str = "cpu"


class EvidenceCollector:
    """Decodes one file into ClipEvidence (audio, transcript, faces) with shared detector and ASR."""

    def __init__(self, options: LabelingOptions, face_crop_size: int = 96) -> None:
        self.options = options
        self.detector = FaceDetector(device=options.device, crop_size=face_crop_size)
        self._asr: SpeechRecognizer | None = None
        self.asr_problem: str | None = None
        if options.use_asr:
            try:
                self._asr = SpeechRecognizer(device="cuda" if options.device.startswith("cuda") else "cpu")
            except TranscriptError as error:
                self.asr_problem = str(error)

    def _transcript(self, path: Path, clip: str, audio: AudioClip | None, has_speech: bool) -> tuple[TimedText | None, str]:
        sidecar = find_sidecar(path)
        if sidecar is not None:
            return read_transcript_file(sidecar), "sidecar"
        table = self.options.transcripts or {}
        for key in (clip, path.name, path.stem):
            if key in table:
                return TimedText(" ".join(str(table[key]).split()), "csv"), "csv"
        if self._asr is not None and audio is not None and has_speech:
            timed = self._asr.transcribe(audio.samples)
            return (timed, "asr") if not timed.is_empty else (None, "none")
        return None, "none"

    def collect(self, path: Path, clip: str) -> ClipEvidence:
        """Probe and decode `path`; MediaError / TranscriptError propagate to the caller's row."""
        recording = probe(path)
        audio = read_audio(path) if recording.has_audio else None
        usable_audio = audio is not None and not audio.is_missing and not audio.silent
        has_speech = usable_audio and speech_seconds(audio.samples, audio.sample_rate) >= MIN_SPEECH_SECONDS
        transcript, source = self._transcript(path, clip, audio if usable_audio else None, has_speech)
        faces = track_faces(path, self.detector, fps=self.options.face_fps) if recording.has_video else None
        return ClipEvidence(recording, audio, usable_audio, transcript, source, faces)


def output_columns(class_names: tuple[str, ...], modalities: tuple[str, ...], per_modality: bool) -> list[str]:
    """Row columns: clip, label, prob_<class>..., flags, then window bounds (and per-modality probs)."""
    columns = ["clip", "label"] + [f"prob_{c}" for c in class_names]
    columns += ["has_audio", "has_text", "has_vision", "face_frames_ratio", "transcript_source", "duration_s",
                "error", "window_start", "window_end"]
    if per_modality:
        names = {"a": "audio", "t": "text", "v": "vision"}
        columns += [f"prob_{names[m]}_{c}" for m in modalities for c in class_names]
    return columns


def _prediction_row(clip: str, evidence: ClipEvidence, prediction: dict, class_names, start, end) -> dict:
    names = {"a": "audio", "t": "text", "v": "vision"}
    row: dict[str, Any] = {"clip": clip, "window_start": start, "window_end": end}
    probs = prediction["probs"]
    if probs is None:
        row["label"] = None
        row["error"] = "no usable modality in this span (no face, no speech/transcript)" if start is not None else \
            "no usable modality: " + ", ".join(_absences(evidence))
    else:
        row["label"] = class_names[int(np.argmax(probs))]
        row["error"] = ""
        row.update({f"prob_{c}": round(float(p), 6) for c, p in zip(class_names, probs)})
    for modality, values in prediction["per_modality"].items():
        row.update({f"prob_{names[modality]}_{c}": round(float(p), 6) for c, p in zip(class_names, values)})
    return row


def _absences(evidence: ClipEvidence) -> list[str]:
    reasons = []
    if not evidence.has_vision:
        reasons.append("no face in any sampled frame" if evidence.recording.has_video else "no video stream")
    if not evidence.has_text:
        reasons.append("no transcript and no speech")
    if not evidence.has_audio:
        reasons.append("no audio stream" if not evidence.recording.has_audio else "silent audio")
    return reasons


def label_clip(path: Path, clip: str, collector: EvidenceCollector, labeler, options: LabelingOptions) -> list[dict]:
    """All rows of one file: window rows (when asked), then the file-level row; errors become a row."""
    try:
        evidence = collector.collect(path, clip)
        if hasattr(labeler, "prepare"):
            labeler.prepare(evidence)
        flags = {"has_audio": evidence.has_audio, "has_text": evidence.has_text, "has_vision": evidence.has_vision,
                 "face_frames_ratio": round(evidence.faces.face_ratio, 4) if evidence.faces is not None else 0.0,
                 "transcript_source": evidence.transcript_source,
                 "duration_s": round(evidence.recording.duration, 3)}
        rows = []
        if options.segment_seconds:
            step = float(options.segment_seconds)
            for start in np.arange(0.0, max(evidence.recording.duration, 1e-9), step):
                end = min(float(start) + step, evidence.recording.duration)
                row = _prediction_row(clip, evidence, labeler.predict(evidence, float(start), end),
                                      labeler.class_names, round(float(start), 3), round(end, 3))
                rows.append({**flags, **row})
        whole = _prediction_row(clip, evidence, labeler.predict(evidence, 0.0, None), labeler.class_names, None, None)
        rows.append({**flags, **whole})
        return rows
    except (MediaError, TranscriptError, AffectflowError, ValueError) as error:
        return [{"clip": clip, "label": None, "error": f"{type(error).__name__}: {error}", "transcript_source": "none",
                 "has_audio": False, "has_text": False, "has_vision": False}]


@dataclass
class LabelingSummary:
    labeled: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)

    def record(self, rows: list[dict]) -> None:
        """Count one clip as labelled or failed from its file-level row (the last of its rows)."""
        final = rows[-1]
        self.rows.append(final)
        if final.get("error") and final.get("label") is None:
            self.failed += 1
        else:
            self.labeled += 1


def run_labeling(videos: str | Path, out: str | Path, labeler, options: LabelingOptions, file_format: str = "csv",
                 progress: bool = True) -> LabelingSummary:
    """Label every media file under `videos` into `out`, skipping files finished by an earlier run."""
    from tqdm import tqdm

    videos = Path(videos)
    files = find_media(videos)
    writer = ResumableRowWriter(out, output_columns(labeler.class_names, labeler.modalities, file_format == "jsonl"),
                                file_format)
    todo = [p for p in files if p.relative_to(videos).as_posix() not in writer.done_clips]
    summary = LabelingSummary(skipped=len(files) - len(todo))
    if not todo:
        return summary
    collector = EvidenceCollector(options, face_crop_size=getattr(labeler, "face_crop_size", 96))
    started = time.perf_counter()
    for path in tqdm(todo, desc="labelling", unit="file", disable=not progress):
        clip = path.relative_to(videos).as_posix()
        rows = label_clip(path, clip, collector, labeler, options)
        writer.append_clip(clip, rows)
        summary.record(rows)
    summary.seconds = time.perf_counter() - started
    return summary
