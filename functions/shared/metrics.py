"""Evaluation metrics for sluice, implemented with NumPy only.

The Lambda functions that evaluate and gate models must not ship scikit-learn, SciPy or
pandas, so this module re-implements the handful of metrics the pipeline needs. Every
metric reproduces the output of scikit-learn 1.9 (to floating-point rounding) with the
argument choices documented on :func:`compute_metric`; the unit tests check this against
scikit-learn itself.

Metrics that are mathematically undefined for the given data (ROC AUC with a single class
in ``y_true``, R^2 with fewer than two samples) return ``nan`` instead of raising, so that
a quality gate can treat them as a failure. Malformed input (wrong shapes, empty arrays,
non-finite values, probabilities outside [0, 1], unknown class codes) raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BOOTSTRAP_SEED",
    "METRICS",
    "Interval",
    "MetricInfo",
    "Task",
    "UnknownMetricError",
    "average_precision",
    "bootstrap_interval",
    "bootstrap_resamples",
    "brier_score",
    "classification_report",
    "compute_metric",
    "expected_calibration_error",
    "metric_info",
    "precision_recall_curve",
    "regression_report",
    "reliability_bins",
    "roc_curve",
]

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class MetricInfo:
    """Static description of a metric.

    Attributes
    ----------
    name : str
        Key of the metric in :data:`METRICS`.
    task : {"classification", "regression"}
        Kind of model the metric evaluates; decides whether ``proba`` or ``pred`` is needed.
    higher_is_better : bool
        Direction in which the metric improves, used when comparing against a threshold.
    """

    name: str
    task: Task
    higher_is_better: bool


def _info(name: str, task: Task, higher_is_better: bool) -> tuple[str, MetricInfo]:
    return name, MetricInfo(name=name, task=task, higher_is_better=higher_is_better)


#: Every supported metric, keyed by name. Read-only.
METRICS: Mapping[str, MetricInfo] = MappingProxyType(
    dict(
        [
            _info("accuracy", "classification", True),
            _info("f1_macro", "classification", True),
            _info("precision_macro", "classification", True),
            _info("recall_macro", "classification", True),
            _info("roc_auc", "classification", True),
            _info("log_loss", "classification", False),
            _info("rmse", "regression", False),
            _info("mae", "regression", False),
            _info("r2", "regression", True),
        ]
    )
)


class UnknownMetricError(ValueError):
    """Raised when a metric name is not a key of :data:`METRICS`."""


def metric_info(name: str) -> MetricInfo:
    """Return the description of metric `name`.

    Raises
    ------
    UnknownMetricError
        If `name` is not a known metric; the message lists the known ones.
    """
    try:
        return METRICS[name]
    except KeyError:
        known = ", ".join(sorted(METRICS))
        raise UnknownMetricError(f"unknown metric {name!r}; known metrics: {known}") from None


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _check_1d(name: str, values: NDArray[Any]) -> None:
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {values.shape}")
    if values.shape[0] == 0:
        raise ValueError(f"{name} is empty; metrics need at least one sample")


def _validate_classification(
    y_true: NDArray[Any], proba: NDArray[Any]
) -> tuple[NDArray[np.intp], NDArray[np.floating[Any]]]:
    """Return ``(codes, proba)`` checked and converted, or raise ``ValueError``.

    ``proba`` keeps a float32/float64 dtype because log loss clips with that dtype's eps,
    as scikit-learn does; other dtypes become float64.
    """
    y = np.asarray(y_true)
    p = np.asarray(proba)
    _check_1d("y_true", y)
    if p.ndim != 2:
        raise ValueError(f"proba must be 2-D (n_samples, n_classes), got shape {p.shape}")
    if p.shape[0] != y.shape[0]:
        raise ValueError(
            f"y_true and proba have different numbers of samples: {y.shape[0]} vs {p.shape[0]}"
        )
    n_classes = p.shape[1]
    if n_classes < 2:
        raise ValueError(f"proba must have at least 2 class columns, got {n_classes}")
    if p.dtype not in (np.float32, np.float64):
        if p.dtype.kind not in "biuf":
            raise ValueError(f"proba must be numeric, got dtype {p.dtype}")
        p = p.astype(np.float64)
    if not np.isfinite(p).all():
        raise ValueError("proba contains NaN or infinite values")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"proba must lie in [0, 1], got range [{p.min()}, {p.max()}]")

    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not (y == np.floor(y)).all():
            raise ValueError("y_true must contain integer class codes 0..K-1")
    elif y.dtype.kind not in "biu":
        raise ValueError(f"y_true must contain integer class codes, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(
            f"y_true class codes must be in 0..{n_classes - 1} (proba has {n_classes} "
            f"columns), got range [{y.min()}, {y.max()}]"
        )
    return y.astype(np.intp), p


def _validate_regression(
    y_true: NDArray[Any], pred: NDArray[Any]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    y = np.asarray(y_true)
    f = np.asarray(pred)
    _check_1d("y_true", y)
    _check_1d("pred", f)
    if y.shape != f.shape:
        raise ValueError(f"y_true and pred have different shapes: {y.shape} vs {f.shape}")
    for name, arr in (("y_true", y), ("pred", f)):
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    return y.astype(np.float64), f.astype(np.float64)


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------


def _confusion_matrix(y: NDArray[np.intp], y_hat: NDArray[np.intp], k: int) -> NDArray[np.int64]:
    """Counts with rows = true class and columns = predicted class, both 0..k-1."""
    flat = np.bincount(y * k + y_hat, minlength=k * k)
    return flat.reshape(k, k).astype(np.int64)


def _safe_divide(num: NDArray[Any], den: NDArray[Any]) -> NDArray[np.float64]:
    """``num / den`` with 0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _per_class_prf(
    cm: NDArray[np.int64] | NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per-class precision, recall and F1 from a confusion matrix.

    F1 is ``2 tp / (2 tp + fp + fn)`` rather than the harmonic mean of the rounded
    precision and recall, as in scikit-learn; it is 0 for a class never true nor predicted.
    """
    tp = np.diag(cm).astype(np.float64)
    pred_sum = cm.sum(axis=0).astype(np.float64)
    true_sum = cm.sum(axis=1).astype(np.float64)
    precision = _safe_divide(tp, pred_sum)
    recall = _safe_divide(tp, true_sum)
    f1 = _safe_divide(2.0 * tp, true_sum + pred_sum)
    return precision, recall, f1


def _binary_auc(positive: NDArray[np.bool_], score: NDArray[Any]) -> float:
    """ROC AUC as the Mann-Whitney U statistic with tied scores given their average rank.

    This equals the trapezoidal area under scikit-learn's ROC curve. Doubled ranks are
    integers, so the rank sum is accumulated exactly in int64 (exact up to ~2e9 rows).
    Returns ``nan`` if either class is missing.
    """
    n = score.shape[0]
    n_pos = int(np.count_nonzero(positive))
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(score)  # order within a tie group is irrelevant
    s = score[order]
    idx = np.arange(n, dtype=np.int64)
    starts = np.ones(n, dtype=bool)
    starts[1:] = s[1:] != s[:-1]
    ends = np.ones(n, dtype=bool)
    ends[:-1] = starts[1:]
    # 0-based first and last position of each element's tie group.
    first = np.maximum.accumulate(np.where(starts, idx, 0))
    last = np.minimum.accumulate(np.where(ends, idx, n)[::-1])[::-1]
    doubled_rank = first + last + 2  # 2 x average 1-based rank
    rank_sum2 = int(doubled_rank[positive[order]].sum())
    u2 = rank_sum2 - n_pos * (n_pos + 1)  # 2 x U
    return float(u2 / (2 * n_pos * n_neg))


def _roc_auc(y: NDArray[np.intp], proba: NDArray[np.floating[Any]]) -> float:
    """Binary AUC on ``proba[:, 1]`` for K=2; macro one-vs-rest AUC over present classes."""
    k = proba.shape[1]
    if k == 2:
        return _binary_auc(y == 1, proba[:, 1])
    present = np.flatnonzero(np.bincount(y, minlength=k))
    if present.size < 2:
        return math.nan
    # Loop over classes (not rows): one column at a time keeps peak memory at O(n).
    aucs = [_binary_auc(y == c, proba[:, c]) for c in present]
    return float(np.mean(aucs))


def _log_loss(y: NDArray[np.intp], proba: NDArray[np.floating[Any]]) -> float:
    """Mean negative log-probability of the true class, as scikit-learn 1.9 computes it.

    Probabilities are clipped to ``[eps, 1 - eps]`` (eps of proba's dtype) and rows are NOT
    renormalised (older scikit-learn did renormalise; 1.9 does not). Only the true-class
    column is used, so rows that do not sum to 1 are taken as given.
    """
    eps = np.finfo(proba.dtype).eps
    p_true = np.clip(proba[np.arange(y.shape[0]), y], eps, 1 - eps)
    return float(-np.mean(np.log(p_true), dtype=np.float64))


ECE_BINS = 15
"""Equal-width bins on the top-class probability for the expected calibration error (Guo et
al. 2017 use 15; so does torchmetrics' default)."""


def _brier(y: NDArray[np.intp], proba: NDArray[np.floating[Any]]) -> float:
    """Mean squared distance between the probability rows and the one-hot true class.

    K=2: ``mean((proba[:, 1] - y) ** 2)``, the usual binary Brier score in [0, 1]. K>2: the sum
    over classes, averaged over rows, in [0, 2] (Brier 1950). That is what scikit-learn 1.9's
    ``brier_score_loss(y, proba, labels=range(K))`` returns for each K (it halves the binary
    sum, ``scale_by_half="auto"``).
    """
    p = np.asarray(proba, dtype=np.float64)
    onehot = np.zeros_like(p)
    onehot[np.arange(y.shape[0]), y] = 1.0
    total = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    return total / 2 if p.shape[1] == 2 else total


def _ece(y: NDArray[np.intp], proba: NDArray[np.floating[Any]], bins: int = ECE_BINS) -> float:
    """Expected calibration error on the top-class probability (the confidence).

    Rows go to ``bins`` equal-width bins by confidence, bin ``b`` holding ``(b/bins,
    (b+1)/bins]`` (the first also holds 0); ECE is ``sum_b (n_b / n) * |accuracy_b -
    mean confidence_b|``, the predicted class being ``argmax`` (first column wins ties), as
    in Guo et al. 2017. 0 is perfectly calibrated; it is in [0, 1].
    """
    which, confidence, correct = _confidence_bins(y, proba, bins)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)
    return float(np.sum(np.abs(gap)) / y.shape[0])


def _confidence_bins(
    y: NDArray[np.intp], proba: NDArray[np.floating[Any]], bins: int
) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]:
    """Per row: its confidence bin, its top-class probability, and 1.0 where the top class
    (``argmax``, first column on ties) is the true one."""
    p = np.asarray(proba, dtype=np.float64)
    predicted = np.argmax(p, axis=1)
    confidence = p[np.arange(y.shape[0]), predicted]
    correct = (predicted == y).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.intp) - 1, 0, bins - 1)
    return which, confidence, correct


