"""Promote and reject: the end of a run, through the registry's conditional writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.evaluate.logic import evaluate
from functions.promote import handler
from functions.promote.logic import (
    PipelineStateError,
    RunOutcome,
    describe_failure,
    promote,
    reject,
)
from functions.shared.alarms import CloudWatchRetrainAlarms, alarm_prefix, alarm_specs
from functions.shared.model_card import ParityFailure
from functions.shared.notify import Decision
from functions.shared.observability import metrics, route_emf
from functions.shared.pipeline_state import EvaluationOutcome, PipelineState, StepFailure
from functions.shared.registry import ModelStatus, PromotionConflictError
from tests.fakes import InMemoryObjectStore, InMemoryRegistry, RecordingNotifier
from tests.models import TrainedModel, fixed_now, model_archive, stage_run


@pytest.fixture
def store() -> InMemoryObjectStore:
    return InMemoryObjectStore()


@pytest.fixture
def registry() -> InMemoryRegistry:
    return InMemoryRegistry()


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


STAGE = "unit"


@pytest.fixture
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


@pytest.fixture
def alarms(cloudwatch: Any) -> CloudWatchRetrainAlarms:
    return CloudWatchRetrainAlarms(cloudwatch, STAGE)


def _retraining_alarms(cloudwatch: Any) -> dict[str, dict[str, Any]]:
    """The endpoint's retraining alarms, as PutMetricAlarm's parameters."""
    found = cloudwatch.describe_alarms(AlarmNamePrefix=alarm_prefix(STAGE))["MetricAlarms"]
    keys = set(alarm_specs(STAGE, "any")[0].put_metric_alarm())
    return {a["AlarmName"]: {k: v for k, v in a.items() if k in keys} for a in found}


def _evaluated(
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    model: TrainedModel,
    run_name: str,
    **stage: float,
) -> PipelineState:
    """The state as the Gate sees it: after Evaluate's ResultSelector."""
    state = stage_run(store, model, run_name=run_name, **stage)  # type: ignore[arg-type]
    result = evaluate(state, store=store, registry=registry, clock=fixed_now)
    return state.model_copy(
        update={
            "evaluation": EvaluationOutcome(
                model_version=result.model_version,
                champion_version=result.champion_version,
                report_uri=result.report_uri,
                gate=result.gate,
            )
        }
    )


def _two_runs(
    store: InMemoryObjectStore, registry: InMemoryRegistry, model: TrainedModel
) -> tuple[PipelineState, PipelineState]:
    """A slow and a fast run, both evaluated while nothing was live: both expect no champion."""
    return _evaluated(store, registry, model, "run-slow"), _evaluated(
        store, registry, model, "run-fast"
    )


def test_promote_makes_the_challenger_live_and_notifies(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    alarms: CloudWatchRetrainAlarms,
) -> None:
    state = _evaluated(store, registry, trained_models["binary"], "run-1")
    outcome = promote(state, registry=registry, notifier=notifier, alarms=alarms)
    live = registry.live("binary")
    assert live is not None and live.version == outcome.model_version == 1
    assert [d.kind for d in notifier.published] == ["promoted"]
    assert registry.audit("binary")[-1].actor == "pipeline:run-1"


def test_a_run_that_ends_after_its_dataset_was_retired_puts_no_alarms(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    alarms: CloudWatchRetrainAlarms,
    cloudwatch: Any,
) -> None:
    # Given a run in flight when its dataset was retired (retire deleted the alarms)
    state = _evaluated(store, registry, trained_models["binary"], "run-1")
    registry.retire_dataset("binary", actor="cli:ops", reason="closed")
    # When it promotes
    outcome = promote(state, registry=registry, notifier=notifier, alarms=alarms)
    # Then the version is recorded live, and no retraining alarm is put back
    assert outcome.kind == "promoted" and outcome.alarms == []
    assert _retraining_alarms(cloudwatch) == {}


