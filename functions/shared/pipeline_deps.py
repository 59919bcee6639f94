"""Settings and adapters of the pipeline's own functions (evaluate, promote, reject): they share
one environment (``Topology.pipeline_environment``) and the same ports."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import boto3
from pydantic import BaseModel, ConfigDict, Field

from functions.shared.alarms import MONITOR_PERIOD_SECONDS, CloudWatchRetrainAlarms, RetrainAlarms
from functions.shared.notify import Notifier, SNSNotifier
from functions.shared.registry import ModelRegistry
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.storage import ObjectStore, S3ObjectStore


class PipelineSettings(BaseModel):
    """Environment, validated once per cold start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ARTIFACTS_BUCKET: str
    REGISTRY_TABLE: str
    DECISIONS_TOPIC_ARN: str
    STAGE: str = Field(min_length=1, pattern=r"^[A-Za-z0-9-]+$")  # the retraining alarms' names
    # the drift job's period, so its alarms' (the local stack runs the job faster than hourly)
    RETRAIN_ALARM_PERIOD_SECONDS: int = Field(default=MONITOR_PERIOD_SECONDS, ge=1)


@dataclass(frozen=True)
class PipelineDeps:
    settings: PipelineSettings
    store: ObjectStore
    registry: ModelRegistry
    notifier: Notifier
    alarms: RetrainAlarms


def utc_now() -> datetime:
    return datetime.now(UTC)


@cache
def pipeline_deps() -> PipelineDeps:
    settings = PipelineSettings.model_validate(dict(os.environ))
    return PipelineDeps(
        settings=settings,
        store=S3ObjectStore(boto3.client("s3")),
        registry=DynamoDBRegistry(boto3.client("dynamodb"), settings.REGISTRY_TABLE),
        notifier=SNSNotifier(boto3.client("sns"), settings.DECISIONS_TOPIC_ARN),
        alarms=CloudWatchRetrainAlarms(
            boto3.client("cloudwatch"),
            settings.STAGE,
            monitor_period_seconds=settings.RETRAIN_ALARM_PERIOD_SECONDS,
        ),
    )
