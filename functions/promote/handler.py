"""Promote and Reject Lambdas: two Step Functions tasks from one package (one zip, two handler
strings), because both end a run through the same registry and notifier."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.promote.logic import RunOutcome, promote, reject
from functions.shared.observability import logger, metrics, tracer
from functions.shared.pipeline_deps import pipeline_deps
from functions.shared.pipeline_state import PipelineState

_METRIC = {"promoted": "ModelPromoted", "refused": "GateRejected", "run_failed": "RunFailed"}


def _report(outcome: RunOutcome) -> dict[str, Any]:
    logger.info("run decided", extra=outcome.model_dump(mode="json"))
    metrics.add_dimension("dataset", outcome.dataset)
    metrics.add_metric(_METRIC[outcome.kind], MetricUnit.Count, 1)
    if outcome.notify_error is not None:
        logger.error("decision not published", extra={"error": outcome.notify_error})
        metrics.add_metric("DecisionNotPublished", MetricUnit.Count, 1)
    if outcome.alarms_error is not None:
        logger.error("retraining alarms not put", extra={"error": outcome.alarms_error})
        metrics.add_metric("RetrainAlarmsNotPut", MetricUnit.Count, 1)
    return outcome.model_dump(mode="json")


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def promote_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = pipeline_deps()
    state = PipelineState.model_validate(event)
    return _report(
        promote(state, registry=deps.registry, notifier=deps.notifier, alarms=deps.alarms)
    )


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def reject_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = pipeline_deps()
    state = PipelineState.model_validate(event)
    return _report(reject(state, registry=deps.registry, notifier=deps.notifier))
