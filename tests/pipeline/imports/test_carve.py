"""The validation carve: whole videos from train only, stratified by the label when there is one."""

from __future__ import annotations

import pandas as pd

from affectflow.pipeline.imports.writer import carve_validation


def _rows(videos: int = 60) -> pd.DataFrame:
    """10 utterances per video; the first third of the videos all positive, the rest mostly negative."""
    records = []
    for v in range(videos):
        for u in range(10):
            positive = v < videos // 3 or u < 2
            records.append({"segment_id": f"vid{v:02d}_{u}", "dialogue_id": f"vid{v:02d}",
                            "split": "test" if v >= videos - 6 else "train",
                            "polarity": "positive" if positive else "negative"})
    return pd.DataFrame(records)


def test_stratified_carve_keeps_the_label_mix_moves_whole_videos_and_never_test():
    rows = _rows()
    train_share = (rows.loc[rows.split == "train", "polarity"] == "positive").mean()
    for seed in range(5):
        carved, note = carve_validation(rows, 0.2, seed)
        valid = carved[carved.split == "valid"]
        assert "stratified by 'polarity'" in note
        assert valid["dialogue_id"].nunique() == 11 and valid["segment_id"].str.startswith("vid").all()
        assert (carved.split == "test").sum() == 60 and not valid["dialogue_id"].isin(
            carved.loc[carved.split == "train", "dialogue_id"]).any()
        assert abs((valid["polarity"] == "positive").mean() - train_share) < 0.08


def test_without_a_label_the_carve_is_a_uniform_draw():
    rows = _rows().drop(columns="polarity")
    carved, note = carve_validation(rows, 0.2, 0)
    assert "uniform draw" in note and carved[carved.split == "valid"]["dialogue_id"].nunique() == 11
