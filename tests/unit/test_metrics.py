"""Tests for functions.shared.metrics: parity with scikit-learn and edge-case behaviour."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn import metrics as skm

from functions.shared.metrics import (
    BOOTSTRAP_SEED,
    METRICS,
    MetricInfo,
    Task,
    UnknownMetricError,
    bootstrap_interval,
    bootstrap_resamples,
    brier_score,
    classification_report,
    compute_metric,
    expected_calibration_error,
    metric_info,
    regression_report,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSIFICATION = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "log_loss")
REGRESSION = ("rmse", "mae", "r2")


def _sk(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Call a scikit-learn reference metric, silencing its UndefinedMetric/UserWarnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(*args, **kwargs))


def _sk_classification(name: str, y: NDArray[Any], proba: NDArray[Any]) -> float:
    """scikit-learn value for `name`, using the argument choices metrics.py documents."""
    k = proba.shape[1]
    labels = list(range(k))
    y_hat = proba.argmax(axis=1)
    if name == "accuracy":
        return _sk(skm.accuracy_score, y, y_hat)
    if name in ("f1_macro", "precision_macro", "recall_macro"):
        fn = {
            "f1_macro": skm.f1_score,
            "precision_macro": skm.precision_score,
            "recall_macro": skm.recall_score,
        }[name]
        return _sk(fn, y, y_hat, average="macro", labels=labels, zero_division=0)
    if name == "log_loss":
        return _sk(skm.log_loss, y, proba, labels=labels)
    if k == 2:
        return _sk(skm.roc_auc_score, y, proba[:, 1])
    present = np.unique(y)
    if present.size < 2:
        return math.nan
    if present.size == k:
        return _sk(skm.roc_auc_score, y, proba, multi_class="ovr", average="macro")
    # Absent classes are skipped: mean of one-vs-rest AUCs of the present classes.
    return float(np.mean([_sk(skm.roc_auc_score, y == c, proba[:, c]) for c in present]))


def _random_proba(rng: np.random.Generator, n: int, k: int) -> NDArray[np.float64]:
    return rng.dirichlet(np.ones(k), size=n)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_binary_classification_matches_sklearn(seed: int, name: str) -> None:
    # Given seeded binary labels and probabilities
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=500)
    proba = _random_proba(rng, 500, 2)
    # When the metric is computed
    got = compute_metric(name, y, proba=proba)
    # Then it equals scikit-learn's value
    assert got == pytest.approx(_sk_classification(name, y, proba), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_multiclass_matches_sklearn(seed: int, name: str) -> None:
    # Given seeded labels over K=4 classes, all present
    rng = np.random.default_rng(100 + seed)
    y = rng.integers(0, 4, size=700)
    proba = _random_proba(rng, 700, 4)
    # When / Then
    got = compute_metric(name, y, proba=proba)
    assert got == pytest.approx(_sk_classification(name, y, proba), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_multiclass_with_absent_class_matches_sklearn(name: str) -> None:
    # Given K=4 where class 3 never occurs in y_true and is never predicted
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, size=400)
    proba = _random_proba(rng, 400, 4)
    proba[:, 3] *= 0.01
    proba /= proba.sum(axis=1, keepdims=True)
    assert not np.any(proba.argmax(axis=1) == 3)
    # When
    got = compute_metric(name, y, proba=proba)
    # Then it matches sklearn (labels=range(4); AUC averages the 3 present classes)
    expected = _sk_classification(name, y, proba)
    assert math.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_macro_average_counts_absent_class_as_zero() -> None:
    # Given perfect predictions over classes 0..2 but K=4 columns
    y = np.array([0, 1, 2, 0])
    proba = np.eye(4)[y]
    # When / Then: class 3 contributes 0 to the macro average, as sklearn with labels=range(4)
    assert compute_metric("precision_macro", y, proba=proba) == pytest.approx(0.75)
    assert compute_metric("f1_macro", y, proba=proba) == pytest.approx(0.75)
    assert compute_metric("accuracy", y, proba=proba) == 1.0


@pytest.mark.parametrize("k", [2, 4])
def test_roc_auc_with_tied_scores_matches_sklearn(k: int) -> None:
    # Given probabilities on a 0.1 grid (rows still sum to 1), so that many scores tie
    rng = np.random.default_rng(42)
    y = rng.integers(0, k, size=1000)
    proba = rng.multinomial(10, np.full(k, 1 / k), size=1000) / 10
    assert np.unique(proba[:, 1]).size <= 11
    # When
    got = compute_metric("roc_auc", y, proba=proba)
    # Then ties are handled with average ranks, like sklearn's trapezoidal AUC
    assert got == pytest.approx(_sk_classification("roc_auc", y, proba), rel=1e-12)


def test_roc_auc_all_scores_tied_is_half() -> None:
    # Given a constant score
    y = np.array([0, 1, 0, 1, 1])
    proba = np.full((5, 2), 0.5)
    # When / Then
    assert compute_metric("roc_auc", y, proba=proba) == 0.5


def test_roc_auc_large_input_matches_sklearn() -> None:
    # Given 300k rows with heavy ties (exercises the integer rank sums at scale)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=300_000)
    p1 = np.round(np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1), 3)
    proba = np.column_stack([1 - p1, p1])
    # When / Then
    got = compute_metric("roc_auc", y, proba=proba)
    assert got == pytest.approx(_sk(skm.roc_auc_score, y, p1), rel=1e-12)


@pytest.mark.parametrize(("k", "cls"), [(2, 0), (2, 1), (4, 2)])
def test_roc_auc_single_class_is_nan(k: int, cls: int) -> None:
    # Given y_true with only one class
    rng = np.random.default_rng(5)
    y = np.full(50, cls)
    proba = _random_proba(rng, 50, k)
    # When
    got = compute_metric("roc_auc", y, proba=proba)
    # Then AUC is undefined -> nan (not an exception); other metrics stay finite
    assert math.isnan(got)
    assert math.isfinite(compute_metric("log_loss", y, proba=proba))


def test_log_loss_clips_and_does_not_renormalise_like_sklearn() -> None:
    # Given a zero probability on a true class and rows that do not sum to 1
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.0, 1.0], [0.3, 0.3], [0.2, 0.9], [1.0, 0.0]])
    # When
    got = compute_metric("log_loss", y, proba=proba)
    # Then it is finite (clipped at eps) and equals sklearn 1.9's output
    assert math.isfinite(got)
    assert got == pytest.approx(_sk(skm.log_loss, y, proba, labels=[0, 1]), rel=1e-12)


def test_log_loss_float32_uses_float32_eps() -> None:
    # Given float32 probabilities with a zero on a true class
    y = np.array([0, 1])
    proba = np.array([[0.0, 1.0], [0.5, 0.5]], dtype=np.float32)
    # When
    got = compute_metric("log_loss", y, proba=proba)
    # Then the clip uses float32 eps, as sklearn does
    assert got == pytest.approx(_sk(skm.log_loss, y, proba, labels=[0, 1]), rel=1e-6)
    assert got < 10  # float64 eps would give about 18


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", REGRESSION)
def test_regression_matches_sklearn(seed: int, name: str) -> None:
    # Given seeded float targets and predictions
    rng = np.random.default_rng(seed)
    y = rng.normal(10, 3, size=600)
    pred = y + rng.normal(0, 1.5, size=600)
    ref = {"rmse": skm.root_mean_squared_error, "mae": skm.mean_absolute_error, "r2": skm.r2_score}[
        name
    ]
    # When / Then
    got = compute_metric(name, y, pred=pred)
    assert got == pytest.approx(_sk(ref, y, pred), rel=1e-9)


@pytest.mark.parametrize(
    ("y", "pred"),
    [
        (np.full(7, 0.1), np.full(7, 0.1)),  # constant, perfect -> 1.0
        (np.full(7, 0.1), np.linspace(0, 1, 7)),  # constant, imperfect -> 0.0
        (np.full(1001, 0.3), np.full(1001, 0.3)),
        (np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])),  # perfect -> 1.0
        (np.array([2.5]), np.array([1.0])),  # one sample -> nan
    ],
)
def test_r2_edge_cases_follow_sklearn_force_finite(
    y: NDArray[np.float64], pred: NDArray[np.float64]
) -> None:
    # Given degenerate regression inputs
    # When
    got = compute_metric("r2", y, pred=pred)
    # Then the result equals sklearn's r2_score (force_finite=True default), nan included
    expected = _sk(skm.r2_score, y, pred)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_empty_classification_input_raises(name: str) -> None:
    # Given zero samples / When / Then
    with pytest.raises(ValueError, match="empty"):
        compute_metric(name, np.array([], dtype=int), proba=np.empty((0, 2)))


@pytest.mark.parametrize("name", REGRESSION)
def test_empty_regression_input_raises(name: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        compute_metric(name, np.array([]), pred=np.array([]))


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("accuracy", {}, "requires proba"),
        ("accuracy", {"pred": np.zeros(3)}, "requires proba"),
        ("accuracy", {"proba": np.full((3, 2), 0.5), "pred": np.zeros(3)}, "not pred"),
        ("rmse", {}, "requires pred"),
        ("rmse", {"proba": np.full((3, 2), 0.5)}, "requires pred"),
        ("rmse", {"pred": np.zeros(3), "proba": np.full((3, 2), 0.5)}, "not proba"),
        ("accuracy", {"proba": np.full((4, 2), 0.5)}, "different numbers of samples"),
        ("accuracy", {"proba": np.full(3, 0.5)}, "2-D"),
        ("accuracy", {"proba": np.ones((3, 1))}, "at least 2"),
        ("log_loss", {"proba": np.full((3, 2), 1.5)}, r"\[0, 1\]"),
        ("log_loss", {"proba": np.full((3, 2), np.nan)}, "NaN"),
        ("rmse", {"pred": np.zeros(4)}, "different shapes"),
        ("rmse", {"pred": np.zeros((3, 1))}, "1-D"),
        ("rmse", {"pred": np.array([0.0, np.inf, 1.0])}, "NaN or infinite"),
    ],
)
def test_invalid_arguments_raise(name: str, kwargs: dict[str, Any], message: str) -> None:
    # Given a y_true of 3 samples and bad proba/pred / When / Then
    y = np.array([0, 1, 1])
    with pytest.raises(ValueError, match=message):
        compute_metric(name, y, **kwargs)


@pytest.mark.parametrize("y", [np.array([0, 1, 2]), np.array([-1, 0, 1]), np.array([0.5, 1, 0])])
def test_invalid_class_codes_raise(y: NDArray[Any]) -> None:
    # Given codes outside 0..K-1 (K=2) or non-integral / When / Then
    with pytest.raises(ValueError, match="class codes"):
        compute_metric("accuracy", y, proba=np.full((3, 2), 0.5))


def test_integral_float_class_codes_are_accepted() -> None:
    # Given class codes stored as floats (e.g. read back from parquet)
    y = np.array([0.0, 1.0, 1.0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    # When / Then
    assert compute_metric("accuracy", y, proba=proba) == pytest.approx(2 / 3)


def test_unknown_metric_error_names_metric_and_lists_known() -> None:
    # Given an unknown name / When
    with pytest.raises(UnknownMetricError) as excinfo:
        compute_metric("f2_micro", np.array([1.0]), pred=np.array([1.0]))
    # Then it is a ValueError naming the bad metric and every known one
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert "'f2_micro'" in message
    assert all(name in message for name in METRICS)
    with pytest.raises(UnknownMetricError, match="'nope'"):
        metric_info("nope")


def test_metric_directions_and_tasks() -> None:
    # Given / When the registry / Then each metric has the expected task and direction
    expected: dict[str, tuple[Task, bool]] = {
        "accuracy": ("classification", True),
        "f1_macro": ("classification", True),
        "precision_macro": ("classification", True),
        "recall_macro": ("classification", True),
        "roc_auc": ("classification", True),
        "log_loss": ("classification", False),
        "rmse": ("regression", False),
        "mae": ("regression", False),
        "r2": ("regression", True),
    }
    assert {n: (i.task, i.higher_is_better) for n, i in METRICS.items()} == expected
    assert all(metric_info(n) == MetricInfo(n, *expected[n]) for n in expected)


def test_metrics_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        METRICS["new"] = MetricInfo("new", "regression", True)  # type: ignore[index]


def test_classification_report_matches_sklearn_and_is_json() -> None:
    # Given multiclass data with string labels
    rng = np.random.default_rng(11)
    y = rng.integers(0, 3, size=300)
    proba = _random_proba(rng, 300, 3)
    labels = ["cat", "dog", "eel"]
    # When
    report = classification_report(y, proba, labels)
    # Then it survives a strict JSON round trip and matches sklearn
    decoded = json.loads(json.dumps(report, allow_nan=False))
    for name in CLASSIFICATION:
        assert decoded[name] == pytest.approx(_sk_classification(name, y, proba), rel=1e-9)
    y_hat = proba.argmax(axis=1)
    assert decoded["confusion_matrix"] == skm.confusion_matrix(y, y_hat, labels=[0, 1, 2]).tolist()
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, y_hat, labels=[0, 1, 2], zero_division=0
    )
    for i, label in enumerate(labels):
        assert decoded["per_class"][label] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}
        )
    assert decoded["n"] == 300
    assert decoded["brier"] == pytest.approx(
        skm.brier_score_loss(y, proba, labels=[0, 1, 2]), rel=1e-9
    )
    assert 0 <= decoded["ece"] <= 1


def test_brier_and_ece_of_a_binary_model_by_hand() -> None:
    # Given five rows: two confident and right, one at 0.75 and right, two at 0.55 (one wrong)
    y = np.array([1, 0, 1, 1, 1])
    positive = np.array([0.95, 0.25, 0.55, 0.45, 0.95])
    proba = np.column_stack([1 - positive, positive])
    # Then Brier is the mean squared error of the positive-class probability:
    # (0.05² + 0.25² + 0.45² + 0.55² + 0.05²) / 5
    assert brier_score(y, proba) == pytest.approx(0.5725 / 5)
    assert brier_score(y, proba) == pytest.approx(skm.brier_score_loss(y, positive))
    # And ECE weighs each confidence bin's |accuracy - confidence| by its rows:
    # bin (14/15, 1]: 2 x (1 - 0.95); bin (11/15, 12/15]: 1 - 0.75; bin (8/15, 9/15]: the right
    # and the wrong 0.55 cancel to |1 - 1.1| = 0.1; over 5 rows
    assert expected_calibration_error(y, proba) == pytest.approx((0.1 + 0.25 + 0.1) / 5)
    # And the classification report carries both
    report = classification_report(y, proba, ["no", "yes"])
    assert report["brier"] == pytest.approx(0.1145)
    assert report["ece"] == pytest.approx(0.09)


def test_brier_and_ece_of_a_multiclass_model_by_hand() -> None:
    # Given three rows, the last one confidently wrong
    y = np.array([0, 2, 0])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.28, 0.62], [0.25, 0.5, 0.25]])
    # Then Brier sums the squared error over the one-hot classes, averaged over rows:
    # (0.3² + 0.2² + 0.1²) + (0.1² + 0.28² + 0.38²) + (0.75² + 0.5² + 0.25²), over 3
    assert brier_score(y, proba) == pytest.approx((0.14 + 0.2328 + 0.875) / 3)
    assert brier_score(y, proba) == pytest.approx(skm.brier_score_loss(y, proba, labels=[0, 1, 2]))
    # And ECE: one row per bin, |1 - 0.7| + |1 - 0.62| + |0 - 0.5|, over 3
    assert expected_calibration_error(y, proba) == pytest.approx((0.3 + 0.38 + 0.5) / 3)
    # And a single bin is the gap between accuracy (2/3) and mean confidence (1.82/3)
    assert expected_calibration_error(y, proba, bins=1) == pytest.approx(abs(2 - 1.82) / 3)


def test_a_perfectly_calibrated_model_has_no_ece_and_the_worst_has_one() -> None:
    # Given confidences of exactly 1 that are always right, then always wrong
    y = np.array([0, 1, 1])
    right = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # Then
    assert expected_calibration_error(y, right) == 0.0
    assert brier_score(y, right) == 0.0
    assert expected_calibration_error(y, right[:, ::-1]) == 1.0
    assert brier_score(y, right[:, ::-1]) == 1.0


def test_calibration_figures_reject_malformed_input() -> None:
    with pytest.raises(ValueError, match="bins must be at least 1"):
        expected_calibration_error(np.array([0]), np.array([[0.6, 0.4]]), bins=0)
    with pytest.raises(ValueError, match=r"proba must lie in \[0, 1\]"):
        brier_score(np.array([0]), np.array([[1.5, -0.5]]))


def test_classification_report_uses_none_for_nan() -> None:
    # Given a single-class y_true, which makes roc_auc undefined
    y = np.zeros(4, dtype=int)
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.8, 0.2]])
    # When
    report = classification_report(y, proba, ["neg", "pos"])
    # Then roc_auc is None and the dict serialises without NaN
    assert report["roc_auc"] is None
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text)["confusion_matrix"] == [[3, 1], [0, 0]]


def test_classification_report_rejects_wrong_labels() -> None:
    proba = np.full((2, 2), 0.5)
    with pytest.raises(ValueError, match="labels has 3"):
        classification_report(np.array([0, 1]), proba, ["a", "b", "c"])
    with pytest.raises(ValueError, match="distinct"):
        classification_report(np.array([0, 1]), proba, ["a", "a"])


def test_regression_report_matches_sklearn_and_is_json() -> None:
    # Given seeded regression data / When
    rng = np.random.default_rng(9)
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.5, size=200)
    report = json.loads(json.dumps(regression_report(y, pred), allow_nan=False))
    # Then
    assert report["rmse"] == pytest.approx(skm.root_mean_squared_error(y, pred), rel=1e-9)
    assert report["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-9)
    assert report["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-9)
    assert report["n"] == 200


def test_regression_report_uses_none_for_nan_r2() -> None:
    report = regression_report(np.array([1.0]), np.array([2.0]))
    assert report["r2"] is None
    assert report["rmse"] == 1.0


def test_import_does_not_load_heavy_dependencies() -> None:
    # Given a fresh interpreter / When the module is imported
    code = (
        "import sys, functions.shared.metrics; "
        "print(','.join(m for m in ('sklearn', 'scipy', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    # Then the import succeeds and none of sklearn, scipy, pandas was loaded
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# --------------------------------------------------------------------------------------
# Bootstrap intervals
# --------------------------------------------------------------------------------------


def _brute_force_interval(
    name: str, y: NDArray[Any], resamples: int, **scores: NDArray[Any]
) -> tuple[float, float]:
    """The textbook percentile bootstrap: draw the rows, score them, take the percentiles;
    drawn with the same generator and seed, so it must give the very same interval."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    n = y.shape[0]
    values = []
    for _ in range(resamples):
        rows = rng.integers(0, n, n)
        values.append(compute_metric(name, y[rows], **{k: v[rows] for k, v in scores.items()}))
    finite = [v for v in values if math.isfinite(v)]
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_bootstrap_interval_is_the_percentile_bootstrap_of_the_metric(name: str, k: int) -> None:
    # Given scores with ties (rounded probabilities) on 120 rows
    rng = np.random.default_rng(11)
    y = rng.integers(0, k, 120)
    proba = np.round(rng.dirichlet(np.ones(k), 120), 2)

    # When the interval is computed through draw counts
    interval = bootstrap_interval(name, y, proba=proba, resamples=60)

    # Then it is exactly the interval of the metric recomputed on every drawn sample
    assert interval is not None and interval.resamples == 60 and interval.level == 0.95
    expected = _brute_force_interval(name, y, 60, proba=proba)
    assert (interval.low, interval.high) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert interval.low <= compute_metric(name, y, proba=proba) <= interval.high


