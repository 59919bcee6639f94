"""Temperature scaling of a classifier's probabilities, kept only when it lowers log loss.

The calibrated probabilities are ``softmax(log(max(p, PROBABILITY_FLOOR)) / T)``: the same
ranking of classes on every row (the label and the decision never change; only how sure the
model says it is), one parameter, and four cheap ONNX nodes after the graph's probability
output (``export.append_temperature``). For two classes it is Platt scaling without a bias:
``sigmoid(logit / T)``.

Whether to calibrate is decided on the validation split by cross-fitting: ``FOLDS`` folds, each
scored with a temperature fitted on the others, so the log loss compared with the raw model's is
out of sample (a temperature fitted and scored on the same rows always looks at least as good).
When the cross-fitted log loss is lower by at least ``MIN_GAIN``, the temperature fitted on the
whole validation split ships. docs/decisions.md (2026-12-03) says why this method and floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
from numpy.typing import NDArray
from pydantic import JsonValue

from functions.shared.features import DatasetSchema
from functions.shared.metrics import (
    brier_score,
    classification_report,
    compute_metric,
    expected_calibration_error,
)
from functions.shared.model_card import CalibrationFigures, CalibrationRecord
from functions.training.export import append_temperature
from functions.training.splits import Split

# Probabilities below this are raised to it before the log. A float32 probability computed as
# 1 - p (a binary model's other column) carries an absolute error near 1e-7; the log turns that
# into a relative error, which a temperature above 1 would spread to the calibrated output. At
# 1e-3 the worst case is about 53 x the input error, well inside the parity tolerance.
PROBABILITY_FLOOR = 1e-3
FOLDS = 5
MIN_GAIN = 1e-3  # nats of cross-fitted validation log loss a temperature must save to ship
MIN_ROWS = 100  # fewer validation rows than this and the folds are too small to judge
TEMPERATURE_BOUNDS = (0.05, 20.0)
SEED = 20261203


class ProbabilisticClassifier(Protocol):
    def predict_proba(self, x: Any) -> Any: ...

    def predict(self, x: Any) -> Any: ...


def temperature_scale(
    proba: NDArray[Any], temperature: float, floor: float = PROBABILITY_FLOOR
) -> NDArray[np.float64]:
    """What the appended graph nodes compute (Clip, Log, Mul by float32(1/T), Softmax)."""
    inverse = float(np.float32(1.0 / temperature))
    logits = np.log(np.maximum(np.asarray(proba, dtype=np.float64), floor)) * inverse
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    scaled: NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
    return scaled


def fit_temperature(y: NDArray[np.intp], proba: NDArray[Any]) -> float:
    """The temperature minimising log loss on these rows (bounded; searched on log T)."""
    rows = np.arange(y.shape[0])
    log_p = np.log(np.maximum(np.asarray(proba, dtype=np.float64), PROBABILITY_FLOOR))

    def loss(log_t: float) -> float:
        z = log_p / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-np.mean(log_softmax[rows, y]))

    # Golden-section search: log loss is convex in 1/T, unimodal in log T.
    low, high = (float(b) for b in np.log(TEMPERATURE_BOUNDS))
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    while high - low > 1e-6:
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return float(np.exp((low + high) / 2.0))


@dataclass(frozen=True)
class Calibration:
    """The decision and its figures; ``temperature`` is set only when calibration applies."""

    record: CalibrationRecord
    temperature: float | None

    def apply(self, proba: NDArray[Any]) -> NDArray[np.float64]:
        if self.temperature is None:
            return np.asarray(proba, dtype=np.float64)
        return temperature_scale(proba, self.temperature)


@dataclass(frozen=True)
class CalibratedClassifier:
    """A native classifier followed by its temperature: what the calibrated graph must
    reproduce in the parity check. The label is the model's own (temperature keeps argmax)."""

    model: ProbabilisticClassifier
    temperature: float

    def predict_proba(self, x: Any) -> NDArray[np.float64]:
        return temperature_scale(self.model.predict_proba(x), self.temperature)

    def predict(self, x: Any) -> Any:
        return self.model.predict(x)


