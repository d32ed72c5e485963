"""`affectflow evaluate`: score checkpoint bundles under the missing-modality protocols.

    affectflow evaluate --checkpoint runs/meld-mult/best runs/meld-dqf/best --manifest meld.parquet \\
        --features features/ --protocol fixed random frame --out reports/meld

Protocols: fixed (7 conditions + their incomplete average), random (seeded per-sample patterns,
MCULoRA's seed 66), frame (DQF: rates 0.0..1.0 per combination, --frame-pattern random|consecutive,
--frame-fill zeros|noise, AUILC). Outputs in --out: report.json; fixed_<metric>.csv (rows = models,
columns = conditions); random.csv; auilc_<pattern>_<fill>_<metric>.csv; confusion_<model>.png
(complete condition, classification); auilc_<model>_<pattern>_<fill>.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from affectflow.pipeline.train import evaluation
from affectflow.pipeline.train.checkpoint import load_bundle, read_bundle_info
from affectflow.pipeline.train.data import MultimodalDataset, make_loader, split_rows
from affectflow.pipeline.core.devices import resolve_device
from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.train.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from affectflow.pipeline.train.protocols import FRAME_FILLS, FRAME_PATTERNS, FRAME_RATES, RANDOM_PROTOCOL_SEED, condition_name
from affectflow.pipeline.train.reports import auilc_table, plot_auilc_curves, plot_confusion_matrix, write_condition_grid, write_json
from affectflow.pipeline.cli.train import add_feature_arguments, apply_threads, stores_from_args

PROTOCOLS = ("fixed", "random", "frame")
FRAME_METRICS = {"classification": ("wa", "ua"), "regression": ("acc7", "acc2_has0", "mae")}


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `affectflow evaluate`."""
    parser.add_argument("--checkpoint", required=True, nargs="+", type=Path,
                        help="bundle folders (or run folders holding best/); one grid row each")
    add_feature_arguments(parser)
    parser.add_argument("--protocol", nargs="+", choices=PROTOCOLS, default=["fixed"])
    parser.add_argument("--split", default="test", help="which split to score (test, valid, train)")
    parser.add_argument("--seed", type=int, default=RANDOM_PROTOCOL_SEED, help="seed of the random protocol")
    parser.add_argument("--include-complete", action="store_true",
                        help="random protocol may also draw the complete pattern (MCULoRA does not)")
    parser.add_argument("--frame-pattern", nargs="+", choices=FRAME_PATTERNS, default=["random"])
    parser.add_argument("--frame-fill", nargs="+", choices=FRAME_FILLS, default=["zeros"])
    parser.add_argument("--rates", type=float, nargs="+", default=list(FRAME_RATES))
    parser.add_argument("--frame-seed", type=int, default=0)
    parser.add_argument("--mark-invalid", action="store_true", help="frame protocol also clears the frame masks")
    parser.add_argument("--out", required=True, type=Path, help="report folder")


def _bundle_path(path: Path) -> Path:
    return path / "best" if (path / "best" / "bundle.json").is_file() else path


def _row_names(paths: list[Path], architectures: list[str]) -> list[str]:
    """Architecture names, made unique with the run folder name where needed."""
    names = []
    for path, architecture in zip(paths, architectures):
        name = architecture if architectures.count(architecture) == 1 else f"{architecture}@{path.parent.name or path.name}"
        while name in names:
            name += "'"
        names.append(name)
    return names


def _dataset(args, table, info) -> MultimodalDataset:
    stores = stores_from_args(args, expected=info.extractor_specs)
    stores = {m: stores.get(m) for m in info.task_spec.modalities}
    info.check_stores(stores)
    for m, store in stores.items():
        if store is None and info.extractor_specs.get(m) is not None:
            raise ValueError(f"no feature store for modality {m!r} matching the bundle's extractor "
                             f"{info.extractor_specs[m].name} config {info.extractor_specs[m].config_hash}")
    rows = split_rows(table, args.split)
    if rows.empty:
        raise ValueError(f"the manifest has no {args.split!r} rows")
    return MultimodalDataset(rows, stores, info.task_spec, info.label_column, frame_level=info.frame_level,
                             normalizer=info.normalizer, missing_entries=args.missing_entries)