def test_a_parity_fallback_reaches_the_runs_outcome(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    alarms: CloudWatchRetrainAlarms,
) -> None:
    # Given a model whose card records that a better candidate failed parity
    model = trained_models["binary"]
    other = next(c.name for c in model.card.candidates if c.name != model.card.chosen)
    failure = ParityFailure(candidate=other, reason=f"the ONNX export of '{other}' disagrees")
    card = model.card.model_copy(update={"parity_failures": [failure]})
    archive = model_archive(model.onnx, card.model_dump_json().encode())
    state = stage_run(store, model, run_name="run-1", archive=archive)
    result = evaluate(state, store=store, registry=registry, clock=fixed_now)
    state = state.model_copy(
        update={
            "evaluation": EvaluationOutcome(
                model_version=result.model_version,
                champion_version=result.champion_version,
                report_uri=result.report_uri,
                gate=result.gate,
            )
        }
    )
    # When promoted, and when the same run is refused
    promoted = promote(state, registry=registry, notifier=notifier, alarms=alarms)
    refused = reject(state, registry=registry, notifier=notifier)
    # Then both outcomes (what `sluice status` shows) carry the card's note
    for outcome in (promoted, refused):
        assert outcome.parity_fallback == card.parity_fallback
        assert outcome.parity_fallback and f"'{other}' disagrees" in outcome.parity_fallback


def test_a_model_that_shipped_its_best_candidate_has_no_parity_fallback(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    alarms: CloudWatchRetrainAlarms,
) -> None:
    state = _evaluated(store, registry, trained_models["binary"], "run-1")
    assert (
        promote(state, registry=registry, notifier=notifier, alarms=alarms).parity_fallback is None
    )


def test_promote_retried_after_success_is_a_no_op(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    alarms: CloudWatchRetrainAlarms,
) -> None:
    # Given a promotion whose response was lost, so Step Functions retries it
    state = _evaluated(store, registry, trained_models["binary"], "run-1")
    promote(state, registry=registry, notifier=notifier, alarms=alarms)
    # When it runs again, then it succeeds without a second promotion
    again = promote(state, registry=registry, notifier=notifier, alarms=alarms)
    assert again.live_version == 1
    assert [e.action for e in registry.audit("binary")].count("promoted") == 1


def test_a_stale_run_cannot_replace_a_newer_live_model(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    alarms: CloudWatchRetrainAlarms,
) -> None:
    # Given two runs evaluated against the same (empty) registry
    slow, fast = _two_runs(store, registry, trained_models["binary"])
    # When the later one is promoted first
    promote(fast, registry=registry, notifier=notifier, alarms=alarms)
    # Then the slow run's promotion is refused and the fast run's model stays live
    with pytest.raises(PromotionConflictError):
        promote(slow, registry=registry, notifier=notifier, alarms=alarms)
    live = registry.live("binary")
    assert live is not None and live.version == fast.evaluation.model_version  # type: ignore[union-attr]


def test_reject_marks_the_candidate_and_keeps_the_champion(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    alarms: CloudWatchRetrainAlarms,
) -> None:
    # Given a live version 1 and a challenger the gate refused (an impossible threshold)
    model = trained_models["binary"]
    promote(
        _evaluated(store, registry, model, "run-1"),
        registry=registry,
        notifier=notifier,
        alarms=alarms,
    )
    refused = _evaluated(store, registry, model, "run-2", threshold=0.9999)
    # When reject runs
    outcome = reject(refused, registry=registry, notifier=notifier)
    # Then the candidate is rejected with the gate's reasons, version 1 still serves
    assert outcome.kind == "refused" and outcome.live_version == 1
    version = registry.get("binary", 2)
    assert version.status is ModelStatus.REJECTED
    assert "misses threshold" in version.status_reason
    assert notifier.published[-1].summary.endswith("version 1 keeps serving")


def test_a_failed_training_run_is_recorded_without_touching_the_registry_versions(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
) -> None:
    state = stage_run(store, trained_models["binary"], run_name="run-9").model_copy(
        update={
            "training": None,
            "failure": StepFailure(
                Error="States.TaskFailed",
                Cause=json.dumps({"FailureReason": "AlgorithmError: no rows"}),
            ),
        }
    )
    outcome = reject(state, registry=registry, notifier=notifier)
    assert outcome.kind == "run_failed"
    assert outcome.reasons == ["States.TaskFailed: AlgorithmError: no rows"]
    assert registry.versions("binary") == []
    entry = registry.audit("binary")[-1]
    assert entry.action == "run_failed" and entry.run_name == "run-9"


