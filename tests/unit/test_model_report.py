"""The model report: written beside each evaluated model, its numbers those of the metrics module,
its page self-contained, its fairness gaps right on a dataset built to be biased."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from functions.evaluate.logic import evaluate
from functions.evaluate.model_report import (
    MIN_GROUP_ROWS,
    ModelReport,
    ScoredRows,
    classification_figures,
    fairness,
)
from functions.evaluate.models import EvaluateResult, EvaluationReport
from functions.evaluate.report_html import report_html
from functions.preprocess.profile import build_profile
from functions.shared import layout
from functions.shared.features import ColumnRole
from functions.shared.metrics import compute_metric, regression_report
from functions.shared.model_card import MODEL_CARD_FILE, ModelCard
from functions.shared.pipeline_state import PipelineState
from functions.shared.scoring import ScoringModel
from functions.shared.storage import parse_s3_uri
from tests.fakes import InMemoryObjectStore, InMemoryRegistry
from tests.models import ARTIFACTS, TrainedModel, fixed_now, stage_run

KINDS = ("binary", "multiclass", "regression")
EXTERNAL = re.compile(r"""(?:src|href|xlink:href)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.I)


def _evaluated(
    model: TrainedModel, *, sensitive: tuple[str, ...] = ()
) -> tuple[InMemoryObjectStore, PipelineState, EvaluateResult]:
    store, registry = InMemoryObjectStore(), InMemoryRegistry()
    state = stage_run(store, model, sensitive=sensitive)
    return store, state, evaluate(state, store=store, registry=registry, clock=fixed_now)


@pytest.fixture(scope="module")
def reports(
    trained_models: dict[str, TrainedModel],
) -> dict[str, tuple[InMemoryObjectStore, PipelineState, EvaluateResult]]:
    return {
        kind: _evaluated(
            trained_models[kind], sensitive=("region",) if kind == "multiclass" else ()
        )
        for kind in KINDS
    }


def _twin(store: InMemoryObjectStore, state: PipelineState) -> ModelReport:
    prefix = layout.model_report_prefix(state.dataset, state.training_job_name)
    return ModelReport.model_validate_json(store.get_bytes(ARTIFACTS, prefix + "report.json"))


def _evaluation(store: InMemoryObjectStore, result: EvaluateResult) -> dict[str, object]:
    report = EvaluationReport.model_validate_json(store.get_bytes(*parse_s3_uri(result.report_uri)))
    return report.challenger.report


@pytest.mark.parametrize("kind", KINDS)
def test_the_report_is_written_beside_the_model_with_its_figures_and_twin(
    kind: str, reports: dict[str, tuple[InMemoryObjectStore, PipelineState, EvaluateResult]]
) -> None:
    # Given a model evaluated by the pipeline's evaluate step
    store, state, result = reports[kind]

    # Then the page, its JSON twin and each figure sit in report/ beside the model
    prefix = layout.model_report_prefix(state.dataset, state.training_job_name)
    assert prefix.startswith(layout.model_prefix(state.dataset, state.training_job_name))
    assert result.model_report_uri == f"s3://{ARTIFACTS}/{prefix}index.html"
    page = store.get_bytes(ARTIFACTS, prefix + "index.html").decode()
    twin = _twin(store, state)
    assert twin.model_version == result.model_version
    assert f"version {result.model_version}" in page
    figures = [k for k in store.keys(ARTIFACTS, prefix + "figures/") if k.endswith(".svg")]
    expected = (
        {"confusion_matrix", "roc", "precision_recall", "reliability", "importance"}
        if kind != "regression"
        else {
            "predicted_vs_actual",
            "residuals_vs_predicted",
            "error_histogram",
            "error_by_decile",
            "importance",
        }
    )
    assert expected <= {k.rsplit("/", 1)[1].removesuffix(".svg") for k in figures}
    # and every figure file is drawn inline in the page too
    for key in figures:
        assert store.get_bytes(ARTIFACTS, key).decode() in page
    # and the report carries the gate's decision and the candidates from the card
    assert twin.gate.passed == result.passed and twin.gate.reasons == result.reasons
    card = _card(store, state)
    assert [c.name for c in twin.candidates] == [c.name for c in card.candidates]
    # and importance is in the user's feature names, with a spread per repeat
    names = {f.name for f in card.features}
    assert {f.feature for f in twin.importance.features} == names
    assert all(len(f.drops) == twin.importance.repeats for f in twin.importance.features)