def _classification_metric(name: str, y: NDArray[np.intp], p: NDArray[np.floating[Any]]) -> float:
    if name == "roc_auc":
        return _roc_auc(y, p)
    if name == "log_loss":
        return _log_loss(y, p)
    cm = _confusion_matrix(y, np.argmax(p, axis=1), p.shape[1])
    if name == "accuracy":
        return float(np.trace(cm) / y.shape[0])
    precision, recall, f1 = _per_class_prf(cm)
    by_name = {"precision_macro": precision, "recall_macro": recall, "f1_macro": f1}
    return float(np.mean(by_name[name]))


# --------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------


def _r2(y: NDArray[np.float64], f: NDArray[np.float64]) -> float:
    """R^2 with scikit-learn's ``force_finite=True`` default.

    Fewer than 2 samples -> nan. Perfect predictions -> 1.0 (even for constant ``y``);
    imperfect predictions of a constant ``y`` -> 0.0 instead of ``-inf``.
    """
    if y.shape[0] < 2:
        return math.nan
    numerator = float(np.sum((y - f) ** 2))
    denominator = float(np.sum((y - np.mean(y)) ** 2))
    if numerator == 0:
        return 1.0
    if denominator == 0:
        return 0.0
    return 1.0 - numerator / denominator


def _regression_metric(name: str, y: NDArray[np.float64], f: NDArray[np.float64]) -> float:
    if name == "rmse":
        return math.sqrt(float(np.mean((y - f) ** 2)))
    if name == "mae":
        return float(np.mean(np.abs(y - f)))
    return _r2(y, f)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def compute_metric(
    name: str,
    y_true: NDArray[Any],
    *,
    proba: NDArray[Any] | None = None,
    pred: NDArray[Any] | None = None,
) -> float:
    """Compute one metric, matching scikit-learn 1.9.

    Parameters
    ----------
    name : str
        A key of :data:`METRICS`.
    y_true : ndarray of shape (n,)
        Classification: integer class codes in ``0..K-1`` (integral floats are accepted).
        Regression: numeric targets.
    proba : ndarray of shape (n, K), optional
        Class probabilities; required for classification metrics, forbidden otherwise.
        The predicted label is ``argmax(proba, axis=1)`` (first column wins ties).
    pred : ndarray of shape (n,), optional
        Predictions; required for regression metrics, forbidden otherwise.

    Returns
    -------
    float
        The metric, or ``nan`` where it is undefined: ``roc_auc`` with fewer than two
        classes present in ``y_true``, ``r2`` with fewer than two samples.

    Raises
    ------
    UnknownMetricError
        If `name` is unknown.
    ValueError
        On missing/extra ``proba``/``pred``, empty input, shape mismatches, non-finite
        values, probabilities outside [0, 1] or class codes outside ``0..K-1``.

    Notes
    -----
    scikit-learn equivalents (K = ``proba.shape[1]``):

    * ``precision/recall/f1_macro``: ``average="macro", labels=range(K),
      zero_division=0`` -- classes absent from both ``y_true`` and the predictions still
      count (as 0) in the average.
    * ``roc_auc``: K=2 -> ``roc_auc_score(y_true, proba[:, 1])``; K>2 -> the mean of the
      one-vs-rest AUCs of the classes present in ``y_true``. (scikit-learn with
      ``labels=range(K)`` returns nan as soon as one class is absent; here absent classes
      are skipped.) Rows need not sum to 1.
    * ``log_loss``: ``log_loss(y_true, proba, labels=range(K))``.
    * ``rmse``/``mae``/``r2``: ``root_mean_squared_error``, ``mean_absolute_error``,
      ``r2_score`` (``force_finite=True``).
    """
    info = metric_info(name)
    if info.task == "classification":
        if proba is None:
            raise ValueError(f"{name} is a classification metric and requires proba=")
        if pred is not None:
            raise ValueError(f"{name} is a classification metric; pass proba=, not pred=")
        y, p = _validate_classification(y_true, proba)
        return _classification_metric(name, y, p)
    if pred is None:
        raise ValueError(f"{name} is a regression metric and requires pred=")
    if proba is not None:
        raise ValueError(f"{name} is a regression metric; pass pred=, not proba=")
    y_f, f = _validate_regression(y_true, pred)
    return _regression_metric(name, y_f, f)


