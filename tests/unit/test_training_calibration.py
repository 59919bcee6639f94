"""Calibration inside the graph: decided on cross-fitted validation log loss, appended after the
model's probabilities, and parity-checked against the calibrated native model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from functions.shared.errors import TrainingError
from functions.shared.features import DatasetSchema
from functions.shared.model_card import CalibrationFigures, CalibrationRecord
from functions.training.calibration import (
    MIN_GAIN,
    MIN_ROWS,
    PROBABILITY_FLOOR,
    CalibratedClassifier,
    calibrate,
    calibrate_export,
    temperature_scale,
)
from functions.training.candidates import build_candidates, build_features, fit_candidate
from functions.training.export import append_temperature, to_onnx
from functions.training.parity import measure_parity
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.splits import Split, load_split
from tests import datasets

FAST = Hyperparameters(n_estimators=40, early_stopping_rounds=5)
GENERATORS: dict[str, Callable[[Path], DatasetSchema]] = {
    "binary": datasets.binary_numeric,
    "multiclass": datasets.multiclass_mixed,
}


@dataclass(frozen=True)
class Fitted:
    schema: DatasetSchema
    validation: Split
    linear: Pipeline
    xgboost: Pipeline
    tree: Pipeline  # an unpruned-ish tree: near 0/1 probabilities, deliberately overconfident


@pytest.fixture(scope="module", params=list(GENERATORS))
def fitted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    root = tmp_path_factory.mktemp(str(request.param))
    schema = GENERATORS[str(request.param)](root / "version")
    paths = SageMakerPaths.for_version(root / "version", root)
    train = load_split(paths.train, schema, "train")
    validation = load_split(paths.validation, schema, "validation")
    pipelines = {
        name: fit_candidate(name, pipeline, schema, train, validation).pipeline
        for name, pipeline in build_candidates(schema, FAST, num_gpus=0).items()
    }
    tree = Pipeline(
        [
            ("features", build_features(schema, scale=False)),
            ("model", DecisionTreeClassifier(max_depth=10, random_state=0)),
        ]
    ).fit(train.frame, train.y)
    return Fitted(schema, validation, pipelines["linear"], pipelines["xgboost"], tree)


def _session(model_bytes: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def _interface(model_bytes: bytes) -> tuple[list[Any], list[Any]]:
    session = _session(model_bytes)
    return (
        [(i.name, i.type, i.shape) for i in session.get_inputs()],
        [(o.name, o.type) for o in session.get_outputs()],
    )


@pytest.mark.parametrize("family", ["linear", "xgboost"])
@pytest.mark.parametrize("temperature", [0.5, 4.0])
def test_a_temperature_in_the_graph_matches_the_calibrated_native_model(
    fitted: Fitted, family: str, temperature: float
) -> None:
    # Given a candidate's graph with a sharpening or a softening temperature appended
    pipeline = getattr(fitted, family)
    raw = to_onnx(pipeline, fitted.schema)
    calibrated = append_temperature(raw, temperature, PROBABILITY_FLOOR)
    # When it is parity-checked against the native model followed by the same temperature
    native = CalibratedClassifier(pipeline, temperature)
    report = measure_parity(native, _session(calibrated), fitted.schema, fitted.validation)
    # Then it passes, labels and all, and its probabilities moved from the raw graph's
    assert report.passed, report
    assert report.label_agreement == 1.0
    raw_labels, raw_proba = _session(raw).run(None, fitted.validation.feeds)
    labels, proba = _session(calibrated).run(None, fitted.validation.feeds)
    np.testing.assert_array_equal(labels, raw_labels)
    assert np.abs(proba - raw_proba).max() > 1e-2
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_an_overconfident_model_is_calibrated_inside_the_same_interface(fitted: Fitted) -> None:
    # Given a deep tree whose validation probabilities are nearly all 0 or 1
    raw = to_onnx(fitted.tree, fitted.schema)
    # When its export is calibrated
    exported = calibrate_export(fitted.tree, raw, fitted.schema, fitted.validation)
    # Then calibration applies: a softening temperature that lowers cross-fitted log loss,
    # Brier and ECE on validation
    record = exported.record
    assert record is not None and record.applied and record.after is not None
    assert record.temperature is not None and record.temperature > 2
    assert record.after.log_loss < record.before.log_loss / 2
    assert record.after.brier < record.before.brier
    assert record.after.ece < record.before.ece
    # And the graph has the raw graph's inputs and outputs, names, types and shapes
    assert exported.model_bytes != raw
    assert _interface(exported.model_bytes) == _interface(raw)
    # And it reproduces the calibrated native model, whose report is the card's validation
    report = measure_parity(
        exported.native, _session(exported.model_bytes), fitted.schema, fitted.validation
    )
    assert report.passed, report
    assert exported.validation is not None
    assert exported.validation["log_loss"] == pytest.approx(
        temperature_scale_log_loss(fitted, record.temperature), rel=1e-9
    )


def temperature_scale_log_loss(fitted: Fitted, temperature: float) -> float:
    proba = temperature_scale(fitted.tree.predict_proba(fitted.validation.frame), temperature)
    rows = np.arange(fitted.validation.rows)
    return float(-np.mean(np.log(proba[rows, fitted.validation.y])))


def test_an_already_calibrated_model_ships_unchanged(tmp_path: Path) -> None:
    # Given the multiclass linear model, whose probabilities are already calibrated
    schema = datasets.multiclass_mixed(tmp_path / "version")
    paths = SageMakerPaths.for_version(tmp_path / "version", tmp_path)
    train = load_split(paths.train, schema, "train")
    validation = load_split(paths.validation, schema, "validation")
    pipeline = build_candidates(schema, FAST, num_gpus=0)["linear"]
    pipeline = fit_candidate("linear", pipeline, schema, train, validation).pipeline
    raw = to_onnx(pipeline, schema)
    # When its export goes through calibration
    exported = calibrate_export(pipeline, raw, schema, validation)
    # Then calibration is refused with its figures: the cross-fitted log loss saved too little
    record = exported.record
    assert record is not None and not record.applied and record.after is not None
    assert record.before.log_loss - record.after.log_loss < MIN_GAIN
    assert "under the" in record.reason
    # And the graph, the native model and the validation report are the candidate's own
    assert exported.model_bytes == raw
    assert exported.native is pipeline
    assert exported.validation is None


def test_a_regression_model_is_not_calibrated(tmp_path: Path) -> None:
    schema = datasets.regression_prices(tmp_path / "version", rows=400)
    paths = SageMakerPaths.for_version(tmp_path / "version", tmp_path)
    train = load_split(paths.train, schema, "train")
    validation = load_split(paths.validation, schema, "validation")
    pipeline = build_candidates(schema, FAST, num_gpus=0)["linear"]
    pipeline = fit_candidate("linear", pipeline, schema, train, validation).pipeline
    raw = to_onnx(pipeline, schema)
    exported = calibrate_export(pipeline, raw, schema, validation)
    assert (exported.model_bytes, exported.record, exported.validation) == (raw, None, None)
    with pytest.raises(TrainingError, match="without a 'probabilities' output"):
        append_temperature(raw, 2.0, PROBABILITY_FLOOR)


def test_too_few_validation_rows_are_refused() -> None:
    # Given 20 confidently wrong rows: calibration would help, but 20 rows cannot judge it
    y = np.zeros(20, dtype=np.intp)
    proba = np.tile([0.01, 0.99], (20, 1))
    decision = calibrate(y, proba)
    assert not decision.record.applied
    assert decision.temperature is None
    assert f"calibration needs {MIN_ROWS}" in decision.record.reason


def test_calibration_keeps_every_rows_ranking_of_classes() -> None:
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(4), size=200)
    for temperature in (0.3, 1.0, 7.0):
        scaled = temperature_scale(proba, temperature)
        np.testing.assert_array_equal(scaled.argmax(axis=1), proba.argmax(axis=1))
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0)


def test_the_appended_nodes_are_the_four_documented_ones(fitted: Fitted) -> None:
    raw = to_onnx(fitted.linear, fitted.schema)
    calibrated = onnx.load_from_string(append_temperature(raw, 2.0, PROBABILITY_FLOOR))
    added = [n.op_type for n in calibrated.graph.node][-4:]
    assert added == ["Clip", "Log", "Mul", "Softmax"]
    assert len(calibrated.graph.node) == len(onnx.load_from_string(raw).graph.node) + 4


FIGURES = CalibrationFigures(log_loss=0.5, brier=0.2, ece=0.05)


def test_a_card_cannot_claim_calibration_that_did_not_help() -> None:
    worse = CalibrationFigures(log_loss=0.6, brier=0.2, ece=0.05)
    with pytest.raises(ValueError, match="lowered the cross-fitted log loss"):
        CalibrationRecord(
            applied=True,
            temperature=2.0,
            probability_floor=PROBABILITY_FLOOR,
            folds=5,
            before=FIGURES,
            after=worse,
            reason="x",
        )
    with pytest.raises(ValueError, match="lowered the cross-fitted log loss"):
        CalibrationRecord(applied=True, probability_floor=1e-3, folds=5, before=FIGURES, reason="x")
