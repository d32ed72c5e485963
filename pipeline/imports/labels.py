"""Label tables that come beside published features, read into manifest columns.

    labels = read_label_table("MOSI/label.csv")    # MMSA: id,text,label,mode (or video_id,clip_id,...)
    labels = read_label_table("labels.csv")        # generic: segment_id,emotion,sentiment,split,...

An MMSA label.csv (id or video_id + clip_id, label, mode; numeric labels) is parsed by the corpus
recipes' reader, `affectflow.datasets.labels.mmsa_rows`. Other tables: columns recognised
(case-insensitive) are the id (`segment_id`, `id`, `name`, or `video_id` + `clip_id`, joined as
`<video>_<clip>`), `split` / `mode` (train / valid / test with the usual aliases), `sentiment` (or a
numeric `label`), `emotion` (or a `label` of words), `text`, `speaker`, `dialogue_id`. Without a
dialogue column, `dialogue_id` is the video: the `video_id` column, or `<video>` of an id
`<video>_<n>`; `utterance_index` is n, or the rank by start time for MOSEI's clips ("82_7645" =
82.7645 s, see `clip_order`). A sentiment cell that is neither empty nor a finite number, or a `label`
column mixing numbers and words, is refused naming file:line, column and cell (never a silently
dropped column). Returns a table indexed by nothing, one row per id, columns: segment_id, dialogue_id, utterance_index,
speaker, text, emotion, sentiment, split.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from affectflow.datasets.labels import (LabelRow, clip_start_time, mmsa_missing_columns, mmsa_rows, parse_label_number,
                                        read_label_csv)
from affectflow.pipeline.core.names import normalize_split

LABEL_COLUMNS: tuple[str, ...] = ("segment_id", "dialogue_id", "utterance_index", "speaker", "text", "emotion",
                                  "sentiment", "split")


def split_video_id(segment_id: str) -> tuple[str | None, int | None]:
    """'<video>_<n>' -> (video, n); (None, None) when the id has no numeric suffix."""
    video, sep, clip = str(segment_id).rpartition("_")
    if sep and video and clip.isdigit():
        return video, int(clip)
    return None, None


def clip_order(video_ids: list[str], clip_ids: list[str]) -> list[int | None]:
    """utterance_index per (video, clip): the clip id when it is a whole number (MOSI), the rank by start
    time within the video for MOSEI's time-like clip ids ("82_7645" = 82.7645 s), else None."""
    by_video = defaultdict(list)
    for row, (video, clip) in enumerate(zip(video_ids, clip_ids)):
        start = None if clip.isdigit() else clip_start_time(clip)
        if start is not None:
            by_video[video].append((start, row))
    ranks = {row: rank for starts in by_video.values() for rank, (_, row) in enumerate(sorted(starts))}
    return [int(clip) if clip.isdigit() else ranks.get(row) for row, clip in enumerate(clip_ids)]


def _ids(table: pd.DataFrame, path: Path) -> pd.Series:
    """The segment id column of a label table (ValueError naming the file when there is none)."""
    for column in ("segment_id", "id", "name"):
        if column in table.columns:
            return table[column].str.strip()
    if {"video_id", "clip_id"} <= set(table.columns):
        return table["video_id"].str.strip() + "_" + table["clip_id"].str.strip()
    raise ValueError(f"{path}: no id column (expected segment_id, id, name, or video_id + clip_id); "
                     f"columns are {list(table.columns)}")


def _is_number(value: str) -> bool:
    try:
        return parse_label_number(value, "", "") is not None
    except ValueError:
        return False


def _numbers(cells: pd.Series, path: Path, column: str) -> pd.Series:
    """A column of number cells -> floats (NaN where empty); ValueError naming file:line for another cell."""
    return pd.Series([parse_label_number(v, f"{path}:{i + 2}", column) for i, v in enumerate(cells)],
                     index=cells.index, dtype="float64")


def _label_kind(cells: pd.Series, path: Path) -> str:
    """"sentiment" when every filled `label` cell is a number, "emotion" when none is; a mix is refused
    naming the first cell of the minority kind (the likely typo)."""
    filled = cells.str.strip() != ""
    numeric = cells[filled].map(_is_number)
    if numeric.all():
        return "sentiment"
    if not numeric.any():
        return "emotion"
    odd = numeric[numeric != (numeric.mean() >= 0.5)].index[0]
    kind = "a word among numbers" if numeric.mean() >= 0.5 else "a number among words"
    raise ValueError(f"{path}:{int(odd) + 2}: column 'label': {cells[odd]!r} is {kind}; fix the cell (or leave "
                     f"it empty for an unlabelled segment)")


