"""Stated bounds the numeric tests derive their tolerances from (instead of constants tuned on one CPU).

A float32 sum of n terms in another order (another CPU's vector width, another thread split, a padded
batch) differs by at most about n * u * sum|x_i| (u = 2^-24, Higham's gamma_n bound to first order), for
each of the two evaluations compared.
"""

from __future__ import annotations

FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
FLOAT64_UNIT_ROUNDOFF = 2.0 ** -53


def float32_sum_bound(terms: int, magnitude: float, depth: int = 1) -> float:
    """Largest |a - b| between two float32 evaluations of a result built from `depth` chained sums of
    `terms` terms each, whose absolute terms sum to at most `magnitude` (first-order, both sides rounding)."""
    return 2.0 * depth * terms * FLOAT32_UNIT_ROUNDOFF * magnitude
