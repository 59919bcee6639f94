"""Retrain Lambda: a retraining alarm entering ALARM starts a guarded run over the dataset's
current data; a run ending releases the guard (logic.py). Both arrive from EventBridge."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from functions.retrain.guard import GuardPolicy
from functions.retrain.guard_store import DecisionRecord, DynamoDBGuardStore
from functions.retrain.logic import (
    ALARM_EVENT,
    RUN_EVENT,
    RetrainEventError,
    on_alarm,
    on_run_end,
    parse_alarm,
)
from functions.shared.observability import logger, metrics, tracer
from functions.shared.orchestration import StepFunctionsOrchestrator
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.storage import S3ObjectStore

_METRIC = {
    "started": "RetrainStarted",
    "skipped": "RetrainSkipped",
    "start_failed": "RetrainStartFailed",
    "finished": "RetrainFinished",
}


class Settings(BaseModel):
    """Environment, validated once per cold start; the guard's limits are optional overrides
    (``GuardPolicy``'s defaults are documented in docs/decisions.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    RAW_BUCKET: str
    ARTIFACTS_BUCKET: str
    REGISTRY_TABLE: str
    STATE_MACHINE_ARN: str
    RETRAIN_DEBOUNCE_SECONDS: int | None = None
    RETRAIN_MAX_RUNS_PER_DAY: int | None = None
    RETRAIN_MIN_NEW_ROWS: int | None = None
    RETRAIN_MIN_NEW_FRACTION: float | None = None
    RETRAIN_IN_FLIGHT_TIMEOUT_SECONDS: int | None = None

    def policy(self) -> GuardPolicy:
        overrides = {
            "debounce_seconds": self.RETRAIN_DEBOUNCE_SECONDS,
            "max_runs_per_day": self.RETRAIN_MAX_RUNS_PER_DAY,
            "min_new_rows": self.RETRAIN_MIN_NEW_ROWS,
            "min_new_fraction": self.RETRAIN_MIN_NEW_FRACTION,
            "in_flight_timeout_seconds": self.RETRAIN_IN_FLIGHT_TIMEOUT_SECONDS,
        }
        return GuardPolicy.model_validate({k: v for k, v in overrides.items() if v is not None})


@cache
def _deps() -> tuple[
    Settings, S3ObjectStore, DynamoDBGuardStore, StepFunctionsOrchestrator, DynamoDBRegistry
]:
    settings = Settings.model_validate(dict(os.environ))
    dynamodb = boto3.client("dynamodb")
    return (
        settings,
        S3ObjectStore(boto3.client("s3")),
        DynamoDBGuardStore(dynamodb, settings.REGISTRY_TABLE),
        StepFunctionsOrchestrator(boto3.client("stepfunctions"), settings.STATE_MACHINE_ARN),
        DynamoDBRegistry(dynamodb, settings.REGISTRY_TABLE),  # read for retirements only
    )


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, store, guards, orchestrator, registry = _deps()
    kind = event.get("detail-type")
    record: DecisionRecord | None
    if kind == ALARM_EVENT:
        trigger = parse_alarm(event)
        record = (
            None
            if trigger is None
            else on_alarm(
                trigger,
                store=store,
                guards=guards,
                orchestrator=orchestrator,
                registry=registry,
                policy=settings.policy(),
                raw_bucket=settings.RAW_BUCKET,
                artifacts_bucket=settings.ARTIFACTS_BUCKET,
                now=datetime.now(UTC),
            )
        )
    elif kind == RUN_EVENT:
        record = on_run_end(event, guards=guards)
    else:
        raise RetrainEventError(
            f"event {event.get('id')}: detail-type {kind!r} is neither {ALARM_EVENT!r} "
            f"nor {RUN_EVENT!r}"
        )
    if record is None:
        logger.info("nothing to decide", extra={"detail_type": kind, "id": event.get("id")})
        return {"outcomes": []}
    logger.info("retrain decision", extra=record.model_dump(mode="json"))
    metrics.add_dimension("dataset", record.dataset)
    metrics.add_metric(_METRIC[record.outcome], MetricUnit.Count, 1)
    return {"outcomes": [record.model_dump(mode="json")]}
