import numpy as np
import pytest

from affectflow.pipeline.media.faces import FaceDetector, FaceTrack, choose_face, track_faces
from affectflow.pipeline.media.decode import read_frames


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(device="cpu", crop_size=112)


def test_mtcnn_finds_the_real_face(media, detector):
    track = track_faces(media["talking_face"], detector, fps=5)
    assert track.num_frames == 10 and track.mask.all()
    assert track.crops.shape == (10, 112, 112, 3) and track.crops.dtype == np.uint8
    assert np.all(track.probabilities > 0.9)
    assert not np.isnan(track.boxes).any() and track.landmarks.shape == (10, 5, 2)
    # Aligned: the eyes sit level and the left eye is left of the right eye in every crop's source.
    eyes = track.landmarks[:, :2]
    assert np.all(eyes[:, 0, 0] < eyes[:, 1, 0])


def test_faceless_frames_are_masked_not_filled(media, detector):
    track = track_faces(media["no_face"], detector, fps=5)
    assert track.is_missing and track.num_frames == 10 and track.crops.shape[0] == 0
    assert np.isnan(track.boxes).all() and track.face_ratio == 0.0


def test_mixed_frames_keep_crops_for_valid_frames_only(media, detector):
    face = read_frames(media["talking_face"], fps=2)
    blank = read_frames(media["no_face"], fps=2)
    frames = np.concatenate([face.frames[:2], blank.frames[:2], face.frames[2:3]])
    track = detector.detect(frames, np.arange(5) * 0.5)
    np.testing.assert_array_equal(track.mask, [True, True, False, False, True])
    assert track.crops.shape[0] == 3
    np.testing.assert_allclose(track.valid_times, [0.0, 0.5, 2.0])


def test_side_selection(media, detector):
    # The face moves left to right across the clip.
    left = track_faces(media["talking_face"], detector, fps=5, side="left")
    right = track_faces(media["talking_face"], detector, fps=5, side="right")
    assert left.mask[0] and not left.mask[-1]
    assert right.mask[-1] and not right.mask[0]


def test_choose_face_picks_largest_or_side():
    boxes = np.array([[0, 0, 10, 10], [60, 0, 90, 30], [20, 0, 45, 25]], dtype=np.float32)
    assert choose_face(boxes, width=100, side=None) == 1
    assert choose_face(boxes, width=100, side="left") == 2
    assert choose_face(boxes[:1], width=100, side="right") is None
    with pytest.raises(ValueError):
        choose_face(boxes, width=100, side="top")


def test_detect_rejects_bad_frames(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((2, 10, 10, 3), np.float32), np.zeros(2))


def test_empty_track():
    track = FaceTrack.concatenate([], 64)
    assert track.is_missing and track.crops.shape == (0, 64, 64, 3)
