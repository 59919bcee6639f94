"""Preprocess Lambda: S3 upload or delete event in, dataset version and pipeline run out (or a
processing job that builds the parts first); the builds state machine's end in, the same."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from functions.preprocess.logic import Policy, assemble_build, process_removal, process_upload
from functions.preprocess.models import PreprocessOutcome
from functions.shared.observability import logger, metrics, tracer
from functions.shared.orchestration import StepFunctionsOrchestrator
from functions.shared.pipeline_state import BuildState
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.s3_events import (
    RemovedObject,
    UploadedObject,
    parse_removal_event,
    parse_upload_event,
)
from functions.shared.storage import S3ObjectStore


class Settings(BaseModel):
    """Environment, validated once per cold start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ARTIFACTS_BUCKET: str
    STATE_MACHINE_ARN: str
    REGISTRY_TABLE: str  # read for retirements: an upload to a retired dataset is refused
    # the part builds past one Lambda (infra/statemachine/builds.asl.json); unset: none
    BUILDS_STATE_MACHINE_ARN: str | None = None
    # what one invocation reads before the work goes to a processing job (Policy)
    MAX_READ_BYTES: int = Policy().max_read_bytes


@cache
def _deps() -> tuple[Settings, S3ObjectStore, StepFunctionsOrchestrator, DynamoDBRegistry]:
    settings = Settings.model_validate(dict(os.environ))
    s3 = boto3.client("s3")
    sfn = boto3.client("stepfunctions")
    dynamodb = boto3.client("dynamodb")
    return (
        settings,
        S3ObjectStore(s3),
        StepFunctionsOrchestrator(
            sfn, settings.STATE_MACHINE_ARN, settings.BUILDS_STATE_MACHINE_ARN
        ),
        DynamoDBRegistry(dynamodb, settings.REGISTRY_TABLE),
    )


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, store, orchestrator, registry = _deps()
    if "plan_uri" in event:  # the builds state machine, its processing job ended
        built = assemble_build(
            BuildState.model_validate(event),
            store=store,
            orchestrator=orchestrator,
            policy=Policy(max_read_bytes=settings.MAX_READ_BYTES),
            registry=registry,
        )
        logger.info("build assembled", extra=built.model_dump(exclude_none=True))
        _count(built)
        return built.model_dump(mode="json")
    outcomes = []
    items: list[UploadedObject | RemovedObject] = [
        *parse_upload_event(event),
        *parse_removal_event(event),
    ]
    for item in items:
        process = process_removal if isinstance(item, RemovedObject) else process_upload
        outcome = process(
            item,  # type: ignore[arg-type]
            store=store,
            orchestrator=orchestrator,
            artifacts_bucket=settings.ARTIFACTS_BUCKET,
            policy=Policy(max_read_bytes=settings.MAX_READ_BYTES),
            registry=registry,
        )
        logger.info("upload processed", extra=outcome.model_dump(exclude_none=True))
        _count(outcome)
        outcomes.append(outcome.model_dump(mode="json"))
    return {"outcomes": outcomes}


def _count(outcome: PreprocessOutcome) -> None:
    if outcome.status == "started" and outcome.rows is not None:
        metrics.add_metric("RowsAccepted", MetricUnit.Count, outcome.rows.accepted)
        metrics.add_metric("RowsRejected", MetricUnit.Count, sum(outcome.rows.rejected.values()))
        metrics.add_metric("RunStarted", MetricUnit.Count, 1)
    elif outcome.status == "rejected":
        metrics.add_metric("UploadRejected", MetricUnit.Count, 1)
    elif outcome.status == "building":
        metrics.add_metric("BuildStarted", MetricUnit.Count, 1)
