"""install_models: every step runs; a failing step is reported and fails the exit code (never skipped)."""

from __future__ import annotations

from affectflow.pipeline.label import install_models


def test_failing_step_is_reported_and_fails(capsys):
    def broken():
        raise RuntimeError("no network")

    assert install_models.main([("broken step", broken), ("ok step", lambda: "cached")]) == 1
    out = capsys.readouterr().out
    assert "FAILED to install broken step: no network" in out and "installed ok step: cached" in out
    assert install_models.main([("ok step", lambda: "cached")]) == 0


def test_every_step_names_a_callable():
    steps = install_models.install_steps()
    assert steps and all(isinstance(description, str) and callable(function) for description, function in steps)