def _card(store: InMemoryObjectStore, state: PipelineState) -> ModelCard:
    prefix = layout.model_prefix(state.dataset, state.training_job_name)
    return ModelCard.model_validate_json(store.get_bytes(ARTIFACTS, prefix + MODEL_CARD_FILE))


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_classification_figures_hold_the_metrics_modules_numbers(
    kind: str, reports: dict[str, tuple[InMemoryObjectStore, PipelineState, EvaluateResult]]
) -> None:
    store, state, result = reports[kind]
    twin = _twin(store, state)
    evaluation = _evaluation(store, result)
    figures = twin.classification
    assert figures is not None
    # the confusion matrix is classification_report's, and each normalised row sums to 1
    assert figures.confusion.counts == evaluation["confusion_matrix"]
    for row in figures.confusion.normalised:
        assert sum(row) == pytest.approx(1.0)
    # the ROC areas are the metric's roc_auc (binary: the positive class; else their mean)
    areas = [c.area for c in figures.roc]
    assert all(a is not None for a in areas)
    assert float(np.mean([a for a in areas if a is not None])) == pytest.approx(
        evaluation["roc_auc"], abs=1e-9
    )
    # the reliability bins give back the metric's ECE and carry its Brier score
    r = figures.reliability
    n = sum(r.count)
    ece = sum(c / n * abs(a - p) for c, a, p in zip(r.count, r.accuracy, r.confidence, strict=True))
    assert ece == pytest.approx(evaluation["ece"], abs=1e-12)
    assert r.brier == evaluation["brier"]
    # each class's probability histogram counts every test row once
    assert all(sum(h.this_class) + sum(h.other_classes) == n for h in figures.histograms)
    # the PR curves end where recall is 0 and start at recall 1
    assert all(c.x[0] == 1.0 and c.x[-1] == 0.0 for c in figures.pr)
    # and the headline figures are the evaluation's
    for key in ("accuracy", "f1_macro", "roc_auc", "log_loss"):
        assert twin.headline[key] == evaluation[key]


def test_regression_figures_hold_the_metrics_modules_numbers(
    trained_models: dict[str, TrainedModel],
    reports: dict[str, tuple[InMemoryObjectStore, PipelineState, EvaluateResult]],
) -> None:
    store, state, result = reports["regression"]
    twin = _twin(store, state)
    figures = twin.regression
    assert figures is not None
    evaluation = _evaluation(store, result)
    assert twin.headline["rmse"] == evaluation["rmse"]
    # the error histogram counts every test row
    assert sum(figures.error_histogram.counts) == twin.test_rows
    # each decile's error is regression_report's on the rows whose target is in the decile
    test = trained_models["regression"].split("test")
    y = test["price"].to_numpy(dtype=np.float64)
    assert sum(d.rows for d in figures.by_decile) == len(y)
    first = figures.by_decile[0]
    members = y <= first.high
    assert int(members.sum()) == first.rows
    pred_all = _regression_predictions(trained_models["regression"])
    expected = regression_report(y[members], pred_all[members])
    assert first.rmse == pytest.approx(expected["rmse"], rel=1e-9)
    assert first.mae == pytest.approx(expected["mae"], rel=1e-9)
    # and the scatter's points are real (actual, predicted) pairs of the test split
    pairs = set(zip(np.round(y, 2).tolist(), np.round(pred_all, 2).tolist(), strict=True))
    drawn = zip(figures.predicted_vs_actual.x[:20], figures.predicted_vs_actual.y[:20], strict=True)
    assert all(any(abs(a - x) <= 1e-3 * max(1, abs(a)) for a, _ in pairs) for x, _ in drawn)


