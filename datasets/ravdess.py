"""RAVDESS speech (Livingstone & Russo 2018, CC BY-NC-SA 4.0): one segment per audio file.

Raw layout (`root` = the folder holding the actors; .wav, .flac or the audio-visual .mp4 all work)::

    root/Actor_NN/03-01-EE-II-SS-RR-AA.wav      modality-channel-emotion-intensity-statement-repetition-actor

EE: 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised.
II: 01 normal, 02 strong. SS: 01 "Kids are talking by the door", 02 "Dogs are sitting by the door".
AA: the actor, odd = male, even = female. Every actor says the same two sentences, so `text` (the
statement) carries no emotion and is only there for completeness.

Label sets (`emotion`; the RAVDESS name stays in `emotion_raw`):
  "7": the default labeller's classes: anger, disgust, fear, joy, neutral, sadness, surprise
       (calm counts as neutral);
  "8": the same with calm kept as its own class "calm".

Manifest: speaker and `dialogue_id` = "Actor_NN" (so whole actors move between splits), `actor`,
`gender`, `intensity`, `statement`, `repetition`, and actor folds for speaker-independent
cross-validation: `session` = fold number 1..`folds` and `split` = "fold<k>". Folds are balanced by
gender (actors sorted by gender then number, dealt round-robin). The harness's leave-one-session-out
(`affectflow.pipeline.train.data.leave_one_session_out(table, test_session=k)`) turns fold k into
test and carves validation actors out of the others.
"""

from __future__ import annotations

import re
from pathlib import Path

from affectflow.datasets.common import CorpusLayoutError, PreparedCorpus, finish_corpus, require_root
from affectflow.datasets.registry import register_recipe
from affectflow.datasets.validation import MediaChecks, ValidationReport

RAVDESS_EMOTIONS: dict[str, str] = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
    "07": "disgust", "08": "surprised",
}
LABEL_SETS: dict[str, dict[str, str]] = {
    "7": {"neutral": "neutral", "calm": "neutral", "happy": "joy", "sad": "sadness", "angry": "anger",
          "fearful": "fear", "disgust": "disgust", "surprised": "surprise"},
    "8": {"neutral": "neutral", "calm": "calm", "happy": "joy", "sad": "sadness", "angry": "anger",
          "fearful": "fear", "disgust": "disgust", "surprised": "surprise"},
}
STATEMENTS: dict[str, str] = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
MEDIA_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".mp4")
_FILE_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def parse_ravdess_name(stem: str) -> dict[str, str]:
    """The fields of a RAVDESS file name stem ``03-01-05-02-01-01-03``; ValueError naming it when malformed."""
    match = _FILE_NAME.match(stem)
    if match is None or match.group(3) not in RAVDESS_EMOTIONS or match.group(5) not in STATEMENTS:
        raise ValueError(f"not a RAVDESS file name (MM-CC-EE-II-SS-RR-AA with EE 01-08, SS 01-02): {stem!r}")
    modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
    return {"modality": modality, "channel": channel, "emotion": RAVDESS_EMOTIONS[emotion],
            "intensity": "strong" if intensity == "02" else "normal", "statement": statement,
            "repetition": repetition, "actor": actor}


def actor_folds(actors: list[int], folds: int) -> dict[int, int]:
    """Actor -> fold 1..`folds`, balanced by gender: sorted by (gender, number), dealt round-robin."""
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    ordered = sorted(set(actors), key=lambda actor: (actor % 2 == 0, actor))
    return {actor: position % folds + 1 for position, actor in enumerate(ordered)}


def find_media(root: Path) -> list[Path]:
    """The RAVDESS media files under `root` (Actor_* folders, or the files right in `root`), sorted."""
    files = [path for pattern in ("Actor_*/*", "*") for path in root.glob(pattern)
             if path.is_file() and path.suffix.lower() in MEDIA_SUFFIXES and _FILE_NAME.match(path.stem)]
    return sorted(set(files))


def _rows(files: list[Path], label_set: dict[str, str], folds: int, report: ValidationReport) -> list[dict]:
    """One manifest row per file; files whose name does not parse are reported and left out."""
    parsed = []
    for path in files:
        try:
            parsed.append((path, parse_ravdess_name(path.stem)))
        except ValueError as error:
            report.add_issue(str(path), str(error))
    fold_of = actor_folds([int(fields["actor"]) for _, fields in parsed], folds)
    rows = []
    for path, fields in parsed:
        actor = int(fields["actor"])
        rows.append({
            "segment_id": path.stem, "media_path": str(path), "start": 0.0, "end": None,
            "speaker": f"Actor_{actor:02d}", "text": STATEMENTS[fields["statement"]],
            "emotion": label_set[fields["emotion"]], "split": f"fold{fold_of[actor]}", "corpus": "ravdess",
            "dialogue_id": f"Actor_{actor:02d}", "session": fold_of[actor], "actor": actor,
            "gender": "male" if actor % 2 else "female", "emotion_raw": fields["emotion"],
            "intensity": fields["intensity"], "statement": int(fields["statement"]),
            "repetition": int(fields["repetition"]), "_source": str(path),
        })
    return rows


@register_recipe("ravdess")
def prepare_ravdess(root: str | Path, out: str | Path | None = None, *, label_set: str = "7", folds: int = 5,
                    allow_missing_media: bool = False, **check_options) -> PreparedCorpus:
    """Prepare RAVDESS at `root` into a manifest + report (written to `out` when given).

    label_set: "7" (calm -> neutral) or "8" (calm kept). folds: actor folds in `session`/`split`.
    allow_missing_media: accepted like every recipe's, without effect (the labels are the file names).
    check_options: `MediaChecks` fields (probe, check_audio, max_duration, drop, workers, ...).
    """
    root = require_root("ravdess", root)
    if str(label_set) not in LABEL_SETS:
        raise ValueError(f"ravdess: unknown label_set {label_set!r}; choose from {sorted(LABEL_SETS)}")
    files = find_media(root)
    if not files:
        raise CorpusLayoutError("ravdess", [root / "Actor_01" / "03-01-01-01-01-01-01.wav"],
                                "no RAVDESS media (MM-CC-EE-II-SS-RR-AA.wav/.flac/.mp4) found")
    report = ValidationReport(corpus="ravdess", root=str(root), options={
        "label_set": str(label_set), "folds": folds, "allow_missing_media": allow_missing_media})
    report.notes.append("RAVDESS is CC BY-NC-SA 4.0: models trained on it are for non-commercial use")
    rows = _rows(files, LABEL_SETS[str(label_set)], folds, report)
    return finish_corpus("ravdess", rows, report, out, MediaChecks(**check_options))
