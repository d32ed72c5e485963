"""Seconds per named stage of a job, for profiles (`scripts/bench_label.py`), without prints in the code.

    timer = StageTimer()
    with timed(timer, "face detection"):      # timer may be None: then nothing is measured
        detect(...)
    timer.seconds                              # {"face detection": 1.23}

Stages measured in worker processes are merged into the parent's timer with `add`, so a stage's total
is the time spent in it across all processes (it can exceed the wall time of a parallel run).

Code deep in a call chain (a labeller's models) times its stages into the run's timer without being
handed it: the run sets it for its block, and such code asks for it.

    with timing_into(timer):                     # e.g. run_labeling(timer=timer)
        with timed(current_timer(), "vision model"):   # inside the labeller: timed when a run set one
            ...
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar


class StageTimer:
    """Accumulated wall seconds and call counts per stage name (insertion order kept for printing)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the wall time of the `with` body to stage `name` (also when the body raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add({name: time.perf_counter() - started})

    def add(self, seconds: Mapping[str, float], counts: Mapping[str, int] | None = None) -> None:
        """Merge stage seconds (and counts, default 1 each) measured elsewhere, e.g. in a worker process."""
        for name, value in seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + float(value)
            self.counts[name] = self.counts.get(name, 0) + (1 if counts is None else int(counts.get(name, 1)))

    def merge(self, other: "StageTimer") -> None:
        """Add every stage of `other` into this timer."""
        self.add(other.seconds, other.counts)

    @property
    def total(self) -> float:
        """Sum of all stages (seconds)."""
        return float(sum(self.seconds.values()))


def timed(timer: StageTimer | None, name: str) -> contextlib.AbstractContextManager:
    """`timer.stage(name)`, or a context that measures nothing when `timer` is None."""
    return timer.stage(name) if timer is not None else contextlib.nullcontext()


_CURRENT_TIMER: ContextVar[StageTimer | None] = ContextVar("affectflow_stage_timer", default=None)


def current_timer() -> StageTimer | None:
    """The timer `timing_into` set for the running block (this thread or task), None outside one."""
    return _CURRENT_TIMER.get()


@contextlib.contextmanager
def timing_into(timer: StageTimer | None) -> Iterator[StageTimer | None]:
    """Within the block `current_timer()` is `timer` (None: nothing is timed); the previous one after."""
    token = _CURRENT_TIMER.set(timer)
    try:
        yield timer
    finally:
        _CURRENT_TIMER.reset(token)
