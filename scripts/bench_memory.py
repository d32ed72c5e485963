#!/usr/bin/env python
"""Peak memory of extracting or labelling many clips: is it flat from 100 to 1,000 clips?

    python scripts/bench_memory.py --job extract --clips 100,1000
    python scripts/bench_memory.py --job label --clips 100,1000 --seconds 2

A few distinct talking-face clips are generated once (`--unique`, real face photo + espeak-ng speech)
and hard-linked under many names (a manifest of N segments for `extract`, a folder of N files with
sidecar transcripts for `label`). Each N runs in a fresh Python process through the real console
entry point (`affectflow extract` with the offline defaults, or `affectflow label` with the default
model and `--no-asr` unless `--asr`), which reports its peak resident memory (getrusage ru_maxrss of
itself and of its largest child, e.g. a decoding worker). Printed: peak RSS per N and the ratio to the
first N; the target is a ratio within 1 +- 0.10 (streaming from manifest to store, nothing kept per clip).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # generated media: tests/factories/

SENTENCES = ("I am so happy to see you today, this is wonderful news.",
             "I can't believe you did that again, I am really angry with you.",
             "Oh no, that is terrible, I am so sorry to hear about your loss.")


def make_sources(folder: Path, unique: int, seconds: float) -> list[Path]:
    """`unique` distinct clips (reused when present)."""
    from factories.media import make_video

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(unique):
        path = folder / f"source{index}-{seconds:g}s.mp4"
        if not path.is_file():
            make_video(path, seconds=seconds, text=SENTENCES[index % len(SENTENCES)])
        paths.append(path)
    return paths


def link(source: Path, target: Path) -> None:
    """Hard-link `source` as `target` (a copy where links are not possible)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


def prepare_extract(root: Path, sources: list[Path], count: int, seconds: float) -> Path:
    """A manifest of `count` segments over hard links of the sources; returns its path."""
    from affectflow.pipeline.core.manifest import manifest_from_segments, write_manifest
    from affectflow.pipeline.core.records import Segment

    media = root / "media"
    media.mkdir(parents=True)
    segments = []
    for index in range(count):
        name = f"clip{index:05d}.mp4"
        link(sources[index % len(sources)], media / name)
        segments.append(Segment(id=f"clip{index:05d}", media_path=f"media/{name}", start=0.0, end=seconds,
                                text=SENTENCES[index % len(sources) % len(SENTENCES)]))
    return write_manifest(manifest_from_segments(segments), root / "manifest.csv")


def prepare_label(root: Path, sources: list[Path], count: int) -> Path:
    """A folder of `count` clips (hard links) each with a sidecar transcript; returns the folder."""
    folder = root / "videos"
    folder.mkdir(parents=True)
    for index in range(count):
        link(sources[index % len(sources)], folder / f"clip{index:05d}.mp4")
        (folder / f"clip{index:05d}.txt").write_text(SENTENCES[index % len(sources) % len(SENTENCES)],
                                                       encoding="utf-8")
    return folder


def child_command(args: argparse.Namespace, root: Path, count: int, seconds: float) -> list[str]:
    """The `affectflow` arguments of one measured run."""
    if args.job == "extract":
        manifest = prepare_extract(root, make_sources(args.workdir / "sources", args.unique, seconds), count, seconds)
        command = ["extract", "--manifest", str(manifest), "--out", str(root / "features"), "--device", args.device,
                   "--no-progress"]
        return command + (["--workers", str(args.workers)] if args.workers is not None else [])
    videos = prepare_label(root, make_sources(args.workdir / "sources", args.unique, seconds), count)
    command = ["label", "--videos", str(videos), "--out", str(root / "labels.csv"), "--device", args.device, "--quiet"]
    return command + ([] if args.asr else ["--no-asr"])


def run_child(affectflow_args: list[str]) -> int:
    """In the measured process: run the console entry point, then print peak RSS (MiB) as JSON."""
    from affectflow.pipeline.cli.main import main

    started = time.perf_counter()
    code = main(affectflow_args)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    print("PEAK " + json.dumps({"exit_code": code, "peak_rss_mib": own, "largest_child_peak_rss_mib": children,
                                "seconds": time.perf_counter() - started}), flush=True)
    return code


def measure(args: argparse.Namespace, count: int) -> dict:
    """One fresh process for `count` clips; returns its PEAK record."""
    root = args.workdir / f"{args.job}-{count}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    command = [sys.executable, __file__, "--child", "--", *child_command(args, root, count, args.seconds)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    lines = [line for line in result.stdout.splitlines() if line.startswith("PEAK ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{args.job} of {count} clips failed ({result.returncode}):\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    record = json.loads(lines[-1][5:])
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", choices=["extract", "label"], default="extract")
    parser.add_argument("--clips", default="100,1000", help="comma-separated clip counts, e.g. 100,1000")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each generated clip (s)")
    parser.add_argument("--unique", type=int, default=3, help="distinct generated clips, hard-linked N times")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None, help="extract: decoding workers (default: auto)")
    parser.add_argument("--asr", action="store_true", help="label: allow offline ASR (slow on CPU)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for media and outputs")
    parser.add_argument("--keep", action="store_true", help="keep each run's outputs")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure each clip count; exit code 1 when a ratio leaves 1 +- 0.10."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return run_child(argv[2:] if argv[1:2] == ["--"] else argv[1:])
    args = parse_args(argv)
    temporary = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    counts = [int(value) for value in args.clips.split(",") if value.strip()]
    results = {}
    for count in counts:
        results[count] = measure(args, count)
        record = results[count]
        print(f"{args.job} {count:6d} clips: peak RSS {record['peak_rss_mib']:8.1f} MiB (largest child "
              f"{record['largest_child_peak_rss_mib']:.1f} MiB) in {record['seconds']:.0f} s", flush=True)
    base = results[counts[0]]["peak_rss_mib"]
    ratios = {count: results[count]["peak_rss_mib"] / base for count in counts}
    for count in counts[1:]:
        print(f"ratio {count} / {counts[0]} clips: {ratios[count]:.3f} (target 1 +- 0.10)")
    if args.json:
        args.json.write_text(json.dumps({"job": args.job, "results": results, "ratios": ratios}, indent=2))
    if temporary:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0 if all(abs(ratio - 1.0) <= 0.10 for ratio in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
