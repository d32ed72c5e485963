"""`mmsa-pickle`: MMSA's processed feature pickles (`aligned_50.pkl`, `unaligned_50.pkl`, MOSI / MOSEI / SIMS).

Layout (loaded with the restricted unpickler: numpy arrays and plain containers only)::

    {"train" | "valid" | "test": {
        "id": [N] "<video>$_$<clip>",  "raw_text": [N],
        "text": [N, L, D] or [N, D]    (text features; "text_bert" is read when "text" is absent and
                                        holds features, not MMSA's [N, 3, L] BERT token ids),
        "audio": [N, La, Da] or [N, Da],  "vision": [N, Lv, Dv] or [N, Dv],
        "audio_lengths" / "vision_lengths": [N] valid frames (padding after them),
        "regression_labels": [N] sentiment,  "annotations": [N] ..., }}

Frame-level arrays keep their frames ([T, D], level "frame"): audio / vision frames past their
`*_lengths` are padding; text frames are those of MMSA's BERT attention mask (`text_bert[:, 1]`) when
present, else the frames that are not all zero. A segment with no valid frame is stored as missing.
Segment ids become `<video>_<clip>`, dialogue_id = video (split at `$_$`, so MOSEI clips such as
`82_7645` stay whole), utterance_index = clip (MOSI) or the rank by the clip's start time within the
video (MOSEI's `82_7645` = 82.7645 s); the pickle's splits are kept. `labels` (a CSV, optional) fills
sentiment / emotion the pickle lacks, matched by id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affectflow.pipeline.core.names import SPLIT_ALIASES, normalize_split
from affectflow.pipeline.imports.labels import clip_order, read_label_table, split_video_id
from affectflow.pipeline.imports.records import ImportedCorpus, ImportedModality, real_array
from affectflow.pipeline.imports.unpickle import load_restricted_pickle

FORMAT = "mmsa-pickle"
DEFAULT_SOURCES = {"a": "audio", "t": "text", "v": "vision"}
MMSA_ID_SEPARATOR = "$_$"


def _video_clip(raw: Any) -> tuple[str, str | None, str | None]:
    """MMSA's '<video>$_$<clip>' -> ('<video>_<clip>', video, clip); other ids are kept, split at their last
    '_<number>' when they have one (MOSEI clips such as '82_7645' keep their '_': the separator is exact)."""
    text = str(raw).strip()
    video, sep, clip = text.partition(MMSA_ID_SEPARATOR)
    if sep:
        return f"{video}_{clip}", video, clip
    video, index = split_video_id(text)
    return text, video, None if index is None else str(index)


def _is_token_ids(array: np.ndarray) -> bool:
    """MMSA's text_bert: [N, 3, L] integer-valued (ids, attention mask, segment ids), not features."""
    return array.ndim == 3 and array.shape[1] == 3 and bool(np.all(array == np.round(array)))


def _text_key(part: dict, wanted: str, source: str) -> str:
    """Which key holds text features: `wanted`, else "text_bert" when it holds features."""
    if wanted in part:
        return wanted
    if wanted == "text" and "text_bert" in part:
        if _is_token_ids(real_array(part["text_bert"], f"{source}: 'text_bert'")):
            raise ValueError(f"{source}: 'text_bert' holds BERT token ids [N, 3, L], not features, and there is "
                             f"no 'text' array; extract text features with `affectflow extract` instead")
        return "text_bert"
    raise ValueError(f"{source}: no {wanted!r} array (keys: {sorted(part)})")


def _per_id(part: dict, key: str, count: int, source: str) -> np.ndarray:
    """part[key] flattened to one entry per id; ValueError naming the key when the counts differ."""
    try:
        values = np.asarray(part[key], dtype=object).reshape(-1)
    except ValueError:
        raise ValueError(f"{source}: {key!r} is ragged, expected one entry per id ({count} ids)") from None
    if values.shape[0] != count:
        raise ValueError(f"{source}: {key!r} has {values.shape[0]} entries, expected one per id ({count} ids)")
    return values


def _lengths(part: dict, key: str, count: int, source: str) -> np.ndarray:
    """[N] valid-frame counts of part[key]: whole numbers >= 0, one per id (strings are refused, not parsed)."""
    raw = _per_id(part, key, count, source)
    lengths = np.array(raw.tolist()) if count else np.zeros(0, np.int64)
    whole = lengths.dtype.kind in "iu" or (lengths.dtype.kind == "f" and bool(np.all(lengths == np.round(lengths))))
    if not whole or (lengths < 0).any():
        example = next((v for v in raw if not isinstance(v, (int, np.integer, float, np.floating))), raw[0])
        raise ValueError(f"{source}: {key!r} must hold whole numbers >= 0 (valid frames per segment); got "
                         f"{type(example).__name__} values such as {example!r}")
    return lengths.astype(np.int64)


def _frame_masks(part: dict, m: str, key: str, values: np.ndarray, source: str) -> np.ndarray:
    """[N, T] valid frames of a frame-level array (see the module docstring)."""
    lengths_key = {"a": "audio_lengths", "v": "vision_lengths"}.get(m)
    frames = np.arange(values.shape[1])[None, :]
    if lengths_key and lengths_key in part:
        return frames < _lengths(part, lengths_key, values.shape[0], source)[:, None]
    bert = part.get("text_bert")
    if m == "t" and key == "text" and bert is not None:
        bert = real_array(bert, f"{source}: 'text_bert'")
        if _is_token_ids(bert) and bert.shape[0] != values.shape[0]:
            raise ValueError(f"{source}: 'text_bert' has {bert.shape[0]} entries, expected one per id "
                             f"({values.shape[0]} ids)")
        if _is_token_ids(bert) and bert.shape[2] == values.shape[1]:
            return bert[:, 1, :] > 0
    return np.abs(values).sum(axis=2) > 0


