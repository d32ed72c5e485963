"""`declare-lab-csv`: the per-modality CSV tables of declare-lab's contextual-utterance-level
multimodal sentiment analysis release (Poria et al., ACL 2017), CMU-MOSI.

Layout of `root`::

    {audio,text,video}_{train,test}0.csv   one utterance per row: features, then the binary label
                                           (1 positive, 0 negative); the three modalities' rows align
    text_{train,test}.csv                  column 0: the row's index into transcripts.csv, then the
                                           same text features (checked to be the same rows)
    transcripts.csv                        no header: id (<video>_<n>), text, ...

The published train / test split is kept (the text CNN was trained on the train part). Continuous
sentiment comes from `labels` (an MMSA label.csv, matched by id; its own split column is ignored);
a segment it lacks keeps an empty sentiment. MOSI has no emotion categories: the manifest's `emotion`
column carries the published binary polarity ("negative" / "positive", also in `polarity`), so the
default classification task of `affectflow train` trains on it. Every modality is present for every
utterance (the release has no missing rows).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from affectflow.datasets.text import decode_annotation_bytes
from affectflow.pipeline.imports.labels import read_label_table, split_video_id
from affectflow.pipeline.imports.records import ImportedCorpus, ImportedModality

FORMAT = "declare-lab-csv"
DEFAULT_SOURCES = {"a": "audio", "t": "text", "v": "video"}
SPLIT_FILES = ("train", "test")
POLARITY = {0: "negative", 1: "positive"}


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{FORMAT}: expected file {path} (see the layout in "
                                f"affectflow.pipeline.imports.declare_lab)")
    return path


def _read_numbers(path: Path) -> np.ndarray:
    """A headerless numeric CSV -> float64 [N, C]; ValueError naming the file otherwise."""
    try:
        table = pd.read_csv(_require(path), header=None)
        return table.to_numpy(dtype=np.float64)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file, not a numeric feature table") from None
    except (ValueError, pd.errors.ParserError) as error:
        raise ValueError(f"{path}: not a numeric feature table ({str(error).strip()})") from None


def _read_transcripts(path: Path, notes: list[str]) -> pd.DataFrame:
    """transcripts.csv (no header; id, text, ...) as text cells, decoded like the label files (UTF-8, other
    bytes as cp1252, counted in `notes`); ValueError naming the file when it is empty, unparsable or has
    fewer than the two columns id and text."""
    text, cp1252_bytes = decode_annotation_bytes(_require(path).read_bytes())
    if cp1252_bytes:
        notes.append(f"{path}: {cp1252_bytes} bytes were not UTF-8 and were read as cp1252")
    try:
        table = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file; expected rows of id, text, ...") from None
    except (ValueError, pd.errors.ParserError) as error:
        raise ValueError(f"{path}: not a readable CSV ({str(error).strip()})") from None
    if table.shape[1] < 2:
        raise ValueError(f"{path}: {table.shape[1]} column; expected at least 2 columns (id, text, ...) "
                         f"without a header")
    return table


def _segment_ids(root: Path, split: str, transcripts: pd.DataFrame, text_features: np.ndarray) -> list[str]:
    """Ids of a split's rows from text_<split>.csv column 0 (a row index into transcripts.csv)."""
    path = root / f"text_{split}.csv"
    indexed = _read_numbers(path)
    if indexed.shape != (text_features.shape[0], text_features.shape[1] + 1):
        raise ValueError(f"{path}: shape {indexed.shape} does not match text_{split}0.csv "
                         f"{text_features.shape} plus an index column")
    if not np.allclose(indexed[:, 1:], text_features, atol=1e-5):
        raise ValueError(f"{path}: its features differ from text_{split}0.csv: the id index does not belong "
                         f"to these rows")
    rows = indexed[:, 0]
    if (rows != np.round(rows)).any() or rows.min() < 0 or rows.max() >= len(transcripts):
        raise ValueError(f"{path}: column 0 must hold row numbers into transcripts.csv (0..{len(transcripts) - 1})")
    return transcripts.iloc[rows.astype(int), 0].str.strip().tolist()


