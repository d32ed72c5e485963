"""`import_features(...)`: published feature files -> affectflow feature stores + a manifest.

    from affectflow.pipeline.imports import import_features
    summary = import_features("declare-lab-csv", "../shared/data/cmu-mosi-features", "prepared/mosi-real",
                              labels="../shared/data/cmu-mosi/label.csv")
    train(summary.manifest, summary.out / "features", "late_fusion", out="runs/mosi", ...)

Formats (one reader each, in `FORMATS`): "declare-lab-csv" (per-modality CSV tables, row-aligned),
"mmsa-pickle" (MMSA's aligned_50 / unaligned_50 .pkl, read with a restricted unpickler) and
"npy-folder" (MERBench / GCNet `<feature>/<segment_id>.npy` folders + a labels CSV). What is written
and how the stores record their source: `affectflow.pipeline.imports.writer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from affectflow.pipeline.core.names import MODALITY_NAMES
from affectflow.pipeline.core.registry import Registry
from affectflow.pipeline.imports.declare_lab import read_declare_lab_csv
from affectflow.pipeline.imports.mmsa import read_mmsa_pickle
from affectflow.pipeline.imports.npy_folder import read_npy_folder
from affectflow.pipeline.imports.records import ImportedCorpus, ImportSummary
from affectflow.pipeline.imports.writer import write_import

FormatReader = Callable[..., ImportedCorpus]
"""reader(root, labels=None, sources=None, corpus=None) -> ImportedCorpus."""

FORMATS: Registry[FormatReader] = Registry("feature format", case_sensitive=False)
FORMATS.register("declare-lab-csv", "declare-lab", entry=read_declare_lab_csv)
FORMATS.register("mmsa-pickle", "mmsa", entry=read_mmsa_pickle)
FORMATS.register("npy-folder", "merbench", "npy", entry=read_npy_folder)


def list_formats() -> list[str]:
    """Names of the importable feature formats."""
    return FORMATS.names()


def parse_sources(items: list[str] | dict[str, str] | None) -> dict[str, str] | None:
    """['a=wavlm-UTT', 't=roberta-UTT'] (or a dict) -> {'a': 'wavlm-UTT', ...}; keys a / t / v or their words."""
    if items is None or isinstance(items, dict):
        pairs = dict(items or {})
    else:
        pairs = {}
        for item in items:
            key, sep, value = str(item).partition("=")
            if not sep or not value:
                raise ValueError(f"source {item!r}: write MODALITY=NAME, e.g. a=wavlm-UTT")
            pairs[key] = value
    words = {word: m for m, word in MODALITY_NAMES.items()}
    resolved = {}
    for key, value in pairs.items():
        m = words.get(key.strip().lower(), key.strip().lower())
        if m not in MODALITY_NAMES:
            raise ValueError(f"source {key}={value}: unknown modality {key!r} (use a, t, v or audio, text, vision)")
        resolved[m] = value
    return resolved or None


def import_features(format: str, root: str | Path, out: str | Path, *, labels: str | Path | None = None,
                    sources: dict[str, str] | list[str] | None = None, corpus: str | None = None,
                    valid_fraction: float = 0.15, seed: int = 0) -> ImportSummary:
    """Import published features at `root` (a folder, or the .pkl for mmsa-pickle) into `out`.

    labels: a label CSV (continuous sentiment for declare-lab-csv; ids + splits + labels for npy-folder).
    sources: {modality: the source's name for it} (file prefix, pickle key or folder; defaults per format).
    valid_fraction / seed: when the source has no validation split, that share of the train videos
    (dialogues) becomes "valid" (seeded, whole videos); test is never touched. 0 keeps train as is.
    Re-running into the same `out` reuses the segments already written (same source files);
    a store of other source files there is refused.
    """
    reader = FORMATS.get(format)
    corpus_data = reader(Path(root), labels=labels, sources=parse_sources(sources), corpus=corpus)
    return write_import(corpus_data, out, valid_fraction=valid_fraction, seed=seed)
