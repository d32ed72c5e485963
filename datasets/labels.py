"""Label files shared by CMU-MOSEI and CMU-MOSI: MMSA `label.csv` and CMU-MultimodalSDK `.csd`.

MMSA `label.csv`: ``video_id,clip_id,text,label,mode`` (MOSEI; optional ``annotation``) or
``id,text,label,mode`` with ``id = <video_id>_<clip_id>`` (MOSI). `label` is the sentiment in
[-3, 3]; `mode` the split (train / valid|dev / test). Every id column is read as text: video ids can
be numeric ("0123") or start with "-".

SDK `.csd` (HDF5): ``<root>/data/<video_id>/features`` (n, k) float and
``<root>/data/<video_id>/intervals`` (n, 2) seconds, one row per labelled segment. MOSEI labels
have k = 7: [sentiment, happy, sad, anger, surprise, disgust, fear]; MOSI opinion labels k = 1.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from affectflow.pipeline.core.names import normalize_split

from affectflow.datasets.text import decode_annotation_bytes
from affectflow.datasets.validation import ValidationReport

MOSEI_EMOTIONS: tuple[str, ...] = ("happy", "sad", "anger", "surprise", "disgust", "fear")


@dataclass(frozen=True)
class LabelRow:
    """One labelled segment of an MMSA label.csv (ids as text; sentiment a float)."""

    video_id: str
    clip_id: str
    text: str | None
    sentiment: float | None
    split: str | None
    annotation: str | None
    location: str


@dataclass(frozen=True)
class CsdVideo:
    """One video's entry of a .csd: features [n, k] and intervals [n, 2] (seconds)."""

    video_id: str
    features: np.ndarray
    intervals: np.ndarray


MMSA_ID_COLUMNS: tuple[tuple[str, ...], ...] = (("video_id", "clip_id"), ("id",))
"""The id columns of an MMSA label.csv: MOSEI's pair, or MOSI's single `<video>_<clip>` column."""


def _split_id(identifier: str, location: str) -> tuple[str, str]:
    # MOSI ids are <video>_<segment>; video ids may themselves contain "_", so split on the last one.
    video_id, sep, clip_id = identifier.rpartition("_")
    if not sep or not video_id or not clip_id:
        raise ValueError(f"{location}: id {identifier!r} is not <video_id>_<clip_id>")
    return video_id, clip_id


def clip_start_time(clip_id: str) -> float | None:
    """The start time encoded in a clip id like ``82_7645`` (82.7645 s; MOSEI's MMSA label.csv); None for other ids."""
    whole, sep, fraction = clip_id.partition("_")
    if not sep or not whole.isdigit() or not fraction.isdigit():
        return None
    return float(f"{whole}.{fraction}")


def parse_label_number(value: str, location: str, column: str) -> float | None:
    """One label cell -> a finite float, or None when empty (or "nan": unlabelled).

    ValueError naming `location` (file:line), the column and the cell for anything else ("n/a?", "inf").
    """
    text = str(value).strip()
    if not text or text.lower() == "nan":
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is None or not np.isfinite(number):
        raise ValueError(f"{location}: column {column!r}: {value!r} is not a finite number")
    return number


