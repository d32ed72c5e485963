"""The validation report every corpus recipe produces, and the media checks behind it.

A recipe parses its annotations into rows (manifest columns), recording annotation problems in a
`ValidationReport`; `check_media` then probes each media file once (cached per file, optionally on
disk across runs) and lists, by segment id, media that is missing, unreadable, too short for the
segment's span, without an audio/video stream, silent or overly long. Nothing here is fatal: the
problems are listed and summarised in a `media_problem` column, so the harness can filter them.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from affectflow.pipeline.core.errors import MediaError
from affectflow.pipeline.core.io import write_json as write_json_atomic
from affectflow.pipeline.core.names import SPLITS
from affectflow.pipeline.core.records import Recording
from affectflow.pipeline.media import decode  # module attribute calls: tests can stand in for probe/read_audio

PROBLEM_KINDS: dict[str, str] = {
    "missing_media": "media file does not exist",
    "unreadable_media": "media file exists but cannot be decoded",
    "out_of_bounds": "segment starts at or after the end of its media",
    "end_past_media": "segment ends after its media ends (decoders stop at the end of the file)",
    "no_video_stream": "media has no video stream",
    "no_audio_stream": "media has no audio stream",
    "silent_audio": "the segment's audio is digital silence",
    "long_media": "segment (or whole clip) is longer than max_duration",
    "unknown_span": "segment times are unknown; media_path points at the full recording",
    "duplicate_segment": "segment id appears again in the annotations (later rows dropped)",
    "duplicate_span": "same media span as another segment id",
    "empty_transcript": "transcript is empty",
    "encoding_repair": "transcript had cp1252 bytes or mojibake, repaired to Unicode",
    "bad_times": "annotation times could not be parsed or end <= start",
    "invalid_span": "segment dropped: its span is unusable",
    "unmatched_label": "label row matches no transcript segment",
    "missing_label": "segment has no label",
    "dropped": "segment dropped from the manifest by the --drop option",
}
MEDIA_PROBLEM_KINDS: tuple[str, ...] = (
    "missing_media", "unreadable_media", "out_of_bounds", "end_past_media", "no_video_stream",
    "no_audio_stream", "silent_audio", "long_media", "unknown_span",
)
"""Kinds that land in the manifest's `media_problem` column (";"-joined) and can be dropped."""


