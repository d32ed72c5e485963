"""The extraction job: a manifest's segments -> decoded media -> an extractor -> a FeatureStore.

    extractor = create_extractor("hf_text")
    store = FeatureStore.create(out / extractor.extractor_id, extractor.spec())
    summary = run_extraction(read_manifest(path), extractor, store, manifest_path=path)
    print(summary.describe())      # extracted / skipped (already stored) / failed (with reasons)

Segments already in the store are skipped, so an interrupted job resumes where it stopped. Media is
decoded per segment with `read_audio` (audio), the manifest's `text` (text) or `track_faces` on the
segment's `face_side` (vision), ahead of the model in worker processes (or one background thread), with
segments length-bucketed into batches (see extractors/batching.py). A segment
whose media cannot be read is recorded as failed with the reason, in the summary and in
`<store>/failures.jsonl`, and the job goes on. A modality that is simply absent (no audio stream,
silent track, no video stream, no face, empty transcript) is not a failure: it is stored as missing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from affectflow.pipeline.core.devices import capped_threads, spare_cores
from affectflow.pipeline.core.errors import AffectflowError, MediaError
from affectflow.pipeline.core.manifest import iter_segments, resolve_media_path
from affectflow.pipeline.core.records import FeatureSequence, Segment
from affectflow.pipeline.media.decode import load_decoders, probe, read_audio, read_frames
from affectflow.pipeline.media.faces import track_faces

from affectflow.extractors.base import Extractor
from affectflow.extractors.batching import bucket_by_length, iter_decoded_batches, resolve_workers
from affectflow.extractors.store import FeatureStore

FAILURES_FILE = "failures.jsonl"
DECODE_ERRORS = (AffectflowError, ValueError, OSError, RuntimeError)
"""Per-segment errors recorded as failures (bad media, bad input); anything else stops the job."""


@dataclass
class ExtractionSummary:
    """Outcome of one extraction job: counts, failures (segment id -> reason) and throughput."""

    extractor_id: str
    store_root: Path
    extracted: int = 0
    skipped: int = 0
    missing: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    media_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    npy_dir: Path | None = None
    """Where the store was exported as .npy files (None: not exported); `npy_files` of them."""
    npy_files: int = 0

    @property
    def speed(self) -> float:
        """Seconds of media extracted per second of wall-clock time (0 when nothing was timed)."""
        return self.media_seconds / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def describe(self) -> str:
        """A short human-readable report (one line, plus one line per failure, first 20)."""
        line = (f"{self.extractor_id}: extracted {self.extracted} (of which {self.missing} with the modality "
                f"missing), skipped {self.skipped} already stored, failed {len(self.failed)} -> {self.store_root}")
        if self.extracted:
            line += f"; {self.media_seconds:.1f} s of media in {self.elapsed_seconds:.1f} s ({self.speed:.2f}x)"
        failures = [f"  failed {sid}: {reason}" for sid, reason in list(self.failed.items())[:20]]
        if len(self.failed) > 20:
            failures.append(f"  ... and {len(self.failed) - 20} more (see {self.store_root / FAILURES_FILE})")
        return "\n".join([line, *failures])


@dataclass
class _Decoded:
    """One segment's extractor input, or a ready missing sequence, or the failure reason."""

    segment: Segment
    item: Any = None
    missing: FeatureSequence | None = None
    error: str | None = None
    seconds: float = 0.0


