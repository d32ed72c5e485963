"""CMU-MOSEI from its raw download (CMU_MOSEI) plus the SDK's or MMSA's labels.

Raw layout (`root` = the CMU_MOSEI folder)::

    root/Raw/Transcript/Segmented/Combined/<vid>.txt   lines  vid___segIdx___start___end___text
    root/Raw/Videos/Full/Combined/<vid>.mp4            full videos (segments are spans into them)
    root/Raw/Audio/Full/WAV_16000/<vid>.wav            audio-only alternative (also .../Full/Combined/)
    labels: root/CMU_MOSEI_Labels.csd or root/label.csv, or any path given as `labels`

Labels come from the SDK's ``CMU_MOSEI_Labels.csd`` (HDF5; per video ``features`` (n, 7) =
[sentiment, happy, sad, anger, surprise, disgust, fear] and ``intervals`` (n, 2)) or an MMSA
``label.csv`` (``video_id,clip_id,text,label,mode``). A label row is matched to its transcript
segment by segment index (integer clip ids) or by start time (clip ids like ``82_7645`` = 82.7645 s,
as in the MMSA-style file of ../shared/data/cmu-mosei); a .csd row by its interval. A row with no
matching span is the whole video (`unknown_span`); one whose span is unusable (end <= start, inf,
NaN, negative start) is dropped and reported as `invalid_span`.

Manifest: segment id ``<vid>_<clip>`` (clip = the label file's clip id, or the transcript segment
index for .csd labels), `video_id`/`clip_id` columns, `dialogue_id` = vid, `utterance_index` = rank
by start time within the video, `sentiment` float in [-3, 3], the six emotion intensities as
`intensity_happy` ... `intensity_fear` (from .csd labels); `emotion` is left empty. Splits: the
label.csv `mode`, or for .csd labels the standard folds from `folds` (a JSON file or dict
{"train": [vid, ...], "valid": [...], "test": [...]}) or from an installed CMU-MultimodalSDK.
Ids are text everywhere (numeric ones, ones starting with "-"); paths are built with pathlib only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from affectflow.datasets.common import (
    CorpusLayoutError, PreparedCorpus, drop_invalid_spans, finish_corpus, first_existing, require_root,
    text_only_manifest,
)
from affectflow.datasets.labels import (MOSEI_EMOTIONS, LabelRow, clip_start_time, load_folds, read_csd,
                                        read_mmsa_rows)
from affectflow.datasets.validation import MediaChecks, ValidationReport
from affectflow.datasets.registry import register_recipe

TRANSCRIPT_DIR = Path("Raw/Transcript/Segmented/Combined")
VIDEO_DIR = Path("Raw/Videos/Full/Combined")
AUDIO_DIRS = (Path("Raw/Audio/Full/WAV_16000"), Path("Raw/Audio/Full/Combined"))
LABEL_FILES = ("CMU_MOSEI_Labels.csd", "label.csv", "Labels/CMU_MOSEI_Labels.csd", "Labels/label.csv")
_START_TOLERANCE = 0.01  # seconds; label start times are the transcript's, printed with rounding


@dataclass(frozen=True)
class TranscriptSegment:
    """One line of a segmented MOSEI transcript: index (text), start/end seconds, text."""

    video_id: str
    index: str
    start: float
    end: float
    text: str


def read_mosei_transcripts(folder: str | Path, report: ValidationReport | None = None) -> dict[str, list[TranscriptSegment]]:
    """Segmented transcripts of a folder: video id (file stem) -> its segments in file order."""
    transcripts: dict[str, list[TranscriptSegment]] = {}
    for path in sorted(Path(folder).glob("*.txt")):
        video_id, segments = path.stem, []
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("___", 4)
            try:
                if len(parts) != 5:
                    raise ValueError("expected vid___segIdx___start___end___text")
                segments.append(TranscriptSegment(video_id, parts[1].strip(), float(parts[2]), float(parts[3]), parts[4]))
                if parts[0] != video_id and report is not None:
                    report.add_issue(f"{path}:{number}", f"line names video {parts[0]!r}, file is {video_id!r}")
            except ValueError as error:
                if report is not None:
                    report.add_issue(f"{path}:{number}", f"transcript line skipped ({error}): {line[:80]!r}")
        transcripts[video_id] = segments
    return transcripts


def _match_segment(clip_id: str, segments: list[TranscriptSegment]) -> TranscriptSegment | None:
    for segment in segments:
        if segment.index == clip_id:
            return segment
    start = clip_start_time(clip_id)
    if start is None:
        return None
    best = min(segments, key=lambda segment: abs(segment.start - start), default=None)
    return best if best is not None and abs(best.start - start) <= _START_TOLERANCE else None


class _MediaLookup:
    """Where each video's media is: the .mp4, else the .wav, else the expected .mp4 path."""

    def __init__(self, root: Path, allow_missing_media: bool, report: ValidationReport | None) -> None:
        self.video_dir = root / VIDEO_DIR
        self.audio_dir = first_existing(root / folder for folder in AUDIO_DIRS)
        if not self.video_dir.is_dir() and self.audio_dir is None:
            expected = [self.video_dir] + [root / folder for folder in AUDIO_DIRS]
            if not allow_missing_media:
                raise CorpusLayoutError("mosei", expected, "no media folder (use --allow-missing-media for text only)")
            if report is not None:
                report.notes.append(f"no media folder ({self.video_dir}); every segment's media is missing")
        self.videos = {p.stem: p for p in self.video_dir.glob("*.mp4")} if self.video_dir.is_dir() else {}
        self.audios = {p.stem: p for p in self.audio_dir.glob("*.wav")} if self.audio_dir is not None else {}
        self.expected: dict[str, Path] = {}

    def path(self, video_id: str) -> Path:
        """Media file of one video (the expected .mp4 path when it is absent)."""
        found = self.videos.get(video_id) or self.audios.get(video_id) or self.expected.get(video_id)
        if found is None:
            found = self.expected[video_id] = self.video_dir / f"{video_id}.mp4"  # many segments ask
        return found

    def all_files(self) -> dict[str, Path]:
        """Video id -> media file, over both folders."""
        return {**self.audios, **self.videos}


