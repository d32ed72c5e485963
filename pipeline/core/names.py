"""The names every room shares: split names (with the aliases corpora use), modality keys, and the
target value that means "no label here".

    normalize_split("dev") -> "valid";  MODALITY_NAMES["v"] -> "vision";  targets[pad] = IGNORE_INDEX
"""

from __future__ import annotations

SPLITS: tuple[str, ...] = ("train", "valid", "test")
"""Canonical split names, in this order."""

SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train",
    "valid": "valid", "validation": "valid", "val": "valid", "dev": "valid",
    "test": "test", "testing": "test",
}
"""Lower-case split name as corpora and users write it -> canonical name."""

MODALITIES: tuple[str, ...] = ("a", "t", "v")
"""Modality keys used everywhere: audio, text, vision (in this order)."""

MODALITY_NAMES: dict[str, str] = {"a": "audio", "t": "text", "v": "vision"}
"""Modality key -> its word (CLI flags such as --audio, messages)."""

IMPORTED_PREFIX: str = "imported"
"""First part of the extractor name of imported features ("imported:<format>:<modality>"): written by
`pipeline.imports`, recognised by the labeller (which cannot rebuild such features from raw media)."""

IGNORE_INDEX: int = -100
"""Class-index target of a position without a label (padding, a missing modality's target); the
`ignore_index` of cross-entropy. Regression targets use NaN instead."""


def normalize_split(name: str, source: str = "") -> str:
    """Canonical split name ("train", "valid", "test") of a split as written ("dev", "Training", " val ").

    Raises ValueError naming `source` (a file, a column) and the accepted names for anything else.
    """
    key = str(name).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(f"{source or 'split'}: unknown split name {name!r}; expected one of {sorted(SPLIT_ALIASES)}")
    return SPLIT_ALIASES[key]
