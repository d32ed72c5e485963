"""What a labelling run finds in one media file: its streams, audio, transcript and faces.

`find_media` lists the files of a folder; `EvidenceCollector.collect` decodes one of them into a
`ClipEvidence`: audio is missing when there is no stream or the track is silent, the transcript comes
from a sidecar, the transcripts table, else offline ASR when there is speech, and vision is missing when
no sampled frame has a face. Labellers read spans of it (`text_between`, `faces_between`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectflow.extractors.base import create_extractor
from affectflow.pipeline.core.records import FeatureSequence, Recording
from affectflow.pipeline.core.timing import StageTimer, timed
from affectflow.pipeline.media.decode import AudioClip, probe, read_audio
from affectflow.pipeline.media.faces import MIN_FACE_FRACTION, FaceDetector, FaceTrack, track_faces
from affectflow.pipeline.media.transcripts import (
    SpeechRecognizer, TimedText, TranscriptError, find_sidecar, read_transcript_file, speech_seconds,
)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a")
MIN_SPEECH_SECONDS = 0.2
SPAN_TOLERANCE_SECONDS = 1e-6  # a frame stamped a rounding error before a window's start belongs to it


def find_media(folder: str | Path) -> list[Path]:
    """Video and audio files under `folder` (recursive, case-insensitive suffixes), sorted.

    A dangling symlink with a media suffix is listed too, so that it gets a row with its error.
    """
    folder = Path(folder)
    suffixes = VIDEO_SUFFIXES + AUDIO_SUFFIXES
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in suffixes and (p.is_file() or (p.is_symlink() and not p.exists())))


@dataclass(frozen=True)
class ClipEvidence:
    """What the job found in one file: streams, usable audio, transcript (and where from), face track."""

    recording: Recording
    audio: AudioClip | None
    has_audio: bool
    transcript: TimedText | None
    transcript_source: str
    faces: FaceTrack | None
    transcript_problem: str | None = None  # why a sidecar could not be used (the clip is labelled without it)
    audio_features: FeatureSequence | None = None  # the collector's audio extractor output (see EvidenceCollector)

    @property
    def has_text(self) -> bool:
        return self.transcript is not None and not self.transcript.is_empty

    @property
    def text_reliable(self) -> bool | None:
        """Whether the transcript is readable evidence (False: low-confidence ASR, see `text_unreliable_reason`;
        labellers leave such text out); None without a transcript."""
        return self.transcript.reliable if self.has_text else None

    @property
    def text_unreliable_reason(self) -> str:
        """Why the transcript is not used as evidence ("" when it is, or when there is none)."""
        return (self.transcript.unreliable or "") if self.has_text else ""

    @property
    def has_vision(self) -> bool:
        return self.faces is not None and not self.faces.is_missing

    def is_whole(self, start: float, end: float | None) -> bool:
        """True when [start, end) covers the whole recording (`end` None = to the end)."""
        return start <= 0 and (end is None or end >= self.recording.duration)

    def text_between(self, start: float, end: float | None) -> str | None:
        """Transcript of the span; for a window, only a timed transcript can say (else None)."""
        if not self.has_text:
            return None
        if self.is_whole(start, end):
            return self.transcript.text
        return self.transcript.text_between(start, end if end is not None else float("inf")) or None

    def _frames_between(self, start: float, end: float | None) -> np.ndarray:
        """bool [T] over `faces.times`: the sampled frames whose time lies in [start, end)."""
        keep = self.faces.times >= start - SPAN_TOLERANCE_SECONDS
        if end is not None:
            keep &= self.faces.times < end
        return keep

    def face_indices_between(self, start: float, end: float | None) -> np.ndarray:
        """Indices into `faces.crops` (int64 [K]) of the face frames whose time lies in [start, end)."""
        if not self.has_vision:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self._frames_between(start, end)[self.faces.mask])

    def faces_between(self, start: float, end: float | None) -> FaceTrack | None:
        """The FaceTrack restricted to the sampled frames in [start, end); None when the clip has no face."""
        if not self.has_vision:
            return None
        faces, keep = self.faces, self._frames_between(start, end)
        crops = faces.crops[self.face_indices_between(start, end)]
        return FaceTrack(crops, faces.mask[keep], faces.times[keep], faces.boxes[keep], faces.probabilities[keep],
                         faces.landmarks[keep])

    def audio_between(self, start: float, end: float | None) -> np.ndarray | None:
        """Usable audio samples of [start, end) (float [N] at `audio.sample_rate`), None when absent or empty."""
        if not self.has_audio:
            return None
        rate = self.audio.sample_rate
        first = int(round(start * rate))
        last = None if end is None else int(round(end * rate))
        samples = self.audio.samples[first:last]
        return samples if samples.size else None

    def absences(self) -> list[str]:
        """Why each modality is missing, in words (for the error of a row no modality could label)."""
        reasons = []
        if not self.has_vision:
            reasons.append("no face in any sampled frame" if self.recording.has_video else "no video stream")
        if not self.has_text:
            reasons.append("no transcript and no speech")
        if not self.has_audio:
            reasons.append("no audio stream" if not self.recording.has_audio else "silent audio")
        return reasons


class EvidenceCollector:
    """Decodes one file into ClipEvidence (audio, transcript, faces) with a shared face detector and ASR.

    transcripts: clip -> text (looked up by the clip's relative path, file name, then stem);
    use_asr: transcribe speech when neither a sidecar nor the table has the clip's text (an unavailable
    recogniser is recorded in `asr_problem`, and text is then missing); device: "cpu" or "cuda[:N]";
    min_face_fraction: detect faces on frames downscaled to what a face of this fraction of the shorter
    side needs (None: full resolution; see `faces.MIN_FACE_FRACTION`); audio_features: {"name", "config"}
    of an audio extractor run on every usable track into `ClipEvidence.audio_features` (the labeller's
    own, so it need not run it again); when it is Whisper, ASR decodes from its first window's encoder
    output instead of encoding the audio a second time.
    """

    def __init__(self, *, face_crop_size: int, face_fps: float = 2.0, transcripts: dict[str, str] | None = None,
                 use_asr: bool = True, device: str = "cpu", min_face_fraction: float | None = MIN_FACE_FRACTION,
                 audio_features: dict | None = None) -> None:
        self.face_fps = face_fps
        self.transcripts = transcripts or {}
        self.detector = FaceDetector(device=device, crop_size=face_crop_size, min_face_fraction=min_face_fraction)
        self.audio_extractor = None if audio_features is None else \
            create_extractor(audio_features["name"], device=device, **audio_features.get("config", {}))
        self._asr: SpeechRecognizer | None = None
        self.asr_problem: str | None = None
        if use_asr:
            try:
                self._asr = SpeechRecognizer(device="cuda" if device.startswith("cuda") else "cpu")
            except TranscriptError as error:
                self.asr_problem = str(error)

    def _transcript(self, path: Path, clip: str, audio: AudioClip | None, has_speech: bool,
                    first_window: np.ndarray | None = None) -> tuple[TimedText | None, str, str | None]:
        """(transcript, its source, the sidecar's problem): an unreadable sidecar leaves text missing."""
        sidecar = find_sidecar(path)
        if sidecar is not None:
            try:
                return read_transcript_file(sidecar), "sidecar", None
            except TranscriptError as error:
                return None, "none", str(error)
        for key in (clip, path.name, path.stem):
            if key in self.transcripts:
                return TimedText(" ".join(str(self.transcripts[key]).split()), "csv"), "csv", None
        if self._asr is not None and audio is not None and has_speech:
            timed = self._asr.transcribe(audio.samples, first_window)
            return (timed, "asr", None) if not timed.is_empty else (None, "none", None)
        return None, "none", None

    def collect(self, path: Path, clip: str, timer: StageTimer | None = None) -> ClipEvidence:
        """Probe and decode `path`; MediaError propagates to the caller's row; a bad sidecar is noted.

        timer: when given, the seconds of each stage (probe, decode audio, VAD, ASR, frame decode, face
        detection) are added to it.
        """
        with timed(timer, "probe"):
            recording = probe(path)
        with timed(timer, "decode audio"):
            audio = read_audio(path) if recording.has_audio else None
        usable_audio = audio is not None and not audio.is_missing and not audio.silent
        with timed(timer, "VAD"):
            has_speech = usable_audio and speech_seconds(audio.samples, audio.sample_rate) >= MIN_SPEECH_SECONDS
        features, first_window = None, None
        if usable_audio and self.audio_extractor is not None:
            with timed(timer, "audio model"):
                features, first_window = self._audio_features(audio.samples)
        with timed(timer, "ASR"):
            transcript, source, problem = self._transcript(path, clip, audio if usable_audio else None, has_speech,
                                                           first_window)
        faces = track_faces(path, self.detector, fps=self.face_fps, timer=timer) if recording.has_video else None
        return ClipEvidence(recording, audio, usable_audio, transcript, source, faces, problem, features)

    def _audio_features(self, samples: np.ndarray) -> tuple[FeatureSequence, np.ndarray | None]:
        """(the audio extractor's sequence of a track, the encoder output of its first Whisper window or None)."""
        if hasattr(self.audio_extractor, "extract_with_first_window"):
            return self.audio_extractor.extract_with_first_window(samples)
        return self.audio_extractor.extract(samples), None
