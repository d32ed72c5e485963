import numpy as np
import pytest

from affectflow.pipeline.media.faces import (
    MIN_FACE_FRACTION, FaceDetector, FaceTrack, choose_face, detection_scale, downscale_frames, map_detections_back,
    track_faces,
)
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


# --- detection on downscaled frames (min_face_fraction) -------------------------------------------


def test_detection_scale_makes_the_smallest_face_twenty_pixels():
    assert detection_scale(360, 640, 20, MIN_FACE_FRACTION) == pytest.approx(20 / 36)
    assert detection_scale(1080, 1920, 20, 0.1) == pytest.approx(20 / 108)
    assert detection_scale(120, 160, 20, 0.1) == 1.0  # a 12 px face is below what MTCNN sees anyway
    assert detection_scale(360, 640, 20, None) == 1.0
    with pytest.raises(ValueError, match="min_face_fraction"):
        detection_scale(360, 640, 20, 0.0)


def test_downscaled_detections_map_back_to_full_resolution():
    frames = np.zeros((2, 360, 640, 3), np.uint8)
    small, x_factor, y_factor = downscale_frames(frames, 20 / 36)
    assert small.shape == (2, 200, 356, 3)
    assert x_factor == pytest.approx(356 / 640) and y_factor == pytest.approx(200 / 360)
    boxes = np.array([[10.0, 20.0, 110.0, 140.0]], np.float32)
    points = np.array([[[30.0, 50.0], [70.0, 50.0], [50.0, 80.0], [35.0, 110.0], [65.0, 110.0]]], np.float32)
    [(full_boxes, probs, full_points)] = map_detections_back([(boxes, np.ones(1, np.float32), points)],
                                                              x_factor, y_factor)
    np.testing.assert_allclose(full_boxes, [[10 / x_factor, 20 / y_factor, 110 / x_factor, 140 / y_factor]], rtol=1e-6)
    np.testing.assert_allclose(full_points[..., 0], points[..., 0] / x_factor, rtol=1e-6)
    np.testing.assert_allclose(full_points[..., 1], points[..., 1] / y_factor, rtol=1e-6)
    assert probs[0] == 1.0
    assert downscale_frames(frames, 1.0)[0] is frames


def test_downscaled_detection_finds_the_full_resolution_face():
    import cv2

    from factories.media import face_image

    face = cv2.resize(face_image(), (200, 200))  # the face proper spans ~110 px of a 720-line frame
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[300:500, 700:900] = face
    frames = frame[None]
    full = FaceDetector(crop_size=112).detect(frames, np.zeros(1))
    fast = FaceDetector(crop_size=112, min_face_fraction=MIN_FACE_FRACTION).detect(frames, np.zeros(1))
    assert full.mask.all() and fast.mask.all() and fast.crops.shape == (1, 112, 112, 3)
    width = full.boxes[0, 2] - full.boxes[0, 0]
    # boxes and landmarks in full-resolution pixels, within a few percent of the face's width
    assert np.abs(fast.boxes - full.boxes).max() < 0.08 * width
    assert np.abs(fast.landmarks - full.landmarks).max() < 0.05 * width
    assert fast.boxes[0, 0] > 650 and fast.boxes[0, 2] < 950  # not left in the small frame's coordinates
