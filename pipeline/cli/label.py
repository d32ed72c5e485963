"""`affectflow label` / `scripts/run_pipeline.py`: label a folder of recordings into a CSV or JSONL file.

A thin parser over `affectflow.pipeline.label.label`. Exit codes: 0 when the batch ran (even with per-file
errors, which are rows), 2 for bad arguments (one line naming the option), an unusable checkpoint or an
output file this run must not touch (another run's columns, locked by a concurrent run, not a labels file,
read-only), 1 when the output file cannot be written (disk full, I/O error: one line; the file ends at its
last whole row and a re-run resumes it), 130 when Ctrl-C stopped it (one line with the rows written; a
re-run resumes). `--out` ending with "/" or naming an existing folder writes `labels.csv` (or `.jsonl`)
inside it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator

from affectflow.pipeline.label.job import LabelingArgumentError, LabelingSetupError, label
from affectflow.pipeline.label.output import OutputError, OutputWriteError
from affectflow.pipeline.label.run import LabelingInterrupted

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the `label` options to `parser`."""
    parser.add_argument("--videos", required=True, help="folder of recordings (searched recursively)")
    parser.add_argument("--out", default="labels.csv", help="output file (.csv or .jsonl), or a folder (ending with / or existing) to write "
                             "labels.csv in; re-running resumes it")
    parser.add_argument("--format", choices=("csv", "jsonl"), default=None,
                        help="output format (default: from --out's suffix); jsonl adds per-modality probabilities")
    parser.add_argument("--checkpoint", default=None, help="a trained bundle from `affectflow train` (default: the offline model)")
    parser.add_argument("--transcripts", default=None, help="CSV with columns clip,text")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--segment-seconds", type=float, default=None, help="also write one row per window of N seconds (0.1 to 86400)")
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


def run(args: argparse.Namespace) -> int:
    """Label `args.videos` with `label(...)`; print the summary line; 2 (one line) when the run cannot start,
    1 (one line) when the output file cannot be written, 130 (one line) on Ctrl-C."""
    try:
        with one_line_warnings():
            summary = label(args.videos, args.out, format=args.format, checkpoint=args.checkpoint,
                            transcripts=args.transcripts, device=args.device, segment_seconds=args.segment_seconds,
                            plot=args.plot, face_fps=args.face_fps, asr=not args.no_asr, engine=args.engine,
                            ray_address=args.ray_address, actors=args.actors, progress=not args.quiet,
                            trust_remote_code=args.trust_remote_code, workers=args.workers,
                            report=args.report)
    except LabelingArgumentError as error:
        value = f"{error.value:g}" if isinstance(error.value, float) else error.value
        print(f"error: {option_name(error.argument)} must be {error.requirement}, got {value}", file=sys.stderr)
        return 2
    except (LabelingSetupError, OutputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OutputWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except LabelingInterrupted as interrupted:
        print(f"interrupted; {interrupted.rows_written} rows written; rerun to resume", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except KeyboardInterrupt:
        print("interrupted; rerun to resume", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    print(f"{summary.labeled} labelled, {summary.failed} with errors, {summary.skipped} already done "
          f"-> {summary.out} ({summary.seconds:.1f} s)")
    if summary.report is not None:
        print(f"report: {summary.report}")
    return 0
