#!/usr/bin/env python
"""Labelling speed: the user's command on realistic clips against today's path, or seconds per stage.

    python scripts/bench_label.py                          # default: realistic 1- and 5-minute batches, vs 20d3dcd
    python scripts/bench_label.py --rounds 2 --baseline-ref main
    python scripts/bench_label.py --tree-ref main          # a commit in place of this checkout (both installed)
    python scripts/bench_label.py --stages                 # seconds per stage, 12 uniform clips of 5-10 s
    python scripts/bench_label.py --compare-serial         # the old serial path and the fast path, same run
    python scripts/bench_label.py --videos DIR --workers 2 --threads 1
    python scripts/bench_label.py --device cuda

Default mode (what users wait for). A realistic clip set (`bench_clips.py`: 2-25 s, 640x360 and 1280x720,
real RAVDESS voices and several espeak-ng voices with pauses, a face that leaves the frame at half the clip,
a clip without speech, one with a sidecar transcript) is generated once into a cache folder (`--clip-dir`,
default a temp folder named after the seed) and a batch of each `--batches` length (default 60 and 300 s)
is drawn from it with `--seed`. The command `affectflow label --videos BATCH --out labels.csv --quiet` runs as
a fresh process, timed from its launch to its exit, for this checkout and for `--baseline-ref` (default
`20d3dcd`, installed once from `git archive` into a temp folder with `pip install --no-deps --target`),
in alternating order over `--rounds`: each batch into an empty output (time to the first data row, x real
time = media seconds / wall seconds, CPU seconds of the whole process tree, workers included; then the same
batch again into another empty output for the tree's peak PSS, since sampling PSS slows the command ~10 %),
then the largest batch again with every clip done (time to exit with nothing to do). The table shows the
best of the rounds, this tree / baseline and the targets of issue 22; the load average before and after.

Per-stage mode (`--stages`, `--videos`, `--compare-serial`, `--serial-only`). The uniform clips are
generated once (real face photo + espeak-ng speech, `tests/factories/media.py`) into
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
import os
import shutil
import subprocess
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
        from affectflow.pipeline.core.devices import capped_threads
        from affectflow.pipeline.label.run import LabelingOptions, run_labeling

        options = LabelingOptions(face_fps=args.face_fps, device=args.device, **fast_options(fast, args))
        # as label() does: the workers load their models and collect the first clips while the labeller loads
        early_pool = start_early_pool(videos, options, DefaultLabeler, options.workers) if fast else None
        with capped_threads(1 if early_pool is not None and args.device == "cpu" else None):
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
                        help="where generated clips are kept (default: a temp folder named after --seed, or "
                        "--clips with --stages)")
    parser.add_argument("--clips", type=int, default=12, help="--stages: uniform generated clips")
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--size", default="640x360", help="generated frame size WxH")
    parser.add_argument("--face-fps", type=float, default=2.0)
    parser.add_argument("--device", default=None, help="cpu (per-stage default) | cuda; default mode: the CLI's auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    parser.add_argument("--workers", type=int, default=None, help="evidence worker processes (default: from cores)")
    parser.add_argument("--min-face-fraction", type=float, default=0.1,
                        help="fast path: smallest face as a fraction of the shorter side (faces.MIN_FACE_FRACTION)")
    parser.add_argument("--compare-serial", action="store_true", help="also time the old serial path")
    parser.add_argument("--serial-only", action="store_true", help="time only the old serial path")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (this tree and baseline, or serial "
                        "and fast)")
    parser.add_argument("--stages", action="store_true",
                        help="seconds per stage on the uniform clips (--clips ...) instead of the user's command")
    parser.add_argument("--batches", default="60,300", help="default mode: batch lengths in s drawn from the clip set")
    parser.add_argument("--baseline-ref", default="20d3dcd", help="default mode: the git ref timed as today's path")
    parser.add_argument("--no-baseline", action="store_true", help="default mode: time this tree only")
    parser.add_argument("--tree-ref", default=None,
                        help="default mode: time this git ref (installed like the baseline) instead of this checkout")
    parser.add_argument("--seed", type=int, default=0, help="default mode: seed of the clip set and the batches")
    parser.add_argument("--ravdess", type=Path, default=SHARED_DATA / "ravdess-speech",
                        help="RAVDESS utterances (Actor_NN/*.flac) for the real voices; espeak-ng when absent")
    parser.add_argument("--mode", choices=("serial", "fast"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--started-at", type=float, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not per_stage_mode(args):
        return run_user_benchmark(args)
    args.device = args.device or "cpu"
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


BATCH_TARGETS = {60.0: 8.0, 300.0: 15.0}  # x real time from launch to exit (issue 22), per batch length
NOTHING_TO_DO_TARGET = 2.0  # s from launch to exit when every clip is already done
FIRST_ROW_TARGET = 6.0  # s from launch to the first data row
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def per_stage_mode(args: argparse.Namespace) -> bool:
    """Whether the run is the per-stage profile (in-process timers) rather than the user's command timed
    from outside (the default)."""
    return bool(args.stages or args.videos is not None or args.compare_serial or args.serial_only or args.mode)


def realistic_batches(args: argparse.Namespace) -> list[tuple[float, Path, object]]:
    """The realistic clip set generated (once) in the cache folder, and one folder per `--batches` length
    drawn from it (seeded): [(batch seconds asked, folder, ClipSetSummary)]."""
    from bench_clips import ClipSetSummary, draw_batch, link_batch, make_clip_set, plan_clip_set, ravdess_files

    lengths = [float(value) for value in args.batches.split(",") if value.strip()]
    if not ravdess_files(args.ravdess):
        print(f"note: no RAVDESS utterances under {args.ravdess}: the real-voice clips use espeak-ng voices")
    specs = plan_clip_set(max(lengths) * 1.05, seed=args.seed, ravdess=args.ravdess)
    real = "ravdess" if any(spec.ravdess_used for spec in specs) else "espeak"
    cache = args.clip_dir or Path(tempfile.gettempdir()) / f"affectflow-bench-clips-v2-{real}-seed{args.seed}"
    started = time.time()
    make_clip_set(cache, specs)
    print(f"clip set {cache} ({time.time() - started:.0f} s to make or check): {ClipSetSummary.of(specs).describe()}")
    batches = []
    for seconds in lengths:
        batch = draw_batch(specs, seconds, seed=args.seed)
        folder = link_batch(cache, batch, cache / "batches" / f"batch-{seconds:g}s")
        summary = ClipSetSummary.of(batch)
        print(f"  batch of {seconds:g} s: {summary.describe()}")
        batches.append((seconds, folder, summary))
    return batches


def label_command(videos: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """The user's command, `affectflow label --videos DIR --out FILE --quiet` (the console entry point's
    module run by this Python), with --device / --workers only when given here."""
    command = [sys.executable, "-m", "affectflow.pipeline.cli.main", "label", "--videos", str(videos),
               "--out", str(out), "--quiet"]
    command += ["--device", args.device] if args.device else []
    return command + (["--workers", str(args.workers)] if args.workers is not None else [])


def measured_trees(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """[(name, environment)] of the baseline ref (installed once into a temp folder) and this checkout,
    each checked to import affectflow from where it should."""
    from bench_cli import REPO, describe_tree, imported_from, install_ref, ref_environment

    trees = []
    if not args.no_baseline:
        site = install_ref(args.baseline_ref)
        env = ref_environment(site)
        if not imported_from(env).is_relative_to(site):
            raise RuntimeError(f"the baseline does not import from {site}: {imported_from(env)}")
        trees.append((f"baseline {args.baseline_ref}", env))
    if args.tree_ref:  # another commit in place of this checkout, installed the same way as the baseline
        site = install_ref(args.tree_ref)
        env = ref_environment(site)
        if not imported_from(env).is_relative_to(site):
            raise RuntimeError(f"--tree-ref {args.tree_ref} does not import from {site}: {imported_from(env)}")
        return trees + [(f"this {args.tree_ref}", env)]
    env = ref_environment(None)
    if not imported_from(env).is_relative_to(REPO):
        raise RuntimeError(f"this Python imports affectflow from {imported_from(env)}, not from {REPO}: run the "
                           "script with the Python whose editable install is this checkout")
    trees.append((f"this {describe_tree()}", env))
    return trees


def checked_run(command: list[str], out: Path, env: dict, expect: dict, what: str, memory: bool = False):
    """`measure_command` of one labelling run, from the output's folder (as a user runs it from a project
    folder); RuntimeError when it fails or labels other than expected (`expect`: summary fields such as
    {"done": 12}). memory: sample the tree's PSS too (slows the command: a separate run measures it)."""
    from bench_cli import measure_command

    run = measure_command(command, out, env=env, cwd=out.parent, memory=memory)
    if run.exit_code != 0 or run.summary is None or any(run.summary.get(k) != v for k, v in expect.items()):
        raise RuntimeError(f"{what}: exit code {run.exit_code}, summary {run.summary}, expected {expect}:\n"
                           f"{run.stdout[-1000:]}\n{run.stderr[-3000:]}")
    return run


