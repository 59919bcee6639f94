"""Evaluate: challenger and champion on the same test split, the gate inputs, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from functions.evaluate.logic import (
    EvaluationError,
    ModelArtifactError,
    evaluate,
    read_model_archive,
)
from functions.evaluate.models import EvaluateResult, EvaluationReport
from functions.shared import layout
from functions.shared.metrics import compute_metric
from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE
from functions.shared.registry import ModelStatus
from functions.shared.scoring import ScoringModel
from functions.shared.storage import parse_s3_uri
from tests.fakes import InMemoryObjectStore, InMemoryRegistry
from tests.models import ARTIFACTS, TrainedModel, fixed_now, model_archive, stage_run


def _report(store: InMemoryObjectStore, uri: str) -> EvaluationReport:
    return EvaluationReport.model_validate_json(store.get_bytes(*parse_s3_uri(uri)))


def _live_first_run(
    store: InMemoryObjectStore, registry: InMemoryRegistry, model: TrainedModel
) -> EvaluateResult:
    """Evaluate run-1 of ``model`` and make it the live champion."""
    first = evaluate(
        stage_run(store, model, run_name="run-1"), store=store, registry=registry, clock=fixed_now
    )
    registry.promote(
        model.schema.dataset, first.model_version, expected_live=None, actor="test", reason="t"
    )
    return first


@pytest.fixture
def store() -> InMemoryObjectStore:
    return InMemoryObjectStore()


@pytest.fixture
def registry() -> InMemoryRegistry:
    return InMemoryRegistry()


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_first_model_is_scored_on_the_test_split_and_registered_as_candidate(
    kind: str,
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
) -> None:
    # Given a trained model and its dataset version's test split, and no live model
    model = trained_models[kind]
    state = stage_run(store, model)

    # When evaluate runs
    result = evaluate(state, store=store, registry=registry, clock=fixed_now)

    # Then the contract metric is the one computed independently on the same rows
    test = model.split("test")
    scores = ScoringModel(model.onnx, model.card, expected_sha256=model.card.onnx.sha256).score(
        {c: test[c].to_numpy() for c in test.columns}
    )
    if model.card.task == "classification":
        codes = np.array([(model.card.classes or []).index(v) for v in test[model.card.target]])
        expected = compute_metric(model.card.metric, codes, proba=scores.probabilities)
    else:
        expected = compute_metric(
            model.card.metric, test[model.card.target].to_numpy(), pred=scores.values
        )
    assert result.gate.challenger == pytest.approx(expected, rel=1e-9)
    # and with no champion the threshold alone decides, with the floor left null
    assert result.gate.champion is None and result.gate.champion_floor is None
    assert result.champion_version is None
    # and the challenger is registered as a candidate whose sha256 is the card's
    version = registry.get(model.schema.dataset, result.model_version)
    assert version.status is ModelStatus.CANDIDATE
    assert version.sha256 == model.card.onnx.sha256
    # and the model, card and report sit next to SageMaker's archive
    prefix = layout.model_prefix(model.schema.dataset, state.training_job_name)
    assert store.get_bytes(ARTIFACTS, prefix + MODEL_FILE) == model.onnx
    assert store.get_bytes(ARTIFACTS, prefix + MODEL_CARD_FILE)
    report = _report(store, result.report_uri)
    assert report.test_rows == len(test)
    assert report.decision.passed == result.passed


def test_classification_report_has_every_figure_the_issue_names(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
) -> None:
    # Given the multiclass model with a sensitive column in its test split
    model = trained_models["multiclass"]
    state = stage_run(store, model, sensitive=("region",))

    # When evaluated
    result = evaluate(state, store=store, registry=registry, clock=fixed_now)

    # Then the report holds accuracy, macro and per-class P/R/F1, AUC, log loss, confusion matrix
    report = _report(store, result.report_uri).challenger.report
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc", "log_loss"):
        assert isinstance(report[key], float), key
    per_class = report["per_class"]
    assert isinstance(per_class, dict) and set(per_class) == set(model.card.classes or [])
    matrix = report["confusion_matrix"]
    assert isinstance(matrix, list) and len(matrix) == 3
    # and group metrics per region, whose sizes add up to the test split
    groups = _report(store, result.report_uri).challenger.groups["region"]
    assert set(groups) == {"north", "south"}
    assert sum(int(str(g["rows"])) for g in groups.values()) == len(model.split("test"))
    assert all(isinstance(g["f1_macro"], float) for g in groups.values())


def test_regression_report_has_rmse_mae_r2(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
) -> None:
    model = trained_models["regression"]
    result = evaluate(stage_run(store, model), store=store, registry=registry, clock=fixed_now)
    report = _report(store, result.report_uri).challenger.report
    assert {"rmse", "mae", "r2"} <= set(report)
    assert result.gate.higher_is_better is False


def test_the_live_champion_is_scored_on_the_same_rows(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
) -> None:
    # Given version 1 evaluated and promoted
    model = trained_models["binary"]
    first = _live_first_run(store, registry, model)

    # When a second run of the same model is evaluated
    second = evaluate(
        stage_run(store, model, run_name="run-2"), store=store, registry=registry, clock=fixed_now
    )

    # Then the champion's metric equals the challenger's (same model, same rows) and the floor
    # is the champion shifted by the tolerance, in the metric's direction
    assert second.champion_version == first.model_version
    assert second.gate.champion == pytest.approx(second.gate.challenger)
    assert second.gate.champion_floor == pytest.approx(second.gate.champion - 0.01)
    assert second.passed
    report = _report(store, second.report_uri)
    assert report.champion is not None and report.champion.version == 1
    assert report.champion_note.scored


def test_a_test_split_without_a_feature_the_model_needs_fails_naming_it(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
) -> None:
    # Given a live binary model
    model = trained_models["binary"]
    _live_first_run(store, registry, model)
    # When the next run's test split lacks one of the model's features
    frame = model.split("test").drop(columns=["num_0"])
    with pytest.raises(EvaluationError, match="num_0"):
        evaluate(
            stage_run(store, model, run_name="run-2", test_frame=frame),
            store=store,
            registry=registry,
            clock=fixed_now,
        )


def test_a_tampered_champion_is_not_scored_and_the_note_says_why(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
) -> None:
    # Given a live model whose file was altered after promotion
    model = trained_models["binary"]
    _live_first_run(store, registry, model)
    live = registry.live("binary")
    assert live is not None
    store.put_bytes(*parse_s3_uri(live.model_uri), model.onnx + b"\0")

    # When a challenger is evaluated
    second = evaluate(
        stage_run(store, model, run_name="run-2"), store=store, registry=registry, clock=fixed_now
    )

    # Then the champion is not scored, the note names the sha256 mismatch, and promote would
    # still expect version 1 to be live
    note = _report(store, second.report_uri).champion_note
    assert not note.scored and "sha256" in note.reason
    assert second.champion_version == 1 and second.gate.champion is None


def test_evaluate_twice_for_one_run_registers_one_version(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
) -> None:
    state = stage_run(store, trained_models["binary"])
    first = evaluate(state, store=store, registry=registry, clock=fixed_now)
    again = evaluate(state, store=store, registry=registry, clock=fixed_now)
    assert first.model_version == again.model_version
    assert len(registry.versions("binary")) == 1


def test_an_archive_whose_model_is_not_the_cards_is_refused(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore, registry: InMemoryRegistry
) -> None:
    # Given an archive whose model.onnx was swapped for other bytes
    model = trained_models["binary"]
    other = trained_models["regression"].onnx
    state = stage_run(store, model, archive=model_archive(other, model.card_json))
    # When evaluated, then refused naming the mismatch, and nothing is registered
    with pytest.raises(ModelArtifactError, match="sha256"):
        evaluate(state, store=store, registry=registry, clock=fixed_now)
    assert registry.versions("binary") == []


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (b"not a tar at all", "not a readable tar"),
        (model_archive(b"x", b"{}")[:40], "not a readable tar|lacks"),
    ],
    ids=["garbage", "truncated-gzip"],
)
def test_broken_archives_are_refused_with_the_reason(
    archive: bytes, message: str, store: InMemoryObjectStore
) -> None:
    store.put_bytes(ARTIFACTS, "m/model.tar.gz", archive)
    with pytest.raises(ModelArtifactError, match=message):
        read_model_archive(store, f"s3://{ARTIFACTS}/m/model.tar.gz")


def test_an_archive_without_a_card_is_refused(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore
) -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(MODEL_FILE)
        info.size = len(trained_models["binary"].onnx)
        tar.addfile(info, io.BytesIO(trained_models["binary"].onnx))
    store.put_bytes(ARTIFACTS, "m/model.tar.gz", buffer.getvalue())
    with pytest.raises(ModelArtifactError, match=MODEL_CARD_FILE):
        read_model_archive(store, f"s3://{ARTIFACTS}/m/model.tar.gz")


def test_a_card_for_another_dataset_version_is_refused(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore, registry: InMemoryRegistry
) -> None:
    model = trained_models["binary"]
    card = json.loads(model.card_json)
    card["dataset_version"] = "someone-elses"
    state = stage_run(store, model, archive=model_archive(model.onnx, json.dumps(card).encode()))
    with pytest.raises(ModelArtifactError, match="someone-elses"):
        evaluate(state, store=store, registry=registry, clock=fixed_now)


def test_test_labels_the_model_never_saw_fail_loudly(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore, registry: InMemoryRegistry
) -> None:
    model = trained_models["binary"]
    frame = model.split("test")
    frame.loc[frame.index[0], "label"] = "maybe"
    with pytest.raises(EvaluationError, match="maybe"):
        evaluate(
            stage_run(store, model, test_frame=frame),
            store=store,
            registry=registry,
            clock=fixed_now,
        )


def test_a_champion_that_predicts_something_else_is_noted_not_scored(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore, registry: InMemoryRegistry
) -> None:
    # Given the dataset's live model is a regressor (the contract changed task since)
    regressor = trained_models["regression"]
    live = evaluate(
        stage_run(store, regressor, run_name="old"), store=store, registry=registry, clock=fixed_now
    )
    registry.promote("prices", live.model_version, expected_live=None, actor="t", reason="t")
    classifier = trained_models["binary"]
    state = stage_run(store, classifier, run_name="new").model_copy(update={"dataset": "prices"})
    card = classifier.card.model_copy(update={"dataset": "prices"})
    store.put_bytes(
        *parse_s3_uri(state.training.model_artifacts),  # type: ignore[union-attr]
        model_archive(classifier.onnx, card.model_dump_json().encode()),
    )
    # When a classifier is evaluated for it
    result = evaluate(state, store=store, registry=registry, clock=fixed_now)
    # Then the champion is noted, not scored, and the threshold alone decides
    note = _report(store, result.report_uri).champion_note
    assert not note.scored and "price" in note.reason
    assert result.champion_version == live.model_version and result.gate.champion is None


def test_champion_and_challenger_are_measured_by_the_runs_metric(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore, registry: InMemoryRegistry
) -> None:
    # Given a champion whose card recorded roc_auc, and a contract that now says accuracy
    model = trained_models["binary"]
    _live_first_run(store, registry, model)
    state = stage_run(store, model, run_name="run-2", threshold=0.5).model_copy(
        update={"metric": "accuracy"}
    )
    # When the same model is evaluated again
    result = evaluate(state, store=store, registry=registry, clock=fixed_now)
    # Then both figures are accuracies of the same model on the same rows: equal
    assert result.gate.metric == "accuracy"
    assert result.gate.champion == pytest.approx(result.gate.challenger)
    report = _report(store, result.report_uri)
    assert report.champion is not None
    assert report.champion.metric_value == report.challenger.report["accuracy"]


def test_a_champion_whose_files_are_gone_is_noted_and_does_not_block_the_run(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore, registry: InMemoryRegistry
) -> None:
    model = trained_models["binary"]
    _live_first_run(store, registry, model)
    live = registry.live("binary")
    assert live is not None
    del store.objects[parse_s3_uri(live.model_uri)]
    result = evaluate(
        stage_run(store, model, run_name="run-2"), store=store, registry=registry, clock=fixed_now
    )
    note = _report(store, result.report_uri).champion_note
    assert not note.scored and note.reason.startswith("cannot load the champion")
    assert result.champion_version == 1
