"""MMSA label files (CMU-MOSEI / CMU-MOSI `label.csv`) straight into a manifest table (the text pathway).

    table = read_mmsa_label_csv("MOSI/label.csv")          # corpus guessed from the path

It sits above the corpus modules (it picks `mosei` or `mosi`'s label reader), so it is its own module.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from affectflow.datasets.mosei import mosei_manifest_from_labels
from affectflow.datasets.mosi import mosi_manifest_from_labels


def read_mmsa_label_csv(path: str | Path, corpus: str | None = None, root: str | Path | None = None) -> pd.DataFrame:
    """Read a real MMSA label.csv straight into a manifest table (text pathway; media not checked).

    corpus: "mosei" or "mosi" (default: guessed from the path). root: where the raw corpus would be
    (default: the label file's folder); media paths follow that corpus's raw layout, and segments
    whose times are unknown without transcripts are flagged `unknown_span` in `media_problem`.
    """
    path = Path(path).expanduser().resolve()
    corpus = corpus or ("mosei" if "mosei" in str(path).lower() else "mosi" if "mosi" in str(path).lower() else None)
    if corpus not in ("mosei", "mosi"):
        raise ValueError(f"{path}: cannot tell whether this is CMU-MOSEI or CMU-MOSI; pass corpus='mosei'|'mosi'")
    root = Path(root) if root is not None else path.parent
    build = mosei_manifest_from_labels if corpus == "mosei" else mosi_manifest_from_labels
    return build(path, root)
