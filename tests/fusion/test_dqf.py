"""DQF maths: frame masking (Sec. 3.1), Q-UA query update (Eq. 3-4), Q-CA (Eq. 5-8), heads (Eq. 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectflow.fusion import ModalityBatch, TaskSpec, create_fusion
from affectflow.fusion.dqf import (DQF, QueryCrossAttention, QueryCrossLayer, QueryUpdate, dqf_frame_masking,
                                   sequence_span)
from factories.fusion import presence_patterns, random_batch
from factories.tolerances import FUSION_RELATIVE

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

DIMS = {"a": 6, "t": 5, "v": 4}


def tiny(kind: str = "classification", level: str = "utterance", modalities=("a", "t", "v"), **overrides) -> DQF:
    spec = TaskSpec(kind, {m: DIMS[m] for m in modalities}, class_names=("x", "y", "z") if kind == "classification" else (),
                    level=level, modalities=modalities)
    torch.manual_seed(0)
    model = create_fusion("dqf", spec, **{**DQF.tiny_config(), **overrides})
    return model.eval()


def full_batch(batch_size: int, lengths: dict[str, int], seed: int = 0) -> ModalityBatch:
    spec = TaskSpec("regression", DIMS)
    return random_batch(spec, torch.ones(batch_size, 3, dtype=torch.bool), torch.Generator().manual_seed(seed),
                        lengths=lengths, ragged=False)


def test_paper_defaults():
    spec = TaskSpec("regression", DIMS)
    model = DQF(spec)
    assert model.hyperparameters["num_layers"] == 6 and model.hyperparameters["num_heads"] == 4
    assert len(model.encoders["a"].layers) == 6 and len(model.cross["at"].forward_direction.layers) == 6
    assert DQF.recommended_optimizer["name"] == "sgd" and DQF.recommended_optimizer["lr"] == 1e-5
    assert DQF.recommended_optimizer["batch_size"] == 64


def test_frame_masking_zeroes_a_per_batch_ratio_of_valid_frames():
    batch = full_batch(8, {"a": 40, "t": 40, "v": 40})
    batch.masks["v"][:, 30:] = False  # padding is never "masked"
    masked = dqf_frame_masking(batch, np.random.default_rng(3))
    for m in batch.modalities:
        hit = (masked.features[m] == 0).all(-1) & batch.valid(m)
        fraction = hit.sum(1).float() / batch.valid(m).sum(1)
        # one ratio per modality and mini-batch: every sample loses the same share (up to rounding)
        assert fraction.max() - fraction.min() <= 1.0 / 30 + 1e-6
        assert torch.equal(masked.masks[m], batch.masks[m])  # the model is not told
        kept = ~hit
        assert torch.equal(masked.features[m][kept], batch.features[m][kept])
    assert torch.equal(masked.features["v"][:, 30:], batch.features["v"][:, 30:])
    marked = dqf_frame_masking(batch, np.random.default_rng(3), mark_invalid=True)
    for m in batch.modalities:
        assert torch.equal(marked.features[m], masked.features[m])
        assert torch.equal(marked.masks[m], batch.masks[m] & ~((masked.features[m] == 0).all(-1) & batch.valid(m)))


def test_frame_masking_ratio_is_uniform_over_batches():
    batch = full_batch(4, {"a": 20, "t": 20, "v": 20})
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(200):
        masked = dqf_frame_masking(batch, rng)
        ratios.append(float((masked.features["a"] == 0).all(-1).float().mean()))
    ratios = np.array(ratios)
    assert 0.4 < ratios.mean() < 0.6 and ratios.min() < 0.1 and ratios.max() > 0.9
    torch_masked = dqf_frame_masking(batch, torch.Generator().manual_seed(1))
    assert torch_masked.features["a"].shape == batch.features["a"].shape
    with pytest.raises(TypeError):
        dqf_frame_masking(batch, 42)


def test_sequence_span_ends_at_last_valid_frame():
    valid = torch.tensor([[True, False, True, False], [False, False, False, False], [True, True, True, True]])
    expected = torch.tensor([[True, True, True, False], [False] * 4, [True] * 4])
    assert torch.equal(sequence_span(valid), expected)


def test_query_update_is_eq3():
    torch.manual_seed(0)
    update = QueryUpdate(8, 2, dropout=0.0).eval()
    query = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.bool)
    attention, _ = update.attention.attention(query, query, query, need_weights=False)
    torch.testing.assert_close(update(query, mask), update.norm(attention + query))


def test_qca_inner_attention_takes_values_from_the_query():
    """Attention(Q, H_a, Q): H_a only shapes the weights, so a time-constant H_a gives uniform weights
    and the layer output cannot depend on which constant it is."""
    torch.manual_seed(0)
    layer = QueryCrossLayer(8, 2, dropout=0.0).eval()
    z, h_b = torch.randn(1, 4, 8), torch.randn(1, 3, 8)
    span_a, span_b = torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool)
    first = layer(z, torch.randn(1, 1, 8).expand(1, 4, 8), span_a, h_b, span_b)
    second = layer(z, torch.randn(1, 1, 8).expand(1, 4, 8), span_a, h_b, span_b)
    torch.testing.assert_close(first, second)
    varying = layer(z, torch.randn(1, 4, 8), span_a, h_b, span_b)
    assert not torch.allclose(first, varying)


def test_qca_pooling_equals_eq7_then_eq8_for_aligned_inputs():
    torch.manual_seed(0)
    cross = QueryCrossAttention(8, 2, num_layers=2, max_length=8, dropout=0.0).eval()
    h_a, h_b = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    span = torch.ones(2, 5, dtype=torch.bool)
    pooled = cross(h_a, span, h_b, span, per_position=False)  # AvgPool per direction, then Linear
    per_position = cross(h_a, span, h_b, span, per_position=True)  # Linear(concat) per frame (Eq. 7)
    torch.testing.assert_close(pooled, per_position.mean(1), rtol=FUSION_RELATIVE, atol=FUSION_RELATIVE)  # then AvgPool (Eq. 8)


def test_queries_are_injected_before_every_layer():
    model = tiny()
    batch = full_batch(2, {"a": 3, "t": 3, "v": 3})
    encoder = model.encoders["a"]
    valid = batch.valid("a")
    span = sequence_span(valid)
    reference = encoder(batch.features["a"], valid, span)
    with torch.no_grad():
        encoder.queries.weight.add_(1.0)
    assert not torch.allclose(encoder(batch.features["a"], valid, span), reference)


def test_granularity_heads_give_the_eq1_aux_losses():
    model = tiny().train()
    batch = full_batch(4, {"a": 3, "t": 2, "v": 4})
    targets = torch.tensor([0, 1, 2, 1])
    output = model(batch, targets)
    assert set(output.aux_losses) == {f"head_{g}" for g in ("a", "t", "v", "at", "av", "tv", "atv")}
    assert all(model.loss_weight(name) == 1.0 for name in output.aux_losses)
    assert output.embedding.shape == (4, 7 * 16)
    assert model(batch).aux_losses == {}


def test_missing_frames_inside_the_span_act_as_zero_vectors():
    """An invalid frame is treated as the paper's zero-vector missing frame; trailing padding is ignored."""
    model = tiny()
    batch = full_batch(1, {"a": 4, "t": 3, "v": 2})
    masks = dict(batch.masks)
    masks["a"] = torch.tensor([[True, False, True, True]])
    marked = ModalityBatch(dict(batch.features), masks, batch.presence)
    zeroed_features = dict(batch.features)
    zeroed_features["a"] = batch.features["a"].clone()
    zeroed_features["a"][:, 1] = 0.0
    zeroed = ModalityBatch(zeroed_features, dict(batch.masks), batch.presence)
    padded_features = {m: torch.cat([x, torch.randn(1, 3, x.shape[-1])], dim=1) for m, x in batch.features.items()}
    padded_masks = {m: torch.cat([x, torch.zeros(1, 3, dtype=torch.bool)], dim=1) for m, x in batch.masks.items()}
    padded = ModalityBatch(padded_features, padded_masks, batch.presence)
    with torch.no_grad():
        reference = model(batch).logits
        torch.testing.assert_close(model(marked).logits, model(zeroed).logits)
        torch.testing.assert_close(model(padded).logits, reference, rtol=FUSION_RELATIVE, atol=FUSION_RELATIVE)


def test_two_modalities_and_conversation_level():
    model = tiny(modalities=("a", "t"))
    assert model.granularities == ["a", "t", "at", "all"]
    spec = model.task_spec
    batch = random_batch(spec, presence_patterns(2), torch.Generator().manual_seed(0), lengths={"a": 3, "t": 2})
    assert model(batch).logits.shape == (3, 3)
    conversation = tiny(kind="regression", level="conversation")
    batch = random_batch(conversation.task_spec, presence_patterns(3), torch.Generator().manual_seed(0), lengths=5)
    assert conversation(batch).value.shape == (7, 5)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="at least two modalities"):
        tiny(modalities=("a",))
    model = tiny()
    with pytest.raises(ValueError, match="max_length"):
        model(full_batch(1, {"a": 40, "t": 2, "v": 2}))
