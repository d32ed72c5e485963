"""Training harness: dataset and collation, schedules, protocols, trainer, experiments, evaluation, metrics, reports, bundles."""
