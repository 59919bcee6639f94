"""Settings and adapters of the pipeline's own functions (evaluate, promote, reject): they share
one environment (``Topology.pipeline_environment``) and the same three ports."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import boto3
from pydantic import BaseModel, ConfigDict

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
    AWS_ENDPOINT_URL: str | None = None  # set by the local stack only


@dataclass(frozen=True)
class PipelineDeps:
    settings: PipelineSettings
    store: ObjectStore
    registry: ModelRegistry
    notifier: Notifier


def utc_now() -> datetime:
    return datetime.now(UTC)


@cache
def pipeline_deps() -> PipelineDeps:
    settings = PipelineSettings.model_validate(dict(os.environ))
    endpoint = settings.AWS_ENDPOINT_URL
    return PipelineDeps(
        settings=settings,
        store=S3ObjectStore(boto3.client("s3", endpoint_url=endpoint)),
        registry=DynamoDBRegistry(
            boto3.client("dynamodb", endpoint_url=endpoint), settings.REGISTRY_TABLE
        ),
        notifier=SNSNotifier(
            boto3.client("sns", endpoint_url=endpoint), settings.DECISIONS_TOPIC_ARN
        ),
    )
