"""The fast extraction job stores what the straightforward path computes: one clip at a time, every frame
decoded, facenet-pytorch's MTCNN on one frame at a time, the extractor on one face / one clip / one
utterance. Audio exactly, text up to float rounding (a padded batch; bench_extract finds MiniLM's
exactly equal), vision within VISION_TOLERANCE of the feature scale (batched MTCNN
rounds differently from facenet-pytorch's per-frame code, which moves the aligned crops by a fraction
of a pixel)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from affectflow.extractors.base import create_extractor
from affectflow.extractors.batching import threads_beside_workers
from affectflow.extractors.run import MediaDecoder, run_extraction
from affectflow.extractors.store import FeatureStore
from affectflow.pipeline.core.manifest import iter_segments, manifest_from_segments, read_manifest, write_manifest
from affectflow.pipeline.core.records import FeatureSequence, Segment
from affectflow.pipeline.media.decode import load_decoders, probe, read_audio, read_frames
from affectflow.pipeline.media.faces import FaceDetector, FaceTrack, align_face, choose_face

VISION_TOLERANCE = 1e-3
"""Largest |job - straightforward| / max |straightforward| allowed for the vision features."""
FACE_FPS = 5.0


@pytest.fixture(scope="module")
def two_clips(media, tmp_path_factory) -> Path:
    """A manifest of two short talking-face segments (one a sub-span of the file) with transcripts."""
    folder = tmp_path_factory.mktemp("equivalence")
    shutil.copy(media["talking_face"], folder / "talking_face.mp4")
    segments = [Segment(id="whole", media_path="talking_face.mp4", start=0.0, end=2.0, text="I am so happy today."),
                Segment(id="middle", media_path="talking_face.mp4", start=0.4, end=1.6, text="Well, maybe not.")]
    return write_manifest(manifest_from_segments(segments), folder / "manifest.csv")


def straightforward_faces(path: Path, segment: Segment, extractor, mtcnn) -> FeatureSequence:
    """Every frame decoded, the sampled ones detected and encoded one at a time (segment-relative times)."""
    decoded = read_frames(path)
    native = probe(path).fps
    targets = np.arange(segment.start, segment.end, 1.0 / FACE_FPS)
    keep = np.unique(np.clip(np.floor(targets * native + 1e-6).astype(np.int64), 0, len(decoded) - 1))
    rows, mask = [], []
    for index in keep:
        frame = decoded.frames[index]
        with torch.no_grad():
            boxes, probs, points = mtcnn.detect(frame, landmarks=True)
        confident = [] if boxes is None else np.flatnonzero(np.asarray(probs, np.float32) >= 0.9)
        pick = choose_face(np.asarray(boxes, np.float32)[confident], frame.shape[1], None) if len(confident) else None
        if pick is None:
            rows.append(np.zeros(extractor.output_dim, np.float32))
            mask.append(False)
            continue
        crop = align_face(frame, np.asarray(points[confident[pick]], np.float32), 64)
        track = FaceTrack(crop[None], np.ones(1, bool), decoded.times[index:index + 1], np.zeros((1, 4), np.float32),
                          np.ones(1, np.float32), np.zeros((1, 5, 2), np.float32))
        rows.append(extractor.extract(track).values[0])
        mask.append(True)
    times = (decoded.times[keep] - segment.start).astype(np.float32)
    return FeatureSequence(np.stack(rows), times, np.array(mask), extractor.extractor_id)


def straightforward(manifest: Path, extractor) -> dict[str, FeatureSequence]:
    """segment id -> features, one segment and one item at a time."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, min_face_size=20) if extractor.modality == "v" else None
    results = {}
    for segment in iter_segments(read_manifest(manifest)):
        path = manifest.parent / segment.media_path
        if extractor.modality == "a":
            results[segment.id] = extractor.extract(read_audio(path, segment.start, segment.end).samples)
        elif extractor.modality == "t":
            results[segment.id] = extractor.extract(segment.text)
        else:
            results[segment.id] = straightforward_faces(path, segment, extractor, mtcnn)
    return results


@pytest.mark.parametrize("name,workers", [("logmel", 2), ("hf_text", None), ("fer", 2), ("fer", 0)])
def test_job_features_equal_the_straightforward_path(two_clips, tiny_models, tmp_path, name, workers):
    config = {"model": str(tiny_models["bert"])} if name == "hf_text" else {}
    extractor = create_extractor(name, **config)
    store = FeatureStore.create(tmp_path / extractor.extractor_id, extractor.spec())
    detector = FaceDetector(crop_size=64) if extractor.modality == "v" else None
    summary = run_extraction(read_manifest(two_clips), extractor, store, manifest_path=two_clips, batch_size=8,
                             face_detector=detector, progress=False, num_workers=workers)
    assert summary.extracted == 2 and not summary.failed
    for segment_id, want in straightforward(two_clips, extractor).items():
        got = store.read(segment_id)
        np.testing.assert_array_equal(got.mask, want.mask)
        np.testing.assert_allclose(got.times, want.times, atol=1e-4)
        if extractor.modality == "v":
            assert want.mask.sum() >= 0.8 * len(want.mask)  # the generated face is found in most frames
            scale = max(1.0, float(np.abs(want.values).max()))
            assert float(np.abs(got.values - want.values).max()) <= VISION_TOLERANCE * scale
        elif extractor.modality == "t":  # padded in a batch: attention sums may round in the last bit
            np.testing.assert_allclose(got.values, want.values, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(got.values, want.values)


def test_model_threads_beside_workers_are_cut_and_restored(monkeypatch):
    monkeypatch.setattr("affectflow.extractors.batching.available_cpus", lambda: 4)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with threads_beside_workers(2) as threads:
            assert threads == torch.get_num_threads() == 2  # 4 cores - 2 workers, within the 3 allowed
        assert torch.get_num_threads() == 3
        with threads_beside_workers(8) as threads:
            assert threads == 1  # never below one
        with threads_beside_workers(0) as threads:
            assert threads == 3  # no workers: untouched
        with pytest.raises(RuntimeError), threads_beside_workers(1):
            raise RuntimeError("restored on errors too")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_decoding_libraries_are_loaded_before_workers_fork(two_clips, tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr("affectflow.extractors.run.load_decoders",
                        lambda audio, video: loaded.append((audio, video)))
    for name, expected in (("logmel", (True, False)), ("fer", (False, True))):
        MediaDecoder(create_extractor(name), two_clips, FaceDetector(crop_size=64)).load_libraries()
        assert loaded[-1] == expected
    loaded.clear()
    extractor = create_extractor("logmel")
    store = FeatureStore.create(tmp_path / extractor.extractor_id, extractor.spec())
    run_extraction(read_manifest(two_clips), extractor, store, manifest_path=two_clips, progress=False, num_workers=1)
    assert loaded == [(True, False)]  # once, in this process, before the worker started


def test_load_decoders_imports_both_libraries():
    import sys

    load_decoders()
    assert "decord" in sys.modules and "torchcodec.decoders" in sys.modules
