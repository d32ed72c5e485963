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


def test_paper_models_run_their_paper_recipe_and_every_override_is_explained(bench):
    from affectflow.fusion.registry import list_fusions
    from affectflow.pipeline.train.recipes import PAPER_RECIPES
    from affectflow.pipeline.train.schedules import make_schedule

    for model in list_fusions():
        assert bench.recipe(model, "full", "utterance", 0.1)["schedule"] == "full"
        missing = bench.recipe(model, "missing", "conversation", 0.1)
        if model in PAPER_RECIPES:
            assert missing["recipe"] == "paper" and missing["budget"] == 0.1 and "schedule" not in missing
            items, reasons = bench.overrides(model, "conversation", 0.1)
            assert len(reasons) >= len(set(items) - {"optimizer"})  # one reason per replaced item
        else:
            make_schedule(missing["schedule"])
    lines = "\n".join(bench.describe_recipes(["dqf", "cmarr", "momke", "sdumc"], ["utterance"], 0.1))
    assert "optimizer SGD lr 1e-05 -> Adam lr 0.001" in lines and "lr 1e-05 -> 0.001" in lines
    assert "no-condition recipe" in lines and "budget 0.1" in lines and "not run twice" in lines


def test_a_short_run_on_a_generated_tree_prints_the_table(bench, tmp_path, capsys):
    data = tmp_path / "data"
    write_declare_lab_tree(data / "cmu-mosi-features")
    (data / "cmu-mosi").mkdir()
    shutil.move(data / "cmu-mosi-features" / "label.csv", data / "cmu-mosi" / "label.csv")
    code = bench.main(["--data", str(data), "--prepared", str(tmp_path / "prepared"), "--out", str(tmp_path / "runs"),
                       "--models", "late_fusion", "sdumc", "--seeds", "1", "--budget", "0.01", "--jobs", "1",
                       "--levels", "conversation", "--config", "tiny"])
    assert code == 0
    output = capsys.readouterr().out
    assert "| logistic regression (floor) | utterance | full |" in output and "lr 0.0001 -> 0.001" in output
    assert "| late_fusion | conversation | random |" in output and "η=0.7" in output
    results = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert [(u["model"], u["kind"]) for u in results["units"]] == [
        ("late_fusion", "full"), ("late_fusion", "missing"), ("sdumc", "missing")]
    assert results["units"][2]["recipe"] == "paper" and results["units"][2]["epochs_per_stage"] == {"main": 1}
    assert "| sdumc | conversation | full (text dropped inside the model) |" in output
    assert "model config 'tiny'" in output and results["units"][0]["config"] == "tiny"
    assert results["units"][2]["valid_curves"][0][0][:2] == ["main", 1]  # validation curve per seed, by epoch
    assert set(results["units"][0]["fixed"]) >= {"atv", "a", "avg_incomplete"}


def test_full_config_builds_the_default_sizes_and_says_so(bench):
    from affectflow.fusion.registry import list_fusions

    for model in list_fusions():
        tiny, full = bench.recipe(model, "missing", "utterance", 0.1), bench.recipe(model, "missing", "utterance", 0.1, "full")
        assert tiny["tiny"] is True and full["tiny"] is False
        assert full["model_config"] == ({"max_length": 128} if model == "dqf" else {})  # a whole video still fits
    with pytest.raises(ValueError, match="unknown model config"):
        bench.recipe("dqf", "full", "utterance", 0.1, "huge")
    lines = "\n".join(bench.describe_recipes(["dqf", "cmarr"], ["utterance"], 0.1, "full"))
    assert "model config 'full'" in lines and "dqf: dim=128" in lines and "num_layers=6" in lines
    assert "max_length=128" in lines and "cmarr: hidden_dim=256" in lines
    assert "dqf: dim=16" in "\n".join(bench.describe_recipes(["dqf"], ["utterance"], 0.1))
    assert bench.unit_name("dqf", "missing", "full", False) == "dqf-missing-full"
    assert bench.unit_name("dqf", "missing", "tiny", False) == "dqf-missing"  # tiny runs keep their folders


def test_paper_lr_keeps_the_paper_optimiser(bench):
    assert "lr" not in bench.recipe("cmarr", "missing", "utterance", 0.1, "full", paper_lr=True)
    assert bench.recipe("cmarr", "missing", "utterance", 0.1, "full")["lr"] == bench.MIN_LR
    items, reasons = bench.overrides("dqf", "utterance", 0.1, paper_lr=True)
    assert "optimizer" not in items and "lr" not in items and len(reasons) == len(items)