def _json_float(value: float) -> float | None:
    """JSON has no NaN, so undefined metrics become ``None`` (``null``)."""
    return None if math.isnan(value) else float(value)


def classification_report(
    y_true: NDArray[Any], proba: NDArray[Any], labels: Sequence[str]
) -> dict[str, object]:
    """Summarise a classifier as a JSON-serialisable dict.

    Parameters
    ----------
    y_true : ndarray of shape (n,)
        Integer class codes ``0..K-1``.
    proba : ndarray of shape (n, K)
        Class probabilities.
    labels : sequence of str of length K
        Human-readable name of each class code, in code order.

    Returns
    -------
    dict
        ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``, ``roc_auc``,
        ``log_loss``, ``brier`` (:func:`brier_score`), ``ece``
        (:func:`expected_calibration_error`, 15 bins) (floats, ``None`` where undefined),
        ``per_class`` (``{label:
        {precision, recall, f1, support}}``), ``confusion_matrix`` (list of lists, rows =
        true, columns = predicted, in `labels` order) and ``n``.

    Raises
    ------
    ValueError
        As :func:`compute_metric`, or if `labels` does not hold K distinct names.
    """
    y, p = _validate_classification(y_true, proba)
    k = p.shape[1]
    names = list(labels)
    if len(names) != k:
        raise ValueError(f"labels has {len(names)} entries but proba has {k} columns")
    if len(set(names)) != k:
        raise ValueError(f"labels must be distinct, got {names}")
    cm = _confusion_matrix(y, np.argmax(p, axis=1), k)
    precision, recall, f1 = _per_class_prf(cm)
    support = cm.sum(axis=1)
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(names)
    }
    return {
        "accuracy": _json_float(float(np.trace(cm) / y.shape[0])),
        "precision_macro": _json_float(float(np.mean(precision))),
        "recall_macro": _json_float(float(np.mean(recall))),
        "f1_macro": _json_float(float(np.mean(f1))),
        "roc_auc": _json_float(_roc_auc(y, p)),
        "log_loss": _json_float(_log_loss(y, p)),
        "brier": _json_float(_brier(y, p)),
        "ece": _json_float(_ece(y, p)),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "n": int(y.shape[0]),
    }


