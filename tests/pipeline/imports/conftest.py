"""Generated published-feature layouts for the importer tests (MMSA pickle, .npy folder, declare-lab CSV)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

MMSA_SPLITS = {"train": ["v1$_$1", "v1$_$2", "v1$_$3", "v2$_$1", "v2$_$2", "v3$_$1"],
               "valid": ["v4$_$1", "v4$_$2"], "test": ["v5$_$1", "v5$_$2", "v6$_$1"]}
DIMS = {"text": 8, "audio": 4, "vision": 3}


def mmsa_part(ids: list[str], generator: np.random.Generator, frame_level: bool) -> dict:
    """One MMSA split: frame-level [N, T, D] arrays with lengths and BERT token ids, or [N, D] vectors."""
    n = len(ids)
    part = {"id": np.array(ids, dtype=object), "raw_text": np.array([f"text of {i}" for i in ids], dtype=object),
            "regression_labels": generator.uniform(-3, 3, n).astype(np.float32),
            "annotations": np.array(["Positive"] * n, dtype=object)}
    if not frame_level:
        part.update({key: generator.normal(size=(n, dim)).astype(np.float32) for key, dim in DIMS.items()})
        return part
    text_lengths = generator.integers(2, 6, n)
    bert = np.zeros((n, 3, 5), dtype=np.float32)
    bert[:, 0] = 101
    bert[:, 1] = np.arange(5)[None, :] < text_lengths[:, None]
    part.update({"text": generator.normal(size=(n, 5, DIMS["text"])).astype(np.float32), "text_bert": bert,
                 "audio": generator.normal(size=(n, 6, DIMS["audio"])).astype(np.float32),
                 "vision": generator.normal(size=(n, 7, DIMS["vision"])).astype(np.float32),
                 "audio_lengths": generator.integers(1, 7, n).tolist(),
                 "vision_lengths": generator.integers(1, 8, n).tolist()})
    return part


def write_mmsa_pickle(path: Path, frame_level: bool = True, seed: int = 0, protocol: int = 4) -> dict:
    """An MMSA-style {train, valid, test} pickle at `path`; returns the data (test split's first audio length 0)."""
    generator = np.random.default_rng(seed)
    data = {split: mmsa_part(ids, generator, frame_level) for split, ids in MMSA_SPLITS.items()}
    if frame_level:
        data["test"]["audio_lengths"][0] = 0  # v5_1 has no audio at all
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return data


@pytest.fixture
def mmsa_pickle(tmp_path) -> tuple[Path, dict]:
    path = tmp_path / "aligned_5.pkl"
    return path, write_mmsa_pickle(path)


NPY_IDS = {"train": ["dia1_utt0", "dia1_utt1", "dia2_utt0", "dia2_utt1", "dia3_utt0", "dia 4/x"],
           "valid": ["dia5_utt0", "dia5_utt1"], "test": ["dia6_utt0", "dia6_utt1"]}


@pytest.fixture
def npy_folder(tmp_path) -> tuple[Path, Path, dict]:
    return write_npy_folder(tmp_path)


def write_npy_folder(tmp_path: Path) -> tuple[Path, Path, dict]:
    """MERBench-style folders (audio utterance-level [4], text frame-level [T, 8], vision utterance [3] with
    one file absent and one listed in missing.txt) + labels.csv; returns (root, labels, {(folder, id): array})."""
    root, generator, arrays = tmp_path / "features", np.random.default_rng(3), {}
    rows = []
    for split, ids in NPY_IDS.items():
        for index, segment_id in enumerate(ids):
            rows.append({"segment_id": segment_id, "emotion": ["happy", "sad"][index % 2],
                         "sentiment": float(index) - 0.5, "split": split, "dialogue_id": segment_id.split("_")[0]})
    for folder, shape in (("wavlm-UTT", (4,)), ("roberta-FRA", None), ("manet-UTT", (3,))):
        (root / folder).mkdir(parents=True)
        for row in rows:
            segment_id = row["segment_id"]
            if folder == "manet-UTT" and segment_id == "dia2_utt1":
                continue  # no face: no file
            array = generator.normal(size=shape or (int(generator.integers(1, 5)), 8)).astype(np.float32)
            name = segment_id.replace(" ", "%20").replace("/", "%2F")
            np.save(root / folder / f"{name}.npy", array)
            arrays[(folder, segment_id)] = array
    (root / "manet-UTT" / "missing.txt").write_text("dia3_utt0\n")
    np.save(root / "wavlm-UTT" / "unlabelled_extra.npy", np.zeros(4, np.float32))
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    return root, labels, arrays


def write_declare_lab_tree(root: Path, seed: int = 0) -> dict:
    """A small declare-lab-csv tree: 3 train videos + 1 test video, 4 utterances each, rows aligned across
    modalities, text_<split>.csv indexing into transcripts.csv; label.csv lacks one id. Returns the data."""
    generator = np.random.default_rng(seed)
    videos = {"train": ["vidA", "vidB", "vidC"], "test": ["vidD"]}
    ids = [f"{video}_{n}" for split in videos.values() for video in split for n in range(1, 5)]
    root.mkdir(parents=True)
    transcripts = pd.DataFrame({"id": ids, "text": [f"SAID {i}" for i in ids], "n": 1,
                                "label": generator.integers(0, 2, len(ids))})
    transcripts.to_csv(root / "transcripts.csv", header=False, index=False)
    dims = {"text": 6, "audio": 5, "video": 4}
    data = {"ids": {}, "features": {}, "binary": dict(zip(ids, transcripts["label"]))}
    for split, split_videos in videos.items():
        rows = [i for i, segment in enumerate(ids) if segment.rsplit("_", 1)[0] in split_videos]
        rows = list(generator.permutation(rows))  # rows need not follow transcript order
        data["ids"][split] = [ids[r] for r in rows]
        labels = transcripts["label"].to_numpy()[rows]
        for prefix, dim in dims.items():
            values = generator.normal(size=(len(rows), dim))
            pd.DataFrame(np.column_stack([values, labels])).to_csv(root / f"{prefix}_{split}0.csv", header=False,
                                                                   index=False)
            data["features"].update({(prefix, ids[r]): values[k] for k, r in enumerate(rows)})
            if prefix == "text":
                pd.DataFrame(np.column_stack([rows, values])).to_csv(root / f"text_{split}.csv", header=False,
                                                                     index=False)
    sentiment = {i: (1.5 if data["binary"][i] else -1.5) for i in ids[:-1]}  # the last id has no continuous label
    pd.DataFrame({"id": list(sentiment), "text": "x", "label": list(sentiment.values()), "mode": "train"}).to_csv(
        root / "label.csv", index=False)
    data["sentiment"] = sentiment
    return data