@dataclass
class ValidationReport:
    """Everything a recipe found wrong or noteworthy, listed by segment id (JSON-serialisable)."""

    corpus: str
    root: str
    options: dict = field(default_factory=dict)
    problems: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    annotation_issues: list[dict] = field(default_factory=list)
    unannotated_media: list[str] = field(default_factory=list)
    excluded: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def add(self, kind: str, segment_id: str, detail: str = "") -> None:
        """Record one problem of a known kind for one segment."""
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}; known: {sorted(PROBLEM_KINDS)}")
        self.problems[kind].append({"segment_id": str(segment_id), "detail": detail})

    def add_issue(self, location: str, detail: str) -> None:
        """Record an annotation problem that has no segment id (e.g. an unparsable line, file:line)."""
        self.annotation_issues.append({"location": location, "detail": detail})

    def exclude(self, reason: str, label: str, count: int = 1) -> None:
        """Count segments left out on purpose (e.g. labels outside the chosen label set)."""
        bucket = self.excluded.setdefault(reason, {})
        bucket[label] = bucket.get(label, 0) + count

    def problem_ids(self, kind: str) -> list[str]:
        """Segment ids listed under one problem kind."""
        return [item["segment_id"] for item in self.problems.get(kind, [])]

    def finalize(self, table: pd.DataFrame) -> None:
        """Compute the per-split / per-label counts of the final manifest."""
        self.counts = manifest_counts(table)

    def to_dict(self) -> dict:
        """Plain-JSON form of the report."""
        data = {name: getattr(self, name) for name in ("corpus", "root", "options")}
        data["counts"] = self.counts
        data["excluded"] = self.excluded
        data["notes"] = list(self.notes)
        data["problems"] = {kind: list(items) for kind, items in sorted(self.problems.items())}
        data["problem_counts"] = {kind: len(items) for kind, items in sorted(self.problems.items())}
        data["num_annotation_issues"] = len(self.annotation_issues)
        data["annotation_issues"] = list(self.annotation_issues)
        data["num_unannotated_media"] = len(self.unannotated_media)
        data["unannotated_media"] = list(self.unannotated_media)
        return data

    def write_json(self, path: str | Path) -> Path:
        """Write the report as UTF-8 JSON (atomically); returns the path."""
        return write_json_atomic(self.to_dict(), path, default=str)

    def summary(self) -> str:
        """A short human-readable summary (counts, then problems by kind with a few example ids)."""
        lines = [f"{self.corpus}: {self.counts.get('total', 0)} segments from {self.root}"]
        for split, count in self.counts.get("split", {}).items():
            labels = self.counts.get("label", {}).get(split, {})
            shown = ", ".join(f"{label} {n}" for label, n in labels.items())
            lines.append(f"  {split}: {count}" + (f" ({shown})" if shown else ""))
        for reason, labels in self.excluded.items():
            lines.append(f"  excluded ({reason}): " + ", ".join(f"{k} {v}" for k, v in labels.items()))
        for kind, items in sorted(self.problems.items()):
            examples = ", ".join(item["segment_id"] for item in items[:3])
            lines.append(f"  {kind}: {len(items)} (e.g. {examples})")
        if self.annotation_issues:
            lines.append(f"  annotation issues: {len(self.annotation_issues)} "
                         f"(e.g. {self.annotation_issues[0]['location']}: {self.annotation_issues[0]['detail']})")
        if self.unannotated_media:
            lines.append(f"  unannotated media files: {len(self.unannotated_media)} "
                         f"(e.g. {', '.join(self.unannotated_media[:3])})")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def manifest_counts(table: pd.DataFrame) -> dict:
    """Counts of a manifest: total, per split, per split and label (emotion, else sentiment sign)."""
    splits = table["split"].fillna("(none)") if len(table) else pd.Series([], dtype=object)
    counts: dict = {"total": int(len(table)), "split": {}, "label": {}, "media_problem": {}}
    order = {name: index for index, name in enumerate(SPLITS)}
    for split in sorted(splits.unique().tolist(), key=lambda name: (order.get(name, 3), name)):
        part = table[splits == split]
        counts["split"][split] = int(len(part))
        if part["emotion"].notna().any():
            labels = part["emotion"].fillna("(none)").value_counts()
        else:
            sign = part["sentiment"].map(_sentiment_sign)
            labels = sign.value_counts()
        counts["label"][split] = {str(k): int(v) for k, v in labels.sort_index().items()}
        if "media_problem" in part:
            kinds = Counter(kind for cell in part["media_problem"].dropna() for kind in str(cell).split(";"))
            counts["media_problem"][split] = dict(sorted(kinds.items()))
    return counts