def _label_columns(table: pd.DataFrame, result: pd.DataFrame, path: Path) -> None:
    """sentiment / emotion of `result` from the table's sentiment, emotion or label column."""
    if "sentiment" in table.columns:
        result["sentiment"] = _numbers(table["sentiment"], path, "sentiment")
    if "emotion" in table.columns:
        result["emotion"] = table["emotion"].str.strip().replace("", None)
    if "label" in table.columns:
        kind = _label_kind(table["label"], path)
        if kind == "sentiment" and "sentiment" not in result.columns:
            result["sentiment"] = _numbers(table["label"], path, "label")
        elif kind == "emotion" and "emotion" not in result.columns:
            result["emotion"] = table["label"].str.strip().replace("", None)


def _splits(table: pd.DataFrame, path: Path) -> pd.Series:
    column = "split" if "split" in table.columns else "mode" if "mode" in table.columns else None
    if column is None:
        return pd.Series([None] * len(table), dtype="object")
    return table[column].map(lambda v: normalize_split(v, f"{path}: {column}") if str(v).strip() else None)


def _is_mmsa_table(table: pd.DataFrame) -> bool:
    """An MMSA label.csv: its id, label and mode columns, numeric labels, no generic label columns."""
    return (not mmsa_missing_columns(table.columns) and not {"sentiment", "emotion", "split"} & set(table.columns)
            and table["label"].map(_is_number).any())


def _mmsa_table(rows: list[LabelRow]) -> pd.DataFrame:
    """`LabelRow`s of an MMSA label.csv -> LABEL_COLUMNS."""
    return pd.DataFrame({
        "segment_id": [f"{row.video_id}_{row.clip_id}" for row in rows],
        "dialogue_id": [row.video_id for row in rows],
        "utterance_index": clip_order([row.video_id for row in rows], [row.clip_id for row in rows]),
        "speaker": None, "text": [row.text or None for row in rows], "emotion": None,
        "sentiment": pd.array([np.nan if row.sentiment is None else row.sentiment for row in rows], dtype="float64"),
        "split": [row.split for row in rows]}, columns=list(LABEL_COLUMNS))


def _generic_table(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    result = pd.DataFrame({"segment_id": _ids(table, path)})
    parsed = [split_video_id(s) for s in result["segment_id"]]
    if "dialogue_id" in table.columns:
        result["dialogue_id"] = table["dialogue_id"].str.strip().replace("", None)
    elif {"video_id", "clip_id"} <= set(table.columns):  # the pair is exact: MOSEI's clip "82_7645" has a "_"
        result["dialogue_id"] = table["video_id"].str.strip()
    else:
        result["dialogue_id"] = [video for video, _ in parsed]
    if {"video_id", "clip_id"} <= set(table.columns):
        result["utterance_index"] = clip_order(table["video_id"].str.strip().tolist(),
                                               table["clip_id"].str.strip().tolist())
    else:
        result["utterance_index"] = [index for _, index in parsed]
    for column in ("speaker", "text"):
        result[column] = table[column].replace("", None) if column in table.columns else None
    _label_columns(table, result, path)
    result["split"] = _splits(table, path)
    for column in LABEL_COLUMNS:
        if column not in result.columns:
            result[column] = np.nan if column == "sentiment" else None
    return result[list(LABEL_COLUMNS)]


def read_label_table(path: str | Path) -> pd.DataFrame:
    """Read a label CSV (MMSA label.csv or a generic id/label table) -> LABEL_COLUMNS (see module doc).

    Raises FileNotFoundError, or ValueError naming the file (and line, column, cell) for a missing id
    column, duplicate ids, an unknown split name or a label cell that is not a number.
    """
    path = Path(path)
    table, _ = read_label_csv(path)
    result = _mmsa_table(mmsa_rows(table, path)) if _is_mmsa_table(table) else _generic_table(table, path)
    duplicated = result["segment_id"][result["segment_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"{path}: duplicate ids {duplicated[:5]}")
    return result
