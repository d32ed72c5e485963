"""The product of experts: the prior is counted once, unsure experts do not drown sure ones."""

from __future__ import annotations

import numpy as np
import pytest

from affectflow.pipeline.label.experts import product_of_experts

PRIOR = np.array([0.5, 0.3, 0.2])


def test_one_expert_under_the_target_prior_is_returned_unchanged():
    posterior = np.array([0.2, 0.7, 0.1])
    np.testing.assert_allclose(product_of_experts({"t": posterior}, {"t": PRIOR}, PRIOR), posterior)


def test_shared_prior_gives_the_product_over_the_prior_to_the_m_minus_1():
    experts = {"a": np.array([0.6, 0.3, 0.1]), "t": np.array([0.3, 0.5, 0.2]), "v": np.array([0.2, 0.2, 0.6])}
    expected = experts["a"] * experts["t"] * experts["v"] / PRIOR ** 2
    fused = product_of_experts(experts, {m: PRIOR for m in experts}, PRIOR)
    np.testing.assert_allclose(fused, expected / expected.sum())


def test_an_unsure_expert_leaves_a_sure_one_alone():
    sure = np.array([0.05, 0.9, 0.05])
    unsure = PRIOR.copy()  # says nothing beyond its prior
    fused = product_of_experts({"t": sure, "a": unsure}, {"t": PRIOR, "a": PRIOR}, PRIOR)
    np.testing.assert_allclose(fused, sure)


def test_expert_priors_are_divided_out_and_the_target_prior_counted_once():
    uniform = np.full(3, 1 / 3)
    # An expert trained under a uniform prior that is itself flat says nothing: the target prior remains.
    np.testing.assert_allclose(product_of_experts({"a": uniform}, {"a": uniform}, PRIOR), PRIOR)
    # Its evidence is re-weighted onto the target prior: p ∝ pi(c) * p_a(c) / (1/3).
    evidence = np.array([0.2, 0.2, 0.6])
    expected = PRIOR * evidence
    np.testing.assert_allclose(product_of_experts({"a": evidence}, {"a": uniform}, PRIOR), expected / expected.sum())


def test_weights_and_errors():
    evidence = np.array([0.1, 0.1, 0.8])
    half = product_of_experts({"v": evidence}, {"v": PRIOR}, PRIOR, {"v": 0.0})
    np.testing.assert_allclose(half, PRIOR)  # weight 0: the expert is ignored
    with pytest.raises(ValueError, match="at least one"):
        product_of_experts({}, {}, PRIOR)
    with pytest.raises(ValueError, match="no class prior"):
        product_of_experts({"t": evidence}, {}, PRIOR)
    with pytest.raises(ValueError, match="positive"):
        product_of_experts({"t": evidence}, {"t": np.array([0.5, 0.5, 0.0])}, PRIOR)
