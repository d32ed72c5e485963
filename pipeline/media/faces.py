"""Face detection and aligned crops with MTCNN (facenet-pytorch; its weights ship in the wheel).

`FaceDetector.detect` runs MTCNN over frames in batches on the given device, picks one face per frame
(the largest, or the largest on the left/right half for dyadic corpora such as IEMOCAP), and warps an
aligned crop from its five landmarks. Faceless frames are marked missing in the mask; crops are kept
for valid frames only, never filled with black images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from affectflow.pipeline.core.timing import StageTimer, timed
from affectflow.pipeline.media.decode import FRAME_CHUNK_BYTES, iter_frame_chunks
from affectflow.pipeline.media.mtcnn import detect_batch, prepare_mtcnn
from affectflow.pipeline.media.mtcnn_networks import choose_networks

# The five-point face template (eyes, nose tip, mouth corners) of a 112x112 aligned crop (ArcFace).
_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
SIDES = (None, "left", "right")
MIN_FACE_FRACTION = 0.1
"""The smallest face worth labelling, as a fraction of the frame's shorter side (36 px in 640x360): with
`FaceDetector(min_face_fraction=...)` frames are downscaled so such a face spans MTCNN's `min_face_size`
(20 px), boxes and landmarks are mapped back, and crops are cut from the full-resolution frame."""


def detection_scale(height: int, width: int, min_face_size: int, min_face_fraction: float | None) -> float:
    """Factor (<= 1) frames of [height, width] are resized by before MTCNN: the smallest face that matters
    (`min_face_fraction` of the shorter side) becomes `min_face_size` pixels; 1 when None or already small."""
    if min_face_fraction is None:
        return 1.0
    if not 0 < min_face_fraction <= 1:
        raise ValueError(f"min_face_fraction must be in (0, 1], got {min_face_fraction}")
    return min(1.0, min_face_size / (min_face_fraction * min(height, width)))


def downscale_frames(frames: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """(frames uint8 [T, h, w, 3] area-resized by `scale`, x factor w / W, y factor h / H).

    The exact per-axis factors (after rounding the size) map small-frame pixels back: x_full = x / fx.
    """
    height, width = frames.shape[1:3]
    if scale >= 1.0:
        return frames, 1.0, 1.0
    small_w, small_h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
    small = np.stack([cv2.resize(frame, (small_w, small_h), interpolation=cv2.INTER_AREA) for frame in frames])
    return small, small_w / width, small_h / height


def map_detections_back(detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]], x_factor: float,
                        y_factor: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Boxes [K, 4] (x1, y1, x2, y2) and landmarks [K, 5, 2] (x, y) found on downscaled frames, in
    full-resolution pixels (divided by the per-axis factors); probabilities unchanged."""
    if x_factor == 1.0 and y_factor == 1.0:
        return detections
    box_scale = np.array([x_factor, y_factor, x_factor, y_factor], np.float32)
    point_scale = np.array([x_factor, y_factor], np.float32)
    return [(boxes / box_scale, probs, points / point_scale) for boxes, probs, points in detections]


