"""Combining per-modality posteriors: a product of experts with the class prior counted once.

Each expert m is a calibrated posterior p_m(c | x_m) trained under its own class prior pi_m(c) (the text
head under MELD's, the speech head under RAVDESS's, FER under FER2013's). Dividing that prior out leaves a
likelihood ratio; the target prior pi(c) is counted once:

    p(c | x_1..x_M)  ∝  pi(c) * Π_m [ p_m(c | x_m) / pi_m(c) ] ^ w_m

With one shared prior and w_m = 1 this is Π_m p_m(c | x_m) / pi(c)^(M-1). A present but unsure expert
(p_m ≈ pi_m) multiplies every class by about the same factor, so it leaves a sure expert's answer alone;
an absent modality is simply not in the product.

The target prior (`pooled_prior`). The labeller does not know the base rate of the recordings it is given
(a user's interviews are not MELD's sitcom, where 47 % of lines are neutral), so it adds none of its own: the
target is the present experts' own priors pooled the way their evidence is, a weighted geometric mean,

    log pi(c) = Σ_m w_m log pi_m(c) / Σ_m w_m   (renormalised; the experts with w_m > 0),

so a single expert's fused result is its own calibrated posterior, an expert whose weight is 0 (muted text)
brings no base rate either, and when all experts share one prior that prior is the target. Measured on
RAVDESS (5 actor folds, `scripts/fit_text_gate.py`): with MELD's prior as the target, the voice alone lost
8 points of UA (0.686 -> 0.607) to the pull towards neutral; with the pooled prior the fused label is the
voice's when the words are muted. A caller that knows its base rate passes it as `target_prior`.

Smoothing bounds the sensitivity. Each expert's posterior is first mixed with the uniform distribution,

    p'_m(c) = (1 - EXPERT_SMOOTHING) p_m(c) + EXPERT_SMOOTHING / C,

i.e. every expert is taken to say nothing with probability EXPERT_SMOOTHING (a classifier is not
reliable beyond about 1 in 100). Without it a near-zero probability is a huge lever: with the former floor
of 1e-6, a 2e-5 change in a ruled-out FER class (a landmark moved by float rounding on another CPU or
thread count) changed that class's fused odds by a factor ~2. With it, p' >= EXPERT_SMOOTHING / C, so

    |d log p'_m(c)| <= (1 - EXPERT_SMOOTHING) C / EXPERT_SMOOTHING * |d p_m(c)|,

and when every probability of expert m moves by at most delta_m, every fused log-odds log P(c) / P(k)
moves by at most L = sum_m |w_m| * 2 delta_m (1 - eps) C / eps and every fused probability by at most L / 4
(the logit of P(c) against the rest moves by at most L; the logistic's slope is at most 1/4). With
eps = 0.01 and C = 7: a 1e-4 change in one expert's probabilities moves any fused log-odds by at most
0.139 and any fused probability by at most 0.035 (`fused_change_bound`). The price: one expert alone can
move a class's odds by at most a factor C / eps = 700 relative to its prior, and a single expert's fused
result differs from its posterior by at most EXPERT_SMOOTHING (absolute).

Text evidence only where the words carry it (`text_gate_weight`). Words can carry no emotion while the
speaker has one (an actor's "Kids are talking by the door."); the text head, trained on MELD where such
lines are mostly labelled neutral, then says neutral (0.67-0.75), and with w_t = 1 the product counts the
words' neutrality as evidence against the voice. The default labeller therefore weights the text expert by
how much emotion its words carry, measured by the smoothed posterior's mass on the emotion classes:

    w_t = clip((m_t - a) / b, 0, 1),   m_t = 1 - p'_t(neutral),   (a, b) = TEXT_GATE = (0.34, 0.01)

(MELD's prior has m = 0.53.) So the text counts fully once it puts more than about 0.35 on the emotions and
not at all below 0.34: lexically neutral text is absence of evidence, not evidence of a neutral speaker. A
lone text expert keeps w_t = 1 (its posterior is the answer; the text-only path is unchanged). Fitted by
`scripts/fit_text_gate.py` (grid search, lowest fused NLL) on RAVDESS out-of-fold voice posteriors with the
clip's own sentence (voice informative, words not) plus the same voices paired with MELD train/dev texts of
the same class (both informative); every outer actor fold chose the same (a, b). This form beat
w_t = clip((KL(p'_t || pi_t) - a) / b, 0, 1) on the pairs (a confidently neutral "Okay." is far from the
prior in KL, so a KL gate must also mute many MELD texts to mute the RAVDESS sentences). Caveats: the data
has only two lexically neutral sentences (m = 0.26 and 0.34), so a sits just above the higher one and the
step's width b went to the smallest value tried; the weight depends on p_t, so `fused_change_bound` (fixed
weights) does not cover a text posterior within 1e-2 / C of the step.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

EXPERT_SMOOTHING = 0.01
"""eps: each expert's posterior is mixed with the uniform distribution with this weight (module docstring)."""

