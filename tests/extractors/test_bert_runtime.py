"""The torch-only BERT runtime (extractors/bert_runtime.py) against transformers' BertModel + BertTokenizerFast,
its fallback to transformers, and that its fast path never imports transformers' modelling stack."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import affectflow.extractors.text as text_module
from affectflow.extractors.base import create_extractor
from affectflow.extractors.bert_runtime import BertTokenizer, fast_path_blocker, load_bert_encoder
from affectflow.extractors.text import resolve_text_model
from factories.extractors import save_tiny_text_model
from factories.tolerances import MINILM_TERMS, TINY_MODEL_TERMS, float32_chain_bound, float32_sum_bound

pytestmark = pytest.mark.numeric  # compared against transformers with a tolerance

TEXTS = ["i am so happy", "oh no, this is not good news! what are you doing today?", "yes"]
SENTENCES = ["I am so happy to see you today.", "I'm really glad and delighted to meet you now.",
             "The train to Boston leaves at seven.", "I am furious, this is unacceptable!",
             "Why would you do that to me... I trusted you."]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 3-layer random-weight BertModel (model.safetensors) with a tiny-vocabulary BertTokenizerFast."""
    return save_tiny_text_model(tmp_path_factory.mktemp("tiny_bert"), "bert")


def transformers_path(monkeypatch) -> None:
    """Make hf_text load every model through transformers (today's path), as the reference."""
    monkeypatch.setattr(text_module, "fast_path_blocker", lambda *args: "forced for the test")


