"""Batched MTCNN inference without per-box Python loops: facenet-pytorch's three networks and its
box arithmetic, with the candidate crops of stages 2 and 3 resampled all at once.

facenet-pytorch's `detect_face` crops every candidate box with one `interpolate(mode="area")` call per
box (about 40 candidates per frame for stage 2), which dominates on CPU under load and costs one kernel
launch per box on a GPU. Area resampling is a mean over integer windows (adaptive average pooling:
output cell i of an L-long axis averages input [floor(i L / O), ceil((i + 1) L / O))), so here every
candidate's 24x24 (or 48x48) cells are read from one exact integer summed-area table of the batch:
four row gathers for all boxes of all frames. The pyramid levels are read from the same table (two
gathers per axis and level; exact integer sums, so each mean is correctly rounded), about twice as fast
as `interpolate(mode="area")` on one thread. The networks run through a runner (`mtcnn_networks`): by
default the PyTorch modules in channels-last memory (max pooling is several times faster there on CPU),
optionally ONNX Runtime. NMS runs within each frame (facenet-pytorch's batch-wide offset trick loses
float32 precision, so its results depend on which frames share a batch; here the offsets are added in
float64, where they lose nothing, and all pyramid levels share one call); everything else (thresholds,
box regression, 'Min' NMS) is facenet-pytorch's own code, so every frame's detections equal
`MTCNN.detect` on that frame alone, up to float rounding, whatever the batch.

    mtcnn = MTCNN(keep_all=True, device=device, min_face_size=20)
    prepare_mtcnn(mtcnn)                                   # once: channels-last weights
    detections = detect_batch(mtcnn, frames)               # frames uint8 [B, H, W, 3] RGB
    detections = detect_batch(mtcnn, frames, choose_networks(mtcnn, "onnxruntime"))  # the same, in ONNX Runtime
    boxes, probabilities, landmarks = detections[0]        # [K, 4], [K], [K, 5, 2] of frame 0
"""

from __future__ import annotations

import numpy as np
import torch

from affectflow.pipeline.core.devices import to_device
from affectflow.pipeline.media.mtcnn_networks import NetworkRunner, TorchNetworks


def prepare_mtcnn(mtcnn: torch.nn.Module) -> torch.nn.Module:
    """Put the MTCNN networks in eval mode and channels-last memory (in place); returns `mtcnn`."""
    mtcnn.eval()
    return mtcnn.to(memory_format=torch.channels_last)


