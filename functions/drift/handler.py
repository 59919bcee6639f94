"""Drift job Lambda, on a schedule: every dataset with a live model has its recent captured inputs
compared with the training profile (job.py), then its captured predictions with the truth clients
reported as feedback (quality.py); reports go to the artifacts bucket and the figures to
CloudWatch (``FeaturePSI``, ``FeatureKS``, ``DatasetDriftPSI``, ``DriftedFeatures``;
``LiveAccuracy`` or ``LiveRMSE``, ``FeedbackMatched``, ``FeedbackUnmatched``,
``LiveQualityDrop``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from functions.drift.job import DriftJobOutcome, run_drift_each
from functions.drift.quality import QualityOutcome, run_quality
from functions.shared.observability import NAMESPACE, emf_document, emit_emf, logger, tracer
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.storage import ObjectNotFoundError, S3ObjectStore

UNITS = {
    "FeaturePSI": "None",
    "FeatureKS": "None",
    "DatasetDriftPSI": "None",
    "LiveAccuracy": "None",
    "LiveRMSE": "None",
    "LiveQualityDrop": "None",
}


class Settings(BaseModel):
    """Environment, validated once per cold start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ARTIFACTS_BUCKET: str
    REGISTRY_TABLE: str
    DRIFT_WINDOW_HOURS: int = 24
    QUALITY_WINDOW_HOURS: int = Field(default=24, ge=1)


@cache
def _deps() -> tuple[Settings, S3ObjectStore, DynamoDBRegistry]:
    import boto3

    settings = Settings.model_validate(dict(os.environ))
    store = S3ObjectStore(boto3.client("s3"))
    registry = DynamoDBRegistry(boto3.client("dynamodb"), settings.REGISTRY_TABLE)
    return settings, store, registry


def publish(outcome: DriftJobOutcome | QualityOutcome, emit: Any = emit_emf) -> int:
    """The outcome's metrics as EMF documents, one per metric and dimension set."""
    if isinstance(outcome, QualityOutcome):
        return _emit(outcome.metrics(), emit)
    return 0 if outcome.result is None else _emit(outcome.result.metrics(), emit)


def _emit(figures: Iterable[tuple[str, dict[str, str], float]], emit: Any) -> int:
    if is_metrics_disabled():
        return 0
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE
    now = int(time.time() * 1000)
    count = 0
    for name, dimensions, value in figures:
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
    measured = run_drift_each(
        store,
        registry,
        registry.active_datasets(),  # retired datasets are not measured
        artifacts_bucket=settings.ARTIFACTS_BUCKET,
        now=now,
        window_hours=settings.DRIFT_WINDOW_HOURS,
    )
    for outcome, error in measured:
        dataset = outcome.dataset
        if error is not None:
            logger.error(
                f"drift failed for dataset {dataset}: {outcome.reason}",
                extra=outcome.model_dump(exclude={"result"}),
                exc_info=error,
            )
        else:
            publish(outcome)
            logger.info(f"drift {outcome.status}", extra=outcome.model_dump(exclude={"result"}))
        quality = _quality(settings, store, registry, dataset, now)
        outcomes.append({**outcome.model_dump(mode="json", exclude={"result"}), "quality": quality})
    return {"outcomes": outcomes}


def _quality(
    settings: Settings,
    store: S3ObjectStore,
    registry: DynamoDBRegistry,
    dataset: str,
    now: datetime,
) -> dict[str, Any]:
    """Live quality of one dataset, published and logged; as a JSON dict for the outcome. A
    failure is logged and reported, never raised: the other datasets still get measured."""
    try:
        outcome = run_quality(
            store,
            registry,
            artifacts_bucket=settings.ARTIFACTS_BUCKET,
            dataset=dataset,
            now=now,
            window_hours=settings.QUALITY_WINDOW_HOURS,
        )
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        missing = exc.uri if isinstance(exc, ObjectNotFoundError) else None
        logger.exception(
            f"live quality failed for dataset {dataset}: {reason}",
            extra={"dataset": dataset, "missing_key": missing},
        )
        return {"status": "failed", "reason": reason}
    publish(outcome)
    message = "live quality measured" if outcome.status == "measured" else "live quality skipped"
    logger.info(message, extra=outcome.model_dump(mode="json"))
    return outcome.model_dump(mode="json", exclude={"dataset"})
