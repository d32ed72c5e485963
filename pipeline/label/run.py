"""Batch labelling of a folder of recordings: one output row per file, always; resumable.

For each media file: collect its evidence (evidence.py), let the labeller build its per-clip state, then
ask it for class probabilities of the whole clip and, with `segment_seconds`, of each window, or with
`segment_by="utterance"`, of each utterance (speech between pauses, `transcripts.speech_spans`). A file
that cannot be read gets a row with its error and the batch goes on. Rows are appended with
`ResumableRowWriter`, so a re-run skips the files an earlier run finished. With `options.workers` > 0 the
evidence of the next clips is collected in worker processes (workers.py) while this process runs the
labeller and writes the rows, in the folder's order.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from affectflow.extractors.batching import available_cpus
from affectflow.pipeline.core.devices import default_worker_count, threads_per_worker
from affectflow.pipeline.core.names import MODALITY_NAMES
from affectflow.pipeline.core.timing import StageTimer, timed
from affectflow.pipeline.label.evidence import ClipEvidence, EvidenceCollector
from affectflow.pipeline.label.labeler import Labeler, SpanPrediction
from affectflow.pipeline.label.needs import collector_factory
from affectflow.pipeline.label.output import ResumableRowWriter, output_columns
from affectflow.pipeline.label.pending import find_media, unfinished
from affectflow.pipeline.label.thumbnails import save_thumbnails
from affectflow.pipeline.label.workers import (
    ITEM_ERRORS, StartedPool, collect_clip, error_rows, iter_collected,
)
from affectflow.pipeline.media.faces import MIN_FACE_FRACTION


@dataclass
class LabelingOptions:
    """Knobs of a labelling run: window length (None = file-level rows only), face sampling rate,
    transcripts table (clip -> text), offline ASR on/off, device ("cpu", "cuda[:N]"), evidence worker
    processes (0 = in this process; None = `auto_workers`), the smallest face searched for as a fraction of the frame's shorter
    side (None = 20 px on full-resolution frames), whether the collector runs the labeller's audio
    extractor (Whisper: one encoder pass shared with ASR), and the folder where each labelled clip's face
    thumbnails are cached for the HTML report (None = none written; see thumbnails.py). segment_by:
    "window" (rows per `segment_seconds` window) or "utterance" (a row per utterance; segment_seconds None)."""

    segment_seconds: float | None = None
    segment_by: str = "window"
    face_fps: float = 2.0
    transcripts: dict[str, str] | None = None
    use_asr: bool = True
    device: str = "cpu"
    workers: int | None = 0
    min_face_fraction: float | None = MIN_FACE_FRACTION
    share_audio_encoder: bool = True
    thumbnails: Path | None = None


@dataclass
class LabelingSummary:
    """Counts of a run (clips labelled, skipped as already done, failed), its time, its file-level rows,
    and (when `label()` ran it) the output file, the plots and the HTML report written."""

    labeled: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)
    out: Path | None = None
    plots: list[Path] = field(default_factory=list)
    report: Path | None = None

    def record(self, rows: list[dict]) -> None:
        """Count one clip as labelled or failed from its file-level row (the last of its rows)."""
        final = rows[-1]
        self.rows.append(final)
        if final.get("error") and final.get("label") is None:
            self.failed += 1
        else:
            self.labeled += 1


WORKER_MEMORY_BYTES = 1 << 30
"""Memory one evidence worker is counted for (1 GiB): measured with the default model's collector (face
detector, Whisper ASR and encoder) after a 10 s 640x360 talking clip, VmRSS 0.97 GB (peak 0.99 GB, of which
0.36 GB private; the rest is shared with the forkserver); a 15 min clip adds ~0.1 GB of audio and crops."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else all cores), at least 1."""
    return max(1, available_cpus())


