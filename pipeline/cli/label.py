"""`affectflow label` / `scripts/run_pipeline.py`: label a folder of recordings into a CSV or JSONL file.

Exit codes: 0 when the batch ran (even with per-file errors, which are rows), 2 for bad arguments or an
unusable checkpoint.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", required=True, help="folder of recordings (searched recursively)")
    parser.add_argument("--out", default="labels.csv", help="output file (.csv or .jsonl); re-running resumes it")
    parser.add_argument("--format", choices=("csv", "jsonl"), default=None,
                        help="output format (default: from --out's suffix); jsonl adds per-modality probabilities")
    parser.add_argument("--checkpoint", default=None, help="a trained bundle from `affectflow train` (default: the offline model)")
    parser.add_argument("--transcripts", default=None, help="CSV with columns clip,text")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--segment-seconds", type=float, default=None, help="also write one row per window of N seconds")
    parser.add_argument("--plot", action="store_true", help="write a PNG of class probabilities over time per clip")
    parser.add_argument("--face-fps", type=float, default=2.0, help="frames per second sampled for face detection")
    parser.add_argument("--no-asr", action="store_true", help="never transcribe audio (text missing without a sidecar)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: label in a Ray actor pool (pip install 'affectflow[ray]'); same output file")
    parser.add_argument("--ray-address", default=None, help="existing Ray cluster (e.g. 'auto' or ray://host:10001)")
    parser.add_argument("--actors", type=int, default=None, help="Ray actor pool size (default: GPUs, else CPUs / 2)")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _labeler_factory(args):
    """A picklable `make_labeler(device)` (Ray actors build their own labeller with it)."""
    if args.checkpoint is None:
        from affectflow.pipeline.label.default_model import DefaultLabeler

        return DefaultLabeler
    from affectflow.pipeline.label.checkpoint_labeler import CheckpointLabeler

    return functools.partial(CheckpointLabeler, args.checkpoint)


def run(args: argparse.Namespace) -> int:
    from affectflow.pipeline.core.devices import resolve_device
    from affectflow.pipeline.label.output import OutputMismatchError
    from affectflow.pipeline.label.run import LabelingOptions, run_labeling
    from affectflow.pipeline.label.report import print_table, write_plots
    from affectflow.pipeline.media.transcripts import TranscriptError, load_transcript_table

    videos = Path(args.videos)
    if not videos.is_dir():
        return _fail(f"--videos {videos} is not a folder")
    if args.segment_seconds is not None and args.segment_seconds <= 0:
        return _fail("--segment-seconds must be > 0")
    file_format = args.format or ("jsonl" if str(args.out).lower().endswith(".jsonl") else "csv")
    try:
        device = resolve_device(args.device)
        transcripts = load_transcript_table(args.transcripts) if args.transcripts else None
    except (ValueError, TranscriptError) as error:
        return _fail(str(error))
    make_labeler = _labeler_factory(args)
    try:
        labeler = make_labeler(device)
    except (OSError, ValueError, KeyError) as error:
        return _fail(f"cannot use checkpoint {args.checkpoint}: {error}" if args.checkpoint else str(error))
    options = LabelingOptions(segment_seconds=args.segment_seconds or (1.0 if args.plot else None),
                              face_fps=args.face_fps, transcripts=transcripts, use_asr=not args.no_asr,
                              device=str(device))
    try:
        if args.engine == "ray":
            from affectflow.pipeline.label.ray_engine import ray_label

            summary = ray_label(videos, args.out, make_labeler, options, file_format, actors=args.actors,
                                address=args.ray_address, progress=not args.quiet,
                                labeler_columns=(tuple(labeler.class_names), tuple(labeler.modalities)))
        else:
            summary = run_labeling(videos, args.out, labeler, options, file_format, progress=not args.quiet)
    except OutputMismatchError as error:
        return _fail(str(error))
    if args.plot:
        write_plots(args.out, file_format, labeler.class_names)
    if not args.quiet:
        print_table(summary, labeler.class_names)
    print(f"{summary.labeled} labelled, {summary.failed} with errors, {summary.skipped} already done "
          f"-> {args.out} ({summary.seconds:.1f} s)")
    return 0
