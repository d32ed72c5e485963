"""`affectflow train`: train a fusion model on extracted features, selecting on validation only.

    affectflow train --manifest meld.parquet --features features/ --model mult --task classification \\
        --label-column emotion --schedule random --epochs 30 --seeds 1 2 3 --out runs/meld-mult
    affectflow train ... --schedule fixed --condition t          # train and select in {t}
    affectflow train ... --fold 5                                  # IEMOCAP leave-one-session-out fold
    affectflow train ... --fold all                                # all 5 folds, mean ± std over folds
    affectflow train ... --resume                                  # continue an interrupted run

Writes RUN_DIR/best (checkpoint bundle), RUN_DIR/summary.json (per seed + mean ± std of the test
grid) and RUN_DIR/test_grid_<metric>.csv (seed means: rows = model, columns = conditions).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from affectflow.fusion.registry import list_fusions

from affectflow.pipeline.train.data import leave_one_session_out, open_feature_stores, session_folds
from affectflow.pipeline.core.devices import resolve_device
from affectflow.pipeline.train.experiment import build_experiment, format_mean_std, model_config_for, run_experiment
from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.core.names import MODALITY_NAMES
from affectflow.pipeline.train.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, summarize_runs
from affectflow.pipeline.train.protocols import parse_condition
from affectflow.pipeline.train.reports import write_condition_grid, write_json
from affectflow.pipeline.train.schedules import SCHEDULE_NAMES, make_schedule
from affectflow.pipeline.train.trainer import TrainConfig


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    """--manifest, --features and --features-a/-t/-v (shared with `affectflow evaluate`)."""
    parser.add_argument("--manifest", required=True, type=Path, help="manifest (.parquet/.csv/.jsonl)")
    parser.add_argument("--features", type=Path, help="folder holding one feature store per sub-folder")
    for m, name in MODALITY_NAMES.items():
        parser.add_argument(f"--features-{m}", type=Path, help=f"the {name} feature store (overrides --features)")
    parser.add_argument("--missing-entries", choices=("error", "missing"), default="error",
                        help="segments absent from a store: fail, or treat the modality as missing")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def apply_threads(args: argparse.Namespace) -> None:
    """Honour --threads (small models on a busy CPU run much faster on one thread)."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def stores_from_args(args: argparse.Namespace, expected: dict | None = None) -> dict:
    """{modality: FeatureStore} from --features / --features-X (`expected` specs pick among several)."""
    overrides = {m: getattr(args, f"features_{m}") for m in ("a", "t", "v") if getattr(args, f"features_{m}", None)}
    stores = open_feature_stores(args.features, overrides, expected=expected)
    if not stores:
        raise ValueError("no feature store found: pass --features DIR or --features-a/-t/-v STORE")
    return stores


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `affectflow train`."""
    add_feature_arguments(parser)
    parser.add_argument("--model", required=True, help=f"fusion model ({', '.join(list_fusions())})")
    parser.add_argument("--model-config", help="JSON object or path to a JSON file of hyperparameters")
    parser.add_argument("--tiny", action="store_true", help="start from the model's tiny_config() (smoke runs)")
    parser.add_argument("--task", choices=("classification", "regression"), default="classification")
    parser.add_argument("--label-column", default=None, help="default: emotion / sentiment by --task")
    parser.add_argument("--classes", help="comma-separated class names (default: sorted train labels)")
    parser.add_argument("--level", choices=("utterance", "conversation"), default="utterance")
    parser.add_argument("--modalities", help="e.g. 'atv' or 't' (default: every modality with a store)")
    parser.add_argument("--frame-level", action="store_true", help="frame sequences instead of utterance vectors")
    parser.add_argument("--no-normalize", action="store_true", help="skip train-split feature standardisation")
    parser.add_argument("--schedule", default="full", help=f"training schedule: {', '.join(SCHEDULE_NAMES)}")
    parser.add_argument("--condition", help="modalities kept by --schedule fixed, e.g. 't' or 'at'")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per training stage")
    parser.add_argument("--lr", type=float, help="default: the model's recommendation, else 1e-3")
    parser.add_argument("--weight-decay", type=float, help="default: the model's recommendation, else 0")
    parser.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), help="default: the model's recommendation or adam")
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (0 = off)")
    parser.add_argument("--select-metric", help="validation metric for selection (default weighted_f1 / mae)")
    parser.add_argument("--select-condition", default="auto",
                        help="validation condition: auto (the schedule's), full, random, average, or e.g. 't'")
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--fold", help="leave-one-session-out: this session is test, a carve-out of the others "
                                       "valid; 'all' runs every session as a fold (RUN_DIR/fold-<session>)")
    parser.add_argument("--valid-fraction", type=float, default=0.1, help="validation carve-out share for --fold")
    parser.add_argument("--out", required=True, type=Path, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the runs found in --out")


def _model_config(text: str | None) -> dict:
    if not text:
        return {}
    path = Path(text)
    raw = path.read_text(encoding="utf-8") if path.is_file() else text
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"--model-config is neither a JSON object nor a JSON file: {error}") from None
    if not isinstance(config, dict):
        raise ValueError("--model-config must be a JSON object")
    return config


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       optimizer=args.optimizer, patience=args.patience or None, select_metric=args.select_metric,
                       select_condition=args.select_condition, grad_clip=args.grad_clip or None,
                       progress=not args.no_progress)


def _train_fold(args: argparse.Namespace, table, stores, fold: str | None, out: Path) -> tuple[dict, str]:
    """One training run (all seeds) on the official splits or one leave-one-session-out fold."""
    if fold is not None:
        table = leave_one_session_out(table, fold, valid_fraction=args.valid_fraction)
    modalities = parse_condition(args.modalities) if args.modalities else tuple(m for m in "atv" if m in stores)
    lacking = [m for m in modalities if m not in stores]
    if lacking:
        raise ValueError(f"no feature store for modalities {lacking} (found {sorted(stores)})")
    label_column = args.label_column or ("emotion" if args.task == "classification" else "sentiment")
    classes = tuple(c.strip() for c in args.classes.split(",")) if args.classes else None
    data = build_experiment(table, stores, args.task, label_column, modalities, level=args.level,
                            frame_level=args.frame_level, class_names=classes, normalize=not args.no_normalize,
                            missing_entries=args.missing_entries)
    hyperparameters = model_config_for(args.model, _model_config(args.model_config), args.tiny)
    summary = run_experiment(args.model, hyperparameters, data,
                             lambda: make_schedule(args.schedule, condition=args.condition),
                             _train_config(args), args.seeds, out, device=resolve_device(args.device),
                             resume=args.resume)
    return summary, data.task.kind


def cross_fold_summary(summaries: dict[str, dict]) -> dict:
    """{condition: {metric: {mean, std, values}}} over folds of each fold's seed-mean test metrics."""
    per_fold = [{c: {m: v["mean"] for m, v in metrics.items()} for c, metrics in s["test_summary"].items()}
                for s in summaries.values()]
    conditions = per_fold[0].keys() if per_fold else []
    return {c: summarize_runs([fold[c] for fold in per_fold]) for c in conditions}


