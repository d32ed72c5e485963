"""Grouped layers (fusion/grouped.py) equal their per-module counterparts in fusion/layers.py."""

from __future__ import annotations

import pytest
import torch

from affectflow.fusion.grouped import (GroupedAttentionMask, StackedParameters, bank_attention, bank_layer_norm,
                                       bank_pre_ln_block, pad_time)
from affectflow.fusion.layers import MaskedMultiheadAttention, PreLNTransformerBlock

from factories.tolerances import FUSION_RELATIVE
pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

TOLERANCE = {"rtol": FUSION_RELATIVE, "atol": FUSION_RELATIVE}  # grouped vs per-module: sums reordered


def masks(groups: int, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """[G, B, T] bool with ragged rows and one all-False row per group."""
    keep = torch.randint(1, length + 1, (groups, batch_size), generator=generator)
    mask = torch.arange(length)[None, None, :] < keep[..., None]
    mask[:, -1] = False
    return mask


@pytest.mark.parametrize("key_length", [1, 5])
def test_bank_attention_equals_masked_multihead_attention(key_length):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    groups, batch_size, query_length, dim = 3, 4, 6, 8
    attentions = [MaskedMultiheadAttention(dim, 2) for _ in range(groups)]
    query = torch.randn(groups, batch_size, query_length, dim, generator=generator)
    key = torch.randn(groups, batch_size, key_length, dim, generator=generator)
    value = torch.randn(groups, batch_size, key_length, dim, generator=generator)
    key_mask = masks(groups, batch_size, key_length, generator)
    query_mask = masks(groups, batch_size, query_length, generator)
    # the bank addresses sub-modules by name: wrap each attention as the sub-module "attention" of a holder
    holders = [torch.nn.ModuleDict({"attention": a}) for a in attentions]
    bank = StackedParameters([holders])
    grouped = bank_attention(bank, 0, "attention", query, key, value, GroupedAttentionMask.build(key_mask, query_mask))
    for g, attention in enumerate(attentions):
        expected = attention(query[g], key[g], value[g], key_mask=key_mask[g], query_mask=query_mask[g])
        torch.testing.assert_close(grouped[g], expected, **TOLERANCE)


def test_bank_pre_ln_block_and_layer_norm_equal_the_modules():
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    blocks = [PreLNTransformerBlock(8, 2).eval() for _ in range(2)]
    for block in blocks:  # non-trivial affine parameters
        torch.nn.init.normal_(block.norm_attention.weight)
        torch.nn.init.normal_(block.norm_ff.bias)
    x = torch.randn(2, 3, 5, 8, generator=generator)
    mask = masks(2, 3, 5, generator)
    bank = StackedParameters([blocks])
    grouped = bank_pre_ln_block(bank, 0, x, mask, GroupedAttentionMask.build(mask, mask))
    normed = bank_layer_norm(bank, 0, "norm_ff", x)
    for g, block in enumerate(blocks):
        torch.testing.assert_close(grouped[g], block(x[g], mask[g]), **TOLERANCE)
        torch.testing.assert_close(normed[g], block.norm_ff(x[g]), **TOLERANCE)


def test_stacked_parameters_pass_gradients_to_every_module():
    linears = [[torch.nn.Linear(3, 2) for _ in range(2)] for _ in range(2)]  # 2 layers x 2 groups
    bank = StackedParameters(linears)
    (bank(0, "weight").sum() + 2 * bank(1, "weight").sum()).backward()
    assert all(torch.equal(linears[0][g].weight.grad, torch.ones(2, 3)) for g in range(2))
    assert all(torch.equal(linears[1][g].weight.grad, torch.full((2, 3), 2.0)) for g in range(2))


def test_pad_time_pads_features_with_zeros_and_masks_with_false():
    x, mask = torch.ones(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)
    assert pad_time(x, 3) is x
    padded, padded_mask = pad_time(x, 5), pad_time(mask, 5)
    assert padded.shape == (2, 5, 4) and torch.all(padded[:, 3:] == 0) and torch.all(padded[:, :3] == 1)
    assert padded_mask.dtype == torch.bool and not padded_mask[:, 3:].any() and padded_mask[:, :3].all()
