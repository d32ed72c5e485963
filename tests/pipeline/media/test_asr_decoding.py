"""ASR decoding options (`transcripts.decoding_options`): what faster-whisper is asked, the token budget, words kept."""

from types import SimpleNamespace

import numpy as np
import pytest

from affectflow.pipeline.media.transcripts import ASR_DECODING, SpeechRecognizer, decoding_options


class _RecordingWhisper:
    """Stands in for faster_whisper.WhisperModel: records each transcribe call's options, decodes nothing."""

    calls: list[dict] = []

    def __init__(self, *args, **kwargs) -> None:
        pass

    def encode(self, features):
        raise AssertionError("the first window's encoding is given")

    def transcribe(self, audio, **options):
        type(self).calls.append({"seconds": audio.size / 16000, **options})
        return iter(()), None

    def transcribe_from_encoding(self, audio, first_window_encoding, **options):
        return self.transcribe(audio, **options)


def test_every_asr_call_passes_the_decoding_options(monkeypatch):
    from affectflow.pipeline.media import transcripts

    monkeypatch.setattr(transcripts, "load_whisper", lambda *args: SimpleNamespace(recognizer=_RecordingWhisper()))
    monkeypatch.setattr(_RecordingWhisper, "calls", [])
    recognizer = SpeechRecognizer(model_path="unused")
    samples = np.zeros(16000 * 7, np.float32)
    recognizer.transcribe(samples)
    recognizer.transcribe(samples, np.zeros((1500, 384), np.float32))
    recognizer.transcribe_spans(np.zeros(16000 * 50, np.float32), [(1.0, 3.5), (5.0, 45.0)])
    calls = _RecordingWhisper.calls
    assert [round(call["seconds"], 3) for call in calls] == [7.0, 7.0, 2.5, 40.0]
    for call in calls:
        for name, value in ASR_DECODING.items():
            assert call[name] == value, name
        assert call["max_new_tokens"] == decoding_options(call["seconds"])["max_new_tokens"]
    # one greedy decode per window: no temperature fallback (it re-decoded German speech 4.4 times on average)
    assert all(call["temperature"] == 0.0 for call in calls)
    # the budget grows with the audio up to one 30 s window and fits Whisper's 448-token context beside the prompt
    budgets = [decoding_options(seconds)["max_new_tokens"] for seconds in (0.0, 2.5, 7.0, 30.0, 40.0)]
    assert budgets == sorted(budgets) and budgets[-1] == budgets[-2] and budgets[-1] + 4 <= 448
    assert ASR_DECODING["condition_on_previous_text"] is False  # the prompt never eats into the budget


class _LoopingDecoder:
    """The CTranslate2 Whisper model with `generate` replaced by a decoder stuck in a loop: it repeats `loop`
    (token ids) until the length it is allowed (max_length counts the prompt, as faster-whisper passes it)."""

    def __init__(self, model, loop: list[int]) -> None:
        self._model, self._loop, self.calls = model, loop, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, encoder_output, prompts, max_length, **options):
        self.calls += 1
        count = max_length - len(prompts[0])
        tokens = (self._loop * (count // len(self._loop) + 1))[:count]
        return [SimpleNamespace(sequences_ids=[tokens], scores=[-0.05], no_speech_prob=0.01)]


def test_a_looping_decoder_is_cut_by_the_budget_and_decoded_once():
    recognizer = SpeechRecognizer()
    model = recognizer._model
    loop = model.hf_tokenizer.encode(" I'm mine,", add_special_tokens=False).ids
    looping = _LoopingDecoder(model.model, loop)
    model.model = looping  # the process's shared model: put back below
    try:
        _check_the_budget_cuts_the_loop(recognizer, model, looping)
    finally:
        model.model = looping._model


def _check_the_budget_cuts_the_loop(recognizer, model, looping) -> None:
    seconds = 4.0
    samples = np.random.default_rng(0).standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1
    timed = recognizer.transcribe(samples, np.zeros((1500, 384), np.float32))
    budget = decoding_options(seconds)["max_new_tokens"]
    tokens = len(model.hf_tokenizer.encode(" " + timed.text, add_special_tokens=False).ids)
    # the decoder ran until the budget, not Whisper's whole context (448 tokens), and only once: faster-whisper's
    # fallback would decode such repetitive text (compression ratio > 2.4) five more times
    assert looping.calls == 1
    assert budget - len(looping._loop) <= tokens <= budget + 1
    assert timed.unreliable is not None and "compression_ratio" in timed.unreliable


@pytest.mark.parametrize("text", [
    "I am so happy to see you today, this is wonderful news.",
    "Well, I suppose we could try it tomorrow, if you really want to. Oh no, that is terrible, "
    "I am so sorry to hear about your loss.",
])
def test_espeak_speech_keeps_its_words(tmp_path, text):
    from factories.media import write_speech

    from affectflow.pipeline.media.decode import read_audio

    samples = read_audio(write_speech(tmp_path / "speech.wav", text, seconds=9.0)).samples
    recognizer = SpeechRecognizer()
    shipped = recognizer.transcribe(samples)
    # the options before ASR_DECODING: faster-whisper's defaults (temperature fallback, no budget)
    segments, _ = recognizer._model.transcribe(samples, language="en", vad_filter=True, beam_size=1)
    before = " ".join(s.text.strip() for s in segments)
    assert shipped.text.split() == before.split()
    assert shipped.reliable and shipped.cues  # timed cues are kept (window rows read them)
    spoken = {word.strip(",.").lower() for word in text.split()}
    heard = {word.strip(",.").lower() for word in shipped.text.split()}
    assert len(spoken & heard) >= 0.8 * len(spoken)
