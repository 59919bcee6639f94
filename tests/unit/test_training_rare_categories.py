"""One categorical feature with rare levels: trained, exported and scored as the native model.

skl2onnx 1.20.0 refuses a one-hot encoder with ONE input and infrequent categories
(onnx/sklearn-onnx#1026); ``export.convert_one_hot_encoder`` builds that case. Two or more
categorical features take skl2onnx's own path (tests/unit/test_training.py, ``multiclass``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from functions.shared.features import DatasetSchema, onnx_feeds
from functions.shared.model_card import ModelCard
from functions.training.candidates import build_candidates, fit_candidate
from functions.training.refit import refit_candidate
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.splits import load_split
from functions.training.train import train
from tests import datasets

FAST = Hyperparameters(n_estimators=40, early_stopping_rounds=5, max_trials=1)  # no search
UNSEEN = "a category nobody has seen"


@dataclass(frozen=True)
class Trained:
    schema: DatasetSchema
    paths: SageMakerPaths
    card: ModelCard
    native: Pipeline  # the exported candidate, fitted again (training is deterministic for a seed)


def _train(root: Path, schema: DatasetSchema, hp: Hyperparameters) -> Trained:
    paths = SageMakerPaths.for_version(root / "version", root)
    card = train(paths, hp, num_gpus=0)
    train_split = load_split(paths.train, schema, "train")
    validation = load_split(paths.validation, schema, "validation")
    pipeline = build_candidates(schema, hp, num_gpus=0)[card.chosen]
    chosen = fit_candidate(card.chosen, pipeline, schema, train_split, validation)
    if card.chosen_candidate.refit is not None:  # the shipped model: refit on train + validation
        chosen = refit_candidate(chosen, schema, train_split, validation)
    return Trained(schema, paths, card, chosen.pipeline)


@pytest.fixture(
    scope="module",
    # the boosted trees of a binary task number categories instead of one-hot encoding them:
    # their rare and unseen levels are tests/unit/test_training_encoding.py's
    params=["classification-linear", "regression-linear"],
)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    task, _, candidate = str(request.param).partition("-")
    root = tmp_path_factory.mktemp(str(request.param))
    schema = datasets.one_categorical(
        root / "version", "classification" if task == "classification" else "regression"
    )
    return _train(root, schema, FAST.model_copy(update={"candidates": (candidate,)}))


def _infrequent(trained: Trained) -> list[str]:
    encoder = trained.native.named_steps["features"].named_transformers_["categorical"]
    (infrequent,) = encoder.infrequent_categories_
    return [] if infrequent is None else list(infrequent)


def _scores(trained: Trained, frame: pd.DataFrame) -> tuple[Any, Any]:
    """(ONNX, native) scores of raw rows: probabilities, or predictions as a column."""
    feeds = onnx_feeds(trained.schema.features, {c: frame[c].to_numpy() for c in frame.columns})
    session = ort.InferenceSession(
        str(trained.paths.model / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    outputs = session.run(None, feeds)
    native_frame = pd.DataFrame({name: values.ravel() for name, values in feeds.items()})
    if trained.schema.task == "classification":
        return outputs[1], trained.native.predict_proba(native_frame)
    return outputs[0].ravel(), trained.native.predict(native_frame)


def test_one_categorical_feature_with_rare_levels_exports_with_parity(trained: Trained) -> None:
    # Given one categorical feature whose long tail the encoder pools as infrequent
    assert len(trained.schema.categorical) == 1
    assert len(_infrequent(trained)) > 50
    # Then the graph was exported and matched the native model on every validation row
    parity = trained.card.parity
    assert parity.passed
    assert parity.rows == trained.card.training.rows_validation
    assert trained.card.parity_failures == []


def test_rare_and_unseen_categories_score_as_the_native_model(trained: Trained) -> None:
    # Given validation rows rewritten to a rare training category, and to an unseen one
    (feature,) = trained.schema.categorical
    rows = pd.read_parquet(trained.paths.validation / "part-0.parquet").head(40)
    rare, unseen = rows.copy(), rows.copy()
    rare[feature] = _infrequent(trained)[0]
    unseen[feature] = UNSEEN
    # When the ONNX graph and the native pipeline score them
    onnx_rare, native_rare = _scores(trained, rare)
    onnx_unseen, native_unseen = _scores(trained, unseen)
    # Then both score each as the native model does: the rare category in the shared
    # infrequent column, the unseen one as all zeros
    np.testing.assert_allclose(onnx_rare, native_rare, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(onnx_unseen, native_unseen, atol=1e-5, rtol=1e-5)
    if trained.card.chosen == "linear":
        # And the two differ, so an export that read rare as unseen would have failed above
        assert np.max(np.abs(native_rare - native_unseen)) > 1e-3


def test_a_feature_whose_every_level_is_rare_exports_with_parity(tmp_path: Path) -> None:
    # Given one categorical feature with no level on 5 training rows (all pooled as infrequent)
    schema = datasets.one_categorical(tmp_path / "version", "regression", rows=400)
    (feature,) = schema.categorical
    for split in ("train", "validation", "test"):
        part = tmp_path / "version" / split / "part-0.parquet"
        frame = pd.read_parquet(part)
        frame[feature] = [f"level {i % 150}" for i in range(len(frame))]
        frame.to_parquet(part, index=False)
    # When trained
    trained = _train(tmp_path, schema, FAST.model_copy(update={"candidates": ("linear",)}))
    # Then the encoding is one column, and the export matches the native model
    assert len(_infrequent(trained)) == 150
    assert trained.card.parity.passed
    rows = pd.read_parquet(trained.paths.validation / "part-0.parquet").head(20)
    rows[feature] = UNSEEN
    onnx_unseen, native_unseen = _scores(trained, rows)
    np.testing.assert_allclose(onnx_unseen, native_unseen, rtol=1e-5)
