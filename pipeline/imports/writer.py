"""An `ImportedCorpus` -> one feature store per modality + a manifest, the same way for every format.

Layout of OUT:
    manifest.parquet          the shared manifest schema (no media: media_path is empty)
    features/<modality>/      one FeatureStore per modality (audio, text, vision)
    import.json               the ImportSummary (source root, counts, notes)

Provenance: a store's spec (spec.json, and every bundle trained on it, under "extractors") is an
`ExtractorSpec` named "imported:<format>:<modality>" whose config records the source instead of an
extractor's settings: {"format", "feature", "level", "source": [file names relative to the root],
"files": N, "sha256": ...}. sha256 is the file's digest for one file; for several it is the digest
of the `sha256sum`-style listing ("<hex>  <relative path>\\n" per file, sorted by path), so the same
published files give the same config hash on every machine. Such a spec names no registered
extractor: `affectflow label` cannot rebuild it from raw media (it refuses, naming the spec).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from affectflow.extractors.spec import ExtractorSpec
from affectflow.extractors.store import FeatureStore
from affectflow.pipeline.core.io import write_json
from affectflow.pipeline.core.manifest import write_manifest
from affectflow.pipeline.core.names import IMPORTED_PREFIX, MODALITY_NAMES, SPLITS
from affectflow.pipeline.core.records import FeatureSequence
from affectflow.pipeline.imports.records import ImportedCorpus, ImportedModality, ImportSummary

MANIFEST_NAME = "manifest.parquet"
FEATURES_DIR = "features"
SUMMARY_NAME = "import.json"
MAX_LISTED_FILES = 16
"""Sources with more files (a folder of .npy) are recorded as the folder plus a count."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _relative(path: Path, root: Path) -> str:
    """`path` relative to `root` when inside it (root itself when a file), else its name."""
    path, root = Path(path).resolve(), Path(root).resolve()
    if path == root:
        return path.name
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def source_provenance(files: tuple[Path, ...], root: Path) -> dict:
    """{"source", "files", "sha256"} of the files a modality was read from (see the module docstring)."""
    if not files:
        raise ValueError(f"{root}: imported features must name at least one source file")
    named = sorted((_relative(path, root), path) for path in files)
    digests = [(name, sha256_file(path)) for name, path in named]
    if len(digests) == 1:
        digest = digests[0][1]
    else:
        digest = hashlib.sha256("".join(f"{hex_}  {name}\n" for name, hex_ in digests).encode("utf-8")).hexdigest()
    names = [name for name, _ in named]
    if len(names) > MAX_LISTED_FILES:
        folders = sorted({name.rpartition("/")[0] or "." for name in names})
        names = [f"{folder}/*" for folder in folders]
    return {"source": names, "files": len(digests), "sha256": digest}


def imported_spec(format_name: str, modality: ImportedModality, root: Path) -> ExtractorSpec:
    """The store spec of imported features: name "imported:<format>:<modality>", the source as config."""
    name = f"{IMPORTED_PREFIX}:{format_name}:{MODALITY_NAMES[modality.modality]}"
    config = {"format": format_name, "feature": modality.feature, "level": modality.level,
              **source_provenance(modality.files, root)}
    payload = json.dumps({"extractor": name, "config": config}, sort_keys=True)
    return ExtractorSpec(name=name, modality=modality.modality, config=config,
                         config_hash=hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16],
                         output_dim=modality.dim)


STRATIFY_COLUMNS = ("polarity", "emotion")
"""Label columns the validation carve stratifies by (the first one present with a value)."""


def stratified_groups(groups: pd.Series, labels: pd.Series | None, count: int, seed: int) -> set:
    """`count` of `groups`' distinct values, drawn so the chosen groups' label mix follows the whole's.

    Groups are ordered by the share of the most frequent label among their rows (then by name), cut into
    `count` consecutive bins of equal size, and one group is drawn from each bin (seeded); without labels
    `count` groups are drawn uniformly. groups / labels: one value per row.
    """
    generator = np.random.default_rng(seed)
    names = np.array(sorted(groups.unique()))
    if labels is None or labels.isna().all():
        return set(generator.choice(names, size=count, replace=False).tolist())
    top = labels.value_counts().index[0]
    share = (labels == top).groupby(groups.to_numpy()).mean()
    ordered = sorted(names, key=lambda name: (float(share.get(name, 0.0)), name))
    bins = np.array_split(np.array(ordered), count)
    return {str(generator.choice(members)) for members in bins}