def _regression_predictions(model: TrainedModel) -> np.ndarray:
    frame = model.split("test")
    scores = ScoringModel(model.onnx, model.card, expected_sha256=model.card.onnx.sha256).score(
        {c: frame[c].to_numpy() for c in frame.columns}
    )
    assert scores.values is not None
    return scores.values.astype(np.float64)


@pytest.mark.parametrize("kind", KINDS)
def test_the_page_fetches_nothing(
    kind: str, reports: dict[str, tuple[InMemoryObjectStore, PipelineState, EvaluateResult]]
) -> None:
    store, state, _ = reports[kind]
    prefix = layout.model_report_prefix(state.dataset, state.training_job_name)
    page = store.get_bytes(ARTIFACTS, prefix + "index.html").decode()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    # the only URL in it is the SVG namespace's name, which no renderer fetches
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    for fetches in ("<script", "<link", "@import", "url(", "<img", "<iframe"):
        assert fetches not in page.lower(), fetches


def test_a_sensitive_column_gets_group_metrics_and_gaps_in_the_report(
    reports: dict[str, tuple[InMemoryObjectStore, PipelineState, EvaluateResult]],
) -> None:
    store, state, _ = reports["multiclass"]
    twin = _twin(store, state)
    [region] = twin.fairness
    assert region.column == "region" and {g.group for g in region.groups} == {"north", "south"}
    assert sum(g.rows for g in region.groups) == twin.test_rows
    assert set(region.gaps) == {"demographic_parity_difference", "equal_opportunity_difference"}
    assert region.threshold is None and region.flagged == []


# --- fairness on a constructed biased dataset -------------------------------------------------


def _biased_binary() -> tuple[np.ndarray, ScoredRows]:
    """200 rows in group a, 100 in b, 5 in c. Every row is truly positive half the time; the
    model says positive to 80 % of a and 30 % of b, and finds 90 % of a's positives against 40 %
    of b's."""
    groups, truth, said = [], [], []
    for group, rows, said_positive, tpr in (("a", 200, 0.8, 0.9), ("b", 100, 0.3, 0.4)):
        positives = rows // 2
        found = round(positives * tpr)
        false_alarms = round(rows * said_positive) - found
        truth += [1] * positives + [0] * (rows - positives)
        said += [1] * found + [0] * (positives - found)
        said += [1] * false_alarms + [0] * (rows - positives - false_alarms)
        groups += [group] * rows
    groups += ["c"] * 5
    truth += [1, 0, 1, 0, 1]
    said += [1, 1, 1, 1, 1]
    p1 = np.where(np.array(said) == 1, 0.7, 0.2)
    proba = np.column_stack([1 - p1, p1])
    return np.array(groups, dtype=object), ScoredRows(truth=np.array(truth), proba=proba)


def test_classification_gaps_on_a_biased_dataset_are_exact_and_flagged() -> None:
    groups, rows = _biased_binary()

    column = fairness(
        "group", groups, rows, metric="accuracy", classes=["no", "yes"], threshold=0.2
    )

    by_group = {g.group: g for g in column.groups}
    assert set(by_group) == {"a", "b"}  # c has fewer than MIN_GROUP_ROWS rows
    assert column.too_small == {"c": 5} and MIN_GROUP_ROWS > 5
    assert by_group["a"].selection_rate == {"no": pytest.approx(0.2), "yes": pytest.approx(0.8)}
    assert by_group["b"].true_positive_rate is not None
    assert by_group["b"].true_positive_rate["yes"] == pytest.approx(0.4)
    assert column.gaps["demographic_parity_difference"] == pytest.approx(0.5)
    assert column.gaps["equal_opportunity_difference"] == pytest.approx(0.5)
    # the per-group metric is the metrics module's on the group's rows
    members = groups == "b"
    assert by_group["b"].metric == compute_metric(
        "accuracy",
        rows.truth[members],
        proba=rows.proba[members] if rows.proba is not None else None,
    )
    assert column.flagged == ["demographic_parity_difference", "equal_opportunity_difference"]