def _split_tables(root: Path, split: str, sources: dict[str, str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({modality: features [N, D]}, binary labels [N]) of one split; checks the rows align."""
    features, labels, first = {}, None, None
    for m, prefix in sources.items():
        path = root / f"{prefix}_{split}0.csv"
        table = _read_numbers(path)
        if table.shape[1] < 2:
            raise ValueError(f"{path}: {table.shape[1]} column, no feature column before the binary label")
        if not np.isin(table[:, -1], (0, 1)).all():
            raise ValueError(f"{path}: the last column must be the binary label 0/1")
        if labels is not None and (table.shape[0] != labels.shape[0] or (table[:, -1] != labels).any()):
            raise ValueError(f"{path} and {first.name}: their rows do not align (row counts "
                             f"{table.shape[0]} / {labels.shape[0]} or binary labels differ)")
        features[m], labels, first = table[:, :-1], table[:, -1], first or path
    return features, labels.astype(int)


def _rows(ids: list[str], split: str, texts: dict[str, str], binary: np.ndarray, corpus: str) -> pd.DataFrame:
    parsed = [split_video_id(s) for s in ids]
    polarity = [POLARITY[int(b)] for b in binary]
    return pd.DataFrame({"segment_id": ids, "speaker": [v for v, _ in parsed], "text": [texts.get(s) for s in ids],
                         "emotion": polarity, "polarity": polarity, "split": split, "corpus": corpus,
                         "dialogue_id": [v for v, _ in parsed], "utterance_index": [n for _, n in parsed]})


def _attach_labels(rows: pd.DataFrame, labels: Path, notes: list[str]) -> pd.DataFrame:
    """Continuous sentiment by id from `labels`; notes on unmatched ids and sign disagreements."""
    table = read_label_table(labels).set_index("segment_id")
    rows["sentiment"] = rows["segment_id"].map(table["sentiment"]).astype("float64")
    unmatched = rows.loc[rows["sentiment"].isna(), "segment_id"].tolist()
    if unmatched:
        notes.append(f"{len(unmatched)} segments have no continuous label in {labels.name} (sentiment left empty; "
                     f"drop them for regression): {unmatched[:10]}")
    labelled = rows["sentiment"].notna()
    disagree = int(((rows.loc[labelled, "sentiment"] >= 0) != (rows.loc[labelled, "polarity"] == "positive")).sum())
    notes.append(f"continuous labels matched for {int(labelled.sum())} of {len(rows)} segments; their sign "
                 f"(>= 0) disagrees with the published binary label for {disagree}")
    notes.append(f"the split column of {labels.name} is ignored: the feature files' train/test split is kept")
    return rows


def read_declare_lab_csv(root: str | Path, labels: str | Path | None = None,
                         sources: dict[str, str] | None = None, corpus: str | None = None) -> ImportedCorpus:
    """Parse the layout above: utterance-level features [1, D] per modality, rows with ids and splits.

    sources: {modality: file prefix} (default audio / text / video); labels: continuous sentiment.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{FORMAT}: feature folder not found: {root}")
    sources = dict(sources or DEFAULT_SOURCES)
    if "t" not in sources:
        raise ValueError(f"{FORMAT}: the text tables are needed (they carry the segment ids); sources={sources}")
    notes: list[str] = []
    transcripts = _read_transcripts(root / "transcripts.csv", notes)
    texts = dict(zip(transcripts[0].str.strip(), transcripts[1]))
    corpus = corpus or "mosi"
    files = {m: tuple(root / f"{p}_{s}0.csv" for s in SPLIT_FILES) + tuple(root / f"text_{s}.csv" for s in SPLIT_FILES)
             + (root / "transcripts.csv",) for m, p in sources.items()}
    modalities: dict[str, ImportedModality] = {}
    parts = []
    for split in SPLIT_FILES:
        features, binary = _split_tables(root, split, sources)
        ids = _segment_ids(root, split, transcripts, features["t"])
        parts.append(_rows(ids, split, texts, binary, corpus))
        for m, values in features.items():
            modality = modalities.setdefault(m, ImportedModality(m, sources[m], files[m], "utterance", values.shape[1]))
            for segment_id, vector in zip(ids, values):
                modality.add(segment_id, vector, source=f"{root / sources[m]}_{split}0.csv")
    rows = pd.concat(parts, ignore_index=True)
    duplicated = rows["segment_id"][rows["segment_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"{root}: segment ids occur in more than one row: {duplicated[:5]}")
    if labels is not None:
        rows = _attach_labels(rows, Path(labels), notes)
    else:
        rows["sentiment"] = np.nan
        notes.append("no --labels: only the binary polarity is known (sentiment empty)")
    return ImportedCorpus(FORMAT, root, rows, modalities, notes)
