"""What every corpus recipe shares: the result type, layout errors, and the finishing steps.

A recipe parses its raw annotations into rows (one dict per segment, manifest column names) and
hands them to `finish_corpus`, which drops (and reports as `invalid_span`) rows whose time span is
unusable, repairs transcripts, drops repeated ids, checks media, builds
the manifest in the shared schema (`affectflow.pipeline.core.manifest`) and writes
`manifest.parquet`, `manifest.csv` and `report.json` when an output folder is given.

Split names are the same for every corpus: "train", "valid", "test" (MELD's and MOSI's "dev" is
"valid"); IEMOCAP uses "session1".."session5" (see `affectflow.datasets.iemocap`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import pandas as pd

from affectflow.pipeline.core.errors import AffectflowError
from affectflow.pipeline.core.manifest import (
    CORE_COLUMNS, EXTRA_COLUMNS, normalize_manifest, read_manifest, write_manifest,
)
from affectflow.pipeline.core.spans import span_problem

from affectflow.datasets.text import clean_transcript
from affectflow.datasets.validation import MediaChecks, ProbeCache, ValidationReport, check_media

CORPUS_COLUMN_TYPES: dict[str, str] = {
    # Corpus-specific manifest columns written by the recipes, with their dtypes.
    "sentiment_label": "string", "season": "Int64", "episode": "Int64", "sr_no": "Int64",
    "episode_start": "float64", "episode_end": "float64", "session": "Int64", "wav_path": "string",
    "video_id": "string", "clip_id": "string", "media_problem": "string", "media_duration": "float64",
    "intensity_happy": "float64", "intensity_sad": "float64", "intensity_anger": "float64",
    "intensity_surprise": "float64", "intensity_disgust": "float64", "intensity_fear": "float64",
    "emotion_raw": "string",
}
MANIFEST_FILES = {"parquet": "manifest.parquet", "csv": "manifest.csv", "report": "report.json"}


class CorpusLayoutError(AffectflowError, FileNotFoundError):
    """A raw corpus folder without the files its recipe needs; names every expected path."""

    def __init__(self, corpus: str, expected: Iterable[str | Path], hint: str = "") -> None:
        self.corpus = corpus
        self.expected = [str(path) for path in expected]
        listed = "\n  ".join(self.expected)
        message = f"{corpus}: raw corpus layout not found; expected (one of):\n  {listed}"
        super().__init__(message + (f"\n{hint}" if hint else ""))


def first_existing(paths: Iterable[Path]) -> Path | None:
    """The first path that exists, or None."""
    for path in paths:
        if path.exists():
            return path
    return None


def require_root(corpus: str, root: str | Path) -> Path:
    """The corpus root as an absolute path; CorpusLayoutError when it is not a folder."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise CorpusLayoutError(corpus, [root], "the --root folder does not exist")
    return root


@dataclass
class PreparedCorpus:
    """A prepared corpus: the manifest (shared schema), its validation report, and written files."""

    corpus: str
    manifest: pd.DataFrame
    report: ValidationReport
    paths: dict[str, Path] = field(default_factory=dict)

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write manifest.parquet, manifest.csv and report.json into `out`; returns their paths."""
        out = Path(out)
        self.paths = {
            "parquet": write_manifest(self.manifest, out / MANIFEST_FILES["parquet"]),
            "csv": write_manifest(self.manifest, out / MANIFEST_FILES["csv"]),
            "report": self.report.write_json(out / MANIFEST_FILES["report"]),
        }
        return self.paths

    def summary(self) -> str:
        """The report's printed summary."""
        return self.report.summary()


def drop_invalid_spans(rows: list[dict], report: ValidationReport) -> list[dict]:
    """The rows whose (start, end) is usable; each other row is dropped and reported as `invalid_span`
    (id and why), so one bad annotation never refuses the whole corpus."""
    kept = []
    for row in rows:
        problem = span_problem(row.get("start", 0.0), row.get("end"))
        if problem is None:
            kept.append(row)
        else:
            source = row.get("_source")
            report.add("invalid_span", row["segment_id"], problem + (f" ({source})" if source else ""))
    return kept


def dedupe_rows(rows: list[dict], report: ValidationReport) -> list[dict]:
    """Keep the first row of each segment id (reporting the rest); report rows sharing a media span."""
    seen: dict[str, dict] = {}
    for row in rows:
        segment_id = row["segment_id"]
        if segment_id in seen:
            report.add("duplicate_segment", segment_id, f"repeated row dropped (first kept): {row.get('_source', '')}")
            continue
        seen[segment_id] = row
    spans: dict[tuple, str] = {}
    for row in seen.values():
        key = (row["media_path"], round(float(row["start"]), 3),
               None if row.get("end") is None else round(float(row["end"]), 3))
        if key in spans and not row.get("media_problem"):
            report.add("duplicate_span", row["segment_id"], f"same media span as {spans[key]}")
        spans.setdefault(key, row["segment_id"])
    return list(seen.values())


