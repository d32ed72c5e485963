"""hf_text on tiny BERT / DeBERTa-v2 checkpoints, and the real all-MiniLM-L6-v2 on real sentences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from affectflow.extractors.base import create_extractor
from factories.extractors import TEXT_KINDS
from factories.tolerances import TINY_MODEL_TERMS, float32_chain_bound
from affectflow.extractors.text import resolve_text_model

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation


@pytest.mark.parametrize("kind", TEXT_KINDS)
def test_special_tokens_removed_and_missing_transcripts(tiny_models, kind):
    from transformers import AutoTokenizer

    extractor = create_extractor("hf_text", model=str(tiny_models[kind]))
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[kind])
    text = "oh no, this is not good news!"
    results = extractor.extract_batch([text, None, "   ", "i am so happy"])
    tokens = tokenizer.tokenize(text)
    assert results[0].values.shape == (len(tokens), 32)
    assert tokenizer.convert_ids_to_tokens(results[0].extras["token_ids"].tolist()) == tokens
    np.testing.assert_array_equal(results[0].times, np.arange(len(tokens)))
    assert [results[1].missing_reason, results[2].missing_reason] == ["no transcript", "empty transcript"]
    assert results[1].is_missing and results[2].is_missing and results[1].values.shape == (0, 32)
    # Padding in the batch does not change a transcript's features.
    alone = extractor.extract("i am so happy").values
    np.testing.assert_allclose(alone, results[3].values, atol=float32_chain_bound(TINY_MODEL_TERMS, np.abs(alone).max(initial=0.0)))


def test_last4_is_the_sum_of_the_last_four_hidden_states(tiny_models):
    from transformers import AutoModel, AutoTokenizer

    path = tiny_models["bert"]
    model, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    encoded = tokenizer("you are so happy today", return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded, output_hidden_states=True).hidden_states
    reference = sum(hidden[-4:])[0, 1:-1].numpy()  # drop [CLS] and [SEP]
    values = create_extractor("hf_text", model=str(path)).extract("you are so happy today").values
    np.testing.assert_allclose(values, reference, atol=float32_chain_bound(TINY_MODEL_TERMS, np.abs(reference).max(initial=0.0)))
    single = create_extractor("hf_text", model=str(path), layers=1).extract("you are so happy today").values
    np.testing.assert_allclose(single, hidden[1][0, 1:-1].numpy(),
                               atol=float32_chain_bound(TINY_MODEL_TERMS, float(hidden[1].abs().max())))


def test_long_transcripts_are_truncated(tiny_models):
    extractor = create_extractor("hf_text", model=str(tiny_models["bert"]), max_tokens=10)
    assert extractor.contract.max_tokens == 10
    assert extractor.extract("happy " * 50).values.shape == (8, 32)  # 10 minus [CLS] and [SEP]
    with pytest.raises(ValueError, match="text input must be str"):
        extractor.extract(["not", "a", "string"])


def test_minilm_alias_resolves_to_the_packaged_checkpoint():
    path = Path(resolve_text_model("minilm"))
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert resolve_text_model("bert-base-uncased") == "bert-base-uncased"


def test_real_minilm_puts_similar_sentences_closer():
    extractor = create_extractor("hf_text")  # default: the real all-MiniLM-L6-v2, layers="last4"
    assert extractor.output_dim == 384 and extractor.config.model == "minilm"
    sentences = ["I am so happy to see you today.", "I'm really glad and delighted to meet you now.",
                 "The train to Boston leaves at seven.", "I am furious, this is unacceptable."]
    for layers in ("last4", "last"):
        model = extractor if layers == "last4" else create_extractor("hf_text", layers=layers)
        vectors = [seq.utterance() for seq in model.extract_batch(sentences)]
        unit = [v / np.linalg.norm(v) for v in vectors]
        similar, unrelated = unit[0] @ unit[1], unit[0] @ unit[2]
        assert similar > unrelated + 0.1, f"layers={layers}: similar {similar:.3f} vs unrelated {unrelated:.3f}"
        assert unit[0] @ unit[1] > unit[0] @ unit[3]


def test_bfloat16_precision_gives_float32_features_close_to_float32(tiny_models):
    text = "i am so happy to see you today"
    full = create_extractor("hf_text", model=str(tiny_models["bert"])).extract(text).values
    half = create_extractor("hf_text", model=str(tiny_models["bert"]), precision="bfloat16")
    values = half.extract(text).values
    assert half.config_hash != create_extractor("hf_text", model=str(tiny_models["bert"])).config_hash
    assert values.dtype == np.float32 and values.shape == full.shape
    assert np.corrcoef(values.ravel(), full.ravel())[0, 1] > 0.99
