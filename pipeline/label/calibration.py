"""Calibrating a classifier's posterior: softmax, negative log-likelihood, ECE and a fitted temperature.

Both default heads (text, speech) are calibrated with `fit_temperature` on held-out data of their own
(MELD dev; out-of-fold predictions over validation actors), so the product of experts can trust them.
"""

from __future__ import annotations

import numpy as np

TEMPERATURE_GRID = np.exp(np.linspace(np.log(0.25), np.log(4.0), 61))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax: logits [N, C] -> probabilities [N, C]."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class): probs [N, C], labels [N] (class indices)."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence over equal-width bins: probs [N, C], labels [N]."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs((predicted[inside] == labels[inside]).mean() - confidence[inside].mean())
    return float(error)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature in [0.25, 4] minimising NLL on held-out (logits [N, C], labels [N])."""
    return float(min(TEMPERATURE_GRID, key=lambda t: negative_log_likelihood(softmax(logits / t), labels)))
