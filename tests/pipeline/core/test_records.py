import numpy as np
import pytest

from affectflow.pipeline.core.records import FeatureSequence, Segment


def test_segment_validates_times_and_side():
    segment = Segment(id="s1", media_path="a.mp4", start=1.0, end=2.5, emotion="joy", sentiment=0.5)
    assert segment.duration == pytest.approx(1.5)
    assert Segment(id="s2", media_path="a.mp4").duration is None
    with pytest.raises(ValueError, match="s3: end"):
        Segment(id="s3", media_path="a.mp4", start=2.0, end=1.0)
    with pytest.raises(ValueError, match="face_side"):
        Segment(id="s4", media_path="a.mp4", face_side="middle")
    with pytest.raises(ValueError, match="non-empty"):
        Segment(id="", media_path="a.mp4")


def test_segment_is_frozen():
    segment = Segment(id="s1", media_path="a.mp4")
    with pytest.raises(AttributeError):
        segment.emotion = "joy"
    assert segment.with_(emotion="joy").emotion == "joy"


def test_feature_sequence_utterance_uses_valid_frames_only():
    values = np.array([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], dtype=np.float32)
    sequence = FeatureSequence(values, np.array([0.0, 0.1, 0.2]), np.array([True, True, False]), "x")
    np.testing.assert_allclose(sequence.utterance(), [2.0, 3.0])
    assert not sequence.is_missing


def test_feature_sequence_missing_and_shape_checks():
    missing = FeatureSequence.missing(4, "x", "no face")
    assert missing.is_missing and missing.missing_reason == "no face"
    np.testing.assert_array_equal(missing.utterance(), np.zeros(4))
    with pytest.raises(ValueError, match=r"\[T, D\]"):
        FeatureSequence(np.zeros(3, np.float32), np.zeros(3), np.ones(3, bool), "x")
    with pytest.raises(ValueError, match="must both be"):
        FeatureSequence(np.zeros((3, 2), np.float32), np.zeros(2), np.ones(3, bool), "x")
