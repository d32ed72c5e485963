"""Evaluation metrics of the papers' tables, computed with scikit-learn where it is exact.

Classification: WA (accuracy), UA (mean per-class recall), weighted F1, macro F1, confusion matrix.
Regression (sentiment in [-3, 3], the MMSA conventions the MOSI/MOSEI tables use):
MAE, Pearson correlation, Acc7 / Acc5 (predictions and targets clipped to [-3, 3] / [-2, 2] and
rounded with numpy's round-half-to-even), Acc2 and weighted F1 both "has-0" (>= 0 vs < 0, every
sample) and "non-0" (> 0 vs < 0, samples whose target is exactly 0 dropped).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

CLASSIFICATION_METRICS: tuple[str, ...] = ("wa", "ua", "weighted_f1", "macro_f1")
REGRESSION_METRICS: tuple[str, ...] = (
    "mae", "corr", "acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0",
)
LOWER_IS_BETTER: frozenset[str] = frozenset({"mae", "loss"})


def _as_1d(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    if y_true.shape != y_pred.shape:
        raise ValueError(f"targets {y_true.shape} and predictions {y_pred.shape} differ in length")
    if y_true.size == 0:
        raise ValueError("cannot compute metrics on zero samples")


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> dict:
    """WA / UA / weighted F1 / macro F1 (fractions in [0, 1]) and the [C, C] confusion matrix.

    y_true, y_pred: class indices [N] in [0, num_classes). UA averages recall over the classes
    present in y_true (= sklearn's balanced accuracy); F1s use sklearn's default label set (classes in
    y_true or y_pred). The confusion matrix rows are true classes, columns predictions.
    """
    y_true, y_pred = _as_1d("y_true", y_true).astype(np.int64), _as_1d("y_pred", y_pred).astype(np.int64)
    _check_pair(y_true, y_pred)
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.min() < 0 or values.max() >= num_classes:
            raise ValueError(f"{name} holds class indices outside [0, {num_classes})")
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score  # lazy: ~1 s to import

    labels = list(range(num_classes))
    return {
        "wa": float(accuracy_score(y_true, y_pred)),
        "ua": float(recall_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class_recall": [float(r) for r in recall_score(y_true, y_pred, labels=labels, average=None,
                                                            zero_division=0)],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "num_samples": int(y_true.size),
    }


def pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (the correlation is undefined)."""
    if np.std(y_true) == 0 or np.std(y_pred) == 0:
        return math.nan
    return float(np.corrcoef(y_pred, y_true)[0, 1])


def _rounded_accuracy(y_true: np.ndarray, y_pred: np.ndarray, bound: float) -> float:
    truth = np.round(np.clip(y_true, -bound, bound))
    prediction = np.round(np.clip(y_pred, -bound, bound))
    return float(np.mean(truth == prediction))


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict:
    """MAE, Pearson r, Acc7, Acc5, Acc2/F1 has-0 and non-0 for sentiment scores [N] in [-3, 3].

    Accuracies and F1 (weighted, as MMSA) are fractions in [0, 1]; non-0 metrics are NaN when
    every target is exactly 0.
    """
    y_true = _as_1d("y_true", y_true).astype(np.float64)
    y_pred = _as_1d("y_pred", y_pred).astype(np.float64)
    _check_pair(y_true, y_pred)
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise ValueError("regression targets and predictions must be finite (found NaN or inf)")
    from sklearn.metrics import accuracy_score, f1_score  # lazy: ~1 s to import

    truth_has0, prediction_has0 = y_true >= 0, y_pred >= 0
    non_zero = y_true != 0
    if non_zero.any():
        truth_non0, prediction_non0 = y_true[non_zero] > 0, y_pred[non_zero] > 0
        acc2_non0 = float(accuracy_score(truth_non0, prediction_non0))
        f1_non0 = float(f1_score(truth_non0, prediction_non0, average="weighted", zero_division=0))
    else:
        acc2_non0 = f1_non0 = math.nan
    return {
        "mae": float(np.mean(np.abs(y_true - y_pred))),
        "corr": pearson(y_true, y_pred),
        "acc7": _rounded_accuracy(y_true, y_pred, 3.0),
        "acc5": _rounded_accuracy(y_true, y_pred, 2.0),
        "acc2_has0": float(accuracy_score(truth_has0, prediction_has0)),
        "f1_has0": float(f1_score(truth_has0, prediction_has0, average="weighted", zero_division=0)),
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
        "num_samples": int(y_true.size),
    }


def compute_metrics(kind: str, y_true, y_pred, num_classes: int | None = None) -> dict:
    """Dispatch on the task kind: "classification" (class indices) or "regression" (scores)."""
    if kind == "classification":
        if num_classes is None:
            raise ValueError("classification metrics need num_classes")
        return classification_metrics(y_true, y_pred, num_classes)
    if kind == "regression":
        return regression_metrics(y_true, y_pred)
    raise ValueError(f"unknown task kind {kind!r}; use 'classification' or 'regression'")


def default_selection_metric(kind: str) -> str:
    """The validation metric used for model selection unless told otherwise."""
    return "weighted_f1" if kind == "classification" else "mae"


def is_better(metric: str, candidate: float, best: float | None) -> bool:
    """Whether `candidate` improves on `best` for `metric` (NaN never improves)."""
    if candidate is None or math.isnan(candidate):
        return False
    if best is None or math.isnan(best):
        return True
    return candidate < best if metric in LOWER_IS_BETTER else candidate > best


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value) of finite values."""
    array = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def summarize_runs(runs: Sequence[dict]) -> dict:
    """{metric: {"mean", "std", "values"}} over runs (dicts of scalar metrics; non-scalars skipped)."""
    if not runs:
        return {}
    names = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    summary = {}
    for name in names:
        values = [float(run[name]) for run in runs if name in run]
        mean, std = mean_std(values)
        summary[name] = {"mean": mean, "std": std, "values": values}
    return summary
