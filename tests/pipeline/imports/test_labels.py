"""Label tables beside published features: one MMSA label.csv reader (datasets.labels) for the corpus recipes
and the importers; numbers that are not numbers are refused by name; MOSEI's clip ids keep their video."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from affectflow.datasets.labels import read_mmsa_rows
from affectflow.datasets.validation import ValidationReport
from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.imports import import_features
from affectflow.pipeline.imports.labels import read_label_table

from .conftest import write_mmsa_pickle

MOSEI_ROWS = [("-vidA", "82_7645", 1.0), ("-vidA", "4_84", -0.5), ("-vidA", "119_919", 0.0), ("0123", "3", 2.0)]


def _mosei_label_csv(path, rows=MOSEI_ROWS):
    pd.DataFrame([{"video_id": v, "clip_id": c, "text": "t", "label": s, "mode": "train"} for v, c, s in rows]).to_csv(
        path, index=False)
    return path


def test_the_importers_and_the_recipes_read_an_mmsa_label_csv_alike(tmp_path):
    path = _mosei_label_csv(tmp_path / "label.csv")
    rows = read_mmsa_rows(path, ValidationReport(corpus="mosei", root=str(tmp_path)))
    table = read_label_table(path)
    assert table["segment_id"].tolist() == [f"{r.video_id}_{r.clip_id}" for r in rows]
    assert table["sentiment"].tolist() == [r.sentiment for r in rows] and set(table["split"]) == {"train"}
    # MOSEI clip ids hold a "_": the video stays whole, and the clips are ranked by start time (82.7645 s ...)
    assert table["dialogue_id"].tolist() == ["-vidA", "-vidA", "-vidA", "0123"]
    assert table["utterance_index"].tolist() == [1, 0, 2, 3]


def test_mosei_ids_in_an_mmsa_pickle_keep_their_video(tmp_path):
    path = tmp_path / "mosei.pkl"
    data = write_mmsa_pickle(path, frame_level=False)
    data["train"]["id"] = np.array(["vidA$_$82_7645", "vidA$_$4_84", "vidA$_$119_919", "vidB$_$1_2", "vidB$_$0_5",
                                    "vidC$_$3"], dtype=object)
    path.write_bytes(pickle.dumps(data))
    summary = import_features("mmsa-pickle", path, tmp_path / "out", valid_fraction=0)
    table = read_manifest(summary.manifest).set_index("segment_id")
    assert table.loc["vidA_82_7645", "dialogue_id"] == "vidA" and table.loc["vidA_82_7645", "utterance_index"] == 1
    assert table.loc["vidA_4_84", "utterance_index"] == 0 and table.loc["vidB_0_5", "utterance_index"] == 0
    assert table.loc["vidC_3", "dialogue_id"] == "vidC" and table.loc["vidC_3", "utterance_index"] == 3


def test_a_bad_label_cell_is_reported_by_the_recipes_and_refused_without_a_report(tmp_path):
    path = tmp_path / "label.csv"
    path.write_text("id,text,label,mode\nv1_1,a,1.5,train\nv1_2,b,n/a?,train\nv1_3,c,,test\n")
    report = ValidationReport(corpus="mosi", root=str(tmp_path))
    rows = read_mmsa_rows(path, report)  # the recipes: the row stays, unlabelled, and is reported
    assert [r.sentiment for r in rows] == [1.5, None, None]
    with pytest.raises(ValueError, match=r"label.csv:3: column 'label': 'n/a\?' is not a finite number"):
        read_mmsa_rows(path)
    with pytest.raises(ValueError, match=r"label.csv:3: column 'label': 'n/a\?'"):
        read_label_table(path)


@pytest.mark.parametrize("cells, message", [
    (["1.5", "2", "oops"], r"labels.csv:4: column 'label': 'oops' is a word among numbers"),
    (["happy", "sad", "3"], r"labels.csv:4: column 'label': '3' is a number among words"),
])
def test_a_generic_label_column_mixing_numbers_and_words_names_the_odd_cell(tmp_path, cells, message):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"segment_id": ["a", "b", "c"], "label": cells}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=message):
        read_label_table(path)


def test_generic_label_columns_of_one_kind_still_import(tmp_path):
    path = tmp_path / "labels.csv"
    table = pd.DataFrame({"segment_id": ["a", "b", "c"], "label": ["happy", "", "sad"], "mode": "test"})
    table.to_csv(path, index=False)
    assert [None if pd.isna(e) else e for e in read_label_table(path)["emotion"]] == ["happy", None, "sad"]
    pd.DataFrame({"segment_id": ["a", "b"], "sentiment": ["0.5", ""], "emotion": ["x", "y"]}).to_csv(path, index=False)
    assert read_label_table(path)["sentiment"].tolist()[0] == 0.5 and np.isnan(read_label_table(path)["sentiment"][1])
    pd.DataFrame({"segment_id": ["a", "b"], "sentiment": ["0.5", "inf"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"labels.csv:3: column 'sentiment': 'inf' is not a finite number"):
        read_label_table(path)
