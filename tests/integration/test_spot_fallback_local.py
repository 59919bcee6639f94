"""The state machine's spot → on-demand fallback, run by the local stack end to end (the real
definition, handlers and training runner under moto), in an account whose spot quota is 0: the
local SageMaker is made to refuse a spot job as AWS's CreateTrainingJob does."""

from __future__ import annotations

from typing import Any

import pytest

from functions.shared.storage import ObjectStore
from infra.local import pipeline
from infra.local.asl import TaskFailure
from tests.integration.conftest import Aws
from tests.integration.test_pipeline_local import (  # noqa: F401 (the autouse fixture)
    _pipeline_environment,
    _registry,
    _run,
    _upload,
)

QUOTA_CAUSE = (
    "The account-level service limit 'ml.g5.xlarge for spot training job usage' is 0 Instances, "
    "with current utilization of 0 Instances and a request delta of 1 Instances. "
    "(Service: AmazonSageMaker; Status Code: 400; Error Code: ResourceLimitExceeded)"
)


def test_a_run_whose_spot_job_is_refused_for_quota_goes_live_on_demand(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an account with no spot training quota
    asked_for_spot: list[bool] = []
    train = pipeline.run_training_job

    def no_spot_quota(parameters: dict[str, Any], store: ObjectStore, **options: Any) -> Any:
        asked_for_spot.append(parameters["EnableManagedSpotTraining"])
        if parameters["EnableManagedSpotTraining"]:
            raise TaskFailure("SageMaker.ResourceLimitExceededException", QUOTA_CAUSE)
        return train(parameters, store, **options)

    monkeypatch.setattr(pipeline, "run_training_job", no_spot_quota)
    run = _upload(aws, "jan", seed=1)
    assert run.spot is True  # the default contract trains on spot

    # When its run executes
    execution = _run(aws, run)

    # Then the job was refused on spot, trained on demand, and its model went live
    assert execution.status == "SUCCEEDED", execution.error
    assert execution.path == [
        "PrepareTraining",
        "Train",
        "SpotRefused",
        "OnDemandLimits",
        "OnDemand",
        "Train",
        "Evaluate",
        "Gate",
        "Promote",
        "Promoted",
    ]
    assert asked_for_spot == [True, False]
    live = _registry(aws).live("churn")
    assert live is not None and live.version == 1
