"""`train(...)` and `evaluate(...)` called as library functions (no argparse) on generated features."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from affectflow.pipeline.core.manifest import read_manifest
from factories.features import make_feature_corpus
from affectflow.pipeline.train.api import EvaluationReport, evaluate, train
from affectflow.pipeline.train.checkpoint import read_bundle_info
from affectflow.pipeline.core.io import to_jsonable
from affectflow.pipeline.train.results import CrossFoldSummary, ExperimentSummary, SeedResult

SIZES = {"train": 24, "valid": 12, "test": 12}
QUICK = {"tiny": True, "epochs": 1, "batch_size": 8, "progress": False}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_feature_corpus(tmp_path_factory.mktemp("api"), split_sizes=SIZES, max_frames=4, seed=21)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "late"
    return train(corpus.manifest, corpus.features, "late_fusion", out=out, seeds=(1, 2), **QUICK), out


def test_train_returns_a_typed_summary_matching_summary_json(trained):
    summary, out = trained
    assert isinstance(summary, ExperimentSummary) and summary.out == out
    assert [run.seed for run in summary.runs] == [1, 2] and all(isinstance(r, SeedResult) for r in summary.runs)
    assert summary.best_seed in (1, 2) and summary.select_metric == "weighted_f1" and summary.kind == "classification"
    assert set(summary.test_summary) == {"a", "t", "v", "av", "at", "tv", "atv", "avg_incomplete"}
    written = json.loads((out / "summary.json").read_text())
    assert written == to_jsonable(summary.to_dict())
    assert set(written) == {"model", "hyperparameters", "task", "schedule", "seeds", "best_seed", "select_metric",
                            "select_condition", "runs", "test_summary", "recipe", "unlabelled_segments"}
    assert written["unlabelled_segments"] == {"count": 0, "ids": []}
    assert written["recipe"]["name"] == "default" and written["recipe"]["budget"] is None
    seed_file = json.loads((out / "seed-1" / "result.json").read_text())
    assert SeedResult.from_dict(seed_file).to_dict(with_history=False) == written["runs"][0]
    assert [h["epoch"] for h in seed_file["history"]] == [1]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "late_fusion" and config["seeds"] == [1, 2] and config["tiny"] is True
    grid = pd.read_csv(out / "test_grid_wa.csv", index_col="model")
    assert list(grid.index) == ["late_fusion"] and list(grid.columns)[-1] == "avg_incomplete"
    assert read_bundle_info(out / "best").architecture == "late_fusion"


def test_evaluate_every_protocol(corpus, trained, tmp_path):
    _, out = trained
    report = evaluate([out], corpus.manifest, corpus.features, protocols="all", rates=(0.0, 1.0), out=tmp_path)
    assert isinstance(report, EvaluationReport) and report.protocols == ("fixed", "random", "frame")
    result = report.models["late_fusion"]
    assert result.checkpoint == out / "best" and result.architecture == "late_fusion"
    assert 0.0 <= result.fixed["avg_incomplete"]["wa"] <= 1.0 and "ua" in result.random
    assert set(result.frame) == {"random_zeros"}
    assert set(result.frame["random_zeros"]["auilc"]) == {"a", "t", "v", "av", "at", "tv", "atv"}
    assert json.loads((tmp_path / "report.json").read_text()) == to_jsonable(report.to_dict())
    for name in ("fixed_wa.csv", "random.csv", "auilc_random_zeros_wa.csv", "confusion_late_fusion.png",
                 "auilc_late_fusion_random_zeros.png"):
        assert (tmp_path / name).is_file(), name
    assert list(report.fixed_table().index) == ["late_fusion"]


def test_evaluate_one_protocol_and_bad_names(corpus, trained, tmp_path):
    _, out = trained
    report = evaluate(out / "best", corpus.manifest, corpus.features, protocols="random", split="valid", out=tmp_path)
    assert report.protocols == ("random",) and report.models["late_fusion"].fixed is None
    assert set(json.loads((tmp_path / "report.json").read_text())["models"]["late_fusion"]) == {
        "checkpoint", "architecture", "training", "random", "unlabelled_segments"}
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate(out, corpus.manifest, corpus.features, protocols=("fixed", "sideways"), out=tmp_path)


def test_train_one_fold_from_a_table_and_explicit_stores(corpus, tmp_path):
    table = read_manifest(corpus.manifest)
    summary = train(table, None, "early_fusion", out=tmp_path / "fold", fold="Ses01", valid_fraction=0.3,
                    modalities="t", feature_overrides={"t": corpus.stores["t"]}, **QUICK)
    assert read_bundle_info(tmp_path / "fold" / "best").task_spec.modalities == ("t",)
    assert summary.task.modalities == ("t",)
    assert json.loads((tmp_path / "fold" / "config.json").read_text())["manifest"] == "<DataFrame>"


def test_train_all_folds_gives_a_cross_fold_summary(corpus, tmp_path):
    summary = train(corpus.manifest, corpus.features, "late_fusion", out=tmp_path, fold="all", valid_fraction=0.3,
                    **QUICK)
    assert isinstance(summary, CrossFoldSummary) and sorted(summary.folds) == [f"Ses0{i}" for i in range(1, 6)]
    assert len(summary.test_summary["atv"]["wa"]["values"]) == 5
    assert json.loads((tmp_path / "summary.json").read_text()) == to_jsonable(summary.to_dict())
    assert all((tmp_path / f"fold-{fold}" / "best" / "bundle.json").is_file() for fold in summary.folds)


def test_train_refuses_bad_input_before_training(corpus, tmp_path):
    with pytest.raises(KeyError, match="unknown fusion model"):
        train(corpus.manifest, corpus.features, "nonexistent", out=tmp_path, **QUICK)
    with pytest.raises(ValueError, match="no feature store found"):
        train(corpus.manifest, None, "late_fusion", out=tmp_path, **QUICK)
    with pytest.raises(ValueError, match="no feature store for modalities"):
        train(corpus.manifest, None, "late_fusion", out=tmp_path, modalities="at",
              feature_overrides={"t": corpus.stores["t"]}, **QUICK)
    assert not (tmp_path / "summary.json").exists()