def calibrate(y: NDArray[Any], proba: NDArray[Any]) -> Calibration:
    """Decide on temperature scaling for a model whose validation probabilities are ``proba``
    (class codes ``y``); the model must not have been fitted on these rows."""
    codes = np.asarray(y, dtype=np.intp)
    raw = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
    before = _figures(codes, raw)
    rows = codes.shape[0]
    if rows < MIN_ROWS:
        return _refused(before, f"{rows} validation rows; calibration needs {MIN_ROWS}")
    fold_of = np.random.default_rng(SEED).permutation(rows) % FOLDS
    crossed = np.empty_like(raw)
    for fold in range(FOLDS):
        held = fold_of == fold
        temperature = fit_temperature(codes[~held], raw[~held])
        crossed[held] = temperature_scale(raw[held], temperature)
    after = _figures(codes, crossed)
    temperature = fit_temperature(codes, raw)
    gain = before.log_loss - after.log_loss
    if gain < MIN_GAIN:
        reason = (
            f"cross-fitted log loss {after.log_loss:.4f} vs {before.log_loss:.4f} raw: "
            f"saves {gain:.4f} nats, under the {MIN_GAIN:g} required"
        )
        return _refused(before, reason, after, temperature)
    reason = (
        f"cross-fitted log loss {after.log_loss:.4f} vs {before.log_loss:.4f} raw "
        f"(T = {temperature:.3f})"
    )
    return Calibration(
        record=_record(True, before, reason, after, temperature), temperature=temperature
    )


def _refused(
    before: CalibrationFigures,
    reason: str,
    after: CalibrationFigures | None = None,
    temperature: float | None = None,
) -> Calibration:
    return Calibration(record=_record(False, before, reason, after, temperature), temperature=None)


def _record(
    applied: bool,
    before: CalibrationFigures,
    reason: str,
    after: CalibrationFigures | None,
    temperature: float | None,
) -> CalibrationRecord:
    return CalibrationRecord(
        applied=applied,
        temperature=temperature,
        probability_floor=PROBABILITY_FLOOR,
        folds=FOLDS,
        before=before,
        after=after,
        reason=reason,
    )


def _figures(y: NDArray[np.intp], proba: NDArray[np.float64]) -> CalibrationFigures:
    return CalibrationFigures(
        log_loss=compute_metric("log_loss", y, proba=proba),
        brier=brier_score(y, proba),
        ece=expected_calibration_error(y, proba),
    )


@dataclass(frozen=True)
class CalibratedExport:
    """A candidate's graph as it ships: calibrated or not, with the native model it must match
    and, when calibrated, its validation report as calibrated."""

    model_bytes: bytes
    native: Any  # the pipeline, or a CalibratedClassifier around it
    record: CalibrationRecord | None  # None for regression
    validation: dict[str, JsonValue] | None  # None: the candidate's own report stands


def calibrate_export(
    pipeline: ProbabilisticClassifier,
    model_bytes: bytes,
    schema: DatasetSchema,
    validation: Split,
    *,
    temperature_from: ProbabilisticClassifier | None = None,
) -> CalibratedExport:
    """Calibrate a classification candidate's graph when that lowers validation log loss.

    ``temperature_from`` is the model whose validation probabilities decide on and fit the
    temperature, and whose calibrated report is returned: the train-only fit when ``pipeline``
    (whose graph ``model_bytes`` is) is its refit on train + validation, for which those rows
    are no longer out of sample. By default, ``pipeline`` itself.
    """
    if schema.task != "classification":
        return CalibratedExport(model_bytes, pipeline, None, None)
    selected = pipeline if temperature_from is None else temperature_from
    decision = calibrate(validation.y, selected.predict_proba(validation.frame))
    if decision.temperature is None:
        return CalibratedExport(model_bytes, pipeline, decision.record, None)
    native = CalibratedClassifier(pipeline, decision.temperature)
    proba = np.clip(
        CalibratedClassifier(selected, decision.temperature).predict_proba(validation.frame),
        0.0,
        1.0,
    )
    report = cast(
        dict[str, JsonValue], classification_report(validation.y, proba, schema.classes or [])
    )
    return CalibratedExport(
        append_temperature(model_bytes, decision.temperature, PROBABILITY_FLOOR),
        native,
        decision.record,
        report,
    )
