"""Manifests: one table schema for every corpus, read and written as Parquet or CSV.

Core columns (always present, in this order): segment_id, media_path, start, end, speaker, text,
emotion, sentiment, split. Known typed extras (corpus, dialogue_id, utterance_index, face_side,
valence, arousal, dominance) and any corpus-specific columns (e.g. MOSEI emotion intensities) may
follow. `end` empty (NaN) means "to the end of the file"; `start` empty is an unusable span, never
0.0 (only a table without a start column at all starts every segment at 0). Spans are checked by
`affectflow.pipeline.core.spans`: a bad one is refused naming the segment, or kept for the caller
to fail per segment (`invalid_spans="keep"`, what `extract` does).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from affectflow.pipeline.core.io import atomic_path, write_text
from affectflow.pipeline.core.records import Segment
from affectflow.pipeline.core.spans import span_problem

CORE_COLUMNS: tuple[str, ...] = (
    "segment_id", "media_path", "start", "end", "speaker", "text", "emotion", "sentiment", "split",
)
EXTRA_COLUMNS: tuple[str, ...] = (
    "corpus", "dialogue_id", "utterance_index", "face_side", "valence", "arousal", "dominance",
)
_STRING_COLUMNS = {"segment_id", "media_path", "speaker", "text", "emotion", "split",
                   "corpus", "dialogue_id", "face_side"}
_FLOAT_COLUMNS = {"start", "end", "sentiment", "valence", "arousal", "dominance"}
_INT_COLUMNS = {"utterance_index"}
INVALID_SPAN_POLICIES = ("raise", "keep")


class ManifestError(ValueError):
    """A manifest file or table that does not follow the schema."""


def _dtype_for(column: str) -> str | None:
    if column in _STRING_COLUMNS:
        return "string"
    if column in _FLOAT_COLUMNS:
        return "float64"
    if column in _INT_COLUMNS:
        return "Int64"
    return None


def _convert(series: pd.Series, dtype: str) -> pd.Series:
    """Cast a column to its schema dtype; None/NA/empty stay missing."""
    if dtype == "string":
        return series.astype("string")
    cleaned = series.astype(object).where(series.notna(), None)
    numbers = pd.to_numeric(cleaned, errors="raise")
    if dtype == "Int64":
        return numbers.astype("Float64").astype("Int64")
    return numbers.astype("float64")


def _numeric_extras(table: pd.DataFrame) -> pd.DataFrame:
    """CSV extras (columns outside the schema) become numbers when every value parses as one."""
    for column in table.columns:
        if _dtype_for(column) is None:
            try:
                table[column] = pd.to_numeric(table[column].astype(object).where(table[column].notna(), None))
            except (TypeError, ValueError):
                pass
    return table


def normalize_manifest(table: pd.DataFrame, source: str = "manifest", *, invalid_spans: str = "raise") -> pd.DataFrame:
    """Return `table` with every core column present, typed, and core columns first.

    Raises ManifestError naming `source` for a missing id/media column or duplicate ids, and (with
    invalid_spans="raise") naming each segment whose span is unusable; "keep" leaves those rows in.
    """
    if invalid_spans not in INVALID_SPAN_POLICIES:
        raise ValueError(f"invalid_spans must be one of {INVALID_SPAN_POLICIES}, got {invalid_spans!r}")
    table = table.copy()
    for required in ("segment_id", "media_path"):
        if required not in table.columns:
            raise ManifestError(f"{source}: missing required column {required!r}")
    for column in CORE_COLUMNS:
        if column not in table.columns:
            table[column] = 0.0 if column == "start" else None
    for column in table.columns:
        dtype = _dtype_for(column)
        if dtype is not None:
            try:
                table[column] = _convert(table[column], dtype)
            except (TypeError, ValueError) as error:
                raise ManifestError(f"{source}: column {column!r} cannot be read as {dtype}: {error}") from None
    if table["segment_id"].isna().any():
        raise ManifestError(f"{source}: {int(table['segment_id'].isna().sum())} rows have no segment_id")
    duplicated = table["segment_id"][table["segment_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ManifestError(f"{source}: duplicate segment_id values: {duplicated[:5]}")
    bad = unusable_spans(table)
    if bad and invalid_spans == "raise":
        listed = "; ".join(f"{segment_id}: {problem}" for segment_id, problem in list(bad.items())[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ManifestError(f"{source}: unusable time spans (end <= start, negative, NaN or infinite) for "
                            f"{len(bad)} segment(s): {listed}{more}")
    ordered = list(CORE_COLUMNS) + [c for c in table.columns if c not in CORE_COLUMNS]
    return table[ordered].reset_index(drop=True)


def unusable_spans(table: pd.DataFrame) -> dict[str, str]:
    """Segment id -> why its (start, end) is unusable, for every such row (empty `end` = to the end of
    the file; a table without a `start` column starts at 0)."""
    starts = table["start"].tolist() if "start" in table.columns else [0.0] * len(table)
    ends = table["end"].tolist() if "end" in table.columns else [None] * len(table)
    problems = {}
    for segment_id, start, end in zip(table["segment_id"].tolist(), starts, ends):
        problem = span_problem(start, None if end is None or end is pd.NA or end != end else end)
        if problem is not None:
            problems[str(segment_id)] = problem
    return problems


def split_unusable_spans(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """(the rows whose span is usable, {segment id: why} for the others)."""
    bad = unusable_spans(table)
    if not bad:
        return table, bad
    keep = ~table["segment_id"].astype(str).isin(list(bad))
    return table[keep].reset_index(drop=True), bad


def read_manifest(path: str | Path, *, invalid_spans: str = "raise") -> pd.DataFrame:
    """Read a manifest from .parquet, .csv or .jsonl, typed by the schema.

    invalid_spans: "raise" (ManifestError naming each segment with an unusable span) or "keep".
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pd.read_parquet(path)
    elif suffix == ".csv":
        # Read everything as text first so ids like "-3g5yACwYnA" or "0123" survive untouched.
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
        table = _numeric_extras(table)
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            table = pd.DataFrame([json.loads(line) for line in handle if line.strip()])
    else:
        raise ManifestError(f"{path}: unknown manifest format {suffix!r} (use .parquet, .csv or .jsonl)")
    return normalize_manifest(table, source=str(path), invalid_spans=invalid_spans)


