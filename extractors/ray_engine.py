"""Scale-out engine: extraction (and labelling) with Ray Data over one machine or a cluster.

    summaries = ray_extract(read_manifest(path), [create_extractor("hf_text")], "features/", manifest_path=path)
    affectflow extract --manifest m.parquet --out features/ --engine ray [--ray-address auto]

Extraction runs as one streaming Ray Data pipeline per extractor:
  manifest rows (pandas -> `ray.data.from_pandas`)
    -> CPU tasks: decode each segment (16 kHz audio, or the frames sampled at `face_fps`; text needs none)
    -> an actor pool (`map_batches`, one model per actor; GPU actors when the device is CUDA, CPU actors
       otherwise): MTCNN face detection batched across the clips of a batch, then `extract_batch`
    -> the driver writes each FeatureSequence into the same `FeatureStore` the local engine writes, with
       the local engine's own decoding, failure and storing functions (so both produce identical stores;
       segments already stored are skipped, failures go to failures.jsonl).
Decoded media and features travel between stages as safetensors bytes (no pickle of arrays).
Labelling (`pipeline.label.ray_engine.ray_label`) maps `label_clip` over the files in an actor pool (each actor owns an
EvidenceCollector and a labeller) and appends each clip's rows with `ResumableRowWriter` on the driver.
Ray is an optional extra: `pip install "affectflow[ray]"`.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from affectflow.pipeline.core.devices import default_actor_count, resolve_device
from affectflow.pipeline.core.manifest import iter_segments
from affectflow.pipeline.core.records import FeatureSequence, Segment
from affectflow.pipeline.media.decode import VideoFrames
from affectflow.pipeline.media.faces import FaceDetector, FaceTrack

from affectflow.extractors.base import InputContract, extractor_from_spec
from affectflow.extractors.run import (
    ExtractionSummary, MediaDecoder, _Decoded, _extract_isolating_failures, _record_failure, _store_result,
)
from affectflow.extractors.spec import ExtractorSpec
from affectflow.extractors.store import FeatureStore

SEGMENT_COLUMNS = ("segment_id", "media_path", "start", "end", "text", "face_side")
FACE_TRACK_FIELDS = ("crops", "mask", "times", "boxes", "probabilities", "landmarks")


def require_ray() -> Any:
    """The `ray` module, or ImportError saying how to install the optional extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError("the Ray engine needs Ray Data: pip install 'affectflow[ray]' "
                          f"(or pip install 'ray[data]>=2.9'); import failed: {error}") from error
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Use the running Ray instance, or connect to `address` ("auto", "ray://host:10001") or start a
    local one (with `num_cpus`); a session started here is shut down on exit."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        options = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(include_dashboard=False, log_to_driver=False, **options)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


