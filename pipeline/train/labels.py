"""Segments without a label in the task's label column: find them, count them, leave them out.

Training and scoring use the labelled segments of a split; at conversation level an unlabelled utterance
stays in its dialogue as context with no target (-100 / NaN, which losses and metrics skip). A split whose
rows are all unlabelled is refused with a ValueError naming it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

UNLABELLED_IDS_SHOWN = 10
"""How many unlabelled segment ids a warning, summary.json or report.json names."""


class UnlabelledSegmentsWarning(UserWarning):
    """Some segments have no label in the task's label column: training and scoring use the labelled ones."""


@dataclass(frozen=True)
class UnlabelledSegments:
    """Segments without a label in one label column: how many, and the first `UNLABELLED_IDS_SHOWN` ids
    (manifest order)."""

    count: int = 0
    ids: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """{"count": N, "ids": [first ids]} (the entry of summary.json / report.json)."""
        return {"count": self.count, "ids": list(self.ids)}


def unlabelled_mask(table: pd.DataFrame, label_column: str) -> np.ndarray:
    """[N] bool: rows whose `label_column` is empty (NaN / None / blank text); raises when the column is absent."""
    if label_column not in table.columns:
        raise ValueError(f"label column {label_column!r} not in the manifest (columns: {list(table.columns)})")
    column = table[label_column]
    blank = column.isna().to_numpy(dtype=bool)
    if not pd.api.types.is_numeric_dtype(column):
        blank = blank | column.astype("string").fillna("").str.strip().eq("").to_numpy(dtype=bool)
    return blank


def find_unlabelled(table: pd.DataFrame, label_column: str) -> UnlabelledSegments:
    """The segments of `table` without a `label_column` label (count + first ids)."""
    ids = table["segment_id"].astype(str).to_numpy()[unlabelled_mask(table, label_column)]
    return UnlabelledSegments(len(ids), tuple(ids[:UNLABELLED_IDS_SHOWN].tolist()))


def labelled_rows(rows: pd.DataFrame, label_column: str, split: str, level: str = "utterance") -> pd.DataFrame:
    """The rows of one split that training or scoring can use: the labelled ones at utterance level;
    every row at conversation level (an unlabelled utterance stays as dialogue context, unscored).

    Raises ValueError naming the split when none of its rows has a label.
    """
    blank = unlabelled_mask(rows, label_column)
    if len(rows) and blank.all():
        raise ValueError(f"no labelled {split} segment: none of the {len(rows)} {split} segments has a label in "
                         f"{label_column!r}")
    if level == "conversation":
        return rows
    return rows[~blank].reset_index(drop=True)


def warn_unlabelled(unlabelled: UnlabelledSegments, total: int, label_column: str, level: str) -> None:
    """One UnlabelledSegmentsWarning line (count, first ids, what happens to them); nothing when all are labelled."""
    if unlabelled.count:
        fate = "kept as unscored dialogue context" if level == "conversation" else "left out"
        warnings.warn(UnlabelledSegmentsWarning(
            f"{unlabelled.count} of {total} segments have no {label_column!r} label ({fate}), e.g. "
            f"{list(unlabelled.ids)}"), stacklevel=3)  # the caller of train / evaluate