def run_user_benchmark(args: argparse.Namespace) -> int:
    """The user's command on the realistic batches, for the baseline and this tree in alternating order
    over `--rounds`: each batch from an empty output, then the largest batch again with nothing to do."""
    load_before = os.getloadavg()
    batches = realistic_batches(args)
    trees = measured_trees(args)
    subprocess.run([sys.executable, "-c", "import torch, transformers, faster_whisper, cv2"], check=True,
                   env=trees[-1][1])  # libraries into the page cache: the first measured run is not the cold one
    runs: dict[tuple[str, str], list] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-label-user-"))
    try:
        for round_index in range(args.rounds):
            order = trees if round_index % 2 == 0 else trees[::-1]
            for seconds, folder, summary in batches:
                for name, env in order:
                    out = work / f"{name.split()[0]}-{seconds:g}-{round_index}" / "labels.csv"
                    out.parent.mkdir(parents=True)
                    run = checked_run(label_command(folder, out, args), out, env, {"labelled": summary.clips},
                                      f"{name}, batch of {seconds:g} s")
                    memory_out = out.parent.with_name(out.parent.name + "-memory") / "labels.csv"
                    memory_out.parent.mkdir(parents=True)
                    run.peak_mib = checked_run(label_command(folder, memory_out, args), memory_out, env,
                                               {"labelled": summary.clips}, f"{name}, batch of {seconds:g} s (memory)",
                                               memory=True).peak_mib
                    runs.setdefault((name, f"{seconds:g}"), []).append(run)
                    print(f"round {round_index + 1} {name} batch {seconds:g} s: {run.wall:.2f} s wall, first row "
                          f"{run.first_row:.2f} s, {summary.seconds / run.wall:.2f}x real time, {run.cpu:.1f} CPU-s, "
                          f"{run.peak_mib:.0f} MiB; load {os.getloadavg()[0]:.2f}", flush=True)
            seconds, folder, summary = batches[-1]
            for name, env in order:
                out = work / f"{name.split()[0]}-{seconds:g}-{round_index}" / "labels.csv"
                run = checked_run(label_command(folder, out, args), out, env, {"done": summary.clips, "labelled": 0},
                                  f"{name}, nothing to do")
                runs.setdefault((name, "nothing"), []).append(run)
                print(f"round {round_index + 1} {name} nothing to do: {run.wall:.2f} s", flush=True)
        compare_user_labels(work, trees, batches, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_user_table(trees, batches, runs, args.rounds)
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before {', '.join(f'{v:.2f}' for v in load_before)}; after "
          f"{', '.join(f'{v:.2f}' for v in load_after)} on {os.cpu_count()} cores. The machine may be shared: "
          "other jobs slow every run, which is why the trees alternate; compare the ratios, not the absolutes, and "
          "prefer the CPU seconds, which other jobs change least.")
    return 0


