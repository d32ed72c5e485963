"""The fast extraction job stores what the straightforward path computes: one clip at a time, every frame
decoded, facenet-pytorch's MTCNN on one frame at a time, the extractor on one face / one clip / one
utterance. Audio exactly, text up to float32 rounding (a padded batch sums attention in another order;
bench_extract finds MiniLM's exactly equal). Vision at the level where the claim holds: batched MTCNN rounds
differently from facenet-pytorch's per-frame code, so its landmarks agree within LANDMARK_DELTA_PX, and the
features within what moving the landmarks by LANDMARK_DELTA_PX does to them (a sub-pixel move can flip
uint8 crop pixels by one grey level, which moves FER's features by ~1e-3: a fixed tolerance tuned on one
CPU failed on another). Both paths run the models with the same torch thread count."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from affectflow.extractors.base import create_extractor
from affectflow.extractors.run import MediaDecoder, run_extraction
from affectflow.extractors.store import FeatureStore
from affectflow.pipeline.core.devices import capped_threads, spare_cores
from affectflow.pipeline.core.manifest import iter_segments, manifest_from_segments, read_manifest, write_manifest
from affectflow.pipeline.core.records import FeatureSequence, Segment
from affectflow.pipeline.media.decode import load_decoders, probe, read_audio, read_frames
from affectflow.pipeline.media.faces import FaceDetector, FaceTrack, align_face, choose_face
from factories.tolerances import MTCNN_PX, float32_sum_bound

LANDMARK_DELTA_PX = MTCNN_PX
"""Largest landmark difference between batched MTCNN and facenet-pytorch's per-frame code: the same float32
arithmetic in another order (factories.tolerances.MTCNN_PX, 0.061 px; seen: 1-2 float32 ulps, ~3e-5 px)."""
LANDMARK_DIRECTIONS = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)], np.float32)
TEXT_TERMS = 64
"""Tiny BERT (factories.extractors): hidden size 32, intermediate 37, sequences <= 16 tokens; 64 bounds the
terms of any one float32 sum in it."""
FACE_FPS = 5.0


@pytest.fixture(scope="module")
def two_clips(media, tmp_path_factory) -> Path:
    """A manifest of two short talking-face segments (one a sub-span of the file) with transcripts."""
    folder = tmp_path_factory.mktemp("equivalence")
    shutil.copy(media["talking_face"], folder / "talking_face.mp4")
    segments = [Segment(id="whole", media_path="talking_face.mp4", start=0.0, end=2.0, text="I am so happy today."),
                Segment(id="middle", media_path="talking_face.mp4", start=0.4, end=1.6, text="Well, maybe not.")]
    return write_manifest(manifest_from_segments(segments), folder / "manifest.csv")


def encode_face(extractor, frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The extractor's features [D] of the face aligned on `points` [5, 2] in `frame`."""
    crop = align_face(frame, points, 64)
    track = FaceTrack(crop[None], np.ones(1, bool), np.zeros(1), np.zeros((1, 4), np.float32),
                      np.ones(1, np.float32), np.zeros((1, 5, 2), np.float32))
    return extractor.extract(track).values[0]


def landmark_sensitivity(extractor, frame: np.ndarray, points: np.ndarray, features: np.ndarray) -> float:
    """Largest feature change when all landmarks move by LANDMARK_DELTA_PX in one of 8 directions."""
    return max(float(np.abs(encode_face(extractor, frame, points + LANDMARK_DELTA_PX * d) - features).max())
               for d in LANDMARK_DIRECTIONS)


