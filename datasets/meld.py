"""MELD (Multimodal EmotionLines Dataset) from its raw download, MELD.Raw.

Raw layout (`root` = the extracted MELD.Raw folder)::

    root/train_sent_emo.csv            (or root/train/train_sent_emo.csv)
    root/dev_sent_emo.csv              (or root/dev/dev_sent_emo.csv)
    root/test_sent_emo.csv             (or root/test/test_sent_emo.csv)
    root/train/train_splits/dia{Dialogue_ID}_utt{Utterance_ID}.mp4      (or root/train_splits/)
    root/dev/dev_splits_complete/dia{D}_utt{U}.mp4                      (or root/dev_splits_complete/)
    root/test/output_repeated_splits_test/dia{D}_utt{U}.mp4             (or root/output_repeated_splits_test/)

CSV columns: ``Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,
StartTime,EndTime`` with times ``hh:mm:ss,ms`` in the *episode*. The clips are already cut per
utterance, so each segment is the whole clip (start 0, end None); the episode times are kept as
`episode_start`/`episode_end` (seconds), with `season`, `episode` and `sr_no`.

Manifest: segment ids ``{train|dev|test}_dia{D}_utt{U}`` (dialogue ids ``{split}_dia{D}``, so both are
unique across splits), `split` train/valid/test, `emotion` one of the 7 MELD emotions, `sentiment`
-1/0/1 with the original word in `sentiment_label`, `utterance_index` = Utterance_ID. D and U are
the CSV text as written (never read as numbers: "0_0" stays "0_0"); an id that is not a plain
number is noted in the report and `utterance_index` left empty.

Known defects handled and reported: cp1252 bytes, curly quotes and mojibake in older CSVs
(`encoding_repair`); train dia125_utt3 is a corrupt clip (`unreadable_media`), dev dia110_utt7 is
missing (`missing_media`); unannotated extra clips such as ``final_videos_test...`` (listed under
`unannotated_media`); clips that run for minutes (`long_media`); silent clips (`silent_audio`).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd

from affectflow.datasets.common import CorpusLayoutError, PreparedCorpus, finish_corpus, first_existing, require_root, text_only_manifest
from affectflow.datasets.text import decode_annotation_bytes
from affectflow.datasets.validation import MediaChecks, ValidationReport
from affectflow.datasets.registry import register_recipe

EMOTIONS: tuple[str, ...] = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SENTIMENTS: dict[str, float] = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}
CSV_COLUMNS: tuple[str, ...] = ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
                                "Utterance_ID", "Season", "Episode", "StartTime", "EndTime")
MELD_SPLITS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # MELD's own split name -> (canonical split, CSV name, clip folders relative to root)
    "train": ("train", "train_sent_emo.csv", ("train/train_splits", "train_splits")),
    "dev": ("valid", "dev_sent_emo.csv", ("dev/dev_splits_complete", "dev_splits_complete")),
    "test": ("test", "test_sent_emo.csv", ("test/output_repeated_splits_test", "output_repeated_splits_test")),
}
KNOWN_DEFECTS: dict[str, tuple[str, str]] = {
    "train_dia125_utt3": ("unreadable_media", "known corrupt clip in MELD.Raw"),
    "dev_dia110_utt7": ("missing_media", "known missing clip in MELD.Raw"),
}
_PLAIN_INTEGER = re.compile(r"-?[0-9]+")  # ASCII only: int() would also take "0_0" and "٣"
_TIME = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?\s*$")


def parse_episode_time(value: str) -> float:
    """``hh:mm:ss,ms`` (hours may be one digit) -> seconds; ValueError when it does not parse."""
    match = _TIME.match(str(value))
    if match is None:
        raise ValueError(f"not a hh:mm:ss,ms time: {value!r}")
    hours, minutes, seconds, millis = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int((millis or "0").ljust(3, "0")) / 1000


def _meld_split_of(path: Path) -> str:
    for name in MELD_SPLITS:
        if path.name.lower().startswith(name):
            return name
    raise ValueError(f"{path}: cannot tell the MELD split from the file name; pass split='train'|'dev'|'test'")


def _read_records(path: Path, report: ValidationReport | None) -> list[dict]:
    # Undecodable bytes stay as surrogates until each transcript is repaired and reported by id;
    # the csv module (unlike pandas' C parser) carries them through.
    text, cp1252_bytes = decode_annotation_bytes(path.read_bytes(), keep_undecodable=True)
    if cp1252_bytes and report is not None:
        report.add_issue(str(path), f"{cp1252_bytes} bytes were not UTF-8 and were read as cp1252")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [column.strip() for column in next(reader, [])]
    missing = [column for column in CSV_COLUMNS if column not in header]
    if missing:
        raise ValueError(f"{path}: not a MELD annotation CSV, missing columns {missing}")
    records = []
    for values in reader:
        if any(value.strip() for value in values):
            records.append(dict(zip(header, values + [""] * (len(header) - len(values)))))
    return records


def _times(record: dict, segment_id: str, report: ValidationReport | None) -> tuple[float | None, float | None]:
    try:
        start, end = parse_episode_time(record["StartTime"]), parse_episode_time(record["EndTime"])
    except ValueError as error:
        if report is not None:
            report.add("bad_times", segment_id, str(error))
        return None, None
    if end <= start and report is not None:
        report.add("bad_times", segment_id, f"episode EndTime {record['EndTime']} <= StartTime {record['StartTime']}")
    return start, end


def _row(record: dict, meld_split: str, media_dir: Path, location: str,
         report: ValidationReport | None) -> dict | None:
    # Ids are text: int() would silently read "0_0" as 0 and Arabic-Indic digits as numbers.
    dialogue, utterance = record["Dialogue_ID"].strip(), record["Utterance_ID"].strip()
    if not dialogue or not utterance:
        if report is not None:
            report.add_issue(location, f"Dialogue_ID/Utterance_ID empty: {record['Dialogue_ID']!r}, "
                                       f"{record['Utterance_ID']!r}; row skipped")
        return None
    if report is not None and not (_PLAIN_INTEGER.fullmatch(dialogue) and _PLAIN_INTEGER.fullmatch(utterance)):
        report.add_issue(location, f"Dialogue_ID/Utterance_ID {dialogue!r}/{utterance!r} are not plain numbers; "
                                   "kept as text in the segment id")
    segment_id = f"{meld_split}_dia{dialogue}_utt{utterance}"
    emotion, sentiment = record["Emotion"].strip().lower(), record["Sentiment"].strip().lower()
    if report is not None and (emotion not in EMOTIONS or sentiment not in SENTIMENTS):
        report.add("missing_label", segment_id, f"unknown emotion/sentiment {emotion!r}/{sentiment!r}")
    start, end = _times(record, segment_id, report)
    return {
        "segment_id": segment_id, "media_path": str(media_dir / f"dia{dialogue}_utt{utterance}.mp4"),
        "start": 0.0, "end": None, "speaker": record["Speaker"], "text": record["Utterance"],
        "emotion": emotion if emotion in EMOTIONS else None, "sentiment": SENTIMENTS.get(sentiment),
        "split": MELD_SPLITS[meld_split][0], "corpus": "meld", "dialogue_id": f"{meld_split}_dia{dialogue}",
        "utterance_index": _int_or_none(utterance), "sentiment_label": sentiment if sentiment in SENTIMENTS else None,
        "season": _int_or_none(record["Season"]), "episode": _int_or_none(record["Episode"]),
        "episode_start": start, "episode_end": end, "sr_no": _int_or_none(record["Sr No."]),
        "_source": location,
    }


def _int_or_none(value: str) -> int | None:
    """A plain ASCII integer's value, else None."""
    text = str(value).strip()
    return int(text) if _PLAIN_INTEGER.fullmatch(text) else None


