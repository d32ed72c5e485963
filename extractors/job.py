"""`extract`: a manifest -> one FeatureStore per chosen extractor (what `affectflow extract` runs).

    summaries = extract("meld/train.parquet", "features/meld", audio="microsoft/wavlm-large", audio_layers=20,
                        text="roberta-large", vision="fer", device="cuda")
    for extractor_id, summary in summaries.items():
        print(summary.describe())

Each store lands in OUT/<extractor_id> (name-confighash); a re-run skips what is stored; failures are
listed in the summary and written to OUT/<extractor_id>/failures.jsonl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

import pandas as pd
import torch

from affectflow.pipeline.core.devices import resolve_device
from affectflow.pipeline.core.manifest import read_manifest, split_unusable_spans
from affectflow.pipeline.media.faces import FaceDetector

from affectflow.extractors.base import Extractor
from affectflow.extractors.choice import choose_extractors
from affectflow.extractors.ray_engine import ray_extract
from affectflow.extractors.run import ExtractionSummary, record_failure, run_extraction
from affectflow.extractors.store import FeatureStore, export_npy

ENGINES = ("local", "ray")
NPY_LEVELS = ("utterance", "frame")


def face_detector_for(extractor: Extractor, device: torch.device | str) -> FaceDetector:
    """A FaceDetector whose crops have the vision extractor's input size (224 when it declares none)."""
    size = extractor.contract.image_size
    return FaceDetector(device=device, crop_size=int(size[0]) if size else 224)


def export_summary_npy(summary: ExtractionSummary, out: str | Path, level: str) -> ExtractionSummary:
    """Export the summary's store to OUT/npy-<level>/<extractor_id>/*.npy; records where in the summary."""
    target = Path(out) / f"npy-{level}" / Path(summary.store_root).name
    written = export_npy(FeatureStore.open(summary.store_root), target, level=level)
    summary.npy_dir, summary.npy_files = target, len(written)
    return summary


def _check_options(engine: str, export_npy_level: str | None, batch_size: int) -> None:
    if engine not in ENGINES:
        raise ValueError(f"unknown extraction engine {engine!r}; choose from {ENGINES}")
    if export_npy_level is not None and export_npy_level not in NPY_LEVELS:
        raise ValueError(f"export_npy must be one of {NPY_LEVELS} or None, got {export_npy_level!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def extract(manifest: str | Path | pd.DataFrame, out: str | Path, *, audio: str | None = None,
            text: str | None = None, vision: str | None = None, audio_layers: int | str | None = None,
            text_layers: int | str | None = None, vision_layers: int | str | None = None,
            precision: str | None = None, chunk_seconds: float | None = None, device: str = "cpu",
            batch_size: int = 8, face_fps: float = 5.0, workers: int | None = None,
            export_npy: Literal["utterance", "frame"] | None = None, engine: Literal["local", "ray"] = "local",
            ray_address: str | None = None, actors: int | None = None, progress: bool = True,
            on_summary: Callable[[ExtractionSummary], None] | None = None) -> dict[str, ExtractionSummary]:
    """Extract every segment of `manifest` with the chosen extractors into OUT/<extractor_id> stores.

    manifest: a manifest file (relative media paths resolve against its folder) or a manifest table.
    audio / text / vision and the layer / precision / chunk options: see `choose_extractors` (all None:
    the offline defaults). device: "cpu", "cuda", "cuda:1" or "auto". face_fps: frames per second
    sampled for faces; workers: decoding processes (None: per modality; 0: a thread). export_npy: also
    write OUT/npy-<level>/<extractor_id>/<segment>.npy. engine "ray": a Ray Data pipeline (on
    `ray_address` or a local cluster, `actors` model actors). on_summary: called with each summary as
    its extractor finishes. Returns {extractor_id: summary}; per-segment failures never raise (a segment
    whose time span is unusable, e.g. inf or negative, is one of them).
    """
    _check_options(engine, export_npy, batch_size)
    manifest_path = None if isinstance(manifest, pd.DataFrame) else Path(manifest)
    table = manifest if manifest_path is None else read_manifest(manifest_path, invalid_spans="keep")
    table, bad_spans = _split_bad_spans(table)
    out = Path(out)
    choice = dict(audio=audio, text=text, vision=vision, audio_layers=audio_layers, text_layers=text_layers,
                  vision_layers=vision_layers, precision=precision, chunk_seconds=chunk_seconds)
    if engine == "ray":  # models are built on CPU here only for their specs; Ray actors build their own
        summaries = ray_extract(table, choose_extractors(**choice, device="cpu"), out, manifest_path=manifest_path,
                                batch_size=batch_size, face_fps=face_fps, device=device, actors=actors,
                                address=ray_address, progress=progress)
        for summary in summaries:
            _finish(summary, out, export_npy, on_summary, bad_spans)
    else:
        extractors = choose_extractors(**choice, device=resolve_device(device))
        summaries = _extract_locally(table, manifest_path, out, extractors, batch_size=batch_size, face_fps=face_fps,
                                     workers=workers, progress=progress,
                                     finish=lambda summary: _finish(summary, out, export_npy, on_summary, bad_spans))
    return {summary.extractor_id: summary for summary in summaries}


def _split_bad_spans(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[str, str]]]:
    """(the rows with a usable span, {segment id: (media path, reason)} for the others, which fail alone)."""
    usable, bad = split_unusable_spans(table)
    if not bad:
        return usable, {}
    rows = table[table["segment_id"].astype(str).isin(list(bad))]
    media = dict(zip(rows["segment_id"].astype(str), rows["media_path"].astype(str)))
    return usable, {segment_id: (media[segment_id], f"unusable time span: {problem}")
                    for segment_id, problem in bad.items()}


def _finish(summary: ExtractionSummary, out: Path, export_npy_level: str | None,
            on_summary: Callable[[ExtractionSummary], None] | None, bad_spans: dict[str, tuple[str, str]]) -> None:
    """After an extractor's job: the bad-span failures, the optional .npy export, then the caller's callback."""
    for segment_id, (media_path, reason) in bad_spans.items():
        record_failure(summary, segment_id, media_path, reason)
    if export_npy_level is not None:
        export_summary_npy(summary, out, export_npy_level)
    if on_summary is not None:
        on_summary(summary)


def _extract_locally(table: pd.DataFrame, manifest_path: Path | None, out: Path, extractors: list[Extractor], *,
                     batch_size: int, face_fps: float, workers: int | None, progress: bool,
                     finish: Callable[[ExtractionSummary], None]) -> list[ExtractionSummary]:
    """One `run_extraction` per extractor, in order (a vision extractor gets its own face detector)."""
    summaries = []
    for extractor in extractors:
        store = FeatureStore.create(out / extractor.extractor_id, extractor.spec())
        detector = face_detector_for(extractor, extractor.device) if extractor.modality == "v" else None
        summary = run_extraction(table, extractor, store, manifest_path=manifest_path, batch_size=batch_size,
                                 face_detector=detector, face_fps=face_fps, progress=progress, num_workers=workers)
        finish(summary)
        summaries.append(summary)
    return summaries
