"""The product of experts: the prior is counted once, unsure experts do not drown sure ones, and a small change
in one expert's probabilities moves the fused result by at most `fused_change_bound`."""

from __future__ import annotations

import numpy as np
import pytest

from affectflow.pipeline.label.experts import (EXPERT_SMOOTHING, fused_change_bound, pooled_prior,
                                                product_of_experts, smooth_posterior)

pytestmark = pytest.mark.numeric

PRIOR = np.array([0.5, 0.3, 0.2])
FLOAT64_SLACK = 1e-12
"""float64 rounding of a log / exp / normalisation over a handful of terms (~10 * 2^-53 relative, scale 1)."""


def log_odds(probabilities: np.ndarray) -> np.ndarray:
    """Every pairwise log-odds log P(c) / P(k) [C, C]."""
    logs = np.log(probabilities)
    return logs[:, None] - logs[None, :]


def test_one_expert_under_the_target_prior_is_its_smoothed_posterior():
    posterior = np.array([0.2, 0.7, 0.1])
    fused = product_of_experts({"t": posterior}, {"t": PRIOR}, PRIOR)
    np.testing.assert_allclose(fused, (1 - EXPERT_SMOOTHING) * posterior + EXPERT_SMOOTHING / 3, atol=FLOAT64_SLACK)
    # the smoothing moves a single expert's answer by at most eps (absolute)
    assert np.abs(fused - posterior).max() <= EXPERT_SMOOTHING


def test_shared_prior_gives_the_product_over_the_prior_to_the_m_minus_1():
    experts = {"a": np.array([0.6, 0.3, 0.1]), "t": np.array([0.3, 0.5, 0.2]), "v": np.array([0.2, 0.2, 0.6])}
    smoothed = {m: smooth_posterior(p) for m, p in experts.items()}
    expected = smoothed["a"] * smoothed["t"] * smoothed["v"] / PRIOR ** 2
    fused = product_of_experts(experts, {m: PRIOR for m in experts}, PRIOR)
    np.testing.assert_allclose(fused, expected / expected.sum(), atol=FLOAT64_SLACK)


def test_an_unsure_expert_leaves_a_sure_one_alone():
    sure = np.array([0.05, 0.9, 0.05])
    unsure = PRIOR.copy()  # says nothing beyond its prior
    fused = product_of_experts({"t": sure, "a": unsure}, {"t": PRIOR, "a": PRIOR}, PRIOR)
    alone = product_of_experts({"t": sure}, {"t": PRIOR}, PRIOR)
    # The unsure expert's smoothed ratio is (1 - eps) + eps / (C pi(c)): the same for every class up to
    # log(1 + eps / (C min pi)) <= eps / (C min pi) in log-odds, hence at most a quarter of it in probability.
    spread = EXPERT_SMOOTHING / (3 * PRIOR.min())
    assert np.abs(log_odds(fused) - log_odds(alone)).max() <= spread
    assert np.abs(fused - alone).max() <= spread / 4
    assert np.abs(alone - sure).max() <= EXPERT_SMOOTHING


def test_expert_priors_are_divided_out_and_the_target_prior_counted_once():
    uniform = np.full(3, 1 / 3)
    # An expert trained under a uniform prior that is itself flat says nothing: the target prior remains.
    np.testing.assert_allclose(product_of_experts({"a": uniform}, {"a": uniform}, PRIOR), PRIOR, atol=FLOAT64_SLACK)
    # Its evidence is re-weighted onto the target prior: p ∝ pi(c) * p'_a(c) / (1/3).
    evidence = np.array([0.2, 0.2, 0.6])
    expected = PRIOR * smooth_posterior(evidence)
    np.testing.assert_allclose(product_of_experts({"a": evidence}, {"a": uniform}, PRIOR), expected / expected.sum(),
                               atol=FLOAT64_SLACK)


def test_a_change_in_a_near_zero_probability_moves_the_fused_odds_by_at_most_the_stated_bound():
    classes = 7
    prior = np.full(classes, 1 / classes)
    delta = 2e-5  # a ruled-out FER class moved by float rounding (seen across CPUs / thread counts)
    vision = np.full(classes, 1e-6)
    vision[3] = 1 - vision.sum() + vision[3]
    moved = vision.copy()
    moved[0] += delta
    moved[3] -= delta  # stays a distribution
    text = np.array([0.3, 0.05, 0.05, 0.1, 0.3, 0.1, 0.1])
    before = product_of_experts({"v": vision, "t": text}, {"v": prior, "t": prior}, prior)
    after = product_of_experts({"v": moved, "t": text}, {"v": prior, "t": prior}, prior)
    log_odds_bound, probability_bound = fused_change_bound({"v": delta}, classes)
    assert log_odds_bound == pytest.approx(2 * delta * (1 - EXPERT_SMOOTHING) * classes / EXPERT_SMOOTHING)
    assert np.abs(log_odds(after) - log_odds(before)).max() <= log_odds_bound + FLOAT64_SLACK
    assert np.abs(after - before).max() <= probability_bound + FLOAT64_SLACK
    # the stated numbers: a 1e-4 change in one expert moves any fused log-odds by <= 0.139, a probability by <= 0.035
    assert fused_change_bound({"v": 1e-4}, 7) == pytest.approx((0.1386, 0.03465))
    # without the smoothing (the former 1e-6 floor) the same change moved class 0's odds by log(21) ~ 3
    assert np.log((1e-6 + delta) / 1e-6) > 100 * log_odds_bound / 2


