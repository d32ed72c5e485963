"""`train(...)` and `evaluate(...)`: the library functions behind `affectflow train` / `affectflow evaluate`.

    from affectflow.pipeline.train.api import train
    summary = train("meld.parquet", "features/", "mult", label_column="emotion", schedule="random",
                    epochs=30, seeds=(1, 2, 3), out="runs/meld-mult")
    summary.test_summary["atv"]["weighted_f1"]["mean"]

    train("iemocap.parquet", "features/", "dqf", recipe="paper", fold="all", out="runs/iemocap-dqf")
    train("mosi.parquet", "features/", "cmarr", recipe="paper", budget=0.1, lr=1e-4, out="runs/mosi-cmarr")

A recipe (`affectflow.pipeline.train.recipes`: "default" quick settings, or the model's "paper" recipe)
supplies every training option left None; explicit options override single items, `budget` scales every
stage's epochs, and the bundle's `training["recipe"]` and OUT/summary.json record what ran.

Writes OUT/best (bundle), OUT/summary.json, OUT/config.json (the call's parameters) and
OUT/test_grid_<metric>.csv (seed means: rows = model, columns = conditions). With `fold="all"` every
session is a leave-one-session-out fold in OUT/fold-<session>/ and OUT/summary.json holds the mean ± std
over folds.

Segments without a label in the label column are left out (utterance level) or kept as unscored dialogue
context (conversation level): one `UnlabelledSegmentsWarning` says how many (first ids), and summary.json /
report.json record {"count", "ids"} as "unlabelled_segments"; a train or validation split (evaluate: the
scored split) with no labelled segment raises ValueError.

    report = evaluate(["runs/meld-mult", "runs/meld-dqf/best"], "meld.parquet", "features/",
                      protocols="all", out="reports/meld")
    report.models["mult"].fixed["avg_incomplete"]["wa"]

Scores bundles under the missing-modality protocols (fixed, random, frame; "all" = every one) and writes
OUT/report.json, fixed_<metric>.csv, random.csv, auilc_<pattern>_<fill>_<metric>.csv and the PNGs
(confusion_<model>.png for classification, auilc_<model>_<pattern>_<fill>.png).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from torch.utils.data import DataLoader

from affectflow.pipeline.core.devices import resolve_device
from affectflow.pipeline.core.manifest import read_manifest
from affectflow.pipeline.train import evaluation
from affectflow.pipeline.train.checkpoint import BundleInfo, load_bundle, read_bundle_info
from affectflow.pipeline.train.data import (MultimodalDataset, leave_one_session_out, make_loader, open_feature_stores,
                                            session_folds, split_rows)
from affectflow.pipeline.train.experiment import (build_experiment, check_labelled_splits, model_config_for,
                                                  run_experiment)
from affectflow.pipeline.train.labels import UnlabelledSegments, find_unlabelled, labelled_rows, warn_unlabelled
from affectflow.pipeline.train.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from affectflow.pipeline.train.protocols import (FRAME_FILLS, FRAME_PATTERNS, FRAME_RATES, RANDOM_PROTOCOL_SEED,
                                                 condition_name, parse_condition)
from affectflow.pipeline.core.io import write_json
from affectflow.pipeline.train.recipes import RecipeRun, feature_level_of, registered_recipe, resolve_recipe
from affectflow.pipeline.train.reports import auilc_table, plot_auilc_curves, plot_confusion_matrix, write_condition_grid
from affectflow.pipeline.train.results import CrossFoldSummary, ExperimentSummary
from affectflow.pipeline.train.schedules import TrainingSchedule, make_schedule
from affectflow.pipeline.train.trainer import TrainConfig
from affectflow.pipeline.train.evaluation import FRAME_METRICS

ALL_FOLDS = "all"
DEFAULT_LABEL_COLUMNS = {"classification": "emotion", "regression": "sentiment"}


def apply_threads(threads: int | None) -> None:
    """Use `threads` torch CPU threads (None: torch's choice). Small models on a busy CPU run much
    faster on one thread."""
    if threads:
        torch.set_num_threads(int(threads))


def feature_stores(features: str | Path | None, overrides: dict[str, str | Path] | None = None,
                   expected: dict | None = None) -> dict:
    """{modality: FeatureStore} from a features folder and/or explicit per-modality stores; raises
    ValueError when none is found (`expected` extractor specs choose among several stores)."""
    stores = open_feature_stores(features, overrides, expected=expected)
    if not stores:
        raise ValueError("no feature store found: give a features folder (--features DIR) or per-modality "
                         "stores (--features-a/-t/-v STORE)")
    return stores


def _table(manifest: str | Path | pd.DataFrame) -> pd.DataFrame:
    return manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)


def _modalities(modalities: str | Sequence[str] | None, stores: dict) -> tuple[str, ...]:
    """The task's modalities (default: every modality with a store); each needs a store."""
    chosen = parse_condition(modalities) if modalities else tuple(m for m in "atv" if m in stores)
    lacking = [m for m in chosen if m not in stores]
    if lacking:
        raise ValueError(f"no feature store for modalities {lacking} (found {sorted(stores)})")
    return chosen


@dataclass
class _Plan:
    """What every fold of one `train` call shares: data options, model, recipe, loop settings."""

    model: str
    hyperparameters: dict[str, Any]
    stores: dict
    task: str
    label_column: str
    modalities: tuple[str, ...]
    classes: tuple[str, ...] | None
    normalize: bool
    missing_entries: str
    recipe: RecipeRun
    config: TrainConfig
    device: torch.device
    resume: bool

    def make_schedule(self) -> TrainingSchedule:
        """A fresh schedule (one per seed: schedules keep per-epoch state)."""
        return make_schedule(self.recipe.recipe.schedule_name, condition=self.recipe.recipe.condition)

    def run(self, table: pd.DataFrame, out: Path) -> ExperimentSummary:
        """Every seed of the recipe on the splits of `table`, in `out`."""
        recipe = self.recipe.recipe
        data = build_experiment(table, self.stores, self.task, self.label_column, self.modalities, level=recipe.level,
                                frame_level=recipe.frame_level, class_names=self.classes, normalize=self.normalize,
                                missing_entries=self.missing_entries)
        return run_experiment(self.model, self.hyperparameters, data, self.make_schedule, self.config,
                              list(recipe.seeds), out, device=self.device, resume=self.resume,
                              recipe=self.recipe.describe(), test_protocol=recipe.evaluation)


def train(manifest: str | Path | pd.DataFrame, features: str | Path | None, model: str, *,
          out: str | Path, task: str = "classification", label_column: str | None = None,
          classes: Sequence[str] | None = None, modalities: str | Sequence[str] | None = None,
          recipe: str = "default", budget: float | None = None,
          level: str | None = None, frame_level: bool | None = None, normalize: bool = True,
          schedule: str | None = None, condition: str | None = None, epochs: int | None = None,
          batch_size: int | None = None, lr: float | None = None, weight_decay: float | None = None,
          optimizer: str | None = None, momentum: float | None = None, patience: int | None = None,
          select_metric: str | None = None, select_condition: str | None = None,
          select_rates: Sequence[float] | None = None, grad_clip: float | None = None,
          seeds: Sequence[int] | None = None, fold: str | None = None, valid_fraction: float = 0.1,
          device: str | torch.device = "auto", resume: bool = False, tiny: bool = False,
          model_config: dict[str, Any] | None = None, feature_overrides: dict[str, str | Path] | None = None,
          missing_entries: str = "error", threads: int | None = None, progress: bool = True,
          on_recipe: Callable[[RecipeRun], None] | None = None) -> ExperimentSummary | CrossFoldSummary:
    """Train fusion model `model` once per seed on the manifest's splits (or leave-one-session-out folds),
    select on validation only, score the test split; see the module docstring for what is written.

    recipe: "default" (quick settings) or "paper" (the model's paper recipe, `affectflow.pipeline.train.
    recipes`); every option left None comes from it, an explicit one overrides that item and is recorded.
    budget (0 < F <= 1): every stage's epochs times F (at least 1). patience / grad_clip 0: off.
    fold: None (the manifest's split column), a session name (that session is test, a `valid_fraction`
    carve-out of the others' dialogues is valid) or "all" (every session in turn; a `CrossFoldSummary`).
    on_recipe: called with the resolved recipe before any data is read (the CLI prints it).
    """
    parameters = dict(locals())  # every argument, recorded in OUT/config.json
    parameters.pop("on_recipe")
    apply_threads(threads)
    registered = registered_recipe(model, recipe)  # fails on an unknown model or recipe before any data is read
    overrides = {"schedule": schedule, "condition": condition, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                 "weight_decay": weight_decay, "optimizer": optimizer, "momentum": momentum, "patience": patience,
                 "select_metric": select_metric, "select_condition": select_condition, "grad_clip": grad_clip,
                 "select_rates": tuple(float(r) for r in select_rates) if select_rates else None,
                 "seeds": tuple(seeds) if seeds else None,
                 "feature_level": feature_level_of(level, frame_level, registered.feature_level)}
    run = resolve_recipe(model, recipe, overrides, budget)
    make_schedule(run.recipe.schedule_name, condition=run.recipe.condition)
    if on_recipe is not None:
        on_recipe(run)
    table, stores = _table(manifest), feature_stores(features, feature_overrides)
    plan = _Plan(model=model, hyperparameters=model_config_for(model, model_config, tiny), stores=stores,
                 task=task, label_column=label_column or DEFAULT_LABEL_COLUMNS[task],
                 modalities=_modalities(modalities, stores), classes=tuple(classes) if classes else None,
                 normalize=normalize, missing_entries=missing_entries, recipe=run,
                 config=run.config(progress=progress), device=resolve_device(device), resume=resume)
    if fold == ALL_FOLDS:
        splits = {str(session): leave_one_session_out(table, session, valid_fraction=valid_fraction)
                  for session in session_folds(table)}
    else:
        splits = {"": table if fold is None else leave_one_session_out(table, fold, valid_fraction=valid_fraction)}
    for split_table in splits.values():  # refuse before anything is trained or announced
        check_labelled_splits(split_table, plan.label_column)
    unlabelled = find_unlabelled(table, plan.label_column)
    warn_unlabelled(unlabelled, len(table), plan.label_column, run.recipe.level)
    out = Path(out)
    if fold == ALL_FOLDS:
        folds = {session: plan.run(split_table, out / f"fold-{session}") for session, split_table in splits.items()}
        result: ExperimentSummary | CrossFoldSummary = CrossFoldSummary(model, folds, unlabelled)
        write_json(result.to_dict(), out / "summary.json")
    else:
        result = plan.run(splits[""], out)
    parameters.update(manifest="<DataFrame>" if isinstance(manifest, pd.DataFrame) else manifest, device=str(device),
                      recipe_run=run.describe())
    write_json(parameters, out / "config.json")
    write_test_grid(result, out)
    return result


def write_test_grid(summary: ExperimentSummary | CrossFoldSummary, out: str | Path) -> None:
    """OUT/test_grid.json and OUT/test_grid_<metric>.csv: the test means (rows = model, columns =
    conditions); nothing when the run had no test split."""
    test = summary.test_summary
    if not test:
        return
    metrics = CLASSIFICATION_METRICS if summary.kind == "classification" else REGRESSION_METRICS
    means = {summary.model: {c: {m: v["mean"] for m, v in values.items()} for c, values in test.items()}}
    write_condition_grid(means, out, metrics, stem="test_grid")


# --- evaluate ----------------------------------------------------------------------------------------
PROTOCOLS = ("fixed", "random", "frame")


@dataclass(frozen=True)
class ProtocolSettings:
    """Which protocols to run and how: random (seed, complete pattern allowed?), frame (patterns, fills,
    rates, seed, whether masked frames are also marked invalid)."""

    protocols: tuple[str, ...] = ("fixed",)
    random_seed: int = RANDOM_PROTOCOL_SEED
    include_complete: bool = False
    frame_patterns: tuple[str, ...] = ("random",)
    frame_fills: tuple[str, ...] = ("zeros",)
    rates: tuple[float, ...] = FRAME_RATES
    frame_seed: int = 0
    mark_invalid: bool = False

    def __post_init__(self) -> None:
        for kind, given, known in (("protocol", self.protocols, PROTOCOLS), ("frame pattern", self.frame_patterns,
                                   FRAME_PATTERNS), ("frame fill", self.frame_fills, FRAME_FILLS)):
            unknown = [name for name in given if name not in known]
            if unknown or not given:
                raise ValueError(f"unknown {kind} {unknown or given!r}; choose from {list(known)}")


def protocol_names(protocols: str | Sequence[str]) -> tuple[str, ...]:
    """'all' -> every protocol; 'fixed' -> ('fixed',); a sequence is kept (in its order)."""
    if isinstance(protocols, str):
        return PROTOCOLS if protocols == "all" else (protocols,)
    return PROTOCOLS if list(protocols) == ["all"] else tuple(protocols)


@dataclass
class BundleEvaluation:
    """One bundle's results; a protocol not run is None.

    fixed: {condition: metrics} (+ "avg_incomplete"); random: metrics; frame: {"<pattern>_<fill>":
    `evaluation.frame_protocol` result (curves + "auilc")}.
    """

    checkpoint: Path
    architecture: str
    training: dict[str, Any]
    fixed: dict[str, dict] | None = None
    random: dict[str, Any] | None = None
    frame: dict[str, dict] | None = None
    unlabelled_segments: UnlabelledSegments = field(default_factory=UnlabelledSegments)
    """The split's segments without a label in the bundle's label column (not scored)."""

    def to_dict(self) -> dict[str, Any]:
        """This bundle's entry in report.json (only the protocols that ran)."""
        data: dict[str, Any] = {"checkpoint": str(self.checkpoint), "architecture": self.architecture,
                                "training": self.training, "unlabelled_segments": self.unlabelled_segments.to_dict()}
        for name, value in (("fixed", self.fixed), ("random", self.random), ("frame", self.frame)):
            if value is not None:
                data[name] = value
        return data


@dataclass
class EvaluationReport:
    """Every bundle's results on one split: `models` maps a row name (architecture, made unique) to them."""

    split: str
    protocols: tuple[str, ...]
    kind: str
    models: dict[str, BundleEvaluation]

    def to_dict(self) -> dict[str, Any]:
        """The report.json content."""
        return {"split": self.split, "protocols": list(self.protocols),
                "models": {name: result.to_dict() for name, result in self.models.items()}}

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric names of this task kind (the first is the headline metric)."""
        return tuple(CLASSIFICATION_METRICS if self.kind == "classification" else REGRESSION_METRICS)

    def fixed_table(self) -> pd.DataFrame:
        """rows = models, columns = fixed conditions: the headline metric, rounded to 4 digits."""
        headline = self.metrics[0]
        grids = pd.DataFrame({name: result.fixed for name, result in self.models.items() if result.fixed is not None})
        return grids.map(lambda m: round(m.get(headline, float("nan")), 4) if isinstance(m, dict) else m).T


def bundle_path(path: str | Path) -> Path:
    """A bundle folder, or a run folder holding best/ -> the bundle folder."""
    path = Path(path)
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


@dataclass
class _FeatureSource:
    """Where `evaluate` reads features and which rows it scores."""

    table: pd.DataFrame
    features: str | Path | None
    overrides: dict[str, str | Path] | None
    split: str
    missing_entries: str
    batch_size: int

    def unlabelled(self, info: BundleInfo) -> tuple[UnlabelledSegments, int]:
        """The split's segments without a label in the bundle's label column, and the split's size;
        raises ValueError when the split has no row or no labelled one."""
        rows = split_rows(self.table, self.split)
        if rows.empty:
            raise ValueError(f"the manifest has no {self.split!r} rows")
        labelled_rows(rows, info.label_column, self.split)
        return find_unlabelled(rows, info.label_column), len(rows)

    def loader(self, info: BundleInfo) -> DataLoader:
        """The split's scorable rows (labelled; at conversation level every row, unlabelled ones as context)
        with the stores matching the bundle's extractors, normalised like in training."""
        stores = feature_stores(self.features, self.overrides, expected=info.extractor_specs)
        stores = {m: stores.get(m) for m in info.task_spec.modalities}
        info.check_stores(stores)
        for m, store in stores.items():
            if store is None and info.extractor_specs.get(m) is not None:
                raise ValueError(f"no feature store for modality {m!r} matching the bundle's extractor "
                                 f"{info.extractor_specs[m].name} config {info.extractor_specs[m].config_hash}")
        rows = split_rows(self.table, self.split)
        if rows.empty:
            raise ValueError(f"the manifest has no {self.split!r} rows")
        rows = labelled_rows(rows, info.label_column, self.split, info.task_spec.level)
        dataset = MultimodalDataset(rows, stores, info.task_spec, info.label_column, frame_level=info.frame_level,
                                    normalizer=info.normalizer, missing_entries=self.missing_entries)
        return make_loader(dataset, self.batch_size, shuffle=False)


def evaluate_bundle(path: Path, name: str, source: _FeatureSource, settings: ProtocolSettings, device: torch.device,
                    out: Path) -> BundleEvaluation:
    """Every requested protocol for one bundle; writes its PNGs into `out` (row name `name`)."""
    model, info = load_bundle(path, device=device)
    loader = source.loader(info)
    kind = info.task_spec.kind
    result = BundleEvaluation(path, info.architecture, info.training, unlabelled_segments=source.unlabelled(info)[0])
    if "fixed" in settings.protocols:
        # A bundle trained on DQF's frame path is scored on it (its training record says so).
        removal = (info.training or {}).get("removal", "presence")
        result.fixed = evaluation.fixed_grid(model, loader, device, removal=removal)
        complete = condition_name(info.task_spec.modalities)
        if kind == "classification":
            plot_confusion_matrix(result.fixed[complete]["confusion_matrix"], info.class_names,
                                  out / f"confusion_{name}.png", title=f"{name} {{{','.join(complete)}}}")
    if "random" in settings.protocols:
        transform = evaluation.random_transform(info.task_spec.level, settings.random_seed, settings.include_complete)
        result.random = evaluation.score_loader(model, loader, device, transform)[0]
    if "frame" in settings.protocols:
        result.frame = {}
        for pattern in settings.frame_patterns:
            for fill in settings.frame_fills:
                frame = evaluation.frame_protocol(model, loader, device, FRAME_METRICS[kind], pattern=pattern,
                                                  fill=fill, rates=list(settings.rates), seed=settings.frame_seed,
                                                  mark_invalid=settings.mark_invalid)
                result.frame[f"{pattern}_{fill}"] = frame
                plot_auilc_curves(frame, FRAME_METRICS[kind], out / f"auilc_{name}_{pattern}_{fill}.png", title=name)
    return result


def write_evaluation_tables(report: EvaluationReport, out: str | Path) -> None:
    """fixed_<metric>.csv (+ fixed.json), random.csv and auilc_<pattern>_<fill>_<metric>.csv in `out`."""
    out, results = Path(out), report.models
    if "fixed" in report.protocols:
        write_condition_grid({n: r.fixed for n, r in results.items()}, out, report.metrics, stem="fixed")
    if "random" in report.protocols:
        table = pd.DataFrame({n: evaluation.scalar_metrics(r.random) for n, r in results.items()}).T
        table.index.name = "model"
        table.to_csv(out / "random.csv", float_format="%.4f")
    if "frame" in report.protocols:
        for setting in next(iter(results.values())).frame:
            for metric in FRAME_METRICS[report.kind]:
                table = auilc_table({n: r.frame[setting] for n, r in results.items()}, metric)
                table.to_csv(out / f"auilc_{setting}_{metric}.csv", float_format="%.4f")


def evaluate(checkpoints: str | Path | Sequence[str | Path], manifest: str | Path | pd.DataFrame,
             features: str | Path | None = None, *, out: str | Path,
             protocols: str | Sequence[str] = ("fixed",), split: str = "test",
             random_seed: int = RANDOM_PROTOCOL_SEED, include_complete: bool = False,
             frame_patterns: Sequence[str] = ("random",), frame_fills: Sequence[str] = ("zeros",),
             rates: Sequence[float] = FRAME_RATES, frame_seed: int = 0, mark_invalid: bool = False,
             batch_size: int = 32, device: str | torch.device = "auto",
             feature_overrides: dict[str, str | Path] | None = None, missing_entries: str = "error",
             threads: int | None = None) -> EvaluationReport:
    """Score checkpoint bundles (or run folders holding best/) on one split under the missing-modality
    protocols ("all" = fixed, random and frame); writes report.json, CSV grids and PNGs into `out`.

    Every bundle reads the feature stores matching its recorded extractors (another config raises).
    """
    apply_threads(threads)
    settings = ProtocolSettings(protocol_names(protocols), random_seed, include_complete, tuple(frame_patterns),
                                tuple(frame_fills), tuple(float(r) for r in rates), frame_seed, mark_invalid)
    paths = [bundle_path(p) for p in ([checkpoints] if isinstance(checkpoints, (str, Path)) else checkpoints)]
    if not paths:
        raise ValueError("no checkpoint given to evaluate")
    infos = [read_bundle_info(p) for p in paths]
    for path, info in zip(paths, infos):
        if info.label_column is None:
            raise ValueError(f"bundle {path} records no label column: there is nothing to score it against")
    kinds = {info.task_spec.kind for info in infos}
    if len(kinds) > 1:
        raise ValueError(f"checkpoints mix task kinds {sorted(kinds)}; evaluate them separately")
    out, device = Path(out), resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    source = _FeatureSource(_table(manifest), features, feature_overrides, split, missing_entries, batch_size)
    names = _row_names(paths, [info.architecture for info in infos])
    for label_column, info in {info.label_column: info for info in infos}.items():  # one line per label column
        warn_unlabelled(*source.unlabelled(info), label_column, info.task_spec.level)
    results = {name: evaluate_bundle(path, name, source, settings, device, out) for name, path in zip(names, paths)}
    report = EvaluationReport(split, settings.protocols, kinds.pop(), results)
    write_json(report.to_dict(), out / "report.json")
    write_evaluation_tables(report, out)
    return report