def test_a_run_whose_evaluate_died_after_registering_has_its_version_rejected(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
) -> None:
    # Given a run that registered version 1, then Evaluate failed: no evaluation in the state
    registered = _evaluated(store, registry, trained_models["binary"], "run-7")
    failed = registered.model_copy(
        update={
            "evaluation": None,
            "failure": StepFailure(Error="RuntimeError", Cause='{"errorMessage": "died"}'),
        }
    )
    # When reject records the failure, then the version is rejected with the cause, not left a
    # candidate whose gate decision never reached the state machine
    outcome = reject(failed, registry=registry, notifier=notifier)
    assert outcome.kind == "run_failed" and outcome.model_version == 1
    version = registry.get("binary", 1)
    assert version.status is ModelStatus.REJECTED and "RuntimeError: died" in version.status_reason
    assert registry.live("binary") is None


def test_a_failed_promotion_rejects_the_candidate(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    alarms: CloudWatchRetrainAlarms,
) -> None:
    # Given a run whose promotion lost a race (Catch → RecordFailure)
    slow, fast = _two_runs(store, registry, trained_models["binary"])
    promote(fast, registry=registry, notifier=notifier, alarms=alarms)
    failed = slow.model_copy(
        update={"failure": StepFailure(Error="PromotionConflictError", Cause="{}")}
    )
    # When reject records the failure, then the stale candidate is rejected, version 2 serves
    outcome = reject(failed, registry=registry, notifier=notifier)
    assert registry.get("binary", 1).status is ModelStatus.REJECTED
    assert outcome.live_version == 2


def test_reject_without_evaluation_or_failure_is_a_state_error(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
) -> None:
    with pytest.raises(PipelineStateError):
        reject(stage_run(store, trained_models["binary"]), registry=registry, notifier=notifier)


@pytest.mark.parametrize(
    ("error", "cause", "expected"),
    [
        ("ValueError", json.dumps({"errorMessage": "boom", "errorType": "ValueError"}), "boom"),
        # the error type is kept when the Catch's error name is another (e.g. Lambda.Unknown)
        ("E", json.dumps({"errorMessage": "boom", "errorType": "ValueError"}), "ValueError: boom"),
        ("E", json.dumps({"FailureReason": "ClientError: bad"}), "ClientError: bad"),
        ("E", "plain text", "plain text"),
        ("E", json.dumps([1, 2]), "[1, 2]"),
    ],
)
def test_failure_causes_are_made_readable(error: str, cause: str, expected: str) -> None:
    assert describe_failure(StepFailure(Error=error, Cause=cause)) == expected


class _BrokenNotifier(RecordingNotifier):
    def publish(self, decision: Decision) -> None:
        raise ConnectionError("SNS throttled")


def test_a_failed_notification_does_not_fail_a_promotion_that_happened(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    alarms: CloudWatchRetrainAlarms,
) -> None:
    # Given a run the gate passed, and a notifier that fails
    state = _evaluated(store, registry, trained_models["binary"], "run-1")
    # When promote runs, then the promotion stands and the outcome says the notice was lost
    outcome = promote(state, registry=registry, notifier=_BrokenNotifier(), alarms=alarms)
    assert outcome.kind == "promoted" and outcome.live_version == 1
    assert outcome.notify_error == "ConnectionError: SNS throttled"
    assert [e.action for e in registry.audit("binary")] == ["registered", "promoted"]


def test_a_failed_notification_does_not_fail_a_refusal(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
) -> None:
    refused = _evaluated(store, registry, trained_models["binary"], "run-1", threshold=0.9999)
    outcome = reject(refused, registry=registry, notifier=_BrokenNotifier())
    assert outcome.kind == "refused" and outcome.notify_error is not None
    assert registry.get("binary", 1).status is ModelStatus.REJECTED


def test_a_datasets_first_live_model_puts_its_retraining_alarms_as_defined(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    alarms: CloudWatchRetrainAlarms,
    cloudwatch: Any,
) -> None:
    # Given a dataset no deployment declared, and no alarm in CloudWatch
    assert _retraining_alarms(cloudwatch) == {}
    state = _evaluated(store, registry, trained_models["binary"], "run-1")
    # When its first model goes live
    outcome = promote(state, registry=registry, notifier=notifier, alarms=alarms)
    # Then its three alarms exist exactly as functions/shared/alarms.py defines them
    specs = alarm_specs(STAGE, "binary")
    assert outcome.alarms == [spec.name for spec in specs] and outcome.alarms_error is None
    assert _retraining_alarms(cloudwatch) == {spec.name: spec.put_metric_alarm() for spec in specs}
    assert {
        a[0]["Value"] for a in (p["Dimensions"] for p in _retraining_alarms(cloudwatch).values())
    } == {"binary"}