def available_memory() -> int | None:
    """Bytes of memory available to new processes (MemAvailable of /proc/meminfo); None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def worker_limit(cores: int | None = None, memory: int | None = None) -> int:
    """Most evidence workers this machine can run: one per usable core, and no more than the available
    memory holds at WORKER_MEMORY_BYTES each (0 = collect in the labelling process).

    cores, memory: override what is measured (usable_cores(), available_memory(); unknown memory = no cap)."""
    cores = cores if cores is not None else usable_cores()
    memory = memory if memory is not None else available_memory()
    by_memory = cores if memory is None else memory // WORKER_MEMORY_BYTES
    return max(0, min(cores, by_memory))


def auto_workers(clips: int, cpu_count: int | None = None, memory: int | None = None) -> int:
    """Evidence workers for `clips` files: `default_worker_count()` (one per core from two cores on), but at
    most one per two clips, since every worker first loads its own face detector and ASR, and at most
    `worker_limit` (memory: bytes available, default measured)."""
    limit = worker_limit(cpu_count or usable_cores(), memory)
    return max(0, min(default_worker_count(cpu_count), clips // 2, limit))


class LabelingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run: `rows_written` rows of `clips_written` clips reached `out` whole (a re-run
    resumes after them); the workers are already gone."""

    def __init__(self, rows_written: int = 0, clips_written: int = 0, out: Path | None = None) -> None:
        super().__init__(f"interrupted; {rows_written} rows written; rerun to resume")
        self.rows_written = rows_written
        self.clips_written = clips_written
        self.out = out


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Ctrl-C inside the block takes effect when it ends, so a clip's rows are written and counted together.

    Only the main thread receives signals; elsewhere the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, None)
        elif received and previous == signal.SIG_DFL:
            raise KeyboardInterrupt


def _prediction_row(clip: str, evidence: ClipEvidence, prediction: SpanPrediction, class_names: tuple[str, ...],
                    start: float | None, end: float | None) -> dict[str, Any]:
    """The output row of one span (start None = the file-level row): label, probabilities, error."""
    row: dict[str, Any] = {"clip": clip, "window_start": start, "window_end": end,
                           "transcript": evidence.text_between(start or 0.0, end) or ""}
    if prediction.probs is None:
        row["label"] = None
        row["error"] = "no usable modality in this span (no face, no speech/transcript)" if start is not None else \
            "no usable modality: " + ", ".join(evidence.absences())
    else:
        row["label"] = class_names[int(np.argmax(prediction.probs))]
        row["error"] = ""
        row.update({f"prob_{c}": round(float(p), 6) for c, p in zip(class_names, prediction.probs)})
    if evidence.transcript_problem:  # labelled without the sidecar: say so (and a re-run retries the clip)
        row["error"] = "; ".join(filter(None, [row["error"], f"transcript not used: {evidence.transcript_problem}"]))
    for modality, values in prediction.per_modality.items():
        row.update({f"prob_{MODALITY_NAMES[modality]}_{c}": round(float(p), 6) for c, p in zip(class_names, values)})
    return row


def _flags(evidence: ClipEvidence) -> dict[str, Any]:
    """The per-file columns every row of the clip repeats (modality flags, transcript source, duration)."""
    return {"has_audio": evidence.has_audio, "has_text": evidence.has_text, "has_vision": evidence.has_vision,
            "face_frames_ratio": round(evidence.faces.face_ratio, 4) if evidence.faces is not None else 0.0,
            "transcript_source": evidence.transcript_source, "duration_s": round(evidence.recording.duration, 3),
            "audio_note": evidence.audio_note or "", "text_reliable": evidence.text_reliable,
            "text_unreliable_reason": evidence.text_unreliable_reason}


def _predict_spans(labeler: Labeler, evidence: ClipEvidence, state: Any,
                   spans: list[tuple[float, float | None]]) -> list[SpanPrediction]:
    """The labeller's predictions of the spans: one `predict_spans` call when it has one (it may batch its
    models over the spans), else `predict` per span."""
    if hasattr(labeler, "predict_spans"):
        return labeler.predict_spans(evidence, state, spans)
    return [labeler.predict(evidence, state, start, end) for start, end in spans]


def rows_for_evidence(clip: str, evidence: ClipEvidence, labeler: Labeler, options: LabelingOptions) -> list[dict]:
    """All rows of one collected clip: window or utterance rows (when asked), then the file-level row; errors
    become a row."""
    try:
        state = labeler.clip_state(evidence)
        flags = _flags(evidence)
        duration = evidence.recording.duration
        spans: list[tuple[float | None, float | None]] = []
        if options.segment_seconds:
            step = float(options.segment_seconds)
            spans = [(float(start), min(float(start) + step, duration))
                     for start in np.arange(0.0, max(duration, 1e-9), step)]
        elif options.segment_by == "utterance":
            spans = [(utterance.start, utterance.end) for utterance in evidence.utterances]
        predictions = _predict_spans(labeler, evidence, state, spans + [(0.0, None)])
        rows = []
        for (start, end), prediction in zip(spans, predictions):
            row = _prediction_row(clip, evidence, prediction, labeler.class_names, round(start, 3), round(end, 3))
            rows.append({**flags, **row})
        rows.append({**flags, **_prediction_row(clip, evidence, predictions[-1], labeler.class_names, None, None)})
        if options.thumbnails is not None:  # a report without faces beats a clip lost to a full disk
            with contextlib.suppress(OSError):
                save_thumbnails(options.thumbnails, clip, evidence.faces.crops if evidence.has_vision else None)
        return rows
    except ITEM_ERRORS as error:
        return error_rows(clip, error)


