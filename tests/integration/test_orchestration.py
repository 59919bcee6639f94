"""The Step Functions adapter against moto: which of a dataset's runs are executing."""

from __future__ import annotations

import json

from functions.shared.orchestration import StepFunctionsOrchestrator
from tests.integration.conftest import Aws


def test_running_names_the_datasets_executing_runs_only(aws: Aws) -> None:
    arn = aws.topology.state_machine_arn
    orchestrator = StepFunctionsOrchestrator(aws.sfn, arn)
    assert orchestrator.running("churn") == []
    for name, dataset in (
        ("churn-a", "churn"),
        ("churn2-b", "churn2"),
        ("retrain-churn-1", "churn"),
    ):
        aws.sfn.start_execution(
            stateMachineArn=arn, name=name, input=json.dumps({"dataset": dataset})
        )
    aws.sfn.start_execution(stateMachineArn=arn, name="not-ours", input="[1, 2]")
    assert sorted(orchestrator.running("churn")) == ["churn-a", "retrain-churn-1"]
    aws.sfn.stop_execution(executionArn=arn.replace(":stateMachine:", ":execution:") + ":churn-a")
    assert orchestrator.running("churn") == ["retrain-churn-1"]
    assert orchestrator.running("churn2") == ["churn2-b"]
