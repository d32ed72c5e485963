"""FeatureStore: round trip, lazy utterance reads, atomic writes, refusing other configs, npy export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from affectflow.extractors import store as store_module
from affectflow.extractors.spec import ExtractorSpec
from affectflow.extractors.store import FeatureStore, decode_segment_id, encode_segment_id, export_npy
from affectflow.pipeline.core.records import FeatureSequence

DIM = 4


SPEC = {"name": "logmel", "modality": "a", "config": {"n_mels": DIM}, "config_hash": "abc123", "output_dim": DIM}
OTHER = {"name": "logmel", "modality": "a", "config": {"n_mels": DIM + 1}, "config_hash": "def456", "output_dim": DIM}
EXTRACTOR_ID = "logmel-abc123"


def sequence(frames: int = 5, seed: int = 0, mask=None) -> FeatureSequence:
    rng = np.random.default_rng(seed)
    mask = np.ones(frames, bool) if mask is None else np.asarray(mask, bool)
    return FeatureSequence(values=rng.standard_normal((frames, DIM)).astype(np.float32),
                           times=np.arange(frames, dtype=np.float32) * 0.02, mask=mask, extractor_id=EXTRACTOR_ID,
                           extras={"token_ids": np.arange(frames, dtype=np.int64)})


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    return FeatureStore.create(tmp_path / "store", SPEC)


def test_round_trip_frame_and_utterance(store):
    seq = sequence(mask=[True, False, True, True, False])
    store.write("dia0_utt0", seq)
    back = store.read("dia0_utt0")
    np.testing.assert_array_equal(back.values, seq.values)
    np.testing.assert_array_equal(back.times, seq.times)
    np.testing.assert_array_equal(back.mask, seq.mask)
    np.testing.assert_array_equal(back.extras["token_ids"], seq.extras["token_ids"])
    assert back.extractor_id == EXTRACTOR_ID and back.missing_reason is None
    vector, present = store.read_utterance("dia0_utt0")
    assert present and vector.shape == (DIM,)
    np.testing.assert_allclose(vector, seq.values[seq.mask].mean(axis=0), rtol=1e-6)
    assert store.has("dia0_utt0") and "dia0_utt0" in store and store.segment_ids() == ["dia0_utt0"]


def test_missing_sequence_round_trip(store):
    store.write("quiet", FeatureSequence.missing(DIM, EXTRACTOR_ID, "silent audio"))
    back = store.read("quiet")
    assert back.is_missing and back.missing_reason == "silent audio" and back.values.shape == (0, DIM)
    vector, present = store.read_utterance("quiet")
    assert not present and np.all(vector == 0)
    assert store.missing_reason("quiet") == "silent audio"


@pytest.mark.parametrize("segment_id", ["a/b", ".hidden", "-3g5yACwYnA", "0123", "dia 1 utt 2", "ü%é", "x.safetensors"])
def test_awkward_segment_ids_round_trip(store, segment_id):
    assert decode_segment_id(encode_segment_id(segment_id)) == segment_id
    assert not encode_segment_id(segment_id).startswith(".") and "/" not in encode_segment_id(segment_id)
    store.write(segment_id, sequence())
    assert store.segment_ids() == [segment_id] and store.has(segment_id)


def test_reopen_and_spec_metadata(store):
    store.write("one", sequence())
    reopened = FeatureStore.open(store.root)
    assert reopened.spec == ExtractorSpec.from_dict(SPEC) and reopened.modality == "a" and reopened.output_dim == DIM
    assert reopened.spec.to_dict() == SPEC  # the JSON shape of a spec is unchanged
    assert FeatureStore.create(store.root, SPEC).segment_ids() == ["one"]  # create on a store = reopen
    payload = json.loads((store.root / "spec.json").read_text())
    assert payload["extractor"] == SPEC


def test_other_config_is_refused_with_a_clear_error(store):
    store.write("one", sequence())
    with pytest.raises(ValueError, match=r"logmel-abc123.*n_mels: 4 -> 5.*refusing to mix"):
        FeatureStore.open(store.root, expected_spec=OTHER)
    with pytest.raises(ValueError, match="refusing to mix"):
        FeatureStore.create(store.root, OTHER)


def test_bad_folders_and_specs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a feature store"):
        FeatureStore.open(tmp_path)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and is not a feature store"):
        FeatureStore.create(tmp_path / "busy", SPEC)
    with pytest.raises(ValueError, match="lacks"):
        FeatureStore.create(tmp_path / "new", {"name": "logmel"})


def test_write_rejects_wrong_dim_nan_and_other_extractor(store):
    with pytest.raises(ValueError, match="dim 3 != store output_dim 4"):
        store.write("x", FeatureSequence(np.zeros((2, 3), np.float32), np.zeros(2), np.ones(2, bool), EXTRACTOR_ID))
    bad = sequence()
    bad.values[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        store.write("x", bad)
    with pytest.raises(ValueError, match="cannot go into the store"):
        store.write("x", FeatureSequence.missing(DIM, "logmel-otherhash", "none"))
    with pytest.raises(KeyError, match="not in the feature store"):
        store.read("x")
    assert store.segment_ids() == []


def test_leftover_temporary_file_is_ignored(store):
    store.write("done", sequence())
    # What a run killed in the middle of a write leaves behind: a hidden, partial temporary file.
    (store.segments_dir / ".torn.safetensors.1a2b3c4d.tmp").write_bytes(b"\x00\x01partial")
    (store.segments_dir / ".torn.safetensors").write_bytes(b"")
    assert store.segment_ids() == ["done"] and not store.has("torn")


def test_interrupted_write_leaves_no_entry_and_no_temporary(store, monkeypatch):
    store.write("kept", sequence(seed=1))

    def killed(src, dst):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(store_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        store.write("lost", sequence(seed=2))
    with pytest.raises(KeyboardInterrupt):
        store.write("kept", sequence(seed=3))  # overwriting: the old complete entry must survive
    monkeypatch.undo()
    assert store.segment_ids() == ["kept"]
    np.testing.assert_array_equal(store.read("kept").values, sequence(seed=1).values)
    assert [p.name for p in store.segments_dir.iterdir()] == ["kept.safetensors"]


def test_export_npy_utterance_and_frame(store, tmp_path):
    store.write("a", sequence(mask=[True, True, False, True, True]))
    store.write("b/c", sequence(frames=3, seed=4))
    store.write("gone", FeatureSequence.missing(DIM, EXTRACTOR_ID, "no audio stream"))
    utterance_dir = tmp_path / "features" / "logmel"
    written = export_npy(store, utterance_dir, level="utterance")
    assert sorted(p.name for p in written) == ["a.npy", "b%2Fc.npy", "gone.npy"]
    vector = np.load(utterance_dir / "a.npy")
    assert vector.shape == (DIM,) and vector.dtype == np.float32
    np.testing.assert_allclose(vector, store.read_utterance("a")[0])
    assert np.all(np.load(utterance_dir / "gone.npy") == 0)
    assert (utterance_dir / "missing.txt").read_text().split() == ["gone"]

    frame_dir = tmp_path / "frame"
    export_npy(store, frame_dir, level="frame", missing="skip")
    assert np.load(frame_dir / "a.npy").shape == (4, DIM)  # valid frames only
    assert np.load(frame_dir / "b%2Fc.npy").shape == (3, DIM)
    assert not (frame_dir / "gone.npy").exists()
    with pytest.raises(ValueError, match="level"):
        export_npy(store, frame_dir, level="clip")


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-7])


def _empty(path):
    path.write_bytes(b"")


def _nan_tail(path):
    data = path.read_bytes()
    path.write_bytes(data[:-16] + b"\xff" * 16)  # 0xffffffff is a float32 NaN


@pytest.mark.parametrize("damage", [_truncate, _empty, _nan_tail], ids=["truncated", "empty", "nan_tail"])
def test_corrupt_segment_file_is_not_stored_and_reads_name_segment_and_file(store, damage):
    """Issue 16 D5: a damaged file counts as not stored (extract rewrites it); reads name segment and file."""
    store.write("dia0_utt0", sequence(frames=6))
    store.write("dia0_utt1", sequence(frames=6, seed=1))
    path = store.segments_dir / "dia0_utt0.safetensors"
    damage(path)
    assert not store.has("dia0_utt0") and "dia0_utt0" not in store and store.has("dia0_utt1")
    assert store.usable_segment_ids() == ["dia0_utt1"]
    assert store.segment_ids() == ["dia0_utt0", "dia0_utt1"]  # the listing stays what is on disk
    for read in (store.read, store.verify):
        with pytest.raises(store_module.CorruptSegmentError, match="dia0_utt0") as caught:
            read("dia0_utt0")
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    if damage is not _nan_tail:  # a broken header or size fails every read, the lazy utterance one included
        with pytest.raises(ValueError, match="dia0_utt0"):
            store.read_utterance("dia0_utt0")
    store.write("dia0_utt0", sequence(frames=6))  # rewriting it makes it usable again
    assert store.has("dia0_utt0") and store.read("dia0_utt0").num_frames == 6
