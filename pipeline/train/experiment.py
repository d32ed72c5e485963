"""One experiment end to end: splits -> datasets -> train per seed (validation selection) -> test grid.

Used by `affectflow train` and `scripts/bench_text_real.py`. The test split is touched only after
`Trainer.fit` has returned the selected weights; its metrics are reported, never compared.

Run folder layout (`run_experiment(..., out=RUN_DIR)`):
    RUN_DIR/seed-<s>/state/      resumable per-epoch state       RUN_DIR/seed-<s>/best/  bundle
    RUN_DIR/seed-<s>/result.json selected epoch, validation and test metrics of that seed
    RUN_DIR/best/                the bundle of the seed with the best validation score
    RUN_DIR/summary.json         every seed + mean/std of the test metrics per condition
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from affectflow.fusion.contract import TaskSpec
from affectflow.fusion.registry import create_fusion, fusion_class
from affectflow.extractors.spec import ExtractorSpec

from affectflow.pipeline.core.io import atomic_dir, to_jsonable, write_json
from affectflow.pipeline.core.names import MODALITY_NAMES
from affectflow.pipeline.train import evaluation
from affectflow.pipeline.train.checkpoint import read_bundle_info, save_bundle
from affectflow.pipeline.train.data import FeatureNormalizer, MultimodalDataset, class_names_from, make_loader, split_rows
from affectflow.pipeline.train.labels import UnlabelledSegments, find_unlabelled, labelled_rows, unlabelled_mask
from affectflow.pipeline.train.metrics import is_better
from affectflow.pipeline.train.results import ExperimentSummary, SeedResult, summarize_seeds
from affectflow.pipeline.train.schedules import TrainingSchedule
from affectflow.pipeline.train.trainer import TrainConfig, Trainer


class AbsentModalityWarning(UserWarning):
    """A modality the run was asked to use is missing in every training row (the model never sees it)."""


@dataclass
class ExperimentData:
    """Datasets of the three splits (normalised with train statistics) and what describes them."""

    task: TaskSpec
    train: MultimodalDataset
    valid: MultimodalDataset
    test: MultimodalDataset | None
    normalizer: FeatureNormalizer | None
    label_column: str
    frame_level: bool
    extractor_specs: dict[str, ExtractorSpec | None] = field(default_factory=dict)
    unlabelled: UnlabelledSegments = field(default_factory=UnlabelledSegments)
    """The manifest's segments without a label (left out at utterance level, unscored context at conversation level)."""


def build_task(kind: str, stores: dict, modalities: tuple[str, ...], class_names: tuple[str, ...] = (),
               level: str = "utterance", absent_dim: int = 1) -> TaskSpec:
    """TaskSpec with input dims read from the stores (`absent_dim` for modalities without a store)."""
    dims = {m: (stores[m].output_dim if stores.get(m) is not None else absent_dim) for m in modalities}
    return TaskSpec(kind=kind, input_dims=dims, class_names=tuple(class_names) if kind == "classification" else (),
                    level=level, modalities=tuple(modalities))


def check_labelled_splits(table: pd.DataFrame, label_column: str) -> None:
    """Raise ValueError naming the split when the train or the validation split has rows but no labelled one."""
    labelled_rows(split_rows(table, "train"), label_column, "train")
    labelled_rows(split_rows(table, "valid"), label_column, "validation")


