"""The refit on train + validation: the rows it learns from (never the test split's), boosting
rounds scaled to them, class weights and the temperature carried over from the train-only fit,
parity on the refit graph, and the card's record of both fits."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from functions.shared.contract import Contract
from functions.shared.errors import TrainingError
from functions.shared.features import DatasetSchema
from functions.shared.metrics import classification_report
from functions.shared.model_card import MODEL_FILE, ClassWeighting, ModelCard
from functions.training.calibration import calibrate, temperature_scale
from functions.training.candidates import (
    FittedCandidate,
    balanced_weights,
    build_candidates,
    fit_candidate,
)
from functions.training.parity import PARITY_TOLERANCE
from functions.training.refit import refit_candidate, scaled_iterations, selected_iterations
from functions.training.script_mode import (
    CandidateName,
    Hyperparameters,
    SageMakerPaths,
    parse_hyperparameters,
)
from functions.training.splits import Split, join_splits, load_split
from functions.training.train import export_first_passing, summary, train
from infra.local.pipeline import DEFINITION
from tests import datasets

# One family ships, not a blend (test_training_ensemble.py refits a blend's members).
FAST = Hyperparameters(
    n_estimators=60, early_stopping_rounds=5, max_trials=1, max_ensemble_members=1
)


@dataclass(frozen=True)
class Version:
    schema: DatasetSchema
    train: Split
    validation: Split
    test: Split


def _version(
    root: Path, make: Callable[[Path], DatasetSchema] = datasets.binary_numeric
) -> Version:
    schema = make(root / "version")
    paths = SageMakerPaths.for_version(root / "version", root)
    return Version(
        schema,
        load_split(paths.train, schema, "train"),
        load_split(paths.validation, schema, "validation"),
        load_split(root / "version" / "test", schema, "test"),
    )


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Version:
    return _version(tmp_path_factory.mktemp("binary"))


def _fit(version: Version, name: CandidateName, hp: Hyperparameters = FAST) -> FittedCandidate:
    pipeline = build_candidates(version.schema, hp, num_gpus=0, n_jobs=1)[name]
    return fit_candidate(name, pipeline, version.schema, version.train, version.validation)


def _medians(frame: pd.DataFrame, columns: list[str]) -> NDArray[np.float64]:
    return np.nanmedian(frame[columns].to_numpy(np.float64), axis=0)


def test_boosted_rounds_scale_with_the_rows_rounded_half_up() -> None:
    assert scaled_iterations(120, rows_train=700, rows_refit=850) == 146  # 145.7
    assert scaled_iterations(2, rows_train=4, rows_refit=5) == 3  # 2.5 rounds up
    assert scaled_iterations(1, rows_train=1000, rows_refit=1001) == 1
    assert scaled_iterations(200, rows_train=2100, rows_refit=2550) == 243  # 242.9


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_a_boosted_refit_runs_the_scaled_rounds_on_train_and_validation_rows(
    binary: Version, name: CandidateName
) -> None:
    # Given a boosted candidate early-stopped on validation
    chosen = _fit(binary, name)
    model = chosen.pipeline.named_steps["model"]
    kept = chosen.record.params["best_iteration"]
    assert isinstance(kept, int)
    assert selected_iterations(model) == kept + 1  # the card counts rounds from 0
    # When refit
    refit = refit_candidate(chosen, binary.schema, binary.train, binary.validation)
    # Then it boosted the selected rounds scaled by 85/70, without early stopping
    rows = binary.train.rows + binary.validation.rows
    expected = scaled_iterations(kept + 1, binary.train.rows, rows)
    assert refit.record.refit is not None
    assert (refit.record.refit.rows, refit.record.refit.iterations) == (rows, expected)
    assert refit.record.refit.selected_iterations == kept + 1
    refitted = refit.pipeline.named_steps["model"]
    booster_rounds = (
        refitted.get_booster().num_boosted_rounds()
        if name == "xgboost"
        else refitted.booster_.current_iteration()
    )
    assert booster_rounds == expected > kept + 1
    # And its imputer learnt the medians of train + validation, not of train, nor of the test rows
    numeric = binary.schema.numeric
    imputed = refit.pipeline.named_steps["features"].named_transformers_["numeric"]["impute"]
    joined = join_splits(binary.train, binary.validation)
    everything = join_splits(joined, binary.test)
    assert np.allclose(imputed.statistics_, _medians(joined.frame, numeric))
    assert not np.allclose(imputed.statistics_, _medians(binary.train.frame, numeric))
    assert not np.allclose(imputed.statistics_, _medians(everything.frame, numeric))
    # And the train-only candidate is untouched: the record selection saw, its own model
    assert chosen.record.refit is None
    assert refit.record.metric_value == chosen.record.metric_value
    assert model.get_params()["n_estimators"] == FAST.n_estimators


def test_balanced_class_weights_carry_over_to_the_refit(tmp_path: Path) -> None:
    # Given a linear candidate whose search kept balanced weights on 6 %-positive data
    version = _version(tmp_path, datasets.imbalanced_binary)
    chosen = _fit(version, "linear")
    weighting = ClassWeighting(
        rarest_class="yes", rarest_share=0.06, unweighted=0.6, weighted=0.7, chosen="balanced"
    )
    chosen = FittedCandidate(
        chosen.name,
        chosen.pipeline,
        chosen.record.model_copy(update={"class_weighting": weighting}),
    )
    # When refit
    refit = refit_candidate(chosen, version.schema, version.train, version.validation)
    # Then it is the model fitted with balanced weights on the joined rows, and says so
    assert refit.record.refit is not None and refit.record.refit.class_weight == "balanced"
    assert refit.record.refit.iterations is None  # nothing to scale on a linear model
    joined = join_splits(version.train, version.validation)
    weights = balanced_weights(joined.y, 2)
    weighted = clone(chosen.pipeline).fit(joined.frame, joined.y, model__sample_weight=weights)
    plain = clone(chosen.pipeline).fit(joined.frame, joined.y)
    proba = refit.pipeline.predict_proba(version.test.frame)
    assert np.allclose(proba, weighted.predict_proba(version.test.frame))
    assert not np.allclose(proba, plain.predict_proba(version.test.frame), atol=1e-3)


def test_a_pipeline_without_a_model_step_is_refused(binary: Version) -> None:
    chosen = _fit(binary, "linear")
    steps = [("features", chosen.pipeline[0]), ("estimator", chosen.pipeline[-1])]
    odd = FittedCandidate("linear", Pipeline(steps), chosen.record)
    with pytest.raises(TrainingError, match="candidate 'linear' has no 'model' step to refit"):
        refit_candidate(odd, binary.schema, binary.train, binary.validation)


def test_the_temperature_comes_from_the_train_only_fit_and_parity_checks_the_refit_graph(
    binary: Version,
) -> None:
    # Given a boosted candidate stopped short (40 shallow, slow rounds), so underconfident that
    # a temperature of about 0.4 sharpens it, fitted on train
    hp = FAST.model_copy(update={"max_depth": 3, "learning_rate": 0.05, "n_estimators": 40})
    chosen = _fit(binary, "xgboost", hp)
    refit = partial(
        refit_candidate, schema=binary.schema, train=binary.train, validation=binary.validation
    )
    # When exported with the refit
    shipped = export_first_passing([chosen], binary.schema, binary.validation, refit)
    # Then the temperature is the one the train-only fit's validation probabilities give
    train_only = calibrate(
        binary.validation.y, chosen.pipeline.predict_proba(binary.validation.frame)
    )
    assert shipped.calibration is not None and shipped.calibration.applied
    assert shipped.calibration == train_only.record
    temperature = shipped.calibration.temperature
    assert temperature is not None
    # (the refit has seen those rows: it would have fitted another one)
    in_sample = calibrate(
        binary.validation.y, shipped.candidate.pipeline.predict_proba(binary.validation.frame)
    )
    assert in_sample.record.temperature != pytest.approx(temperature, rel=1e-2)
    # And the graph is the refit model's, followed by that temperature, to the parity tolerance
    assert shipped.candidate.record.refit is not None
    assert shipped.parity.passed and shipped.parity.rows == binary.validation.rows
    session = ort.InferenceSession(shipped.model_bytes, providers=["CPUExecutionProvider"])
    _, graph = session.run(None, binary.test.feeds)
    refit_native = shipped.candidate.pipeline.predict_proba(binary.test.frame)
    train_native = chosen.pipeline.predict_proba(binary.test.frame)
    assert np.abs(graph - temperature_scale(refit_native, temperature)).max() < PARITY_TOLERANCE
    assert np.abs(graph - temperature_scale(train_native, temperature)).max() > 0.01
    # And the validation report stays the train-only fit's, calibrated: what selection saw
    calibrated = temperature_scale(
        chosen.pipeline.predict_proba(binary.validation.frame), temperature
    )
    classes = binary.schema.classes or []
    assert shipped.validation == classification_report(
        binary.validation.y, np.clip(calibrated, 0.0, 1.0), classes
    )


def _train(root: Path, hp: Hyperparameters) -> tuple[ModelCard, Version]:
    version = _version(root, datasets.regression_prices)
    card = train(SageMakerPaths.for_version(root / "version", root), hp, num_gpus=0)
    return card, version


def test_the_card_records_both_fits_and_the_shipped_graph_learnt_train_and_validation(
    tmp_path: Path,
) -> None:
    # Given a price dataset whose test split training is never given
    card, version = _train(tmp_path, FAST)
    rows = card.training.rows_train + card.training.rows_validation
    # Then the chosen candidate keeps the train-only figures selection ranked it by...
    chosen = card.chosen_candidate
    assert chosen.metric_value == chosen.validation["rmse"]
    assert card.validation == chosen.validation
    # ... and records the refit; the other candidates were never refit
    assert chosen.refit is not None and chosen.refit.rows == rows == card.fitted_rows
    assert chosen.refit.seconds > 0
    assert [c.refit for c in card.candidates if c.name != card.chosen] == [None, None]
    if chosen.name != "linear":
        assert chosen.refit.iterations == scaled_iterations(
            chosen.params["best_iteration"] + 1,  # type: ignore[operator]
            card.training.rows_train,
            rows,
        )
    # And the job's summary says so
    assert f"refit {card.chosen} on {rows} train + validation rows" in summary(card)
    written = (tmp_path / "model" / "model_card.json").read_bytes()
    assert ModelCard.model_validate_json(written) == card
    # And the shipped graph imputes with the medians of train + validation, not the test rows'
    graph = onnx.load_from_string((tmp_path / "model" / MODEL_FILE).read_bytes())
    imputer = next(n for n in graph.graph.node if n.op_type == "Imputer")
    values = next(a for a in imputer.attribute if a.name == "imputed_value_floats").floats
    joined = join_splits(version.train, version.validation)
    everything = join_splits(joined, version.test)
    numeric = version.schema.numeric
    assert np.allclose(values, _medians(joined.frame, numeric).astype(np.float32))
    assert not np.allclose(values, _medians(everything.frame, numeric).astype(np.float32))


def test_with_refit_off_the_train_only_fit_ships(tmp_path: Path) -> None:
    card, version = _train(tmp_path, FAST.model_copy(update={"refit": False}))
    assert all(c.refit is None for c in card.candidates)
    assert card.fitted_rows == card.training.rows_train
    assert "refit" not in summary(card)
    graph = onnx.load_from_string((tmp_path / "model" / MODEL_FILE).read_bytes())
    imputer = next(n for n in graph.graph.node if n.op_type == "Imputer")
    values = next(a for a in imputer.attribute if a.name == "imputed_value_floats").floats
    assert np.allclose(values, _medians(version.train.frame, version.schema.numeric))


def test_the_switch_is_the_contracts_training_refit() -> None:
    # on by default, off in the contract's training section, passed to the job as a string
    assert Contract.model_validate(_contract({})).training.refit is True
    assert Contract.model_validate(_contract({"refit": False})).training.refit is False
    assert parse_hyperparameters({"refit": "false"}).refit is False
    assert Hyperparameters().refit is True
    # and not among the model's hyperparameters, where it would be a second place to set it
    with pytest.raises(ValidationError, match=r"hyperparameters\.refit: set it as training\.refit"):
        Contract.model_validate(_contract({"hyperparameters": {"refit": False}}))


def _contract(training: dict[str, object]) -> dict[str, object]:
    return {
        "target": "y",
        "task": "regression",
        "metric": "rmse",
        "threshold": 1.0,
        "training": training,
    }


def test_the_training_job_is_given_train_and_validation_never_test() -> None:
    # Given the one pipeline definition, deployed by CDK and run by the local stack
    definition = json.loads(DEFINITION.read_text(encoding="utf-8"))
    # Then the training job (search, refit and export) reads two channels; the test split is
    # left to the evaluate step, whose scores the gate judges
    channels = definition["States"]["Train"]["Parameters"]["InputDataConfig"]
    assert [c["ChannelName"] for c in channels] == ["train", "validation"]
    sources = [c["DataSource"]["S3DataSource"]["S3Uri.$"] for c in channels]
    assert sources == ["$.train_uri", "$.validation_uri"]
    assert "test" not in json.dumps(definition["States"]["Train"])
