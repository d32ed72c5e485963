"""Baselines: late fusion averages present modalities, early fusion zero-fills + presence bits, MulT streams."""

from __future__ import annotations

import pytest
import torch

from affectflow.fusion import ModalityBatch, TaskSpec, create_fusion, masked_mean
from affectflow.fusion.baselines import EarlyFusion, LateFusion, MulT
from factories.fusion import presence_patterns, random_batch

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

DIMS = {"a": 6, "t": 5, "v": 4}


def build(name: str, cls, level: str = "utterance", modalities=("a", "t", "v")):
    spec = TaskSpec("classification", {m: DIMS[m] for m in modalities}, class_names=("x", "y"), level=level,
                    modalities=modalities)
    torch.manual_seed(0)
    return create_fusion(name, spec, **cls.tiny_config()).eval()


def batch_for(model, lengths=None, seed: int = 0) -> ModalityBatch:
    patterns = presence_patterns(len(model.task_spec.modalities))
    return random_batch(model.task_spec, patterns, torch.Generator().manual_seed(seed),
                        lengths=lengths or {"a": 4, "t": 3, "v": 5})


def test_late_fusion_averages_the_present_modalities():
    model = build("late_fusion", LateFusion)
    batch = batch_for(model)
    logits = model(batch).logits
    per_modality = {m: model.heads[m](model.encoders[m](masked_mean(batch.features[m], batch.valid(m))))
                    for m in ("a", "t", "v")}
    for index, pattern in enumerate(presence_patterns(3)):
        present = [m for m, keep in zip(("a", "t", "v"), pattern) if keep]
        expected = sum(per_modality[m][index] for m in present) / len(present)
        torch.testing.assert_close(logits[index], expected)


def test_early_fusion_zero_fills_absent_modalities_and_adds_presence_bits():
    model = build("early_fusion", EarlyFusion)
    batch = batch_for(model)
    parts = [masked_mean(batch.features[m], batch.valid(m)) * batch.present(m)[:, None] for m in ("a", "t", "v")]
    bits = batch.presence.float()
    expected = model.head(model.body(torch.cat(parts + [bits], dim=-1)))
    torch.testing.assert_close(model(batch).logits, expected)
    assert model.body[0].in_features == sum(DIMS.values()) + 3


def test_conversation_level_baselines_predict_per_position():
    for name, cls in (("late_fusion", LateFusion), ("early_fusion", EarlyFusion), ("mult", MulT)):
        model = build(name, cls, level="conversation")
        batch = random_batch(model.task_spec, torch.ones(2, 3, dtype=torch.bool), torch.Generator().manual_seed(0),
                             lengths=5, ragged=False)
        reference = model(batch).logits
        assert reference.shape == (2, 5, 2)
        changed_features = dict(batch.features)
        changed_features["a"] = batch.features["a"].clone()
        changed_features["a"][:, 2] += torch.randn(DIMS["a"])
        changed = model(ModalityBatch(changed_features, batch.masks, batch.presence)).logits
        moved = (changed - reference).abs().sum(-1).sum(0) > 1e-6
        if name == "mult":  # attention mixes the utterances of a dialogue
            assert moved.sum() > 1
        else:  # position-wise baselines only move the edited utterance
            assert moved.tolist() == [False, False, True, False, False]


def test_mult_builds_one_stream_per_directed_pair_and_uses_order():
    model = build("mult", MulT)
    assert sorted(model.cross) == ["a_from_t", "a_from_v", "t_from_a", "t_from_v", "v_from_a", "v_from_t"]
    batch = random_batch(model.task_spec, torch.ones(1, 3, dtype=torch.bool), torch.Generator().manual_seed(0),
                         lengths=4, ragged=False)
    reversed_batch = ModalityBatch({m: x.flip(1) for m, x in batch.features.items()}, batch.masks, batch.presence)
    assert not torch.allclose(model(batch).logits, model(reversed_batch).logits)  # positions matter
    two = build("mult", MulT, modalities=("a", "t"))
    assert sorted(two.cross) == ["a_from_t", "t_from_a"]
    assert two(batch_for(two)).logits.shape == (3, 2)
    with pytest.raises(ValueError, match="at least two modalities"):
        build("mult", MulT, modalities=("a",))


def test_mult_ignores_an_absent_source():
    """A sample whose only other modalities are absent gets the same output whatever they contain,
    and the same output as a model fed a batch without them at all."""
    model = build("mult", MulT)
    batch = batch_for(model)
    index = 0  # {a} only
    alone = ModalityBatch({m: x[index:index + 1] for m, x in batch.features.items()},
                          {m: x[index:index + 1] for m, x in batch.masks.items()}, batch.presence[index:index + 1])
    noisy = ModalityBatch({m: x * 1000 if m != "a" else x for m, x in alone.features.items()}, alone.masks, alone.presence)
    torch.testing.assert_close(model(noisy).logits, model(alone).logits)
