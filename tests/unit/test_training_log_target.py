"""A log target for the tree families of a positive, right-skewed regression (training/target.py):
who is eligible, what the estimators fit, the Exp inside the one graph, and the search's choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from pydantic import JsonValue
from sklearn.base import clone
from sklearn.linear_model import Ridge
from xgboost import XGBRegressor

from functions.shared.errors import TrainingError
from functions.shared.explanation import (
    ABSENT_KEY,
    METADATA_KEY,
    ExplanationTable,
    metadata_entries,
)
from functions.shared.features import PREDICTION_OUTPUT, DatasetSchema
from functions.shared.model_card import ModelCard
from functions.training.candidates import build_candidates, fit_candidate
from functions.training.export import to_onnx
from functions.training.parity import measure_parity
from functions.training.refit import refit_candidate
from functions.training.script_mode import CandidateName, Hyperparameters, SageMakerPaths
from functions.training.search import Searcher
from functions.training.splits import Split, load_schema, load_split
from functions.training.target import (
    LogTargetLGBMRegressor,
    LogTargetXGBRegressor,
    eligible,
    skewness,
    with_log_target,
)
from functions.training.train import train
from tests import datasets

FAST = Hyperparameters(n_estimators=60, early_stopping_rounds=5, max_trials=2, budget_seconds=600)


def _splits(root: Path, rows: int = 3000) -> tuple[DatasetSchema, Split, Split]:
    version = root / "version"
    datasets.used_car_prices(version, rows=rows)
    schema = load_schema(version / "train")
    return (
        schema,
        load_split(version / "train", schema, "train"),
        load_split(version / "validation", schema, "validation"),
    )


def test_only_a_positive_right_skewed_regression_target_is_eligible(tmp_path: Path) -> None:
    schema, train_split, _ = _splits(tmp_path)
    prices = train_split.y
    # Given used-car prices (lognormal): positive and skewed to the right
    assert skewness(prices) > 1.0
    assert eligible(schema, prices)
    # Then a zero or a negative value, a symmetric target or another task is not
    assert not eligible(schema, np.append(prices, 0.0))
    assert not eligible(schema, prices - prices.mean())
    assert not eligible(schema, np.log(prices) + 100.0)  # positive, near symmetric
    classifier = schema.model_copy(update={"task": "classification", "classes": ["a", "b"]})
    assert not eligible(classifier, prices)
    # And the synthetic prices around 200 000 (a normal target) keep the identity
    datasets.regression_prices(tmp_path / "normal", rows=600)
    normal = load_schema(tmp_path / "normal" / "train")
    assert not eligible(normal, load_split(tmp_path / "normal" / "train", normal, "train").y)


def test_the_log_target_trees_fit_the_log_and_answer_its_exp() -> None:
    # Given a positive target and the same parameters
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = np.exp(1.0 + x[:, 0] + 0.3 * rng.normal(size=400))
    params = {"n_estimators": 20, "max_depth": 3, "random_state": 0, "n_jobs": 1}
    logged = with_log_target(XGBRegressor(**params))
    # When fitted (with an early-stopping split, as training fits it)
    logged.fit(x, y, eval_set=[(x[:50], y[:50])], verbose=False)
    plain = XGBRegressor(**params).fit(x, np.log(y))
    # Then it is the plain model of log(y), answering exp
    assert isinstance(logged, LogTargetXGBRegressor)
    np.testing.assert_allclose(logged.predict(x), np.exp(plain.predict(x)), rtol=1e-6)
    assert logged.predict(x).min() > 0
    # And clone keeps the class and parameters (refit clones the pipeline)
    twin = clone(logged)
    assert isinstance(twin, LogTargetXGBRegressor) and twin.get_params() == logged.get_params()
    # And a non-positive target or an estimator without trees is refused, saying why
    with pytest.raises(TrainingError, match="positive values"):
        with_log_target(XGBRegressor(**params)).fit(x, y - y.max())
    with pytest.raises(TrainingError, match="not Ridge"):
        with_log_target(Ridge())


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_a_log_target_model_is_one_graph_ending_in_exp_and_passes_parity(
    tmp_path: Path, name: CandidateName
) -> None:
    # Given a tree family fitted on log(price), then refit on train + validation
    schema, train_split, validation = _splits(tmp_path)
    pipeline = build_candidates(
        schema, FAST.model_copy(update={"candidates": (name,)}), num_gpus=0
    )[name]
    pipeline.steps[-1] = ("model", with_log_target(pipeline.named_steps["model"]))
    fitted = fit_candidate(name, pipeline, schema, train_split, validation)
    refit = refit_candidate(fitted, schema, train_split, validation)
    assert isinstance(
        refit.pipeline.named_steps["model"], LogTargetXGBRegressor | LogTargetLGBMRegressor
    )
    assert fitted.record.params["target"] == "log"
    # When exported
    graph = to_onnx(refit.pipeline, schema)
    # Then the graph keeps the one output, computed by an Exp of the trees' output
    model = onnx.load_from_string(graph)
    assert [o.name for o in model.graph.output] == [PREDICTION_OUTPUT]
    (last,) = [n for n in model.graph.node if PREDICTION_OUTPUT in n.output]
    assert last.op_type == "Exp"
    # And it agrees with the native model within the parity tolerance
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    report = measure_parity(refit.pipeline, session, schema, validation)
    assert report.passed, report
    served = session.run([PREDICTION_OUTPUT], validation.feeds)[0].ravel()
    np.testing.assert_allclose(served, refit.pipeline.predict(validation.frame), rtol=1e-5)


def _train(root: Path, hp: Hyperparameters) -> ModelCard:
    datasets.used_car_prices(root / "version", rows=3000)
    return train(SageMakerPaths.for_version(root / "version", root), hp, num_gpus=0)


def test_each_tree_family_chooses_its_target_on_the_selection_figure(tmp_path: Path) -> None:
    # Given multiplicative used-car prices, trained twice with the same seed and trial cap
    card = _train(tmp_path / "a", FAST)
    again = _train(tmp_path / "b", FAST)
    families = {c.name: c for c in card.families}
    # Then each tree family scored its default configuration both ways and kept the log,
    # which is better on this target (rmse: lower)
    for name in ("xgboost", "lightgbm"):
        params = families[name].params
        scores = params["target_scores"]
        assert isinstance(scores, dict)
        identity, logged = scores["identity"], scores["log"]
        assert isinstance(identity, float) and isinstance(logged, float)
        assert logged < identity
        assert params["target"] == "log"
        # every trial of the family ran on the chosen target, the first with the log's figure
        trials = families[name].trials
        assert all(t.params["target"] == "log" for t in trials)
        assert trials[0].score == logged
    # And the linear family never tries it (exp of a linear extrapolation)
    assert "target_scores" not in families["linear"].params
    # And the same data and seed give the same choice and trials
    assert [
        (c.name, c.params.get("target_scores"), [t.score for t in c.trials]) for c in card.families
    ] == [
        (c.name, c.params.get("target_scores"), [t.score for t in c.trials]) for c in again.families
    ]
    # And what ships passed parity, its graph ending in Exp
    assert card.parity.passed
    model = onnx.load(tmp_path / "a" / "model" / "model.onnx")
    assert "Exp" in {n.op_type for n in model.graph.node}
    # And it is explained in log space, or (a blend with the linear model, fitted on the price
    # itself) carries the reason it is not
    entries = metadata_entries(model.SerializeToString())
    chosen = next(c for c in card.candidates if c.name == card.chosen)
    members = [m.name for m in chosen.members] or [chosen.name]
    if "linear" in members and len(members) > 1:
        assert METADATA_KEY not in entries
        assert "fitted on log(target)" in entries[ABSENT_KEY].decode()
    else:
        table = ExplanationTable.from_bytes(entries[METADATA_KEY])
        assert table.output == ("weighted_log_value" if len(members) > 1 else "log_value")


def test_the_log_is_tried_in_any_search_however_little_of_the_budget_is_left(
    tmp_path: Path,
) -> None:
    schema, train_split, validation = _splits(tmp_path)

    def searched(hp: Hyperparameters) -> dict[str, JsonValue]:
        searcher = Searcher(schema, hp, train_split, validation, num_gpus=0)
        return searcher.search("lightgbm", families_left=1).record.params

    # Given no search (one trial: the configuration as given), the target stays as it is
    unsearched = searched(FAST.model_copy(update={"max_trials": 1}))
    assert unsearched["target"] == "identity" and "target_scores" not in unsearched
    # Given a budget spent before the first evaluation ends, both targets are still scored
    # and the same one is chosen as with time to spare: the clock does not pick the target
    spent = searched(FAST.model_copy(update={"budget_seconds": 1e-3}))
    ample = searched(FAST)
    assert spent["target_scores"] == ample["target_scores"]
    assert spent["target"] == ample["target"] == "log"
