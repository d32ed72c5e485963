"""What a format reader hands to the writer: the manifest rows and, per modality, the arrays with their
provenance; and what `import_features` returns.

A reader (one per published format) only parses; `affectflow.pipeline.imports.writer` turns an
`ImportedCorpus` into feature stores and a manifest, the same way for every format.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affectflow.pipeline.core.names import MODALITY_NAMES

LEVELS: tuple[str, ...] = ("utterance", "frame")
REAL_KINDS = "biuf"
"""numpy dtype kinds read as features: bool, signed / unsigned integers, floats (complex, structured,
string, datetime and object dtypes are refused: casting them to float would drop or invent values)."""
DTYPE_KINDS = {"c": "complex", "U": "str", "S": "bytes", "M": "date-time", "m": "time-delta", "V": "raw (void)"}


def _is_real_element(element: Any) -> bool:
    """An element of an object array that may become a feature value: a real number or a real array."""
    if isinstance(element, np.ndarray):
        return element.dtype.kind in REAL_KINDS
    return isinstance(element, numbers.Real) and not isinstance(element, (str, bytes))


def real_array(value: Any, where: str) -> np.ndarray:
    """`value` as a float32 array of at least one dimension; ValueError naming `where` for anything else.

    Refused: a 0-d array (a single number), complex / structured / string / object-with-strings dtypes
    (a cast would keep only the real part, one field, or parse text), ragged nested sequences.
    """
    try:
        array = np.asarray(value)
    except ValueError:
        raise ValueError(f"{where}: ragged (its rows have different lengths), not one numeric array") from None
    if array.dtype == object:
        bad = [element for element in array.reshape(-1) if not _is_real_element(element)][:1]
        if bad:
            raise ValueError(f"{where}: an object array holding {type(bad[0]).__name__} values, "
                             f"e.g. {str(bad[0])[:40]!r}; expected real numbers")
        try:
            array = np.array(array.tolist(), dtype=np.float64)
        except ValueError:
            raise ValueError(f"{where}: ragged (its rows have different lengths), not one numeric array") from None
    if array.dtype.kind not in REAL_KINDS:
        kind = "structured (record)" if array.dtype.names else DTYPE_KINDS.get(array.dtype.kind, "non-numeric")
        raise ValueError(f"{where}: dtype {array.dtype} holds {kind} values, not real numbers (bool, int or float)")
    if array.ndim == 0:
        raise ValueError(f"{where}: a 0-d array (a single number), expected [D] or [T, D] features")
    return array.astype(np.float32, copy=False)


@dataclass
class ImportedModality:
    """One modality's published features, keyed by segment id.

    feature: the source's own name for them ("text", "text_bert", a MERBench folder name);
    files: the source files they were read from (their sha256 goes into the store's spec);
    level: "utterance" (every array [1, D]) or "frame" ([T, D]);
    values: segment id -> [T, D] float32; masks: segment id -> [T] bool valid frames (absent: all valid);
    missing: segment id -> why the modality is absent for that segment (no array then).
    """

    modality: str
    feature: str
    files: tuple[Path, ...]
    level: str
    dim: int
    values: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITY_NAMES:
            raise ValueError(f"imported features {self.feature!r}: modality must be one of "
                             f"{sorted(MODALITY_NAMES)}, got {self.modality!r}")
        if self.level not in LEVELS:
            raise ValueError(f"imported features {self.feature!r}: level must be one of {LEVELS}, got {self.level!r}")
        if self.dim < 1:
            raise ValueError(f"imported features {self.feature!r}: width {self.dim}, no feature column")

    def add(self, segment_id: str, values: np.ndarray, mask: np.ndarray | None = None, source: str = "") -> None:
        """Record one segment's [T, D] (or [D]) array; ValueError naming `source` on a bad shape, dtype or NaN."""
        where = source or self.feature
        array = real_array(values, f"{where}: segment {segment_id!r}")
        array = array[None, :] if array.ndim == 1 else array
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"{where}: segment {segment_id!r} has {self.feature} features of shape "
                             f"{np.shape(values)}, expected [T, {self.dim}] or [{self.dim}]")
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: segment {segment_id!r} has NaN or infinite {self.feature} features")
        self.values[segment_id] = array
        if mask is not None:
            self.masks[segment_id] = np.asarray(mask, dtype=bool)


@dataclass
class ImportedCorpus:
    """A reader's result: manifest rows (the shared schema plus extras) and the modalities' features.

    rows: one row per segment with at least segment_id and split (train/valid/test or empty);
    notes: what the reader decided that a user should know (ignored columns, unmatched ids ...).
    """

    format: str
    root: Path
    rows: pd.DataFrame
    modalities: dict[str, ImportedModality]
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportSummary:
    """What `import_features` wrote: the manifest, one store per modality, counts and notes."""

    format: str
    root: Path
    out: Path
    manifest: Path
    stores: dict[str, Path]
    extractors: dict[str, dict[str, Any]]
    splits: dict[str, int]
    missing: dict[str, int]
    written: int
    reused: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of OUT/import.json."""
        return {"format": self.format, "root": str(self.root), "out": str(self.out), "manifest": str(self.manifest),
                "stores": {m: str(p) for m, p in self.stores.items()}, "extractors": self.extractors,
                "splits": self.splits, "missing": self.missing, "written": self.written, "reused": self.reused,
                "notes": list(self.notes)}

    def describe(self) -> str:
        """A few human lines: counts per split, stores, notes."""
        splits = ", ".join(f"{count} {name}" for name, count in self.splits.items())
        lines = [f"imported {sum(self.splits.values())} segments ({splits}) from {self.root} [{self.format}]",
                 f"manifest: {self.manifest}"]
        for m, path in self.stores.items():
            spec = self.extractors[m]
            absent = f", missing for {self.missing[m]}" if self.missing.get(m) else ""
            lines.append(f"  {MODALITY_NAMES[m]:>6}: {path} ({spec['name']}, dim {spec['output_dim']}{absent})")
        lines.append(f"segment files written: {self.written}, already there: {self.reused}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)
