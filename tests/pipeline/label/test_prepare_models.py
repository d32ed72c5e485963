"""prepare_models: every step runs; a failing step is reported and fails the exit code (never skipped)."""

from __future__ import annotations

from affectflow.pipeline.label import prepare_models


def test_failing_step_is_reported_and_fails(monkeypatch, capsys):
    def broken():
        raise RuntimeError("no network")

    monkeypatch.setattr(prepare_models, "_steps", lambda: [("ok step", lambda: "cached"), ("broken step", broken)])
    assert prepare_models.main() == 1
    out = capsys.readouterr().out
    assert "prepared ok step: cached" in out and "FAILED to prepare broken step: no network" in out


def test_every_step_names_a_callable():
    steps = prepare_models._steps()
    assert steps and all(callable(function) for _, function in steps)
