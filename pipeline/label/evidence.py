"""What a labelling run finds in one media file: its streams, audio, transcript and faces.

`find_media` lists the files of a folder; `EvidenceCollector.collect` decodes one of them into a
`ClipEvidence`: audio is missing when there is no stream or the track is silent; audio that is present
but holds no speech (Silero VAD finds less than MIN_SPEECH_SECONDS, or the track is shorter than that) is
not voice evidence: `audio_note` says why and labellers leave the voice out. The transcript comes from a
sidecar, the transcripts table, else offline ASR when there is speech, and vision is missing when no
sampled frame has a face. Labellers read spans of it (`text_between`, `faces_between`, ...). A
collector built with `utterances=True` also cuts the speech into utterances (`ClipEvidence.utterances`).

Memory is bounded whatever the recording's length or resolution: frames are decoded in chunks of at most
`decode.FRAME_CHUNK_BYTES` at the size the face crops need (see `faces.track_faces`), and when the
collector runs a Whisper audio extractor, a track longer than one 30 s window is streamed window by
window (decode, VAD, encoder, ASR), keeping only the encoder frames, not the samples; its utterances are
found window by window and each is read back from the file alone for ASR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectflow.extractors.base import create_extractor
from affectflow.pipeline.core.records import FeatureSequence, Recording
from affectflow.pipeline.core.timing import StageTimer, timed
from affectflow.pipeline.label.pending import AUDIO_SUFFIXES, VIDEO_SUFFIXES, find_media  # noqa: F401 (re-exported)
from affectflow.pipeline.media.decode import AUDIO_WINDOW_SECONDS, SILENCE_RMS, AudioClip, iter_audio_windows, \
    probe, read_audio
from affectflow.pipeline.media.faces import MIN_FACE_FRACTION, FaceDetector, FaceTrack, track_faces
from affectflow.pipeline.media.transcripts import (
    SpeechRecognizer, TimedText, TranscriptError, Utterance, find_sidecar, join_spans, read_transcript_file,
    speech_seconds, speech_spans, split_utterances,
)

MIN_SPEECH_SECONDS = 0.2
"""Least speech (Silero VAD seconds) that makes audio voice evidence and is worth transcribing."""
SPAN_TOLERANCE_SECONDS = 1e-6  # a frame stamped a rounding error before a window's start belongs to it


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
    audio_note: str | None = None  # why usable audio is not voice evidence (no speech, too short); None = it is
    utterances: tuple[Utterance, ...] = ()  # the speech cut at its pauses (only when the collector was asked)

    @property
    def has_voice(self) -> bool:
        """True when the audio is usable and holds speech: what a speech-emotion model may be given."""
        return self.has_audio and self.audio_note is None

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
        """Transcript of the span; for a window, only a timed transcript can say (else None); for a span
        that is one of `utterances`, that utterance's own words."""
        if not self.has_text:
            return None
        for utterance in self.utterances:
            if utterance.start == start and utterance.end == end:
                return utterance.text
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
        """Voice samples of [start, end) (float [N] at `audio.sample_rate`), None when absent, without speech
        or empty (a streamed long track keeps no samples)."""
        if not self.has_voice:
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
        elif self.audio_note:
            reasons.append(self.audio_note)
        return reasons


def voice_note(duration: float, speech: float) -> str | None:
    """Why usable audio of `duration` seconds with `speech` seconds of VAD speech is not voice evidence
    (None when it is)."""
    if duration < MIN_SPEECH_SECONDS:
        return f"audio not used: shorter than {MIN_SPEECH_SECONDS:g} s"
    if speech < MIN_SPEECH_SECONDS:
        return "audio not used: no speech found (Silero VAD)"
    return None


