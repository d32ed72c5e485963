"""Stage timing: a timer handed down explicitly (`timed(timer, name)`) or set for a block (`timing_into`) and
read by code deep in the call chain (`current_timer()`), with nothing set on objects from outside."""

from __future__ import annotations

import threading

import pytest

from affectflow.pipeline.core.timing import StageTimer, current_timer, timed, timing_into


def model_step() -> None:
    """Code that is not handed the timer: a labeller's model call."""
    with timed(current_timer(), "model"):
        pass


def test_a_block_sets_the_current_timer_and_restores_the_previous_one():
    outer, inner = StageTimer(), StageTimer()
    assert current_timer() is None
    model_step()  # no run: nothing is timed, nothing fails
    with timing_into(outer):
        model_step()
        with timing_into(inner):
            model_step()
            model_step()
        assert current_timer() is outer
        with pytest.raises(KeyError), timing_into(inner):
            raise KeyError("restored on errors too")
        assert current_timer() is outer
    assert current_timer() is None
    assert (outer.counts, inner.counts) == ({"model": 1}, {"model": 2})


def test_the_current_timer_belongs_to_the_thread_that_set_it():
    timer, seen = StageTimer(), []
    with timing_into(timer):
        thread = threading.Thread(target=lambda: seen.append(current_timer()))
        thread.start()
        thread.join()
    assert seen == [None]  # another thread's work is not counted into this run's stages