def read_meld_rows(path: str | Path, split: str | None = None, media_dir: str | Path | None = None,
                   report: ValidationReport | None = None) -> list[dict]:
    """Parse one MELD CSV into manifest rows (dicts); problems go to `report` when given.

    split: "train", "dev" or "test" (default: from the file name). media_dir: the clip folder
    (default: the conventional folder next to the CSV, which need not exist).
    """
    path = Path(path).expanduser().resolve()
    meld_split = split if split is not None else _meld_split_of(path)
    if meld_split == "valid":
        meld_split = "dev"
    if meld_split not in MELD_SPLITS:
        raise ValueError(f"{path}: MELD split must be 'train', 'dev' or 'test', got {split!r}")
    if media_dir is None:
        media_dir = path.parent / MELD_SPLITS[meld_split][2][0]
    media_dir = Path(media_dir).expanduser().resolve()
    rows = []
    for index, record in enumerate(_read_records(path, report)):
        row = _row(record, meld_split, media_dir, f"{path.name} row {index + 1}", report)
        if row is not None:
            rows.append(row)
    return rows


def read_meld_csv(path: str | Path, split: str | None = None, media_dir: str | Path | None = None,
                  report: ValidationReport | None = None) -> pd.DataFrame:
    """Read one MELD CSV straight into a manifest table (text repaired; media only checked to exist).

    For the text pathway on the real annotation files: ``read_meld_csv("…/dev_sent_emo.csv")``.
    Repeated ids keep their first row (listed in `report` when given).
    """
    report = report if report is not None else ValidationReport(corpus="meld", root=str(Path(path).parent))
    return text_only_manifest("meld", read_meld_rows(path, split, media_dir, report), report, source=str(path))


