"""Parity on real magnitudes, and the fallback to the best candidate whose export passes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from functions.shared.errors import ParityError
from functions.shared.features import DatasetSchema
from functions.shared.model_card import ModelCard
from functions.training import train as train_module
from functions.training.parity import PARITY_TOLERANCE
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.train import summary, train
from tests import datasets

# The fallback is shown between two families whose graphs carry their offset as a constant,
# not blended (test_training_ensemble.py shows a blend's fallback).
FAST = Hyperparameters(
    candidates=("linear", "xgboost"),
    n_estimators=40,
    early_stopping_rounds=5,
    max_trials=1,
    max_ensemble_members=1,
)
Export = Callable[..., bytes]
# The graph constant a converter gets wrong when it mishandles a base score or an intercept.
OFFSETS = {"TreeEnsembleRegressor": "base_values", "LinearRegressor": "intercepts"}


def _paths(root: Path) -> SageMakerPaths:
    return SageMakerPaths.for_version(root / "version", root)


def _shifted_export(real: Export, ops: set[str], shift: float) -> Export:
    """The real export, then ``shift`` added to the named ops' constant term: a graph that runs
    and is wrong, as a converter that mishandles a base score produces."""

    def export(pipeline: object, schema: DatasetSchema) -> bytes:
        model = onnx.load_from_string(real(pipeline, schema))
        for node in model.graph.node:
            if node.op_type in ops:
                attribute = next(a for a in node.attribute if a.name == OFFSETS[node.op_type])
                attribute.floats[0] += shift
        return model.SerializeToString()

    return export


def test_a_long_tailed_price_model_passes_parity(tmp_path: Path) -> None:
    # Given 40 000 used cars priced 500 to 200 000, where the linear model predicts near zero
    # for the cheapest (figure on the old |native| scale: 9.5e-4, above the 1e-4 tolerance)
    datasets.used_car_prices(tmp_path / "version")
    # When trained
    card = train(
        _paths(tmp_path), Hyperparameters(candidates=("linear",), max_trials=1), num_gpus=0
    )
    # Then the export passes, at float32's precision for the model's scale
    assert card.parity.passed
    assert card.parity.max_scaled_diff < PARITY_TOLERANCE / 10
    assert card.parity.max_abs_diff > 0  # float32 rounding, not bitwise equality


def test_the_best_candidate_that_passes_parity_ships(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given prices where xgboost is the better model, and an export that gets its base score
    # wrong by 1 000 (0.5% of a 200 000 price)
    datasets.regression_prices(tmp_path / "version")
    broken = _shifted_export(train_module.to_onnx, {"TreeEnsembleRegressor"}, 1000.0)
    monkeypatch.setattr(train_module, "to_onnx", broken)
    # When trained
    card = train(_paths(tmp_path), FAST, num_gpus=0)
    # Then xgboost ranked first, failed parity, and linear shipped
    metrics = {c.name: c.metric_value for c in card.candidates}
    assert metrics["xgboost"] is not None and metrics["linear"] is not None
    assert metrics["xgboost"] < metrics["linear"]  # rmse: lower is better
    assert card.chosen == "linear"
    assert card.parity.passed
    assert card.validation == card.chosen_candidate.validation
    # And the card records the failure with its figures
    (failure,) = card.parity_failures
    assert failure.candidate == "xgboost"
    assert failure.report is not None and not failure.report.passed
    assert failure.report.max_scaled_diff > 10 * PARITY_TOLERANCE
    assert "the ONNX export of 'xgboost' disagrees" in failure.reason
    # And the written card and model are linear's, the card valid as read back
    written = ModelCard.model_validate_json((tmp_path / "model" / "model_card.json").read_bytes())
    assert written.parity_failures == card.parity_failures
    ops = {n.op_type for n in onnx.load(tmp_path / "model" / "model.onnx").graph.node}
    assert "LinearRegressor" in ops and "TreeEnsembleRegressor" not in ops
    assert "parity fallback: 'linear' shipped" in summary(card)


def test_the_run_fails_on_parity_only_when_no_candidate_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an export that gets every candidate's constant term wrong
    datasets.regression_prices(tmp_path / "version", rows=1200)
    broken = _shifted_export(train_module.to_onnx, set(OFFSETS), 1000.0)
    monkeypatch.setattr(train_module, "to_onnx", broken)
    # When trained, then the run fails naming both candidates, best first, with figures
    with pytest.raises(ParityError, match="no candidate passed, so no model ships") as caught:
        train(_paths(tmp_path), FAST, num_gpus=0)
    message = str(caught.value)
    assert message.startswith("the ONNX export of 'xgboost' disagrees")
    assert message.index("'xgboost'") < message.index("'linear'")
    assert message.count("max diff") == 2
    assert not (tmp_path / "model" / "model.onnx").exists()
