"""The one check of a segment's time span, shared by `Segment`, manifests, recipes and `extract`.

A usable span has a finite start >= 0 and either no end ("to the end of the file") or a finite end
after the start. Everything else (start > end, inf or NaN times, a negative start) is named here once,
so a recipe drops and reports that row (`invalid_span`), a manifest read names the segment, and an
extraction job records a per-segment failure instead of stopping.
"""

from __future__ import annotations

import math

from affectflow.pipeline.core.errors import AffectflowError


class SpanError(AffectflowError, ValueError):
    """A segment whose time span cannot be used; the message names the segment and why."""


def _number(value) -> float | None:
    """`value` as a float, or None when it is no number at all."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def span_problem(start, end) -> str | None:
    """Why (start, end) in seconds is not a usable span, or None when it is. end None = to the end of the file.

    A NaN start is a problem, never "0.0"; an infinite end is a problem (leave end empty instead).
    """
    first = _number(start)
    if first is None or math.isnan(first):
        return f"start is missing or not a number ({start!r})"
    if math.isinf(first):
        return f"start is infinite ({first})"
    if first < 0:
        return f"start {first} < 0"
    if end is None:
        return None
    last = _number(end)
    if last is None or math.isnan(last):
        return f"end is not a number ({end!r}); leave it empty for 'to the end of the file'"
    if math.isinf(last):
        return f"end is infinite ({last}); leave it empty for 'to the end of the file'"
    if last <= first:
        return f"end {last} <= start {first}"
    return None


def check_span(segment_id: str, start, end) -> None:
    """Raise SpanError naming `segment_id` when (start, end) is not a usable span."""
    problem = span_problem(start, end)
    if problem is not None:
        raise SpanError(f"segment {segment_id}: {problem}")
