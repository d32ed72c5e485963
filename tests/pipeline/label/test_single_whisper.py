"""One Whisper model per process serves the collector's encoder frames and its ASR, from one encoder pass."""

from __future__ import annotations

import weakref
from pathlib import Path

import ctranslate2
import pytest

import affectflow.pipeline.media.whisper_model as whisper_model
from affectflow.extractors.whisper import kept_frames
from affectflow.pipeline.label.evidence import EvidenceCollector
from affectflow.pipeline.media.whisper_model import EncodedWhisperModel
from factories.media import make_video, write_utterances


class Counts:
    """CTranslate2 Whisper models constructed and their `encode` calls (input shapes), and the transcriptions
    that started from an encoding given to them or encoded their first window themselves."""

    def __init__(self, monkeypatch) -> None:
        self.constructed: list[str] = []
        self.encoded: list[tuple[int, ...]] = []
        self.transcriptions = {"from the extractor's encoding": 0, "encoding again": 0}
        real = ctranslate2.models.Whisper
        counts = self

        class CountingWhisper:
            def __init__(self, *args, **kwargs) -> None:
                counts.constructed.append(str(args[0]))
                self._model = real(*args, **kwargs)

            def encode(self, features, *args, **kwargs):
                counts.encoded.append(tuple(features.shape))
                return self._model.encode(features, *args, **kwargs)

            def __getattr__(self, name):
                return getattr(self._model, name)

        monkeypatch.setattr(ctranslate2.models, "Whisper", CountingWhisper)  # faster-whisper builds through it too
        monkeypatch.setattr(whisper_model, "_loaded", weakref.WeakValueDictionary())  # none loaded before
        transcribe = EncodedWhisperModel.transcribe

        def counting_transcribe(model, *args, **kwargs):
            counts.transcriptions["encoding again" if model._first_window is None else
                                  "from the extractor's encoding"] += 1
            return transcribe(model, *args, **kwargs)

        monkeypatch.setattr(EncodedWhisperModel, "transcribe", counting_transcribe)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("speech")
    long = folder / "long.wav"  # ~50 s: two 30 s windows (streamed), a sentence in each
    spans = write_utterances(long, ["I am so happy to see you today.", "This is terrible news for all of us."],
                             pause_seconds=15.0)
    assert spans[0][1] < 30.0 < spans[1][0]
    return {"short": make_video(folder / "short.mp4", seconds=4.0), "long": long}


def test_one_whisper_model_serves_the_frames_and_asr_from_one_encoder_pass(speech, monkeypatch):
    counts = Counts(monkeypatch)
    collector = EvidenceCollector(face_crop_size=96, audio_features={"name": "whisper", "config": {}})
    assert collector.asr_problem is None
    assert len(counts.constructed) == 1  # not one for the extractor and one for ASR
    assert collector._asr.whisper is collector.audio_extractor.whisper
    again = EvidenceCollector(face_crop_size=96, audio_features={"name": "whisper", "config": {}})
    assert again.audio_extractor.model is collector.audio_extractor.model  # a second collector: the same model
    assert len(counts.constructed) == 1

    counts.encoded.clear()
    short = collector.collect(speech["short"], "short.mp4")
    assert short.transcript_source == "asr" and "happy" in short.transcript.text.lower()
    assert short.audio_features.num_frames == kept_frames(short.audio.samples.size)  # ~4 s at 50 frames a second
    # one 30 s window, encoded once: its frames are the extractor's, and ASR decodes from the same encoding
    assert counts.encoded == [(1, 80, 3000)]
    assert counts.transcriptions == {"from the extractor's encoding": 1, "encoding again": 0}

    del again
    counts.encoded.clear()
    long = collector.collect(speech["long"], "long.wav")
    assert long.audio.samples.size == 0 and long.audio_features.num_frames > 1500  # streamed: two windows
    assert "terrible" in long.transcript.text.lower()
    # each window's ASR starts from its encoding; faster-whisper encodes only where it seeks inside a window
    assert counts.transcriptions == {"from the extractor's encoding": 3, "encoding again": 0}
    assert len(counts.constructed) == 1
