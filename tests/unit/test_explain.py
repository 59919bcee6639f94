"""Explanations per prediction: exact against the boosters' own ``pred_contribs`` and the
``shap`` library, adding up to what the model serves, in the user's feature names.

The explainers are fitted here with training's own pipelines, export and table writer, so the
native model the references need is at hand; the route tests use the session's trained models.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, get_args

import numpy as np
import onnx
import pytest
import shap
import xgboost
from lightgbm import LGBMModel
from numpy.typing import NDArray
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline

from functions.inference import logic
from functions.inference.explain import ExplainingModel
from functions.inference.models import ExplainResponse, PredictResponse
from functions.shared.explanation import (
    ABSENT_KEY,
    METADATA_KEY,
    Contributions,
    ExplanationTable,
    ExplanationTableError,
    Output,
    metadata_entries,
)
from functions.shared.features import DatasetSchema
from functions.shared.model_card import ENSEMBLE, ModelCard
from functions.shared.scoring import ScoringModel
from functions.training.candidates import build_candidates, fit_candidate
from functions.training.ensemble import NativeBlend, blend_graphs
from functions.training.explanation import with_explanation
from functions.training.export import to_onnx
from functions.training.script_mode import CandidateName, Hyperparameters, SageMakerPaths
from functions.training.splits import Split, load_split
from functions.training.target import uses_log_target, with_log_target
from tests import datasets
from tests.models import TrainedModel, train_model
from tests.unit.test_inference import DATASET, Api, assert_error, client_rows

TOLERANCE = 1e-4  # of the largest |output| explained: float32 graphs, float64 references

GENERATORS: dict[str, Callable[[Path], DatasetSchema]] = {
    "binary": datasets.binary_numeric,
    "multiclass": datasets.multiclass_mixed,
    "regression": datasets.regression_prices,
    # lognormal used-car prices (skewness > 1): what the trees may fit log(price) on
    "prices": partial(datasets.used_car_prices, rows=1500),
}


@dataclass(frozen=True)
class Fitted:
    """A candidate fitted by training's code, its graph with the table, and its splits."""

    kind: str
    schema: DatasetSchema
    pipeline: Pipeline
    onnx: bytes
    train: Split
    validation: Split

    @property
    def native(self) -> Any:
        return self.pipeline.named_steps["model"]

    def encoded(self, split: Split) -> NDArray[np.float64]:
        return np.asarray(self.pipeline.named_steps["features"].transform(split.frame), np.float64)

    def explain(self, split: Split) -> tuple[Any, Contributions, ExplainingModel]:
        card = _card(self.schema, self.onnx)
        scoring = ScoringModel(self.onnx, card, expected_sha256=card.onnx.sha256)
        explaining = ExplainingModel(self.onnx, scoring)
        scores, contributions = explaining.run(split.feeds)
        return scores, contributions, explaining


def fit(
    tmp_path: Path, kind: str, family: str, n_estimators: int = 40, *, log_target: bool = False
) -> Fitted:
    """``log_target``: the trees fitted on log(target), as training's search may fit them."""
    schema = GENERATORS[kind](tmp_path / "version")
    paths = SageMakerPaths.for_version(tmp_path / "version", tmp_path)
    train = load_split(paths.train, schema, "train")
    validation = load_split(paths.validation, schema, "validation")
    hp = Hyperparameters(
        n_estimators=n_estimators, early_stopping_rounds=5, max_trials=1, candidates=(family,)
    )
    pipeline = build_candidates(schema, hp, num_gpus=0, n_jobs=1)[family]
    if log_target:
        pipeline.steps[-1] = ("model", with_log_target(pipeline.named_steps["model"]))
    fit_candidate(family, pipeline, schema, train, validation)
    graph = with_explanation(to_onnx(pipeline, schema), pipeline, schema, train.feeds)
    return Fitted(kind, schema, pipeline, graph, train, validation)


def _card(schema: DatasetSchema, graph: bytes) -> ModelCard:
    """A card for a graph made in a test: the shipped card's fields that scoring reads."""
    from functions.shared.features import onnx_input_names
    from functions.shared.model_card import OnnxInfo

    return ModelCard.model_construct(
        task=schema.task,
        features=list(schema.features),
        classes=schema.classes,
        onnx=OnnxInfo.model_construct(sha256=hashlib.sha256(graph).hexdigest()),
        onnx_input_names=onnx_input_names(schema.features),
    )


def _explained(values: NDArray[Any], targets: NDArray[np.int64]) -> NDArray[np.float64]:
    """One class's columns from a (rows, classes, columns) or (rows, columns, classes) array."""
    rows = np.arange(targets.size)
    return np.asarray(values[rows, targets] if values.ndim == 3 else values, np.float64)


def assert_close(actual: NDArray[Any], expected: NDArray[Any], scale: float) -> None:
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCE * max(1.0, scale))


# --- exactness against the references ------------------------------------------------------


