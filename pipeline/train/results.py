"""Typed results of training runs: one seed, one experiment (all seeds), a cross-fold run (all folds).

Each has `to_dict()` giving the JSON written to disk (RUN_DIR/seed-<s>/result.json, RUN_DIR/summary.json);
`SeedResult.from_dict` reads a finished seed back (resume). Test summaries are
{condition: {metric: {"mean", "std", "values"}}} (see `affectflow.pipeline.train.metrics.summarize_runs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from affectflow.fusion.contract import TaskSpec
from affectflow.pipeline.train.labels import UnlabelledSegments
from affectflow.pipeline.train.metrics import summarize_runs

TestSummary = dict[str, dict[str, dict[str, Any]]]
"""{condition: {metric: {"mean", "std", "values"}}}."""


@dataclass
class SeedResult:
    """One trained seed: the selected epoch, its validation metrics and (with a test split) its test grid.

    valid: scalar validation metrics of the selected epoch; test: {condition: metrics} or None;
    history: one record per trained epoch ({"stage", "epoch", "train", "valid"}).
    """

    seed: int
    model: str
    selected_stage: str
    selected_epoch: int
    select_metric: str
    valid_score: float
    valid: dict[str, Any]
    select_condition: str
    history: list[dict] = field(default_factory=list)
    test: dict[str, dict] | None = None

    def to_dict(self, with_history: bool = True) -> dict[str, Any]:
        """The JSON of result.json (`with_history=False`: the entry of summary.json's "runs")."""
        data: dict[str, Any] = {
            "seed": self.seed, "model": self.model, "selected_stage": self.selected_stage,
            "selected_epoch": self.selected_epoch, "select_metric": self.select_metric,
            "valid_score": self.valid_score, "valid": self.valid, "select_condition": self.select_condition}
        if with_history:
            data["history"] = self.history
        if self.test is not None:
            data["test"] = self.test
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SeedResult":
        """Inverse of `to_dict` (a result.json of a finished seed)."""
        try:
            return cls(seed=int(data["seed"]), model=data["model"], selected_stage=data["selected_stage"],
                       selected_epoch=int(data["selected_epoch"]), select_metric=data["select_metric"],
                       valid_score=data["valid_score"], valid=dict(data["valid"]),
                       select_condition=data["select_condition"], history=list(data.get("history") or []),
                       test=data.get("test"))
        except KeyError as error:
            raise ValueError(f"seed result lacks the field {error.args[0]!r}") from None


def summarize_seeds(results: list[SeedResult]) -> TestSummary:
    """{condition: {metric: {mean, std, values}}} of the test grids over seeds ({} without test grids)."""
    grids = [r.test for r in results if r.test]
    if not grids:
        return {}
    return {condition: summarize_runs([grid[condition] for grid in grids]) for condition in grids[0]}


@dataclass
class ExperimentSummary:
    """Every seed of one training run, the best-validation seed and the test metrics over seeds."""

    model: str
    hyperparameters: dict[str, Any]
    task: TaskSpec
    schedule: dict[str, Any]
    seeds: list[int]
    best_seed: int
    select_metric: str
    select_condition: str
    runs: list[SeedResult]
    test_summary: TestSummary
    out: Path | None = None
    """The run folder (bundle at out/best); not part of summary.json."""
    recipe: dict[str, Any] | None = None
    """What `RecipeRun.describe()` recorded about the recipe that ran (None: not recorded)."""
    unlabelled_segments: UnlabelledSegments = field(default_factory=UnlabelledSegments)
    """The manifest's segments without a label (not trained or scored on)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON of summary.json."""
        return {"model": self.model, "hyperparameters": self.hyperparameters, "task": self.task.to_dict(),
                "schedule": self.schedule, "seeds": list(self.seeds), "best_seed": self.best_seed,
                "select_metric": self.select_metric, "select_condition": self.select_condition,
                "runs": [run.to_dict(with_history=False) for run in self.runs],
                "test_summary": self.test_summary, "unlabelled_segments": self.unlabelled_segments.to_dict(),
                **({"recipe": self.recipe} if self.recipe is not None else {})}

    @property
    def kind(self) -> str:
        """The task kind: 'classification' or 'regression'."""
        return self.task.kind


def cross_fold_summary(summaries: dict[str, ExperimentSummary]) -> TestSummary:
    """{condition: {metric: {mean, std, values}}} over folds of each fold's seed-mean test metrics."""
    per_fold = [{c: {m: v["mean"] for m, v in metrics.items()} for c, metrics in s.test_summary.items()}
                for s in summaries.values()]
    conditions = per_fold[0].keys() if per_fold else []
    return {c: summarize_runs([fold[c] for fold in per_fold]) for c in conditions}


@dataclass
class CrossFoldSummary:
    """Leave-one-session-out over every session: one `ExperimentSummary` per fold, test metrics over folds."""

    model: str
    folds: dict[str, ExperimentSummary]
    unlabelled_segments: UnlabelledSegments = field(default_factory=UnlabelledSegments)
    """The manifest's segments without a label (not trained or scored on in any fold)."""

    @property
    def select_metric(self) -> str:
        return next(iter(self.folds.values())).select_metric

    @property
    def select_condition(self) -> str:
        return next(iter(self.folds.values())).select_condition

    @property
    def kind(self) -> str:
        """The task kind: 'classification' or 'regression'."""
        return next(iter(self.folds.values())).kind

    @property
    def best_seed(self) -> dict[str, int]:
        """{fold: best-validation seed}."""
        return {fold: summary.best_seed for fold, summary in self.folds.items()}

    @property
    def test_summary(self) -> TestSummary:
        """Mean ± std over folds of each fold's seed-mean test metrics."""
        return cross_fold_summary(self.folds)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of the cross-fold summary.json."""
        return {"model": self.model, "folds": {str(f): s.test_summary for f, s in self.folds.items()},
                "best_seed": {str(f): seed for f, seed in self.best_seed.items()},
                "select_metric": self.select_metric, "select_condition": self.select_condition,
                "test_summary": self.test_summary, "unlabelled_segments": self.unlabelled_segments.to_dict()}


def format_mean_std(summary: TestSummary, condition: str, metric: str, scale: float = 100.0) -> str:
    """'61.20 ± 0.45' for a metric of a test summary (fractions scaled by `scale`); 'n/a' when absent."""
    entry = summary.get(condition, {}).get(metric)
    if not entry or entry["mean"] is None or (isinstance(entry["mean"], float) and math.isnan(entry["mean"])):
        return "n/a"
    return f"{entry['mean'] * scale:.2f} ± {entry['std'] * scale:.2f}"
