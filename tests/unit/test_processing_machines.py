"""The processing-job state machines (infra/statemachine/builds.asl.json, batch.asl.json) as
the local interpreter runs them: what a refusal for quota does. Their deployed form is
tests/infra's; the jobs themselves are tests/integration's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from infra.local.asl import TaskFailure, run
from infra.local.pipeline import batch_definition, builds_definition
from infra.topology import Topology

CREATE = "arn:aws:states:::sagemaker:createProcessingJob.sync"
TOPOLOGY = Topology(stage="dev", account="111111111111", region="us-east-1")
QUOTA = TaskFailure(
    "SageMaker.ResourceLimitExceededException",
    "The account-level service limit 'ml.m5.xlarge for processing job usage' is 4 Instances, "
    "with current utilization of 4 Instances",
)
INPUT = {
    "job_name": "churn-build-0123456789abcdef",
    "dataset": "churn",
    "plan_uri": "s3://artifacts/churn/_builds/plan/",
    "report_uri": "s3://artifacts/churn/_builds/reports/",
    "request_uri": "s3://artifacts/churn/predictions/big.csv/_jobs/job/",
    "instance_type": "ml.m5.xlarge",
    "instance_count": 1,
    "volume_gb": 30,
    "max_runtime_seconds": 3600,
}
MACHINES: dict[str, tuple[Callable[[Topology], dict[str, Any]], str]] = {
    "builds": (builds_definition, "preprocess"),
    "batch": (batch_definition, "batch"),
}


class Quota:
    """CreateProcessingJob refused for quota ``refusals`` times, then the job runs."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.names = refusals, []

    def __call__(self, parameters: dict[str, Any]) -> dict[str, Any]:
        self.names.append(parameters["ProcessingJobName"])
        if len(self.names) <= self.refusals:
            raise QUOTA
        return {"ProcessingJobStatus": "Completed"}


def _run(machine: str, refusals: int) -> tuple[Any, Quota, list[float], list[Any]]:
    definition, function = MACHINES[machine]
    job, waits, called = Quota(refusals), [], []

    def function_called(payload: Any) -> dict[str, Any]:
        called.append(payload)
        return {"status": "ok", "reason": "", "run_id": None}

    execution = run(
        definition(TOPOLOGY),
        INPUT,
        tasks={CREATE: job, TOPOLOGY.function_arn(function): function_called},
        execution_name="quota",
        sleep=waits.append,
    )
    return execution, job, waits, called


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_a_job_refused_for_quota_is_asked_again_as_others_finish(machine: str) -> None:
    # Given an account whose processing instances are all held: refused three times
    execution, job, waits, _ = _run(machine, refusals=3)

    # Then the same job is asked for again, backing off, and runs: nothing failed
    assert execution.status == "SUCCEEDED", execution.error
    assert job.names == [INPUT["job_name"]] * 4
    assert waits == [60, 120, 240]


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_quota_held_for_over_an_hour_fails_the_job_with_its_reason(machine: str) -> None:
    # Given the quota never frees
    execution, job, waits, called = _run(machine, refusals=100)

    # Then after 75 minutes of asking the failure is handed on with SageMaker's reason (the
    # builds machine to preprocess, which rejects the upload; the batch one to the function,
    # which files the file's _error.json)
    assert execution.status == "FAILED"
    assert len(job.names) == 9 and sum(waits) == 60 + 120 + 240 + 480 + 900 * 4
    assert max(waits) == 900
    (payload,) = called
    assert payload["failure"]["Error"] == "SageMaker.ResourceLimitExceededException"
    assert "processing job usage" in payload["failure"]["Cause"]
