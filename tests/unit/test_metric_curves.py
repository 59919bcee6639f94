"""The curves behind the model report's figures: scikit-learn's, and consistent with the
metrics module's own figures (the ROC curve's area is ``roc_auc``, the reliability bins give back
the ECE)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from functions.shared.metrics import (
    average_precision,
    compute_metric,
    expected_calibration_error,
    precision_recall_curve,
    reliability_bins,
    roc_curve,
)


def _scores(seed: int, n: int = 500, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    score = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return y, np.round(score, 1) if ties else score


@pytest.mark.parametrize(("seed", "ties"), [(0, False), (1, True), (2, False)])
def test_roc_and_pr_curves_and_average_precision_match_sklearn(seed: int, ties: bool) -> None:
    y, score = _scores(seed, ties=ties)

    fpr, tpr, thresholds = roc_curve(y, score)
    sk_fpr, sk_tpr, sk_thresholds = skm.roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thresholds[1:])

    precision, recall, pr_thresholds = precision_recall_curve(y, score)
    sk_precision, sk_recall, sk_pr_thresholds = skm.precision_recall_curve(y, score)
    np.testing.assert_allclose(precision, sk_precision)
    np.testing.assert_allclose(recall, sk_recall)
    np.testing.assert_allclose(pr_thresholds, sk_pr_thresholds)

    assert average_precision(y, score) == pytest.approx(skm.average_precision_score(y, score))


@pytest.mark.parametrize("ties", [False, True])
def test_the_roc_curves_area_is_the_metrics_roc_auc(ties: bool) -> None:
    y, score = _scores(3, ties=ties)
    fpr, tpr, _ = roc_curve(y, score)
    proba = np.column_stack([1 - score, score])
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(
        compute_metric("roc_auc", y.astype(int), proba=proba), abs=1e-12
    )


def test_the_reliability_bins_give_back_the_ece() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(800, 3)) * 2
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in proba])

    bins = reliability_bins(y, proba)

    n = sum(bins["count"])
    ece = sum(
        c / n * abs(a - p)
        for c, a, p in zip(bins["count"], bins["accuracy"], bins["confidence"], strict=True)
    )
    assert n == len(y) and len(bins["edges"]) == len(bins["count"]) + 1
    assert ece == pytest.approx(expected_calibration_error(y, proba), abs=1e-12)


def test_a_class_without_positives_has_no_pr_curve_and_no_average_precision() -> None:
    y = np.zeros(10, dtype=bool)
    score = np.linspace(0, 1, 10)
    with pytest.raises(ValueError, match="at least one positive"):
        precision_recall_curve(y, score)
    assert np.isnan(average_precision(y, score))
    assert np.isnan(roc_curve(y, score)[1]).all()


@pytest.mark.parametrize(
    ("positive", "score", "message"),
    [
        (np.array([1, 0]), np.array([0.1, 0.2]), "boolean"),
        (np.array([True, False]), np.array([0.1]), "different shapes"),
        (np.array([True, False]), np.array([0.1, np.nan]), "finite"),
    ],
)
def test_malformed_curve_input_is_refused_naming_the_problem(
    positive: np.ndarray, score: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        roc_curve(positive, score)
