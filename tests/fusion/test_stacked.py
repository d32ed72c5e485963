"""fusion/stacked.py: each modality-stacked op equals the modules' own forward, masks included."""

from __future__ import annotations

import pytest
import torch

from affectflow.fusion.layers import CrossModalBlock, FeedForward, MaskedConv1d, MaskedMultiheadAttention, PreLNTransformerBlock
from affectflow.fusion.stacked import (batched_affine, dropout, list_affine, stacked_attention, stacked_cross_modal, stacked_feed_forward, stacked_layer_norm,
                                       stacked_linear, stacked_masked_conv1d, transformer_block)

from factories.tolerances import FUSION_RELATIVE
pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation

M, B, T, D = 3, 4, 5, 8


@pytest.fixture()
def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(M, B, T, D, generator=generator)
    y = torch.randn(M, B, T + 2, D, generator=generator)
    mask = torch.rand(M, B, T, generator=generator) > 0.3
    mask[:, 0] = False  # a sample with no valid position at all (no keys: output must be exactly zero)
    y_mask = torch.rand(M, B, T + 2, generator=generator) > 0.3
    y_mask[1, 2] = False
    return x, y, mask, y_mask


def test_linear_layer_norm_feed_forward(data):
    x = data[0]
    torch.manual_seed(0)
    linears = [torch.nn.Linear(D, 6) for _ in range(M)]
    norms = [torch.nn.LayerNorm(D) for _ in range(M)]
    for norm in norms:
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    blocks = [FeedForward(D, 16) for _ in range(M)]
    torch.testing.assert_close(stacked_linear(x, linears), torch.stack([f(x[i]) for i, f in enumerate(linears)]))
    torch.testing.assert_close(stacked_layer_norm(x, norms), torch.stack([f(x[i]) for i, f in enumerate(norms)]))
    torch.testing.assert_close(stacked_feed_forward(x, blocks, False), torch.stack([f(x[i]) for i, f in enumerate(blocks)]))


def test_masked_conv1d_as_unfolded_matmul(data):
    x, _, mask, _ = data
    torch.manual_seed(0)
    convs = [MaskedConv1d(D, 6, kernel_size=k) for k in (3, 3, 3)]
    x = x.clone()
    x[~mask] = float("nan")  # invalid frames never leak
    expected = torch.stack([c(x[i], mask[i]) for i, c in enumerate(convs)])
    torch.testing.assert_close(stacked_masked_conv1d(x, mask, convs), expected)
    five = [MaskedConv1d(D, D, kernel_size=5)]
    torch.testing.assert_close(stacked_masked_conv1d(x[:1], mask[:1], five)[0], five[0](x[0], mask[0]))


def test_attention_self_and_cross_match_masked_multihead_attention(data):
    x, y, mask, y_mask = data
    torch.manual_seed(0)
    modules = [MaskedMultiheadAttention(D, 2) for _ in range(M)]
    self_expected = torch.stack([a(x[i], x[i], x[i], key_mask=mask[i], query_mask=mask[i]) for i, a in enumerate(modules)])
    got = stacked_attention([a.attention for a in modules], x, None, mask, mask, training=False)
    torch.testing.assert_close(got, self_expected)
    assert bool((got[:, 0] == 0).all())
    cross_expected = torch.stack([a(x[i], y[i], y[i], key_mask=y_mask[i], query_mask=mask[i]) for i, a in enumerate(modules)])
    torch.testing.assert_close(stacked_attention([a.attention for a in modules], x, y, y_mask, mask, training=False),
                               cross_expected)


def test_cross_modal_and_transformer_blocks(data):
    x, y, mask, y_mask = data
    torch.manual_seed(0)
    blocks = [CrossModalBlock(D, 2) for _ in range(M)]
    expected = torch.stack([b(x[i], y[i], mask[i], y_mask[i]) for i, b in enumerate(blocks)])
    torch.testing.assert_close(stacked_cross_modal(blocks, x, y, mask, y_mask, training=False), expected)
    block = PreLNTransformerBlock(D, 2)
    torch.testing.assert_close(transformer_block(block, x[0], mask[0], training=False), block(x[0], mask[0]))


def test_gradients_match(data):
    x, _, mask, _ = data
    torch.manual_seed(0)
    convs = [MaskedConv1d(D, D, 3) for _ in range(M)]
    stacked_masked_conv1d(x, mask, convs).pow(2).sum().backward()
    stacked_grads = [c.conv.weight.grad.clone() for c in convs]
    for c in convs:
        c.zero_grad()
    sum(c(x[i], mask[i]).pow(2).sum() for i, c in enumerate(convs)).backward()
    for c, grad in zip(convs, stacked_grads):
        torch.testing.assert_close(grad, c.conv.weight.grad)


@pytest.mark.parametrize("bias", [True, False])
def test_batched_affine_same_with_one_thread_and_with_several(bias):
    """Several threads: one mm per group (`_group_matmul`); one thread: bmm. Same values and gradients."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 7, 6, generator=generator, requires_grad=True)
    weight = torch.randn(3, 4, 6, generator=generator, requires_grad=True)
    b = torch.randn(3, 4, generator=generator, requires_grad=True) if bias else None
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            out = batched_affine(x, weight, b)
            grads = torch.autograd.grad(out.pow(2).sum(), [x, weight] + ([b] if bias else []))
            results.append((out, grads))
    finally:
        torch.set_num_threads(threads)
    expected = torch.einsum("mbti,moi->mbto", x, weight) + (b[:, None, None] if bias else 0)
    torch.testing.assert_close(results[0][0], expected, rtol=FUSION_RELATIVE, atol=FUSION_RELATIVE)
    torch.testing.assert_close(results[1][0], results[0][0], rtol=FUSION_RELATIVE, atol=FUSION_RELATIVE)
    for one, several in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(several, one, rtol=FUSION_RELATIVE, atol=FUSION_RELATIVE)


def test_list_affine_matches_linear_without_stacking():
    """One mm per group from the modules' own weights: values and every gradient as nn.Linear gives them."""
    generator = torch.Generator().manual_seed(4)
    layers = [torch.nn.Linear(6, 4) for _ in range(3)]
    x = torch.randn(3, 5, 2, 6, generator=generator, requires_grad=True)
    out = list_affine(x, [layer.weight for layer in layers], [layer.bias for layer in layers])
    expected = torch.stack([layer(x[g]) for g, layer in enumerate(layers)])
    torch.testing.assert_close(out, expected)
    weights = torch.randn(out.shape, generator=generator)
    parameters = [x] + [p for layer in layers for p in (layer.weight, layer.bias)]
    fast = torch.autograd.grad((out * weights).sum(), parameters)
    slow = torch.autograd.grad((expected * weights).sum(), parameters)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b)


def test_dropout_keeps_with_probability_one_minus_p_and_rescales():
    x = torch.ones(200_000)
    torch.manual_seed(0)
    out = dropout(x, 0.3, True)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.7))
    assert dropout(x, 0.3, False) is x and dropout(x, 0.0, True) is x
    assert not dropout(x, 1.0, True).any()