def write_manifest(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest as .parquet, .csv or .jsonl (by suffix), atomically; returns the path."""
    path = Path(path)
    table = normalize_manifest(table, source=str(path))
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        with atomic_path(path) as tmp:
            table.to_parquet(tmp, index=False)
    elif suffix == ".csv":
        # float_format keeps every digit so times and sentiments round-trip exactly.
        write_text(table.to_csv(index=False, float_format="%.17g", lineterminator="\n"), path)
    elif suffix == ".jsonl":
        # Python's json writes floats with repr(), which round-trips exactly (pandas caps at 15 digits).
        rows = table.to_dict(orient="records")
        write_text("".join(json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False) + "\n"
                           for row in rows), path)
    else:
        raise ManifestError(f"{path}: unknown manifest format {suffix!r} (use .parquet, .csv or .jsonl)")
    return path


def _plain(value):
    """pandas scalar -> plain Python value (NA -> None)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def iter_segments(table: pd.DataFrame) -> Iterator[Segment]:
    """Yield a typed `Segment` per manifest row (extra non-Segment columns are ignored)."""
    names = set(Segment.field_names())
    for row in table.to_dict(orient="records"):
        values = {key: _plain(value) for key, value in row.items()}
        kwargs = {key: value for key, value in values.items() if key in names}
        kwargs["id"] = str(values["segment_id"])
        kwargs["media_path"] = str(values["media_path"])
        # An empty start stays NaN so Segment refuses it (naming the segment); it never becomes 0.0.
        start = values.get("start", 0.0)
        kwargs["start"] = math.nan if start is None else float(start)
        yield Segment(**kwargs)


def manifest_from_segments(segments: Iterable[Segment], extras: Iterable[dict] | None = None) -> pd.DataFrame:
    """Build a manifest table from segments (optionally with per-row extra columns)."""
    rows = []
    extras_list = list(extras) if extras is not None else None
    for index, segment in enumerate(segments):
        row = {name: getattr(segment, name) for name in Segment.field_names()}
        row["segment_id"] = row.pop("id")
        if extras_list is not None:
            row.update(extras_list[index])
        rows.append(row)
    if not rows:
        return normalize_manifest(pd.DataFrame(columns=list(CORE_COLUMNS)))
    return normalize_manifest(pd.DataFrame(rows))


def resolve_media_path(media_path: str, manifest_path: str | Path | None) -> Path:
    """Media paths in a manifest may be relative to the manifest's folder."""
    path = Path(media_path)
    if path.is_absolute() or manifest_path is None:
        return path
    return Path(manifest_path).parent / path
