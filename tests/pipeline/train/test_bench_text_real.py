"""The real-label text benchmark on a small subset of the real MELD / CMU-MOSEI annotations."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "bench_text_real.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("bench_text_real", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_script()


def test_subset_keeps_every_split(bench, shared_data):
    table = bench.subset(bench.load_meld(shared_data), limit=5)
    assert table["split"].value_counts().to_dict() == {"train": 5, "valid": 5, "test": 5}
    mosei = bench.load_mosei(shared_data)
    assert set(mosei["split"]) == {"train", "valid", "test"} and mosei["sentiment"].between(-3, 3).all()


def test_benchmark_runs_end_to_end_on_a_subset(bench, shared_data, tmp_path, capsys):
    args = ["--data", str(shared_data), "--cache", str(tmp_path / "cache"), "--limit", "30", "--epochs", "1",
            "--models", "text_head,late_fusion", "--threads", "1", "--no-progress"]
    assert bench.main(args) == 0
    printed = capsys.readouterr().out
    assert "wall time" in printed and "command: python scripts/bench_text_real.py" in printed
    results = json.loads((tmp_path / "cache" / "runs" / "results.json").read_text())
    meld = {row["model"]: row for row in results["meld"]["rows"]}
    mosei = {row["model"]: row for row in results["mosei"]["rows"]}
    assert set(meld) == set(mosei) == {"text_head", "late_fusion"}
    assert all(0.0 <= meld[m][k] <= 100.0 for m in meld for k in ("WA", "UA", "wF1"))
    assert all(0.0 <= mosei[m]["Acc2 has0"] <= 100.0 and mosei[m]["MAE"] > 0 for m in mosei)
    assert results["meld"]["timings"]["extracted"] == 90
    # a second run reuses the cached MiniLM features
    assert bench.main(args + ["--datasets", "meld", "--models", "text_head"]) == 0
    rerun = json.loads((tmp_path / "cache" / "runs" / "results.json").read_text())
    assert rerun["meld"]["timings"]["extracted"] == 0 and rerun["meld"]["timings"]["reused"] == 90
    bundle = json.loads((tmp_path / "cache" / "runs" / "meld" / "text_head" / "best" / "bundle.json").read_text())
    assert bundle["extractors"]["t"]["name"] == "hf_text" and bundle["task_spec"]["modalities"] == ["t"]


def test_missing_data_folder_is_reported(bench, tmp_path, capsys):
    assert bench.main(["--data", str(tmp_path / "absent"), "--cache", str(tmp_path / "cache")]) == 2
    assert "data folder not found" in capsys.readouterr().err
