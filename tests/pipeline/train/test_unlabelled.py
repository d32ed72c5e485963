"""Segments without the target label (pipeline/train/labels.py): `train` / `evaluate` use the labelled ones, say how many were left out
(one warning line, summary.json / report.json) and refuse only a train or validation split with no label."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from affectflow.fusion.contract import TaskSpec
from affectflow.pipeline.cli.main import main
from affectflow.pipeline.core.manifest import read_manifest, write_manifest
from affectflow.pipeline.core.names import IGNORE_INDEX
from affectflow.pipeline.imports import import_features
from affectflow.pipeline.train import data
from affectflow.pipeline.train.api import evaluate, train
from affectflow.pipeline.train.labels import UNLABELLED_IDS_SHOWN, UnlabelledSegmentsWarning, labelled_rows
from factories.features import make_feature_corpus

SIZES = {"train": 24, "valid": 12, "test": 12}
QUICK = {"tiny": True, "epochs": 1, "batch_size": 8, "progress": False}
BLANKED = {"train": [1, 4, 7, 9, 10, 11, 12, 13, 14, 15, 16], "valid": [2], "test": [0, 5]}
"""Rows (position within their split) whose label is removed: 14 in all, more than the ids a record names."""


def _blank(corpus, column: str, blanked: dict[str, list[int]], name: str, blank=None):
    """A copy of the corpus manifest with `column` emptied on the `blanked` rows of each split;
    returns (manifest path, the blanked segment ids in manifest order)."""
    table = read_manifest(corpus.manifest)
    ids = [f"{split}_{position:04d}" for split, positions in blanked.items() for position in positions]
    table[column] = table[column].astype(object)
    table.loc[table["segment_id"].isin(ids), column] = blank
    ordered = [i for i in table["segment_id"] if i in ids]
    return write_manifest(table, corpus.manifest.parent / name), ordered


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    return make_feature_corpus(tmp_path_factory.mktemp("reg"), kind="regression", split_sizes=SIZES, max_frames=3,
                               seed=31)


@pytest.fixture(scope="module")
def classification(tmp_path_factory):
    return make_feature_corpus(tmp_path_factory.mktemp("cls"), split_sizes=SIZES, max_frames=3, seed=32)


@pytest.fixture(scope="module")
def partly_labelled(regression):
    return _blank(regression, "sentiment", BLANKED, "partly.csv")


@pytest.fixture(scope="module")
def trained(regression, partly_labelled, tmp_path_factory):
    manifest, _ = partly_labelled
    out = tmp_path_factory.mktemp("run")
    with pytest.warns(UnlabelledSegmentsWarning) as caught:
        summary = train(manifest, regression.features, "late_fusion", task="regression", out=out, seeds=(1,), **QUICK)
    return summary, out, [str(w.message) for w in caught if w.category is UnlabelledSegmentsWarning]


def test_train_uses_the_labelled_segments_and_records_the_unlabelled(partly_labelled, trained):
    _, blanked = partly_labelled
    summary, out, messages = trained
    total = sum(SIZES.values())
    assert len(messages) == 1
    assert messages[0].startswith(f"{len(blanked)} of {total} segments have no 'sentiment' label (left out)")
    assert str(blanked[:UNLABELLED_IDS_SHOWN]) in messages[0] and blanked[UNLABELLED_IDS_SHOWN] not in messages[0]
    expected = {"count": len(blanked), "ids": blanked[:UNLABELLED_IDS_SHOWN]}
    assert summary.unlabelled_segments.to_dict() == expected
    assert json.loads((out / "summary.json").read_text())["unlabelled_segments"] == expected
    # the test grid scored exactly the labelled test segments
    assert summary.test_summary["atv"]["num_samples"]["mean"] == SIZES["test"] - len(BLANKED["test"])


def test_evaluate_scores_the_labelled_segments_and_records_the_unlabelled(regression, partly_labelled, trained,
                                                                         tmp_path):
    manifest, blanked = partly_labelled
    _, out, _ = trained
    with pytest.warns(UnlabelledSegmentsWarning, match=f"{len(BLANKED['test'])} of {SIZES['test']} segments"):
        report = evaluate(out, manifest, regression.features, protocols="all", rates=(0.0, 1.0), out=tmp_path)
    test_ids = [i for i in blanked if i.startswith("test_")]
    result = report.models["late_fusion"]
    assert result.unlabelled_segments.to_dict() == {"count": len(test_ids), "ids": test_ids}
    written = json.loads((tmp_path / "report.json").read_text())["models"]["late_fusion"]
    assert written["unlabelled_segments"] == {"count": len(test_ids), "ids": test_ids}
    labelled = SIZES["test"] - len(test_ids)
    assert result.fixed["atv"]["num_samples"] == labelled and result.random["num_samples"] == labelled


def test_no_labelled_train_or_validation_segment_is_refused(regression, classification, tmp_path):
    unlabelled_train, _ = _blank(regression, "sentiment", {"train": list(range(SIZES["train"]))}, "no-train.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnlabelledSegmentsWarning)  # refused before any warning
        with pytest.raises(ValueError, match="no labelled train segment: none of the 24 train segments has a label "
                                             "in 'sentiment'"):
            train(unlabelled_train, regression.features, "late_fusion", task="regression", out=tmp_path / "a",
                  **QUICK)
    # blank text is no label either
    unlabelled_valid, _ = _blank(classification, "emotion", {"valid": list(range(SIZES["valid"]))}, "no-valid.csv",
                                 blank="  ")
    with pytest.raises(ValueError, match="no labelled validation segment"):
        train(unlabelled_valid, classification.features, "late_fusion", out=tmp_path / "b", **QUICK)
    assert not (tmp_path / "a" / "summary.json").exists() and not (tmp_path / "b" / "summary.json").exists()


def test_evaluate_refuses_a_split_without_labels(regression, trained, tmp_path):
    _, out, _ = trained
    manifest, _ = _blank(regression, "sentiment", {"test": list(range(SIZES["test"]))}, "no-test.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnlabelledSegmentsWarning)  # refused before any warning
        with pytest.raises(ValueError, match="no labelled test segment: none of the 12 test"):
            evaluate(out, manifest, regression.features, out=tmp_path)


def test_cli_prints_one_warning_line_and_refuses_with_exit_2(classification, tmp_path, capsys):
    manifest, blanked = _blank(classification, "emotion", {"train": [3], "valid": [0], "test": [1]}, "cli.csv")
    common = ["--features", str(classification.features), "--no-progress"]
    assert main(["train", "--manifest", str(manifest), *common, "--model", "late_fusion", "--tiny", "--epochs", "1",
                 "--batch-size", "8", "--seeds", "1", "--out", str(tmp_path / "run")]) == 0
    printed = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert printed == [f"affectflow train: warning: 3 of 48 segments have no 'emotion' label (left out), "
                        f"e.g. {blanked}"]
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--manifest", str(manifest), *common,
                 "--out", str(tmp_path / "report")]) == 0
    assert "affectflow evaluate: warning: 1 of 12 segments have no 'emotion' label (left out), e.g. ['test_0001']" \
        in capsys.readouterr().err
    unlabelled, _ = _blank(classification, "emotion", {"train": list(range(SIZES["train"]))}, "none.csv")
    assert main(["train", "--manifest", str(unlabelled), *common, "--model", "late_fusion", "--tiny", "--epochs",
                 "1", "--out", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "affectflow train: error: no labelled train segment: none of the 24 train segments has a label in 'emotion'"]


def test_conversation_level_keeps_unlabelled_utterances_as_unscored_context(classification):
    table = data.split_rows(read_manifest(classification.manifest), "train")
    table["emotion"] = table["emotion"].astype(object)
    table.loc[[1, 6], "emotion"] = None
    stores = data.open_feature_stores(classification.features)
    task = TaskSpec(kind="classification", input_dims={m: s.output_dim for m, s in stores.items()},
                    class_names=classification.class_names, level="conversation", modalities=tuple(stores))
    rows = labelled_rows(table, "emotion", "train", level="conversation")
    assert len(rows) == len(table)
    dataset = data.MultimodalDataset(rows, stores, task, "emotion")
    assert [dataset.segment_ids[i] for i in np.flatnonzero(dataset.targets == IGNORE_INDEX)] == ["train_0001",
                                                                                                  "train_0006"]
    assert (dataset.targets[[0, 2, 3, 4, 5, 7]] >= 0).all()
    utterance = labelled_rows(table, "emotion", "train")
    assert "train_0001" not in set(utterance["segment_id"]) and len(utterance) == len(table) - 2
    with pytest.raises(ValueError, match="2 segments have no 'emotion' label"):
        data.MultimodalDataset(table, stores, TaskSpec(kind="classification", input_dims=task.input_dims,
                                                       class_names=task.class_names, modalities=task.modalities),
                               "emotion")


def test_real_mosi_import_trains_on_its_labelled_segments(shared_data, tmp_path, capsys):
    """The published MOSI features: label.csv has no continuous label for 4 segments."""
    out = tmp_path / "mosi-real"
    import_features("declare-lab-csv", shared_data / "cmu-mosi-features", out,
                    labels=shared_data / "cmu-mosi" / "label.csv")
    table = read_manifest(out / "manifest.parquet")
    missing = table.loc[table["sentiment"].isna(), "segment_id"].tolist()
    assert 0 < len(missing) < len(table)
    capsys.readouterr()
    assert main(["train", "--manifest", str(out / "manifest.parquet"), "--features", str(out / "features"),
                 "--model", "late_fusion", "--tiny", "--task", "regression", "--epochs", "1", "--seeds", "1",
                 "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert f"{len(missing)} of {len(table)} segments have no 'sentiment' label (left out), e.g. {missing}" \
        in capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["unlabelled_segments"] == {"count": len(missing), "ids": missing}
    test_labelled = int(data.split_rows(table, "test")["sentiment"].notna().sum())
    assert summary["test_summary"]["atv"]["num_samples"]["mean"] == test_labelled
