"""Evaluate: challenger and champion on the same test split, the gate inputs, the report."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from functions.evaluate.logic import (
    EvaluationError,
    ModelArtifactError,
    evaluate,
    read_model_archive,
    read_test_split,
)
from functions.evaluate.models import EvaluateResult, EvaluationReport
from functions.shared import layout
from functions.shared.contract import FeatureKind
from functions.shared.features import MISSING_CATEGORY
from functions.shared.metrics import compute_metric
from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE
from functions.shared.pipeline_state import PipelineState
from functions.shared.registry import ModelStatus
from functions.shared.scoring import ScoringModel
from functions.shared.storage import parse_s3_uri
from tests.datasets import with_row_hash
from tests.fakes import InMemoryObjectStore, InMemoryRegistry
from tests.models import (
    ARTIFACTS,
    TrainedModel,
    fixed_now,
    model_archive,
    stage_run,
    train_changed,
)


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

    # Then the report holds accuracy, macro and per-class P/R/F1, AUC, log loss, Brier, ECE and
    # the confusion matrix
    report = _report(store, result.report_uri).challenger.report
    figures = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc", "log_loss")
    for key in (*figures, "brier", "ece"):
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


def test_a_champion_that_predicts_something_else_refuses_the_challenger(
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
    # Then the champion is noted, not scored, and the gate refuses naming the target change
    note = _report(store, result.report_uri).champion_note
    assert not note.scored and "price" in note.reason
    assert result.champion_version == live.model_version and result.gate.champion is None
    assert not result.gate.comparable and not result.passed
    assert "target changed: 'price' (regression) → 'label' (classification)" in result.reasons[1]


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


# -- a later upload whose columns changed ---------------------------------------------------------

NUMERIC, CATEGORICAL = FeatureKind.NUMERIC, FeatureKind.CATEGORICAL


def _with_extra_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(extra=frame["num_0"].fillna(0) * 0.5)


def _reshaped(frame: pd.DataFrame) -> pd.DataFrame:
    """The issue's second upload: one column added, one removed, one renamed, and a number
    turned into text bands."""
    bands = pd.cut(frame["num_2"], bins=[-np.inf, -0.5, 0.5, np.inf], labels=["low", "mid", "hi"])
    return (
        frame.drop(columns=["num_1"])
        .assign(
            num_2=np.where(bands.isna(), MISSING_CATEGORY, bands.astype(str)),
            channel=np.where(frame.index % 2 == 0, "web", "shop"),
        )
        .rename(columns={"num_0": "num_0_scaled"})
    )


@pytest.fixture(scope="module")
def changed_models(
    trained_models: dict[str, TrainedModel], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, TrainedModel]:
    """Binary models trained on later uploads of the binary dataset whose columns changed."""
    binary = trained_models["binary"]
    kinds = {f.name: f.kind for f in binary.card.features}
    added = {**kinds, "extra": NUMERIC}
    reshaped = {
        "num_0_scaled": NUMERIC,
        **{n: k for n, k in kinds.items() if n not in ("num_0", "num_1", "num_2")},
        "num_2": CATEGORICAL,
        "channel": CATEGORICAL,
    }
    return {
        "added": train_changed(tmp_path_factory.mktemp("added"), binary, _with_extra_column, added),
        "reshaped": train_changed(tmp_path_factory.mktemp("reshaped"), binary, _reshaped, reshaped),
    }


def test_a_challenger_whose_features_the_champion_cannot_score_is_refused_naming_the_change(
    trained_models: dict[str, TrainedModel],
    changed_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
) -> None:
    # Given version 1 live, trained on num_0..num_5
    _live_first_run(store, registry, trained_models["binary"])

    # When a model of an upload that renamed, removed, re-typed and added columns is evaluated
    result = evaluate(
        stage_run(store, changed_models["reshaped"], run_name="run-2"),
        store=store,
        registry=registry,
        clock=fixed_now,
    )

    # Then the gate refuses it, and its reasons (what status and the demo print) name each change
    assert not result.passed and not result.gate.comparable
    refusal = next(r for r in result.reasons if r.startswith("refused:"))
    for named in (
        "since live version 1",
        "removed: num_1 (numeric)",
        "renamed: num_0 → num_0_scaled (numeric)",
        "re-typed: num_2 (numeric → categorical)",
        "added: channel (categorical)",
    ):
        assert named in refusal, named
    assert not any("no live champion" in r for r in result.reasons)
    # and the report says why the champion was not scored, with the structured change
    report = _report(store, result.report_uri)
    assert not report.champion_note.scored and "num_1" in report.champion_note.reason
    change = report.gate_inputs.evidence.schema_change
    assert change is not None and [f.name for f in change.removed] == ["num_1"]
    assert report.decision.reasons == result.reasons


def test_the_contract_may_accept_a_schema_change_and_the_reason_says_so(
    trained_models: dict[str, TrainedModel],
    changed_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
) -> None:
    _live_first_run(store, registry, trained_models["binary"])
    state = stage_run(
        store, changed_models["reshaped"], run_name="run-2", accept_schema_change=True
    )
    result = evaluate(state, store=store, registry=registry, clock=fixed_now)
    assert result.gate.comparable and result.gate.champion is None and result.passed
    accepted = result.reasons[1]
    assert "accepted by the contract (accept_schema_change), threshold alone decides" in accepted
    assert "renamed: num_0 → num_0_scaled" in accepted


def test_added_columns_only_keep_the_champion_scored_on_the_same_rows(
    trained_models: dict[str, TrainedModel],
    changed_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
) -> None:
    _live_first_run(store, registry, trained_models["binary"])
    result = evaluate(
        stage_run(store, changed_models["added"], run_name="run-2"),
        store=store,
        registry=registry,
        clock=fixed_now,
    )
    # Then the champion (which ignores the new column) is scored and compared
    assert result.gate.comparable and result.gate.champion is not None
    report = _report(store, result.report_uri)
    assert report.champion is not None and report.champion_note.scored
    assert "extra" in report.champion_note.reason
    assert result.reasons[1].startswith("features added: extra (numeric) since live version 1")
    assert "vs champion" in result.reasons[2]


def test_both_models_carry_a_bootstrap_interval_into_the_report_and_the_reasons(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore, registry: InMemoryRegistry
) -> None:
    model = trained_models["binary"]
    _live_first_run(store, registry, model)
    result = evaluate(
        stage_run(store, model, run_name="run-2"), store=store, registry=registry, clock=fixed_now
    )
    report = _report(store, result.report_uri)
    assert report.champion is not None
    for score in (report.challenger, report.champion):
        interval = score.interval
        assert interval is not None and interval.resamples == 1000
        assert score.metric_value is not None
        assert interval.low < score.metric_value < interval.high
    shown = next(r for r in result.reasons if "bootstrap interval" in r)
    assert shown.startswith(f"95% bootstrap interval (1000 resamples of {report.test_rows} ")
    assert f"challenger {report.challenger.interval.low:.6g}–" in shown  # type: ignore[union-attr]
    assert "champion " in shown


def test_a_small_test_split_is_flagged_in_the_reasons(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore, registry: InMemoryRegistry
) -> None:
    # Given the multiclass model tested on 19 rows
    model = trained_models["multiclass"]
    frame = model.split("test").head(19)
    result = evaluate(
        stage_run(store, model, test_frame=frame), store=store, registry=registry, clock=fixed_now
    )
    # Then the decision warns about the split's size and about each class under 10 rows
    warnings = [r for r in result.reasons if r.startswith("warning:")]
    assert warnings[0].startswith("warning: the test split has only 19 rows (under 50)")
    counts = frame[model.card.target].value_counts()
    assert warnings[1].startswith("warning: classes with under 10 test rows: ")
    for label in model.card.classes or []:
        assert f"'{label}' {counts.get(label, 0)}" in warnings[1]


def test_a_full_test_split_has_no_size_warning(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore, registry: InMemoryRegistry
) -> None:
    result = evaluate(
        stage_run(store, trained_models["multiclass"]),
        store=store,
        registry=registry,
        clock=fixed_now,
    )
    assert not any(r.startswith("warning:") for r in result.reasons)


def test_the_state_of_an_execution_started_before_accept_schema_change_still_parses(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore
) -> None:
    # Given the state an older execution carries: no accept_schema_change at all
    document = stage_run(store, trained_models["binary"]).model_dump(mode="json")
    del document["accept_schema_change"]
    # When evaluate parses it, then the change is not accepted (the safe default)
    assert PipelineState.model_validate(document).accept_schema_change is False


# --- a format-2 test split: a channel manifest over parts ---------------------------------------

MANIFEST_URI = f"s3://{ARTIFACTS}/binary/versions/v2/channels/test.manifest"


def _put_parts(store: InMemoryObjectStore, frames: dict[str, pd.DataFrame]) -> str:
    """Each frame as a part's test file (with its row hashes) and a channel manifest listing
    them in the given order; returns the manifest's uri."""
    keys = []
    for part, frame in frames.items():
        key = f"parts/{part}/test-{part}.parquet"
        buffer = io.BytesIO()
        with_row_hash(frame.reset_index(drop=True)).to_parquet(buffer, index=False)
        store.put_bytes(ARTIFACTS, f"binary/{key}", buffer.getvalue())
        keys.append(key)
    manifest = [{"prefix": f"s3://{ARTIFACTS}/binary/"}, *keys]
    store.put_bytes(ARTIFACTS, parse_s3_uri(MANIFEST_URI)[1], json.dumps(manifest).encode())
    return MANIFEST_URI


