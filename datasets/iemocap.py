"""IEMOCAP from its raw release, IEMOCAP_full_release.

Raw layout (`root` = IEMOCAP_full_release, N = 1..5)::

    root/SessionN/dialog/EmoEvaluation/<dialog>.txt        label lines (only lines starting with "["):
        [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
    root/SessionN/dialog/transcriptions/<dialog>.txt       Ses01F_impro01_F000 [006.2901-008.2357]: text
    root/SessionN/dialog/avi/DivX/<dialog>.avi             the dialogue video (both actors side by side)
    root/SessionN/sentences/wav/<dialog>/<utterance>.wav   per-utterance audio

Each segment is a time span into the dialogue `.avi` (media="avi", the default; nothing is cut) or
the whole utterance `.wav` (media="wav"). The speaking actor's face is on the left half of the
video when the session's lead gender (``name[5]``) equals the speaker's gender (``name[-4]``),
otherwise on the right: `face_side` records it so face detection looks on that side. V/A/D
(the bracketed triple) are kept as floats in `valence`, `arousal`, `dominance`.

Label sets (`emotion`; the original code stays in `emotion_raw`):
  "4": neutral, happy (hap + exc merged), sad, angry            -> 5,531 utterances on the full corpus
  "6": happy, sad, neutral, angry, excited, frustrated          -> 7,433 utterances on the full corpus
  "all": every utterance; the 10 categories by name, `xxx` (no agreement) as no emotion.
Utterances outside the set are left out and counted in the report's `excluded`.

`utterance_index` is the utterance's position in its dialogue (by start time, counting every
labelled utterance, also those the label set leaves out), `dialogue_id` the dialogue name.

Folds: `session` (int 1-5) and `split` = "session1".."session5". The standard protocol is
leave-one-session-out: `affectflow.pipeline.train.data.leave_one_session_out(table, test_session=5)`
rewrites `split` to train/valid/test, carving validation dialogues out of the other sessions.
"""

from __future__ import annotations

import re
from pathlib import Path

from affectflow.pipeline.core.spans import span_problem

from affectflow.datasets.common import CorpusLayoutError, PreparedCorpus, finish_corpus, require_root
from affectflow.datasets.validation import MediaChecks, ValidationReport
from affectflow.datasets.registry import register_recipe

CATEGORIES: dict[str, str] = {
    "neu": "neutral", "hap": "happy", "exc": "excited", "sad": "sad", "ang": "angry", "fru": "frustrated",
    "sur": "surprised", "fea": "fearful", "dis": "disgusted", "oth": "other",
}
LABEL_SETS: dict[str, dict[str, str | None]] = {
    "4": {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"},
    "6": {"hap": "happy", "sad": "sad", "neu": "neutral", "ang": "angry", "exc": "excited", "fru": "frustrated"},
    "all": {**CATEGORIES, "xxx": None},  # xxx = annotators did not agree: kept, without an emotion
}
_LABEL_LINE = re.compile(
    r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\]"
)
_TRANSCRIPT_LINE = re.compile(r"^(Ses\d\d[FM]_\S+_[FM]\d+)\s*\[[\d.]+\s*-\s*[\d.]+\]:\s?(.*)$")


def face_side_of(utterance_id: str) -> str:
    """"left" when the session's lead gender (id[5]) is the speaker's gender (id[-4]), else "right"."""
    if len(utterance_id) < 7 or utterance_id[5] not in "FM" or utterance_id[-4] not in "FM":
        raise ValueError(f"not an IEMOCAP utterance id (Ses01F_impro01_F000 style): {utterance_id!r}")
    return "left" if utterance_id[5] == utterance_id[-4] else "right"


def read_emo_evaluation(path: str | Path, report: ValidationReport | None = None) -> list[dict]:
    """Label lines of one EmoEvaluation file: [{id, start, end, code, valence, arousal, dominance}].

    Only lines starting with "[" are label lines; ones that do not parse are reported and skipped.
    """
    path = Path(path)
    labels = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.startswith("["):
            continue
        match = _LABEL_LINE.match(line)
        if match is None:
            if report is not None:
                report.add_issue(f"{path}:{number}", f"label line does not parse: {line[:80]!r}")
            continue
        start, end, name, code, valence, arousal, dominance = match.groups()
        labels.append({"id": name, "start": float(start), "end": float(end), "code": code.lower(),
                       "valence": float(valence), "arousal": float(arousal), "dominance": float(dominance)})
    return labels


def read_transcription(path: str | Path, report: ValidationReport | None = None) -> dict[str, str]:
    """Utterance id -> text of one transcriptions file; lines that do not parse are skipped."""
    path = Path(path)
    texts = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        match = _TRANSCRIPT_LINE.match(line.strip())
        if match is None:
            if line.strip() and report is not None:
                report.add_issue(f"{path}:{number}", f"transcription line skipped: {line.strip()[:80]!r}")
            continue
        texts[match.group(1)] = match.group(2)
    return texts


