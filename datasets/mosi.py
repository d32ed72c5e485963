"""CMU-MOSI from its raw download (CMU_MOSI / MOSI) plus MMSA's or the SDK's labels.

Raw layout (`root` = the CMU-MOSI folder)::

    root/Raw/Video/Segmented/<vid>_<k>.mp4              one clip per opinion segment (k from 1)
    root/Raw/Video/Full/<vid>.mp4                       full videos (need segment times, see below)
    root/Raw/Audio/WAV_16000/Segmented/<vid>_<k>.wav    audio-only alternatives
    root/Raw/Audio/WAV_16000/Full/<vid>.wav
    root/Raw/Transcript/Segmented/<vid>.annotprocessed  lines  k_DELIM_text  (text for .csd labels)
    labels: root/label.csv or root/CMU_MOSI_Opinion_Labels.csd, or any path given as `labels`

Labels: an MMSA ``label.csv`` (``id,text,label,mode`` with ``id = <vid>_<k>``, or
``video_id,clip_id,text,label,mode``) or the SDK's ``CMU_MOSI_Opinion_Labels.csd`` (per video
``features`` (n, 1) sentiment and ``intervals`` (n, 2); segment k = rank of the interval by start,
from 1). Segment times into full videos come from that .csd's intervals or from `segment_times`
(a CSV ``id,start,end`` or a .csd).

Media per segment, first found: the segmented clip (whole file), the full video with the segment's
span, the segmented wav, the full wav with the span; a full video whose span is unknown is used with
`unknown_span` flagged. Manifest: segment id ``<vid>_<k>``, `video_id`/`clip_id`, `dialogue_id` =
vid, `utterance_index` = k, `sentiment` float in [-3, 3], `split` train/valid/test (MOSI's "dev" is
"valid"; .csd labels take splits from `folds` or an installed CMU-MultimodalSDK).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from affectflow.pipeline.core.errors import AffectflowError
from affectflow.datasets.common import CorpusLayoutError, PreparedCorpus, finish_corpus, require_root, text_only_manifest
from affectflow.datasets.labels import load_folds, read_csd, read_mmsa_rows
from affectflow.datasets.text import decode_annotation_bytes
from affectflow.datasets.validation import MediaChecks, ValidationReport
from affectflow.datasets.registry import register_recipe

SEGMENTED_VIDEO_DIR = Path("Raw/Video/Segmented")
FULL_VIDEO_DIR = Path("Raw/Video/Full")
SEGMENTED_AUDIO_DIR = Path("Raw/Audio/WAV_16000/Segmented")
FULL_AUDIO_DIR = Path("Raw/Audio/WAV_16000/Full")
TRANSCRIPT_DIR = Path("Raw/Transcript/Segmented")
LABEL_FILES = ("label.csv", "CMU_MOSI_Opinion_Labels.csd", "Labels/label.csv", "Labels/CMU_MOSI_Opinion_Labels.csd")


def _intervals_by_segment(path: Path) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(vid, k) -> (start, end, first feature) from a .csd; k = rank by start from 1."""
    spans = {}
    for video in read_csd(path):
        order = sorted(range(len(video.intervals)), key=lambda i: video.intervals[i][0])
        for rank, i in enumerate(order, start=1):
            start, end = video.intervals[i]
            spans[(video.video_id, str(rank))] = (float(start), float(end), float(video.features[i][0]))
    return spans


def read_segment_times(path: str | Path) -> dict[tuple[str, str], tuple[float, float]]:
    """Segment times into full videos: (vid, k) -> (start, end) from a CSV ``id,start,end`` or a .csd."""
    path = Path(path)
    if path.suffix.lower() == ".csd":
        return {key: value[:2] for key, value in _intervals_by_segment(path).items()}
    table = pd.read_csv(io.StringIO(decode_annotation_bytes(path.read_bytes())[0]), dtype=str, keep_default_na=False)
    missing = sorted({"id", "start", "end"} - set(table.columns))
    if missing:
        raise ValueError(f"{path}: segment-times CSV needs columns id,start,end; missing {missing}")
    times = {}
    for index, record in enumerate(table.to_dict(orient="records")):
        video_id, _, clip_id = record["id"].rpartition("_")
        try:
            times[(video_id, clip_id)] = (float(record["start"]), float(record["end"]))
        except ValueError:
            raise ValueError(f"{path}:{index + 2}: start/end are not numbers: {record}") from None
    return times