def test_a_manifest_test_split_keeps_a_row_shared_by_parts_once_from_the_first_file(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore
) -> None:
    # Given two parts sharing row 1, listed with the later file name first
    test = trained_models["binary"].split("test").iloc[:5].reset_index(drop=True)
    uri = _put_parts(store, {"b": test.iloc[[3, 1, 4]], "a": test.iloc[[0, 1, 2]]})

    # When evaluate reads the split
    split = read_test_split(store, uri)

    # Then the rows are the five distinct ones, row 1 where file "test-a" has it, no hash column
    assert split.rows == 5
    assert list(split.columns) == list(test.columns)
    for column in test.columns:
        np.testing.assert_array_equal(split.columns[column], test[column].to_numpy())


def test_a_model_scores_the_same_on_a_version_as_parts_as_on_its_one_file(
    trained_models: dict[str, TrainedModel], store: InMemoryObjectStore, registry: InMemoryRegistry
) -> None:
    # Given the binary model's test split once as a folder, once as three parts sharing rows
    model = trained_models["binary"]
    whole = evaluate(stage_run(store, model), store=store, registry=registry, clock=fixed_now)
    other = InMemoryObjectStore()
    state = stage_run(other, model)
    test = model.split("test")
    third = len(test) // 3
    uri = _put_parts(
        other,
        {
            "p0": test.iloc[:third],
            "p1": test.iloc[third - 4 : 2 * third],
            "p2": test.iloc[2 * third - 4 :],
        },
    )
    parts = state.model_copy(update={"test_uri": uri, "data_type": "ManifestFile"})

    # When evaluate scores it as parts
    parted = evaluate(parts, store=other, registry=InMemoryRegistry(), clock=fixed_now)

    # Then the gate saw the same metric on the same rows
    assert parted.gate.challenger == whole.gate.challenger
    assert read_test_split(other, uri).rows == len(test)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda s: s.delete(ARTIFACTS, parse_s3_uri(MANIFEST_URI)[1]), "does not exist"),
        (
            lambda s: s.put_bytes(
                ARTIFACTS,
                parse_s3_uri(MANIFEST_URI)[1],
                json.dumps([{"prefix": f"s3://{ARTIFACTS}/binary/"}, "../x.parquet"]).encode(),
            ),
            "'..'",
        ),
        (lambda s: s.delete(ARTIFACTS, "binary/parts/b/test-b.parquet"), "parts/b/test-b.parquet"),
        (
            lambda s: s.put_bytes(
                ARTIFACTS,
                parse_s3_uri(MANIFEST_URI)[1],
                json.dumps([{"prefix": f"s3://{ARTIFACTS}/binary/"}, "v/dataset.json"]).encode(),
            ),
            "lists no parquet file",
        ),
    ],
)
def test_an_unreadable_manifest_test_split_fails_naming_it(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    change: Callable[[InMemoryObjectStore], object],
    says: str,
) -> None:
    test = trained_models["binary"].split("test").iloc[:4]
    _put_parts(store, {"a": test.iloc[:2], "b": test.iloc[2:]})
    change(store)
    with pytest.raises(EvaluationError, match=re.escape(MANIFEST_URI)) as failed:
        read_test_split(store, MANIFEST_URI)
    assert says in str(failed.value)