def _base_row(video_id: str, clip_id: str, media: Path, segment: TranscriptSegment | None,
              interval: tuple[float, float] | None, report: ValidationReport) -> dict:
    segment_id = f"{video_id}_{clip_id}"
    span = (segment.start, segment.end) if segment is not None else interval
    row = {"segment_id": segment_id, "media_path": str(media), "start": 0.0, "end": None, "speaker": video_id,
           "corpus": "mosei", "dialogue_id": video_id, "video_id": video_id, "clip_id": clip_id,
           "text": segment.text if segment is not None else None}
    if span is not None:  # an unusable span is dropped as `invalid_span` (drop_invalid_spans), not guessed
        row["start"], row["end"] = float(span[0]), float(span[1])
    else:
        report.add("unknown_span", segment_id, "no transcript segment matches this label")
        row["media_problem"] = "unknown_span"
    return row


def _rows_from_csv(labels: list[LabelRow], transcripts: dict | None, media: _MediaLookup,
                   report: ValidationReport, used: set) -> list[dict]:
    rows = []
    for label in labels:
        segment = None
        if transcripts is not None:
            segment = _match_segment(label.clip_id, transcripts.get(label.video_id, []))
            if segment is None:
                report.add("unmatched_label", f"{label.video_id}_{label.clip_id}", f"{label.location}")
            else:
                used.add((label.video_id, segment.index))
        row = _base_row(label.video_id, label.clip_id, media.path(label.video_id), segment, None, report)
        if label.text and label.text.strip():
            row["text"] = label.text  # the label file's text wins: same ids and text with or without media
        row.update(sentiment=label.sentiment, split=label.split, sentiment_label=label.annotation,
                   _source=label.location)
        rows.append(row)
    return rows


def _rows_from_csd(path: Path, transcripts: dict | None, media: _MediaLookup, folds: dict[str, str],
                   report: ValidationReport, used: set) -> list[dict]:
    rows = []
    for video in read_csd(path):
        if video.features.shape[1] < 7:
            raise ValueError(f"{path}: video {video.video_id!r} has {video.features.shape[1]} label columns; "
                             "CMU-MOSEI labels need 7 (sentiment + 6 emotions)")
        segments = transcripts.get(video.video_id, []) if transcripts is not None else []
        for index, (features, (start, end)) in enumerate(zip(video.features, video.intervals)):
            segment = next((s for s in segments if abs(s.start - start) <= _START_TOLERANCE
                            and abs(s.end - end) <= _START_TOLERANCE), None)
            clip_id = segment.index if segment is not None else str(index)
            if segment is not None:
                used.add((video.video_id, segment.index))
            elif transcripts is not None:
                report.add("unmatched_label", f"{video.video_id}_{clip_id}", f"interval {start:.3f}-{end:.3f}")
            row = _base_row(video.video_id, clip_id, media.path(video.video_id), segment, (start, end), report)
            row.update(sentiment=float(features[0]), split=folds.get(video.video_id), _source=f"{path.name}:{video.video_id}")
            row.update({f"intensity_{name}": float(value) for name, value in zip(MOSEI_EMOTIONS, features[1:7])})
            rows.append(row)
    return rows