TEXT_GATE: tuple[float, float] = (0.34, 0.01)
"""(a, b) of the text expert's gate w_t = clip((1 - p'_t(neutral) - a) / b, 0, 1), fitted by
scripts/fit_text_gate.py (module docstring)."""


def normalize_prior(prior: np.ndarray | list[float], name: str = "prior") -> np.ndarray:
    """A class prior [C] as float64 summing to 1; ValueError when it has non-positive entries."""
    prior = np.asarray(prior, dtype=np.float64)
    if prior.ndim != 1 or not np.all(np.isfinite(prior)) or np.any(prior <= 0):
        raise ValueError(f"{name} must be a 1-D vector of positive numbers, got {prior}")
    return prior / prior.sum()


def smooth_posterior(posterior: np.ndarray, smoothing: float = EXPERT_SMOOTHING) -> np.ndarray:
    """(1 - eps) p + eps / C of a posterior p [C] (clipped to [0, 1] first; float64)."""
    posterior = np.clip(np.asarray(posterior, np.float64), 0.0, 1.0)
    return (1.0 - smoothing) * posterior + smoothing / posterior.shape[-1]


def text_gate_weight(posterior: np.ndarray, neutral: int, offset: float = TEXT_GATE[0],
                     scale: float = TEXT_GATE[1]) -> float:
    """w_t = clip((m_t - a) / b, 0, 1) with m_t = 1 - p'_t(neutral), the smoothed text posterior's mass on the
    emotion classes: the text expert's weight from how much emotion its words carry (module docstring);
    neutral: the neutral class's index; a = offset, b = scale (TEXT_GATE)."""
    if not scale > 0:
        raise ValueError(f"text gate scale must be > 0, got {scale}")
    emotion_mass = 1.0 - float(smooth_posterior(posterior)[neutral])
    return float(np.clip((emotion_mass - offset) / scale, 0.0, 1.0))


def fused_change_bound(changes: Mapping[str, float], num_classes: int, weights: Mapping[str, float] | None = None,
                       smoothing: float = EXPERT_SMOOTHING) -> tuple[float, float]:
    """(log-odds bound, probability bound) on how far `product_of_experts` can move when every probability
    of expert m moves by at most changes[m] (the same experts present on both sides; module docstring)."""
    log_odds = sum(abs(1.0 if weights is None else float(weights.get(m, 1.0))) * 2.0 * float(change)
                   for m, change in changes.items()) * (1.0 - smoothing) * num_classes / smoothing
    return log_odds, min(1.0, log_odds / 4.0)


def pooled_prior(expert_priors: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The target prior of a product of experts that knows no base rate of its own (module docstring): the
    weighted geometric mean of the experts' priors {modality: pi_m}, weights {modality: w_m} (those with
    w_m > 0 count; uniform when none does), renormalised (float64)."""
    counted = {m: float(w) for m, w in weights.items() if float(w) > 0}
    if not counted:
        size = len(next(iter(expert_priors.values())))
        return np.full(size, 1.0 / size)
    total = sum(counted.values())
    log_prior = sum(w / total * np.log(normalize_prior(expert_priors[m], f"{m!r} expert prior"))
                    for m, w in counted.items())
    prior = np.exp(log_prior - log_prior.max())
    return prior / prior.sum()


def product_of_experts(posteriors: Mapping[str, np.ndarray], expert_priors: Mapping[str, np.ndarray],
                       target_prior: np.ndarray | None = None,
                       weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Fused posterior [C] (float64, sums to 1) of the present experts {modality: p_m [C]}.

    expert_priors: {modality: pi_m [C]} (the prior each expert was trained under); target_prior: pi [C], or
    None for the present experts' pooled prior (`pooled_prior`: a lone expert's result is its own posterior);
    weights: {modality: w_m} (default 1). Each p_m is smoothed first (`smooth_posterior`, EXPERT_SMOOTHING).
    ValueError when no expert is given or a prior is missing.
    """
    if not posteriors:
        raise ValueError("product_of_experts needs at least one expert posterior")
    missing = [m for m in posteriors if m not in expert_priors]
    if missing:
        raise ValueError(f"no class prior for the {missing[0]!r} expert")
    present = {m: 1.0 if weights is None else float(weights.get(m, 1.0)) for m in posteriors}
    target = pooled_prior({m: expert_priors[m] for m in posteriors}, present) if target_prior is None \
        else normalize_prior(target_prior, "target prior")
    log_total = np.log(target)
    for modality, posterior in posteriors.items():
        prior = normalize_prior(expert_priors[modality], f"{modality!r} expert prior")
        ratio = np.log(smooth_posterior(posterior)) - np.log(prior)
        log_total = log_total + present[modality] * ratio
    log_total -= log_total.max()
    fused = np.exp(log_total)
    return fused / fused.sum()