def read_label_csv(path: str | Path) -> tuple[pd.DataFrame, int]:
    """Any label CSV (with a header) -> (its cells as text, header names stripped and lower-cased;
    the number of bytes that were not UTF-8 and were read as cp1252).

    Every cell is text: video ids can be numeric ("0123") or start with "-". FileNotFoundError, or
    ValueError naming the file when it is empty or not a CSV.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    text, cp1252_bytes = decode_annotation_bytes(path.read_bytes())
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file, not a label CSV") from None
    except (ValueError, pd.errors.ParserError) as error:
        raise ValueError(f"{path}: not a readable CSV ({str(error).strip()})") from None
    table.columns = [str(column).strip().lower() for column in table.columns]
    return table, cp1252_bytes


def mmsa_missing_columns(columns) -> list[str]:
    """The columns an MMSA label.csv needs that `columns` lacks ([] for an MMSA label table)."""
    columns = set(columns)
    ids = next((set(pair) for pair in MMSA_ID_COLUMNS if set(pair) <= columns), {"id"})
    return sorted(({"label", "mode"} | ids) - columns)


def mmsa_rows(table: pd.DataFrame, path: Path, report: ValidationReport | None = None) -> list[LabelRow]:
    """The rows of an MMSA label table (from `read_label_csv`) as `LabelRow`s.

    A bad id, split or label cell is reported (file:line) into `report`: the row is skipped (id, split)
    or kept unlabelled (label). Without a report it is refused: ValueError naming file:line, column, cell.
    """
    missing = mmsa_missing_columns(table.columns)
    if missing:
        raise ValueError(f"{path}: not an MMSA label.csv, missing columns {missing} "
                         "(expected video_id,clip_id,text,label,mode or id,text,label,mode)")
    has_pair = {"video_id", "clip_id"} <= set(table.columns)
    rows = []
    for index, record in enumerate(table.to_dict(orient="records")):
        location = f"{path.name}:{index + 2}" if report is not None else f"{path}:{index + 2}"
        try:
            video_id, clip_id = ((record["video_id"].strip(), record["clip_id"].strip()) if has_pair
                                 else _split_id(record["id"].strip(), location))
            split = normalize_split(record["mode"], location) if record["mode"].strip() else None
        except ValueError as error:
            if report is None:
                raise
            report.add_issue(location, f"{error}; row skipped")
            continue
        try:
            sentiment = parse_label_number(record["label"], location, "label")
        except ValueError:
            if report is None:
                raise
            sentiment = None
        if sentiment is None and report is not None:
            report.add("missing_label", f"{video_id}_{clip_id}", f"label {record['label']!r} is not a number")
        rows.append(LabelRow(video_id, clip_id, record.get("text"), sentiment, split,
                             (record.get("annotation") or "").strip().lower() or None, f"{path.name}:{index + 2}"))
    return rows


def read_mmsa_rows(path: str | Path, report: ValidationReport | None = None) -> list[LabelRow]:
    """Parse an MMSA label.csv into `LabelRow`s: bad rows are reported (file:line) into `report` and
    skipped or kept unlabelled; without a report the first bad cell is a ValueError (see `mmsa_rows`)."""
    path = Path(path)
    table, cp1252_bytes = read_label_csv(path)
    if cp1252_bytes and report is not None:
        report.add_issue(str(path), f"{cp1252_bytes} bytes were not UTF-8 and were read as cp1252")
    return mmsa_rows(table, path, report)


def read_csd(path: str | Path) -> list[CsdVideo]:
    """Read a CMU-MultimodalSDK computational sequence (.csd, HDF5) -> one `CsdVideo` per video."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    videos = []
    try:
        with h5py.File(path, "r") as handle:
            roots = [key for key in handle.keys() if isinstance(handle[key], h5py.Group) and "data" in handle[key]]
            if len(roots) != 1:
                raise ValueError(f"{path}: expected one top-level group with a 'data' group, found {list(handle.keys())}")
            data = handle[roots[0]]["data"]
            for video_id in data.keys():
                group = data[video_id]
                if "features" not in group or "intervals" not in group:
                    raise ValueError(f"{path}: video {video_id!r} lacks 'features' or 'intervals'")
                features = np.asarray(group["features"], dtype=np.float64)
                intervals = np.asarray(group["intervals"], dtype=np.float64)
                if features.ndim != 2 or intervals.shape != (features.shape[0], 2):
                    raise ValueError(f"{path}: video {video_id!r} has features {features.shape} and "
                                     f"intervals {intervals.shape}; expected (n, k) and (n, 2)")
                videos.append(CsdVideo(str(video_id), features, intervals))
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 .csd file ({error})") from None
    return videos


def load_folds(folds: str | Path | dict | None, sdk_dataset: str = "cmu_mosei") -> dict[str, str]:
    """Video id -> split from a {"train": [...], "valid": [...], "test": [...]} dict or JSON file,
    or (folds=None) from an installed CMU-MultimodalSDK's standard folds of `sdk_dataset`
    ("cmu_mosei" / "cmu_mosi"); {} when there is none."""
    if folds is None:
        try:
            from mmsdk import mmdatasdk  # optional: the SDK ships the standard fold lists
        except ImportError:
            return {}
        standard = getattr(mmdatasdk, sdk_dataset).standard_folds
        folds = {"train": standard.standard_train_fold, "valid": standard.standard_valid_fold,
                 "test": standard.standard_test_fold}
    elif not isinstance(folds, dict):
        path = Path(folds)
        try:
            folds = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read folds JSON ({error})") from None
    by_video = {}
    for split, videos in folds.items():
        for video_id in videos:
            by_video[str(video_id)] = normalize_split(split, "folds")
    return by_video