def _utterance_order(rows: list[dict]) -> None:
    by_video = defaultdict(list)
    for row in rows:
        if row.get("media_problem") != "unknown_span":
            by_video[row["video_id"]].append(row)
    for video_rows in by_video.values():
        for index, row in enumerate(sorted(video_rows, key=lambda r: (r["start"], r["segment_id"]))):
            row["utterance_index"] = index


def _find_labels(root: Path, labels: str | Path | None) -> Path:
    candidates = [Path(labels).expanduser().resolve()] if labels is not None else [root / name for name in LABEL_FILES]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise CorpusLayoutError("mosei", candidates, "no label file (pass --labels CMU_MOSEI_Labels.csd|label.csv)")
    return found


def _collect_rows(root: Path, label_path: Path, allow_missing_media: bool, folds, report: ValidationReport) -> list[dict]:
    transcript_dir = root / TRANSCRIPT_DIR
    transcripts = read_mosei_transcripts(transcript_dir, report) if transcript_dir.is_dir() else None
    if transcripts is None:
        if not (allow_missing_media and label_path.suffix.lower() == ".csv"):
            raise CorpusLayoutError("mosei", [transcript_dir], "segmented transcripts are missing (with a label.csv "
                                    "and --allow-missing-media the label file's text is used)")
        report.notes.append(f"no transcripts ({transcript_dir}): text from {label_path.name}, segment times unknown")
    media = _MediaLookup(root, allow_missing_media, report)
    used: set = set()
    if label_path.suffix.lower() == ".csd":
        fold_map = load_folds(folds, sdk_dataset="cmu_mosei")
        if not fold_map:
            report.notes.append("no fold lists (pass folds= / --folds, or install CMU-MultimodalSDK): split left empty")
        rows = _rows_from_csd(label_path, transcripts, media, fold_map, report, used)
    else:
        rows = _rows_from_csv(read_mmsa_rows(label_path, report), transcripts, media, report, used)
    if transcripts is not None:
        unlabelled = sum(1 for vid, segs in transcripts.items() for s in segs if (vid, s.index) not in used)
        if unlabelled:
            report.exclude("no_label", "transcript_segment", unlabelled)
    labelled_videos = {row["video_id"] for row in rows}
    report.unannotated_media.extend(sorted(str(p) for vid, p in media.all_files().items() if vid not in labelled_videos))
    rows = drop_invalid_spans(rows, report)  # before numbering, so utterance indices have no gaps
    _utterance_order(rows)
    return rows


@register_recipe("mosei")
def prepare_mosei(root: str | Path, out: str | Path | None = None, *, labels: str | Path | None = None,
                  folds: str | Path | dict | None = None, allow_missing_media: bool = False,
                  **check_options) -> PreparedCorpus:
    """Prepare CMU-MOSEI at `root` into a manifest + report (written to `out` when given).

    labels: a .csd or label.csv (default: looked up in `root`). folds: standard fold lists for .csd
    labels. check_options: `MediaChecks` fields (probe, check_audio, max_duration, drop, workers, ...).
    """
    root = require_root("mosei", root)
    label_path = _find_labels(root, labels)
    checks = MediaChecks(**check_options)
    report = ValidationReport(corpus="mosei", root=str(root), options={
        "labels": str(label_path), "allow_missing_media": allow_missing_media,
        "folds": folds if folds is None or isinstance(folds, (str, Path)) else "dict"})
    rows = _collect_rows(root, label_path, allow_missing_media, folds, report)
    return finish_corpus("mosei", rows, report, out, checks)


def mosei_manifest_from_labels(label_path: str | Path, root: str | Path, folds=None) -> pd.DataFrame:
    """A MOSEI manifest from a label file (text pathway): media only checked to exist, none required."""
    root, label_path = Path(root).expanduser().resolve(), Path(label_path).expanduser().resolve()
    report = ValidationReport(corpus="mosei", root=str(root))
    return text_only_manifest("mosei", _collect_rows(root, label_path, True, folds, report), report, str(label_path))
