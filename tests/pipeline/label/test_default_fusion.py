"""The default labeller's fusion (issue 24): the text expert pulls only as far as its words carry emotion,
low-confidence ASR text is left out, and FER's softmax runs at its fitted temperature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affectflow.pipeline.core.records import Recording
from affectflow.pipeline.label.default_model import CLASSES, FER_TEMPERATURE, DefaultLabeler, temper
from affectflow.pipeline.label.evidence import ClipEvidence
from affectflow.pipeline.label.experts import product_of_experts
from affectflow.pipeline.media.transcripts import TimedText

pytestmark = pytest.mark.numeric

NEUTRAL = CLASSES.index("neutral")
FLOAT32_SLACK = 1e-6
"""float32 rounding of a softmax over 7 classes (~10 * 2^-24 relative, probabilities <= 1)."""


@pytest.fixture(scope="module")
def labeler() -> DefaultLabeler:
    return DefaultLabeler(device="cpu")


def voice(leaning: str, strength: float) -> np.ndarray:
    """A voice posterior [C]: `strength` on one class, the rest spread evenly."""
    posterior = np.full(len(CLASSES), (1.0 - strength) / (len(CLASSES) - 1))
    posterior[CLASSES.index(leaning)] = strength
    return posterior


def fuse(labeler: DefaultLabeler, per_modality: dict[str, np.ndarray]) -> np.ndarray:
    return product_of_experts(per_modality, labeler.priors, labeler.target_prior, labeler.expert_weights(per_modality))


def test_a_lexically_neutral_sentence_does_not_outvote_the_voice(labeler):
    # RAVDESS: an acted sentence whose words carry no emotion; the text head reads it as neutral ~0.7
    text = labeler.text_posterior("Kids are talking by the door.")
    assert int(np.argmax(text)) == NEUTRAL
    angry = voice("anger", 0.6)
    ungated = product_of_experts({"a": angry, "t": text}, labeler.priors, labeler.priors["t"])
    assert int(np.argmax(ungated)) == NEUTRAL  # the rule before issue 24 (w_t = 1, MELD's prior) turned it neutral
    assert labeler.expert_weights({"a": angry, "t": text})["t"] < 0.5
    assert CLASSES[int(np.argmax(fuse(labeler, {"a": angry, "t": text})))] == "anger"


def test_the_voice_alone_or_with_muted_words_is_the_fused_answer(labeler):
    # issue 24: with MELD's prior (47 % neutral) as the target, a sad voice at 0.3 came out neutral
    sad = np.array([0.12, 0.1, 0.1, 0.1, 0.18, 0.3, 0.1])
    meld_target = product_of_experts({"a": sad}, labeler.priors, labeler.priors["t"])
    assert int(np.argmax(meld_target)) == NEUTRAL
    alone = fuse(labeler, {"a": sad})
    np.testing.assert_allclose(alone, 0.99 * sad + 0.01 / len(CLASSES), atol=FLOAT32_SLACK)
    muted = fuse(labeler, {"a": sad, "t": labeler.text_posterior("Kids are talking by the door.")})
    assert CLASSES[int(np.argmax(muted))] == "sadness"
    np.testing.assert_allclose(muted, alone, atol=FLOAT32_SLACK)


def test_an_emotional_transcript_still_beats_a_neutral_voice(labeler):
    text = labeler.text_posterior("I am furious, this is awful!")
    assert CLASSES[int(np.argmax(text))] == "anger"
    assert labeler.expert_weights({"a": voice("neutral", 0.5), "t": text})["t"] > 0.5
    fused = fuse(labeler, {"a": voice("neutral", 0.5), "t": text})
    assert fused[CLASSES.index("anger")] > fused[NEUTRAL]


def test_a_lone_text_expert_keeps_weight_one_so_the_text_only_path_is_its_smoothed_posterior(labeler):
    for sentence in ("Kids are talking by the door.", "Okay.", "I am furious, this is awful!"):
        text = labeler.text_posterior(sentence)
        assert labeler.expert_weights({"t": text}) == {"t": 1.0}
        fused = fuse(labeler, {"t": text})
        assert int(np.argmax(fused)) == int(np.argmax(text))
        np.testing.assert_allclose(fused, 0.99 * text + 0.01 / len(CLASSES), atol=FLOAT32_SLACK)  # text is float32


def test_low_confidence_asr_text_is_left_out_of_the_product(labeler):
    recording = Recording(Path("clip.mp4"), duration=2.0, has_video=False, has_audio=False)
    words = "I am furious, this is awful!"
    reason = "low ASR confidence (avg_logprob -1.40 < -0.8: not English speech, or unclear)"
    read = ClipEvidence(recording, None, False, TimedText(words, "asr", ((0.0, 2.0, words),)), "asr", None)
    unread = ClipEvidence(recording, None, False, TimedText(words, "asr", ((0.0, 2.0, words),), reason), "asr", None)
    assert (read.text_reliable, read.text_unreliable_reason) == (True, "")
    assert (unread.text_reliable, unread.text_unreliable_reason) == (False, reason)
    assert "t" in labeler.predict(read, labeler.clip_state(read), 0.0, None).per_modality
    prediction = labeler.predict(unread, labeler.clip_state(unread), 0.0, None)
    assert prediction.probs is None and prediction.per_modality == {}  # no other modality: nothing to label with
    assert labeler.predict_spans(unread, labeler.clip_state(unread), [(0.0, 1.0), (0.0, None)])[1].per_modality == {}


def test_fer_probabilities_are_tempered_as_logits_over_t():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(5, len(CLASSES)))

    def softmax(z: np.ndarray) -> np.ndarray:
        exps = np.exp(z - z.max(axis=1, keepdims=True))
        return exps / exps.sum(axis=1, keepdims=True)

    np.testing.assert_allclose(temper(softmax(logits), FER_TEMPERATURE), softmax(logits / FER_TEMPERATURE),
                               atol=FLOAT32_SLACK)


def test_the_labeller_applies_the_fer_temperature(labeler):
    from affectflow.extractors.fer import fer_probabilities

    crops = np.random.default_rng(1).integers(0, 256, size=(3, 96, 96, 3), dtype=np.uint8)
    raw = fer_probabilities(crops, model=labeler.fer_model)[:, labeler._fer_order]
    tempered = labeler.vision_frame_posteriors(crops)
    np.testing.assert_allclose(tempered, temper(raw, FER_TEMPERATURE), atol=FLOAT32_SLACK)
    assert np.all(tempered.max(axis=1) < raw.max(axis=1))  # T > 1 softens a peaked softmax


def test_the_row_says_the_transcript_was_not_used_and_why(labeler):
    from affectflow.pipeline.label.output import render_rows
    from affectflow.pipeline.label.output import output_columns
    from affectflow.pipeline.label.run import LabelingOptions, rows_for_evidence

    recording = Recording(Path("clip.mp4"), duration=2.0, has_video=False, has_audio=False)
    reason = "low ASR confidence (avg_logprob -1.40 < -0.8: not English speech, or unclear)"
    words = "I'm going to start with a little bit of water."
    unread = ClipEvidence(recording, None, False, TimedText(words, "asr", ((0.0, 2.0, words),), reason), "asr", None)
    (row,) = rows_for_evidence("clip.mp4", unread, labeler, LabelingOptions())
    assert (row.text_reliable, row.text_unreliable_reason, row.transcript) == (False, reason, words)
    assert row.label is None  # the text was the only modality and it is not evidence
    jsonl = render_rows([row], output_columns(CLASSES, ("a", "t", "v"), True), "jsonl")
    assert '"text_reliable": false' in jsonl and reason in jsonl


def test_the_row_says_how_far_the_words_counted(labeler):
    # issue 24: a muted transcript is visible in the row (JSONL text_weight), not only in the fused numbers
    from affectflow.pipeline.label.default_model import DefaultClipState
    from affectflow.pipeline.label.rows import span_row

    frames = np.random.default_rng(0).standard_normal((100, labeler.audio_head.input_dim)).astype(np.float32)
    state = DefaultClipState(None, frames, np.arange(100) * 0.02)
    recording = Recording(Path("clip.wav"), duration=2.0, has_video=False, has_audio=True)
    weights = {}
    for words in ("Kids are talking by the door.", "I am furious, this is awful!"):
        evidence = ClipEvidence(recording, None, True, TimedText(words, "asr", ((0.0, 2.0, words),)), "asr", None)
        prediction = labeler.predict(evidence, state, 0.0, None)
        assert set(prediction.weights) == {"a", "t"} and prediction.weights["a"] == 1.0
        weights[words] = span_row("clip.wav", evidence, prediction, CLASSES, None, None).text_weight
    assert weights == {"Kids are talking by the door.": 0.0, "I am furious, this is awful!": 1.0}