def brier_score(y_true: NDArray[Any], proba: NDArray[Any]) -> float:
    """The Brier score of class probabilities against integer class codes ``0..K-1``: the
    binary score for K=2, the multiclass sum over classes for K>2 (``_brier`` says why).

    Raises ``ValueError`` as :func:`compute_metric` does for malformed input.
    """
    y, p = _validate_classification(y_true, proba)
    return _brier(y, p)


def expected_calibration_error(
    y_true: NDArray[Any], proba: NDArray[Any], *, bins: int = ECE_BINS
) -> float:
    """The expected calibration error over ``bins`` equal-width confidence bins (``_ece``).

    Raises ``ValueError`` as :func:`compute_metric` does, or for fewer than one bin.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    y, p = _validate_classification(y_true, proba)
    return _ece(y, p, bins)


def _check_binary(
    positive: NDArray[Any], score: NDArray[Any]
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    pos = np.asarray(positive)
    s = np.asarray(score)
    _check_1d("positive", pos)
    _check_1d("score", s)
    if pos.shape != s.shape:
        raise ValueError(f"positive and score have different shapes: {pos.shape} vs {s.shape}")
    if pos.dtype != np.bool_:
        raise ValueError(f"positive must be a boolean array, got dtype {pos.dtype}")
    if s.dtype.kind not in "biuf" or not np.isfinite(s).all():
        raise ValueError("score must hold finite numbers")
    return pos, s.astype(np.float64)


def _cumulative_counts(
    positive: NDArray[np.bool_], score: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """True and false positives when predicting positive at or above each distinct score,
    thresholds in decreasing order (scikit-learn's ``_binary_clf_curve``)."""
    order = np.argsort(score, kind="mergesort")[::-1]
    s = score[order]
    hits = positive[order].astype(np.float64)
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.shape[0] - 1]
    tps = np.cumsum(hits)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps, fps, s[last_of_tie]


