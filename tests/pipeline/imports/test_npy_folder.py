"""`npy-folder`: MERBench-style <feature>/<segment>.npy folders + a labels CSV -> stores + manifest."""

from __future__ import annotations

import numpy as np
import pytest

from affectflow.extractors.store import FeatureStore, export_npy
from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.imports import import_features

SOURCES = ["a=wavlm-UTT", "t=roberta-FRA", "v=manet-UTT"]


def test_folders_become_stores_with_real_missingness(npy_folder, tmp_path):
    root, labels, arrays = npy_folder
    summary = import_features("npy-folder", root, tmp_path / "out", labels=labels, sources=SOURCES)
    table = read_manifest(summary.manifest)
    assert summary.splits == {"train": 6, "valid": 2, "test": 2}  # the labels' valid split: nothing carved
    assert set(table.columns) >= {"emotion", "sentiment", "dialogue_id"}
    audio, text, vision = (FeatureStore.open(summary.stores[m]) for m in "atv")
    assert audio.spec.config["level"] == "utterance" and text.spec.config["level"] == "frame"
    np.testing.assert_allclose(audio.read_utterance("dia 4/x")[0], arrays[("wavlm-UTT", "dia 4/x")])
    np.testing.assert_allclose(text.read("dia1_utt1").values, arrays[("roberta-FRA", "dia1_utt1")])
    assert vision.read("dia2_utt1").is_missing and "no dia2_utt1.npy" in vision.missing_reason("dia2_utt1")
    assert vision.read("dia3_utt0").is_missing and "missing.txt" in vision.missing_reason("dia3_utt0")
    assert summary.missing == {"a": 0, "t": 0, "v": 2}
    assert any("1 files have no row" in note for note in summary.notes)
    # provenance: every file of the folder (the unlabelled one too), listed relative to the root
    assert audio.spec.config["files"] == 11
    assert audio.spec.config["source"] == sorted(f"wavlm-UTT/{p.name}" for p in (root / "wavlm-UTT").glob("*.npy"))


def test_modality_folders_are_found_by_name_and_export_npy_round_trips(npy_folder, tmp_path):
    root, labels, _ = npy_folder
    first = import_features("npy-folder", root, tmp_path / "first", labels=labels, sources=SOURCES)
    exported = tmp_path / "exported"
    for m, word in (("a", "audio"), ("v", "vision")):
        export_npy(FeatureStore.open(first.stores[m]), exported / word)
    second = import_features("merbench", exported, tmp_path / "second", labels=labels)
    assert sorted(second.stores) == ["a", "v"]
    vision_first, vision_second = (FeatureStore.open(s.stores["v"]) for s in (first, second))
    assert vision_second.read("dia3_utt0").is_missing  # export_npy's missing.txt is honoured
    np.testing.assert_allclose(vision_second.read_utterance("dia1_utt0")[0], vision_first.read_utterance("dia1_utt0")[0])


def test_labels_are_required_and_unknown_folders_named(npy_folder, tmp_path):
    root, labels, _ = npy_folder
    with pytest.raises(ValueError, match="labels CSV is required"):
        import_features("npy-folder", root, tmp_path / "out")
    with pytest.raises(ValueError, match="no folder of .* is named like a modality"):
        import_features("npy-folder", root, tmp_path / "out", labels=labels)
    with pytest.raises(FileNotFoundError, match="audio folder not found"):
        import_features("npy-folder", root, tmp_path / "out", labels=labels, sources=["audio=nope"])
    with pytest.raises(ValueError, match="unknown feature format 'npy-folders' \\(did you mean"):
        import_features("npy-folders", root, tmp_path / "out", labels=labels)
