"""One Whisper model per process, shared by the encoder frames and ASR.

The `whisper` extractor (extractors/whisper.py) encodes 30 s windows with a CTranslate2 Whisper, and
offline ASR (`transcripts.SpeechRecognizer`) decodes with faster-whisper's `WhisperModel`, which holds the
same kind of CTranslate2 model. `load_whisper` returns one `SharedWhisper` per `WhisperKey` (model folder,
device, device index, compute type, CPU threads) for as long as anything in this process holds it:

    shared = load_whisper(folder, device="cpu", compute_type="int8", threads=2)
    shared.encoder.encode(mel_windows)                 # ctranslate2.models.Whisper: the extractor's frames
    shared.recognizer.transcribe_from_encoding(samples, encoded_first_window, language="en")   # ASR

so an extractor and a recogniser built with the same arguments load the model once (its memory counted
once), and ASR can start from the encoder output the extractor already computed. Different arguments
(another model folder, another compute type) load another model. A folder without `tokenizer.json` (a
converted model without its tokenizer) loads the encoder alone; asking it for a recogniser then builds a
faster-whisper model of its own (which fetches the tokenizer from the Hub), a second copy.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel


@dataclass(frozen=True)
class WhisperKey:
    """What makes two loads of a Whisper model the same model: the resolved folder, the device type
    ("cpu", "cuda") and index, the CTranslate2 compute type ("int8", "float16", ...) and the CPU threads
    (0 on a GPU, where they are not used)."""

    folder: str
    device: str = "cpu"
    device_index: int = 0
    compute_type: str = "int8"
    threads: int = 0

    @classmethod
    def of(cls, folder: str | Path, device: str = "cpu", device_index: int = 0, compute_type: str = "int8",
           threads: int = 0) -> "WhisperKey":
        """The key of a load: the folder resolved (symlinks, relative paths), threads 0 off the CPU."""
        return cls(str(Path(folder).expanduser().resolve()), device, int(device_index), compute_type,
                   int(threads) if device == "cpu" else 0)


class EncodedWhisperModel(WhisperModel):
    """faster-whisper's `WhisperModel` whose transcription can start from an encoder output computed elsewhere.

    faster-whisper's `generate_segments` takes the `encoder_output` of the window at seek 0 (its own
    parameter; later windows are encoded by it), but `transcribe`, which builds the tokenizer and the
    decoding options, always passes None. `transcribe_from_encoding` sets it for the one `transcribe` call
    it makes; not for concurrent calls from several threads on one model.
    """

    _first_window: ctranslate2.StorageView | None = None

    def transcribe_from_encoding(self, audio: np.ndarray, first_window_encoding: np.ndarray, **options):
        """`transcribe(audio, **options)` whose first window's encoder output is `first_window_encoding`
        ([1500, D] float32, this model's encoder on the same audio's first 30 s window, or [F, D] of a shorter
        window of it padded alike: the whisper extractor's window="clip") instead of encoding it again.
        Options that move that window (`vad_filter=True`, `clip_timestamps`) must not be given."""
        if options.pop("vad_filter", False) or options.get("clip_timestamps", "0") != "0":
            raise ValueError("transcribe_from_encoding: the encoded window is the audio's first: no VAD filter, "
                             "no clip_timestamps")
        encoded = np.ascontiguousarray(np.asarray(first_window_encoding, np.float32)[None])
        self._first_window = ctranslate2.StorageView.from_array(encoded)
        try:
            return self.transcribe(audio, vad_filter=False, **options)
        finally:
            self._first_window = None

    def generate_segments(self, features, tokenizer, options, log_progress, encoder_output=None):
        """faster-whisper's, with the pending first-window encoding (see `transcribe_from_encoding`)."""
        if encoder_output is None and self._first_window is not None:
            encoder_output, self._first_window = self._first_window, None
        return super().generate_segments(features, tokenizer, options, log_progress, encoder_output)


class SharedWhisper:
    """A process's Whisper model of one key: `encoder` (the `ctranslate2.models.Whisper`) and `recognizer`
    (an `EncodedWhisperModel` around that same CTranslate2 model; built on first use when the folder has
    no tokenizer.json, see the module docstring)."""

    def __init__(self, key: WhisperKey) -> None:
        self.key = key
        self._recognizer: EncodedWhisperModel | None = None
        if (Path(key.folder) / "tokenizer.json").is_file():
            self._recognizer = self._new_recognizer()
            self.encoder = self._recognizer.model
        else:
            self.encoder = ctranslate2.models.Whisper(key.folder, device=key.device, device_index=key.device_index,
                                                      compute_type=key.compute_type, intra_threads=key.threads)

    def _new_recognizer(self) -> EncodedWhisperModel:
        key = self.key
        return EncodedWhisperModel(key.folder, device=key.device, device_index=key.device_index,
                                   compute_type=key.compute_type, cpu_threads=key.threads)

    @property
    def recognizer(self) -> EncodedWhisperModel:
        """The faster-whisper model for ASR (the encoder's own CTranslate2 model when the folder has a tokenizer)."""
        if self._recognizer is None:
            self._recognizer = self._new_recognizer()
        return self._recognizer


_loaded: weakref.WeakValueDictionary[WhisperKey, SharedWhisper] = weakref.WeakValueDictionary()
_loading = threading.Lock()
# Per process by design: a forked or spawned worker starts with none (CTranslate2 models do not survive a fork).


def load_whisper(folder: str | Path, device: str = "cpu", device_index: int = 0, compute_type: str = "int8",
                 threads: int = 0) -> SharedWhisper:
    """The process's Whisper model of these arguments (`WhisperKey.of`), loaded now unless something in this
    process still holds one. Raises what CTranslate2 raises for an unusable folder or compute type
    (RuntimeError, ValueError)."""
    key = WhisperKey.of(folder, device, device_index, compute_type, threads)
    with _loading:
        shared = _loaded.get(key)
        if shared is None:
            shared = SharedWhisper(key)
            _loaded[key] = shared
        return shared