def build_experiment(table: pd.DataFrame, stores: dict, kind: str, label_column: str,
                     modalities: tuple[str, ...], level: str = "utterance", frame_level: bool = False,
                     class_names: tuple[str, ...] | None = None, normalize: bool = True,
                     missing_entries: str = "error", with_test: bool = True) -> ExperimentData:
    """Split the manifest by its split column and build normalised datasets (stats from train only).

    Segments without a `label_column` label are left out at utterance level and kept as unscored
    dialogue context at conversation level (`ExperimentData.unlabelled` counts them); a train or
    validation split with no labelled segment raises ValueError.
    """
    train_rows, valid_rows = split_rows(table, "train"), split_rows(table, "valid")
    if train_rows.empty or valid_rows.empty:
        raise ValueError(f"the manifest needs train and validation rows (have {len(train_rows)} train, "
                         f"{len(valid_rows)} valid); use --fold for leave-one-session-out corpora")
    unlabelled = find_unlabelled(table, label_column)
    train_rows = labelled_rows(train_rows, label_column, "train", level)
    valid_rows = labelled_rows(valid_rows, label_column, "validation", level)
    if kind == "classification" and not class_names:
        class_names = class_names_from(train_rows, label_column)
    task = build_task(kind, stores, modalities, class_names or (), level)
    options = {"frame_level": frame_level, "missing_entries": missing_entries}
    train = MultimodalDataset(train_rows, stores, task, label_column, **options)
    warn_absent_modalities(train)
    normalizer = FeatureNormalizer.fit(train) if normalize else None
    train.normalizer = normalizer
    valid = MultimodalDataset(valid_rows, stores, task, label_column, normalizer=normalizer, **options)
    test = None
    if with_test:
        test_rows = split_rows(table, "test")
        if not unlabelled_mask(test_rows, label_column).all():  # a test split without labels is not scored
            test_rows = labelled_rows(test_rows, label_column, "test", level)
            test = MultimodalDataset(test_rows, stores, task, label_column, normalizer=normalizer, **options)
    specs = {m: (stores[m].spec if stores.get(m) is not None else None) for m in modalities}
    return ExperimentData(task, train, valid, test, normalizer, label_column, frame_level, specs, unlabelled)


def warn_absent_modalities(train: MultimodalDataset) -> list[str]:
    """Warn (AbsentModalityWarning, naming it) for each modality that no training row has; returns them.

    Training goes on (the other modalities still learn), but its test scores say nothing about that modality.
    """
    absent = [m for m in train.task.modalities if not train.has_modality(m)]
    for m in absent:
        store = train.stores.get(m)
        where = "no feature store" if store is None else f"store {store.root}"
        warnings.warn(AbsentModalityWarning(
            f"modality {m!r} ({MODALITY_NAMES.get(m, m)}) is missing in every one of the {len(train.segment_ids)} "
            f"training rows ({where}): the model never sees it, and test scores do not reflect it"), stacklevel=3)
    return absent


def model_config_for(name: str, config: dict | None, tiny: bool) -> dict:
    """Hyperparameters: the model's `tiny_config()` when asked, updated with explicit ones."""
    merged: dict[str, Any] = {}
    if tiny:
        merged.update(fusion_class(name).tiny_config())
    merged.update(config or {})
    return merged


def test_grid(model, data: ExperimentData, device, batch_size: int = 256, conditions: list[str] | None = None,
              removal: str = "presence", protocol: str = "fixed", seed: int = 0,
              select_metric: str | None = None) -> dict:
    """Test metrics per fixed condition (default: every condition of the task, + the incomplete average;
    `removal` says how a condition removes modalities). protocol "frame" adds DQF's frame protocol as
    rows "auilc_<combination>" and "auilc_mean" ({metric: AUILC}; masks drawn with `seed`)."""
    loader = make_loader(data.test, batch_size, shuffle=False)
    grid = evaluation.fixed_grid(model, loader, device, conditions, removal=removal)
    if protocol == "frame":
        metrics = tuple(dict.fromkeys((*evaluation.FRAME_METRICS[data.task.kind], *filter(None, [select_metric]))))
        frame = evaluation.frame_protocol(model, loader, device, metrics, seed=seed)
        grid.update(evaluation.auilc_scores(frame, metrics))
    elif protocol != "fixed":
        raise ValueError(f"unknown test protocol {protocol!r}; choose 'fixed' or 'frame'")
    return grid


