"""`mmsa-pickle`: a generated MMSA-style pickle (frame- and utterance-level) -> stores + manifest."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from affectflow.extractors.store import FeatureStore
from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.imports import UnsafePickleError, import_features
from affectflow.pipeline.imports.writer import sha256_file

from .conftest import MMSA_SPLITS, write_mmsa_pickle


def test_frame_level_pickle_becomes_stores_with_masks_splits_and_provenance(mmsa_pickle, tmp_path):
    path, data = mmsa_pickle
    summary = import_features("mmsa-pickle", path, tmp_path / "out", corpus="mosi")
    table = read_manifest(summary.manifest)
    assert summary.splits == {"train": 6, "valid": 2, "test": 3}  # the pickle's own valid split is kept
    assert table["segment_id"].tolist()[:3] == ["v1_1", "v1_2", "v1_3"]
    row = table.set_index("segment_id").loc["v5_2"]
    assert row["dialogue_id"] == "v5" and row["utterance_index"] == 2 and row["split"] == "test"
    assert row["text"] == "text of v5$_$2" and row["corpus"] == "mosi"
    assert row["sentiment"] == pytest.approx(float(data["test"]["regression_labels"][1]))

    audio = FeatureStore.open(summary.stores["a"])
    seq = audio.read("v1_2")
    length = data["train"]["audio_lengths"][1]
    assert seq.values.shape == (6, 4) and seq.mask.tolist() == [i < length for i in range(6)]
    np.testing.assert_allclose(seq.values, data["train"]["audio"][1])
    assert audio.read("v5_1").is_missing and "padding" in audio.missing_reason("v5_1")  # audio_lengths 0
    text = FeatureStore.open(summary.stores["t"]).read("v2_1")
    assert text.mask.tolist() == (data["train"]["text_bert"][3, 1] > 0).tolist()  # BERT attention mask

    spec = audio.spec
    assert spec.name == "imported:mmsa-pickle:audio" and spec.output_dim == 4
    assert spec.config == {"format": "mmsa-pickle", "feature": "audio", "level": "frame",
                           "source": ["aligned_5.pkl"], "files": 1, "sha256": sha256_file(path)}
    assert summary.missing == {"a": 1, "t": 0, "v": 0}


def test_utterance_level_pickle_and_a_rerun_reuses_the_written_segments(tmp_path):
    path = tmp_path / "unaligned.pkl"
    data = write_mmsa_pickle(path, frame_level=False, protocol=2)
    first = import_features("mmsa", path, tmp_path / "out")
    store = FeatureStore.open(first.stores["v"])
    assert store.spec.config["level"] == "utterance"
    np.testing.assert_allclose(store.read_utterance("v4_2")[0], data["valid"]["vision"][1])
    again = import_features("mmsa-pickle", path, tmp_path / "out")
    assert again.written == 0 and again.reused == first.written == 3 * 11


def test_the_same_out_folder_refuses_features_of_other_source_files(tmp_path):
    path = tmp_path / "a.pkl"
    write_mmsa_pickle(path, seed=0)
    import_features("mmsa-pickle", path, tmp_path / "out")
    write_mmsa_pickle(path, seed=1)
    with pytest.raises(ValueError, match="refusing to mix features"):
        import_features("mmsa-pickle", path, tmp_path / "out")


def test_text_bert_token_ids_alone_are_not_features(tmp_path):
    path = tmp_path / "bert_only.pkl"
    data = write_mmsa_pickle(path)
    for part in data.values():
        del part["text"]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match="text_bert' holds BERT token ids"):
        import_features("mmsa-pickle", path, tmp_path / "out")
    # without text, the other modalities import
    summary = import_features("mmsa-pickle", path, tmp_path / "out", sources=["a=audio", "vision=vision"])
    assert sorted(summary.stores) == ["a", "v"]


def test_a_malicious_pickle_is_refused_by_the_importer_and_writes_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps({"train": {"id": np.array(["a$_$1"], dtype=object), "audio": Payload()}}))
    with pytest.raises(UnsafePickleError, match="aligned_50.pkl: refusing to unpickle the global"):
        import_features("mmsa-pickle", path, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_pickle_of_the_wrong_shape_names_the_file_and_split(tmp_path):
    path = tmp_path / "bad.pkl"
    data = write_mmsa_pickle(path)
    data["valid"]["audio"] = data["valid"]["audio"][:1]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=r"bad.pkl \[valid\]: 'audio' has shape"):
        import_features("mmsa-pickle", path, tmp_path / "out")
    assert len(MMSA_SPLITS["valid"]) == 2