def _session_dirs(root: Path, sessions: tuple[int, ...]) -> dict[int, Path]:
    folders = {}
    for session in sessions:
        folder = root / f"Session{session}"
        expected = folder / "dialog" / "EmoEvaluation"
        if not expected.is_dir():
            raise CorpusLayoutError("iemocap", [expected], f"Session{session} labels are missing "
                                    "(pass sessions=... / --sessions to prepare only some sessions)")
        folders[session] = folder
    return folders


def _media_of(folder: Path, dialog: str, utterance: str, media: str) -> tuple[Path, bool]:
    if media == "avi":
        return folder / "dialog" / "avi" / "DivX" / f"{dialog}.avi", True
    return folder / "sentences" / "wav" / dialog / f"{utterance}.wav", False


def _dialog_rows(folder: Path, session: int, label_path: Path, label_set: dict[str, str | None], media: str,
                 report: ValidationReport) -> list[dict]:
    dialog = label_path.stem
    transcript_path = folder / "dialog" / "transcriptions" / f"{dialog}.txt"
    texts = read_transcription(transcript_path, report) if transcript_path.is_file() else {}
    if not transcript_path.is_file():
        report.add_issue(str(transcript_path), "transcription file missing; its utterances have no text")
    labels = sorted(read_emo_evaluation(label_path, report), key=lambda item: (item["start"], item["id"]))
    rows = []
    for index, item in enumerate(labels):
        name = item["id"]
        if item["code"] not in label_set:
            report.exclude("label_set", item["code"])
            continue
        problem = span_problem(item["start"], item["end"])
        if problem is not None:  # checked on the annotation, also when media="wav" makes the row whole-file
            report.add("invalid_span", name, problem)
            continue
        media_path, is_span = _media_of(folder, dialog, name, media)
        rows.append({
            "segment_id": name, "media_path": str(media_path),
            "start": item["start"] if is_span else 0.0, "end": item["end"] if is_span else None,
            "speaker": f"{name[:5]}_{name[-4]}", "text": texts.get(name), "emotion": label_set[item["code"]],
            "split": f"session{session}", "corpus": "iemocap", "dialogue_id": dialog, "utterance_index": index,
            "face_side": face_side_of(name) if is_span else None, "valence": item["valence"],
            "arousal": item["arousal"], "dominance": item["dominance"], "session": session,
            "emotion_raw": item["code"],
            "wav_path": str(folder / "sentences" / "wav" / dialog / f"{name}.wav"),
            "_source": f"{label_path}",
        })
    return rows


def _check_media_folders(folders: dict[int, Path], media: str, allow_missing_media: bool,
                         report: ValidationReport) -> None:
    relative = Path("dialog/avi/DivX") if media == "avi" else Path("sentences/wav")
    absent = [folder / relative for folder in folders.values() if not (folder / relative).is_dir()]
    if absent and not allow_missing_media:
        raise CorpusLayoutError("iemocap", absent, "media folder missing (use --allow-missing-media for text/labels only)")
    report.notes.extend(f"media folder absent: {path}" for path in absent)


@register_recipe("iemocap")
def prepare_iemocap(root: str | Path, out: str | Path | None = None, *, label_set: str = "4",
                    sessions: tuple[int, ...] = (1, 2, 3, 4, 5), media: str = "avi",
                    allow_missing_media: bool = False, **check_options) -> PreparedCorpus:
    """Prepare IEMOCAP_full_release at `root` into a manifest + report (written to `out` when given).

    label_set: "4", "6" or "all". media: "avi" (spans into the dialogue video) or "wav" (utterance
    files). check_options: `MediaChecks` fields (probe, check_audio, max_duration, drop, workers, ...).
    """
    if str(label_set) not in LABEL_SETS:
        raise ValueError(f"unknown IEMOCAP label set {label_set!r}; expected one of {list(LABEL_SETS)}")
    if media not in ("avi", "wav"):
        raise ValueError(f"media must be 'avi' or 'wav', got {media!r}")
    root = require_root("iemocap", root)
    checks = MediaChecks(**check_options)
    report = ValidationReport(corpus="iemocap", root=str(root), options={
        "label_set": str(label_set), "sessions": list(sessions), "media": media,
        "allow_missing_media": allow_missing_media})
    folders = _session_dirs(root, tuple(sessions))
    _check_media_folders(folders, media, allow_missing_media, report)
    rows: list[dict] = []
    for session, folder in folders.items():
        for label_path in sorted((folder / "dialog" / "EmoEvaluation").glob("*.txt")):
            if label_path.name.startswith("._"):
                continue  # macOS resource-fork copies shipped in some archives
            rows.extend(_dialog_rows(folder, session, label_path, LABEL_SETS[str(label_set)], media, report))
    return finish_corpus("iemocap", rows, report, out, checks)
