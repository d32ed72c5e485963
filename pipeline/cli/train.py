"""`affectflow train`: train a fusion model on extracted features, selecting on validation only.

    affectflow train --manifest meld.parquet --features features/ --model mult --task classification \\
        --label-column emotion --schedule random --epochs 30 --seeds 1 2 3 --out runs/meld-mult
    affectflow train ... --schedule fixed --condition t          # train and select in {t}
    affectflow train ... --fold 5                                  # IEMOCAP leave-one-session-out fold
    affectflow train ... --fold all                                # all 5 folds, mean ± std over folds
    affectflow train ... --resume                                  # continue an interrupted run
    affectflow train ... --model dqf --recipe paper                # the paper's recipe (docs/recipes.md)
    affectflow train ... --model dqf --recipe paper --budget 0.1 --lr 1e-4   # 10 % of its epochs, another lr

--recipe default (quick settings, not a paper's) or paper supplies every training option that is not
given; an explicit flag overrides that one item. The recipe that ran (items, overrides, budget) is
printed first and recorded in the bundle's training record and RUN_DIR/summary.json.

Writes RUN_DIR/best (checkpoint bundle), RUN_DIR/summary.json (per seed + mean ± std of the test
grid) and RUN_DIR/test_grid_<metric>.csv (seed means: rows = model, columns = conditions).
Segments without the label (e.g. MOSI's 4 without a continuous score) are left out with one warning line
(count and first ids, also in summary.json "unlabelled_segments"); exit 2 when no train or validation
segment has one.
The work is done by `affectflow.pipeline.train.api.train`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from pathlib import Path
from typing import Iterator

from affectflow.fusion.registry import list_fusions

from affectflow.pipeline.train.api import train
from affectflow.pipeline.train.labels import UnlabelledSegmentsWarning
from affectflow.pipeline.train.experiment import AbsentModalityWarning
from affectflow.pipeline.train.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from affectflow.pipeline.train.results import CrossFoldSummary, ExperimentSummary, format_mean_std
from affectflow.pipeline.train.optimizers import OPTIMIZERS
from affectflow.pipeline.train.recipes import RECIPE_NAMES, PAPER_RECIPES, RecipeRun
from affectflow.pipeline.train.schedules import SCHEDULES
from affectflow.pipeline.core.names import MODALITY_NAMES


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


def feature_overrides(args: argparse.Namespace) -> dict[str, Path]:
    """{modality: store path} of --features-a/-t/-v."""
    return {m: getattr(args, f"features_{m}") for m in ("a", "t", "v") if getattr(args, f"features_{m}", None)}


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `affectflow train`."""
    add_feature_arguments(parser)
    parser.add_argument("--model", required=True, help=f"fusion model ({', '.join(list_fusions())})")
    parser.add_argument("--model-config", help="JSON object or path to a JSON file of hyperparameters")
    parser.add_argument("--tiny", action="store_true", help="start from the model's tiny_config() (smoke runs)")
    parser.add_argument("--task", choices=("classification", "regression"), default="classification")
    parser.add_argument("--label-column", default=None, help="default: emotion / sentiment by --task")
    parser.add_argument("--classes", help="comma-separated class names (default: sorted train labels)")
    parser.set_defaults(batch_size=None)  # the recipe's unless given
    parser.add_argument("--recipe", choices=RECIPE_NAMES, default="default",
                        help=f"default: quick settings (not a paper's); paper: the model's paper recipe "
                             f"({', '.join(PAPER_RECIPES.names())}). Flags below override single items")
    parser.add_argument("--budget", type=float, help="0 < F <= 1: run F of every stage's epochs (at least 1)")
    parser.add_argument("--level", choices=("utterance", "conversation"), help="default: the recipe's")
    parser.add_argument("--modalities", help="e.g. 'atv' or 't' (default: every modality with a store)")
    parser.add_argument("--frame-level", action=argparse.BooleanOptionalAction, default=None,
                        help="frame sequences instead of utterance vectors (default: the recipe's)")
    parser.add_argument("--no-normalize", action="store_true", help="skip train-split feature standardisation")
    parser.add_argument("--schedule", help=f"training schedule: {', '.join(SCHEDULES.names())} "
                        f"(aliases: {', '.join(f'{a}={n}' for a, n in SCHEDULES.aliases().items())}); "
                        f"default: the recipe's")
    parser.add_argument("--condition", help="modalities kept by --schedule fixed, e.g. 't' or 'at'")
    parser.add_argument("--epochs", type=int, help="epochs of every training stage (default: the recipe's)")
    parser.add_argument("--lr", type=float, help="default: the recipe's / the model's recommendation, else 1e-3")
    parser.add_argument("--weight-decay", type=float, help="default: the model's recommendation, else 0")
    parser.add_argument("--momentum", type=float, help="SGD momentum (default: the model's recommendation, else 0.9)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS.names(),
                        help="default: the model's recommendation or adam")
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs (0 = off; default: the recipe's)")
    parser.add_argument("--select-metric", help="validation metric for selection (default weighted_f1 / mae)")
    parser.add_argument("--select-condition",
                        help="validation condition: auto (the schedule's), full, random, average, frame, or e.g. 't' "
                             "(default: the recipe's)")
    parser.add_argument("--select-rates", type=float, nargs="+",
                        help="missing rates of selection under --select-condition frame (default: 0.0 0.1 ... 1.0)")
    parser.add_argument("--grad-clip", type=float, help="gradient-norm clipping (0 = off; default: the recipe's)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the recipe's (paper: its number of runs)")
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


def run(args: argparse.Namespace) -> int:
    """Train per seed (and per fold with --fold all), write bundles and summaries; print the test grid."""
    try:
        with one_line_warnings("affectflow train"):
            summary = _train(args)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"affectflow train: error: {error}", file=sys.stderr)
        return 2
    _report(summary, args.out)
    return 0