@pytest.mark.parametrize("name", REGRESSION)
def test_bootstrap_interval_of_regression_metrics(name: str) -> None:
    # Given targets far from zero (where a careless total sum of squares cancels)
    rng = np.random.default_rng(12)
    y = rng.normal(1e6, 10.0, 150)
    pred = y + rng.normal(0, 4.0, 150)
    interval = bootstrap_interval(name, y, pred=pred, resamples=60)
    assert interval is not None
    expected = _brute_force_interval(name, y, 60, pred=pred)
    assert (interval.low, interval.high) == pytest.approx(expected, rel=1e-7)


def test_bootstrap_interval_is_reproducible_and_narrows_with_more_rows() -> None:
    rng = np.random.default_rng(13)

    def scored(n: int) -> tuple[NDArray[Any], NDArray[Any]]:
        y = rng.integers(0, 2, n)
        s = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
        return y, np.stack([1 - s, s], axis=1)

    small, large = scored(60), scored(6000)
    first = bootstrap_interval("roc_auc", small[0], proba=small[1])
    again = bootstrap_interval("roc_auc", small[0], proba=small[1])
    wide = first
    narrow = bootstrap_interval("roc_auc", large[0], proba=large[1])
    assert first == again  # a fixed seed: the same rows give the same interval
    assert wide is not None and narrow is not None
    assert narrow.high - narrow.low < (wide.high - wide.low) / 4


def test_a_split_too_small_for_most_resamples_has_no_interval() -> None:
    # Given one positive among 20 rows: a third of the resamples miss it (undefined AUC)
    y = np.zeros(20, dtype=int)
    y[0] = 1
    proba = np.full((20, 2), 0.5)
    assert bootstrap_interval("roc_auc", y, proba=proba) is None


def test_bootstrap_resamples_stay_within_the_budget() -> None:
    assert bootstrap_resamples(19) == 1000
    assert bootstrap_resamples(30_000) == 1000
    assert bootstrap_resamples(60_000) == 500
    assert bootstrap_resamples(150_000) == 200  # the floor
    assert bootstrap_resamples(10_000_000) == 200
    assert bootstrap_resamples(50_000, passes=5) == 200  # a 5-class roc_auc walks 5 times