def run(args: argparse.Namespace) -> int:
    """Train per seed (and per fold with --fold all), write bundles and summaries; print the test grid."""
    apply_threads(args)
    try:
        make_schedule(args.schedule, condition=args.condition)  # validate the name before any work
        table = read_manifest(args.manifest)
        stores = stores_from_args(args)
        folds = session_folds(table) if args.fold == "all" else [args.fold]
        summaries, kind = {}, None
        for fold in folds:
            out = args.out / f"fold-{fold}" if len(folds) > 1 else args.out
            summaries[fold], kind = _train_fold(args, table, stores, fold, out)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"affectflow train: error: {error}", file=sys.stderr)
        return 2
    write_json({k: v for k, v in vars(args).items() if k != "func"}, args.out / "config.json")
    if len(folds) > 1:
        summary = {"model": args.model, "folds": {str(f): s["test_summary"] for f, s in summaries.items()},
                   "best_seed": {str(f): s["best_seed"] for f, s in summaries.items()},
                   "select_metric": next(iter(summaries.values()))["select_metric"],
                   "select_condition": next(iter(summaries.values()))["select_condition"],
                   "test_summary": cross_fold_summary(summaries)}
        write_json(summary, args.out / "summary.json")
    else:
        summary = summaries[folds[0]]
    _report(args, summary, kind)
    return 0


def _report(args: argparse.Namespace, summary: dict, kind: str) -> None:
    metrics = CLASSIFICATION_METRICS if kind == "classification" else REGRESSION_METRICS
    test = summary["test_summary"]
    means = {args.model: {c: {m: v["mean"] for m, v in values.items()} for c, values in test.items()}}
    if test:
        write_condition_grid(means, args.out, metrics, stem="test_grid")
    bundles = args.out / ("fold-*/best" if "folds" in summary else "best")
    print(f"{args.model}: best seed {summary['best_seed']} (validation {summary['select_metric']} under "
          f"{summary['select_condition']!r}); bundle: {bundles}")
    for condition in test:
        shown = ", ".join(f"{m} {format_mean_std(test, condition, m, 1.0 if m == 'mae' else 100.0)}"
                          for m in metrics[:4])
        print(f"  test {condition:>14}: {shown}")
