"""Datasets over real feature stores: missingness, levels, collation, bucketing, normalisation, folds."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from affectflow.extractors.store import FeatureStore
from affectflow.fusion.contract import TaskSpec
from affectflow.pipeline.train import data
from factories.features import make_feature_corpus, synthetic_spec
from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.core.records import FeatureSequence
from factories.tolerances import FLOAT32_UNIT_ROUNDOFF, float32_mean_bound

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_feature_corpus(tmp_path_factory.mktemp("corpus"), split_sizes={"train": 24, "valid": 8, "test": 8},
                               missing_rate=0.2, seed=3)


def _task(stores, level="utterance", kind="classification"):
    names = ("class0", "class1", "class2") if kind == "classification" else ()
    return TaskSpec(kind, {m: s.output_dim for m, s in stores.items()}, names, level=level)


def test_splits_and_aliases(table):
    assert len(data.split_rows(table, "train")) == 24
    dev = table.assign(split=table["split"].replace({"valid": "dev"}))
    assert len(data.split_rows(dev, "validation")) == 8
    with pytest.raises(ValueError, match="unknown split"):
        data.split_rows(table, "holdout")
    assert data.class_names_from(table, "emotion") == ("class0", "class1", "class2")


def test_utterance_items_carry_real_missingness(table, stores):
    rows = data.split_rows(table, "train")
    dataset = data.MultimodalDataset(rows, stores, _task(stores), "emotion")
    assert len(dataset) == 24
    for index in range(len(dataset)):
        item = dataset[index]
        for m in "atv":
            vector, present = stores[m].read_utterance(item.item_id)
            assert item.present[m] == present
            assert item.features[m].shape == (1, stores[m].output_dim)
            np.testing.assert_allclose(item.features[m][0], vector)
    assert any(not item.present[m] for item in map(dataset.__getitem__, range(24)) for m in "atv")
    assert dataset[0].target == ["class0", "class1", "class2"].index(rows.loc[0, "emotion"])


def test_frame_level_collation_pads_and_masks(table, stores):
    dataset = data.MultimodalDataset(data.split_rows(table, "train"), stores, _task(stores), "emotion", frame_level=True)
    items = [dataset[i] for i in range(6)]
    batch = data.collate(items, dataset.task)
    for m in "atv":
        longest = max(item.features[m].shape[0] for item in items)
        assert batch.inputs.features[m].shape == (6, longest, stores[m].output_dim)
        for b, item in enumerate(items):
            t = item.features[m].shape[0]
            assert batch.inputs.masks[m][b, :t].tolist() == item.masks[m].tolist()
            assert not batch.inputs.masks[m][b, t:].any()
            assert batch.inputs.presence[b, "atv".index(m)].item() == item.present[m]
    assert batch.targets.dtype == torch.long and batch.ids == [item.item_id for item in items]


def test_conversation_items_follow_utterance_index(table, stores):
    shuffled = data.split_rows(table, "train").sample(frac=1.0, random_state=0)
    dataset = data.MultimodalDataset(shuffled, stores, _task(stores, level="conversation"), "emotion")
    assert len(dataset) == 6  # 24 utterances in dialogues of 4
    item = dataset[0]
    order = shuffled.set_index("segment_id").loc[item.segment_ids, "utterance_index"].tolist()
    assert order == sorted(order) and len(item.segment_ids) == 4
    batch = data.collate([dataset[0], dataset[1]], dataset.task)
    assert batch.targets.shape == (2, 4) and batch.inputs.features["a"].shape[:2] == (2, 4)
    flags = [stores["a"].read_utterance(s)[1] for s in item.segment_ids]
    assert batch.inputs.masks["a"][0].tolist() == flags
    with pytest.raises(ValueError, match="frame_level"):
        data.MultimodalDataset(shuffled, stores, _task(stores, level="conversation"), "emotion", frame_level=True)


def test_regression_targets_and_unlabelled_rows(tmp_path):
    corpus = make_feature_corpus(tmp_path, kind="regression", split_sizes={"train": 6, "valid": 2, "test": 2}, seed=1)
    table = read_manifest(corpus.manifest)
    stores = data.open_feature_stores(corpus.features)
    dataset = data.MultimodalDataset(data.split_rows(table, "train"), stores, _task(stores, kind="regression"), "sentiment")
    assert dataset.targets.dtype == np.float64
    np.testing.assert_allclose(dataset.targets, data.split_rows(table, "train")["sentiment"].to_numpy())
    unlabelled = data.MultimodalDataset(data.split_rows(table, "test"), stores, _task(stores, kind="regression"), None)
    assert np.isnan(unlabelled.targets).all()


def test_bad_labels_and_missing_entries_raise(table, stores):
    rows = data.split_rows(table, "train").copy()
    rows.loc[2, "emotion"] = "ecstatic"
    with pytest.raises(ValueError, match="ecstatic"):
        data.MultimodalDataset(rows, stores, _task(stores), "emotion")
    rows = data.split_rows(table, "train").copy()
    rows.loc[1, "emotion"] = pd.NA
    with pytest.raises(ValueError, match="train_"):
        data.MultimodalDataset(rows, stores, _task(stores), "emotion")
    extra = pd.concat([data.split_rows(table, "train"), data.split_rows(table, "train").head(1).assign(segment_id="ghost")])
    with pytest.raises(ValueError, match="ghost"):
        data.MultimodalDataset(extra, stores, _task(stores), "emotion")
    lenient = data.MultimodalDataset(extra, stores, _task(stores), "emotion", missing_entries="missing")
    assert not any(lenient[len(lenient) - 1].present.values())


def test_modality_without_store_is_always_missing(table, stores):
    partial = {"a": None, "t": stores["t"], "v": None}
    task = TaskSpec("classification", {"a": 4, "t": stores["t"].output_dim, "v": 2}, ("class0", "class1", "class2"))
    dataset = data.MultimodalDataset(data.split_rows(table, "train"), partial, task, "emotion")
    normalizer = data.FeatureNormalizer.fit(dataset)
    assert normalizer.std["a"].tolist() == [1.0] * 4
    assert not dataset[0].present["a"] and dataset[0].features["v"].shape == (1, 2)


def test_normalizer_uses_train_frames_only(table, stores):
    train = data.MultimodalDataset(data.split_rows(table, "train"), stores, _task(stores), "emotion", frame_level=True)
    normalizer = data.FeatureNormalizer.fit(train)
    frames = [stores["a"].read(s) for s in train.segment_ids]
    stacked = np.concatenate([f.values[f.mask] for f in frames])
    # float64 mean cast to float32 vs numpy's float32 mean of the same frames
    scale = float(np.abs(stacked).max())
    np.testing.assert_allclose(normalizer.mean["a"], stacked.mean(axis=0), rtol=0,
                               atol=float32_mean_bound(len(stacked), scale) + FLOAT32_UNIT_ROUNDOFF * scale)
    np.testing.assert_allclose(normalizer.std["a"], stacked.std(axis=0), rtol=1e-4)
    restored = data.FeatureNormalizer.from_dict(normalizer.to_dict())
    np.testing.assert_array_equal(restored.mean["t"], normalizer.mean["t"])
    train.normalizer = normalizer
    item = train[0]
    raw = train.raw_item(0)
    for m in "atv":
        expected = np.where(raw.masks[m][:, None], (raw.features[m] - normalizer.mean[m]) / normalizer.std[m], 0)
        np.testing.assert_allclose(item.features[m], expected, rtol=1e-5, atol=1e-6)


def test_length_bucket_sampler():
    lengths = np.random.default_rng(0).integers(1, 50, size=103)
    sampler = data.LengthBucketSampler(lengths, batch_size=8, shuffle=True, seed=4, pool_batches=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 13
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert list(sampler) == batches  # same epoch -> same order
    sampler.set_epoch(1)
    assert list(sampler) != batches
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[np.random.default_rng(i).choice(103, 8)]) for i in range(50)])
    assert spread < random_spread / 2
    ordered = list(data.LengthBucketSampler(lengths, batch_size=10, shuffle=False))
    assert [lengths[i] for b in ordered for i in b] == sorted(lengths.tolist())
    with pytest.raises(ValueError):
        data.LengthBucketSampler(lengths, batch_size=0)


def test_make_loader_yields_batches(table, stores):
    dataset = data.MultimodalDataset(data.split_rows(table, "valid"), stores, _task(stores), "emotion", frame_level=True)
    batches = list(data.make_loader(dataset, batch_size=3, shuffle=False))
    assert sum(b.inputs.batch_size for b in batches) == 8


def test_leave_one_session_out(table):
    folds = data.session_folds(table)
    assert folds == ["Ses01", "Ses02", "Ses03", "Ses04", "Ses05"]
    fold = data.leave_one_session_out(table, "Ses02", valid_fraction=0.25, seed=0)
    assert (fold.loc[fold["split"] == "test", "session"] == "Ses02").all()
    assert set(fold.loc[fold["session"] == "Ses02", "split"]) == {"test"}
    assert {"train", "valid"} <= set(fold["split"])
    per_dialogue = fold.groupby("dialogue_id")["split"].nunique()
    assert (per_dialogue == 1).all()  # whole dialogues per split
    with pytest.raises(ValueError, match="Ses09"):
        data.leave_one_session_out(table, "Ses09")
    with pytest.raises(ValueError, match="session"):
        data.leave_one_session_out(table.drop(columns=["session"]), "Ses01")


def test_open_feature_stores_discovery(tmp_path, corpus):
    stores = data.open_feature_stores(corpus.features)
    assert sorted(stores) == ["a", "t", "v"]
    ambiguous = tmp_path / "ambiguous"
    shutil.copytree(corpus.features, ambiguous)
    second = FeatureStore.create(ambiguous / "t-other", synthetic_spec("t", 10, seed=99))
    second.write("x", FeatureSequence.missing(10, second.extractor_id, "none"))
    (ambiguous / "logs").mkdir()  # not a store: ignored
    with pytest.raises(ValueError, match="several 't' feature stores"):
        data.open_feature_stores(ambiguous)
    picked = data.open_feature_stores(ambiguous, expected={"t": second.spec})
    assert picked["t"].spec.config_hash == second.spec.config_hash
    chosen = data.open_feature_stores(corpus.features, {"t": second.root})
    assert chosen["t"].spec.config_hash == second.spec.config_hash
    with pytest.raises(ValueError, match="holds modality"):
        data.open_feature_stores(None, {"a": second.root})
    with pytest.raises(ValueError, match="not found"):
        data.open_feature_stores(tmp_path / "nowhere")