class MediaDecoder:
    """Decodes what an extractor needs from a segment (audio clip, transcript or face track)."""

    def __init__(self, extractor: Extractor, manifest_path: str | Path | None = None,
                 face_detector: Any = None, face_fps: float = 5.0, defer_faces: bool = False) -> None:
        if extractor.modality == "v" and face_detector is None and not defer_faces:
            raise ValueError(f"{extractor.name}: a vision extractor needs a face_detector (pipeline.faces.FaceDetector)")
        self.extractor = extractor
        self.manifest_path = manifest_path
        self.face_detector = face_detector
        self.face_fps = face_fps
        self.defer_faces = defer_faces
        """When True, vision decoding stops at the sampled frames (VideoFrames) and `attach_faces` detects
        them later in shared batches across clips (a CUDA detector, the Ray engine's model actors)."""

    def load_libraries(self) -> None:
        """Import the decoding libraries this decoder uses (before worker processes are forked)."""
        if self.extractor.modality != "t":
            load_decoders(audio=self.extractor.modality == "a", video=self.extractor.modality == "v")

    def decode(self, segment: Segment) -> _Decoded:
        """Decode one segment; errors become `_Decoded.error` (the job records them and goes on)."""
        try:
            if self.extractor.modality == "t":
                return _Decoded(segment, item=segment.text, seconds=segment.duration or 0.0)
            path = resolve_media_path(segment.media_path, self.manifest_path)
            if self.extractor.modality == "a":
                return self._decode_audio(segment, path)
            return self._decode_faces(segment, path)
        except DECODE_ERRORS as error:
            return _Decoded(segment, error=f"{type(error).__name__}: {error}")

    def _missing(self, segment: Segment, reason: str, seconds: float) -> _Decoded:
        sequence = FeatureSequence.missing(self.extractor.output_dim, self.extractor.extractor_id, reason)
        return _Decoded(segment, missing=sequence, seconds=seconds)

    def _decode_audio(self, segment: Segment, path: Path) -> _Decoded:
        clip = read_audio(path, segment.start, segment.end, sample_rate=self.extractor.contract.sample_rate)
        if clip.is_missing:
            return self._missing(segment, clip.missing_reason, segment.duration or 0.0)
        if clip.silent:
            return self._missing(segment, "silent audio", clip.duration)
        return _Decoded(segment, item=clip.samples, seconds=clip.duration)

    def _decode_faces(self, segment: Segment, path: Path) -> _Decoded:
        try:
            if self.defer_faces:
                track = read_frames(path, segment.start, segment.end, fps=self.face_fps)
            else:
                track = track_faces(path, self.face_detector, segment.start, segment.end, fps=self.face_fps,
                                    side=segment.face_side)
        except MediaError:
            recording = probe(path)  # re-raises for unreadable files; an audio-only file is just faceless
            if recording.has_video:
                raise
            return self._missing(segment, "no video stream", segment.duration or recording.duration)
        seconds = segment.duration if segment.duration is not None else len(track.times) / self.face_fps
        return _Decoded(segment, item=track, seconds=seconds)

    def attach_faces(self, decoded: list[_Decoded]) -> list[_Decoded]:
        """Replace the sampled frames of deferred vision entries by their FaceTracks, detected in shared
        batches across the clips (`FaceDetector.detect_many`); other entries pass through."""
        waiting = [entry for entry in decoded if entry.item is not None and hasattr(entry.item, "frames")]
        if not waiting:
            return decoded
        try:
            tracks = self.face_detector.detect_many([(entry.item.frames, entry.item.times, entry.segment.face_side)
                                                     for entry in waiting])
        except DECODE_ERRORS as error:
            for entry in waiting:
                entry.item, entry.error = None, f"face detection failed: {type(error).__name__}: {error}"
            return decoded
        for entry, track in zip(waiting, tracks):
            entry.item = track
        return decoded


def _record_failure(store: FeatureStore, summary: ExtractionSummary, segment: Segment, reason: str) -> None:
    record_failure(summary, segment.id, segment.media_path, reason)