def test_gaps_under_the_threshold_or_without_one_are_not_flagged() -> None:
    groups, rows = _biased_binary()
    lenient = fairness(
        "group", groups, rows, metric="accuracy", classes=["no", "yes"], threshold=0.6
    )
    unset = fairness(
        "group", groups, rows, metric="accuracy", classes=["no", "yes"], threshold=None
    )
    assert lenient.flagged == [] and unset.flagged == []
    assert unset.gaps == lenient.gaps


def test_the_regression_error_gap_is_the_spread_of_group_mae() -> None:
    # Given predictions off by 1 for group a and by 4 for group b
    y = np.arange(60, dtype=np.float64)
    groups = np.array(["a"] * 30 + ["b"] * 30, dtype=object)
    pred = y + np.r_[np.full(30, 1.0), np.full(30, -4.0)]

    column = fairness(
        "group", groups, ScoredRows(truth=y, values=pred), metric="rmse", classes=[], threshold=2.0
    )

    assert {g.group: g.mae for g in column.groups} == {"a": 1.0, "b": 4.0}
    assert column.gaps == {"error_gap": pytest.approx(3.0)}
    assert column.flagged == ["error_gap"]


def test_the_twin_round_trips_as_json(
    reports: dict[str, tuple[InMemoryObjectStore, PipelineState, EvaluateResult]],
) -> None:
    store, state, _ = reports["binary"]
    prefix = layout.model_report_prefix(state.dataset, state.training_job_name)
    raw = json.loads(store.get_bytes(ARTIFACTS, prefix + "report.json"))
    assert raw["schema_version"] == 1
    assert ModelReport.model_validate(raw) == _twin(store, state)


def test_importance_is_measured_by_the_runs_metric_and_finds_the_signal(
    reports: dict[str, tuple[InMemoryObjectStore, PipelineState, EvaluateResult]],
) -> None:
    store, state, result = reports["binary"]
    twin = _twin(store, state)
    importance = twin.importance
    # a test split under the row budget is scored whole: the baseline is the gate's figure
    assert importance.rows == twin.test_rows
    assert importance.baseline == pytest.approx(result.gate.challenger, rel=1e-12)
    # and the feature the model relies on most costs it clearly more than the shuffling noise
    top = importance.features[0]
    assert top.mean > 0.01 and top.mean > 2 * top.std
    assert top.mean == pytest.approx(float(np.mean(top.drops)), abs=1e-6)


