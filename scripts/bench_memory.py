#!/usr/bin/env python
"""Peak memory of extracting or labelling many clips: is it flat from 100 to 1,000 clips?

    python scripts/bench_memory.py --job extract --clips 100,1000
    python scripts/bench_memory.py --job label --clips 100,1000 --seconds 2

Scenarios of `affectflow label` with the default workers, each against a 3 GB target for the whole
process tree (labelling process, forkserver, evidence workers):

    python scripts/bench_memory.py --scenario 4k            # four 40 s 3840x2160 clips (one, hard-linked)
    python scripts/bench_memory.py --scenario long-audio    # one 60-minute speech mp3 (--minutes)
    python scripts/bench_memory.py --scenario many-files    # 5,000 files (--files), all but 3 zero-byte

Scenario inputs are generated with ffmpeg / espeak-ng in the work folder (a temporary one by default);
`--asr` lets the run transcribe (it is off by default, as for --job label).

A few distinct talking-face clips are generated once (`--unique`, real face photo + espeak-ng speech)
and hard-linked under many names (a manifest of N segments for `extract`, a folder of N files with
sidecar transcripts for `label`). Each N runs in a fresh Python process through the real console
entry point (`affectflow extract` with the offline defaults, or `affectflow label` with the default
model and `--no-asr` unless `--asr`), which reports its peak resident memory (getrusage ru_maxrss of
itself and of its largest child, e.g. a decoding worker). Printed: peak RSS per N and the ratio to the
first N, and the same ratio of the whole tree's peak PSS (below); the target is both ratios within
1 +- 0.10 (streaming from manifest to store, nothing kept per clip; workers included).
Every run also prints the peak PSS of the whole process tree: the sum of `Pss` in /proc/PID/smaps_rollup
over the measured process and all its descendants, sampled every 0.1 s by this (parent) process.
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
import threading
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


SCENARIOS = ("4k", "long-audio", "many-files")
TREE_TARGET_MIB = 3 * 1024


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", *args], check=True)


def make_4k_clip(folder: Path, seconds: float = 40.0) -> Path:
    """A 3840x2160 25 fps talking-face clip (the factory's 640x360 clip scaled up; reused when present)."""
    from factories.media import make_video

    path = folder / f"face-4k-{seconds:g}s.mp4"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        small = make_video(folder / "face-360p.mp4", seconds=seconds, size=(640, 360), text=" ".join(SENTENCES))
        _ffmpeg("-i", str(small), "-vf", "scale=3840:2160", "-c:v", "libx264", "-preset", "ultrafast",
                "-pix_fmt", "yuv420p", "-c:a", "copy", str(path))
        small.unlink()
    return path


def make_long_audio(folder: Path, minutes: float) -> Path:
    """An mp3 of `minutes` of espeak-ng speech, the three sentences looped (reused when present)."""
    from factories.media import write_speech

    path = folder / f"speech-{minutes:g}min.mp3"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        wav = write_speech(folder / "sentences.wav", " ".join(SENTENCES))
        _ffmpeg("-stream_loop", "-1", "-i", str(wav), "-t", f"{minutes * 60:g}", "-c:a", "libmp3lame", "-b:a", "64k",
                str(path))
        wav.unlink()
    return path


def prepare_scenario(args: argparse.Namespace, root: Path) -> Path:
    """The folder `affectflow label` runs on in a scenario (see the module docstring)."""
    folder = root / "videos"
    folder.mkdir(parents=True)
    sources = args.workdir / "sources"
    if args.scenario == "4k":
        clip = make_4k_clip(sources)
        for index in range(4):
            link(clip, folder / f"clip{index}.mp4")
    elif args.scenario == "long-audio":
        link(make_long_audio(sources, args.minutes), folder / "long.mp3")
    else:
        for index, source in enumerate(make_sources(sources, 3, args.seconds)):
            link(source, folder / f"clip{index:05d}.mp4")
        for index in range(3, args.files):
            (folder / f"clip{index:05d}.mp4").touch()
    return folder


class TreeSampler:
    """Samples the summed PSS of a process and its descendants in a thread; `peak_mib` is the largest sum."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.peak_mib, self.peak_processes = 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(parent, []).append(int(entry.name))
        tree, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    @staticmethod
    def _pss_kib(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def _sample(self, tree: list[int]) -> None:
        """One sample of the tree's processes (a subclass may record more than the peak PSS)."""
        total = sum(self._pss_kib(pid) for pid in tree) / 1024.0
        if total > self.peak_mib:
            self.peak_mib, self.peak_processes = total, len(tree)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample(self._tree())
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


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


def scenario_command(args: argparse.Namespace, root: Path) -> list[str]:
    """The `affectflow label` arguments of a scenario run (default workers, file-level rows)."""
    command = ["label", "--videos", str(prepare_scenario(args, root)), "--out", str(root / "labels.jsonl"),
               "--device", args.device, "--quiet"]
    return command + ([] if args.asr else ["--no-asr"])


def measure(args: argparse.Namespace, count: int) -> dict:
    """One fresh process for `count` clips (or the scenario); returns its PEAK record with the tree's peak PSS."""
    name = args.scenario or args.job
    root = args.workdir / f"{name}-{count}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    arguments = scenario_command(args, root) if args.scenario else child_command(args, root, count, args.seconds)
    command = [sys.executable, __file__, "--child", "--", *arguments]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    sampler = TreeSampler(process.pid)
    stdout, stderr = process.communicate()
    sampler.stop()
    lines = [line for line in stdout.splitlines() if line.startswith("PEAK ")]
    if not lines or (process.returncode != 0 and not args.scenario):  # a scenario may have failed files
        raise RuntimeError(f"{name} of {count} clips failed ({process.returncode}):\n"
                           f"{stdout[-2000:]}\n{stderr[-3000:]}")
    record = json.loads(lines[-1][5:])
    record.update(tree_peak_pss_mib=sampler.peak_mib, tree_processes_at_peak=sampler.peak_processes)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", choices=["extract", "label"], default="extract")
    parser.add_argument("--scenario", choices=SCENARIOS, default=None,
                        help="a labelling scenario with a 3 GB whole-tree target instead of --job/--clips")
    parser.add_argument("--minutes", type=float, default=60.0, help="long-audio: length of the recording")
    parser.add_argument("--files", type=int, default=5000, help="many-files: number of files")
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
    if args.scenario:
        return run_scenario(args, temporary)
    counts = [int(value) for value in args.clips.split(",") if value.strip()]
    results = {}
    for count in counts:
        results[count] = measure(args, count)
        record = results[count]
        print(f"{args.job} {count:6d} clips: peak RSS {record['peak_rss_mib']:8.1f} MiB (largest child "
              f"{record['largest_child_peak_rss_mib']:.1f} MiB), whole tree peak PSS "
              f"{record['tree_peak_pss_mib']:.1f} MiB in {record['seconds']:.0f} s", flush=True)
    ratios = peak_ratios(results, "peak_rss_mib")
    tree_ratios = peak_ratios(results, "tree_peak_pss_mib")
    for count in counts[1:]:
        print(f"ratio {count} / {counts[0]} clips: main process peak RSS {ratios[count]:.3f}, whole tree peak PSS "
              f"{tree_ratios[count]:.3f} (target 1 +- 0.10 for both)")
    if args.json:
        args.json.write_text(json.dumps({"job": args.job, "results": results, "ratios": ratios,
                                         "tree_ratios": tree_ratios}, indent=2))
    if temporary:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0 if all(abs(ratio - 1.0) <= 0.10 for ratio in [*ratios.values(), *tree_ratios.values()]) else 1


def peak_ratios(results: dict[int, dict], key: str) -> dict[int, float]:
    """Each clip count's peak (`key` of its record) over the first count's."""
    first = results[next(iter(results))][key]
    return {count: record[key] / first for count, record in results.items()}


def run_scenario(args: argparse.Namespace, temporary: bool) -> int:
    """Measure one scenario; exit code 1 when the whole tree's peak PSS is over TREE_TARGET_MIB."""
    record = measure(args, 0)
    detail = {"4k": "four 40 s 3840x2160 clips", "long-audio": f"one {args.minutes:g}-minute mp3",
              "many-files": f"{args.files} files"}[args.scenario]
    print(f"scenario {args.scenario} ({detail}): whole tree peak PSS {record['tree_peak_pss_mib']:.1f} MiB over "
          f"{record['tree_processes_at_peak']} processes (target < {TREE_TARGET_MIB} MiB); peak RSS "
          f"{record['peak_rss_mib']:.1f} MiB, largest child {record['largest_child_peak_rss_mib']:.1f} MiB; "
          f"{record['seconds']:.0f} s, exit code {record['exit_code']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"scenario": args.scenario, "result": record}, indent=2))
    if temporary:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0 if record["tree_peak_pss_mib"] < TREE_TARGET_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