def compare_user_labels(work: Path, trees: list, batches: list, rounds: int) -> None:
    """Per batch: clips whose file-level label is the same in the baseline's and this tree's last run."""
    import csv

    if len(trees) < 2:
        return
    for seconds, _, _ in batches:
        labels = []
        for name, _ in trees:
            with open(work / f"{name.split()[0]}-{seconds:g}-{rounds - 1}" / "labels.csv", encoding="utf-8") as f:
                labels.append({row["clip"]: row.get("label") for row in csv.DictReader(f)})
        same = sum(labels[0].get(clip) == label for clip, label in labels[1].items())
        print(f"batch of {seconds:g} s: labels equal on {same}/{len(labels[1])} clips (baseline vs this tree)")


def user_table_rows(batches: list) -> list[tuple[str, str, str, str]]:
    """(row title, runs key, metric, target) of the table."""
    rows = [("nothing to do: exit (s)", "nothing", "wall", f"<= {NOTHING_TO_DO_TARGET:g}")]
    for seconds, _, summary in batches:
        length = f"{seconds / 60:g}-min" if seconds % 60 == 0 else f"{seconds:g}-s"
        title = f"{length} batch ({summary.clips} clips, {summary.seconds:.0f} s)"
        target = BATCH_TARGETS.get(seconds)
        rows += [(f"{title}: first row (s)", f"{seconds:g}", "first_row", f"<= {FIRST_ROW_TARGET:g}"),
                 (f"{title}: wall (s)", f"{seconds:g}", "wall", ""),
                 (f"{title}: x real time", f"{seconds:g}", "speed", f">= {target:g}" if target else ""),
                 (f"{title}: CPU s (tree)", f"{seconds:g}", "cpu", ""),
                 (f"{title}: peak PSS (MiB, tree)", f"{seconds:g}", "peak_mib", "")]
    return rows


def user_metric(runs: list, metric: str, media_seconds: float) -> float:
    """The best of the rounds: fastest wall / first row / CPU, highest x real time, largest peak memory."""
    if metric == "speed":
        return media_seconds / min(run.wall for run in runs)
    if metric == "peak_mib":
        return max(run.peak_mib for run in runs)
    return min(getattr(run, metric) for run in runs)


def print_user_table(trees: list, batches: list, runs: dict, rounds: int) -> None:
    """Each metric for each tree (best of `rounds`), this tree / baseline, and the issue's target."""
    media = {f"{seconds:g}": summary.seconds for seconds, _, summary in batches}
    names = [name for name, _ in trees]
    width = max(len(title) for title, *_ in user_table_rows(batches)) + 2
    print(f"\n{'(best of %d round%s)' % (rounds, 's' * (rounds > 1)):<{width}}"
          + "".join(f"{name:>24}" for name in names) + (f"{'this / baseline':>17}" if len(names) == 2 else "")
          + f"{'target':>10}")
    for title, key, metric, target in user_table_rows(batches):
        values = [user_metric(runs[(name, key)], metric, media.get(key, 0.0)) for name in names]
        line = f"{title:<{width}}" + "".join(f"{value:>23.2f}{'x' if metric == 'speed' else ' '}"
                                              for value in values)
        if len(values) == 2:
            line += f"{values[1] / values[0]:>16.2f}x" if values[0] else f"{'-':>17}"
        print(line + f"{target:>10}")


if __name__ == "__main__":
    sys.exit(main())