# --- transport: arrays <-> safetensors bytes --------------------------------------------------------
def pack_arrays(arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """Named numpy arrays (+ string metadata) as safetensors bytes."""
    from safetensors.numpy import save

    return save({name: np.ascontiguousarray(array) for name, array in arrays.items()}, metadata=metadata or {})


def unpack_arrays(payload: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Inverse of `pack_arrays`: (arrays, metadata)."""
    from safetensors.numpy import load

    header_length = int.from_bytes(payload[:8], "little")  # safetensors: u64 header size, JSON header
    metadata = json.loads(payload[8:8 + header_length]).get("__metadata__", {})
    return load(payload), metadata


def pack_sequence(sequence: FeatureSequence) -> bytes:
    """A FeatureSequence as bytes (values, times, mask, extras; extractor id and missing reason)."""
    arrays = {"values": sequence.values, "times": sequence.times, "mask": sequence.mask}
    arrays.update({f"extra.{name}": value for name, value in sequence.extras.items()})
    metadata = {"extractor_id": sequence.extractor_id}
    if sequence.missing_reason is not None:
        metadata["missing_reason"] = sequence.missing_reason
    return pack_arrays(arrays, metadata)


def unpack_sequence(payload: bytes) -> FeatureSequence:
    """Inverse of `pack_sequence`."""
    arrays, metadata = unpack_arrays(payload)
    extras = {key[len("extra."):]: value for key, value in arrays.items() if key.startswith("extra.")}
    return FeatureSequence(arrays["values"], arrays["times"], arrays["mask"].astype(bool), metadata["extractor_id"],
                           metadata.get("missing_reason"), extras)


def pack_item(item: Any) -> bytes:
    """A decoded extractor input (audio samples, transcript, VideoFrames or FaceTrack) as bytes."""
    if item is None:
        return pack_arrays({}, {"kind": "none"})
    if isinstance(item, np.ndarray):
        return pack_arrays({"samples": item}, {"kind": "audio"})
    if isinstance(item, str):
        return pack_arrays({}, {"kind": "text", "text": item})
    if hasattr(item, "crops"):
        return pack_arrays({name: getattr(item, name) for name in FACE_TRACK_FIELDS}, {"kind": "faces"})
    if hasattr(item, "frames"):
        return pack_arrays({"frames": item.frames, "times": item.times}, {"kind": "frames"})
    raise TypeError(f"cannot transport a decoded item of type {type(item).__name__}")


def unpack_item(payload: bytes) -> Any:
    """Inverse of `pack_item`."""
    arrays, metadata = unpack_arrays(payload)
    kind = metadata["kind"]
    if kind == "audio":
        return arrays["samples"]
    if kind == "text":
        return metadata["text"]
    if kind == "faces":
        return FaceTrack(*(arrays[name] for name in FACE_TRACK_FIELDS))
    if kind == "frames":
        return VideoFrames(arrays["frames"], arrays["times"])
    return None


# --- pipeline stages --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractorFacts:
    """What decoding needs to know of an extractor, without its model (cheap to ship to CPU tasks)."""

    name: str
    modality: str
    output_dim: int
    extractor_id: str
    contract: InputContract


def segment_table(table: pd.DataFrame, skip: set[str]) -> pd.DataFrame:
    """The manifest columns decoding needs, minus the segments in `skip` (already stored)."""
    rows = [{"segment_id": s.id, "media_path": s.media_path, "start": s.start,
             "end": np.nan if s.end is None else s.end, "text": s.text, "face_side": s.face_side}
            for s in iter_segments(table) if s.id not in skip]
    return pd.DataFrame(rows, columns=list(SEGMENT_COLUMNS))


def _segment(row: dict) -> Segment:
    def present(value: Any) -> bool:
        return value is not None and not (isinstance(value, float) and np.isnan(value))

    return Segment(id=str(row["segment_id"]), media_path=str(row["media_path"]), start=float(row["start"]),
                   end=float(row["end"]) if present(row["end"]) else None,
                   text=row["text"] if present(row["text"]) else None,
                   face_side=row["face_side"] if present(row["face_side"]) else None)


def _decoded_columns(entry: Any, key: str) -> dict:
    """One `_Decoded` as transport columns `<key>.*`: error text, a ready missing sequence, or the item."""
    columns = {f"{key}.seconds": float(entry.seconds), f"{key}.error": entry.error or "", f"{key}.missing": b"",
               f"{key}.item": b""}
    if entry.missing is not None:
        columns[f"{key}.missing"] = pack_sequence(entry.missing)
    elif entry.error is None:
        columns[f"{key}.item"] = pack_item(entry.item)
    return columns


def decode_segments(batch: pd.DataFrame, facts: list[ExtractorFacts], manifest_path: str | None,
                    face_fps: float) -> pd.DataFrame:
    """CPU task: decode a batch of manifest rows for every extractor k (columns `k.*`; vision: the sampled
    frames only, faces are detected by the model actors in batches across clips)."""
    decoders = [MediaDecoder(f, manifest_path, None, face_fps, defer_faces=True) for f in facts]
    rows = []
    for record in batch.to_dict(orient="records"):
        segment = _segment(record)
        row = {"segment_id": segment.id, "face_side": segment.face_side}
        for key, decoder in enumerate(decoders):
            row.update(_decoded_columns(decoder.decode(segment), str(key)))
        rows.append(row)
    return pd.DataFrame(rows)


class ExtractionActor:
    """Actor: the extractors (and FaceDetectors) on `device`; decoded rows -> packed sequences per extractor."""

    def __init__(self, specs: list[ExtractorSpec], device: str, face_fps: float) -> None:
        import torch

        self.device = resolve_device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(1)  # one core per actor: the pool provides the parallelism
        self.extractors = [extractor_from_spec(spec, device=self.device) for spec in specs]
        detectors: dict[int, Any] = {}
        self.decoders = []
        for extractor in self.extractors:
            detector = None
            if extractor.modality == "v":
                size = extractor.contract.image_size
                crop = int(size[0]) if size else 224
                detector = detectors.setdefault(crop, FaceDetector(device=self.device, crop_size=crop))
            self.decoders.append(MediaDecoder(extractor, None, detector, face_fps, defer_faces=True))

    def _entries(self, records: list[dict], key: str) -> list:
        entries = []
        for row in records:
            side = row["face_side"] if isinstance(row["face_side"], str) else None
            segment = Segment(id=str(row["segment_id"]), media_path="-", face_side=side)
            entry = _Decoded(segment, seconds=float(row[f"{key}.seconds"]), error=row[f"{key}.error"] or None)
            if row[f"{key}.missing"]:
                entry.missing = unpack_sequence(row[f"{key}.missing"])
            elif entry.error is None:
                entry.item = unpack_item(row[f"{key}.item"])
            entries.append(entry)
        return entries

    def _extract(self, key: int, records: list[dict]) -> list[tuple[str, bytes]]:
        """(error, packed sequence) per row for extractor `key` (the local engine's isolation of failures)."""
        entries = self._entries(records, str(key))
        if self.extractors[key].modality == "v":
            self.decoders[key].attach_faces(entries)
        pending = [e for e in entries if e.error is None and e.missing is None]
        results = dict(zip(map(id, pending), _extract_isolating_failures(self.extractors[key], pending))) \
            if pending else {}
        outputs = []
        for entry in entries:
            result = entry.missing if entry.missing is not None else results.get(id(entry), entry.error)
            if isinstance(result, FeatureSequence):
                outputs.append(("", pack_sequence(result)))
            else:
                outputs.append((result or "extraction failed", b""))
        return outputs

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Rows of `decode_segments` -> rows with `k.seconds`, `k.error`, `k.sequence` per extractor k."""
        records = batch.to_dict(orient="records")
        columns: dict[str, list] = {"segment_id": [str(r["segment_id"]) for r in records]}
        for key in range(len(self.extractors)):
            outputs = self._extract(key, records)
            columns[f"{key}.seconds"] = [float(r[f"{key}.seconds"]) for r in records]
            columns[f"{key}.error"] = [error for error, _ in outputs]
            columns[f"{key}.sequence"] = [payload for _, payload in outputs]
        return pd.DataFrame(columns)


# --- the driver ---------------------------------------------------------------------------------------
def _facts(extractor: Any) -> ExtractorFacts:
    return ExtractorFacts(extractor.name, extractor.modality, int(extractor.output_dim), extractor.extractor_id,
                          extractor.contract)


def _actor_options(device: str, actors: int | None, ray: Any) -> dict:
    """map_batches options of the model stage: a pool of `actors` (default: one per GPU, or half the CPUs)."""
    from ray.data import ActorPoolStrategy

    resources = ray.cluster_resources()
    cuda = str(device).startswith("cuda") or (device == "auto" and resources.get("GPU", 0) > 0)
    default = default_actor_count(cuda, resources)
    options = {"compute": ActorPoolStrategy(size=actors or default), "num_cpus": 1}
    if cuda:
        options["num_gpus"] = 1
    return options


def _write_results(rows: pd.DataFrame, key: int, store: Any, summary: Any, segments: dict, modality: str) -> None:
    """Driver side: store each sequence of extractor `key` (or record its failure) as the local engine does."""
    for row in rows.to_dict(orient="records"):
        segment = segments[row["segment_id"]]
        if row[f"{key}.error"]:
            _record_failure(store, summary, segment, row[f"{key}.error"])
            continue
        entry = _Decoded(segment, seconds=float(row[f"{key}.seconds"]))
        try:
            _store_result(store, summary, entry, unpack_sequence(row[f"{key}.sequence"]), modality)
        except ValueError as error:  # e.g. NaN features: refuse to store them, record why
            _record_failure(store, summary, segment, f"not stored: {error}")


def ray_extract(table: pd.DataFrame, extractors: list, out: str | Path, manifest_path: str | Path | None = None,
                batch_size: int = 8, face_fps: float = 5.0, device: str = "cpu", actors: int | None = None,
                address: str | None = None, num_cpus: int | None = None, progress: bool = False) -> list:
    """Extract `table`'s segments with every extractor into OUT/<extractor_id> FeatureStores, on Ray.

    One streaming pipeline for all extractors (each segment is read once per stage). extractors:
    Extractor objects (only their spec/contract is used here; the actors rebuild the models on `device`,
    "cuda" giving one GPU per actor); actors: size of the model actor pool (default: one per GPU, or half
    the CPUs); address / num_cpus: `ray.init` arguments when no Ray instance is running.
    Returns one `ExtractionSummary` per extractor (the local engine's report).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out)
    stores = [FeatureStore.create(out / e.extractor_id, e.spec()) for e in extractors]
    summaries = [ExtractionSummary(e.extractor_id, store.root) for e, store in zip(extractors, stores)]
    done = set.intersection(*(set(store.usable_segment_ids()) for store in stores)) if stores else set()
    todo = segment_table(table, done)  # a segment stored by some extractors only is redone for all
    for summary in summaries:
        summary.skipped = len(table) - len(todo)
    if todo.empty:
        return summaries
    segments = {row["segment_id"]: _segment(row) for row in todo.to_dict(orient="records")}
    manifest = None if manifest_path is None else str(Path(manifest_path).resolve())
    started = time.perf_counter()
    with ray_session(address, num_cpus) as ray:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        dataset = ray.data.from_pandas(todo).repartition(max(1, -(-len(todo) // batch_size)))
        decoded = dataset.map_batches(decode_segments, batch_size=batch_size, batch_format="pandas", num_cpus=1,
                                      fn_kwargs={"facts": [_facts(e) for e in extractors],
                                                 "manifest_path": manifest, "face_fps": face_fps})
        features = decoded.map_batches(ExtractionActor, batch_size=batch_size, batch_format="pandas",
                                       fn_constructor_kwargs={"specs": [e.spec() for e in extractors],
                                                              "device": str(device), "face_fps": face_fps},
                                       **_actor_options(str(device), actors, ray))
        for rows in features.iter_batches(batch_size=batch_size, batch_format="pandas"):
            for key, (extractor, store, summary) in enumerate(zip(extractors, stores, summaries)):
                _write_results(rows, key, store, summary, segments, extractor.modality)
    for summary in summaries:
        summary.elapsed_seconds = time.perf_counter() - started
    return summaries
