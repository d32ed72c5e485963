#!/usr/bin/env python
"""Labelling speed: seconds per stage and x real time of the default labeller on talking-face clips.

    python scripts/bench_label.py                          # 12 generated clips of 5-10 s (90 s of media)
    python scripts/bench_label.py --compare-serial         # the old serial path and the fast path, same run
    python scripts/bench_label.py --videos DIR --workers 2 --threads 1
    python scripts/bench_label.py --device cuda
    python scripts/bench_label.py --clips 48                 # a longer batch (360 s): loading weighs less

The clips are generated once (real face photo + espeak-ng speech, `tests/factories/media.py`) into
`--clip-dir` and reused. Each run builds the default labeller (model loading is timed and included in the
wall time), labels every clip with `run_labeling` into a fresh CSV, and prints the seconds per stage
(probe, audio decoding, VAD, ASR, frame decoding, face detection, vision / text / audio models, writing),
the wall time and x real time = media seconds / wall seconds (loading included; `--clips 48` shows the rate
a longer batch approaches), and the CPU seconds of
the run (this process and its worker processes, Linux /proc; loading included). Stages that ran in
worker processes are summed over the workers, so with workers their sum exceeds the wall time: the wall
time and x real time are what a user waits. Every run is a fresh Python process (imports and model loading
included, as in a user's `affectflow label`); with rounds the table shows each mode's fastest run.
`--compare-serial` runs the serial path (one process, faces
detected on full-resolution frames, Whisper encoder run for ASR and for the speech head separately)
and the fast path in the same run, in alternating order over `--rounds`, and prints the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # generated media: tests/factories/

SENTENCES = ("I am so happy to see you today, this is wonderful news.",
             "I can't believe you did that again, I am really angry with you.",
             "Well, I suppose we could try it tomorrow, if you really want to.",
             "Oh no, that is terrible, I am so sorry to hear about your loss.")
STAGES = ("model loading", "probe", "decode audio", "VAD", "ASR", "frame decode", "face detection", "vision model",
          "text model", "audio model", "writing")


def make_clips(folder: Path, count: int, min_seconds: float, max_seconds: float, size: tuple[int, int]) -> Path:
    """Generate (or reuse) `count` talking-face clips with durations spread over [min, max] seconds."""
    from factories.media import make_video

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        seconds = min_seconds + (max_seconds - min_seconds) * (index % 6) / 5.0 if count > 1 else min_seconds
        text = SENTENCES[index % len(SENTENCES)]
        if seconds > 7:
            text += " " + SENTENCES[(index + 1) % len(SENTENCES)]
        path = folder / f"clip{index:03d}-{seconds:.1f}s-{size[0]}x{size[1]}.mp4"
        if not path.is_file():
            make_video(path, seconds=seconds, size=size, text=text)
    return folder


def media_seconds(folder: Path) -> float:
    """Total duration of the media files under `folder` (probe)."""
    from affectflow.pipeline.label.evidence import find_media
    from affectflow.pipeline.media.decode import probe

    return sum(probe(path).duration for path in find_media(folder))


@dataclass
class BenchResult:
    """One labelling run: its mode name, stage timer, wall and CPU seconds and the file-level rows."""

    name: str
    timer: object
    wall: float
    rows: list
    cpu: float = 0.0


def children_cpu_seconds() -> float:
    """CPU seconds of this process's child processes so far (Linux /proc), each with the children it
    has reaped: the forkserver's imports and every worker it forked and reaped."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        for pid in (task / "children").read_text().split():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(v) for v in fields[11:15]) / ticks  # utime, stime, cutime, cstime
    return total


def cpu_now() -> float:
    """CPU seconds of this process (all threads) plus its living children's (see children_cpu_seconds)."""
    return time.process_time() + children_cpu_seconds()