def label_clip(path: Path, clip: str, collector: EvidenceCollector, labeler: Labeler,
               options: LabelingOptions, timer: StageTimer | None = None) -> list[dict]:
    """All rows of one file: window rows (when asked), then the file-level row; errors become a row.

    timer: when given, the collector's stages are added to it (the labeller times its own models).
    """
    collected = collect_clip(path, clip, collector, timer)
    if collected.evidence is None:
        return collected.error_rows
    return rows_for_evidence(clip, collected.evidence, labeler, options)


def open_output(videos: Path, out: str | Path, class_names: tuple[str, ...], modalities: tuple[str, ...],
                file_format: str) -> tuple[ResumableRowWriter, list[Path], list[Path]]:
    """(writer, all media files, files still to label): the output file resumed with this run's columns.

    Raises OutputError (OutputMismatchError, OutputLockedError, ...) when `out` cannot be used by this run.
    """
    writer = ResumableRowWriter(out, output_columns(class_names, modalities, file_format == "jsonl"), file_format)
    files = find_media(videos)
    return writer, files, unfinished(videos, files, writer.done_clips)


@contextlib.contextmanager
def main_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` inside the block (restored after; None = unchanged).

    With evidence workers busy on every core, the labeller's models here must not spin more threads:
    OpenMP threads waiting for a busy core made FER ~30x slower in bench_label.py.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_labeling(videos: str | Path, out: str | Path, labeler: Labeler, options: LabelingOptions,
                 file_format: str = "csv", progress: bool = True, timer: StageTimer | None = None,
                 early_pool: StartedPool | None = None) -> LabelingSummary:
    """Label every media file under `videos` into `out`, skipping files finished by an earlier run.

    timer: when given, gets the seconds of the evidence stages (summed over worker processes) and "writing";
    early_pool: workers from `needs.start_early_pool` (used when their EvidencePlan is this labeller's; always
    shut down). Raises LabelingInterrupted (a KeyboardInterrupt) on Ctrl-C, after the workers are killed and
    the rows written so far are closed whole.
    """
    videos = Path(videos)
    try:
        writer, files, todo = open_output(videos, out, labeler.class_names, labeler.modalities, file_format)
    except BaseException:
        if early_pool is not None:
            early_pool.terminate()
        raise
    with writer:
        summary = LabelingSummary(skipped=len(files) - len(todo))
        make = collector_factory(options, labeler)
        if early_pool is not None and (not todo or early_pool.make_collector != make):
            early_pool.terminate()  # what it is collecting ahead is not wanted
            early_pool = None
        if not todo:
            return summary
        started = time.perf_counter()
        items = [(path, path.relative_to(videos).as_posix()) for path in todo]
        workers = auto_workers(len(items)) if options.workers is None else options.workers
        if early_pool is not None:
            workers = early_pool.workers
        collected_clips = iter_collected(items, make, workers=workers, threads=threads_per_worker(workers),
                                         timer=timer, pool=early_pool)
        rows_written = 0
        try:  # closing: on Ctrl-C the collection ends (its workers are killed) before this raises
            with main_threads(1 if workers and options.device == "cpu" else None), \
                    contextlib.closing(collected_clips):
                for collected in tqdm(collected_clips, total=len(items), desc="labelling", unit="file",
                                      disable=not progress):
                    rows = collected.error_rows if collected.evidence is None else \
                        rows_for_evidence(collected.clip, collected.evidence, labeler, options)
                    with timed(timer, "writing"), sigint_deferred():
                        writer.append_clip(collected.clip, rows)
                        summary.record(rows)
                        rows_written += len(rows)
        except KeyboardInterrupt:
            raise LabelingInterrupted(rows_written, len(summary.rows), Path(out)) from None
        summary.seconds = time.perf_counter() - started
    return summary
