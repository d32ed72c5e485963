"""The Ray engine writes the same feature stores (and label files) as the local engine.

One small local Ray instance (`ray.init(num_cpus=2)`) serves the whole module. Ray is an optional
extra, but CI installs it: when it is missing these tests fail (they are never skipped).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

try:
    import ray
    import ray.data  # noqa: F401
except ImportError as error:  # a clear failure, not a skip: CI must install the extra
    raise ImportError("the Ray engine tests need Ray Data: pip install -e '.[ray]' "
                      "(pyproject's optional extra `ray`)") from error

from affectflow.extractors.base import create_extractor
from affectflow.extractors.ray_engine import (
    pack_item, pack_sequence, ray_extract, unpack_item, unpack_sequence,
)
from affectflow.extractors.run import run_extraction
from affectflow.extractors.store import FeatureStore
from affectflow.pipeline.media.faces import FaceDetector
from affectflow.pipeline.core.manifest import manifest_from_segments, read_manifest, write_manifest
from affectflow.pipeline.core.records import FeatureSequence, Segment
from factories.tolerances import FACE_FEATURE_TOLERANCE, TINY_MODEL_TERMS, float32_chain_bound, torch_threads

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU local Ray instance for the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def manifest(media, tmp_path_factory) -> Path:
    """Segments over the standard media set: whole clips, a span, a left face, missing streams, a bad file."""
    folder = tmp_path_factory.mktemp("ray_manifest")
    for name in ("talking_face", "no_audio", "no_face", "silent", "speech_wav", "truncated"):
        shutil.copy(media[name], folder / media[name].name)
    segments = [
        Segment(id="face", media_path="talking_face.mp4", text="I am so happy to see you"),
        Segment(id="face_span", media_path="talking_face.mp4", start=0.4, end=1.6, text="so happy",
                face_side="left"),
        Segment(id="no_audio", media_path="no_audio.mp4", start=0.2, end=1.8, text=""),
        Segment(id="no_face", media_path="no_face.mp4", text="this is not good"),
        Segment(id="silent", media_path="silent.mp4"),
        Segment(id="wav", media_path="speech.wav", text="oh no"),
        Segment(id="broken", media_path="truncated.mp4", text="what are you doing"),
    ]
    return write_manifest(manifest_from_segments(segments), folder / "manifest.csv")


@pytest.fixture(scope="module")
def extractors(tmp_path_factory) -> list:
    from factories.extractors import save_tiny_text_model

    text_model = save_tiny_text_model(tmp_path_factory.mktemp("tiny_bert") / "bert")
    return [create_extractor("logmel"), create_extractor("fer"), create_extractor("hf_text", model=str(text_model))]


@pytest.fixture(scope="module")
def both_engines(ray_cluster, manifest, extractors, tmp_path_factory):
    """(local root, ray root, ray summaries) after extracting the manifest with both engines."""
    table = read_manifest(manifest)
    local = tmp_path_factory.mktemp("local_engine")
    for extractor in extractors:
        store = FeatureStore.create(local / extractor.extractor_id, extractor.spec())
        detector = FaceDetector(crop_size=64) if extractor.modality == "v" else None
        with torch_threads(1):  # what a Ray actor runs
            run_extraction(table, extractor, store, manifest_path=manifest, batch_size=3, face_detector=detector,
                           progress=False, num_workers=0)
    remote = tmp_path_factory.mktemp("ray_engine")
    summaries = ray_extract(table, extractors, remote, manifest_path=manifest, batch_size=3, actors=1)
    return local, remote, summaries


def _failed_ids(root: Path) -> list[str]:
    path = root / "failures.jsonl"
    if not path.is_file():
        return []
    return sorted(json.loads(line)["segment_id"] for line in path.read_text(encoding="utf-8").splitlines())


def test_ray_stores_equal_local_stores(both_engines, extractors):
    local, remote, _ = both_engines
    for extractor in extractors:
        expected = FeatureStore.open(local / extractor.extractor_id, expected_spec=extractor.spec())
        actual = FeatureStore.open(remote / extractor.extractor_id, expected_spec=extractor.spec())
        assert actual.segment_ids() == expected.segment_ids() and len(expected.segment_ids()) >= 5
        assert _failed_ids(actual.root) == _failed_ids(expected.root)
        # Both on one torch thread, yet another process may round differently (seen: 5e-7 in log-mel on
        # non-vectorised kernels). MTCNN's landmarks move within MTCNN_PX, which can flip a rounded crop
        # pixel: FER features within FACE_FEATURE_TOLERANCE; log-mel (a 400-sample window, 257 bins) and the
        # tiny text model within their float32 chain bound.
        for segment_id in expected.segment_ids():
            want, got = expected.read(segment_id), actual.read(segment_id)
            tolerance = FACE_FEATURE_TOLERANCE if extractor.modality == "v" else \
                float32_chain_bound(TINY_MODEL_TERMS, np.abs(want.values).max(initial=0.0))
            assert got.missing_reason == want.missing_reason, segment_id
            np.testing.assert_array_equal(got.mask, want.mask, err_msg=segment_id)
            np.testing.assert_array_equal(got.times, want.times, err_msg=segment_id)
            np.testing.assert_allclose(got.values, want.values, rtol=0, atol=tolerance, err_msg=segment_id)
            assert sorted(got.extras) == sorted(want.extras)


def test_ray_failures_and_missing_are_the_local_ones(both_engines, extractors):
    _, remote, summaries = both_engines
    by_modality = {e.modality: (e, s) for e, s in zip(extractors, summaries)}
    audio_store = FeatureStore.open(remote / by_modality["a"][0].extractor_id)
    assert "broken" in by_modality["a"][1].failed and "broken" not in audio_store.segment_ids()
    assert audio_store.read("no_audio").is_missing and audio_store.read("silent").is_missing
    vision_store = FeatureStore.open(remote / by_modality["v"][0].extractor_id)
    assert vision_store.read("no_face").missing_reason == "no face detected in any frame"
    assert vision_store.read("wav").missing_reason == "no video stream"
    assert not vision_store.read("face").is_missing


def test_ray_rerun_skips_stored_segments(both_engines, manifest, extractors):
    _, remote, _ = both_engines
    table = read_manifest(manifest)
    summaries = ray_extract(table, extractors[:1], remote, manifest_path=manifest, batch_size=3, actors=1)
    # Only the failed segment is retried; everything stored is skipped.
    assert summaries[0].skipped == len(table) - 1 and summaries[0].extracted == 0
    assert list(summaries[0].failed) == ["broken"]


def test_transport_round_trips(face_track, speech):
    sequence = FeatureSequence(np.arange(6, dtype=np.float32).reshape(3, 2), np.array([0, 1, 2], np.float32),
                               np.array([True, False, True]), "x-1", extras={"token_ids": np.array([5, 6, 7])})
    back = unpack_sequence(pack_sequence(sequence))
    np.testing.assert_array_equal(back.values, sequence.values)
    np.testing.assert_array_equal(back.extras["token_ids"], [5, 6, 7])
    assert back.extractor_id == "x-1" and back.missing_reason is None
    missing = unpack_sequence(pack_sequence(FeatureSequence.missing(4, "x-1", "silent audio")))
    assert missing.is_missing and missing.missing_reason == "silent audio" and missing.dim == 4
    track = unpack_item(pack_item(face_track))
    np.testing.assert_array_equal(track.crops, face_track.crops)
    np.testing.assert_array_equal(track.mask, face_track.mask)
    np.testing.assert_array_equal(unpack_item(pack_item(speech)), speech)
    assert unpack_item(pack_item("héllo, wörld")) == "héllo, wörld" and unpack_item(pack_item(None)) is None
    with pytest.raises(TypeError, match="cannot transport"):
        pack_item(object())