def _locate(root: Path, meld_split: str, allow_missing_media: bool, report: ValidationReport) -> tuple[Path, Path]:
    _, csv_name, clip_dirs = MELD_SPLITS[meld_split]
    csv_candidates = [root / csv_name, root / meld_split / csv_name]
    csv_path = first_existing(csv_candidates)
    if csv_path is None:
        raise CorpusLayoutError("meld", csv_candidates, f"the {meld_split} annotation CSV is missing")
    dir_candidates = [root / folder for folder in clip_dirs]
    media_dir = first_existing(dir_candidates)
    if media_dir is None:
        if not allow_missing_media:
            raise CorpusLayoutError("meld", dir_candidates,
                                    f"the {meld_split} clip folder is missing (use --allow-missing-media for text only)")
        media_dir = dir_candidates[0]
        report.notes.append(f"{meld_split} clip folder absent ({media_dir}); every {meld_split} clip is missing")
    return csv_path, media_dir


def _unannotated(media_dir: Path, rows: list[dict]) -> list[str]:
    if not media_dir.is_dir():
        return []
    annotated = {Path(row["media_path"]).name for row in rows}
    return sorted(str(path) for path in media_dir.iterdir() if path.is_file() and path.name not in annotated)


def _known_defects(rows: list[dict], report: ValidationReport) -> None:
    # Without probing, a corrupt clip looks fine: flag the clips MELD.Raw is known to ship broken.
    for row in rows:
        known = KNOWN_DEFECTS.get(row["segment_id"])
        if known is not None and Path(row["media_path"]).is_file():
            row["media_problem"] = known[0]
            report.add(known[0], row["segment_id"], known[1] + " (not probed)")


@register_recipe("meld")
def prepare_meld(root: str | Path, out: str | Path | None = None, *, splits: tuple[str, ...] = ("train", "dev", "test"),
                 allow_missing_media: bool = False, check_audio: bool = True, **check_options) -> PreparedCorpus:
    """Prepare MELD.Raw at `root` into a manifest + validation report (written to `out` when given).

    splits: MELD split names to read. check_audio: decode each clip's audio to find silent clips.
    check_options: further `MediaChecks` fields (probe, max_duration, drop, workers, ...).
    """
    root = require_root("meld", root)
    checks = MediaChecks(check_audio=check_audio, **check_options)
    report = ValidationReport(corpus="meld", root=str(root),
                              options={"splits": list(splits), "allow_missing_media": allow_missing_media})
    rows: list[dict] = []
    for meld_split in splits:
        if meld_split not in MELD_SPLITS:
            raise ValueError(f"unknown MELD split {meld_split!r}; expected some of {list(MELD_SPLITS)}")
        csv_path, media_dir = _locate(root, meld_split, allow_missing_media, report)
        split_rows = read_meld_rows(csv_path, meld_split, media_dir, report)
        report.unannotated_media.extend(_unannotated(media_dir, split_rows))
        rows.extend(split_rows)
    if not checks.probe:
        _known_defects(rows, report)
    return finish_corpus("meld", rows, report, out, checks)