def test_tokens_and_hidden_states_equal_transformers_on_a_padded_batch(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    assert fast_path_blocker(str(tiny_bert), "float32", False) is None
    reference_tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    expected = reference_tokenizer(TEXTS, padding=True, truncation=True, max_length=12,
                                   return_special_tokens_mask=True, return_tensors="pt")
    encoded = BertTokenizer(tiny_bert)(TEXTS, max_length=12)
    assert set(encoded) == set(expected)
    for key in encoded:
        assert torch.equal(encoded[key], expected[key]), key
    assert encoded["attention_mask"].sum(1).unique().numel() == 3  # three lengths: one truncated, two padded
    model = AutoModel.from_pretrained(tiny_bert).eval()
    with torch.inference_mode():
        inputs = {key: value for key, value in expected.items() if key != "special_tokens_mask"}
        reference = model(**inputs, output_hidden_states=True)
        outputs = load_bert_encoder(tiny_bert)(**{key: encoded[key] for key in inputs})
    valid = encoded["attention_mask"].bool()  # padded positions are never read
    assert len(outputs.hidden_states) == len(reference.hidden_states) == 4
    for mine, theirs in zip(outputs.hidden_states + (outputs.last_hidden_state,),
                            reference.hidden_states + (reference.last_hidden_state,)):
        bound = float32_chain_bound(TINY_MODEL_TERMS, float(theirs[valid].abs().max()))
        torch.testing.assert_close(mine[valid], theirs[valid], rtol=0, atol=bound)


@pytest.mark.parametrize("layers", ["last", "last4", "mean", 1])
def test_extractor_fast_path_equals_the_transformers_path(tiny_bert, monkeypatch, layers):
    fast = create_extractor("hf_text", model=str(tiny_bert), layers=layers)
    assert isinstance(fast.tokenizer, BertTokenizer)
    transformers_path(monkeypatch)
    slow = create_extractor("hf_text", model=str(tiny_bert), layers=layers)
    assert not isinstance(slow.tokenizer, BertTokenizer)
    for attribute in ("extractor_id", "output_dim", "max_tokens", "contract"):
        assert getattr(fast, attribute) == getattr(slow, attribute), attribute
    items = TEXTS + [None, "  ", "happy " * 80]
    for mine, theirs in zip(fast.extract_batch(items), slow.extract_batch(items)):
        assert mine.missing_reason == theirs.missing_reason and mine.extractor_id == theirs.extractor_id
        np.testing.assert_array_equal(mine.extras.get("token_ids"), theirs.extras.get("token_ids"))
        np.testing.assert_array_equal(mine.times, theirs.times)
        bound = float32_chain_bound(TINY_MODEL_TERMS, float(np.abs(theirs.values).max(initial=0.0)))
        np.testing.assert_allclose(mine.values, theirs.values, rtol=0, atol=bound)


def edited_copy(source: Path, target: Path, config: dict | None = None, remove: str | None = None) -> Path:
    shutil.copytree(source, target)
    if config:
        path = target / "config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | config))
    if remove:
        (target / remove).unlink()
    return target


@pytest.mark.parametrize("config, remove, reason", [
    ({"position_embedding_type": "relative_key"}, None, "position_embedding_type"),
    ({"hidden_act": "gelu_new"}, None, "hidden_act"),
    ({"is_decoder": True}, None, "is_decoder"),
    ({"model_type": "roberta"}, None, "model_type"),
    ({"auto_map": {"AutoModel": "custom.Model"}}, None, "remote code"),
    (None, "tokenizer.json", "no tokenizer.json"),
    (None, "model.safetensors", "no model.safetensors"),
])
def test_unsupported_folders_are_named(tiny_bert, tmp_path, config, remove, reason):
    folder = edited_copy(tiny_bert, tmp_path / "model", config, remove)
    assert reason in fast_path_blocker(str(folder), "float32", False)


def test_precision_remote_code_and_hub_ids_keep_transformers(tiny_bert):
    assert "precision bfloat16" in fast_path_blocker(str(tiny_bert), "bfloat16", False)
    assert "remote code" in fast_path_blocker(str(tiny_bert), "float32", True)
    assert "local folder" in fast_path_blocker("bert-base-uncased", "float32", False)


def test_unsupported_config_falls_back_to_transformers(tiny_bert, tmp_path):
    folder = edited_copy(tiny_bert, tmp_path / "relative", {"position_embedding_type": "relative_key"})
    extractor = create_extractor("hf_text", model=str(folder))
    assert not isinstance(extractor.tokenizer, BertTokenizer)
    assert type(extractor.model).__module__.startswith("transformers.")
    assert extractor.extract("i am so happy").values.shape == (4, 32)


def test_fast_path_never_imports_transformers_models(tiny_bert):
    code = (
        "import sys\n"
        "from affectflow.extractors.base import create_extractor\n"
        f"for model in ({str(tiny_bert)!r}, 'minilm'):\n"
        "    extractor = create_extractor('hf_text', model=model, layers='last')\n"
        "    assert extractor.extract('i am so happy today').values.shape[0] > 0\n"
        "print(sorted(name for name in sys.modules if name in ('transformers.modeling_utils',\n"
        "      'transformers.models.bert.modeling_bert', 'transformers.models.auto.modeling_auto')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_real_minilm_embeddings_and_text_head_equal_transformers(monkeypatch):
    from affectflow.pipeline.label.default_model import HEAD_PATH, TEXT_EXTRACTOR
    from affectflow.pipeline.label.text_head import TextEmotionHead, l2_normalize

    assert fast_path_blocker(resolve_text_model("minilm"), "float32", False) is None
    fast = create_extractor(TEXT_EXTRACTOR["name"], **TEXT_EXTRACTOR["config"])
    assert isinstance(fast.tokenizer, BertTokenizer)
    transformers_path(monkeypatch)
    slow = create_extractor(TEXT_EXTRACTOR["name"], **TEXT_EXTRACTOR["config"])
    fast_sequences, slow_sequences = fast.extract_batch(SENTENCES), slow.extract_batch(SENTENCES)
    for mine, theirs in zip(fast_sequences, slow_sequences):
        np.testing.assert_array_equal(mine.extras["token_ids"], theirs.extras["token_ids"])
    # DefaultLabeler.text_embeddings' rule: the mean of the last layer over the (non-special) tokens.
    mine, theirs = (np.stack([s.utterance() for s in sequences]) for sequences in (fast_sequences, slow_sequences))
    magnitude = max(float(np.abs(s.values).max()) for s in slow_sequences)
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=float32_chain_bound(MINILM_TERMS, magnitude))
    # The head is linear on l2-normalised embeddings u, then a softmax at temperature T, whose probabilities move
    # by at most half the largest logit change: |dp| <= 1/2 * max_c ||W_c|| * ||du|| / T, with ||du|| <=
    # 2 ||de|| / ||e||, plus the head's own float32 rounding of a 384-term sum on each side.
    head = TextEmotionHead.load(HEAD_PATH)
    drift = 2.0 * np.linalg.norm(mine - theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    rounding = float32_sum_bound(384, float((np.abs(head.weight) @ np.abs(l2_normalize(theirs)).T).max()))
    bound = 0.5 * (float(np.linalg.norm(head.weight, axis=1).max()) * float(drift.max()) + rounding) / head.temperature
    difference = np.abs(head.probabilities(mine) - head.probabilities(theirs)).max()
    print(f"embeddings differ by {np.abs(mine - theirs).max():.2e}, probabilities by {difference:.2e}"
          f" (bound {bound:.2e})")
    assert difference <= bound, f"text head probabilities differ by {difference:.2e} > {bound:.2e}"
    assert difference <= 1e-5  # label rows carry 6 decimals: the two paths write the same probabilities to ~5


def test_a_checkpoint_with_missing_weights_is_named_and_left_to_transformers(tiny_bert, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = edited_copy(tiny_bert, tmp_path / "partial")
    weights = load_file(folder / "model.safetensors")
    del weights["encoder.layer.1.intermediate.dense.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"partial/model\.safetensors: not a BERT encoder checkpoint"):
        load_bert_encoder(folder)
    extractor = create_extractor("hf_text", model=str(folder))
    assert not isinstance(extractor.tokenizer, BertTokenizer)


def test_real_minilm_tokenisation_equals_autotokenizer_on_awkward_text():
    from transformers import AutoTokenizer

    folder = resolve_text_model("minilm")
    awkward = ["Café NAÏVE résumé — “quotes” ’tis", "北京欢迎你 and 東京", "emoji 😊🎉 tab\tnew\nline \x00 ctrl",
               "a" * 150 + " supercalifragilisticexpialidocious", "[MASK] [CLS] literal [SEP] tokens", "  spaced   out  ",
               "don't won't y'all 3.14 $5,000 e-mail", "word " * 600]
    for max_length in (8, 512):
        expected = AutoTokenizer.from_pretrained(folder)(awkward, padding=True, truncation=True, max_length=max_length,
                                                         return_special_tokens_mask=True, return_tensors="pt")
        encoded = BertTokenizer(folder)(awkward, max_length=max_length)
        for key in expected:
            assert torch.equal(encoded[key], expected[key]), (max_length, key)