def test_champion_and_challenger_sit_side_by_side_on_the_same_rows(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given version 1 live, and the same model trained again evaluated as run-2
    model = trained_models["multiclass"]
    store, registry = InMemoryObjectStore(), InMemoryRegistry()
    first = evaluate(stage_run(store, model), store=store, registry=registry, clock=fixed_now)
    registry.promote("multiclass", first.model_version, expected_live=None, actor="t", reason="t")
    state = stage_run(store, model, run_name="run-2")

    # When it is evaluated
    evaluate(state, store=store, registry=registry, clock=fixed_now)

    # Then its report compares it with version 1 on the same rows: same labels, same figures
    comparison = _twin(store, state).comparison
    assert comparison.champion_version == 1 and comparison.scored
    assert comparison.agreement == 1.0
    pairs = {m.name: (m.challenger, m.champion) for m in comparison.metrics}
    assert pairs["f1_macro"][0] == pairs["f1_macro"][1] is not None
    # and the champion's confusion matrix is its evaluation's, drawn beside the challenger's
    assert comparison.champion_classification is not None
    twin = _twin(store, state)
    assert twin.classification is not None
    assert comparison.champion_classification.confusion == twin.classification.confusion
    figures = layout.model_report_prefix(state.dataset, state.training_job_name) + "figures/"
    assert f"{figures}champion_confusion_matrix.svg" in store.keys(ARTIFACTS, figures)


def test_the_data_section_shows_the_profile_and_each_columns_role(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given a dataset version whose schema (with column roles) and profile are stored
    model = trained_models["multiclass"]
    store, registry = InMemoryObjectStore(), InMemoryRegistry()
    schema = model.schema.model_copy(
        update={
            "columns": [
                ColumnRole(column="customer_id", use="excluded", reason="an identifier"),
                *(
                    ColumnRole(column=f.name, use="feature", kind=f.kind, reason="inferred")
                    for f in model.schema.features
                ),
            ]
        }
    )
    prefix = layout.version_prefix(schema.dataset, schema.dataset_version)
    store.put_bytes(ARTIFACTS, f"{prefix}dataset.json", schema.model_dump_json().encode())
    profile = build_profile(model.version_dir / "train" / "part-0.parquet", schema)
    store.put_bytes(ARTIFACTS, f"{prefix}profile.json", json.dumps(profile).encode())
    state = stage_run(store, model)

    # When evaluated
    evaluate(state, store=store, registry=registry, clock=fixed_now)

    # Then the report's data section carries the roles and every feature's summary
    twin = _twin(store, state)
    assert twin.profile.available
    assert twin.profile.columns[0].column == "customer_id"
    assert twin.profile.columns[0].use == "excluded"
    assert set(twin.profile.features) == {f.name for f in schema.features}
    assert twin.profile.rows["train"] == model.card.training.rows_train
    page = store.get_bytes(
        ARTIFACTS, layout.model_report_prefix(state.dataset, state.training_job_name) + "index.html"
    ).decode()
    assert "an identifier" in page


def test_names_from_the_data_are_escaped_in_the_page(
    reports: dict[str, tuple[InMemoryObjectStore, PipelineState, EvaluateResult]],
) -> None:
    # Given a report whose class and feature names are markup (they come from the user's CSV)
    store, state, _ = reports["binary"]
    twin = _twin(store, state)
    hostile = '<script>alert("x")</script>'
    assert twin.classification is not None
    figures = twin.classification.model_copy(
        update={
            "confusion": twin.classification.confusion.model_copy(
                update={"labels": [hostile, "yes"]}
            ),
            "roc": [c.model_copy(update={"label": hostile}) for c in twin.classification.roc],
        }
    )
    importance = twin.importance.model_copy(
        update={
            "features": [
                f.model_copy(update={"feature": hostile}) for f in twin.importance.features
            ]
        }
    )
    shown = twin.model_copy(
        update={"classification": figures, "importance": importance, "dataset": hostile}
    )

    # When drawn, then the names are text, never markup
    page = report_html(shown).decode()
    assert "<script" not in page and "&lt;script&gt;" in page


def test_a_class_absent_from_the_test_split_gets_no_curve_and_the_twin_stays_valid() -> None:
    # Given three classes of which the test rows hold only two
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    proba = rng.dirichlet(np.ones(3), 200)
    rows = ScoredRows(truth=truth, proba=proba, classes=("a", "b", "c"))

    figures = classification_figures(rows, ["a", "b", "c"])

    # Then only the present classes have ROC and PR curves, and the numbers survive JSON
    assert [c.label for c in figures.roc] == ["a", "b"] == [c.label for c in figures.pr]
    assert float(np.mean([c.area for c in figures.roc if c.area is not None])) == pytest.approx(
        compute_metric("roc_auc", truth, proba=proba)
    )
    assert type(figures).model_validate_json(figures.model_dump_json()) == figures