def evaluate_bundle(args: argparse.Namespace, table: pd.DataFrame, path: Path, name: str, device) -> dict:
    """Every requested protocol for one bundle; writes its PNGs; returns its part of report.json."""
    model, info = load_bundle(path, device=device)
    loader = make_loader(_dataset(args, table, info), args.batch_size, shuffle=False)
    kind = info.task_spec.kind
    result: dict = {"checkpoint": str(path), "architecture": info.architecture, "training": info.training}
    if "fixed" in args.protocol:
        result["fixed"] = evaluation.fixed_grid(model, loader, device)
        complete = condition_name(info.task_spec.modalities)
        if kind == "classification":
            plot_confusion_matrix(result["fixed"][complete]["confusion_matrix"], info.class_names,
                                  args.out / f"confusion_{name}.png", title=f"{name} {{{','.join(complete)}}}")
    if "random" in args.protocol:
        transform = evaluation.random_transform(info.task_spec.level, args.seed, args.include_complete)
        result["random"] = evaluation.evaluate(model, loader, device, transform)[0]
    if "frame" in args.protocol:
        result["frame"] = {}
        for pattern in args.frame_pattern:
            for fill in args.frame_fill:
                frame = evaluation.frame_protocol(model, loader, device, FRAME_METRICS[kind], pattern=pattern,
                                                  fill=fill, rates=args.rates, seed=args.frame_seed,
                                                  mark_invalid=args.mark_invalid)
                result["frame"][f"{pattern}_{fill}"] = frame
                plot_auilc_curves(frame, FRAME_METRICS[kind], args.out / f"auilc_{name}_{pattern}_{fill}.png", title=name)
    return result


def _write_tables(args: argparse.Namespace, results: dict[str, dict], kind: str) -> None:
    metrics = CLASSIFICATION_METRICS if kind == "classification" else REGRESSION_METRICS
    if "fixed" in args.protocol:
        write_condition_grid({n: r["fixed"] for n, r in results.items()}, args.out, metrics, stem="fixed")
        print(pd.DataFrame({n: r["fixed"] for n, r in results.items()}).map(
            lambda m: round(m.get(metrics[0], float("nan")), 4) if isinstance(m, dict) else m).T.to_string())
    if "random" in args.protocol:
        table = pd.DataFrame({n: evaluation.scalar_metrics(r["random"]) for n, r in results.items()}).T
        table.index.name = "model"
        table.to_csv(args.out / "random.csv", float_format="%.4f")
    if "frame" in args.protocol:
        for setting in next(iter(results.values()))["frame"]:
            for metric in FRAME_METRICS[kind]:
                table = auilc_table({n: r["frame"][setting] for n, r in results.items()}, metric)
                table.to_csv(args.out / f"auilc_{setting}_{metric}.csv", float_format="%.4f")


def run(args: argparse.Namespace) -> int:
    """Evaluate every checkpoint; write report.json, CSV grids and PNGs into --out."""
    apply_threads(args)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        device = resolve_device(args.device)
        table = read_manifest(args.manifest)
        paths = [_bundle_path(p) for p in args.checkpoint]
        infos = [read_bundle_info(p) for p in paths]
        kinds = {info.task_spec.kind for info in infos}
        if len(kinds) > 1:
            raise ValueError(f"checkpoints mix task kinds {sorted(kinds)}; evaluate them separately")
        names = _row_names(paths, [info.architecture for info in infos])
        results = {name: evaluate_bundle(args, table, path, name, device) for name, path in zip(names, paths)}
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"affectflow evaluate: error: {error}", file=sys.stderr)
        return 2
    write_json({"split": args.split, "protocols": args.protocol, "models": results}, args.out / "report.json")
    _write_tables(args, results, kinds.pop())
    print(f"report written to {args.out}")
    return 0
