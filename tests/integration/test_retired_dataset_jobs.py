"""A retired dataset is left out of the scheduled jobs: the drift job under moto measures only
the datasets in service."""

from __future__ import annotations

from datetime import UTC, datetime

from functions.drift import handler
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.storage import S3ObjectStore
from tests.integration import test_drift_handler as drift_setup
from tests.models import TrainedModel, publish_live

deployment = drift_setup.deployment  # the drift handler's moto deployment (fixture)


def test_the_drift_job_skips_a_retired_dataset(
    deployment: tuple[S3ObjectStore, DynamoDBRegistry],
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given two live datasets, one of them retired
    store, registry = deployment
    publish_live(store, registry, trained_models["binary"], dataset="open")
    publish_live(store, registry, trained_models["binary"], dataset="closed")
    registry.retire_dataset("closed", actor="cli:ana", reason="product closed")

    # When the scheduled drift job runs
    result = handler.lambda_handler({"time": datetime.now(UTC).isoformat()}, drift_setup.CONTEXT)

    # Then only the dataset in service was looked at
    assert [o["dataset"] for o in result["outcomes"]] == ["open"]