def straightforward_faces(path: Path, segment: Segment, extractor, mtcnn, detector: FaceDetector
                          ) -> tuple[FeatureSequence, float]:
    """Every frame decoded, the sampled ones detected and encoded one at a time (segment-relative times),
    and the largest feature change that a LANDMARK_DELTA_PX move of the landmarks causes in them.

    Checks on the way that the job's detector (batched MTCNN) finds the same landmarks within LANDMARK_DELTA_PX."""
    decoded = read_frames(path)
    native = probe(path).fps
    targets = np.arange(segment.start, segment.end, 1.0 / FACE_FPS)
    keep = np.unique(np.clip(np.floor(targets * native + 1e-6).astype(np.int64), 0, len(decoded) - 1))
    rows, mask, sensitivity = [], [], 0.0
    batched = detector.detect(decoded.frames[keep], decoded.times[keep])
    for position, index in enumerate(keep):
        frame = decoded.frames[index]
        with torch.no_grad():
            boxes, probs, points = mtcnn.detect(frame, landmarks=True)
        confident = [] if boxes is None else np.flatnonzero(np.asarray(probs, np.float32) >= 0.9)
        pick = choose_face(np.asarray(boxes, np.float32)[confident], frame.shape[1], None) if len(confident) else None
        if pick is None:
            rows.append(np.zeros(extractor.output_dim, np.float32))
            mask.append(False)
            continue
        chosen = np.asarray(points[confident[pick]], np.float32)
        assert batched.mask[position], f"frame {index}: batched MTCNN missed the face facenet-pytorch found"
        assert np.abs(batched.landmarks[position] - chosen).max() <= LANDMARK_DELTA_PX, index
        rows.append(encode_face(extractor, frame, chosen))
        sensitivity = max(sensitivity, landmark_sensitivity(extractor, frame, chosen, rows[-1]))
        mask.append(True)
    times = (decoded.times[keep] - segment.start).astype(np.float32)
    return FeatureSequence(np.stack(rows), times, np.array(mask), extractor.extractor_id), sensitivity


def straightforward(manifest: Path, extractor, workers: int | None) -> dict[str, tuple[FeatureSequence, float]]:
    """segment id -> (features, tolerance), one segment and one item at a time, the models on as many torch
    threads as the job gives its model stage beside `workers` decoding processes."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, min_face_size=20) if extractor.modality == "v" else None
    detector = FaceDetector(crop_size=64) if extractor.modality == "v" else None
    with capped_threads(spare_cores(workers) if workers else None):
        return {segment.id: straightforward_segment(manifest, segment, extractor, mtcnn, detector)
                for segment in iter_segments(read_manifest(manifest))}


def straightforward_segment(manifest: Path, segment: Segment, extractor, mtcnn, detector
                            ) -> tuple[FeatureSequence, float]:
    """(features, allowed |job - straightforward|) of one segment."""
    path = manifest.parent / segment.media_path
    if extractor.modality == "a":
        return extractor.extract(read_audio(path, segment.start, segment.end).samples), 0.0  # the same code
    if extractor.modality == "t":
        sequence = extractor.extract(segment.text)
        # a padded batch: every float32 sum of <= TEXT_TERMS terms may run in another order, in each of the
        # 2 layers x (attention scores, attention mix, two dense layers) + the final mean; LayerNorm keeps the
        # activations, and with 0.02-scale weights the absolute terms of each sum, within the output scale
        scale = max(1.0, float(np.abs(sequence.values).max()))
        return sequence, float32_sum_bound(TEXT_TERMS, scale, depth=9)
    return straightforward_faces(path, segment, extractor, mtcnn, detector)


@pytest.mark.numeric
@pytest.mark.parametrize("name,workers", [("logmel", 2), ("hf_text", None), ("fer", 2), ("fer", 0)])
def test_job_features_equal_the_straightforward_path(two_clips, tiny_models, tmp_path, name, workers):
    config = {"model": str(tiny_models["bert"])} if name == "hf_text" else {}
    extractor = create_extractor(name, **config)
    store = FeatureStore.create(tmp_path / extractor.extractor_id, extractor.spec())
    detector = FaceDetector(crop_size=64) if extractor.modality == "v" else None
    summary = run_extraction(read_manifest(two_clips), extractor, store, manifest_path=two_clips, batch_size=8,
                             face_detector=detector, progress=False, num_workers=workers)
    assert summary.extracted == 2 and not summary.failed
    for segment_id, (want, tolerance) in straightforward(two_clips, extractor, workers).items():
        got = store.read(segment_id)
        np.testing.assert_array_equal(got.mask, want.mask)
        # frame times: float32 seconds < 2 s (ulp 1.2e-7) from float64 decoder times, the same frames
        np.testing.assert_allclose(got.times, want.times, atol=1e-6)
        if extractor.modality == "v":
            assert want.mask.sum() >= 0.8 * len(want.mask)  # the generated face is found in most frames
        difference = float(np.abs(got.values - want.values).max())
        assert difference <= tolerance, (segment_id, difference, tolerance)




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