def _read_modality(part: dict, m: str, wanted: str, ids: list[str], modality: ImportedModality | None,
                   path: Path, split: str) -> ImportedModality:
    source = f"{path} [{split}]"
    key = _text_key(part, wanted, source) if m == "t" else wanted
    if key not in part:
        raise ValueError(f"{source}: no {key!r} array (keys: {sorted(part)})")
    values = real_array(part[key], f"{source}: {key!r}")
    if values.ndim not in (2, 3) or values.shape[0] != len(ids):
        raise ValueError(f"{source}: {key!r} has shape {values.shape}; expected [N, D] or [N, T, D] with N = "
                         f"{len(ids)} ids")
    level = "frame" if values.ndim == 3 else "utterance"
    if modality is None:
        modality = ImportedModality(m, key, (path,), level, values.shape[-1])
    elif modality.level != level or modality.dim != values.shape[-1]:
        raise ValueError(f"{source}: {key!r} is {level} level dim {values.shape[-1]}, other splits are "
                         f"{modality.level} dim {modality.dim}")
    masks = _frame_masks(part, m, key, values, source) if level == "frame" else None
    for i, segment_id in enumerate(ids):
        modality.add(segment_id, values[i], None if masks is None else masks[i], source=f"{source} {key}")
    return modality


def _split_rows(part: dict, split: str, parsed: list[tuple[str, str | None, str | None]], source: str) -> pd.DataFrame:
    ids = [segment_id for segment_id, _, _ in parsed]
    order = clip_order([video or "" for _, video, _ in parsed], [clip or "" for _, _, clip in parsed])
    rows = pd.DataFrame({"segment_id": ids, "split": split, "dialogue_id": [video for _, video, _ in parsed],
                         "utterance_index": order})
    rows["speaker"] = rows["dialogue_id"]
    if "raw_text" in part:
        rows["text"] = [str(t) for t in _per_id(part, "raw_text", len(ids), source)]
    if "regression_labels" in part:
        _per_id(part, "regression_labels", len(ids), source)
        where = f"{source}: 'regression_labels'"
        rows["sentiment"] = real_array(part["regression_labels"], where).astype(np.float64).reshape(-1)
        infinite = rows.loc[np.isinf(rows["sentiment"]), "segment_id"].tolist()
        if infinite:  # NaN is an unlabelled segment; infinity is no sentiment
            raise ValueError(f"{where}: infinite sentiment for {infinite[0]!r}")
    if "annotations" in part:
        rows["annotation"] = [str(a) for a in _per_id(part, "annotations", len(ids), source)]
    return rows


def _fill_from_labels(rows: pd.DataFrame, labels: Path, notes: list[str]) -> pd.DataFrame:
    """sentiment / emotion / text from a label table where the pickle has none (matched by id)."""
    table = read_label_table(labels).set_index("segment_id")
    for column in ("sentiment", "emotion", "text"):
        known = rows["segment_id"].map(table[column])
        rows[column] = rows[column].where(rows[column].notna(), known) if column in rows.columns else known
    matched = int(rows["segment_id"].isin(table.index).sum())
    notes.append(f"{labels.name}: matched {matched} of {len(rows)} segments by id (fills empty label columns)")
    return rows


def read_mmsa_pickle(root: str | Path, labels: str | Path | None = None, sources: dict[str, str] | None = None,
                     corpus: str | None = None) -> ImportedCorpus:
    """Parse an MMSA pickle (`root` is the .pkl file) into rows and per-modality features."""
    path = Path(root)
    data = load_restricted_pickle(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of splits (train / valid / test), got {type(data).__name__}")
    splits = {key: normalize_split(key, str(path)) for key in data if str(key).strip().lower() in SPLIT_ALIASES}
    if not splits:
        raise ValueError(f"{path}: no train / valid / test entry (keys: {sorted(map(str, data))})")
    sources = dict(sources or DEFAULT_SOURCES)
    modalities: dict[str, ImportedModality] = {}
    parts = []
    for key, split in splits.items():
        part = data[key]
        if not isinstance(part, dict) or "id" not in part:
            raise ValueError(f"{path} [{key}]: expected a dict with an 'id' array")
        parsed = [_video_clip(raw) for raw in np.asarray(part["id"], dtype=object).reshape(-1)]
        ids = [segment_id for segment_id, _, _ in parsed]
        parts.append(_split_rows(part, split, parsed, f"{path} [{key}]"))
        for m, wanted in sources.items():
            modalities[m] = _read_modality(part, m, wanted, ids, modalities.get(m), path, key)
    rows = pd.concat(parts, ignore_index=True)
    duplicated = rows["segment_id"][rows["segment_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"{path}: segment ids occur in more than one row: {duplicated[:5]}")
    if corpus:
        rows["corpus"] = corpus
    notes: list[str] = []
    if labels is not None:
        rows = _fill_from_labels(rows, Path(labels), notes)
    return ImportedCorpus(FORMAT, path, rows, modalities, notes)