def run_once(name: str, videos: Path, fast: bool, args: argparse.Namespace) -> BenchResult:
    """Import and build the default labeller, label `videos` (fast: workers, downscaled detection, shared
    encoder): all of it timed, as a user's `affectflow label` run would be in a fresh process. The wall time
    starts when the parent launched this process (`--started-at`), the CPU time at this process's start: the
    interpreter's start and every import are included."""
    from affectflow.pipeline.label.server import start_worker_server

    if fast:  # as `affectflow label` does first thing: the workers' imports overlap this process's
        start_worker_server()
    from affectflow.pipeline.core.timing import StageTimer, timed

    timer = StageTimer()
    timer.add({"model loading": time.time() - args.started_at})  # interpreter start and imports so far
    with timed(timer, "model loading"):
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        from affectflow.pipeline.label.default_model import DefaultLabeler
        from affectflow.pipeline.label.needs import start_early_pool
        from affectflow.pipeline.label.run import LabelingOptions, main_threads, run_labeling

        options = LabelingOptions(face_fps=args.face_fps, device=args.device, **fast_options(fast, args))
        # as label() does: the workers load their models and collect the first clips while the labeller loads
        early_pool = start_early_pool(videos, options, DefaultLabeler, options.workers) if fast else None
        with main_threads(1 if early_pool is not None and args.device == "cpu" else None):
            labeler = DefaultLabeler(device=args.device)
    out = Path(tempfile.mkdtemp(prefix="bench-label-")) / "labels.csv"
    summary = run_labeling(videos, out, labeler, options, progress=False, timer=timer, early_pool=early_pool)
    wall = time.time() - args.started_at
    time.sleep(0.5)  # let the forkserver reap the finished workers (their CPU time lands in its cutime)
    cpu = cpu_now()
    shutil.rmtree(out.parent, ignore_errors=True)
    return BenchResult(name, timer, wall, summary.rows, cpu)


def run_in_fresh_process(name: str, videos: Path, args: argparse.Namespace) -> BenchResult:
    """`run_once` in a new Python process (cold imports and model loading, like a user's run)."""
    import json
    import subprocess

    from affectflow.pipeline.core.timing import StageTimer

    with tempfile.TemporaryDirectory() as folder:
        result_path = Path(folder) / "result.json"
        command = [sys.executable, __file__, "--videos", str(videos), "--face-fps", str(args.face_fps), "--device",
                   args.device, "--min-face-fraction", str(args.min_face_fraction), "--mode", name,
                   "--json-out", str(result_path), "--started-at", repr(time.time())]
        command += ["--threads", str(args.threads)] if args.threads else []
        command += ["--workers", str(args.workers)] if args.workers is not None else []
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"{name} run failed:\n{completed.stderr[-3000:]}")
        data = json.loads(result_path.read_text())
    timer = StageTimer()
    timer.add(data["seconds"])
    return BenchResult(name, timer, data["wall"], data["rows"], data["cpu"])


def write_result(result: BenchResult, path: Path) -> None:
    """A run as JSON (what `run_in_fresh_process` reads back)."""
    import json

    from affectflow.pipeline.label.output import row_cells

    rows = [row_cells(row) for row in result.rows]  # LabelRows as column -> value (compare_labels reads them)
    payload = {"seconds": result.timer.seconds, "wall": result.wall, "cpu": result.cpu, "rows": rows}
    path.write_text(json.dumps(payload, default=lambda value: value.item() if hasattr(value, "item") else str(value)))


def fast_options(fast: bool, args: argparse.Namespace) -> dict:
    """LabelingOptions fields of the fast path, or of the old serial path (one process, full-resolution
    face detection, Whisper encoder run separately for ASR and for the speech head)."""
    from affectflow.pipeline.core.devices import default_worker_count

    if not fast:
        return {"workers": 0, "min_face_fraction": None, "share_audio_encoder": False}
    workers = default_worker_count() if args.workers is None else args.workers
    return {"workers": workers, "min_face_fraction": args.min_face_fraction, "share_audio_encoder": True}


