"""`declare-lab-csv`: a generated tree, and the real CMU-MOSI feature files of ../shared/data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from affectflow.extractors.store import FeatureStore
from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.imports import import_features

from .conftest import write_declare_lab_tree


def test_generated_tree_keeps_the_split_maps_ids_and_carves_valid_by_video(tmp_path):
    data = write_declare_lab_tree(tmp_path / "mosi")
    summary = import_features("declare-lab-csv", tmp_path / "mosi", tmp_path / "out",
                              labels=tmp_path / "mosi" / "label.csv", valid_fraction=0.3)
    table = read_manifest(summary.manifest).set_index("segment_id")
    assert summary.splits == {"train": 8, "valid": 4, "test": 4}
    valid_videos = set(table.loc[table["split"] == "valid", "dialogue_id"])
    assert len(valid_videos) == 1 and not valid_videos & set(table.loc[table["split"] == "train", "dialogue_id"])
    assert set(table.loc[table["split"] == "test"].index) == set(data["ids"]["test"])  # test untouched
    for segment_id, binary in data["binary"].items():
        assert table.loc[segment_id, "emotion"] == table.loc[segment_id, "polarity"] == ["negative", "positive"][binary]
    assert table.loc["vidB_3", "text"] == "SAID vidB_3" and table.loc["vidB_3", "speaker"] == "vidB"
    assert table.loc["vidB_3", "utterance_index"] == 3
    assert table.loc["vidA_1", "sentiment"] == data["sentiment"]["vidA_1"] and np.isnan(table.loc["vidD_4", "sentiment"])
    assert any("1 segments have no continuous label" in note for note in summary.notes)
    for prefix, m in (("text", "t"), ("audio", "a"), ("video", "v")):
        store = FeatureStore.open(summary.stores[m])
        np.testing.assert_allclose(store.read_utterance("vidC_2")[0], data["features"][(prefix, "vidC_2")], rtol=1e-6)
        assert store.spec.name == f"imported:declare-lab-csv:{ {'a': 'audio', 't': 'text', 'v': 'vision'}[m] }"
        assert f"{prefix}_train0.csv" in store.spec.config["source"]


def test_misaligned_rows_are_refused_naming_the_file(tmp_path):
    write_declare_lab_tree(tmp_path / "mosi")
    path = tmp_path / "mosi" / "audio_test0.csv"
    table = pd.read_csv(path, header=None)
    table.iloc[0, -1] = 1 - table.iloc[0, -1]
    table.to_csv(path, header=False, index=False)
    with pytest.raises(ValueError, match="text_test0.csv and audio_test0.csv: their rows do not align"):
        import_features("declare-lab-csv", tmp_path / "mosi", tmp_path / "out")


@pytest.mark.slow  # ~40 s: 6,597 fsync'd segment files
def test_the_real_mosi_features(shared_data, tmp_path):
    root = shared_data / "cmu-mosi-features"
    summary = import_features("declare-lab-csv", root, tmp_path / "mosi-real", labels=shared_data / "cmu-mosi" / "label.csv")
    table = read_manifest(summary.manifest)
    assert len(table) == 2199 and table["dialogue_id"].nunique() == 93
    assert summary.splits["test"] == 752 and summary.splits["train"] + summary.splits["valid"] == 1447
    by_split = {split: set(table.loc[table["split"] == split, "dialogue_id"]) for split in ("train", "valid", "test")}
    assert not (by_split["train"] & by_split["valid"]) and not (by_split["test"] & (by_split["train"] | by_split["valid"]))
    assert 0.12 < summary.splits["valid"] / 1447 < 0.22
    assert table["sentiment"].notna().sum() == 2195
    labelled = table[table["sentiment"].notna()]
    assert ((labelled["sentiment"] >= 0) == (labelled["emotion"] == "positive")).all()
    dims = {m: FeatureStore.open(path).output_dim for m, path in summary.stores.items()}
    assert dims == {"a": 73, "t": 100, "v": 100} and summary.missing == {"a": 0, "t": 0, "v": 0}
