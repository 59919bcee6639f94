"""Any header a CSV or Parquet file can hold is a feature name: training, export and scoring."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from functions.shared.features import DatasetSchema, onnx_input_name
from functions.shared.model_card import ModelCard
from functions.shared.scoring import ScoringModel
from functions.training.calibration import CalibratedClassifier
from functions.training.candidates import build_candidates, fit_candidate
from functions.training.refit import refit_candidate
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.splits import load_split
from functions.training.train import train
from tests import datasets

FAST = Hyperparameters(n_estimators=40, early_stopping_rounds=5, max_trials=1)  # no search


@dataclass(frozen=True)
class Trained:
    schema: DatasetSchema
    paths: SageMakerPaths
    card: ModelCard
    hyperparameters: Hyperparameters


@pytest.fixture(
    scope="module",
    params=[
        ("classification", "linear"),
        ("classification", "xgboost"),
        ("regression", "linear"),
        ("regression", "xgboost"),
        ("classification", "lightgbm"),
        ("regression", "lightgbm"),
    ],
    ids=lambda p: "-".join(p),
)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Each exporter, for each task, on a dataset whose every header needs the mapping or
    nearly collides with one that does."""
    task, candidate = request.param
    root = tmp_path_factory.mktemp(f"{task}-{candidate}")
    schema = datasets.awkward_headers(root / "version", task=task)
    paths = SageMakerPaths.for_version(root / "version", root)
    hp = FAST.model_copy(update={"candidates": (candidate,)})
    return Trained(schema, paths, train(paths, hp, num_gpus=0), hp)


def test_awkward_headers_train_export_and_pass_parity(trained: Trained) -> None:
    # Given a dataset with headers such as "a b", "a_b", "a-b", "revenu €" and "label"
    card = trained.card
    # Then the model trained and its export matched the native model
    assert card.parity.passed and card.parity_failures == []
    # And the card speaks the user's names, and maps each to a distinct graph input
    headers = [f.name for f in card.features]
    assert headers == list(datasets.AWKWARD_HEADERS)
    assert card.onnx_input_names == {h: onnx_input_name(h) for h in headers}
    assert [i.name for i in card.onnx.inputs] == [onnx_input_name(h) for h in headers]
    assert len({i.name for i in card.onnx.inputs}) == len(headers)
    # And the outputs keep the names inference looks up, though features took them too
    assert [o.name for o in card.onnx.outputs] == card.output_names


def test_the_model_scores_columns_keyed_by_the_users_headers(trained: Trained) -> None:
    # Given the raw validation rows, keyed by the headers as the file spelled them
    raw = pd.read_parquet(trained.paths.validation / "part-0.parquet")
    onnx = (trained.paths.model / "model.onnx").read_bytes()
    card = ModelCard.model_validate_json((trained.paths.model / "model_card.json").read_bytes())
    model = ScoringModel(onnx, card, expected_sha256=card.onnx.sha256)
    # When scored through the card's mapping
    scores = model.score({c: raw[c].to_numpy() for c in raw.columns})
    # Then the predictions are the native model's
    train_split = load_split(trained.paths.train, trained.schema, "train")
    validation = load_split(trained.paths.validation, trained.schema, "validation")
    pipelines = build_candidates(trained.schema, trained.hyperparameters, num_gpus=0)
    name = card.chosen
    assert name in ("linear", "xgboost", "lightgbm")
    chosen = fit_candidate(name, pipelines[name], trained.schema, train_split, validation)
    if card.chosen_candidate.refit is not None:  # the shipped model: refit on train + validation
        chosen = refit_candidate(chosen, trained.schema, train_split, validation)
    native: Any = chosen.pipeline
    if card.calibration is not None and card.calibration.temperature and card.calibration.applied:
        native = CalibratedClassifier(native, card.calibration.temperature)
    if card.task == "classification":
        assert scores.probabilities is not None
        np.testing.assert_allclose(
            scores.probabilities, native.predict_proba(validation.frame), atol=1e-5
        )
    else:
        assert scores.values is not None
        np.testing.assert_allclose(scores.values, native.predict(validation.frame), rtol=1e-5)