@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_xgboost_contributions_equal_its_own_pred_contribs(tmp_path: Path, kind: str) -> None:
    # Given an XGBoost candidate exported as training exports it
    fitted = fit(tmp_path, kind, "xgboost")
    # When its validation rows are explained from the graph's table
    _, contributions, _ = fitted.explain(fitted.validation)
    # Then each encoded column's value and the base are XGBoost's own TreeSHAP
    model = fitted.native
    matrix = xgboost.DMatrix(fitted.encoded(fitted.validation))
    reference = model.get_booster().predict(
        matrix, pred_contribs=True, iteration_range=(0, model.best_iteration + 1)
    )
    reference = _explained(reference, contributions.targets)
    scale = float(np.abs(contributions.margin).max())
    assert_close(contributions.columns, reference[:, :-1], scale)
    assert_close(contributions.base, reference[:, -1], scale)


@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_lightgbm_contributions_equal_its_own_pred_contrib(tmp_path: Path, kind: str) -> None:
    fitted = fit(tmp_path, kind, "lightgbm")
    _, contributions, _ = fitted.explain(fitted.validation)
    x = fitted.encoded(fitted.validation)
    reference = np.asarray(fitted.native.predict(x, pred_contrib=True))
    if kind == "multiclass":  # LightGBM lays classes side by side: (rows, classes x (cols + 1))
        reference = reference.reshape(x.shape[0], -1, x.shape[1] + 1)
    reference = _explained(reference, contributions.targets)
    scale = float(np.abs(contributions.margin).max())
    assert_close(contributions.columns, reference[:, :-1], scale)
    assert_close(contributions.base, reference[:, -1], scale)


@pytest.mark.parametrize(("kind", "family"), [("binary", "xgboost"), ("regression", "lightgbm")])
def test_tree_contributions_equal_shap_tree_explainer(
    tmp_path: Path, kind: str, family: str
) -> None:
    fitted = fit(tmp_path, kind, family)
    _, contributions, _ = fitted.explain(fitted.validation)
    explainer = shap.TreeExplainer(fitted.native)  # path-dependent, the booster's own covers
    reference = np.asarray(explainer.shap_values(fitted.encoded(fitted.validation)))
    scale = float(np.abs(contributions.margin).max())
    assert_close(contributions.columns, reference, scale)
    assert_close(
        contributions.base, np.full(contributions.base.shape, explainer.expected_value), scale
    )


@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_linear_contributions_equal_shap_linear_explainer(tmp_path: Path, kind: str) -> None:
    # Given a linear candidate, and shap's explainer with every training row as background
    fitted = fit(tmp_path, kind, "linear")
    background = fitted.encoded(fitted.train)
    masker = shap.maskers.Independent(background, max_samples=background.shape[0])
    explainer = shap.LinearExplainer(fitted.native, masker)
    # When the validation rows are explained
    _, contributions, _ = fitted.explain(fitted.validation)
    reference = np.asarray(explainer.shap_values(fitted.encoded(fitted.validation)))
    if reference.ndim == 3:  # (rows, columns, classes)
        reference = np.moveaxis(reference, 2, 1)
    # Then the two agree, column by column
    scale = float(np.abs(contributions.margin).max())
    assert_close(contributions.columns, _explained(reference, contributions.targets), scale)


@pytest.mark.parametrize(("kind", "family"), [("binary", "linear"), ("multiclass", "xgboost")])
def test_contributions_add_up_to_the_margin_behind_the_served_probability(
    tmp_path: Path, kind: str, family: str
) -> None:
    fitted = fit(tmp_path, kind, family)
    scores, contributions, _ = fitted.explain(fitted.validation)
    total = contributions.base + contributions.columns.sum(axis=1)
    np.testing.assert_allclose(total, contributions.margin, atol=1e-9)
    probabilities = np.asarray(scores.probabilities, np.float64)
    if kind == "binary":
        np.testing.assert_allclose(
            1.0 / (1.0 + np.exp(-contributions.margin)), probabilities[:, 1], atol=1e-5
        )
    else:  # the explained class's logit against the others': its softmax is the served one
        margins = fitted.native.predict(fitted.encoded(fitted.validation), output_margin=True)
        rows = np.arange(margins.shape[0])
        np.testing.assert_allclose(
            margins[rows, contributions.targets], contributions.margin, atol=1e-4
        )


