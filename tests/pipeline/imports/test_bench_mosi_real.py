"""scripts/bench_mosi_real.py: the missing-rate patterns, and a whole run on a generated declare-lab tree."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from .conftest import write_declare_lab_tree

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "bench_mosi_real.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_mosi_real", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rate_patterns_are_seeded_never_empty_and_near_the_rate(bench):
    keys = [f"vid{i // 20}_{i % 20}" for i in range(3000)]
    for rate in bench.RATES:
        patterns = np.stack([bench.rate_pattern(key, rate, 3) for key in keys])
        assert patterns.any(axis=1).all()
        assert abs((1 - patterns.mean()) - min(rate, 2 / 3)) < 0.02  # 0.7 realises 2/3: one modality is kept
    assert (bench.rate_pattern("a_1", 0.5, 3) == bench.rate_pattern("a_1", 0.5, 3)).all()


def test_every_recipe_names_a_registered_schedule(bench):
    from affectflow.fusion.registry import list_fusions
    from affectflow.pipeline.train.schedules import make_schedule

    for model in list_fusions():
        assert bench.recipe(model, "full", "utterance", 3)["schedule"] == "full"
        make_schedule(bench.recipe(model, "missing", "conversation", 3)["schedule"])


def test_a_short_run_on_a_generated_tree_prints_the_table(bench, tmp_path, capsys):
    data = tmp_path / "data"
    write_declare_lab_tree(data / "cmu-mosi-features")
    (data / "cmu-mosi").mkdir()
    shutil.move(data / "cmu-mosi-features" / "label.csv", data / "cmu-mosi" / "label.csv")
    code = bench.main(["--data", str(data), "--prepared", str(tmp_path / "prepared"), "--out", str(tmp_path / "runs"),
                       "--models", "late_fusion", "--seeds", "1", "--budget", "1", "--jobs", "1"])
    assert code == 0
    output = capsys.readouterr().out
    assert "| logistic regression (floor) | utterance | full |" in output
    assert "| late_fusion | conversation | random |" in output and "η=0.7" in output
    results = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert [(u["level"], u["kind"]) for u in results["units"]] == [
        ("utterance", "full"), ("utterance", "missing"), ("conversation", "full"), ("conversation", "missing")]
    assert set(results["units"][0]["fixed"]) >= {"atv", "a", "avg_incomplete"}