class FrameBuffer:
    """Rows [N_i, D] appended into one array sized for `expected_rows` up front (grown by half when it
    overflows), so joining an hour of Whisper frames never holds two copies of them."""

    def __init__(self, expected_rows: int) -> None:
        self.expected_rows = max(1, expected_rows)
        self._array: np.ndarray | None = None
        self._size = 0

    def add(self, rows: np.ndarray) -> None:
        if self._array is None:
            self._array = np.empty((max(self.expected_rows, len(rows)), rows.shape[1]), rows.dtype)
        if self._size + len(rows) > len(self._array):
            grown = np.empty((max(len(self._array) * 3 // 2, self._size + len(rows)), self._array.shape[1]), rows.dtype)
            grown[:self._size] = self._array[:self._size]
            self._array = grown
        self._array[self._size: self._size + len(rows)] = rows
        self._size += len(rows)

    def values(self) -> np.ndarray:
        """The rows so far [N, D] (a view of the buffer)."""
        return self._array[:self._size]


class EvidenceCollector:
    """Decodes one file into ClipEvidence (audio, transcript, faces) with a shared face detector and ASR.

    transcripts: clip -> text (looked up by the clip's relative path, file name, then stem);
    use_asr: transcribe speech when neither a sidecar nor the table has the clip's text (an unavailable
    recogniser is recorded in `asr_problem`, and text is then missing); device: "cpu" or "cuda[:N]";
    min_face_fraction: detect faces on frames downscaled to what a face of this fraction of the shorter
    side needs (None: full resolution; see `faces.MIN_FACE_FRACTION`); face_crop_size: side of the face
    crops in pixels (None: no face detection, vision is missing); audio_features: {"name", "config"}
    of an audio extractor run on every usable track into `ClipEvidence.audio_features` (the labeller's
    own, so it need not run it again); when it is Whisper with ASR's model, ASR decodes from its first
    window's encoder output instead of encoding the audio a second time (another Whisper: ASR encodes anew);
    utterances: also cut the speech into utterances
    (`transcripts.speech_spans`, one VAD pass that also decides whether there is speech) and let ASR
    transcribe each utterance from its own audio, so that each gets its own words.
    """

    def __init__(self, *, face_crop_size: int | None, face_fps: float = 2.0, transcripts: dict[str, str] | None = None,
                 use_asr: bool = True, device: str = "cpu", min_face_fraction: float | None = MIN_FACE_FRACTION,
                 audio_features: dict | None = None, utterances: bool = False) -> None:
        self.face_fps = face_fps
        self.utterances = utterances
        self.transcripts = transcripts or {}
        self.detector = None if face_crop_size is None else \
            FaceDetector(device=device, crop_size=face_crop_size, min_face_fraction=min_face_fraction)
        self.audio_extractor = None if audio_features is None else \
            create_extractor(audio_features["name"], device=device, **audio_features.get("config", {}))
        self._asr: SpeechRecognizer | None = None
        self.asr_problem: str | None = None
        if use_asr:
            try:
                self._asr = SpeechRecognizer(device=device)  # the audio extractor's Whisper model when it is the same
            except TranscriptError as error:
                self.asr_problem = str(error)
        # ASR decodes from the extractor's encoder output only when both hold the same Whisper model (another
        # encoder, e.g. `--audio-model base` beside tiny.en's ASR, gives frames of another width and meaning)
        self._asr_shares_encoder = self._asr is not None and self.audio_extractor is not None and \
            getattr(self.audio_extractor, "whisper", None) is self._asr.whisper

    def _given_transcript(self, path: Path, clip: str) -> tuple[TimedText | None, str, str | None] | None:
        """(transcript, its source, the sidecar's problem) from a sidecar or the table; None when neither has it
        (an unreadable sidecar leaves text missing)."""
        sidecar = find_sidecar(path)
        if sidecar is not None:
            try:
                return read_transcript_file(sidecar), "sidecar", None
            except TranscriptError as error:
                return None, "none", str(error)
        for key in (clip, path.name, path.stem):
            if key in self.transcripts:
                return TimedText(" ".join(str(self.transcripts[key]).split()), "csv"), "csv", None
        return None

    def collect(self, path: Path, clip: str, timer: StageTimer | None = None) -> ClipEvidence:
        """Probe and decode `path`; MediaError propagates to the caller's row; a bad sidecar is noted.

        timer: when given, the seconds of each stage (probe, decode audio, VAD, ASR, frame decode, face
        detection) are added to it.
        """
        with timed(timer, "probe"):
            recording = probe(path)
        given = self._given_transcript(path, clip)
        if recording.has_audio and self._streams(recording):
            audio, found = self._stream_audio(path, recording.duration, given, timer)
        else:
            audio, found = self._read_audio(path, given, timer) if recording.has_audio else (None, None)
        usable, note, features, transcript, spans = found or (False, None, None, None, [])
        text, source, problem = given or ((transcript, "asr", None) if transcript is not None else (None, "none", None))
        utterances = split_utterances(spans, text) if usable and note is None else ()
        faces = None
        if recording.has_video and self.detector is not None:
            faces = track_faces(path, self.detector, fps=self.face_fps, timer=timer,
                                max_short_side=self.detector.needed_short_side())
        return ClipEvidence(recording, audio, usable, text, source, faces, problem, features, note, utterances)

    def _streams(self, recording: Recording) -> bool:
        """True when the track is longer than one window and the audio extractor can be streamed."""
        return recording.duration > AUDIO_WINDOW_SECONDS and hasattr(self.audio_extractor, "extract_windows")

    def _speech(self, samples: np.ndarray, offset: float = 0.0) -> tuple[float, list[tuple[float, float]]]:
        """(VAD seconds of speech, the utterance spans on the file's clock: only with `utterances`; their
        length is then the speech, one VAD pass for both)."""
        if not samples.size:
            return 0.0, []
        if not self.utterances:
            return speech_seconds(samples), []
        spans = speech_spans(samples, offset=offset)
        return sum(end - start for start, end in spans), spans

    def _read_audio(self, path: Path, given: tuple | None, timer: StageTimer | None):
        """(AudioClip, (usable, voice note, audio features, ASR transcript, utterance spans)) of a track read
        whole."""
        with timed(timer, "decode audio"):
            audio = read_audio(path)
        usable = not audio.is_missing and not audio.silent
        note, spans = None, []
        if usable:
            with timed(timer, "VAD"):
                speech, spans = self._speech(audio.samples) if audio.duration >= MIN_SPEECH_SECONDS else (0.0, [])
                note = voice_note(audio.duration, speech)
        features, first_window, transcript = None, None, None
        if usable and note is None and self.audio_extractor is not None:
            with timed(timer, "audio model"):
                features, first_window = self._audio_features(audio.samples)
        if usable and note is None and given is None and self._asr is not None:
            with timed(timer, "ASR"):
                transcript = self._asr.transcribe_spans(audio.samples, spans, audio.sample_rate) if self.utterances \
                    else self._asr.transcribe(audio.samples, first_window if self._asr_shares_encoder else None)
        found = transcript if transcript is not None and not transcript.is_empty else None
        return audio, (usable, note, features, found, spans)

    def _stream_audio(self, path: Path, duration: float, given: tuple | None, timer: StageTimer | None):
        """`_read_audio` of a long track, window by window (AUDIO_WINDOW_SECONDS): RMS and VAD speech summed,
        Whisper frames joined, ASR per window with speech (cue times shifted); the samples are not kept.
        With `utterances`, each window's utterance spans (on the file's clock) are joined across its
        boundaries (`transcripts.join_spans`) and ASR transcribes each utterance from its own audio, read
        from the file by span after the last window."""
        squares, count, speech, cues, spans = 0.0, 0, 0.0, [], []
        frames = FrameBuffer(int(math.ceil(duration * 50)) + 1500)  # Whisper's 50 frames a second + a window
        windows = iter_audio_windows(path, AUDIO_WINDOW_SECONDS)
        encoded_windows = self.audio_extractor.extract_windows(windows)
        while True:
            with timed(timer, "audio model"):  # includes decoding the next window
                item = next(encoded_windows, None)
            if item is None:
                break
            samples, kept, encoded = item
            offset = count / 16000.0
            squares += float(np.square(samples, dtype=np.float64).sum())
            count += samples.size
            with timed(timer, "VAD"):
                window_speech, window_spans = self._speech(samples, offset)
            speech += window_speech
            spans = join_spans(spans, window_spans)
            frames.add(kept)
            if given is None and self._asr is not None and not self.utterances \
                    and window_speech >= MIN_SPEECH_SECONDS:
                with timed(timer, "ASR"):
                    timed_text = self._asr.transcribe(samples, encoded if self._asr_shares_encoder else None)
                cues.extend((start + offset, end + offset, text) for start, end, text in timed_text.cues)
        silent = count == 0 or float(np.sqrt(squares / count)) < SILENCE_RMS
        audio = AudioClip(np.zeros(0, np.float32), 16000, None if count else "no audio samples", silent=silent)
        if silent:
            return audio, (False, None, None, None, [])
        note = voice_note(count / 16000.0, speech)
        if note is not None:
            return audio, (True, note, None, None, [])
        features = self.audio_extractor.sequence_of(frames.values())
        transcript = TimedText(" ".join(text for _, _, text in cues), "asr", tuple(cues)) if cues else None
        if given is None and self._asr is not None and self.utterances:
            with timed(timer, "ASR"):  # includes reading each utterance's audio
                transcript = self._asr.transcribe_pieces(
                    (start, end, read_audio(path, start, end).samples) for start, end in spans)
            transcript = transcript if not transcript.is_empty else None
        return audio, (True, None, features, transcript, spans)

    def _audio_features(self, samples: np.ndarray) -> tuple[FeatureSequence, np.ndarray | None]:
        """(the audio extractor's sequence of a track, the encoder output of its first Whisper window or None)."""
        if hasattr(self.audio_extractor, "extract_with_first_window"):
            return self.audio_extractor.extract_with_first_window(samples)
        return self.audio_extractor.extract(samples), None
