"""Label tables that come beside published features, read into manifest columns.

    labels = read_label_table("MOSI/label.csv")    # MMSA: id,text,label,mode (or video_id,clip_id,...)
    labels = read_label_table("labels.csv")        # generic: segment_id,emotion,sentiment,split,...

Columns recognised (case-insensitive): the id (`segment_id`, `id`, `name`, or `video_id` + `clip_id`,
joined as `<video>_<clip>`), `split` / `mode` (train / valid / test with the usual aliases),
`sentiment` (or a numeric `label`), `emotion` (or a non-numeric `label`), `text`, `speaker`,
`dialogue_id`. Ids of the form `<video>_<n>` give `dialogue_id` = video and `utterance_index` = n
when the table has no dialogue column (MOSI, MOSEI). Returns a table indexed by nothing, one row per
id, columns: segment_id, dialogue_id, utterance_index, speaker, text, emotion, sentiment, split.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from affectflow.datasets.text import decode_annotation_bytes
from affectflow.pipeline.core.names import normalize_split

LABEL_COLUMNS: tuple[str, ...] = ("segment_id", "dialogue_id", "utterance_index", "speaker", "text", "emotion",
                                  "sentiment", "split")


def split_video_id(segment_id: str) -> tuple[str | None, int | None]:
    """'<video>_<n>' -> (video, n); (None, None) when the id has no numeric suffix."""
    video, sep, clip = str(segment_id).rpartition("_")
    if sep and video and clip.isdigit():
        return video, int(clip)
    return None, None


def _ids(table: pd.DataFrame, path: Path) -> pd.Series:
    """The segment id column of a label table (ValueError naming the file when there is none)."""
    for column in ("segment_id", "id", "name"):
        if column in table.columns:
            return table[column].str.strip()
    if {"video_id", "clip_id"} <= set(table.columns):
        return table["video_id"].str.strip() + "_" + table["clip_id"].str.strip()
    raise ValueError(f"{path}: no id column (expected segment_id, id, name, or video_id + clip_id); "
                     f"columns are {list(table.columns)}")


def _numeric(series: pd.Series) -> pd.Series | None:
    """`series` as floats when every non-empty value is a number, else None."""
    values = pd.to_numeric(series.where(series.str.strip() != "", None), errors="coerce")
    return values if values.notna().sum() == (series.str.strip() != "").sum() else None


def _label_columns(table: pd.DataFrame, result: pd.DataFrame) -> None:
    """sentiment / emotion of `result` from the table's sentiment, emotion or label column."""
    if "sentiment" in table.columns:
        result["sentiment"] = pd.to_numeric(table["sentiment"].replace("", None), errors="raise")
    if "emotion" in table.columns:
        result["emotion"] = table["emotion"].str.strip().replace("", None)
    if "label" in table.columns:
        numbers = _numeric(table["label"])
        if numbers is not None and "sentiment" not in result.columns:
            result["sentiment"] = numbers
        elif numbers is None and "emotion" not in result.columns:
            result["emotion"] = table["label"].str.strip().replace("", None)


def _splits(table: pd.DataFrame, path: Path) -> pd.Series:
    column = "split" if "split" in table.columns else "mode" if "mode" in table.columns else None
    if column is None:
        return pd.Series([None] * len(table), dtype="object")
    return table[column].map(lambda v: normalize_split(v, f"{path}: {column}") if str(v).strip() else None)


def read_label_table(path: str | Path) -> pd.DataFrame:
    """Read a label CSV (MMSA label.csv or a generic id/label table) -> LABEL_COLUMNS (see module doc).

    Raises FileNotFoundError, or ValueError naming the file for a missing id column, duplicate ids or
    an unknown split name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    text, _ = decode_annotation_bytes(path.read_bytes())
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    table.columns = [str(c).strip().lower() for c in table.columns]
    result = pd.DataFrame({"segment_id": _ids(table, path)})
    duplicated = result["segment_id"][result["segment_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"{path}: duplicate ids {duplicated[:5]}")
    parsed = [split_video_id(s) for s in result["segment_id"]]
    if "dialogue_id" in table.columns:
        result["dialogue_id"] = table["dialogue_id"].str.strip().replace("", None)
    else:
        result["dialogue_id"] = [video for video, _ in parsed]
    result["utterance_index"] = [index for _, index in parsed]
    for column in ("speaker", "text"):
        result[column] = table[column].replace("", None) if column in table.columns else None
    _label_columns(table, result)
    result["split"] = _splits(table, path)
    for column in LABEL_COLUMNS:
        if column not in result.columns:
            result[column] = np.nan if column == "sentiment" else None
    return result[list(LABEL_COLUMNS)]
