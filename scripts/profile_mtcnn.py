#!/usr/bin/env python
"""Where `detect_batch` spends its time: seconds per MTCNN stage on generated talking-face frames.

    python scripts/profile_mtcnn.py                      # 320x240 frames (bench_extract's default), 8 per batch
    python scripts/profile_mtcnn.py --size 640x360 --frames 200 --threads 2

The stages are timed by wrapping the functions `detect_batch` calls (P-net / R-net / O-net forward,
pyramid resizing, candidate crops, NMS, box generation); "other" is the rest of `detect_batch` (box
arithmetic, Python overhead). One untimed pass first (it warms kernel caches and, for
the ONNX Runtime path, builds its sessions), then `--repeats` timed passes, of which the fastest is
reported (a shared machine's load drifts).
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # generated media: tests/factories/


def timed_wrapper(totals: dict, name: str, function):
    """`function` that adds its wall seconds to totals[name]."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start
    return wrapper


class TimedNetworks:
    """A network runner that adds each call's seconds to totals[name] (and P-net's per pyramid level)."""

    def __init__(self, networks, totals: dict) -> None:
        self.networks, self.totals = networks, totals
        self.memory_format = getattr(networks, "memory_format", torch.channels_last)

    def __call__(self, name: str, data: torch.Tensor):
        start = time.perf_counter()
        try:
            return self.networks(name, data)
        finally:
            seconds = time.perf_counter() - start
            self.totals[name] += seconds
            if name == "pnet":
                self.totals[f"  pnet {data.shape[2]}x{data.shape[3]}"] += seconds


def instrument(totals: dict) -> None:
    """Wrap the stage functions of `affectflow.pipeline.media.mtcnn` (and facenet's box generation)."""
    from affectflow.pipeline.media import mtcnn as module
    from facenet_pytorch.models.utils import detect_face

    for name in ("pyramid_level", "area_resize", "area_crops", "_nms_per_image", "_min_nms_per_image",
                 "row_prefix_sums", "summed_area_table"):
        if hasattr(module, name):
            setattr(module, name, timed_wrapper(totals, name, getattr(module, name)))
    detect_face.generateBoundingBox = timed_wrapper(totals, "generateBoundingBox", detect_face.generateBoundingBox)


def sample_frames(size: tuple[int, int], count: int, folder: Path) -> np.ndarray:
    """`count` frames uint8 [count, H, W, 3] of generated talking-face clips (5 s at 25 fps, 5 fps sampled)."""
    from affectflow.pipeline.media.decode import read_frames
    from factories.media import make_video

    frames = []
    for index in range((count + 24) // 25):
        path = folder / f"face{index}-{size[0]}x{size[1]}.mp4"
        if not path.is_file():
            make_video(path, seconds=5.0, fps=25, size=size, audio=None)
        frames.append(read_frames(path, fps=5.0).frames)
    return np.concatenate(frames)[:count]


def instrumented_runner(mtcnn, networks, totals: dict):
    """The network runner to pass to `detect_batch`, timing each network call into `totals` (None: the
    old `detect_batch(mtcnn, frames)` signature, whose `_run_network(module, data)` is wrapped instead)."""
    from affectflow.pipeline.media import mtcnn as module

    if networks is not None:
        return TimedNetworks(networks, totals)
    named = {id(mtcnn.pnet): "pnet", id(mtcnn.rnet): "rnet", id(mtcnn.onet): "onet"}
    wrapped, run_network = TimedNetworks(None, totals), module._run_network
    wrapped.networks = lambda name, data: run_network(getattr(mtcnn, name), data, max(1, len(data)))
    module._run_network = lambda network, data, batch_size=512: wrapped(named[id(network)], data)
    return None


def profile(mtcnn, runner, frames: np.ndarray, batch_size: int, totals: dict) -> tuple[dict, float]:
    """(stage -> seconds, total wall seconds) of `detect_batch` over `frames` in batches."""
    from affectflow.pipeline.media import mtcnn as module

    totals.clear()
    extra = () if runner is None else (runner,)
    start = time.perf_counter()
    for offset in range(0, len(frames), batch_size):
        module.detect_batch(mtcnn, frames[offset: offset + batch_size], *extra)
    return dict(totals), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="320x240", help="frame size WxH")
    parser.add_argument("--frames", type=int, default=100, help="frames to detect on")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per detect_batch call")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (the fastest is reported)")
    parser.add_argument("--runtime", default="torch", help="MTCNN network runtime: torch or onnxruntime")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the generated clips (kept)")
    args = parser.parse_args(argv)
    from facenet_pytorch import MTCNN

    from affectflow.pipeline.media import mtcnn as module

    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    frames = sample_frames((width, height), args.frames, args.workdir or Path(tempfile.mkdtemp(prefix="mtcnn_")))
    mtcnn = module.prepare_mtcnn(MTCNN(keep_all=True, min_face_size=20))
    try:
        from affectflow.pipeline.media.mtcnn_networks import choose_networks
    except ImportError:  # before the network runners existed
        networks = None
    else:
        networks = choose_networks(mtcnn, args.runtime)
    totals: dict = collections.defaultdict(float)
    instrument(totals)
    runner = instrumented_runner(mtcnn, networks, totals)
    passes = [profile(mtcnn, runner, frames, args.batch_size, totals) for _ in range(args.repeats + 1)][1:]
    totals, wall = min(passes, key=lambda result: result[1])  # the least disturbed pass on a shared machine
    runtime = "torch (old)" if networks is None else type(networks).__name__
    print(f"detect_batch ({runtime}) on {len(frames)} frames {width}x{height}, batches of {args.batch_size}, "
          f"{args.threads} threads: {wall:.3f} s ({1000 * wall / len(frames):.2f} ms/frame)")
    for name, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"  {name:20s} {seconds:7.3f} s  {100 * seconds / wall:5.1f} %")
    other = wall - sum(seconds for name, seconds in totals.items() if not name.startswith(" "))
    print(f"  {'other':20s} {other:7.3f} s  {100 * other / wall:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