OWN_WARNINGS = (AbsentModalityWarning, UnlabelledSegmentsWarning)
"""The training harness's warnings that the CLI prints as one line each."""


@contextlib.contextmanager
def one_line_warnings(program: str) -> Iterator[None]:
    """Inside: affectflow's own warnings (`OWN_WARNINGS`) print as one line "<program>: warning: ..." on
    stderr, each time they happen (never deduplicated away); other warnings keep Python's format."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, OWN_WARNINGS):
            print(f"{program}: warning: {message}", file=sys.stderr, flush=True)
        else:
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        for category in OWN_WARNINGS:
            warnings.simplefilter("always", category)
        warnings.showwarning = show
        yield


def _train(args: argparse.Namespace) -> ExperimentSummary | CrossFoldSummary:
    """`train` called with the parsed arguments."""
    return train(
        args.manifest, args.features, args.model, out=args.out, task=args.task, label_column=args.label_column,
        classes=[c.strip() for c in args.classes.split(",")] if args.classes else None,
        modalities=args.modalities, recipe=args.recipe, budget=args.budget, level=args.level,
        frame_level=args.frame_level, normalize=not args.no_normalize, schedule=args.schedule,
        condition=args.condition, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, optimizer=args.optimizer, momentum=args.momentum, patience=args.patience,
        select_metric=args.select_metric, select_condition=args.select_condition, select_rates=args.select_rates,
        grad_clip=args.grad_clip, seeds=args.seeds, fold=args.fold, valid_fraction=args.valid_fraction,
        device=args.device, resume=args.resume, tiny=args.tiny, model_config=_model_config(args.model_config),
        feature_overrides=feature_overrides(args), missing_entries=args.missing_entries, threads=args.threads,
        progress=not args.no_progress, on_recipe=_announce)


def _announce(run: RecipeRun) -> None:
    """Print the recipe that is about to run (and where it departs from its paper)."""
    print(run.summary_line(), flush=True)
    for departure in run.recipe.departures:
        print(f"  departs from the paper: {departure}")


def _report(summary: ExperimentSummary | CrossFoldSummary, out: Path) -> None:
    """Print the selected seed(s), where the bundles are, and the test grid (mean ± std)."""
    metrics = CLASSIFICATION_METRICS if summary.kind == "classification" else REGRESSION_METRICS
    test = summary.test_summary
    bundles = out / ("fold-*/best" if isinstance(summary, CrossFoldSummary) else "best")
    print(f"{summary.model}: best seed {summary.best_seed} (validation {summary.select_metric} under "
          f"{summary.select_condition!r}); bundle: {bundles}")
    for condition in test:
        shown = ", ".join(f"{m} {format_mean_std(test, condition, m, 1.0 if m == 'mae' else 100.0)}"
                          for m in metrics[:4])
        print(f"  test {condition:>14}: {shown}")