def roc_curve(
    positive: NDArray[Any], score: NDArray[Any]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``(fpr, tpr, thresholds)`` of one positive class, every distinct score a threshold,
    starting at (0, 0) with threshold ``inf``: scikit-learn's ``roc_curve(...,
    drop_intermediate=False)``. Its trapezoidal area is :func:`compute_metric`'s ``roc_auc``
    (a unit test checks it). A class with no positive or no negative row gives nan rates."""
    pos, s = _check_binary(positive, score)
    tps, fps, thresholds = _cumulative_counts(pos, s)
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    return fpr, tpr, np.r_[np.inf, thresholds]


def precision_recall_curve(
    positive: NDArray[Any], score: NDArray[Any]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``(precision, recall, thresholds)`` of one positive class, thresholds increasing and the
    last point (precision 1, recall 0) added, as scikit-learn's ``precision_recall_curve``.
    Raises ``ValueError`` when the class has no positive row (recall is undefined)."""
    pos, s = _check_binary(positive, score)
    tps, fps, thresholds = _cumulative_counts(pos, s)
    if tps[-1] == 0:
        raise ValueError("precision_recall_curve needs at least one positive row")
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def average_precision(positive: NDArray[Any], score: NDArray[Any]) -> float:
    """Average precision, ``sum_n (R_n - R_{n-1}) P_n`` over decreasing thresholds, as
    scikit-learn's ``average_precision_score``; nan when the class has no positive row."""
    pos, s = _check_binary(positive, score)
    tps, fps, _ = _cumulative_counts(pos, s)
    if tps[-1] == 0:
        return math.nan
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def reliability_bins(
    y_true: NDArray[Any], proba: NDArray[Any], *, bins: int = ECE_BINS
) -> dict[str, list[float] | list[int]]:
    """The reliability curve behind :func:`expected_calibration_error`: per equal-width bin of
    the top-class probability, its ``count``, ``confidence`` (mean top-class probability) and
    ``accuracy`` (share of rows whose top class is the true one), 0 for an empty bin, and the
    bin ``edges``. ``sum(count / n * |accuracy - confidence|)`` is the ECE exactly."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    y, p = _validate_classification(y_true, proba)
    which, confidence, correct = _confidence_bins(y, p, bins)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    hit_sum = np.bincount(which, weights=correct, minlength=bins)
    return {
        "edges": [b / bins for b in range(bins + 1)],
        "count": [int(c) for c in count],
        "confidence": _safe_divide(conf_sum, count).tolist(),
        "accuracy": _safe_divide(hit_sum, count).tolist(),
    }


def regression_report(y_true: NDArray[Any], pred: NDArray[Any]) -> dict[str, object]:
    """Summarise a regressor as a JSON-serialisable dict: ``rmse``, ``mae``, ``r2``, ``n``.

    ``r2`` is ``None`` (not NaN) when undefined, i.e. for a single sample.
    """
    y, f = _validate_regression(y_true, pred)
    report: dict[str, object] = {
        name: _json_float(_regression_metric(name, y, f)) for name in ("rmse", "mae", "r2")
    }
    report["n"] = int(y.shape[0])
    return report


# --------------------------------------------------------------------------------------
# Bootstrap confidence intervals
# --------------------------------------------------------------------------------------

BOOTSTRAP_SEED = 20261201
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_MIN_RESAMPLES = 200
BOOTSTRAP_MAX_RESAMPLES = 1000
BOOTSTRAP_MIN_DEFINED = 0.9  # share of resamples whose metric must be defined
BOOTSTRAP_ROW_BUDGET = 30_000_000
"""Resamples × rows × passes a bootstrap aims to spend (a pass is one walk over the rows; a
multiclass ROC AUC takes one per class): 1000 resamples up to 30 000 test rows, fewer above,
never under 200 (150 000 rows → 200 resamples). A resample costs O(rows) (no re-sorting), so
past the floor of 200 the cost grows linearly with the split: measured in docs/decisions.md."""


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap confidence interval of a metric on a test split."""

    low: float
    high: float
    level: float
    resamples: int  # resamples whose metric was defined (a resample may miss a class)


