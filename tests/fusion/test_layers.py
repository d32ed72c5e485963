"""Shared fusion layers: masked attention without NaNs, positions, pre-LN blocks, masked Conv1d."""

from __future__ import annotations

import math

import pytest
import torch

from affectflow.fusion import ModalityBatch
from affectflow.fusion.layers import (CrossModalBlock, LearnedPositionalEmbedding, MaskedConv1d,
                                      MaskedMultiheadAttention, PreLNTransformerBlock, SinusoidalPositionalEmbedding,
                                      TransformerEncoder, modality_readout, safe_key_mask, sinusoidal_positions)

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation


def test_masked_attention_matches_torch_and_handles_empty_rows():
    torch.manual_seed(0)
    attention = MaskedMultiheadAttention(8, 2).eval()
    query, key = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    expected, _ = attention.attention(query, key, key, need_weights=False)
    torch.testing.assert_close(attention(query, key), expected)
    key_mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5])
    out, weights = attention(query, key, key_mask=key_mask, return_weights=True)
    assert torch.isfinite(out).all() and (out[2] == 0).all() and (weights[2] == 0).all()
    assert (weights[1, :, 2:] == 0).all()
    scrambled = key.clone()
    scrambled[1, 2:] = 1e4
    scrambled[2] = -1e4
    torch.testing.assert_close(attention(query, scrambled, key_mask=key_mask), out)
    query_mask = torch.tensor([[True, True, False, False]] * 3)
    assert (attention(query, key, key_mask=key_mask, query_mask=query_mask)[:, 2:] == 0).all()


def test_safe_key_mask_opens_one_slot_for_empty_rows():
    usable, has_key = safe_key_mask(torch.tensor([[False, False], [False, True]]))
    assert usable.tolist() == [[True, False], [False, True]] and has_key.tolist() == [False, True]


def test_sinusoidal_positions_follow_vaswani():
    table = sinusoidal_positions(6, 8)
    position, i = 3, 2
    assert math.isclose(float(table[position, 2 * i]), math.sin(position / 10000 ** (2 * i / 8)), rel_tol=1e-5)
    assert math.isclose(float(table[position, 2 * i + 1]), math.cos(position / 10000 ** (2 * i / 8)), rel_tol=1e-5)
    x = torch.zeros(2, 6, 8)
    torch.testing.assert_close(SinusoidalPositionalEmbedding(8)(x)[1], table)


def test_learned_positions_refuse_long_sequences():
    embedding = LearnedPositionalEmbedding(8, max_length=4)
    assert embedding(torch.zeros(1, 4, 8)).shape == (1, 4, 8)
    with pytest.raises(ValueError, match="max_length=4"):
        embedding(torch.zeros(1, 5, 8))


def test_blocks_ignore_padding_and_zero_it():
    torch.manual_seed(0)
    for block in (PreLNTransformerBlock(8, 2), TransformerEncoder(8, 2, num_layers=2)):
        block.eval()
        x = torch.randn(2, 5, 8)
        mask = torch.tensor([[True, True, True, False, False], [True] * 5])
        out = block(x, mask)
        assert (out[0, 3:] == 0).all()
        torch.testing.assert_close(block(x[:1, :3], mask[:1, :3]), out[:1, :3])
    cross = CrossModalBlock(8, 2).eval()
    y = torch.randn(2, 3, 8)
    y_mask = torch.tensor([[True, False, False], [False, False, False]])
    out = cross(x, y, mask, y_mask)
    changed = y.clone()
    changed[0, 1:] = 50.0
    changed[1] = -50.0
    torch.testing.assert_close(cross(x, changed, mask, y_mask), out)
    assert (out[0, 3:] == 0).all()


def test_masked_conv_does_not_leak_invalid_frames():
    torch.manual_seed(0)
    conv = MaskedConv1d(4, 6, kernel_size=3)
    x = torch.randn(1, 5, 4)
    mask = torch.tensor([[True, True, False, True, True]])
    out = conv(x, mask)
    changed = x.clone()
    changed[0, 2] = 1e3
    torch.testing.assert_close(conv(changed, mask), out)
    assert out.shape == (1, 5, 6) and (out[0, 2] == 0).all()
    with pytest.raises(ValueError, match="odd kernel_size"):
        MaskedConv1d(4, 6, kernel_size=2)


def test_modality_readout_pools_or_keeps_positions():
    features = {"a": torch.arange(6.0).reshape(2, 3, 1)}
    masks = {"a": torch.tensor([[True, True, False], [True, True, True]])}
    batch = ModalityBatch(features, masks, torch.tensor([[True], [False]]), modalities=("a",))
    pooled, present = modality_readout(batch, "a", features["a"], per_position=False)
    assert pooled[:, 0].tolist() == [0.5, 0.0] and present.tolist() == [True, False]
    kept, valid = modality_readout(batch, "a", features["a"], per_position=True)
    assert kept[0, :, 0].tolist() == [0.0, 1.0, 0.0] and not valid[1].any()
