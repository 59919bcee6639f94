"""The parity check: the exported ONNX graph must reproduce the native model it came from.

A converter can produce a graph that runs and is wrong (skl2onnx does so for
HistGradientBoosting with native categorical splits), so no model is written without this
check. The comparison functions are pure; ``measure_parity`` runs both models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.pipeline import Pipeline

from functions.shared.errors import ParityError
from functions.shared.features import DatasetSchema
from functions.shared.model_card import ParityReport
from functions.training.calibration import ProbabilisticClassifier
from functions.training.splits import Split

PARITY_TOLERANCE = 1e-4


def classification_parity(
    native_proba: NDArray[Any],
    native_labels: NDArray[Any],
    onnx_proba: NDArray[Any],
    onnx_labels: NDArray[Any],
    *,
    tolerance: float = PARITY_TOLERANCE,
) -> ParityReport:
    """Probabilities within ``tolerance`` (absolute) and labels equal on every row.

    A row whose native top-two probabilities are within ``tolerance`` of each other is a tie:
    float32 rounding may legitimately pick the other class there, so a label disagreement on
    such a row is counted in ``ties`` and forgiven. Any other disagreement fails the check.
    """
    native = np.asarray(native_proba, dtype=np.float64)
    exported = np.asarray(onnx_proba, dtype=np.float64)
    ours, theirs = np.asarray(native_labels).ravel(), np.asarray(onnx_labels).ravel()
    rows = native.shape[0]
    if exported.shape != native.shape or ours.shape != (rows,) or theirs.shape != (rows,):
        raise ParityError(
            f"ONNX outputs have the wrong shape: probabilities {exported.shape} and labels "
            f"{theirs.shape} for native {native.shape} and {ours.shape}"
        )
    max_abs = _max_abs(exported - native)
    disagree = ours != theirs
    top_two = np.sort(native, axis=1)[:, -2:] if rows else np.empty((0, 2))
    tied = (top_two[:, 1] - top_two[:, 0]) <= tolerance
    ties = int(np.count_nonzero(disagree & tied))
    mismatches = int(np.count_nonzero(disagree & ~tied))
    agreement = 1.0 - float(np.count_nonzero(disagree)) / rows if rows else 1.0
    return ParityReport(
        rows=rows,
        tolerance=tolerance,
        max_abs_diff=max_abs,
        max_scaled_diff=max_abs,
        label_agreement=agreement,
        ties=ties,
        passed=max_abs <= tolerance and mismatches == 0,
    )


def regression_parity(
    native_pred: NDArray[Any], onnx_pred: NDArray[Any], *, tolerance: float = PARITY_TOLERANCE
) -> ParityReport:
    """Every prediction within ``tolerance`` of the native one, relative to the model's scale.

    The figure is ``max |onnx - native| / max(1, |native|, rms(native))``, ``rms`` over the
    whole split. A regression model's output is a sum (intercept + coefficients x features, or
    base score + one leaf per tree) that XGBoost, scikit-learn on float32 inputs and onnxruntime
    all compute in float32, so its rounding error is proportional to the terms summed, not to
    the result: a price model with base score 29 755 predicts -7.55 for one car as a sum of
    terms totalling 6.8e4, and native XGBoost is itself 0.0036 (4.7e-4 of 7.55) away from the
    exact sum of its own trees there. The terms are at least the size of the model's typical
    output, ``rms(native)``, so a smaller prediction is compared with that. The tolerance stays
    1e-4, about a thousand times float32's resolution; a conversion bug (a wrong base score, a
    lost tree, a misrouted split) moves a prediction by a leaf value, up to 5e-2 of ``rms`` even
    for the last of 300 trees. docs/decisions.md (2026-12-03) has the figures.
    """
    native = np.asarray(native_pred, dtype=np.float64).ravel()
    exported = np.asarray(onnx_pred, dtype=np.float64).ravel()
    if exported.shape != native.shape:
        raise ParityError(
            f"ONNX predictions have shape {exported.shape}, native ones {native.shape}"
        )
    diff = exported - native
    max_abs = _max_abs(diff)
    scale = float(np.sqrt(np.mean(np.square(native)))) if native.size else 1.0
    max_scaled = _max_abs(diff / np.maximum(np.abs(native), max(1.0, scale)))
    return ParityReport(
        rows=int(native.shape[0]),
        tolerance=tolerance,
        max_abs_diff=max_abs,
        max_scaled_diff=max_scaled,
        passed=max_scaled <= tolerance,
    )


def measure_parity(
    pipeline: Pipeline | ProbabilisticClassifier,
    session: Any,
    schema: DatasetSchema,
    split: Split,
) -> ParityReport:
    """Run the native model (calibrated like the graph, where it is) and the ONNX session on
    the same split and compare them."""
    if schema.task == "classification":
        onnx_labels, onnx_proba = session.run(None, split.feeds)
        return classification_parity(
            pipeline.predict_proba(split.frame),
            pipeline.predict(split.frame),
            onnx_proba,
            onnx_labels,
        )
    (onnx_pred,) = session.run(None, split.feeds)
    return regression_parity(pipeline.predict(split.frame), onnx_pred)


def ensure_parity(report: ParityReport, candidate: str) -> None:
    """Raise ParityError with the figures unless ``report`` passed."""
    if not report.passed:
        raise ParityError(parity_failure_message(report, candidate))


def parity_failure_message(report: ParityReport, candidate: str) -> str:
    """What failed and by how much: the ParityError message and the model card's reason."""
    figures = f"max diff {report.max_scaled_diff:.3g} (tolerance {report.tolerance:g})"
    if report.label_agreement is not None:
        figures += (
            f", labels agree on {report.label_agreement:.4%} of rows ({report.ties} ties excused)"
        )
    return (
        f"the ONNX export of '{candidate}' disagrees with the native model on "
        f"{report.rows} validation rows: {figures}"
    )


def _max_abs(values: NDArray[np.float64]) -> float:
    """Largest magnitude; NaN anywhere counts as infinitely far off."""
    if values.size == 0:
        return 0.0
    if not np.isfinite(values).all():
        return float("inf")
    return float(np.max(np.abs(values)))