def area_crops(integral: torch.Tensor, image_index: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
               size: int) -> torch.Tensor:
    """Area-resample crops of a batch from its summed-area table: [K, 3, size, size] float32, channels-last.

    integral: [B, H + 1, W + 1, 3] prefix sums (zero first row/column), integer or float64;
    image_index: [K] frame of each crop; rows / cols: [K, 2] int64 half-open pixel ranges [start, end).
    """
    cells = torch.arange(size + 1, device=integral.device)

    def bounds(span: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = (span[:, 1] - span[:, 0])[:, None]
        return span[:, :1] + (cells[None, :-1] * length) // size, span[:, :1] - ((-cells[None, 1:] * length) // size)

    row_start, row_end = bounds(rows)
    col_start, col_end = bounds(cols)
    _, height1, width1, channels = integral.shape
    table = integral.reshape(-1, channels)  # one row of channels per pixel corner
    row_base = image_index[:, None] * height1

    def corner(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # [K * size * size, 3]
        return table.index_select(0, (((row_base + r) * width1)[:, :, None] + c[:, None, :]).reshape(-1))

    total = corner(row_end, col_end) - corner(row_start, col_end) - corner(row_end, col_start) \
        + corner(row_start, col_start)
    area = (row_end - row_start)[:, :, None] * (col_end - col_start)[:, None, :]  # [K, size, size]
    crops = _exact_mean(total.view(-1, size, size, channels), area[..., None], integral.is_floating_point())
    return crops.permute(0, 3, 1, 2)


def _prefix_dtype(images: torch.Tensor) -> torch.dtype:
    """Exact accumulator for prefix sums: int32 while 255 * H * W fits, else int64 (float64 for floats)."""
    if images.is_floating_point():
        return torch.float64
    return torch.int32 if 255 * images.shape[1] * images.shape[2] < 2**31 else torch.int64


def summed_area_table(images: torch.Tensor) -> torch.Tensor:
    """images [B, H, W, 3] -> [B, H + 1, W + 1, 3] exact 2-D prefix sums, zero first row and column."""
    count, height, width, channels = images.shape
    table = torch.zeros(count, height + 1, width + 1, channels, dtype=_prefix_dtype(images), device=images.device)
    table[:, 1:, 1:] = images.cumsum(dim=1, dtype=table.dtype).cumsum(dim=2)
    return table


def _area_bounds(length: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool windows of `size` cells over `length` pixels: starts [size], ends [size]."""
    cells = torch.arange(size + 1, device=device)
    return (cells[:-1] * length) // size, -((-cells[1:] * length) // size)


def _exact_mean(total: torch.Tensor, area: torch.Tensor, floating_sums: bool) -> torch.Tensor:
    """total / area as float32: integer sums and areas below 2**24 are exact in float32, whose quotient
    is then correctly rounded (the same float32 as dividing in float64); otherwise divided in float64."""
    largest = int(area.max()) if area.numel() else 0
    dtype = torch.float32 if not floating_sums and 255 * largest < 2**24 else torch.float64
    return (total.to(dtype) / area.to(dtype)).to(torch.float32)


def area_resize(integral: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Whole frames area-resampled (== interpolate(mode="area"), facenet-pytorch's `imresample`) to
    [B, 3, height, width] float32, channels-last, from their summed-area table [B, H + 1, W + 1, 3]:
    two index_selects per axis, no loop and no per-level prefix sums."""
    row_start, row_end = _area_bounds(integral.shape[1] - 1, height, integral.device)
    col_start, col_end = _area_bounds(integral.shape[2] - 1, width, integral.device)
    rows = integral.index_select(1, row_end) - integral.index_select(1, row_start)  # [B, height, W + 1, 3]
    total = rows.index_select(2, col_end) - rows.index_select(2, col_start)  # [B, height, width, 3]
    area = ((row_end - row_start)[:, None] * (col_end - col_start)[None, :])[..., None]
    return _exact_mean(total, area, integral.is_floating_point()).permute(0, 3, 1, 2)


def _candidate_crops(boxes: torch.Tensor, image_inds: torch.Tensor, integral: torch.Tensor, width: int,
                     height: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(crops [K', 3, size, size] normalised, boxes [K', ...], image_inds [K']) of the non-empty boxes."""
    from facenet_pytorch.models.utils.detect_face import pad

    y, ey, x, ex = (torch.as_tensor(v, dtype=torch.int64, device=boxes.device) for v in pad(boxes, width, height))
    keep = (ey > y - 1) & (ex > x - 1)
    if not bool(keep.all()):
        boxes, image_inds, y, ey, x, ex = (v[keep] for v in (boxes, image_inds, y, ey, x, ex))
    rows, cols = torch.stack([y - 1, ey], dim=1), torch.stack([x - 1, ex], dim=1)
    crops = area_crops(integral, image_inds, rows, cols, size)
    return (crops - 127.5) * 0.0078125, boxes, image_inds


def _run_network(networks: NetworkRunner, name: str, data: torch.Tensor,
                 batch_size: int = 512) -> tuple[torch.Tensor, ...]:
    """Network `name` on data [N, 3, h, w] in slices of `batch_size` (bounded memory); float32 outputs."""
    if len(data) <= batch_size:
        return networks(name, data)
    outputs = [networks(name, data[i:i + batch_size]) for i in range(0, len(data), batch_size)]
    return tuple(torch.cat(parts, dim=0) for parts in zip(*outputs))


def _nms_per_image(boxes: torch.Tensor, scores: torch.Tensor, image_inds: torch.Tensor,
                   threshold: float) -> torch.Tensor:
    """IoU NMS within each group (frame, or frame and pyramid level): kept indices, by decreasing score.

    facenet-pytorch offsets every frame's boxes by frame index x (max coordinate + 1) to run one NMS
    for the batch; in float32 that offset costs precision, so its detections depend on which frames
    share a batch. Here the offsets are added in float64, where they lose nothing that float32 boxes
    carry: one NMS call, and each group's result is its own, whatever the batch.
    """
    from torchvision.ops import nms

    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    boxes = boxes.double()
    # whole-number offsets wider than every box's span: groups never overlap, and the sums stay exact
    offsets = image_inds.to(torch.float64) * ((boxes.max() - boxes.min()).ceil() + 1)
    return nms(boxes + offsets[:, None], scores.double(), threshold)


def _min_nms_per_image(boxes: torch.Tensor, scores: torch.Tensor, image_inds: torch.Tensor,
                       threshold: float) -> torch.Tensor:
    """facenet-pytorch's final 'Min' NMS (overlap over the smaller box), within each frame."""
    from facenet_pytorch.models.utils.detect_face import nms_numpy

    boxes_np, scores_np, inds_np = boxes.cpu().numpy(), scores.cpu().numpy(), image_inds.cpu().numpy()
    kept = [members[nms_numpy(boxes_np[members], scores_np[members], threshold, "Min").astype(np.int64)]
            for members in (np.flatnonzero(inds_np == image) for image in np.unique(inds_np))]
    return torch.as_tensor(np.concatenate(kept) if kept else np.zeros(0, np.int64), device=boxes.device)


def _stage_one(mtcnn, networks: NetworkRunner, integral: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PNet over the image pyramid (from the frames' summed-area table): boxes [K, 5] and frame index [K].

    facenet-pytorch's per-level NMS (within each frame and level) runs as one call over all levels."""
    from facenet_pytorch.models.utils.detect_face import generateBoundingBox

    height, width = integral.shape[1] - 1, integral.shape[2] - 1
    scale, shortest = 12.0 / mtcnn.min_face_size, min(height, width) * 12.0 / mtcnn.min_face_size
    boxes, image_inds, levels = [], [], []
    while shortest >= 12:
        data = area_resize(integral, int(height * scale + 1), int(width * scale + 1))
        data = data.sub_(127.5).mul_(0.0078125).contiguous(memory_format=networks.memory_format)
        reg, probs = networks("pnet", data)
        boxes_scale, inds_scale = generateBoundingBox(reg, probs[:, 1], scale, mtcnn.thresholds[0])
        boxes.append(boxes_scale)
        image_inds.append(inds_scale)
        levels.append(torch.full_like(inds_scale, len(levels)))
        scale, shortest = scale * mtcnn.factor, shortest * mtcnn.factor
    if not boxes:  # frames smaller than the smallest face searched for
        return torch.zeros(0, 5, device=integral.device), torch.zeros(0, dtype=torch.int64, device=integral.device)
    boxes, image_inds = torch.cat(boxes), torch.cat(image_inds)
    pick = _nms_per_image(boxes[:, :4], boxes[:, 4], image_inds * len(levels) + torch.cat(levels), 0.5)
    boxes, image_inds = boxes[pick], image_inds[pick]
    pick = _nms_per_image(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[pick], image_inds[pick]
    width_r, height_r = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    refined = torch.stack([boxes[:, 0] + boxes[:, 5] * width_r, boxes[:, 1] + boxes[:, 6] * height_r,
                           boxes[:, 2] + boxes[:, 7] * width_r, boxes[:, 3] + boxes[:, 8] * height_r,
                           boxes[:, 4]], dim=1)
    return refined, image_inds


def _stage_two(mtcnn, networks: NetworkRunner, boxes, image_inds, integral, width, height):
    """RNet on 24x24 crops of the candidates: surviving boxes [K, 5] and frame indices [K]."""
    from facenet_pytorch.models.utils.detect_face import bbreg, rerec

    boxes = rerec(boxes)
    crops, boxes, image_inds = _candidate_crops(boxes, image_inds, integral, width, height, 24)
    regression, scores = _run_network(networks, "rnet", crops)
    score = scores[:, 1]
    passed = score > mtcnn.thresholds[1]
    boxes = torch.cat((boxes[passed, :4], score[passed].unsqueeze(1)), dim=1)
    image_inds, regression = image_inds[passed], regression[passed]
    pick = _nms_per_image(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    return rerec(bbreg(boxes[pick], regression[pick])), image_inds[pick]


def _stage_three(mtcnn, networks: NetworkRunner, boxes, image_inds, integral, width, height):
    """ONet on 48x48 crops: final boxes [K, 5], landmarks [K, 5, 2] and frame indices [K]."""
    from facenet_pytorch.models.utils.detect_face import bbreg

    crops, boxes, image_inds = _candidate_crops(boxes, image_inds, integral, width, height, 48)
    regression, points, scores = _run_network(networks, "onet", crops)
    score = scores[:, 1]
    passed = score > mtcnn.thresholds[2]
    points, regression = points[passed], regression[passed]
    boxes = torch.cat((boxes[passed, :4], score[passed].unsqueeze(1)), dim=1)
    image_inds = image_inds[passed]
    box_width = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    box_height = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    points = torch.stack([box_width * points[:, :5] + boxes[:, :1] - 1,
                          box_height * points[:, 5:10] + boxes[:, 1:2] - 1], dim=2)
    boxes = bbreg(boxes, regression)
    pick = _min_nms_per_image(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    return boxes[pick], points[pick], image_inds[pick]


@torch.no_grad()
def detect_batch(mtcnn, frames: np.ndarray | torch.Tensor,
                 networks: NetworkRunner | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """MTCNN on a batch of frames uint8 [B, H, W, 3] RGB: per frame (boxes [K, 4], probabilities [K],
    landmarks [K, 5, 2]) as float32 numpy arrays in pixels (K = 0 when no face passed the thresholds).

    networks: what runs P-net / R-net / O-net (`mtcnn_networks.choose_networks`); None: `mtcnn`'s own
    modules in eager PyTorch.
    """
    networks = networks or TorchNetworks(mtcnn)
    device = next(mtcnn.pnet.parameters()).device
    images = frames if isinstance(frames, torch.Tensor) else to_device(frames, device)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"frames must be [B, H, W, 3] RGB, got shape {tuple(images.shape)}")
    count, height, width = images.shape[0], images.shape[1], images.shape[2]
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
    if count == 0:
        return []
    integral = summed_area_table(images.to(device))
    boxes, image_inds = _stage_one(mtcnn, networks, integral)
    if len(boxes):
        boxes, image_inds = _stage_two(mtcnn, networks, boxes, image_inds, integral, width, height)
    if len(boxes):
        boxes, points, image_inds = _stage_three(mtcnn, networks, boxes, image_inds, integral, width, height)
    else:
        return [empty] * count
    boxes, points, image_inds = boxes.float().cpu().numpy(), points.float().cpu().numpy(), image_inds.cpu().numpy()
    order = np.argsort(image_inds, kind="stable")
    splits = np.searchsorted(image_inds[order], np.arange(1, count))
    return [(boxes[part, :4], boxes[part, 4], points[part])
            for part in np.split(order, splits)]
