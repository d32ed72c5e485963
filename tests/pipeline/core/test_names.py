"""One table of shared names: splits (with aliases), modalities, IGNORE_INDEX."""

from __future__ import annotations

import pandas as pd
import pytest

from affectflow.fusion.contract import MODALITIES as FUSION_MODALITIES
from affectflow.pipeline.core.names import IGNORE_INDEX, MODALITIES, MODALITY_NAMES, SPLITS, normalize_split
from affectflow.pipeline.train.data import IGNORE_INDEX as TRAIN_IGNORE_INDEX
from affectflow.pipeline.train.data import split_rows


@pytest.mark.parametrize("written, canonical", [
    ("train", "train"), ("Training", "train"), (" dev ", "valid"), ("val", "valid"), ("validation", "valid"),
    ("testing", "test"), ("TEST", "test"),
])
def test_normalize_split_aliases(written, canonical):
    assert normalize_split(written) == canonical


def test_unknown_split_names_the_source():
    with pytest.raises(ValueError, match="folds.json: unknown split name 'session1'"):
        normalize_split("session1", "folds.json")


def test_split_rows_uses_the_same_aliases():
    table = pd.DataFrame({"segment_id": ["a", "b", "c"], "split": ["training", "dev", "testing"]})
    assert split_rows(table, "train")["segment_id"].tolist() == ["a"]
    assert split_rows(table, "testing")["segment_id"].tolist() == ["c"]


def test_one_modality_table_and_ignore_index():
    assert SPLITS == ("train", "valid", "test")
    assert MODALITIES == FUSION_MODALITIES == tuple(MODALITY_NAMES)
    assert MODALITY_NAMES == {"a": "audio", "t": "text", "v": "vision"}
    assert IGNORE_INDEX == TRAIN_IGNORE_INDEX == -100