def bootstrap_resamples(rows: int, passes: int = 1) -> int:
    """How many resamples a split of ``rows`` rows gets: see :data:`BOOTSTRAP_ROW_BUDGET`."""
    return max(
        BOOTSTRAP_MIN_RESAMPLES,
        min(BOOTSTRAP_MAX_RESAMPLES, BOOTSTRAP_ROW_BUDGET // max(rows * passes, 1)),
    )


def bootstrap_interval(
    name: str,
    y_true: NDArray[Any],
    *,
    proba: NDArray[Any] | None = None,
    pred: NDArray[Any] | None = None,
    resamples: int | None = None,
    seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> Interval | None:
    """Percentile bootstrap interval of metric ``name``, arguments as :func:`compute_metric`.

    Each resample draws ``n`` rows with replacement and is scored as the metric on those rows
    would be (the unit tests check this against :func:`compute_metric` on the drawn rows), but
    through the rows' draw counts as weights: sorting for ROC AUC happens once, so a resample
    costs O(n). The seed is fixed, so the same rows and predictions give the same interval, and
    two models scored on the same split are resampled on the same rows.

    Returns ``None`` when over a tenth of the resamples have no defined metric (a class so rare
    in the split that resamples often lack it): percentiles of the rest would be fiction.
    """
    info = metric_info(name)
    passes = 1
    if info.task == "classification":
        if proba is None or pred is not None:
            raise ValueError(f"{name} is a classification metric and requires proba= only")
        y, p = _validate_classification(y_true, proba)
        weighted = _weighted_classification(name, y, p)
        if name == "roc_auc" and p.shape[1] > 2:
            passes = int(np.count_nonzero(np.bincount(y, minlength=p.shape[1])))
    else:
        if pred is None or proba is not None:
            raise ValueError(f"{name} is a regression metric and requires pred= only")
        y_f, f = _validate_regression(y_true, pred)
        weighted = _weighted_regression(name, y_f, f)
    n = int(np.asarray(y_true).shape[0])
    count = bootstrap_resamples(n, passes) if resamples is None else resamples
    rng = np.random.default_rng(seed)
    values = np.empty(count, dtype=np.float64)
    for i in range(count):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        values[i] = weighted(counts.astype(np.float64))  # an int64 @ float64 dot is 30× slower
    finite = values[np.isfinite(values)]
    if finite.size < BOOTSTRAP_MIN_DEFINED * count:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(low=float(low), high=float(high), level=level, resamples=int(finite.size))


_Weighted = Callable[[NDArray[np.float64]], float]  # the metric from per-row draw counts


def _dot(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """``a @ b`` without BLAS: a threaded BLAS dot of one vector pair costs ~30× more on a
    busy machine (measured: 6.5 ms vs 0.14 ms on 150 000 rows), and this runs per resample."""
    return float(np.einsum("i,i->", a, b))


def _weighted_classification(
    name: str, y: NDArray[np.intp], p: NDArray[np.floating[Any]]
) -> _Weighted:
    n, k = p.shape
    if name == "roc_auc":
        return _weighted_roc_auc(y, p)
    if name == "log_loss":
        eps = np.finfo(p.dtype).eps
        nll = -np.log(np.clip(p[np.arange(n), y], eps, 1 - eps)).astype(np.float64)
        return lambda w: _dot(w, nll) / n
    y_hat = np.argmax(p, axis=1)
    if name == "accuracy":
        correct = (y == y_hat).astype(np.float64)
        return lambda w: _dot(w, correct) / n
    cells = y * k + y_hat
    position = {"precision_macro": 0, "recall_macro": 1, "f1_macro": 2}[name]

    def macro(w: NDArray[np.float64]) -> float:
        cm = np.bincount(cells, weights=w, minlength=k * k).reshape(k, k)
        return float(np.mean(_per_class_prf(cm)[position]))

    return macro


def _weighted_roc_auc(y: NDArray[np.intp], p: NDArray[np.floating[Any]]) -> _Weighted:
    k = p.shape[1]
    if k == 2:
        binary = _WeightedAuc(y == 1, p[:, 1])
        return lambda w: binary(w)[0]
    present = np.flatnonzero(np.bincount(y, minlength=k))
    per_class = [_WeightedAuc(y == c, p[:, c]) for c in present]

    def macro(w: NDArray[np.float64]) -> float:
        aucs = [auc for auc, positives in (c(w) for c in per_class) if positives > 0]
        return float(np.mean(aucs)) if len(aucs) >= 2 else math.nan

    return macro


class _WeightedAuc:
    """ROC AUC of one positive class with per-row weights: scores sorted and grouped into ties
    once; then a resample needs only weighted sums per tie group (ties count one half)."""

    def __init__(self, positive: NDArray[np.bool_], score: NDArray[Any]) -> None:
        self.order = np.argsort(score, kind="stable")
        s = score[self.order]
        starts = np.ones(s.shape[0], dtype=bool)
        starts[1:] = s[1:] != s[:-1]
        self.group = np.cumsum(starts) - 1
        self.groups = int(self.group[-1]) + 1
        self.positive = positive[self.order].astype(np.float64)
        # Reused per resample: fresh arrays this size cost more in page faults than the
        # arithmetic (measured 5.0 vs 1.9 ms per resample on 150 000 rows)
        self._sorted, self._pos, self._neg, self._below = (np.empty(s.shape[0]) for _ in range(4))

    def __call__(self, w: NDArray[np.float64]) -> tuple[float, float]:
        """(AUC or nan, the weight of the positives)."""
        ws = np.take(w, self.order, out=self._sorted)
        pos: NDArray[Any] = np.multiply(ws, self.positive, out=self._pos)
        neg: NDArray[Any] = np.subtract(ws, pos, out=self._neg)
        below = self._below
        if self.groups < ws.shape[0]:  # tied scores: sum each tie group first
            pos = np.bincount(self.group, weights=pos, minlength=self.groups)
            neg = np.bincount(self.group, weights=neg, minlength=self.groups)
            below = np.empty(self.groups)
        n_pos, n_neg = float(pos.sum()), float(neg.sum())
        if n_pos == 0 or n_neg == 0:
            return math.nan, n_pos
        # each positive beats the negatives below its group and ties half of those in it
        wins = _dot(pos, np.cumsum(neg, out=below)) - 0.5 * _dot(pos, neg)
        return wins / (n_pos * n_neg), n_pos


def _weighted_regression(name: str, y: NDArray[np.float64], f: NDArray[np.float64]) -> _Weighted:
    n = int(y.shape[0])
    error = y - f
    if name == "rmse":
        squared = error**2
        return lambda w: math.sqrt(_dot(w, squared) / n)
    if name == "mae":
        absolute = np.abs(error)
        return lambda w: _dot(w, absolute) / n
    squared = error**2
    centred = y - np.mean(y)  # the total sum of squares without cancellation on large targets
    centred_sq = centred**2

    def r2(w: NDArray[np.float64]) -> float:
        if n < 2:
            return math.nan
        numerator = _dot(w, squared)
        shift = _dot(w, centred) / n
        denominator = _dot(w, centred_sq) - n * shift**2
        if numerator == 0:
            return 1.0
        if denominator <= 1e-12 * max(_dot(w, centred_sq), 1e-300):
            return 0.0
        return 1.0 - numerator / denominator

    return r2
