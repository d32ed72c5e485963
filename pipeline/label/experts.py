"""Combining per-modality posteriors: a product of experts with the class prior counted once.

Each expert m is a calibrated posterior p_m(c | x_m) trained under its own class prior pi_m(c) (the text
head under MELD's, the speech head under RAVDESS's, FER under FER2013's). Dividing that prior out leaves a
likelihood ratio; the target prior pi(c) is counted once:

    p(c | x_1..x_M)  ∝  pi(c) * Π_m [ p_m(c | x_m) / pi_m(c) ] ^ w_m

With one shared prior and w_m = 1 this is Π_m p_m(c | x_m) / pi(c)^(M-1). A present but unsure expert
(p_m ≈ pi_m) multiplies every class by about the same factor, so it leaves a sure expert's answer alone;
an absent modality is simply not in the product. With a single expert whose prior is the target prior,
the result is that expert's posterior unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

PROBABILITY_FLOOR = 1e-6  # no expert can veto a class outright


def normalize_prior(prior: np.ndarray | list[float], name: str = "prior") -> np.ndarray:
    """A class prior [C] as float64 summing to 1; ValueError when it has non-positive entries."""
    prior = np.asarray(prior, dtype=np.float64)
    if prior.ndim != 1 or not np.all(np.isfinite(prior)) or np.any(prior <= 0):
        raise ValueError(f"{name} must be a 1-D vector of positive numbers, got {prior}")
    return prior / prior.sum()


def product_of_experts(posteriors: Mapping[str, np.ndarray], expert_priors: Mapping[str, np.ndarray],
                       target_prior: np.ndarray, weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Fused posterior [C] (float64, sums to 1) of the present experts {modality: p_m [C]}.

    expert_priors: {modality: pi_m [C]} (the prior each expert was trained under); target_prior: pi [C];
    weights: {modality: w_m} (default 1). ValueError when no expert is given or a prior is missing.
    """
    if not posteriors:
        raise ValueError("product_of_experts needs at least one expert posterior")
    log_total = np.log(normalize_prior(target_prior, "target prior"))
    for modality, posterior in posteriors.items():
        if modality not in expert_priors:
            raise ValueError(f"no class prior for the {modality!r} expert")
        prior = normalize_prior(expert_priors[modality], f"{modality!r} expert prior")
        weight = 1.0 if weights is None else float(weights.get(modality, 1.0))
        ratio = np.log(np.clip(np.asarray(posterior, np.float64), PROBABILITY_FLOOR, 1.0)) - np.log(prior)
        log_total = log_total + weight * ratio
    log_total -= log_total.max()
    fused = np.exp(log_total)
    return fused / fused.sum()
