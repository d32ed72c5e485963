"""Training harness: dataset and collation, schedules, protocols, trainer, experiments, evaluation, metrics,
reports, bundles; `train(...)` and `evaluate(...)` run the two jobs (what `affectflow train/evaluate` call)."""

from affectflow.pipeline.train.api import evaluate, train

__all__ = ["evaluate", "train"]