def clean_rows_text(rows: list[dict], report: ValidationReport) -> None:
    """Repair mojibake and whitespace in `text`/`speaker` of each row, reporting repairs and empty text."""
    for row in rows:
        original = row.get("text")
        cleaned, repaired = clean_transcript(original)
        if repaired:
            report.add("encoding_repair", row["segment_id"], f"{original!r} -> {cleaned!r}")
        if cleaned is None:
            report.add("empty_transcript", row["segment_id"])
        row["text"] = cleaned
        if row.get("speaker") is not None:
            speaker, fixed = clean_transcript(row["speaker"])
            if fixed:
                report.add("encoding_repair", row["segment_id"], f"speaker {row['speaker']!r} -> {speaker!r}")
            row["speaker"] = speaker


def _drop(rows: list[dict], report: ValidationReport, kinds: tuple[str, ...]) -> list[dict]:
    if not kinds:
        return rows
    kept = []
    for row in rows:
        found = [kind for kind in (row.get("media_problem") or "").split(";") if kind in kinds]
        if found:
            report.add("dropped", row["segment_id"], ";".join(found))
        else:
            kept.append(row)
    return kept


def rows_to_manifest(rows: list[dict], source: str) -> pd.DataFrame:
    """Rows (dicts) -> a typed manifest: core columns, then known extras, then corpus columns."""
    table = pd.DataFrame([{k: v for k, v in row.items() if not k.startswith("_")} for row in rows])
    if table.empty:
        table = pd.DataFrame(columns=list(CORE_COLUMNS))
    known = [c for c in EXTRA_COLUMNS if c in table.columns]
    rest = [c for c in table.columns if c not in CORE_COLUMNS and c not in known]
    table = type_corpus_columns(normalize_manifest(table, source=source))
    return table[list(CORE_COLUMNS) + known + rest]


def type_corpus_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Give the recipes' corpus columns their dtypes (e.g. after reading a manifest.csv, where
    `read_manifest` leaves non-schema columns as text)."""
    table = table.copy()
    for column, dtype in CORPUS_COLUMN_TYPES.items():
        if column in table.columns:
            values = table[column]
            if dtype != "string" and not pd.api.types.is_numeric_dtype(values):
                try:
                    values = pd.to_numeric(values.astype("string"), errors="raise")
                except (TypeError, ValueError) as error:
                    raise ValueError(f"manifest column {column!r} is not numeric: {error}") from None
            table[column] = values.astype(dtype)
    return table


def finish_corpus(corpus: str, rows: list[dict], report: ValidationReport, out: str | Path | None = None,
                  checks: MediaChecks | None = None) -> PreparedCorpus:
    """Drop repeated ids, repair text, check media, build the manifest and (with `out`) write it all.

    rows: one dict per segment with manifest column names; `media_path` absolute, `end` None = EOF.
    A row whose span is unusable (`pipeline.core.spans`) is dropped and reported as `invalid_span`.
    """
    checks = checks or MediaChecks()
    if out is not None and checks.cache_path is None:
        checks = replace(checks, cache_path=Path(out) / "probe_cache.json")
    for row in rows:
        row.setdefault("corpus", corpus)
    rows = dedupe_rows(drop_invalid_spans(rows, report), report)
    clean_rows_text(rows, report)
    check_media(rows, report, checks, ProbeCache(checks.cache_path))
    rows = _drop(rows, report, checks.drop)
    if "media_problem" not in {key for row in rows for key in row}:
        for row in rows:
            row["media_problem"] = None
    table = rows_to_manifest(rows, source=f"{corpus} recipe")
    report.options.setdefault("checks", {k: (list(v) if isinstance(v, tuple) else v)
                                         for k, v in vars(checks).items()})
    report.finalize(table)
    prepared = PreparedCorpus(corpus=corpus, manifest=table, report=report)
    if out is not None:
        prepared.write(out)
    return prepared


def text_only_manifest(corpus: str, rows: list[dict], report: ValidationReport, source: str) -> pd.DataFrame:
    """Manifest straight from annotation rows: repeated ids dropped, text repaired, media only
    checked for existence (no decoding), so `media_problem` says which files are absent."""
    for row in rows:
        row.setdefault("corpus", corpus)
    rows = dedupe_rows(drop_invalid_spans(rows, report), report)
    clean_rows_text(rows, report)
    check_media(rows, report, MediaChecks(probe=False))
    report.options.setdefault("checks", {"probe": False})
    table = rows_to_manifest(rows, source=source)
    report.finalize(table)
    return table


def load_prepared(out: str | Path) -> PreparedCorpus:
    """Read back a prepared corpus folder (manifest.parquet + report.json)."""
    import json

    out = Path(out)
    manifest = read_manifest(out / MANIFEST_FILES["parquet"])
    data = json.loads((out / MANIFEST_FILES["report"]).read_text(encoding="utf-8"))
    report = ValidationReport(corpus=data["corpus"], root=data["root"], options=data.get("options", {}))
    for kind, items in data.get("problems", {}).items():
        report.problems[kind].extend(items)
    report.annotation_issues = data.get("annotation_issues", [])
    report.unannotated_media = data.get("unannotated_media", [])
    report.excluded = data.get("excluded", {})
    report.notes = data.get("notes", [])
    report.counts = data.get("counts", {})
    return PreparedCorpus(corpus=data["corpus"], manifest=manifest, report=report,
                          paths={key: out / name for key, name in MANIFEST_FILES.items()})
