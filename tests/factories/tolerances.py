"""Stated bounds the numeric tests derive their tolerances from (instead of constants tuned on one CPU).

A float32 sum of n terms in another order (another CPU's vector width, another thread split, a padded
batch) differs by at most about n * u * sum|x_i| (u = 2^-24, Higham's gamma_n bound to first order), for
each of the two evaluations compared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
FLOAT64_UNIT_ROUNDOFF = 2.0 ** -53


def float32_sum_bound(terms: int, magnitude: float, depth: int = 1) -> float:
    """Largest |a - b| between two float32 evaluations of a result built from `depth` chained sums of
    `terms` terms each, whose absolute terms sum to at most `magnitude` (first-order, both sides rounding)."""
    return 2.0 * depth * terms * FLOAT32_UNIT_ROUNDOFF * magnitude


def float32_mean_bound(terms: int, magnitude: float) -> float:
    """Largest |a - b| between two float32 means of `terms` values of absolute value <= `magnitude`."""
    return float32_sum_bound(terms, magnitude * terms) / terms


# MTCNN (facenet-pytorch's networks). O-Net's outputs come through chained float32 sums of 27 + 288 + 576 +
# 256 (convolutions) + 1152 + 256 (dense) terms; to first order another summation order changes them by at
# most that many unit roundoffs of the absolute terms of the last sum, on each side compared.
MTCNN_RELATIVE = 2.0 * (27 + 288 + 576 + 256 + 1152 + 256) * FLOAT32_UNIT_ROUNDOFF  # 3.0e-4
MTCNN_FACE_PX = 200.0
"""Largest face box in the test frames (240x320 and the 640x360 clips), pixels."""
MTCNN_PX = MTCNN_RELATIVE * 1.0 * MTCNN_FACE_PX
"""Boxes and landmarks: O-Net's regressions are fractions of the box whose last sum's absolute terms add
to <= 1 (0.87 measured on random crops), times the box size: 0.061 px. Seen: 1-2 float32 ulps (~3e-5 px)."""
MTCNN_PROBABILITY = MTCNN_RELATIVE * 8.0 / 4.0
"""Face probabilities: the face logit's last sum has absolute terms adding to <= 8 (7.4 measured on random
crops); a softmax of two moves by at most a quarter of the logit difference: 6.1e-4."""
MTCNN_OUTPUT_SCALE = 8.0
"""Absolute value of any raw P/R/O-Net output (logits, regressions) on the test inputs is below this."""

FER_FEATURES_PER_PX = 1.2
"""How far FER's pooled features (scale ~1) move per pixel that the five landmarks move, at most: measured
on the talking-face frames by moving all landmarks 0.001-0.1 px in 8 directions (0.11 at 0.1 px, 0.038 at
0.03 px; test_job_equivalence measures it again on every run). A move well below a pixel still flips
crop pixels by one grey level, so there is no float argument for it."""
FACE_FEATURE_TOLERANCE = FER_FEATURES_PER_PX * MTCNN_PX
"""FER features of two runs whose MTCNN landmarks may differ by float rounding (<= MTCNN_PX): 0.073."""


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Within the block torch runs `count` intra-op threads (restored after): both sides of an equivalence
    test on the same thread count, e.g. the one a worker process or Ray actor uses."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def float32_chain_bound(terms: int, magnitude: float) -> float:
    """|a - b| of two float32 evaluations of a network whose layers' sums have `terms` terms in all (summed
    along the chain), outputs of absolute value <= `magnitude`: to first order each layer adds n * u of its
    absolute terms, which normalised layers keep at the output's scale."""
    return float32_sum_bound(terms, max(1.0, magnitude))


TINY_MODEL_TERMS = 2048
"""Tiny HF models (factories.extractors: 3 layers, hidden 32, FFN 64, <= 150 frames; audio: a 7-layer conv
encoder of kernels 10 and 3 x 32 channels, a 16-tap positional conv): per layer 32 (q/k/v) + 16 (scores) +
150 (mix) + 32 (out) + 32 + 64 (FFN) ~ 330 terms, x 3 = 980, + conv encoder 10 + 6 x 96 + 256 = 840."""
FER_TERMS = 9 + 72 + 50 + 82 + 146 + 274 + 1152 + 16
"""mini-Xception on 64x64: two 3x3 convolutions (1 and 8 channels), four separable residual blocks (depthwise
9 + pointwise C_in + depthwise 9 + pointwise C_out + the 1x1 shortcut C_in, C = 8..128), the last 3x3 x 128
convolution, global average pooling of 4x4."""

TINY_FUSION_TERMS = 1024
"""Fusion test models: widths <= 32, <= 12 frames, <= 4 blocks each summing ~ 32 (projections) + 12
(attention mix) + 32 + 64 (FFN) terms, and their gradients summing over the batch (<= 8 x 12 positions)."""
FUSION_RELATIVE = float32_sum_bound(TINY_FUSION_TERMS, 1.0)
"""Two float32 evaluations of a tiny fusion model (or its gradients) in another order agree within this,
relative to the values' scale (rtol), and absolutely for values below 1 (atol): 1.2e-4."""


MINILM_TERMS = 6 * (384 + 32 + 128 + 384 + 384 + 384 + 1536 + 384) + 384
"""all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads of 32, FFN 1536) on <= 128 tokens, the chain of sums per layer:
q/k/v 384, scores 32, attention mix 128, output 384, LayerNorm 384, FFN 384 + 1536, LayerNorm 384; + the
embeddings' LayerNorm 384 (float32_chain_bound of it: 2.6e-3 relative)."""