def test_putting_the_alarms_again_is_idempotent_and_mends_an_edited_one(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    alarms: CloudWatchRetrainAlarms,
    cloudwatch: Any,
) -> None:
    # Given a promotion whose alarms someone then edited by hand
    state = _evaluated(store, registry, trained_models["binary"], "run-1")
    promote(state, registry=registry, notifier=notifier, alarms=alarms)
    before = _retraining_alarms(cloudwatch)
    edited = {**before["sluice-unit.retrain.binary.drift"], "Threshold": 9.0}
    cloudwatch.put_metric_alarm(**edited)
    # When Step Functions retries the promotion
    again = promote(state, registry=registry, notifier=notifier, alarms=alarms)
    # Then the same three alarms exist, back to the definition
    assert again.alarms == list(before)
    assert _retraining_alarms(cloudwatch) == before


def test_retiring_removes_the_alarms_and_only_that_datasets(
    alarms: CloudWatchRetrainAlarms, cloudwatch: Any
) -> None:
    alarms.ensure("churn")
    alarms.ensure("churn2")
    assert alarms.remove("churn") == [s.name for s in alarm_specs(STAGE, "churn")]
    assert sorted(_retraining_alarms(cloudwatch)) == sorted(
        s.name for s in alarm_specs(STAGE, "churn2")
    )
    assert alarms.remove("churn") == [s.name for s in alarm_specs(STAGE, "churn")]  # no error


def test_a_refusal_puts_no_alarms(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    cloudwatch: Any,
) -> None:
    refused = _evaluated(store, registry, trained_models["binary"], "run-1", threshold=0.9999)
    reject(refused, registry=registry, notifier=notifier)
    assert _retraining_alarms(cloudwatch) == {}


class _DeniedAlarms(CloudWatchRetrainAlarms):
    def ensure(self, dataset: str) -> list[str]:
        raise PermissionError("not authorized to perform cloudwatch:PutMetricAlarm")


def test_alarms_that_cannot_be_put_do_not_fail_a_promotion_that_happened(
    trained_models: dict[str, TrainedModel],
    store: InMemoryObjectStore,
    registry: InMemoryRegistry,
    notifier: RecordingNotifier,
    cloudwatch: Any,
) -> None:
    # Given CloudWatch refusing the alarms
    state = _evaluated(store, registry, trained_models["binary"], "run-1")
    # When promote runs, then the model is live, the decision published, the failure reported
    outcome = promote(
        state, registry=registry, notifier=notifier, alarms=_DeniedAlarms(cloudwatch, STAGE)
    )
    live = registry.live("binary")
    assert outcome.kind == "promoted" and live is not None and live.version == 1
    assert [d.kind for d in notifier.published] == ["promoted"]
    assert outcome.alarms == []
    assert outcome.alarms_error == (
        "PermissionError: not authorized to perform cloudwatch:PutMetricAlarm"
    )


def test_the_handler_counts_alarms_it_could_not_put_under_the_datasets_dimension() -> None:
    # Given a promotion whose alarms could not be put
    outcome = RunOutcome(
        kind="promoted",
        dataset="churn",
        run_name="run-1",
        model_version=1,
        live_version=1,
        reasons=[],
        alarms_error="ClientError: throttled",
    )
    seen: list[str] = []
    try:
        route_emf(seen.append, echo=False)
        # When the handler reports it, then RetrainAlarmsNotPut is counted once, for churn
        handler._report(outcome)
        metrics.flush_metrics()
    finally:
        route_emf(None, echo=True)
    [document] = [json.loads(line) for line in seen]
    names = {m["Name"] for d in document["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert names == {"ModelPromoted", "RetrainAlarmsNotPut"}
    assert document["RetrainAlarmsNotPut"] == [1.0]
    assert document["dataset"] == "churn"
