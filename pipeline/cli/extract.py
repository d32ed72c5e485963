"""`affectflow extract`: features for every segment of a manifest, one feature store per extractor.

    affectflow extract --manifest meld/train.parquet --out features/meld \\
        --audio microsoft/wavlm-large --audio-layers 20 --text roberta-large --vision fer --device auto

An --audio/--text/--vision value is a registered extractor name of that modality ("logmel",
"prosody", "hf_text", ...) or else a Hugging Face id / local folder for hf_audio / hf_text /
hf_vision; "none" skips the modality. With none of the three given, the offline defaults run:
text "minilm" (all-MiniLM-L6-v2), audio "logmel", and vision "fer" (FER2013 mini-Xception).
Each store lands in OUT/<extractor_id> (name-confighash); a re-run skips what is stored; failures are
listed and written to OUT/<extractor_id>/failures.jsonl. Exit code 1 only when every segment failed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from affectflow.extractors.base import list_extractors
from affectflow.extractors.choice import offline_choices
from affectflow.extractors.hf_common import PRECISIONS
from affectflow.extractors.job import ENGINES, NPY_LEVELS, extract
from affectflow.extractors.run import ExtractionSummary
from affectflow.extractors.spec import Modality
from affectflow.pipeline.core.names import MODALITY_NAMES


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the `extract` options to `parser`."""
    parser.add_argument("--manifest", required=True, type=Path, help="manifest (.parquet, .csv or .jsonl)")
    parser.add_argument("--out", required=True, type=Path, help="folder receiving one feature store per extractor")
    for modality, flag in MODALITY_NAMES.items():
        parser.add_argument(f"--{flag}", default=None, metavar="ID",
                            help=f"{flag} extractor ({_names(modality)}) or HF id/folder ('none' to skip)")
        parser.add_argument(f"--{flag}-layers", default=None, metavar="L",
                            help="hidden layer: an int, 'last', 'last4' (sum of last four) or 'mean'")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--precision", default=None, choices=tuple(PRECISIONS),
                        help="model precision for HF extractors (float16 needs a GPU)")
    parser.add_argument("--batch-size", type=int, default=8, help="segments per extraction batch")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="longest audio piece encoded at once")
    parser.add_argument("--face-fps", type=float, default=5.0, help="frames per second sampled for faces")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding worker processes (default: per modality, bounded by the cores; 0 = a thread)")
    parser.add_argument("--export-npy", choices=NPY_LEVELS, default=None,
                        help="also export OUT/npy-<level>/<extractor_id>/<segment>.npy (MERBench/GCNet layout)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local (this machine) or ray (Ray Data pipeline; pip install 'affectflow[ray]')")
    parser.add_argument("--ray-address", default=None,
                        help="with --engine ray: an existing cluster ('auto', 'ray://head:10001'); default: start a local one")
    parser.add_argument("--actors", type=int, default=None,
                        help="with --engine ray: model actors (default: one per GPU, or half the CPUs)")


def _names(modality: Modality) -> str:
    return ", ".join(list_extractors(modality=modality))


def run(args: argparse.Namespace) -> int:
    """Run `affectflow extract`; prints one summary per extractor as it finishes. Returns the exit code."""
    summaries = extract(
        args.manifest, args.out, **_modality_values(args), audio_layers=args.audio_layers,
        text_layers=args.text_layers, vision_layers=args.vision_layers, precision=args.precision,
        chunk_seconds=args.chunk_seconds, device=args.device, batch_size=args.batch_size, face_fps=args.face_fps,
        workers=args.workers, export_npy=args.export_npy, engine=args.engine, ray_address=args.ray_address,
        actors=args.actors, progress=not args.no_progress, on_summary=_report)
    return exit_code(list(summaries.values()))


def _modality_values(args: argparse.Namespace) -> dict[str, str | None]:
    """{audio, text, vision} values; with none given, the offline defaults."""
    values = {flag: getattr(args, flag) for flag in MODALITY_NAMES.values()}
    if any(value is not None for value in values.values()):
        return values
    return {MODALITY_NAMES[m]: value or "none" for m, value in offline_choices().items()}


def _report(summary: ExtractionSummary) -> None:
    """Print a summary and where its .npy export went."""
    print(summary.describe(), flush=True)
    if summary.npy_dir is not None:
        print(f"  exported {summary.npy_files} .npy files to {summary.npy_dir}")


def exit_code(summaries: list[ExtractionSummary]) -> int:
    """1 only when every attempted segment failed."""
    attempted = sum(s.extracted + len(s.failed) for s in summaries)
    failed = sum(len(s.failed) for s in summaries)
    return 1 if attempted and failed == attempted else 0