def carve_validation(rows: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, str | None]:
    """Move a seeded `fraction` of the train rows' dialogues (videos) to "valid", when there is no valid
    split yet; whole dialogues move, so no video straddles train and valid. Test rows are never touched.
    When the rows carry a label (STRATIFY_COLUMNS), the draw is stratified by it (`stratified_groups`), so
    validation's label mix follows train's (a uniform draw of 9 MOSI videos gave 72% positives vs 44%).

    Returns (rows, a note saying what was carved, or None when nothing was).
    """
    split = rows["split"].astype("string").fillna("")
    if fraction <= 0 or (split == "valid").any() or not (split == "train").any():
        return rows, None
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {fraction}")
    groups = rows["dialogue_id"] if "dialogue_id" in rows.columns else rows["segment_id"]
    groups = groups.astype("string").fillna(rows["segment_id"].astype("string"))
    is_train = (split == "train").to_numpy()
    label_column = next((c for c in STRATIFY_COLUMNS if c in rows.columns and rows.loc[is_train, c].notna().any()),
                        None)
    labels = rows.loc[is_train, label_column].astype("string") if label_column else None
    count = max(1, int(round(fraction * groups[is_train].nunique())))
    chosen = stratified_groups(groups[is_train], labels, count, seed)
    rows = rows.copy()
    move = ((split == "train") & groups.isin(chosen)).to_numpy(dtype=bool)
    rows.loc[move, "split"] = "valid"
    stratified = f"stratified by {label_column!r}" if label_column else "uniform draw"
    note = (f"validation carved out of train by dialogue ({stratified}): {count} of {groups[is_train].nunique()} "
            f"train videos ({int(move.sum())} segments; seed {seed}); test untouched")
    return rows, note


def _sequence(modality: ImportedModality, segment_id: str, extractor_id: str) -> FeatureSequence:
    """The stored form of one segment: its [T, D] array with frame-index times, or a missing marker."""
    values = modality.values.get(segment_id)
    if values is None:
        reason = modality.missing.get(segment_id, f"no {modality.feature} features for this segment in the source")
        return FeatureSequence.missing(modality.dim, extractor_id, reason)
    mask = modality.masks.get(segment_id, np.ones(values.shape[0], dtype=bool))
    if mask.shape != (values.shape[0],):
        raise ValueError(f"segment {segment_id!r}: {modality.feature} mask {mask.shape} does not match its "
                         f"{values.shape[0]} frames")
    if not mask.any():
        reason = modality.missing.get(segment_id, f"every {modality.feature} frame is padding in the source")
        return FeatureSequence.missing(modality.dim, extractor_id, reason)
    # The published files carry no timestamps: times are frame indices (0 at utterance level).
    return FeatureSequence(values=values, times=np.arange(values.shape[0], dtype=np.float32), mask=mask,
                           extractor_id=extractor_id)


def write_store(modality: ImportedModality, spec: ExtractorSpec, segment_ids: list[str],
                path: Path) -> tuple[int, int, int]:
    """Write every segment of `segment_ids` into the store at `path`; (written, reused, missing).

    A segment already in the store is kept (same spec = same source bytes = same features).
    """
    store = FeatureStore.create(path, spec)
    written = reused = missing = 0
    for segment_id in segment_ids:
        sequence = _sequence(modality, segment_id, spec.extractor_id)
        missing += int(sequence.is_missing)
        if store.has(segment_id):
            reused += 1
            continue
        store.write(segment_id, sequence)
        written += 1
    return written, reused, missing


def _manifest_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The reader's rows with the schema's required media column (empty: there is no media)."""
    rows = rows.copy()
    if "media_path" not in rows.columns:
        rows["media_path"] = pd.array([None] * len(rows), dtype="string")
    return rows


def write_import(corpus: ImportedCorpus, out: str | Path, *, valid_fraction: float = 0.15,
                 seed: int = 0) -> ImportSummary:
    """Write `corpus` as OUT/manifest.parquet + OUT/features/<modality>/ stores + OUT/import.json."""
    out = Path(out)
    rows, note = carve_validation(corpus.rows, valid_fraction, seed)
    notes = list(corpus.notes) + ([note] if note else [])
    segment_ids = rows["segment_id"].astype(str).tolist()
    stores, specs, missing = {}, {}, {}
    written = reused = 0
    for m in sorted(corpus.modalities, key=list(MODALITY_NAMES).index):
        modality = corpus.modalities[m]
        spec = imported_spec(corpus.format, modality, corpus.root)
        path = out / FEATURES_DIR / MODALITY_NAMES[m]
        counts = write_store(modality, spec, segment_ids, path)
        written, reused = written + counts[0], reused + counts[1]
        stores[m], specs[m], missing[m] = path, spec.to_dict(), counts[2]
        unused = len(set(modality.values) - set(segment_ids))
        if unused:
            notes.append(f"{MODALITY_NAMES[m]}: {unused} segments with features but no manifest row were skipped")
    manifest = write_manifest(_manifest_rows(rows), out / MANIFEST_NAME)
    split = rows["split"].astype("string").fillna("")
    splits = {name: int((split == name).sum()) for name in (*SPLITS, "") if (split == name).any()}
    summary = ImportSummary(format=corpus.format, root=corpus.root, out=out, manifest=manifest, stores=stores,
                            extractors=specs, splits={k or "(none)": v for k, v in splits.items()}, missing=missing,
                            written=written, reused=reused, notes=notes)
    write_json(summary.to_dict(), out / SUMMARY_NAME, indent=2)
    return summary
