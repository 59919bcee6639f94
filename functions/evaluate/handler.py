"""Evaluate Lambda: a Step Functions task. Pipeline state in, gate inputs out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.evaluate.logic import evaluate
from functions.shared.observability import logger, metrics, tracer
from functions.shared.pipeline_deps import pipeline_deps, utc_now
from functions.shared.pipeline_state import PipelineState


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = pipeline_deps()
    state = PipelineState.model_validate(event)
    result = evaluate(state, store=deps.store, registry=deps.registry, clock=utc_now)
    logger.info(
        "evaluated",
        extra={
            "dataset": state.dataset,
            "run_name": state.run_name,
            "model_version": result.model_version,
            "gate_passed": result.passed,
            "reasons": result.reasons,
        },
    )
    metrics.add_metric("ModelEvaluated", MetricUnit.Count, 1)
    return result.model_dump(mode="json")