def record_failure(summary: ExtractionSummary, segment_id: str, media_path: str, reason: str) -> None:
    """Note one segment's failure in `summary` and append it to the store's failures.jsonl."""
    summary.failed[segment_id] = reason
    entry = {"segment_id": segment_id, "media_path": media_path, "extractor_id": summary.extractor_id,
             "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(Path(summary.store_root) / FAILURES_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _extract_isolating_failures(extractor: Extractor, decoded: list[_Decoded]) -> list[FeatureSequence | str]:
    """extract_batch on the batch; if it raises, item by item so one bad input fails alone."""
    items = [entry.item for entry in decoded]
    try:
        return list(extractor.extract_batch(items))
    except DECODE_ERRORS:
        results: list[FeatureSequence | str] = []
        for item in items:
            try:
                results.append(extractor.extract(item))
            except DECODE_ERRORS as error:
                results.append(f"extraction failed: {type(error).__name__}: {error}")
        return results


def _store_result(store: FeatureStore, summary: ExtractionSummary, entry: _Decoded,
                  sequence: FeatureSequence, modality: str) -> None:
    if modality == "v" and sequence.num_frames:  # face-track times are file times: make them segment-relative
        sequence = replace(sequence, times=(sequence.times - entry.segment.start).astype("float32"))
    store.write(entry.segment.id, sequence)
    summary.extracted += 1
    summary.missing += int(sequence.is_missing)
    summary.media_seconds += entry.seconds


def run_extraction(table: pd.DataFrame, extractor: Extractor, store: FeatureStore,
                   manifest_path: str | Path | None = None, batch_size: int = 8, face_detector: Any = None,
                   face_fps: float = 5.0, progress: bool = True, num_workers: int | None = None) -> ExtractionSummary:
    """Extract every manifest segment not yet in `store`; returns the summary (never raises per segment).

    table: a manifest (pipeline.manifest schema); manifest_path: base for relative media paths;
    face_detector: a FaceDetector, required for vision extractors; face_fps: face sampling rate (Hz);
    num_workers: decoding worker processes (None: a per-modality default, see extractors.batching;
    0: one background thread). Segments are length-bucketed into batches; results do not depend on it.
    """
    from tqdm.auto import tqdm

    if store.spec.config_hash != extractor.config_hash or store.modality != extractor.modality:
        raise ValueError(f"store {store.root} holds {store.extractor_id}, not {extractor.extractor_id}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    decoder = MediaDecoder(extractor, manifest_path, face_detector, face_fps)
    summary = ExtractionSummary(extractor.extractor_id, store.root)
    segments = list(iter_segments(table))
    done = set(store.usable_segment_ids())  # a corrupt file is extracted again
    todo = bucket_by_length([segment for segment in segments if segment.id not in done], batch_size,
                            extractor.modality)
    summary.skipped = len(segments) - len(todo)
    workers = resolve_workers(num_workers, extractor.modality, len(todo), batch_size)
    started = time.perf_counter()
    with tqdm(total=len(todo), desc=extractor.extractor_id, unit="seg", disable=not progress) as bar, \
            capped_threads(spare_cores(workers) if workers > 0 else None):  # workers take one core each
        for decoded in iter_decoded_batches(decoder, todo, batch_size, workers):
            _process_batch(extractor, store, summary, decoded)
            bar.update(len(decoded))
    summary.elapsed_seconds = time.perf_counter() - started
    return summary


def _process_batch(extractor: Extractor, store: FeatureStore, summary: ExtractionSummary,
                   decoded: list[_Decoded]) -> None:
    """Write ready-missing entries, extract the rest, record failures."""
    to_extract = []
    ready: list[tuple[_Decoded, FeatureSequence | str]] = []
    for entry in decoded:
        if entry.error is not None:
            _record_failure(store, summary, entry.segment, entry.error)
        elif entry.missing is not None:
            ready.append((entry, entry.missing))
        else:
            to_extract.append(entry)
    if to_extract:
        ready.extend(zip(to_extract, _extract_isolating_failures(extractor, to_extract)))
    for entry, result in ready:
        if isinstance(result, str):
            _record_failure(store, summary, entry.segment, result)
            continue
        try:
            _store_result(store, summary, entry, result, extractor.modality)
        except ValueError as error:  # e.g. NaN features: refuse to store them, record why
            _record_failure(store, summary, entry.segment, f"not stored: {error}")