def test_a_table_the_model_file_lacks_is_an_explanation_table_error(tmp_path: Path) -> None:
    fitted = fit(tmp_path, "binary", "linear")
    model = onnx.load_from_string(fitted.onnx)
    del model.metadata_props[:]
    bare = model.SerializeToString()
    card = _card(fitted.schema, bare)
    scoring = ScoringModel(bare, card, expected_sha256=card.onnx.sha256)
    with pytest.raises(ExplanationTableError, match="carries no explanation table"):
        ExplainingModel(bare, scoring)


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("no map", "damaged: KeyError"),
        ("unknown output", "output 'probability' is unknown"),
        ("no kinds", "damaged: KeyError"),
    ],
)
def test_a_damaged_table_is_an_explanation_table_error_not_a_crash(
    tmp_path: Path, damage: str, named: str
) -> None:
    # Given a model file's table with an array or a header field missing or wrong
    fitted = fit(tmp_path, "binary", "linear")
    table = ExplanationTable.from_bytes(metadata_entries(fitted.onnx)[METADATA_KEY])
    with np.load(io.BytesIO(base64.b64decode(table.to_bytes()))) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(arrays.pop("header").tobytes())
    if damage == "no map":
        del arrays["column_features_0"]
    elif damage == "unknown output":
        header["output"] = "probability"
    else:
        del header["kinds"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    # Then reading it is the error explain answers with, naming what is wrong
    with pytest.raises(ExplanationTableError, match=named):
        ExplanationTable.from_bytes(base64.b64encode(buffer.getvalue()))


def test_a_table_written_before_blends_reads_as_one_member(tmp_path: Path) -> None:
    # Given a model file whose table is in format 1 (one column map for its one member), as
    # versions trained before blends were explained carry it
    fitted = fit(tmp_path, "binary", "linear")
    table = ExplanationTable.from_bytes(metadata_entries(fitted.onnx)[METADATA_KEY])
    with np.load(io.BytesIO(base64.b64decode(table.to_bytes()))) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(arrays.pop("header").tobytes())
    arrays["column_features"] = arrays.pop("column_features_0")
    arrays["header"] = np.frombuffer(json.dumps({**header, "format": 1}).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    # When it is read
    old = ExplanationTable.from_bytes(base64.b64encode(buffer.getvalue()))
    # Then it is the same table
    assert old.output == table.output and old.weights == table.weights == (1.0,)
    np.testing.assert_array_equal(old.column_features, table.column_features)


# --- ensembles ------------------------------------------------------------------------------

BLEND_FAMILIES: tuple[CandidateName, ...] = ("linear", "xgboost", "lightgbm")
BLEND_WEIGHTS = tuple(float(np.float32(w)) for w in (0.2, 0.44, 0.36))  # as the graph holds


def _binary_mixed(root: Path) -> DatasetSchema:
    """Two classes with categoricals: the linear member one-hot encodes them, the trees
    number them by target, so each member has its own column map."""
    generated = datasets.synthetic(
        800, task="classification", metric="roc_auc", n_numeric=4, n_categorical=2,
        missing=0.08, name="binary-mixed", seed=11,
    )  # fmt: skip
    return datasets.write_dataset_version(root, generated)


BLEND_GENERATORS: dict[str, Callable[[Path], DatasetSchema]] = {
    "binary": _binary_mixed,
    "multiclass": partial(datasets.multiclass_mixed, rows=800),
    "regression": partial(datasets.regression_prices, rows=800),
    "prices": partial(datasets.used_car_prices, rows=1500),
}


@dataclass(frozen=True)
class FittedBlend:
    schema: DatasetSchema
    pipelines: tuple[Pipeline, ...]
    weights: tuple[float, ...]
    onnx: bytes
    train: Split
    validation: Split


def fit_blend(
    tmp_path: Path,
    kind: str,
    families: tuple[CandidateName, ...] = BLEND_FAMILIES,
    weights: tuple[float, ...] = BLEND_WEIGHTS,
    *,
    log_target: bool = False,
) -> FittedBlend:
    """The families fitted by training's code and blended as training blends them
    (``log_target``: the trees fitted on log(target), the linear model never)."""
    schema = BLEND_GENERATORS[kind](tmp_path / "version")
    paths = SageMakerPaths.for_version(tmp_path / "version", tmp_path)
    train = load_split(paths.train, schema, "train")
    validation = load_split(paths.validation, schema, "validation")
    hp = Hyperparameters(
        n_estimators=30, early_stopping_rounds=5, max_trials=1, candidates=families
    )
    built = build_candidates(schema, hp, num_gpus=0, n_jobs=1)
    if log_target:
        for name in set(families) - {"linear"}:
            built[name].steps[-1] = ("model", with_log_target(built[name].named_steps["model"]))
    pipelines = tuple(
        fit_candidate(name, built[name], schema, train, validation).pipeline for name in families
    )
    graph = blend_graphs([to_onnx(p, schema) for p in pipelines], weights, schema)
    native = NativeBlend(pipelines, weights, schema.task)
    return FittedBlend(schema, pipelines, weights,
                       with_explanation(graph, native, schema, train.feeds),
                       train, validation)  # fmt: skip


def _user_feature_map(pipeline: Pipeline, schema: DatasetSchema) -> NDArray[np.intp]:
    """Each encoded column's user feature, from scikit-learn's own output names (a one-hot
    column is named after its input column and category), independently of the table."""
    inputs = {graph_name: index for index, graph_name in enumerate(_input_names(schema))}
    mapped = []
    for name in pipeline.named_steps["features"].get_feature_names_out():
        column = name.split("__", 1)[1]
        source = max((i for i in inputs if column == i or column.startswith(f"{i}_")), key=len)
        mapped.append(inputs[source])
    return np.array(mapped, dtype=np.intp)


def _input_names(schema: DatasetSchema) -> list[str]:
    from functions.shared.features import onnx_input_names

    names = onnx_input_names(schema.features)
    return [names[f.name] for f in schema.features]


def _member_reference(
    pipeline: Pipeline, x: NDArray[np.float64], train: NDArray[np.float64], targets: Any
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """A member's exact values by the references: (encoded columns, base, margin) per row of
    the explained target: the boosters' own pred_contribs, shap's LinearExplainer."""
    model = pipeline.named_steps["model"]
    rows = np.arange(x.shape[0])
    if isinstance(model, xgboost.XGBModel):
        matrix = xgboost.DMatrix(x)
        booster, last = model.get_booster(), (0, model.best_iteration + 1)
        full = booster.predict(matrix, pred_contribs=True, iteration_range=last)
        full = _explained(full, targets)
        margin = booster.predict(matrix, output_margin=True, iteration_range=last)
        margin = margin[rows, targets] if margin.ndim == 2 else margin
        return full[:, :-1], full[:, -1], np.asarray(margin, np.float64)
    if isinstance(model, LGBMModel):
        # a log target's predict answers exp of everything: its booster's are the raw ones
        predict = model.booster_.predict if uses_log_target(model) else model.predict
        full = np.asarray(predict(x, pred_contrib=True))
        margin = np.asarray(predict(x, raw_score=True))
        if margin.ndim == 2:  # multiclass: classes side by side
            full = full.reshape(x.shape[0], -1, x.shape[1] + 1)
            margin = margin[rows, targets]
        full = _explained(full, targets)
        return full[:, :-1], full[:, -1], np.asarray(margin, np.float64)
    masker = shap.maskers.Independent(train, max_samples=train.shape[0])
    explainer = shap.LinearExplainer(model, masker)
    values = np.asarray(explainer.shap_values(x))
    base = np.atleast_1d(np.asarray(explainer.expected_value, np.float64))
    scored = model.decision_function if hasattr(model, "decision_function") else model.predict
    margin = np.asarray(scored(x), np.float64)
    if values.ndim == 3:  # (rows, columns, classes)
        values = np.moveaxis(values, 2, 1)
        return _explained(values, targets), base[targets], margin[rows, targets]
    return values, np.full(x.shape[0], base[0]), margin


def _blend_reference(
    blend: FittedBlend, targets: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The weighted sum of the members' reference values per user feature, their bases and
    their margins, on the validation rows, for the class ``targets`` names per row."""
    expected = np.zeros((targets.size, len(blend.schema.features)))
    base = np.zeros(targets.size)
    margin = np.zeros(targets.size)
    for pipeline, weight in zip(blend.pipelines, blend.weights, strict=True):
        features = pipeline.named_steps["features"]
        x = np.asarray(features.transform(blend.validation.frame), np.float64)
        train = np.asarray(features.transform(blend.train.frame), np.float64)
        columns, member_base, member_margin = _member_reference(pipeline, x, train, targets)
        mapping = np.zeros((x.shape[1], expected.shape[1]))
        mapping[np.arange(x.shape[1]), _user_feature_map(pipeline, blend.schema)] = 1.0
        expected += weight * columns @ mapping
        base += weight * member_base
        margin += weight * member_margin
    return expected, base, margin


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_a_blends_contributions_are_the_weighted_sum_of_its_members_exact_values(
    tmp_path: Path, kind: str
) -> None:
    # Given a linear model, XGBoost and LightGBM blended into one graph, as training ships it
    blend = fit_blend(tmp_path, kind)
    card = _card(blend.schema, blend.onnx)
    explaining = ExplainingModel(
        blend.onnx, ScoringModel(blend.onnx, card, expected_sha256=card.onnx.sha256)
    )
    # When its validation rows are explained
    scores, contributions = explaining.run(blend.validation.feeds)
    by_feature = explaining.by_feature(contributions)
    # Then per user feature, and for the base, they are the weighted sum of each member's
    # reference values (the boosters' pred_contribs, shap's LinearExplainer), each member's
    # encoded columns summed back to the user's features by its own encoding
    targets = contributions.targets
    expected, base, margin = _blend_reference(blend, targets)
    # (the linear member's one-hot columns outnumber the trees' target-ordered ones; with
    # three classes there is no one target order, and every member one-hot encodes)
    assert len({m.size for m in explaining.table.column_maps}) == (1 if kind == "multiclass" else 2)
    scale = float(np.abs(contributions.margin).max())
    assert_close(by_feature, expected, scale)
    assert_close(contributions.base, base, scale)
    # And base plus contributions is the weighted sum of the members' margins, as stated
    assert_close(contributions.margin, margin, scale)
    np.testing.assert_allclose(
        contributions.base + by_feature.sum(axis=1), contributions.margin, atol=1e-9
    )
    expected_output = {"binary": "weighted_log_odds", "multiclass": "weighted_logit"}
    assert explaining.table.output == expected_output.get(kind, "value")
    if kind == "regression":  # a blend of values: the sum is the served prediction itself
        served = np.asarray(scores.values, np.float64)
        assert_close(contributions.margin, served, scale)
    elif kind == "multiclass":  # the predicted class is explained
        np.testing.assert_array_equal(targets, np.asarray(scores.codes))


# --- trees fitted on log(target) -----------------------------------------------------------


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_log_target_trees_are_explained_exactly_in_log_space(tmp_path: Path, family: str) -> None:
    # Given a tree family fitted on log(price), exported as training exports it (ending in Exp)
    fitted = fit(tmp_path, "prices", family, log_target=True)
    assert uses_log_target(fitted.native)
    # When its validation rows are explained
    scores, contributions, explaining = fitted.explain(fitted.validation)
    # Then the output is the log of the value served
    assert explaining.table.output == "log_value"
    # And each encoded column and the base are the booster's own TreeSHAP of its margin
    x = fitted.encoded(fitted.validation)
    if family == "xgboost":
        booster, last = fitted.native.get_booster(), (0, fitted.native.best_iteration + 1)
        reference = booster.predict(xgboost.DMatrix(x), pred_contribs=True, iteration_range=last)
        margin = booster.predict(xgboost.DMatrix(x), output_margin=True, iteration_range=last)
    else:  # the log target's predict answers exp: its booster's are the raw values
        reference = fitted.native.booster_.predict(x, pred_contrib=True)
        margin = fitted.native.booster_.predict(x, raw_score=True)
    scale = float(np.abs(contributions.margin).max())
    assert_close(contributions.columns, reference[:, :-1], scale)
    assert_close(contributions.base, reference[:, -1], scale)
    assert_close(contributions.margin, np.asarray(margin, np.float64), scale)
    # And base + contributions is the log of the served prediction: its exp is what serves
    served = np.asarray(scores.values, np.float64)
    total = contributions.base + contributions.columns.sum(axis=1)
    np.testing.assert_allclose(np.exp(total), served, rtol=1e-4)
    np.testing.assert_allclose(np.exp(total), fitted.pipeline.predict(fitted.validation.frame),
                               rtol=1e-4)  # fmt: skip


def test_a_blend_of_log_target_trees_is_explained_as_its_members_weighted_logs(
    tmp_path: Path,
) -> None:
    # Given XGBoost and LightGBM, both fitted on log(price), blended into one graph
    weights = tuple(float(np.float32(w)) for w in (0.56, 0.44))
    blend = fit_blend(tmp_path, "prices", ("xgboost", "lightgbm"), weights, log_target=True)
    card = _card(blend.schema, blend.onnx)
    explaining = ExplainingModel(
        blend.onnx, ScoringModel(blend.onnx, card, expected_sha256=card.onnx.sha256)
    )
    # When its validation rows are explained
    scores, contributions = explaining.run(blend.validation.feeds)
    by_feature = explaining.by_feature(contributions)
    # Then the output is the weighted sum of the members' logs, each member's part its
    # booster's own TreeSHAP values
    assert explaining.table.output == "weighted_log_value"
    expected, base, margin = _blend_reference(blend, contributions.targets)
    scale = float(np.abs(contributions.margin).max())
    assert_close(by_feature, expected, scale)
    assert_close(contributions.base, base, scale)
    assert_close(contributions.margin, margin, scale)
    # And that sum is the log of the members' weighted geometric mean, as stated ...
    members = np.stack([p.predict(blend.validation.frame) for p in blend.pipelines], axis=1)
    geometric = np.exp(np.log(members) @ np.array(weights))
    np.testing.assert_allclose(np.exp(contributions.margin), geometric, rtol=1e-4)
    # ... not of the served (arithmetic) mean, which is at least as large
    served = np.asarray(scores.values, np.float64)
    np.testing.assert_allclose(served, members @ np.array(weights), rtol=1e-5)
    assert np.all(served >= np.exp(contributions.margin) * (1 - 1e-5))
    assert np.any(served > np.exp(contributions.margin) * (1 + 1e-4))


def test_a_blend_mixing_log_and_raw_targets_has_no_table_and_says_why(tmp_path: Path) -> None:
    # Given a linear model (on the price) blended with XGBoost fitted on log(price)
    blend = fit_blend(tmp_path, "prices", ("linear", "xgboost"), (0.5, 0.5), log_target=True)
    # Then the model file carries no table, and the reason in its place
    entries = metadata_entries(blend.onnx)
    assert METADATA_KEY not in entries
    reason = entries[ABSENT_KEY].decode()
    assert "LogTargetXGBRegressor" in reason and "Ridge" in reason
    # And opening it to explain is the error the route answers not_explainable with, naming why
    card = _card(blend.schema, blend.onnx)
    scoring = ScoringModel(blend.onnx, card, expected_sha256=card.onnx.sha256)
    with pytest.raises(ExplanationTableError) as raised:
        ExplainingModel(blend.onnx, scoring)
    assert str(raised.value) == f"its model file carries no explanation table: {reason}"
    assert "mixes members fitted on log(target) (LogTargetXGBRegressor) with members fitted on " \
        "the target itself (Ridge)" in reason  # fmt: skip


# --- every class ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_every_class_of_a_multiclass_model_equals_the_boosters_own_values(
    tmp_path: Path, family: str
) -> None:
    # Given a multiclass booster as training exports it
    fitted = fit(tmp_path, "multiclass", family)
    card = _card(fitted.schema, fitted.onnx)
    explaining = ExplainingModel(
        fitted.onnx, ScoringModel(fitted.onnx, card, expected_sha256=card.onnx.sha256)
    )
    # When every class of the validation rows is explained
    _, predicted, every = explaining.run_classes(fitted.validation.feeds)
    # Then there is one explanation per class, each the booster's own TreeSHAP of that class
    classes = len(fitted.schema.classes or [])
    assert len(every) == classes == 3
    x = fitted.encoded(fitted.validation)
    rows = np.arange(x.shape[0])
    for k, contributions in enumerate(every):
        targets = np.full(x.shape[0], k, dtype=np.int64)
        if family == "xgboost":
            model = fitted.native
            reference = model.get_booster().predict(
                xgboost.DMatrix(x),
                pred_contribs=True,
                iteration_range=(0, model.best_iteration + 1),
            )
        else:
            reference = np.asarray(fitted.native.predict(x, pred_contrib=True))
            reference = reference.reshape(x.shape[0], -1, x.shape[1] + 1)
        reference = _explained(reference, targets)
        scale = float(np.abs(contributions.margin).max())
        assert_close(contributions.columns, reference[:, :-1], scale)
        assert_close(contributions.base, reference[:, -1], scale)
    # And the predicted class's is the one explained by default
    chosen = np.stack([c.margin for c in every], axis=1)[rows, predicted.targets]
    np.testing.assert_allclose(chosen, predicted.margin, atol=1e-12)


def test_every_class_of_a_multiclass_blend_is_its_members_weighted_values(tmp_path: Path) -> None:
    # Given a multiclass blend of the three families
    blend = fit_blend(tmp_path, "multiclass")
    card = _card(blend.schema, blend.onnx)
    explaining = ExplainingModel(
        blend.onnx, ScoringModel(blend.onnx, card, expected_sha256=card.onnx.sha256)
    )
    # When every class is explained
    _, _, every = explaining.run_classes(blend.validation.feeds)
    # Then each class's values are the members' references for that class, weighted
    assert len(every) == 3
    for k, contributions in enumerate(every):
        targets = np.full(contributions.base.size, k, dtype=np.int64)
        expected, base, margin = _blend_reference(blend, targets)
        scale = float(np.abs(contributions.margin).max())
        assert_close(explaining.by_feature(contributions), expected, scale)
        assert_close(contributions.base, base, scale)
        assert_close(contributions.margin, margin, scale)


# --- the route ------------------------------------------------------------------------------


def _explain(api: Api, instances: list[dict[str, Any]], **options: Any) -> Any:
    body = json.dumps({"instances": instances, **options})
    return api.call("POST", f"/v1/models/{DATASET}:explain", body)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_explain_answers_predictions_and_contributions_in_the_users_names(
    trained_models: dict[str, TrainedModel], kind: str
) -> None:
    # Given the live model of a kind, and test rows as a client sends them
    model = trained_models[kind]
    api = Api()
    api.publish(model, run="run-1")
    _, instances = client_rows(model, rows=25)
    # When they are explained
    reply = _explain(api, instances)
    # Then the answer is an ExplainResponse whose predictions are the predict route's
    assert reply.status == 200, reply.body
    body = ExplainResponse.model_validate(reply.body)
    assert reply.served_version == body.model_version
    predicted = PredictResponse.model_validate(api.predict(instances).body)
    assert [e.prediction for e in body.explanations] == predicted.predictions
    names = [f.name for f in model.card.features]
    for explanation in body.explanations:
        # one contribution per feature, by the user's name, adding up to the stated output
        assert list(explanation.contributions) == names
        total = explanation.base_value + sum(explanation.contributions.values())
        assert total == pytest.approx(explanation.output_value, rel=1e-9, abs=1e-9)
        if kind == "regression":
            assert explanation.output == "value"
            assert explanation.explained_class is None
            assert explanation.output_value == pytest.approx(explanation.prediction, rel=1e-5)
        elif kind == "binary":
            assert explanation.output == "log_odds"
            assert explanation.explained_class == model.card.classes[1]
            # the calibrated graph's log-odds: its margin over its temperature
            assert 1 / (1 + np.exp(-explanation.output_value)) == pytest.approx(
                explanation.probability, abs=1e-5
            )
        else:
            assert explanation.output == "logit"
            assert explanation.explained_class == explanation.prediction.label


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_explain_answers_every_class_when_asked(
    trained_models: dict[str, TrainedModel], kind: str
) -> None:
    # Given the live model of a kind, and test rows
    model = trained_models[kind]
    api = Api()
    api.publish(model, run="run-1")
    _, instances = client_rows(model, rows=10)
    # When they are explained for every class
    reply = _explain(api, instances, classes="all")
    # Then each explanation is the default one, plus one explanation per class
    assert reply.status == 200, reply.body
    body = ExplainResponse.model_validate(reply.body)
    default = ExplainResponse.model_validate(_explain(api, instances).body)
    assert [e.model_copy(update={"classes": None}) for e in body.explanations] == list(
        default.explanations
    )
    assert all(e.classes is None for e in default.explanations)  # not asked, not sent
    if kind == "regression":  # a regressor has no classes: the same answer
        assert all(e.classes is None for e in body.explanations)
        return
    names = [f.name for f in model.card.features]
    for explanation in body.explanations:
        assert explanation.classes is not None
        assert [c.explained_class for c in explanation.classes] == model.card.classes
        for each in explanation.classes:
            assert list(each.contributions) == names
            total = each.base_value + sum(each.contributions.values())
            assert total == pytest.approx(each.output_value, rel=1e-9, abs=1e-9)
        # the explained class's entry is the explanation itself
        same = next(
            c for c in explanation.classes if c.explained_class == explanation.explained_class
        )
        assert same.output_value == explanation.output_value
        assert same.contributions == explanation.contributions
        # and the classes' outputs are the served probabilities' log-odds / logits
        outputs = np.array([c.output_value for c in explanation.classes])
        served = np.array([c.probability for c in explanation.classes])
        if kind == "binary":
            assert outputs[0] == -outputs[1]
            assert 1 / (1 + np.exp(-outputs[1])) == pytest.approx(served[1], abs=1e-5)
        else:
            softmax = np.exp(outputs - outputs.max()) / np.exp(outputs - outputs.max()).sum()
            np.testing.assert_allclose(softmax, served, atol=1e-5)


def test_explain_refuses_an_unknown_classes_option(
    trained_models: dict[str, TrainedModel],
) -> None:
    model = trained_models["multiclass"]
    api = Api()
    api.publish(model, run="run-1")
    _, instances = client_rows(model, rows=1)
    assert_error(
        _explain(api, instances, classes="some"), 422, "invalid_request", mentions="classes"
    )
    assert _explain(api, instances, classes="predicted").status == 200


def test_every_class_of_too_many_instances_is_refused_saying_how_many_fit(
    trained_models: dict[str, TrainedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a multiclass model and an answer limit that two instances' every class fills
    model = trained_models["multiclass"]
    features, classes = len(model.card.features), len(model.card.classes or [])
    monkeypatch.setattr(logic, "MAX_CLASS_CONTRIBUTIONS", 2 * classes * features)
    api = Api()
    api.publish(model, run="run-1")
    _, instances = client_rows(model, rows=3)
    # When three instances ask for every class: refused, saying how many fit
    reply = _explain(api, instances, classes="all")
    assert_error(reply, 413, "too_many_instances", mentions="send at most 2 instances")
    # And two are answered, as are three with the predicted class only
    assert _explain(api, instances[:2], classes="all").status == 200
    assert _explain(api, instances).status == 200


def test_explain_answers_for_a_shipped_blend(tmp_path: Path) -> None:
    # Given a blend that training shipped (on prices, the linear model's and LightGBM's errors
    # partly cancel: test_training_ensemble.py) live behind the route
    hp = Hyperparameters(n_estimators=40, early_stopping_rounds=5, max_trials=1)
    model = train_model(tmp_path, "regression", hp)
    assert model.card.chosen == ENSEMBLE
    api = Api()
    api.publish(model, run="run-1")
    _, instances = client_rows(model, rows=10)
    # When its predictions are explained
    reply = _explain(api, instances)
    # Then they are, in the user's names, adding up to the blend's prediction
    assert reply.status == 200, reply.body
    body = ExplainResponse.model_validate(reply.body)
    names = [f.name for f in model.card.features]
    for explanation in body.explanations:
        assert explanation.output == "value"
        assert list(explanation.contributions) == names
        total = explanation.base_value + sum(explanation.contributions.values())
        assert total == pytest.approx(explanation.output_value, rel=1e-9)
        assert explanation.output_value == pytest.approx(explanation.prediction, rel=1e-5)


def test_explain_of_a_model_without_a_table_is_a_422(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given a live model whose file was written before explanations existed
    model = trained_models["regression"]
    stripped = onnx.load_from_string(model.onnx)
    del stripped.metadata_props[:]
    data = stripped.SerializeToString()
    sha256 = hashlib.sha256(data).hexdigest()
    card = model.card.model_copy(
        update={"onnx": model.card.onnx.model_copy(update={"sha256": sha256})}
    )
    api = Api()
    api.publish(dataclasses.replace(model, onnx=data, card=card), run="run-1")
    _, instances = client_rows(model, rows=2)
    # When it is asked to explain, twice
    first, second = _explain(api, instances), _explain(api, instances)
    # Then it refuses with a 422 that says why, and reads the file only once to know it
    assert_error(first, 422, "not_explainable", mentions="no explanation table")
    assert second.body == first.body
    assert api.predict(instances).status == 200
    model_reads = [key for _, key in api.store.reads if key.endswith(".onnx")]
    assert len(model_reads) == 2  # the predict session's load and the one explain load


def test_explain_of_a_model_training_could_not_explain_says_why(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given a live model whose file carries, instead of a table, the reason training wrote
    # (as a blend mixing log-target trees with a linear model ships)
    model = trained_models["regression"]
    edited = onnx.load_from_string(model.onnx)
    del edited.metadata_props[:]
    entry = edited.metadata_props.add()
    entry.key, entry.value = ABSENT_KEY, "the blend mixes members fitted on log(target) (...)"
    data = edited.SerializeToString()
    sha256 = hashlib.sha256(data).hexdigest()
    card = model.card.model_copy(
        update={"onnx": model.card.onnx.model_copy(update={"sha256": sha256})}
    )
    api = Api()
    api.publish(dataclasses.replace(model, onnx=data, card=card), run="run-1")
    _, instances = client_rows(model, rows=2)
    # Then explain is a 422 not_explainable that gives that reason; predict is unaffected
    reason = "no explanation table: the blend mixes members fitted on log(target)"
    assert_error(_explain(api, instances), 422, "not_explainable", mentions=reason)
    assert api.predict(instances).status == 200


def test_explain_answers_the_log_of_a_log_target_models_prediction(tmp_path: Path) -> None:
    # Given a model that training shipped fitted on log(price) (one family, searched so that
    # it tries the log) live behind the route
    hp = Hyperparameters(
        n_estimators=40, early_stopping_rounds=5, max_trials=2, candidates=("xgboost",)
    )
    # (on 3 000 rows the log is better: test_training_log_target.py)
    prices = partial(datasets.used_car_prices, rows=3000)
    model = train_model(tmp_path, "prices", hp, generate=prices)
    assert model.card.families[0].params["target"] == "log"
    api = Api()
    api.publish(model, run="run-1")
    _, instances = client_rows(model, rows=10)
    # When its predictions are explained, for the predicted class and for "all"
    reply = _explain(api, instances)
    assert reply.status == 200, reply.body
    body = ExplainResponse.model_validate(reply.body)
    assert ExplainResponse.model_validate(_explain(api, instances, classes="all").body) == body
    # Then each adds up to the log of its prediction, which is the predict route's
    predicted = PredictResponse.model_validate(api.predict(instances).body)
    assert [e.prediction for e in body.explanations] == predicted.predictions
    names = [f.name for f in model.card.features]
    for explanation in body.explanations:
        assert explanation.output == "log_value"
        assert explanation.explained_class is None and explanation.probability is None
        assert list(explanation.contributions) == names
        total = explanation.base_value + sum(explanation.contributions.values())
        assert total == pytest.approx(explanation.output_value, rel=1e-9, abs=1e-9)
        assert isinstance(explanation.prediction, float)
        assert np.exp(total) == pytest.approx(explanation.prediction, rel=1e-4)


def test_the_openapi_document_states_every_output_an_explanation_may_have() -> None:
    # the route's response model and the table's outputs are one list
    document = Api().call("GET", "/v1/openapi.json").body
    output = document["components"]["schemas"]["Explanation"]["properties"]["output"]
    assert output["enum"] == list(get_args(Output))
    assert {"log_value", "weighted_log_value"} <= set(output["enum"])


def test_explain_refuses_what_predict_refuses(trained_models: dict[str, TrainedModel]) -> None:
    model = trained_models["binary"]
    api = Api(max_instances=3)
    api.publish(model, run="run-1")
    _, instances = client_rows(model, rows=4)
    assert_error(_explain(api, instances), 413, "too_many_instances", mentions="limit is 3")
    broken = [{**instances[0], "typo": 1}]
    assert _explain(api, broken).status == 422


# --- global importance ----------------------------------------------------------------------


def test_mean_absolute_contribution_ranks_the_top_features_as_permutation_importance(
    tmp_path: Path,
) -> None:
    # Given an XGBoost classifier on six features, four of them informative
    fitted = fit(tmp_path, "binary", "xgboost", n_estimators=80)
    held_out = fitted.validation
    # When its held-out rows are explained and contributions averaged in absolute value
    _, contributions, explaining = fitted.explain(held_out)
    mean_abs = np.abs(explaining.by_feature(contributions)).mean(axis=0)
    # Then the top features are those permutation importance ranks first on the same rows (the
    # model report's measure; scikit-learn's, the report not being merged yet)
    permuted = permutation_importance(
        fitted.pipeline,
        held_out.frame,
        held_out.y,
        scoring="neg_log_loss",
        n_repeats=5,
        random_state=0,
    )
    top = 4
    by_contribution = set(np.argsort(-mean_abs)[:top].tolist())
    by_permutation = set(np.argsort(-permuted.importances_mean)[:top].tolist())
    assert by_contribution == by_permutation


def test_the_table_is_in_the_shipped_model_file(trained_models: dict[str, TrainedModel]) -> None:
    # training writes it into model.onnx itself, under the model's sha256
    for model in trained_models.values():
        assert METADATA_KEY in metadata_entries(model.onnx)
        assert hashlib.sha256(model.onnx).hexdigest() == model.card.onnx.sha256
