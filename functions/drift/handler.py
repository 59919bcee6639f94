"""Drift job Lambda, on a schedule: every dataset with a live model has its recent captured inputs
compared with the training profile (job.py); reports go to the artifacts bucket and the figures
to CloudWatch (``FeaturePSI``, ``FeatureKS``, ``DatasetDriftPSI``, ``DriftedFeatures``)."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from functions.drift.job import DriftJobOutcome, run_drift
from functions.shared.observability import NAMESPACE, emf_document, logger, tracer
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.storage import S3ObjectStore

UNITS = {"FeaturePSI": "None", "FeatureKS": "None", "DatasetDriftPSI": "None"}


class Settings(BaseModel):
    """Environment, validated once per cold start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ARTIFACTS_BUCKET: str
    REGISTRY_TABLE: str
    DRIFT_WINDOW_HOURS: int = 24
    AWS_ENDPOINT_URL: str | None = None  # set by the local stack only


@cache
def _deps() -> tuple[Settings, S3ObjectStore, DynamoDBRegistry]:
    import boto3

    settings = Settings.model_validate(dict(os.environ))
    store = S3ObjectStore(boto3.client("s3", endpoint_url=settings.AWS_ENDPOINT_URL))
    registry = DynamoDBRegistry(
        boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL), settings.REGISTRY_TABLE
    )
    return settings, store, registry


def publish(outcome: DriftJobOutcome, emit: Any = print) -> int:
    """The outcome's metrics as EMF documents, one per metric and dimension set."""
    if outcome.result is None or os.environ.get("POWERTOOLS_METRICS_DISABLED") == "true":
        return 0
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE
    now = int(time.time() * 1000)
    count = 0
    for name, dimensions, value in outcome.result.metrics():
        unit = UNITS.get(name, "Count")
        document = emf_document(
            namespace,
            now,
            sorted(dimensions),
            [{"Name": name, "Unit": unit}],
            {**dimensions, name: value},
        )
        emit(json.dumps(document, separators=(",", ":")))
        count += 1
    return count


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, store, registry = _deps()
    now = datetime.now(UTC)
    outcomes = []
    for dataset in registry.datasets():
        outcome = run_drift(
            store,
            registry,
            artifacts_bucket=settings.ARTIFACTS_BUCKET,
            dataset=dataset,
            now=now,
            window_hours=settings.DRIFT_WINDOW_HOURS,
        )
        publish(outcome)
        logger.info(
            "drift measured" if outcome.status == "measured" else "drift skipped",
            extra=outcome.model_dump(exclude={"result"}),
        )
        outcomes.append(outcome.model_dump(mode="json", exclude={"result"}))
    return {"outcomes": outcomes}
