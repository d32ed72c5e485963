"""`npy-folder`: MERBench / GCNet-style feature folders, one `<segment_id>.npy` per segment and feature.

Layout of `root`::

    <feature folder>/<segment_id>.npy    [D] (utterance level) or [T, D] (frame level), one folder per
                                         modality (e.g. "chinese-hubert-large-UTT"); file names may be
                                         percent-escaped as `affectflow.extractors.store.export_npy`
                                         writes them
    <feature folder>/missing.txt         optional: ids whose file is a zero placeholder (export_npy)

`sources` maps modalities to folder names (default: folders named audio / text / vision, or video,
or a / t / v). `labels` (required: the folders hold no ids list, labels or splits) gives the
segments, their splits and labels (see `affectflow.pipeline.imports.labels`). A labelled segment
without a file in a modality's folder, or listed in missing.txt, is stored as missing for that
modality (real missingness). Files that no label row names are skipped (counted in the notes).
The folder's level is that of its arrays; a folder that mixes levels or widths is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from affectflow.datasets.text import decode_annotation_bytes
from affectflow.extractors.store import decode_segment_id
from affectflow.pipeline.core.names import MODALITY_NAMES
from affectflow.pipeline.imports.labels import read_label_table
from affectflow.pipeline.imports.records import ImportedCorpus, ImportedModality, real_array

FORMAT = "npy-folder"
FOLDER_GUESSES = {"a": ("audio", "a"), "t": ("text", "t"), "v": ("vision", "video", "v")}
MISSING_LIST = "missing.txt"
NPY_MAGIC = b"\x93NUMPY"


def default_sources(root: Path) -> dict[str, str]:
    """{modality: folder} for the folders of `root` named like a modality; ValueError when none is."""
    found = {m: next(name for name in names if (root / name).is_dir())
             for m, names in FOLDER_GUESSES.items() if any((root / name).is_dir() for name in names)}
    if not found:
        folders = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise ValueError(f"{FORMAT}: no folder of {root} is named like a modality (audio, text, vision); "
                         f"map them with sources / --source, e.g. a=<folder> (folders: {folders})")
    return found


def _load_npy(path: Path) -> np.ndarray:
    """One feature file as float32 [D] or [T, D] (allow_pickle=False: a .npy never runs code here);
    ValueError naming the file for an empty, unreadable, non-real, 0-d or zero-width array."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a .npy array")
    with path.open("rb") as handle:
        if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise ValueError(f"{path}: not a .npy file (it does not start with numpy's magic bytes)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise ValueError(f"{path}: not a numeric .npy array ({error})") from None
    array = real_array(array, str(path))
    if array.shape[-1] == 0:
        raise ValueError(f"{path}: shape {array.shape}, features of width 0")
    return array


def _feature_files(folder: Path) -> list[Path]:
    """The folder's .npy files (hidden ones aside); ValueError naming anything called .npy that is no file."""
    files = sorted(p for p in folder.glob("*.npy") if not p.name.startswith("."))
    odd = next((p for p in files if not p.is_file()), None)
    if odd is not None:
        raise ValueError(f"{odd}: a folder (or other non-file) named like a feature file; move it out of {folder}")
    if not files:
        raise ValueError(f"{FORMAT}: no .npy files in {folder}")
    return files


def _placeholders(listed: Path, notes: list[str]) -> set[str]:
    """Ids in missing.txt (read like the label files: UTF-8, other bytes as cp1252, named in a note)."""
    if not listed.exists():
        return set()
    if not listed.is_file():
        raise ValueError(f"{listed}: not a file (the list of placeholder ids must be a text file)")
    text, cp1252_bytes = decode_annotation_bytes(listed.read_bytes())
    if cp1252_bytes:
        notes.append(f"{listed}: {cp1252_bytes} bytes were not UTF-8 and were read as cp1252")
    return set(text.split())


def _read_folder(m: str, folder: Path, wanted: set[str], notes: list[str]) -> tuple[ImportedModality, int]:
    """The labelled segments' arrays of one folder; (modality, files skipped for having no label row)."""
    files = _feature_files(folder)
    listed = folder / MISSING_LIST
    placeholders = _placeholders(listed, notes)
    modality: ImportedModality | None = None
    skipped = 0
    for path in files:
        segment_id = decode_segment_id(path.stem)
        if segment_id not in wanted:
            skipped += 1
            continue
        array = _load_npy(path)
        level = "utterance" if array.ndim == 1 else "frame"
        if modality is None:
            modality = ImportedModality(m, folder.name, tuple(files) + ((listed,) if listed.is_file() else ()),
                                        level, int(array.shape[-1]))
        elif level != modality.level:
            raise ValueError(f"{path}: a {level}-level array among {modality.level}-level ones in {folder}")
        if segment_id in placeholders:
            modality.missing[segment_id] = f"listed in {listed}"
            continue
        modality.add(segment_id, array, source=str(path))
    if modality is None:
        raise ValueError(f"{FORMAT}: none of the {len(files)} files in {folder} belongs to a labelled segment")
    for segment_id in wanted - set(modality.values) - set(modality.missing):
        modality.missing[segment_id] = f"no {segment_id}.npy in {folder}"
    return modality, skipped


def read_npy_folder(root: str | Path, labels: str | Path | None = None, sources: dict[str, str] | None = None,
                    corpus: str | None = None) -> ImportedCorpus:
    """Parse the layout above into rows (from `labels`) and per-modality features."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{FORMAT}: feature folder not found: {root}")
    if labels is None:
        raise ValueError(f"{FORMAT}: a labels CSV is required (segment ids, splits, labels)")
    rows = read_label_table(labels)
    if corpus:
        rows["corpus"] = corpus
    sources = dict(sources or default_sources(root))
    wanted = set(rows["segment_id"])
    modalities, notes = {}, []
    for m, name in sources.items():
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"{FORMAT}: {MODALITY_NAMES[m]} folder not found: {folder}")
        modalities[m], skipped = _read_folder(m, folder, wanted, notes)
        if skipped:
            notes.append(f"{folder.name}: {skipped} files have no row in {Path(labels).name} and were skipped")
        if modalities[m].missing:
            notes.append(f"{folder.name}: {MODALITY_NAMES[m]} missing for {len(modalities[m].missing)} segments")
    return ImportedCorpus(FORMAT, root, rows, modalities, notes)