def print_table(results: list[BenchResult], seconds: float) -> None:
    """Stage seconds per run side by side, then wall seconds and x real time."""
    names = [r.name for r in results]
    print(f"{'stage (s)':<18}" + "".join(f"{n:>14}" for n in names))
    stages = list(STAGES) + sorted({s for r in results for s in r.timer.seconds} - set(STAGES))
    for stage in stages:
        print(f"{stage:<18}" + "".join(f"{r.timer.seconds.get(stage, 0.0):>14.2f}" for r in results))
    print(f"{'sum of stages':<18}" + "".join(f"{r.timer.total:>14.2f}" for r in results))
    print(f"{'wall':<18}" + "".join(f"{r.wall:>14.2f}" for r in results))
    print(f"{'x real time':<18}" + "".join(f"{seconds / r.wall:>13.2f}x" for r in results))
    print(f"{'CPU seconds':<18}" + "".join(f"{r.cpu:>14.2f}" for r in results))


def compare_labels(serial: BenchResult, fast: BenchResult) -> None:
    """How many file-level labels agree, and the largest probability difference."""
    import numpy as np

    by_clip = {row["clip"]: row for row in serial.rows}
    same, largest = 0, 0.0
    for row in fast.rows:
        other = by_clip[row["clip"]]
        same += row.get("label") == other.get("label")
        probs = [k for k in row if k.startswith("prob_")]
        if probs and all(other.get(k) is not None and row.get(k) is not None for k in probs):
            largest = max(largest, float(np.max(np.abs([row[k] - other[k] for k in probs]))))
    print(f"labels equal: {same}/{len(fast.rows)}; largest probability difference {largest:.4f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=Path, default=None, help="label this folder instead of generated clips")
    parser.add_argument("--clip-dir", type=Path, default=None,
                        help="where generated clips are kept (default: a temp folder named after --clips)")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--size", default="640x360", help="generated frame size WxH")
    parser.add_argument("--face-fps", type=float, default=2.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    parser.add_argument("--workers", type=int, default=None, help="evidence worker processes (default: from cores)")
    parser.add_argument("--min-face-fraction", type=float, default=0.1,
                        help="fast path: smallest face as a fraction of the shorter side (faces.MIN_FACE_FRACTION)")
    parser.add_argument("--compare-serial", action="store_true", help="also time the old serial path")
    parser.add_argument("--serial-only", action="store_true", help="time only the old serial path")
    parser.add_argument("--rounds", type=int, default=1, help="with --compare-serial: alternating rounds")
    parser.add_argument("--mode", choices=("serial", "fast"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--started-at", type=float, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode is not None:  # one run in this (fresh) process, for run_in_fresh_process
        write_result(run_once(args.mode, args.videos, args.mode == "fast", args), args.json_out)
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    clip_dir = args.clip_dir or Path(tempfile.gettempdir()) / ("affectflow-bench-label" if args.clips == 12 else
                                                               f"affectflow-bench-label-{args.clips}")
    videos = args.videos or make_clips(clip_dir, args.clips, args.min_seconds, args.max_seconds, (width, height))
    seconds = media_seconds(videos)
    print(f"{videos}: {seconds:.1f} s of media; device {args.device}; torch threads {torch.get_num_threads()}; "
          f"fast path: {fast_options(True, args)}")
    modes = [("serial", False)] if args.serial_only else \
        ([("serial", False), ("fast", True)] if args.compare_serial else [("fast", True)])
    results: dict[str, list[BenchResult]] = {name: [] for name, _ in modes}
    for round_index in range(args.rounds):
        order = modes if round_index % 2 == 0 else modes[::-1]
        for name, fast in order:
            results[name].append(run_in_fresh_process(name, videos, args))
            last = results[name][-1]
            print(f"round {round_index + 1} {name}: {last.wall:.2f} s wall, {last.cpu:.2f} s CPU", flush=True)
    best = [min(runs, key=lambda r: r.wall) for runs in results.values()]
    print_table(best, seconds)
    if len(best) == 2:
        print(f"ratio fast / serial (same run): {best[0].wall / best[1].wall:.2f}x wall, "
              f"{best[0].cpu / best[1].cpu:.2f}x CPU")
        compare_labels(best[0], best[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
