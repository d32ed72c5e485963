"""What a labelling run has to do, decided before anything heavy loads: its media files, and which of them
an earlier run into the same output already finished.

    classes = planned_classes()          # the default model's (class names, modalities); None: only loading tells
    pending = pending_clips("clips/", "labels.csv", output_columns(*classes, False), "csv")
    pending.todo    # the files still to label (never finished, or finished with an error: retried)

This module imports only the standard library and the output module (no torch, no models), so
`affectflow label` can answer "nothing to do" at once: the loop (run.py) and that early answer use the
same walk (`find_media`) and the same done rule (`finished_clips`: finished without error).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affectflow.pipeline.label.output import peek_finished_clips

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a")
DEFAULT_CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
DEFAULT_MODALITIES: tuple[str, ...] = ("a", "t", "v")
"""The offline default model's classes and modalities (default_model.py uses these), known without loading it."""
BUNDLE_INFO_FILE = "bundle.json"


def find_media(folder: str | Path) -> list[Path]:
    """Video and audio files under `folder` (recursive, case-insensitive suffixes), sorted.

    Every entry with a media suffix that is not a folder is listed, so that a dangling symlink, a symlink
    loop, a FIFO, a socket or a device file gets a row with its error (nothing here opens them).
    """
    folder = Path(folder)
    suffixes = VIDEO_SUFFIXES + AUDIO_SUFFIXES
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and not p.is_dir())


def unfinished(videos: Path, files: list[Path], done: set[str]) -> list[Path]:
    """The `files` (under `videos`) whose clip name (path relative to `videos`) is not in `done`."""
    return [path for path in files if path.relative_to(videos).as_posix() not in done]


@dataclass(frozen=True)
class PendingClips:
    """The media files of a run (`files`) and those still to label (`todo`), in the folder's order."""

    files: list[Path]
    todo: list[Path]

    @property
    def skipped(self) -> int:
        """Files an earlier run finished."""
        return len(self.files) - len(self.todo)


def pending_clips(videos: str | Path, out: str | Path, columns: list[str], file_format: str) -> PendingClips:
    """The files under `videos` that a run writing `columns` into `out` still has to label.

    Raises what opening the output would (OutputLockedError while another run writes it, OutputMismatchError
    for other columns, ...), without modifying the file.
    """
    videos = Path(videos)
    done = peek_finished_clips(out, columns, file_format)
    files = find_media(videos)
    return PendingClips(files, unfinished(videos, files, done))


def _bundle_classes(checkpoint: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(classes, modalities) recorded in a classification bundle's bundle.json; None when it does not
    plainly say (building the labeller then reports what is wrong with the bundle)."""
    try:
        task = json.loads((Path(checkpoint) / BUNDLE_INFO_FILE).read_text(encoding="utf-8"))["task_spec"]
        classes, modalities = task["class_names"], task["modalities"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if task.get("kind") != "classification" or not _names(classes) or not _names(modalities):
        return None
    return tuple(classes), tuple(modalities)


def _names(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(item, str) for item in value)


def planned_classes(checkpoint: str | Path | None = None, labeler: Any = None,
                    make_labeler: Any = None) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(class names, modalities) of a run's labeller, known without building it: the default model's, a
    bundle's (from its bundle.json), or those of a labeller object / class whose `class_names` and
    `modalities` are plain tuples. None when only building the labeller can tell (the run then decides
    after loading it). `output_columns(*classes, per_modality)` gives the run's columns."""
    source = labeler if labeler is not None else make_labeler
    if source is not None:
        classes, modalities = getattr(source, "class_names", None), getattr(source, "modalities", None)
        found = (tuple(classes), tuple(modalities)) if _names(classes) and _names(modalities) else None
    elif checkpoint is not None:
        found = _bundle_classes(checkpoint)
    else:
        found = DEFAULT_CLASSES, DEFAULT_MODALITIES
    return found