@dataclass(frozen=True)
class FaceTrack:
    """Faces of one segment on a frame timeline.

    crops: uint8 [N_valid, S, S, 3] aligned RGB crops of the valid frames only (in time order);
    mask: bool [T] (True = a face was found); times: float64 [T] seconds in the file;
    boxes: float32 [T, 4] x1, y1, x2, y2 (NaN where none); probabilities: float32 [T] (NaN where none);
    landmarks: float32 [T, 5, 2] (NaN where none).
    """

    crops: np.ndarray
    mask: np.ndarray
    times: np.ndarray
    boxes: np.ndarray
    probabilities: np.ndarray
    landmarks: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.mask.shape[0])

    @property
    def num_valid(self) -> int:
        return int(self.mask.sum())

    @property
    def valid_times(self) -> np.ndarray:
        return self.times[self.mask]

    @property
    def is_missing(self) -> bool:
        """True when no frame has a face."""
        return self.num_valid == 0

    @property
    def face_ratio(self) -> float:
        """Fraction of frames with a face (0 for an empty track)."""
        return float(self.mask.mean()) if self.num_frames else 0.0

    @classmethod
    def empty(cls, crop_size: int) -> "FaceTrack":
        return cls(np.zeros((0, crop_size, crop_size, 3), np.uint8), np.zeros(0, bool), np.zeros(0),
                   np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    @classmethod
    def concatenate(cls, tracks: list["FaceTrack"], crop_size: int) -> "FaceTrack":
        if not tracks:
            return cls.empty(crop_size)
        return cls(*(np.concatenate([getattr(t, name) for t in tracks]) for name in
                     ("crops", "mask", "times", "boxes", "probabilities", "landmarks")))


def align_face(frame: np.ndarray, landmarks: np.ndarray, crop_size: int, margin: float = 0.2) -> np.ndarray:
    """Warp `frame` [H, W, 3] so the 5 `landmarks` [5, 2] land on the template: a [S, S, 3] crop.

    margin widens the crop around the template (0 = the tight 112-pixel ArcFace framing).
    """
    template = _TEMPLATE_112 * (crop_size / 112.0)
    center = np.float32(crop_size / 2.0)
    template = center + (template - center) / (1.0 + margin)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), template, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks: fall back to a plain resize of the frame
        return cv2.resize(frame, (crop_size, crop_size), interpolation=cv2.INTER_AREA)
    return cv2.warpAffine(frame, matrix, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def choose_face(boxes: np.ndarray, width: int, side: str | None) -> int | None:
    """Index of the chosen face among boxes [K, 4]: the largest, restricted to one half when `side` is set."""
    if side not in SIDES:
        raise ValueError(f"side must be None, 'left' or 'right', got {side!r}")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if side is not None:
        centers = (boxes[:, 0] + boxes[:, 2]) / 2.0
        on_side = centers < width / 2.0 if side == "left" else centers >= width / 2.0
        areas = np.where(on_side, areas, -1.0)
    best = int(np.argmax(areas))
    return best if areas[best] >= 0 else None


class FaceDetector:
    """MTCNN face detection, batched over frames (and over clips with `detect_many`), one chosen face
    per frame with an aligned crop: the largest face above `min_probability` (or the largest whose centre
    lies in the `side` half given to `detect`).

    batch_size: frames per MTCNN pass (None: 8 on CPU, where small batches stay in cache, 32 on CUDA);
    min_face_fraction: None = search faces down to `min_face_size` pixels on full-resolution frames; a
    fraction (e.g. MIN_FACE_FRACTION) = detect on frames downscaled so a face of that fraction of the
    shorter side spans `min_face_size` pixels (far cheaper on large frames), crops still cut at full size;
    precision: "float32", or "float16" / "bfloat16" for the three networks on CUDA (box arithmetic
    stays float32); runtime: what runs MTCNN's three networks, "torch" or "onnxruntime" (float32 on the CPU,
    needs the onnx package; see `mtcnn_networks` for when it is faster; the same detections up to float
    rounding). Inference goes through `affectflow.pipeline.media.mtcnn.detect_batch`
    (no per-box loop).
    """

    def __init__(self, device: str | torch.device = "cpu", crop_size: int = 224, min_probability: float = 0.9,
                 batch_size: int | None = None, min_face_size: int = 20, margin: float = 0.2,
                 precision: str = "float32", min_face_fraction: float | None = None, runtime: str = "torch") -> None:
        from facenet_pytorch import MTCNN

        self.device = torch.device(device)
        dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if precision not in dtypes or (precision != "float32" and self.device.type != "cuda"):
            raise ValueError(f"precision must be 'float32' (or float16/bfloat16 on CUDA), got {precision!r} "
                             f"on {self.device}")
        self.crop_size = crop_size
        self.min_probability = min_probability
        self.batch_size = batch_size or (32 if self.device.type == "cuda" else 8)
        self.margin = margin
        self.min_face_size = min_face_size
        detection_scale(100, 100, min_face_size, min_face_fraction)  # validates the fraction
        self.min_face_fraction = min_face_fraction
        self._mtcnn = prepare_mtcnn(MTCNN(keep_all=True, device=self.device, min_face_size=min_face_size))
        self._mtcnn.to(dtypes[precision])
        self._networks = choose_networks(self._mtcnn, runtime)

    def needed_short_side(self) -> int | None:
        """The shorter side frames can be decoded at without losing detail in any crop of a face the detector
        searches for: there a face of `min_face_fraction` of it spans `crop_size` pixels, so larger frames
        would only be scaled down again by the crop's warp (None: full resolution, no fraction set)."""
        if self.min_face_fraction is None:
            return None
        return int(math.ceil(max(self.crop_size, self.min_face_size) / self.min_face_fraction))

    def _detect_frames(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per frame (boxes [K, 4], probabilities [K], landmarks [K, 5, 2]) of frames uint8 [T, H, W, 3],
        in full-resolution pixels (detected on downscaled frames when `min_face_fraction` is set)."""
        scale = detection_scale(frames.shape[1], frames.shape[2], self.min_face_size, self.min_face_fraction)
        found = []
        for offset in range(0, frames.shape[0], self.batch_size):
            small, x_factor, y_factor = downscale_frames(frames[offset: offset + self.batch_size], scale)
            found.extend(map_detections_back(detect_batch(self._mtcnn, small, self._networks), x_factor, y_factor))
        return found

    def _track(self, frames: np.ndarray, times: np.ndarray, detections: list, side: str | None) -> FaceTrack:
        """The FaceTrack of frames [T, H, W, 3] from their detections: chosen face, crop, mask."""
        count = frames.shape[0]
        boxes = np.full((count, 4), np.nan, np.float32)
        probabilities = np.full(count, np.nan, np.float32)
        landmarks = np.full((count, 5, 2), np.nan, np.float32)
        mask = np.zeros(count, bool)
        crops = []
        for position, (frame_boxes, frame_probs, frame_points) in enumerate(detections):
            keep = frame_probs >= self.min_probability
            if not keep.any():
                continue
            chosen = choose_face(frame_boxes[keep], frames.shape[2], side)
            if chosen is None:
                continue
            boxes[position], probabilities[position], landmarks[position] = (
                frame_boxes[keep][chosen], frame_probs[keep][chosen], frame_points[keep][chosen])
            mask[position] = True
            crops.append(align_face(frames[position], landmarks[position], self.crop_size, self.margin))
        crop_array = np.stack(crops) if crops else np.zeros((0, self.crop_size, self.crop_size, 3), np.uint8)
        return FaceTrack(crop_array, mask, np.asarray(times, dtype=np.float64), boxes, probabilities, landmarks)

    @staticmethod
    def _check_frames(frames: np.ndarray) -> None:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, H, W, 3] RGB, got {frames.dtype} {frames.shape}")

    def detect(self, frames: np.ndarray, times: np.ndarray, side: str | None = None) -> FaceTrack:
        """Detect the chosen face in every frame: frames uint8 [T, H, W, 3] RGB, times [T] -> FaceTrack."""
        self._check_frames(frames)
        return self._track(frames, times, self._detect_frames(frames), side)

    def detect_many(self, items: list[tuple[np.ndarray, np.ndarray, str | None]]) -> list[FaceTrack]:
        """`detect` for several clips at once: (frames [T_i, H, W, 3], times [T_i], side) -> FaceTrack each.

        Frames of clips with the same frame size share MTCNN batches (batching across clips).
        """
        for frames, _, _ in items:
            self._check_frames(frames)
        detections: list[list | None] = [None] * len(items)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, (frames, _, _) in enumerate(items):
            by_size.setdefault(frames.shape[1:3], []).append(index)
        for indices in by_size.values():
            stacked = np.concatenate([items[i][0] for i in indices])
            found = self._detect_frames(stacked) if len(stacked) else []
            offsets = np.cumsum([0] + [len(items[i][0]) for i in indices])
            for position, index in enumerate(indices):
                detections[index] = found[offsets[position]: offsets[position + 1]]
        return [self._track(frames, times, detections[i], side) for i, (frames, times, side) in enumerate(items)]


def track_faces(path: str | Path, detector: FaceDetector, start: float = 0.0, end: float | None = None,
                fps: float | None = 5.0, side: str | None = None, budget_bytes: int = FRAME_CHUNK_BYTES,
                timer: StageTimer | None = None, max_short_side: int | None = None) -> FaceTrack:
    """Faces of a video segment sampled by timestamp at `fps`, decoded and detected chunk by chunk: at most
    `budget_bytes` of decoded frames at a time (bounded memory at any resolution and length).

    max_short_side: decode larger frames scaled down to this shorter side (e.g. `detector.needed_short_side()`);
    timer: when given, decoding is added to its "frame decode" stage and detection to "face detection".
    """
    chunks = iter_frame_chunks(path, start, end, fps=fps, budget_bytes=budget_bytes, max_short_side=max_short_side)
    tracks = []
    while True:
        with timed(timer, "frame decode"):
            chunk = next(chunks, None)
        if chunk is None:
            break
        with timed(timer, "face detection"):
            tracks.append(detector.detect(chunk.frames, chunk.times, side=side))
    return FaceTrack.concatenate(tracks, detector.crop_size)
