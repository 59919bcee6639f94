"""The boosted trees' categories numbered by target (functions/training/encoding.py): the order,
its determinism, unseen categories, and the exported graph scoring as the native model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from functions.shared.features import MISSING_CATEGORY, DatasetSchema, onnx_feeds
from functions.training.candidates import build_candidates, fit_candidate
from functions.training.encoding import TargetOrderedEncoder, orders_categories, target_order
from functions.training.export import to_onnx
from functions.training.script_mode import CandidateName, Hyperparameters
from functions.training.splits import load_split
from tests import datasets

FAST = Hyperparameters(n_estimators=40, early_stopping_rounds=5, max_trials=1)
UNSEEN = "a category nobody has seen"


def test_categories_are_numbered_by_smoothed_mean_target_then_name() -> None:
    # Given three categories: "b" cheap, "a" dear, "c" seen once at a dear price
    column = pd.Series(["a", "a", "a", "b", "b", "b", "c", "a", "b"])
    target = np.array([20.0, 21.0, 22.0, 1.0, 2.0, 3.0, 30.0, 21.0, 2.0])
    # When ordered without smoothing, "c" (30 on one row) is the dearest
    assert list(target_order(column, target, smoothing=0.0)) == ["b", "a", "c"]
    # And with 5 pseudo-rows at the overall mean (≈ 13.6) its one row is pulled below "a"
    assert list(target_order(column, target, smoothing=5.0)) == ["b", "c", "a"]
    # And equal means fall back to the name, so the numbering never depends on row order
    tied = pd.Series(["y", "x", "y", "x"])
    assert list(target_order(tied, np.array([1.0, 1.0, 1.0, 1.0]), smoothing=5.0)) == ["x", "y"]


def test_an_unseen_category_is_missing_and_fit_needs_the_target() -> None:
    frame = pd.DataFrame({"colour": ["red", "blue", "red", "green"]})
    encoder = TargetOrderedEncoder(smoothing=0.0).fit(frame, np.array([3.0, 1.0, 3.0, 2.0]))
    codes = encoder.transform(pd.DataFrame({"colour": ["blue", "green", "red", "violet"]}))
    assert codes[:3, 0].tolist() == [0.0, 1.0, 2.0]
    assert np.isnan(codes[3, 0])  # the trees send it down each split's default branch
    with pytest.raises(ValueError, match="needs y"):
        TargetOrderedEncoder().fit(frame)


def test_only_regression_and_binary_trees_order_categories(tmp_path: Path) -> None:
    assert orders_categories(datasets.regression_prices(tmp_path / "r", rows=300))
    assert orders_categories(datasets.imbalanced_binary(tmp_path / "b", rows=300))
    assert not orders_categories(datasets.multiclass_mixed(tmp_path / "m", rows=300))


def _fit(
    root: Path, schema: DatasetSchema, name: CandidateName
) -> tuple[object, ort.InferenceSession, pd.DataFrame]:
    train = load_split(root / "train", schema, "train")
    validation = load_split(root / "validation", schema, "validation")
    hp = FAST.model_copy(update={"candidates": (name,)})
    fitted = fit_candidate(
        name, build_candidates(schema, hp, num_gpus=0)[name], schema, train, validation
    )
    session = ort.InferenceSession(
        to_onnx(fitted.pipeline, schema), providers=["CPUExecutionProvider"]
    )
    rows = pd.read_parquet(root / "validation" / "part-0.parquet").head(60)
    return fitted, session, rows


def _both(
    schema: DatasetSchema, fitted: object, session: ort.InferenceSession, rows: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    feeds = onnx_feeds(schema.features, {c: rows[c].to_numpy() for c in rows.columns})
    native_frame = pd.DataFrame({name: values.ravel() for name, values in feeds.items()})
    outputs = session.run(None, feeds)
    pipeline = fitted.pipeline  # type: ignore[attr-defined]
    if schema.task == "classification":
        return outputs[1], pipeline.predict_proba(native_frame)
    return outputs[0].ravel(), pipeline.predict(native_frame)


def _one_categorical_binary(root: Path, rows: int) -> DatasetSchema:
    return datasets.one_categorical(root, "classification", rows=rows)


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (datasets.regression_prices, "xgboost"),
        (datasets.regression_prices, "lightgbm"),
        (datasets.imbalanced_binary, "xgboost"),
        (datasets.imbalanced_binary, "lightgbm"),
        (_one_categorical_binary, "xgboost"),  # 150 Zipf levels: most on under 5 rows
    ],
)
def test_ordered_categories_export_and_score_as_the_native_model(
    tmp_path: Path, build: object, name: CandidateName
) -> None:
    # Given a regression or binary table with categoricals and gaps, and a boosted tree on it
    schema = build(tmp_path, rows=1200)  # type: ignore[operator]
    fitted, session, rows = _fit(tmp_path, schema, name)
    features = fitted.pipeline.named_steps["features"]  # type: ignore[attr-defined]
    assert isinstance(features.named_transformers_["categorical"], TargetOrderedEncoder)
    assert fitted.record.params["categories"] == "target-ordered"  # type: ignore[attr-defined]
    # When validation rows, the same rows with the first categorical missing, and with it unseen
    feature = schema.categorical[0]
    missing, unseen = rows.copy(), rows.copy()
    missing[feature] = MISSING_CATEGORY
    unseen[feature] = UNSEEN
    for frame in (rows, missing, unseen):
        onnx_scores, native_scores = _both(schema, fitted, session, frame)
        # Then the graph scores every row as the native pipeline does
        np.testing.assert_allclose(onnx_scores, native_scores, rtol=1e-4, atol=1e-4)


def test_multiclass_trees_keep_one_hot(tmp_path: Path) -> None:
    schema = datasets.multiclass_mixed(tmp_path, rows=900)
    fitted, session, rows = _fit(tmp_path, schema, "xgboost")
    assert fitted.record.params["categories"] == "one-hot"  # type: ignore[attr-defined]
    onnx_scores, native_scores = _both(schema, fitted, session, rows)
    np.testing.assert_allclose(onnx_scores, native_scores, rtol=1e-4, atol=1e-4)
