"""Length bucketing, worker-process decoding and deferred (cross-clip) face detection change speed only:
the stored features are those of the plain one-thread job."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from affectflow.extractors.base import create_extractor
from affectflow.extractors.batching import bucket_by_length, iter_decoded_batches, resolve_workers
from affectflow.extractors.run import MediaDecoder, run_extraction
from affectflow.extractors.store import FeatureStore
from affectflow.pipeline.media.faces import FaceDetector
from affectflow.pipeline.core.manifest import iter_segments, manifest_from_segments, read_manifest, write_manifest
from affectflow.pipeline.core.records import Segment

from factories.tolerances import FACE_FEATURE_TOLERANCE, MTCNN_PX, TINY_MODEL_TERMS, float32_chain_bound, torch_threads
pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation


def test_bucketing_is_a_permutation_sorted_within_pools():
    segments = [Segment(id=f"s{i}", media_path="x.mp4", text="w" * ((7 * i) % 11)) for i in range(10)]
    ordered = bucket_by_length(segments, batch_size=2, modality="t", pool_batches=2)
    assert sorted(s.id for s in ordered) == sorted(s.id for s in segments)
    lengths = [len(s.text) for s in ordered]
    for start in range(0, 10, 4):  # pools of 2 batches x 2 segments, in manifest order
        assert lengths[start:start + 4] == sorted(lengths[start:start + 4])
        assert {s.id for s in ordered[start:start + 4]} == {s.id for s in segments[start:start + 4]}
    by_duration = bucket_by_length([Segment(id="a", media_path="x", start=0, end=3.0),
                                    Segment(id="b", media_path="x"), Segment(id="c", media_path="x", end=1.0)],
                                   batch_size=8, modality="a")
    assert [s.id for s in by_duration] == ["b", "c", "a"]  # unknown duration counts as 0


def test_resolve_workers():
    assert resolve_workers(3, "v", 100, 8) == 3
    assert resolve_workers(None, "t", 100, 8) == 0
    assert resolve_workers(None, "v", 8, 8) == 0  # one batch: no pool
    assert 1 <= resolve_workers(None, "v", 100, 8) <= 4
    with pytest.raises(ValueError, match="num_workers"):
        resolve_workers(-1, "a", 10, 2)
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_decoded_batches(None, [], 0))


@pytest.fixture(scope="module")
def manifest(media, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batching")
    for name in ("talking_face", "no_face", "speech_wav", "truncated"):
        shutil.copy(media[name], folder / media[name].name)
    segments = [Segment(id="face", media_path="talking_face.mp4"),
                Segment(id="face_left", media_path="talking_face.mp4", start=0.2, end=1.4, face_side="left"),
                Segment(id="no_face", media_path="no_face.mp4", end=1.0),
                Segment(id="wav", media_path="speech.wav"),
                Segment(id="broken", media_path="truncated.mp4")]
    return write_manifest(manifest_from_segments(segments), folder / "manifest.csv")


def _extract(manifest: Path, root: Path, extractor, workers: int) -> FeatureStore:
    store = FeatureStore.create(root / extractor.extractor_id, extractor.spec())
    detector = FaceDetector(crop_size=64) if extractor.modality == "v" else None
    summary = run_extraction(read_manifest(manifest), extractor, store, manifest_path=manifest, batch_size=2,
                             face_detector=detector, progress=False, num_workers=workers)
    assert list(summary.failed) == ["broken"] and summary.extracted == 4
    return store


@pytest.mark.parametrize("name", ["logmel", "fer"])
def test_worker_processes_store_what_the_thread_stores(manifest, tmp_path, name):
    extractor = create_extractor(name)
    with torch_threads(1):  # what the worker processes run
        threaded = _extract(manifest, tmp_path / "thread", extractor, workers=0)
    pooled = _extract(manifest, tmp_path / "workers", extractor, workers=2)
    assert pooled.segment_ids() == threaded.segment_ids()
    for segment_id in threaded.segment_ids():
        want, got = threaded.read(segment_id), pooled.read(segment_id)
        np.testing.assert_array_equal(got.mask, want.mask)
        assert got.missing_reason == want.missing_reason
        if extractor.modality == "v":  # MTCNN batches differ: landmarks within MTCNN_PX, FER features within
            np.testing.assert_allclose(got.values, want.values, rtol=0, atol=FACE_FEATURE_TOLERANCE)
        else:  # the same code, inputs and thread count, in another process: within the float32 chain bound
            np.testing.assert_allclose(got.values, want.values, rtol=0,
                                       atol=float32_chain_bound(TINY_MODEL_TERMS, np.abs(want.values).max(initial=0.0)))


def test_deferred_faces_equal_per_clip_faces(manifest):
    extractor = create_extractor("fer")
    detector = FaceDetector(crop_size=64)
    segments = list(iter_segments(read_manifest(manifest)))
    direct = MediaDecoder(extractor, manifest, detector).decode
    deferred = MediaDecoder(extractor, manifest, detector, defer_faces=True)
    batch = [deferred.decode(segment) for segment in segments]
    assert hasattr(batch[0].item, "frames")  # sampled frames, faces not yet detected
    for got, segment in zip(deferred.attach_faces(batch), segments):
        want = direct(segment)
        assert (got.error is None) == (want.error is None) and (got.missing is None) == (want.missing is None)
        if want.item is not None:
            np.testing.assert_array_equal(got.item.mask, want.item.mask)
            np.testing.assert_allclose(got.item.landmarks, want.item.landmarks, atol=MTCNN_PX)
    with pytest.raises(ValueError, match="face_detector"):
        MediaDecoder(extractor, manifest, None)
