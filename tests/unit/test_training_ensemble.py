"""Greedy ensemble selection and the blend's one-graph export: what is chosen, when a blend
ships, and that its graph reproduces the native blend (binary, multiclass and regression, with
categoricals and gaps)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from numpy.typing import NDArray
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline

from functions.inference.explain import ExplainingModel
from functions.shared.errors import TrainingError
from functions.shared.explanation import METADATA_KEY, metadata_entries
from functions.shared.features import DatasetSchema, onnx_feeds
from functions.shared.model_card import ENSEMBLE, CandidateRecord, EnsembleMember, ModelCard
from functions.shared.scoring import ScoringModel
from functions.training import ensemble as ensemble_module
from functions.training.calibration import (
    PROBABILITY_FLOOR,
    CalibratedClassifier,
    calibrate_export,
)
from functions.training.candidates import (
    FittedCandidate,
    HeldOutPredictions,
    build_candidates,
    fit_candidate,
)
from functions.training.ensemble import (
    Blend,
    NativeBlend,
    blend_graphs,
    choose_ensemble,
    held_out_score,
    select,
    tree_count,
)
from functions.training.export import append_temperature, to_onnx
from functions.training.parity import measure_parity
from functions.training.refit import refit_candidate
from functions.training.script_mode import (
    MAX_ENSEMBLE_TREES,
    CandidateName,
    Hyperparameters,
    SageMakerPaths,
)
from functions.training.splits import Split, load_split
from functions.training.train import summary, train
from tests import datasets

FAST = Hyperparameters(n_estimators=40, early_stopping_rounds=5, max_trials=1)  # no search
FAMILIES: tuple[CandidateName, ...] = ("linear", "xgboost", "lightgbm")


def _held_out(values: list[float] | NDArray[Any], y: NDArray[Any]) -> HeldOutPredictions:
    array = np.asarray(values, dtype=np.float64)
    return HeldOutPredictions(array, y, np.zeros(y.shape[0], dtype=np.intp))


# ---------------------------------------------------------------- greedy selection on toys

Y = np.array([1.0, 2.0, 3.0, 4.0])
ERROR = np.array([1.0, -1.0, 1.0, -1.0])


def test_two_candidates_with_opposite_errors_blend_half_and_half() -> None:
    # Given two regressors wrong by the same amounts in opposite directions, and a worse third
    over, under, worse = Y + ERROR, Y - ERROR, Y + 2 * ERROR
    held_out = [_held_out(v, Y) for v in (over, under, worse)]
    # When selected on rmse
    selection = select("rmse", held_out)
    # Then the first two are averaged (their errors cancel: rmse 0), the third left out
    assert selection.counts == (1, 1, 0)
    assert selection.weights == (0.5, 0.5, 0.0)
    assert selection.score == 0.0
    assert selection.singles == (1.0, 1.0, 2.0)
    # And the trajectory shows each round's figure: one alone, then the pair
    assert selection.trajectory[:2] == (1.0, 0.0)


def test_selection_is_with_replacement_and_keeps_the_best_prefix() -> None:
    # Given a good regressor and one whose error is three times as large, opposite in sign:
    # the best blend is 3 parts of the first to 1 of the second (errors 3e - 3e = 0)
    good, bad = Y + ERROR, Y - 3 * ERROR
    # When selected with enough rounds to reach 3:1
    selection = select("rmse", [_held_out(good, Y), _held_out(bad, Y)], rounds=8)
    # Then the earliest prefix that reaches zero error is kept: 3 of good, 1 of bad
    assert selection.counts == (3, 1)
    assert selection.weights == (0.75, 0.25)
    assert selection.score == pytest.approx(0.0, abs=1e-12)
    assert len(selection.trajectory) == 8


def test_selection_is_deterministic_and_ties_go_to_the_better_ranked() -> None:
    # Given two candidates with identical predictions
    same = [_held_out(Y + ERROR, Y), _held_out(Y + ERROR, Y)]
    # When selected twice
    first, second = select("rmse", same), select("rmse", same)
    # Then the result is the same, and only the first-ranked is picked
    assert first == second
    assert first.counts == (1, 0)


def test_classification_blends_probabilities() -> None:
    # Given three rows of two classes: each model is confidently wrong on a different row
    y = np.array([0, 1, 1])
    a = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])  # wrong on the last row
    b = np.array([[0.6, 0.4], [0.45, 0.55], [0.2, 0.8]])  # right everywhere, but less sure
    c = np.array([[0.3, 0.7], [0.1, 0.9], [0.1, 0.9]])  # wrong on the first row
    held_out = [_held_out(v, y) for v in (a, b, c)]
    # When selected on log loss
    selection = select("log_loss", held_out, rounds=10)
    # Then the blend's log loss beats every single model's, and is what its weights give
    assert selection.score < min(selection.singles)
    blended = sum(w * v for w, v in zip(selection.weights, (a, b, c), strict=True))
    assert selection.score == pytest.approx(
        held_out_score("log_loss", y, blended, held_out[0].fold)
    )


def test_members_and_trees_are_capped() -> None:
    # Given three regressors whose pairwise averages all improve on each alone
    held_out = [_held_out(Y + s * ERROR, Y) for s in (1.0, -1.0, -1.5)]
    # When one member is allowed, only the best single is picked
    assert select("rmse", held_out, max_members=1).counts == (1, 0, 0)
    # And when the second candidate's trees would pass the cap, it is never added
    capped = select("rmse", held_out, costs=[100, 950, 100], max_cost=1000)
    assert capped.counts[1] == 0 and capped.counts[2] > 0
    # And when no candidate fits at all, nothing is picked
    assert select("rmse", held_out, costs=[2000, 2000, 2000], max_cost=1000).members == 0


def test_k_fold_figures_are_the_mean_of_each_fold() -> None:
    # Given out-of-fold predictions over two folds of unequal error
    y = np.array([0.0, 0.0, 0.0, 0.0])
    values = np.array([1.0, 1.0, 3.0, 3.0])
    fold = np.array([0, 0, 1, 1])
    # Then the figure is the mean of the folds' rmse (as the search averages them), not the
    # pooled rmse (sqrt(5))
    assert held_out_score("rmse", y, values, fold) == pytest.approx(2.0)


def test_candidates_on_different_rows_are_refused() -> None:
    held_out = [_held_out(Y, Y), _held_out(Y[:3], Y[:3])]
    with pytest.raises(TrainingError, match="same rows and folds"):
        select("rmse", held_out)


# ------------------------------------------------------------ when a blend ships, or not


def _toy(name: CandidateName, values: NDArray[Any], y: NDArray[Any]) -> FittedCandidate:
    """A candidate whose held-out predictions are given: selection needs nothing else."""
    record = CandidateRecord(
        name=name, params={}, fit_seconds=0.1, metric_value=None, validation={}
    )
    pipeline = Pipeline([("model", Ridge())])
    return FittedCandidate(name, pipeline, record, _held_out(values, y))


def _regression_schema() -> DatasetSchema:
    return DatasetSchema(
        dataset="toy",
        dataset_version="v1",
        task="regression",
        target="y",
        metric="rmse",
        features=[{"name": "x", "kind": "numeric"}],
    )


def _unused_split() -> Split:
    """Validation rows that selection does not read: the toys bring their predictions."""
    return Split("validation", pd.DataFrame({"x": Y}), {"x": Y.reshape(-1, 1)}, Y)


def test_no_blend_when_none_beats_the_best_candidate_alone() -> None:
    # Given a perfect candidate and a noisy one
    ranked = [_toy("xgboost", Y.copy(), Y), _toy("linear", Y + ERROR, Y)]
    # When an ensemble is chosen, then none is: the best candidate ships alone
    assert choose_ensemble(ranked, _regression_schema(), _unused_split()) is None
    # And two candidates that predict alike do not blend either (equal is not better)
    twins = [_toy("xgboost", Y + ERROR, Y), _toy("linear", Y + ERROR, Y)]
    assert choose_ensemble(twins, _regression_schema(), _unused_split()) is None
    # And one candidate, or one member allowed, never blends
    assert choose_ensemble(ranked[:1], _regression_schema(), _unused_split()) is None
    complementary = [_toy("xgboost", Y + ERROR, Y), _toy("linear", Y - ERROR, Y)]
    one = choose_ensemble(complementary, _regression_schema(), _unused_split(), max_members=1)
    assert one is None


# ----------------------------------------------------------------- the blend's one graph


@dataclass(frozen=True)
class Families:
    schema: DatasetSchema
    train: Split
    validation: Split
    fitted: list[FittedCandidate]


def _binary_with_categoricals(root: Path) -> DatasetSchema:
    generated = datasets.synthetic(
        2000,
        task="classification",
        metric="roc_auc",
        n_numeric=4,
        n_categorical=2,
        missing=0.08,
        name="binary-mixed",
        seed=11,
    )
    return datasets.write_dataset_version(root, generated)


KINDS = {
    "binary": _binary_with_categoricals,
    "multiclass": datasets.multiclass_mixed,
    "regression": datasets.regression_prices,
}


@pytest.fixture(scope="module", params=list(KINDS))
def families(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Families:
    """The three families fitted on a dataset with categoricals and missing values."""
    root = tmp_path_factory.mktemp(str(request.param))
    schema = KINDS[str(request.param)](root / "version")
    train_split = load_split(root / "version" / "train", schema, "train")
    validation = load_split(root / "version" / "validation", schema, "validation")
    pipelines = build_candidates(schema, FAST, num_gpus=0)
    fitted = [
        fit_candidate(name, pipelines[name], schema, train_split, validation) for name in FAMILIES
    ]
    return Families(schema, train_split, validation, fitted)


def _blend(families: Families, weights: tuple[float, ...]) -> Blend:
    members = tuple(families.fitted)
    native = NativeBlend(tuple(m.pipeline for m in members), weights, families.schema.task)
    record = CandidateRecord(
        name=ENSEMBLE,
        params={},
        fit_seconds=0.1,
        metric_value=None,
        validation={},
        members=[
            EnsembleMember(name=m.name, weight=w, count=1)
            for m, w in zip(members, weights, strict=True)
        ],
    )
    return Blend(members, weights, record, native)


def _session(graph: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(graph, providers=["CPUExecutionProvider"])


def test_the_blend_graph_passes_parity_against_the_native_blend(families: Families) -> None:
    # Given the three families blended with unequal weights (float32, as training makes them)
    weights = tuple(float(np.float32(w)) for w in (0.5, 0.3, 0.2))
    blend = _blend(families, weights)
    # When exported as one graph and checked as any model is
    graph = blend.to_onnx(families.schema, to_onnx)
    report = measure_parity(blend.pipeline, _session(graph), families.schema, families.validation)
    # Then it matches the native blend on every validation row (categoricals and gaps included)
    assert report.passed, report
    assert report.max_scaled_diff < 1e-5
    if families.schema.task == "classification":
        assert report.label_agreement == 1.0


def test_the_blend_graph_has_a_single_models_interface(families: Families) -> None:
    # Given one family's graph and the blend's
    single = _session(to_onnx(families.fitted[0].pipeline, families.schema))
    graph = _blend(families, (0.4, 0.4, 0.2)).to_onnx(families.schema, to_onnx)
    blended = _session(graph)

    # Then inputs and outputs have the same names, types and shapes
    def interface(session: ort.InferenceSession) -> list[tuple[str, str, list[Any]]]:
        nodes = [*session.get_inputs(), *session.get_outputs()]
        return [(n.name, n.type, list(n.shape)) for n in nodes]

    assert interface(blended) == interface(single)
    # And its output is the weighted sum of each member's own graph
    feeds = families.validation.feeds
    outputs = [
        _session(to_onnx(m.pipeline, families.schema)).run(None, feeds)[-1] for m in families.fitted
    ]
    expected = 0.4 * outputs[0] + 0.4 * outputs[1] + 0.2 * outputs[2]
    np.testing.assert_allclose(blended.run(None, feeds)[-1], expected, rtol=1e-5, atol=1e-6)
    # And the members share the encoders they have in common: one imputer, not three
    ops = [n.op_type for n in onnx.load_from_string(graph).graph.node]
    assert ops.count("Imputer") == 1


# only classifiers are calibrated: the classification kinds of the module's fixture
@pytest.mark.parametrize("families", ["binary", "multiclass"], indirect=True)
def test_a_calibrated_blend_passes_parity(families: Families) -> None:
    # Given a classification blend
    assert families.schema.task == "classification"
    blend = _blend(families, (0.5, 0.25, 0.25))
    graph = blend.to_onnx(families.schema, to_onnx)
    # When its probabilities are calibrated by a temperature that changes them visibly
    calibrated = append_temperature(graph, 3.0, PROBABILITY_FLOOR)
    native = CalibratedClassifier(blend.pipeline, 3.0)
    report = measure_parity(native, _session(calibrated), families.schema, families.validation)
    # Then the calibrated graph matches the calibrated native blend
    assert report.passed, report
    # And training's own calibration step treats the blend as any classifier: its graph,
    # calibrated or not, matches the native model it returns
    exported = calibrate_export(blend.pipeline, graph, families.schema, families.validation)
    session = _session(exported.model_bytes)
    assert measure_parity(exported.native, session, families.schema, families.validation).passed


def _trees(graph: bytes) -> int:
    """The trees an exported graph holds."""
    model = onnx.load_from_string(graph)
    return len(
        {
            (node.name, tree)
            for node in model.graph.node
            if node.op_type.startswith("TreeEnsemble")
            for attribute in node.attribute
            if attribute.name == "nodes_treeids"
            for tree in attribute.ints
        }
    )


def test_tree_count_is_the_exported_graphs(families: Families) -> None:
    rows = (families.train.rows, families.train.rows + families.validation.rows)
    for candidate in families.fitted:
        # Given each family's exported graph, and its refit's on train + validation
        graph = to_onnx(candidate.pipeline, families.schema)
        refit = refit_candidate(candidate, families.schema, families.train, families.validation)
        refit_graph = to_onnx(refit.pipeline, families.schema)
        # Then tree_count counts what each graph holds (what serving pays for)
        assert tree_count(candidate.pipeline) == _trees(graph), candidate.name
        assert tree_count(candidate.pipeline, rows) == _trees(refit_graph), candidate.name


def test_blend_graphs_refuses_members_that_do_not_fit(families: Families) -> None:
    graph = to_onnx(families.fitted[0].pipeline, families.schema)
    with pytest.raises(TrainingError, match="two or more graphs"):
        blend_graphs([graph], (1.0,), families.schema)
    other = onnx.load_from_string(graph)
    other.graph.input[0].name = "renamed"
    with pytest.raises(TrainingError, match="blend member 1 has inputs"):
        blend_graphs([graph, other.SerializeToString()], (0.5, 0.5), families.schema)


# ------------------------------------------------------------------ training end to end


def _train(root: Path, hp: Hyperparameters) -> ModelCard:
    datasets.regression_prices(root / "version")
    return train(SageMakerPaths.for_version(root / "version", root), hp, num_gpus=0)


def test_training_ships_the_blend_and_the_card_lists_members_and_weights(tmp_path: Path) -> None:
    # Given prices where LightGBM's and the linear model's errors partly cancel
    card = _train(tmp_path, FAST)
    # Then the ensemble shipped, listed after the families with its members and weights
    assert card.chosen == ENSEMBLE
    ensemble = card.chosen_candidate
    assert [c.name for c in card.families] == list(FAST.candidates)
    assert card.candidates[-1] == ensemble
    assert len(ensemble.members) >= 2
    assert sum(m.weight for m in ensemble.members) == pytest.approx(1.0)
    assert all(m.weight == m.count / ensemble.params["rounds_kept"] for m in ensemble.members)
    # And it beat every family on the selection figure (rmse: lower)
    family_best = min(c.metric_value for c in card.families if c.metric_value is not None)
    assert ensemble.metric_value is not None and ensemble.metric_value < family_best
    assert ensemble.params["best_single_value"] == family_best
    assert ensemble.params["trees"] <= ensemble.params["max_trees"]
    assert ensemble.params["max_trees"] >= MAX_ENSEMBLE_TREES
    # And each member was refit on train + validation before export, the graph holding the
    # trees the card counted for the refit
    rows = card.training.rows_train + card.training.rows_validation
    assert ensemble.refit is not None and ensemble.refit.rows == card.fitted_rows == rows
    members = {m.name for m in ensemble.members}
    refits = {c.name: c.refit for c in card.families}
    assert all((refits[name] is not None) == (name in members) for name in refits)
    graph = (tmp_path / "model" / "model.onnx").read_bytes()
    assert _trees(graph) == ensemble.params["trees"]
    # And the card reads back, and the job's summary prints the blend
    written = ModelCard.model_validate_json((tmp_path / "model" / "model_card.json").read_bytes())
    assert written == card
    weights = ", ".join(f"{m.name} {m.weight:.2f}" for m in ensemble.members)
    assert f" * ensemble rmse={ensemble.metric_value:.4f}" in summary(card)
    assert f"blend of {weights} (validation)" in summary(card)
    assert all(
        f"refit {name} on {rows} train + validation rows" in summary(card) for name in members
    )


def test_a_blend_ships_with_its_members_explanation_table(tmp_path: Path) -> None:
    # Given a blend that shipped
    card = _train(tmp_path, FAST)
    assert card.chosen == ENSEMBLE
    graph = (tmp_path / "model" / "model.onnx").read_bytes()
    # Then its file carries a table of its members with the card's weights
    assert METADATA_KEY in metadata_entries(graph)
    scoring = ScoringModel(graph, card, expected_sha256=card.onnx.sha256)
    explaining = ExplainingModel(graph, scoring)
    ensemble = next(c for c in card.candidates if c.name == ENSEMBLE)
    assert ensemble.members is not None
    weights = [m.weight for m in ensemble.members]
    np.testing.assert_allclose(explaining.table.weights, weights, rtol=1e-6)
    assert explaining.table.output == "value"
    # And the blend's prediction is what its explanation adds up to (a blend of regressors
    # averages values)
    rows = pd.read_parquet(tmp_path / "version" / "validation" / "part-0.parquet").head(5)
    columns = {c: rows[c].to_numpy() for c in rows.columns}
    scores, contributions = explaining.run(onnx_feeds(card.features, columns, card.input_names))
    assert scores.values is not None
    np.testing.assert_allclose(contributions.margin, scores.values, rtol=1e-5)
    # And the scoring path still reads a blend as any model
    assert np.array_equal(scoring.score(columns).values, scores.values)


def test_one_member_allowed_trains_no_ensemble(tmp_path: Path) -> None:
    card = _train(tmp_path, FAST.model_copy(update={"max_ensemble_members": 1}))
    assert card.chosen in FAMILIES
    assert card.families == card.candidates


def test_a_blend_that_fails_parity_falls_back_to_the_best_family(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a blend graph whose weights sum to a half (a merge that runs and is wrong)
    real = ensemble_module.blend_graphs

    def skewed(graphs: list[bytes], weights: tuple[float, ...], schema: DatasetSchema) -> bytes:
        return real(graphs, tuple(w / 2 for w in weights), schema)

    monkeypatch.setattr(ensemble_module, "blend_graphs", skewed)
    # When trained
    card = _train(tmp_path, FAST)
    # Then the blend was tried first, failed parity, and the best family shipped
    (failure,) = card.parity_failures
    assert failure.candidate == ENSEMBLE
    assert "the ONNX export of 'ensemble' disagrees" in failure.reason
    best = min(card.families, key=lambda c: c.metric_value or np.inf)  # rmse: lower
    assert card.chosen == best.name
    assert card.parity.passed
    # And the blend's record stays in the card: what was tried, and why it did not ship
    assert card.candidates[-1].name == ENSEMBLE
