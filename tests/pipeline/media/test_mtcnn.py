"""The loop-free batched MTCNN gives facenet-pytorch's detections; its area resampling is torch's."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.nn.functional import interpolate

from affectflow.pipeline.media.faces import FaceDetector
from affectflow.pipeline.media.decode import read_frames
from affectflow.pipeline.media.mtcnn import (
    area_crops, area_resize, detect_batch, prepare_mtcnn, summed_area_table,
)
from factories.media import face_image
from factories.tolerances import (MTCNN_OUTPUT_SCALE, MTCNN_PROBABILITY, MTCNN_PX, MTCNN_RELATIVE,
                                  float32_mean_bound)

pytestmark = pytest.mark.numeric  # compared with a tolerance / another implementation


@pytest.fixture(scope="module")
def frames(media) -> np.ndarray:
    """Talking-face frames, a faceless frame and a frame with two faces of different sizes: [6, 240, 320, 3]."""
    talking = read_frames(media["talking_face"], fps=2).frames[:4]
    blank = read_frames(media["no_face"], fps=2).frames[:1]
    two = np.full((240, 320, 3), 90, np.uint8)
    face = face_image()
    two[10:160, 0:150] = cv2.resize(face, (150, 150))
    two[120:220, 200:300] = cv2.resize(face, (100, 100))
    return np.concatenate([talking, blank, two[None]])


@pytest.fixture(scope="module")
def networks():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, min_face_size=20), prepare_mtcnn(MTCNN(keep_all=True, min_face_size=20))


def _by_area(boxes: np.ndarray) -> np.ndarray:
    return np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def test_detections_match_facenet_frame_by_frame(frames, networks):
    reference, fast = networks
    found = detect_batch(fast, frames)
    assert len(found) == len(frames)
    for index, (got_boxes, got_probabilities, got_points) in enumerate(found):
        with torch.no_grad():
            boxes, probabilities, points = reference.detect(frames[index], landmarks=True)
        if boxes is None:
            assert len(got_boxes) == 0, index
            continue
        boxes, points = np.asarray(boxes, np.float32), np.asarray(points, np.float32)
        assert len(got_boxes) == len(boxes), index
        want, got = _by_area(boxes), _by_area(got_boxes)
        np.testing.assert_allclose(got_boxes[got], boxes[want], atol=MTCNN_PX)
        np.testing.assert_allclose(got_probabilities[got], np.asarray(probabilities, np.float32)[want],
                                   atol=MTCNN_PROBABILITY)
        np.testing.assert_allclose(got_points[got], points[want], atol=MTCNN_PX)
    assert len(found[4][0]) == 0 and len(found[5][0]) == 2  # faceless frame; the two-face frame


def test_detections_do_not_depend_on_the_batch(frames, networks):
    _, fast = networks
    together = detect_batch(fast, frames)
    for index in (0, 3, 5):
        alone = detect_batch(fast, frames[index:index + 1])[0]
        for got, want, tolerance in zip(alone, together[index], (MTCNN_PX, MTCNN_PROBABILITY, MTCNN_PX)):
            np.testing.assert_allclose(got, want, atol=tolerance)


def test_area_resize_is_facenet_imresample():
    from facenet_pytorch.models.utils.detect_face import imresample

    generator = np.random.default_rng(0)
    images = torch.from_numpy(generator.integers(0, 256, (3, 37, 53, 3), dtype=np.uint8))
    table = summed_area_table(images)
    assert torch.equal(table[:, -1, -1], images.sum(dim=(1, 2), dtype=torch.int32))
    facenet = images.permute(0, 3, 1, 2).type(torch.float32)  # what facenet-pytorch's detect_face resamples
    for size in ((17, 29), (26, 37), (12, 12), (37, 53)):
        # exact integer sums / area vs torch's float32 mean of a window of <= (ceil(37/12) + 1) x (ceil(53/12) + 1)
        # pixels <= 255
        np.testing.assert_allclose(area_resize(table, *size).numpy(), imresample(facenet, size).numpy(),
                                   atol=float32_mean_bound(5 * 6, 255))


def test_area_crops_are_per_box_area_interpolation():
    generator = np.random.default_rng(1)
    images = torch.from_numpy(generator.integers(0, 256, (2, 60, 80, 3), dtype=np.uint8))
    table = summed_area_table(images)
    rows = torch.tensor([[0, 60], [5, 30], [10, 11], [20, 57]])
    cols = torch.tensor([[0, 80], [40, 77], [3, 50], [0, 7]])
    frame = torch.tensor([0, 1, 1, 0])
    crops = area_crops(table, frame, rows, cols, 24)
    for k in range(4):
        region = images[frame[k], rows[k, 0]:rows[k, 1], cols[k, 0]:cols[k, 1]].permute(2, 0, 1)[None].float()
        # exact integer sums / area vs torch's float32 mean of a window of <= (ceil(60/24) + 1) x (ceil(80/24) + 1)
        # pixels <= 255
        np.testing.assert_allclose(crops[k].numpy(), interpolate(region, size=(24, 24), mode="area")[0].numpy(),
                                   atol=float32_mean_bound(4 * 5, 255))


def test_empty_and_tiny_batches(networks):
    _, fast = networks
    assert detect_batch(fast, np.zeros((0, 240, 320, 3), np.uint8)) == []
    tiny = detect_batch(fast, np.zeros((2, 10, 10, 3), np.uint8))
    assert len(tiny) == 2 and all(len(boxes) == 0 for boxes, _, _ in tiny)
    with pytest.raises(ValueError, match="RGB"):
        detect_batch(fast, np.zeros((1, 10, 10), np.uint8))


def test_detect_many_equals_one_clip_at_a_time(frames):
    detector = FaceDetector(crop_size=64, batch_size=3)
    small = np.ascontiguousarray(frames[:3, ::2, ::2])  # another frame size: its own batches
    items = [(frames[:4], np.arange(4) * 0.5, None), (small, np.arange(3) * 0.5, None),
             (frames[3:], np.arange(3) * 0.5, "right"), (frames[:0], np.zeros(0), None)]
    tracks = detector.detect_many(items)
    for (clip, times, side), track in zip(items, tracks):
        alone = detector.detect(clip, times, side=side)
        np.testing.assert_array_equal(track.mask, alone.mask)
        np.testing.assert_allclose(track.landmarks, alone.landmarks, atol=MTCNN_PX)
        assert track.crops.shape == alone.crops.shape
    assert tracks[3].num_frames == 0


def test_half_precision_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        FaceDetector(precision="float16")


def test_onnxruntime_networks_equal_torch(networks):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from affectflow.pipeline.media.mtcnn_networks import OnnxNetworks, TorchNetworks

    _, fast = networks
    onnx_networks, torch_networks = OnnxNetworks(fast), TorchNetworks(fast)
    generator = torch.Generator().manual_seed(0)
    for name, shape in (("pnet", (3, 3, 37, 53)), ("pnet", (1, 3, 12, 12)), ("rnet", (5, 3, 24, 24)),
                        ("onet", (4, 3, 48, 48))):
        data = torch.rand(shape, generator=generator) * 2 - 1
        with torch.no_grad():
            expected = torch_networks(name, data.contiguous(memory_format=torch.channels_last))
        got = onnx_networks(name, data)
        assert len(got) == len(expected)
        for one, other in zip(got, expected):
            assert one.dtype == torch.float32 and one.shape == other.shape
            # the same networks, another runtime's summation order
            torch.testing.assert_close(one, other, rtol=0, atol=MTCNN_RELATIVE * MTCNN_OUTPUT_SCALE)


def test_onnxruntime_detections_equal_torch_detections(frames, networks):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import pickle

    from affectflow.pipeline.media.mtcnn_networks import OnnxNetworks, choose_networks

    _, fast = networks
    onnx_networks = pickle.loads(pickle.dumps(OnnxNetworks(fast)))  # a worker's copy rebuilds its sessions
    assert isinstance(choose_networks(fast, "onnxruntime"), OnnxNetworks)
    reference = detect_batch(fast, frames)
    for threads in (1, torch.get_num_threads()):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            found = detect_batch(fast, frames, onnx_networks)
        finally:
            torch.set_num_threads(previous)
        for (boxes, probabilities, points), (want_boxes, want_probabilities, want_points) in zip(found, reference):
            np.testing.assert_allclose(boxes, want_boxes, atol=MTCNN_PX)
            np.testing.assert_allclose(probabilities, want_probabilities, atol=MTCNN_PROBABILITY)
            np.testing.assert_allclose(points, want_points, atol=MTCNN_PX)


def test_runtime_choice():
    from facenet_pytorch import MTCNN

    from affectflow.pipeline.media.mtcnn_networks import TorchNetworks, choose_networks, onnx_runtime_available

    mtcnn = prepare_mtcnn(MTCNN(keep_all=True, min_face_size=20))
    assert isinstance(choose_networks(mtcnn, "torch"), TorchNetworks)
    with pytest.raises(ValueError, match="runtime"):
        choose_networks(mtcnn, "tensorrt")
    assert isinstance(choose_networks(mtcnn), TorchNetworks)
    mtcnn.to(torch.float64)  # not float32 on the CPU: ONNX Runtime refuses
    if onnx_runtime_available():
        with pytest.raises(ValueError, match="float32 CPU"):
            choose_networks(mtcnn, "onnxruntime")
