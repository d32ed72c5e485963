"""hf_audio on tiny wav2vec2 / WavLM / HuBERT / data2vec-audio checkpoints loaded from disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectflow.extractors.audio import conv_geometry, split_chunks
from affectflow.extractors.base import create_extractor
from factories.extractors import AUDIO_KINDS
from factories.tolerances import TINY_MODEL_TERMS, float32_chain_bound

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation


def build(tiny_models, kind: str = "wav2vec2", **config):
    return create_extractor("hf_audio", model=str(tiny_models[kind]), **config)


def test_geometry_and_chunk_split_helpers():
    from transformers import Wav2Vec2Config

    assert conv_geometry(Wav2Vec2Config()) == (320, 400)  # 20 ms hop, 25 ms receptive field at 16 kHz
    assert split_chunks(25, 10) == [(0, 8), (8, 17), (17, 25)]
    assert split_chunks(5, 10) == [(0, 5)]
    with pytest.raises(ValueError, match="wav2vec2-style"):
        conv_geometry(object())


@pytest.mark.parametrize("kind", AUDIO_KINDS)
def test_frame_rate_times_and_batch_equals_single(tiny_models, speech, kind):
    extractor = build(tiny_models, kind)
    assert extractor.frame_rate == 50.0 and extractor.contract.sample_rate == 16000
    short = speech[:9000]
    batched = extractor.extract_batch([speech, short])
    assert batched[0].values.shape == ((speech.size - 400) // 320 + 1, 32)
    np.testing.assert_allclose(batched[0].times[:2], [0.0125, 0.0325], atol=1e-6)
    np.testing.assert_allclose(np.diff(batched[0].times), 0.02, atol=1e-5)
    for item, result in zip([speech, short], batched):
        # Padding must not leak: group-norm and data2vec-audio chunks are never padded, the others masked.
        alone = extractor.extract(item).values  # padded batch vs alone: the same sums in another order
        np.testing.assert_allclose(alone, result.values, atol=float32_chain_bound(TINY_MODEL_TERMS, np.abs(alone).max(initial=0.0)))


def test_layer_choices_match_the_models_hidden_states(tiny_models, speech):
    from transformers import AutoFeatureExtractor, AutoModel

    path = tiny_models["hubert"]
    model = AutoModel.from_pretrained(path).eval()
    inputs = AutoFeatureExtractor.from_pretrained(path)(speech, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        hidden = model(inputs["input_values"], output_hidden_states=True).hidden_states
    expected = {"last4": sum(hidden[-4:]), 2: hidden[2], -1: hidden[-1], "mean": torch.stack(hidden[1:]).mean(0)}
    for layers, reference in expected.items():
        values = build(tiny_models, "hubert", layers=layers).extract(speech).values
        np.testing.assert_allclose(values, reference[0].numpy(), err_msg=f"layers={layers}",
                                   atol=float32_chain_bound(TINY_MODEL_TERMS, float(reference.abs().max())))
    assert build(tiny_models, "hubert", layers="2").config.layers == 2  # CLI strings become ints


def test_long_audio_is_chunked_and_stitched(tiny_models, speech):
    whole = build(tiny_models, "wavlm", chunk_seconds=1.0).extract(speech)  # 2.5 s -> 3 chunks of 0.83 s
    chunks = split_chunks(speech.size, 16000)
    assert len(chunks) == 3
    first_alone = build(tiny_models, "wavlm").extract(speech[: chunks[0][1]])
    count = first_alone.num_frames
    assert whole.num_frames == 3 * count
    np.testing.assert_allclose(whole.values[:count], first_alone.values,
                               atol=float32_chain_bound(TINY_MODEL_TERMS, np.abs(first_alone.values).max(initial=0.0)))
    assert np.all(np.diff(whole.times) > 0) and whole.times[-1] < speech.size / 16000
    np.testing.assert_allclose(whole.times[count], chunks[1][0] / 16000 + 0.0125, atol=1e-6)


def test_missing_silent_and_tiny_inputs(tiny_models):
    extractor = build(tiny_models)
    results = extractor.extract_batch([None, np.zeros(0, np.float32), np.zeros(16000, np.float32),
                                       np.full(200, 0.1, np.float32)])
    assert [r.missing_reason for r in results[:3]] == ["no audio", "empty audio", "silent audio"]
    assert all(r.is_missing and r.values.shape == (0, 32) for r in results[:3])
    assert results[3].values.shape == (1, 32)  # shorter than one frame: padded to one frame


def test_bad_configs_and_inputs_raise(tiny_models, speech, tmp_path):
    with pytest.raises(ValueError, match="layers"):
        build(tiny_models, layers="last5")
    with pytest.raises(ValueError, match="out of range"):
        build(tiny_models, layers=9).extract(speech)
    with pytest.raises(ValueError, match="chunk_seconds"):
        build(tiny_models, chunk_seconds=0)
    with pytest.raises(ValueError, match="float16"):
        build(tiny_models, precision="float16")
    with pytest.raises(ValueError, match="cannot load model"):
        create_extractor("hf_audio", model=str(tmp_path / "no_such_model"))
    with pytest.raises(ValueError, match="1-D float32"):
        build(tiny_models).extract(speech.astype(np.float64))
    with pytest.raises(ValueError, match="NaN"):
        build(tiny_models).extract(np.full(800, np.nan, np.float32))
