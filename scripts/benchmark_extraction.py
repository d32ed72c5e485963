#!/usr/bin/env python
"""Measure extraction speed (seconds of media per second) of the offline default extractors.

    python scripts/benchmark_extraction.py --clips 6 --seconds 5 --device cpu [--workdir /tmp/bench]

Generates talking-face clips (real face photo + espeak-ng speech), writes a manifest, runs
`affectflow extract` with its offline defaults (text: MiniLM, audio: logmel, vision: fer when
registered, faces by MTCNN at 5 fps) into a fresh folder and prints each extractor's summary line.
Extra arguments after `--` go to `affectflow extract` (e.g. `-- --audio prosody`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from affectflow.pipeline.cli.main import main as affectflow_main
from affectflow.pipeline.core.manifest import manifest_from_segments, write_manifest
from affectflow.pipeline.core.records import Segment
from affectflow.pipeline.testing.media import make_video

SENTENCES = ["I am so happy to see you today, this is wonderful news.",
             "I can't believe you did that again, I am really angry.",
             "Well, I suppose we could try it tomorrow, if you want."]


def build_manifest(folder: Path, clips: int, seconds: float) -> Path:
    """`clips` talking-face clips of `seconds` each plus their manifest (with end times)."""
    segments = []
    for index in range(clips):
        text = SENTENCES[index % len(SENTENCES)]
        path = make_video(folder / f"clip{index}.mp4", seconds=seconds, text=text)
        segments.append(Segment(id=f"clip{index}", media_path=path.name, start=0.0, end=seconds, text=text))
    return write_manifest(manifest_from_segments(segments), folder / "manifest.csv")


def main(argv: list[str] | None = None) -> int:
    """Generate clips, run `affectflow extract` with timing; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="affectflow_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(workdir, args.clips, args.seconds)
    out = workdir / "features"
    shutil.rmtree(out, ignore_errors=True)
    print(f"{args.clips} clips x {args.seconds:g} s = {args.clips * args.seconds:g} s of media; device {args.device}")
    started, cpu_started = time.perf_counter(), time.process_time()
    code = affectflow_main(["extract", "--manifest", str(manifest), "--out", str(out), "--device", args.device,
                            "--no-progress", *extra])
    print(f"total wall {time.perf_counter() - started:.1f} s (model loading included), "
          f"process CPU {time.process_time() - cpu_started:.1f} s")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