def _sentiment_sign(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "(none)"
    return "negative" if value < 0 else ("positive" if value > 0 else "neutral")


@dataclass(frozen=True)
class MediaChecks:
    """How `check_media` looks at media.

    probe: open every media file (cached per file); False only checks that files exist.
    check_audio: decode each segment's audio to find digital silence (slow on big corpora).
    max_duration: seconds above which a segment (or a whole clip) is reported as `long_media`.
    drop: media problem kinds whose segments are left out of the manifest (reported as `dropped`).
    tolerance: seconds a segment may run past the end of its media before `end_past_media`.
    workers: threads probing files in parallel. cache_path: JSON probe cache reused across runs.
    """

    probe: bool = True
    check_audio: bool = False
    max_duration: float | None = 60.0
    drop: tuple[str, ...] = ()
    tolerance: float = 0.5
    workers: int = 4
    cache_path: str | Path | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.drop) - set(MEDIA_PROBLEM_KINDS))
        if unknown:
            raise ValueError(f"cannot drop unknown media problem kinds {unknown}; known: {list(MEDIA_PROBLEM_KINDS)}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


class ProbeCache:
    """`probe` results per media file, keyed by path + size + mtime; optionally persisted as JSON."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.entries = {}  # a broken cache is only a slower run

    @staticmethod
    def _stamp(path: Path) -> list[int]:
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]

    def get(self, path: Path) -> Recording | MediaError:
        """The probed `Recording` of an existing file, or the `MediaError` that probing raised."""
        key, stamp = str(path), self._stamp(path)
        entry = self.entries.get(key)
        if entry is None or entry.get("stamp") != stamp:
            try:
                recording = decode.probe(path)
                entry = {"stamp": stamp, "recording": {k: v for k, v in asdict(recording).items() if k != "path"}}
            except MediaError as error:
                entry = {"stamp": stamp, "error": error.cause}
            self.entries[key] = entry
        if "error" in entry:
            return MediaError(path, entry["error"])
        return Recording(path=path, **entry["recording"])

    def silence(self, path: Path, start: float, end: float | None, compute) -> bool:
        """Whether a span's audio is silent, from the cache or `compute()` (then remembered)."""
        entry, key = self.entries.get(str(path)), f"{start:.3f}-{'end' if end is None else f'{end:.3f}'}"
        fresh = entry is not None and entry.get("stamp") == self._stamp(Path(path))
        if fresh and key in entry.get("silence", {}):
            return bool(entry["silence"][key])
        silent = bool(compute())
        if fresh:
            entry.setdefault("silence", {})[key] = silent
        return silent

    def save(self) -> None:
        """Write the cache file (if this cache has one)."""
        if self.path is None:
            return
        write_json_atomic(self.entries, self.path, indent=None)


def _span_problems(row: dict, recording: Recording, checks: MediaChecks) -> list[tuple[str, str]]:
    problems = []
    start, end, duration = float(row["start"]), row.get("end"), recording.duration
    if not recording.has_video:
        problems.append(("no_video_stream", ""))
    if not recording.has_audio:
        problems.append(("no_audio_stream", ""))
    if duration is not None and duration > 0:
        if start >= duration:
            problems.append(("out_of_bounds", f"start {start:.3f}s >= media duration {duration:.3f}s"))
        elif end is not None and end > duration + checks.tolerance:
            problems.append(("end_past_media", f"end {end:.3f}s > media duration {duration:.3f}s"))
        span = (duration if end is None else min(end, duration)) - start
        if checks.max_duration is not None and span > checks.max_duration:
            problems.append(("long_media", f"{span:.1f}s > max_duration {checks.max_duration:g}s"))
    return problems


def _probe_all(paths: list[str], checks: MediaChecks, cache: ProbeCache) -> dict[str, Recording | MediaError]:
    with ThreadPoolExecutor(max_workers=checks.workers) as pool:
        results = list(pool.map(lambda p: cache.get(Path(p)), paths))
    return dict(zip(paths, results))


def _silence(rows: list[dict], checks: MediaChecks, cache: ProbeCache) -> list[tuple[dict, bool]]:
    def is_silent(row: dict) -> bool:
        try:
            clip = decode.read_audio(row["media_path"], start=float(row["start"]), end=row.get("end"))
        except MediaError:
            return False  # already reported as unreadable by the probe, or undecodable audio
        return bool(clip.silent and not clip.is_missing)

    def one(row: dict) -> tuple[dict, bool]:
        """(row, whether its span is digital silence)."""
        return row, cache.silence(row["media_path"], float(row["start"]), row.get("end"), lambda: is_silent(row))

    with ThreadPoolExecutor(max_workers=checks.workers) as pool:
        return list(pool.map(one, rows))


def check_media(rows: list[dict], report: ValidationReport, checks: MediaChecks,
                cache: ProbeCache | None = None) -> None:
    """Check each row's media (probing each file once); adds `media_problem`/`media_duration` to rows.

    rows: dicts with absolute `media_path`, `start`, `end` (None = to the end of the file).
    Every problem is also added to `report` under the segment's id.
    """
    cache = cache if cache is not None else ProbeCache(checks.cache_path)
    paths = sorted({row["media_path"] for row in rows})
    existing = {path for path in paths if Path(path).is_file()}
    recordings = _probe_all(sorted(existing), checks, cache) if checks.probe else {}
    audio_rows = []
    for row in rows:
        problems: list[tuple[str, str]] = []
        path = row["media_path"]
        recording = recordings.get(path)
        if path not in existing:
            problems.append(("missing_media", path))
        elif isinstance(recording, MediaError):
            problems.append(("unreadable_media", recording.cause))
        elif recording is not None:
            row["media_duration"] = recording.duration
            problems.extend(_span_problems(row, recording, checks))
            if checks.check_audio and recording.has_audio and not any(k == "out_of_bounds" for k, _ in problems):
                audio_rows.append(row)
        _record(row, problems, report)
    if audio_rows:
        for row, silent in _silence(audio_rows, checks, cache):
            if silent:
                _record(row, [("silent_audio", "")], report)
    cache.save()


def _record(row: dict, problems: list[tuple[str, str]], report: ValidationReport) -> None:
    kinds = [kind for kind in (row.get("media_problem") or "").split(";") if kind]
    for kind, detail in problems:
        report.add(kind, row["segment_id"], detail)
        kinds.append(kind)
    row["media_problem"] = ";".join(dict.fromkeys(kinds)) or None