def test_random_changes_of_every_expert_stay_within_the_bound():
    rng = np.random.default_rng(0)
    classes = 7
    for _ in range(200):
        priors = {m: rng.dirichlet(np.ones(classes)) + 0.01 for m in "atv"}
        target = rng.dirichlet(np.ones(classes)) + 0.01
        experts = {m: rng.dirichlet(np.full(classes, 0.05)) for m in "atv"}  # often near-zero entries
        weights = {m: float(rng.uniform(0, 2)) for m in "atv"}
        changes = {m: float(rng.choice([0.0, 1e-5, 1e-4, 1e-3])) for m in "atv"}
        moved = {m: np.clip(p + rng.uniform(-1, 1, classes) * changes[m], 0, 1) for m, p in experts.items()}
        before = product_of_experts(experts, priors, target, weights)
        after = product_of_experts(moved, priors, target, weights)
        log_odds_bound, probability_bound = fused_change_bound(changes, classes, weights)
        assert np.abs(log_odds(after) - log_odds(before)).max() <= log_odds_bound + 1e-9
        assert np.abs(after - before).max() <= probability_bound + 1e-9


def test_weights_and_errors():
    evidence = np.array([0.1, 0.1, 0.8])
    half = product_of_experts({"v": evidence}, {"v": PRIOR}, PRIOR, {"v": 0.0})
    np.testing.assert_allclose(half, PRIOR, atol=FLOAT64_SLACK)  # weight 0: the expert is ignored
    with pytest.raises(ValueError, match="at least one"):
        product_of_experts({}, {}, PRIOR)
    with pytest.raises(ValueError, match="no class prior"):
        product_of_experts({"t": evidence}, {}, PRIOR)
    with pytest.raises(ValueError, match="positive"):
        product_of_experts({"t": evidence}, {"t": np.array([0.5, 0.5, 0.0])}, PRIOR)


def test_the_text_gate_is_zero_without_emotion_mass_one_with_it_and_the_stated_clip_in_between():
    from affectflow.pipeline.label.experts import TEXT_GATE, text_gate_weight

    neutral = 0
    assert text_gate_weight(np.array([1.0, 0.0, 0.0]), neutral) == 0.0  # words that say nothing: no pull
    assert text_gate_weight(np.array([0.0, 0.0, 1.0]), neutral) == 1.0  # all mass on an emotion: full pull
    middle = np.array([0.6, 0.1, 0.3])
    mass = 1.0 - smooth_posterior(middle)[neutral]  # 0.4 * (1 - eps) + 2 eps / 3
    np.testing.assert_allclose(text_gate_weight(middle, neutral, 0.0, 1.0), mass, atol=FLOAT64_SLACK)
    np.testing.assert_allclose(text_gate_weight(middle, neutral, mass - 0.1, 0.2), 0.5, atol=FLOAT64_SLACK)
    a, b = TEXT_GATE
    assert text_gate_weight(np.array([1.0 - a + b, a - b, 0.0]), neutral) == 0.0  # below a
    with pytest.raises(ValueError, match="scale"):
        text_gate_weight(middle, neutral, 0.0, 0.0)


def test_without_a_target_prior_a_lone_expert_is_its_own_smoothed_posterior_whatever_its_prior():
    # issue 24: the voice alone must not be pulled towards another corpus's base rate (MELD's 47 % neutral)
    posterior = np.array([0.2, 0.45, 0.35])
    for prior in (PRIOR, np.full(3, 1 / 3), np.array([0.1, 0.1, 0.8])):
        fused = product_of_experts({"a": posterior}, {"a": prior, "t": PRIOR})
        np.testing.assert_allclose(fused, smooth_posterior(posterior), atol=FLOAT64_SLACK)


def test_the_pooled_prior_is_the_weighted_geometric_mean_of_the_counted_experts_priors():
    skewed, uniform = np.array([0.6, 0.3, 0.1]), np.full(3, 1 / 3)
    expected = np.sqrt(skewed * uniform)
    np.testing.assert_allclose(pooled_prior({"a": uniform, "t": skewed}, {"a": 1.0, "t": 1.0}),
                               expected / expected.sum(), atol=FLOAT64_SLACK)
    weighted = uniform ** (1 / 1.5) * skewed ** (0.5 / 1.5)
    np.testing.assert_allclose(pooled_prior({"a": uniform, "t": skewed}, {"a": 1.0, "t": 0.5}),
                               weighted / weighted.sum(), atol=FLOAT64_SLACK)
    # a muted expert brings no base rate; a shared prior is the target; nothing counted: uniform
    np.testing.assert_allclose(pooled_prior({"a": uniform, "t": skewed}, {"a": 1.0, "t": 0.0}), uniform,
                               atol=FLOAT64_SLACK)
    np.testing.assert_allclose(pooled_prior({"a": skewed, "t": skewed}, {"a": 1.0, "t": 0.3}), skewed,
                               atol=FLOAT64_SLACK)
    np.testing.assert_allclose(pooled_prior({"a": skewed}, {"a": 0.0}), uniform, atol=FLOAT64_SLACK)


def test_a_muted_expert_leaves_the_others_answer_exactly():
    voice, words = np.array([0.5, 0.3, 0.2]), np.array([0.9, 0.05, 0.05])
    fused = product_of_experts({"a": voice, "t": words}, {"a": np.full(3, 1 / 3), "t": PRIOR}, weights={"t": 0.0})
    np.testing.assert_allclose(fused, smooth_posterior(voice), atol=FLOAT64_SLACK)
