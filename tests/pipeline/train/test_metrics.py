"""Metrics against values computed by hand (see the comments for the arithmetic)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from affectflow.pipeline.train.metrics import (classification_metrics, compute_metrics, default_selection_metric,
                                         is_better, mean_std, regression_metrics, summarize_runs)


def test_classification_metrics_match_hand_computation():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    metrics = classification_metrics(y_true, y_pred, num_classes=3)
    # 4 of 6 correct; recalls 2/3, 1/2, 1/1; precisions 1, 1/2, 1/2; F1s 0.8, 0.5, 2/3.
    assert metrics["wa"] == pytest.approx(4 / 6)
    assert metrics["ua"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert metrics["per_class_recall"] == pytest.approx([2 / 3, 0.5, 1.0])
    assert metrics["num_samples"] == 6


def test_classification_metrics_keep_absent_classes_in_the_confusion_matrix():
    metrics = classification_metrics([0, 0, 1], [0, 1, 1], num_classes=4)
    assert np.array(metrics["confusion_matrix"]).shape == (4, 4)
    assert metrics["ua"] == pytest.approx((0.5 + 1.0) / 2)  # recall over classes present in y_true


def test_regression_metrics_match_hand_computation():
    y_true = np.array([-3.0, -1.2, 0.0, 0.4, 2.6, 1.5])
    y_pred = np.array([-2.5, 0.3, 0.2, -0.1, 3.4, 1.4])
    metrics = regression_metrics(y_true, y_pred)
    # |errors| = .5 1.5 .2 .5 .8 .1 -> 3.6 / 6
    assert metrics["mae"] == pytest.approx(0.6)
    # Acc7 on rounded clipped values: true -3 -1 0 0 3 2, pred -2 0 0 -0 3 1 -> 3 of 6 (half-to-even rounding)
    assert metrics["acc7"] == pytest.approx(0.5)
    # Acc5 clipped to [-2, 2]: true -2 -1 0 0 2 2, pred -2 0 0 -0 2 1 -> 4 of 6
    assert metrics["acc5"] == pytest.approx(4 / 6)
    # has-0: true>=0 F F T T T T, pred>=0 F T T F T T -> 4 of 6; F1(T)=0.75, F1(F)=0.5 -> (4*.75+2*.5)/6
    assert metrics["acc2_has0"] == pytest.approx(4 / 6)
    assert metrics["f1_has0"] == pytest.approx((4 * 0.75 + 2 * 0.5) / 6)
    # non-0 drops the exact zero: true>0 F F T T T, pred>0 F T F T T -> 3 of 5; F1(T)=2/3, F1(F)=1/2
    assert metrics["acc2_non0"] == pytest.approx(3 / 5)
    assert metrics["f1_non0"] == pytest.approx((3 * 2 / 3 + 2 * 0.5) / 5)
    centered_t, centered_p = y_true - y_true.mean(), y_pred - y_pred.mean()
    expected_r = (centered_t * centered_p).sum() / math.sqrt((centered_t ** 2).sum() * (centered_p ** 2).sum())
    assert metrics["corr"] == pytest.approx(expected_r)


def test_regression_edge_cases():
    constant = regression_metrics([1.0, -1.0, 2.0], [0.5, 0.5, 0.5])
    assert math.isnan(constant["corr"])  # undefined, not silently 0
    zeros = regression_metrics([0.0, 0.0], [0.1, -0.1])
    assert math.isnan(zeros["acc2_non0"]) and zeros["acc2_has0"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="finite"):
        regression_metrics([0.0, np.nan], [0.0, 0.0])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="differ in length"):
        classification_metrics([0, 1], [0], num_classes=2)
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 3], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="zero samples"):
        regression_metrics([], [])
    with pytest.raises(ValueError, match="num_classes"):
        compute_metrics("classification", [0], [0])
    with pytest.raises(ValueError, match="unknown task kind"):
        compute_metrics("ranking", [0], [0])


def test_selection_helpers():
    assert default_selection_metric("classification") == "weighted_f1"
    assert default_selection_metric("regression") == "mae"
    assert is_better("mae", 0.5, 0.6) and not is_better("mae", 0.7, 0.6)
    assert is_better("wa", 0.7, 0.6) and not is_better("wa", 0.6, 0.6)  # ties keep the earlier epoch
    assert not is_better("wa", float("nan"), 0.1) and is_better("wa", 0.1, None)


def test_mean_std_and_summary_over_seeds():
    assert mean_std([1.0, 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))
    assert mean_std([5.0]) == (5.0, 0.0)
    summary = summarize_runs([{"wa": 0.5, "confusion_matrix": [[1]]}, {"wa": 0.7, "confusion_matrix": [[2]]}])
    assert set(summary) == {"wa"}
    assert summary["wa"]["mean"] == pytest.approx(0.6) and summary["wa"]["values"] == [0.5, 0.7]
