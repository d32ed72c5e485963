"""Feeding the extraction job fast: length bucketing across clips, decoding in worker processes, and
face detection batched across clips.

- `bucket_by_length` orders segments so that each batch holds segments of similar length (text length
  for text, duration for audio / vision) while keeping the manifest order between pools: less padding
  for the text encoder, more equal-length audio chunks for padding-sensitive speech encoders.
- `iter_decoded_batches` decodes batches of segments ahead of the model: in one background thread
  (`num_workers=0`) or in worker processes (a torch DataLoader; each worker runs single-threaded torch,
  so decoding and MTCNN use the other cores without oversubscribing them). When the face detector runs
  on CUDA the workers (or the thread) only decode frames, and the main process detects the faces of a
  whole batch of clips in shared MTCNN batches (`FaceDetector.detect_many`; CUDA cannot be used in
  forked workers, and one large batch keeps the GPU busier than one per clip).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Sequence

from affectflow.pipeline.core.devices import available_cpus
from affectflow.pipeline.core.records import Segment

AUTO_WORKERS = {"t": 0, "a": 4, "v": 8}
"""Most worker processes `resolve_workers` gives each modality (text needs no decoding); the cores bound
it too. Vision workers decode and (on CPU) run MTCNN, the heavy part: on a 2-core machine both cores go
to them while the light model stage waits in the main process."""


def resolve_workers(num_workers: int | None, modality: str, segments: int, batch_size: int) -> int:
    """Worker processes for a job: `num_workers` when given, else a per-modality default bounded by the
    cores and by the number of batches (one batch needs no pool)."""
    if num_workers is not None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        return num_workers
    batches = -(-segments // max(batch_size, 1))
    if batches <= 1:
        return 0
    return min(AUTO_WORKERS.get(modality, 0), available_cpus(), batches)


def length_key(segment: Segment, modality: str) -> float:
    """What a batch should hold similar amounts of: characters of text, else seconds (unknown = 0)."""
    if modality == "t":
        return float(len(segment.text or ""))
    return float(segment.duration or 0.0)


def bucket_by_length(segments: Sequence[Segment], batch_size: int, modality: str,
                     pool_batches: int = 16) -> list[Segment]:
    """Segments reordered so consecutive `batch_size` groups have similar length: sorted within pools of
    `pool_batches` batches (stable), pools in manifest order. Every segment appears exactly once."""
    pool = max(1, batch_size * pool_batches)
    ordered: list[Segment] = []
    for offset in range(0, len(segments), pool):
        chunk = list(segments[offset: offset + pool])
        ordered.extend(sorted(chunk, key=lambda segment: length_key(segment, modality)))
    return ordered


def _identity(batch: Any) -> Any:
    return batch


class _DecodeSegments:
    """A map-style dataset: index i -> segment i decoded (run inside a worker)."""

    def __init__(self, decoder: Any, segments: Sequence[Segment]) -> None:
        self.decoder, self.segments = decoder, segments

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, index: int) -> Any:
        return self.decoder.decode(self.segments[index])


def _thread_prefetch(decoder: Any, batches: list[list[Segment]]) -> Iterator[list]:
    """Decode batch i + 1 in one background thread while the caller works on batch i."""
    def decode(batch: list[Segment]) -> list:
        return [decoder.decode(segment) for segment in batch]

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(decode, batches[0]) if batches else None
        for index in range(len(batches)):
            decoded = pending.result()
            pending = pool.submit(decode, batches[index + 1]) if index + 1 < len(batches) else None
            yield decoded


def _process_prefetch(decoder: Any, segments: Sequence[Segment], batch_size: int,
                      num_workers: int) -> Iterator[list]:
    """Decode segments in `num_workers` DataLoader worker processes, one segment per task (so every
    worker stays busy), up to a batch ahead per worker; yields them in order, grouped in batches."""
    from torch.utils.data import DataLoader

    if hasattr(decoder, "load_libraries"):  # forked workers inherit them instead of importing them each
        decoder.load_libraries()
    loader = DataLoader(_DecodeSegments(decoder, segments), batch_size=None, shuffle=False,
                        num_workers=num_workers, collate_fn=_identity, prefetch_factor=max(2, batch_size),
                        multiprocessing_context="fork")
    batch: list = []
    for decoded in loader:
        batch.append(decoded)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def iter_decoded_batches(decoder: Any, segments: Sequence[Segment], batch_size: int,
                         num_workers: int = 0) -> Iterator[list]:
    """Batches of decoded segments (the job's `_Decoded` entries), in order, decoded ahead of the caller.

    decoder: an `affectflow.extractors.run.MediaDecoder`; with a CUDA face detector the workers decode
    frames only and each batch's faces are detected here, in the calling process (`attach_faces`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = [list(segments[i: i + batch_size]) for i in range(0, len(segments), batch_size)]
    previous = decoder.defer_faces
    defer = previous or (decoder.face_detector is not None and decoder.face_detector.device.type == "cuda")
    decoder.defer_faces = defer
    try:
        source = _process_prefetch(decoder, segments, batch_size, num_workers) if num_workers > 0 else \
            _thread_prefetch(decoder, batches)
        for decoded in source:
            yield decoder.attach_faces(decoded) if defer else decoded
    finally:
        decoder.defer_faces = previous
