"""Batch predictions Lambda: an S3 Object Created event under ``<dataset>/batch/`` → the file
scored by the live model, in chunks (logic.py), or past the function's cap a processing job
started to score it (route.py); the batch jobs machine's Catch → the failed job's report."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from functions.batch.logic import MAX_FILE_BYTES, report_failed_job, score_batch
from functions.batch.route import BatchJobState, StepFunctionsBatchRoute
from functions.shared.observability import logger, metrics, tracer
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.s3_events import EventShapeError, parse_upload_event
from functions.shared.storage import S3ObjectStore


class Settings(BaseModel):
    """Environment, validated once per cold start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    RAW_BUCKET: str
    ARTIFACTS_BUCKET: str
    REGISTRY_TABLE: str
    # files past MAX_FILE_BYTES go to processing jobs (infra/statemachine/batch.asl.json);
    # unset: they are refused
    BATCH_JOBS_STATE_MACHINE_ARN: str | None = None
    MAX_FILE_BYTES: int = MAX_FILE_BYTES


@cache
def _deps() -> tuple[Settings, S3ObjectStore, DynamoDBRegistry, StepFunctionsBatchRoute | None]:
    import os

    import boto3

    settings = Settings.model_validate(dict(os.environ))
    store = S3ObjectStore(boto3.client("s3"))
    registry = DynamoDBRegistry(boto3.client("dynamodb"), settings.REGISTRY_TABLE)
    route = None
    if settings.BATCH_JOBS_STATE_MACHINE_ARN:
        route = StepFunctionsBatchRoute(
            boto3.client("stepfunctions"), settings.BATCH_JOBS_STATE_MACHINE_ARN
        )
    return settings, store, registry, route


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, store, registry, route = _deps()
    if "request_uri" in event:  # the batch jobs machine: its processing job failed
        failed = report_failed_job(store, BatchJobState.model_validate(event))
        logger.error("batch job failed", extra=failed.model_dump(exclude_none=True))
        metrics.add_metric("BatchFilesRejected", MetricUnit.Count, 1)
        return failed.model_dump(mode="json")
    try:
        uploads = parse_upload_event(event)
    except EventShapeError as error:
        logger.error("not an S3 upload event", extra={"error": str(error)})
        return {"outcomes": [{"status": "ignored", "reason": str(error)}]}
    outcomes = []
    for upload in uploads:
        outcome = score_batch(
            store,
            registry,
            raw_bucket=settings.RAW_BUCKET,
            artifacts_bucket=settings.ARTIFACTS_BUCKET,
            key=upload.key,
            max_file_bytes=settings.MAX_FILE_BYTES,
            route=route,
            identity=upload.identity(),
        )
        logger.info("batch file handled", extra=outcome.model_dump(exclude_none=True))
        if outcome.status == "scored":
            metrics.add_metric("BatchRowsScored", MetricUnit.Count, outcome.rows)
        elif outcome.status == "rejected":
            metrics.add_metric("BatchFilesRejected", MetricUnit.Count, 1)
        elif outcome.status == "routed":
            metrics.add_metric("BatchJobsStarted", MetricUnit.Count, 1)
        outcomes.append(outcome.model_dump(mode="json"))
    return {"outcomes": outcomes}