def train_one(name: str, hyperparameters: dict, data: ExperimentData, schedule: TrainingSchedule,
              config: TrainConfig, device, run_dir: Path, resume: bool = False,
              test_conditions: list[str] | None = None, recipe: dict | None = None,
              test_protocol: str = "fixed") -> SeedResult:
    """Train one seed in `run_dir` (bundle at run_dir/best), then score its selected model on test
    (in `test_conditions`, default every fixed condition, + the frame protocol when `test_protocol` is
    "frame"); with `resume`, a finished seed is read back. `recipe` (a `RecipeRun.describe()`) is recorded
    in the bundle's `training`."""
    result_file = run_dir / "result.json"
    if resume and result_file.is_file():
        return SeedResult.from_dict(json.loads(result_file.read_text(encoding="utf-8")))
    torch.manual_seed(config.seed)
    model = create_fusion(name, data.task, **hyperparameters)
    bundle_dir = run_dir / "best"

    def save_best(model, record):
        training = {"schedule": schedule.describe(), "seed": config.seed, "selected": to_jsonable(record),
                    "select_metric": trainer.metric, "select_condition": trainer.valid_condition,
                    "removal": config.removal, "test_protocol": test_protocol}
        if recipe is not None:
            training["recipe"] = to_jsonable(recipe)
        save_bundle(bundle_dir, model, label_column=data.label_column, frame_level=data.frame_level,
                    extractor_specs=data.extractor_specs, normalizer=data.normalizer, training=training)

    trainer = Trainer(model, data.train, data.valid, schedule, config, device=device, run_dir=run_dir, on_best=save_best)
    fitted = trainer.fit(resume=resume)
    save_best(model, {"stage": fitted.selected_stage, "epoch": fitted.selected_epoch,
                      "score": fitted.selected_score, "valid": fitted.valid_metrics})
    result = SeedResult(seed=config.seed, model=name, selected_stage=fitted.selected_stage,
                        selected_epoch=fitted.selected_epoch, select_metric=fitted.select_metric,
                        valid_score=fitted.selected_score, valid=fitted.valid_metrics,
                        select_condition=trainer.valid_condition, history=fitted.history)
    if data.test is not None:
        result.test = test_grid(model, data, device, config.eval_batch_size, test_conditions, removal=config.removal,
                                protocol=test_protocol, seed=config.seed, select_metric=trainer.metric)
    write_json(result.to_dict(), result_file)
    return result


def run_experiment(name: str, hyperparameters: dict, data: ExperimentData,
                   schedule_factory: Callable[[], TrainingSchedule], config: TrainConfig, seeds: list[int],
                   out: str | Path, device="cpu", resume: bool = False,
                   test_conditions: list[str] | None = None, recipe: dict | None = None,
                   test_protocol: str = "fixed") -> ExperimentSummary:
    """Train `name` once per seed; copy the best-validation seed's bundle to out/best; write summary.json
    (with `recipe`, the record of the recipe that ran; `test_protocol` "frame" adds DQF's AUILC rows)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in seeds:
        seed_config = replace(config, seed=seed)
        schedule = schedule_factory()
        schedule.seed_with(seed)
        results.append(train_one(name, hyperparameters, data, schedule, seed_config, device,
                                 out / f"seed-{seed}", resume=resume, test_conditions=test_conditions,
                                 recipe=recipe, test_protocol=test_protocol))
    chosen = None
    for result in results:
        if chosen is None or is_better(result.select_metric, result.valid_score, chosen.valid_score):
            chosen = result
    with atomic_dir(out / "best") as staging:
        shutil.copytree(out / f"seed-{chosen.seed}" / "best", staging, dirs_exist_ok=True)
    read_bundle_info(out / "best")  # fail loudly if the copy is not a bundle
    summary = ExperimentSummary(
        model=name, hyperparameters=hyperparameters, task=data.task, schedule=schedule_factory().describe(),
        seeds=list(seeds), best_seed=chosen.seed, select_metric=chosen.select_metric,
        select_condition=chosen.select_condition, runs=results, test_summary=summarize_seeds(results), out=out,
        recipe=recipe, unlabelled_segments=data.unlabelled)
    write_json(summary.to_dict(), out / "summary.json")
    return summary