def read_annotprocessed(folder: str | Path) -> dict[tuple[str, str], str]:
    """Segmented MOSI transcripts: (vid, k) -> text, from ``<vid>.annotprocessed`` lines ``k_DELIM_text``."""
    texts = {}
    for path in sorted(Path(folder).glob("*.annotprocessed")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            clip_id, sep, text = line.partition("_DELIM_")
            if sep and clip_id.strip().isdigit():
                texts[(path.stem, clip_id.strip())] = text
    return texts


class _MosiMedia:
    """Finds each segment's media in the four raw folders (listed once)."""

    def __init__(self, root: Path, allow_missing_media: bool, report: ValidationReport | None) -> None:
        self.root = root
        self.files = {}
        for folder, suffix in ((SEGMENTED_VIDEO_DIR, ".mp4"), (FULL_VIDEO_DIR, ".mp4"),
                               (SEGMENTED_AUDIO_DIR, ".wav"), (FULL_AUDIO_DIR, ".wav")):
            path = root / folder
            self.files[folder] = {p.stem: p for p in path.glob(f"*{suffix}")} if path.is_dir() else {}
        if not any((root / folder).is_dir() for folder in self.files):
            expected = [root / folder for folder in self.files]
            if not allow_missing_media:
                raise CorpusLayoutError("mosi", expected, "no media folder (use --allow-missing-media for text only)")
            if report is not None:
                report.notes.append(f"no media folder under {root / 'Raw'}; every segment's media is missing")

    def locate(self, video_id: str, clip_id: str, span: tuple[float, float] | None) -> tuple[Path, tuple | None, bool]:
        """(media path, (start, end) or None = whole file, span unknown?) for one segment."""
        segment_name = f"{video_id}_{clip_id}"
        if segment_name in self.files[SEGMENTED_VIDEO_DIR]:
            return self.files[SEGMENTED_VIDEO_DIR][segment_name], None, False
        if span is not None and video_id in self.files[FULL_VIDEO_DIR]:
            return self.files[FULL_VIDEO_DIR][video_id], span, False
        if segment_name in self.files[SEGMENTED_AUDIO_DIR]:
            return self.files[SEGMENTED_AUDIO_DIR][segment_name], None, False
        if span is not None and video_id in self.files[FULL_AUDIO_DIR]:
            return self.files[FULL_AUDIO_DIR][video_id], span, False
        if video_id in self.files[FULL_VIDEO_DIR]:
            return self.files[FULL_VIDEO_DIR][video_id], None, True
        expected = self.root / SEGMENTED_VIDEO_DIR / f"{segment_name}.mp4"
        if not expected.resolve().is_relative_to((self.root / SEGMENTED_VIDEO_DIR).resolve()):
            # An id such as "../../outside/secret" or "/abs/path" must never point media outside the corpus.
            raise AffectflowError(f"mosi: segment id {segment_name!r} would place its media at {expected}, outside "
                                  f"{self.root / SEGMENTED_VIDEO_DIR}; fix the id in the labels file")
        return expected, None, False

    def unannotated(self, segments: set[tuple[str, str]]) -> list[str]:
        """Media files that no labelled segment uses."""
        videos = {video_id for video_id, _ in segments}
        names = {f"{video_id}_{clip_id}" for video_id, clip_id in segments}
        found = [p for folder in (SEGMENTED_VIDEO_DIR, SEGMENTED_AUDIO_DIR) for stem, p in self.files[folder].items()
                 if stem not in names]
        found += [p for folder in (FULL_VIDEO_DIR, FULL_AUDIO_DIR) for stem, p in self.files[folder].items()
                  if stem not in videos]
        return sorted(str(path) for path in found)


def _label_entries(label_path: Path, folds, report: ValidationReport) -> list[dict]:
    """Uniform label entries {video_id, clip_id, text, sentiment, split, span, source} from either format."""
    if label_path.suffix.lower() == ".csd":
        fold_map = load_folds(folds, sdk_dataset="cmu_mosi")
        if not fold_map:
            report.notes.append("no fold lists (pass folds= / --folds, or install CMU-MultimodalSDK): split left empty")
        return [{"video_id": vid, "clip_id": k, "text": None, "sentiment": sentiment, "split": fold_map.get(vid),
                 "span": (start, end), "source": f"{label_path.name}:{vid}"}
                for (vid, k), (start, end, sentiment) in _intervals_by_segment(label_path).items()]
    return [{"video_id": row.video_id, "clip_id": row.clip_id, "text": row.text, "sentiment": row.sentiment,
             "split": row.split, "span": None, "source": row.location, "annotation": row.annotation}
            for row in read_mmsa_rows(label_path, report)]


def _collect_rows(root: Path, label_path: Path, allow_missing_media: bool, folds, segment_times,
                  report: ValidationReport) -> list[dict]:
    entries = _label_entries(label_path, folds, report)
    times = read_segment_times(segment_times) if segment_times is not None else {}
    texts = read_annotprocessed(root / TRANSCRIPT_DIR) if (root / TRANSCRIPT_DIR).is_dir() else {}
    media = _MosiMedia(root, allow_missing_media, report)
    rows = []
    for entry in entries:
        video_id, clip_id = entry["video_id"], entry["clip_id"]
        segment_id = f"{video_id}_{clip_id}"
        path, span, unknown = media.locate(video_id, clip_id, times.get((video_id, clip_id), entry["span"]))
        text = entry["text"] if entry["text"] and entry["text"].strip() else texts.get((video_id, clip_id))
        row = {"segment_id": segment_id, "media_path": str(path), "start": span[0] if span else 0.0,
               "end": span[1] if span else None, "speaker": video_id, "text": text, "sentiment": entry["sentiment"],
               "split": entry["split"], "corpus": "mosi", "dialogue_id": video_id,
               "utterance_index": int(clip_id) if clip_id.isdigit() else None, "video_id": video_id,
               "clip_id": clip_id, "sentiment_label": entry.get("annotation"), "_source": entry["source"]}
        if unknown:
            row["media_problem"] = "unknown_span"
            report.add("unknown_span", segment_id, "full video without segment times (pass segment_times)")
        rows.append(row)
    report.unannotated_media.extend(media.unannotated({(e["video_id"], e["clip_id"]) for e in entries}))
    return rows


def _find_labels(root: Path, labels: str | Path | None) -> Path:
    candidates = [Path(labels).expanduser().resolve()] if labels is not None else [root / name for name in LABEL_FILES]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise CorpusLayoutError("mosi", candidates, "no label file (pass --labels label.csv|CMU_MOSI_Opinion_Labels.csd)")
    return found


@register_recipe("mosi")
def prepare_mosi(root: str | Path, out: str | Path | None = None, *, labels: str | Path | None = None,
                 segment_times: str | Path | None = None, folds: str | Path | dict | None = None,
                 allow_missing_media: bool = False, **check_options) -> PreparedCorpus:
    """Prepare CMU-MOSI at `root` into a manifest + report (written to `out` when given).

    labels: label.csv or .csd (default: looked up in `root`). segment_times: spans into full videos.
    check_options: `MediaChecks` fields (probe, check_audio, max_duration, drop, workers, ...).
    """
    root = require_root("mosi", root)
    label_path = _find_labels(root, labels)
    checks = MediaChecks(**check_options)
    report = ValidationReport(corpus="mosi", root=str(root), options={
        "labels": str(label_path), "segment_times": None if segment_times is None else str(segment_times),
        "allow_missing_media": allow_missing_media})
    rows = _collect_rows(root, label_path, allow_missing_media, folds, segment_times, report)
    return finish_corpus("mosi", rows, report, out, checks)


def mosi_manifest_from_labels(label_path: str | Path, root: str | Path, folds=None) -> pd.DataFrame:
    """A MOSI manifest from a label file (text pathway): media only checked to exist, none required."""
    root, label_path = Path(root).expanduser().resolve(), Path(label_path).expanduser().resolve()
    report = ValidationReport(corpus="mosi", root=str(root))
    return text_only_manifest("mosi", _collect_rows(root, label_path, True, folds, None, report), report, str(label_path))
