"""A second opinion on the Gate: moto's Step Functions interpreter (LocalStack's ASL engine) runs
the real ``Gate`` Choice state on fixed gate inputs and must route where ``decide`` says, and
where our interpreter routes. Two independent implementations agreeing with the Python policy
is what lets the local stack's verdicts stand in for AWS's."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.shared.gate import GateEvidence, decide, gate_inputs
from tests.unit.test_gate_choice import GATE_MACHINE, SCHEMA_CHANGES, gate_route

CASES = [
    ("roc_auc", 0.82, None, 0.75, 0.01),
    ("roc_auc", 0.70, None, 0.75, 0.01),
    ("roc_auc", 0.75, None, 0.75, 0.01),
    ("roc_auc", 0.805, 0.81, 0.75, 0.01),
    ("roc_auc", 0.79, 0.81, 0.75, 0.01),
    ("roc_auc", 0.80, 0.81, 0.75, 0.01),
    ("f1_macro", 0.5, 0.75, 0.25, 0.25),
    ("accuracy", math.nan, 0.5, 0.0, 1.0),
    ("accuracy", None, None, 0.0, 1.0),
    ("accuracy", math.inf, None, 0.0, 1.0),
    ("accuracy", 0.9, math.nan, 0.8, 0.0),
    ("accuracy", 0.9, -math.inf, 0.8, 0.0),
    ("r2", -0.5, None, -1.0, 0.0),
    ("rmse", 10.5, 10.0, 15.0, 1.0),
    ("rmse", 12.0, 10.0, 15.0, 1.0),
    ("rmse", 11.0, 10.0, 15.0, 1.0),
    ("rmse", 15.0, None, 15.0, 1.0),
    ("rmse", 16.0, None, 15.0, 1.0),
    ("log_loss", 0.3, 0.35, 0.5, 0.0),
    ("log_loss", 0.36, 0.35, 0.5, 0.0),
    ("mae", -math.inf, 1.0, 2.0, 0.0),
]


@pytest.fixture(scope="module")
def gate_in_moto() -> Iterator[tuple[Any, str]]:
    """The mini Gate machine created in moto with execution turned on."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        client = boto3.client("stepfunctions", region_name="us-east-1")
        arn = client.create_state_machine(
            name="sluice-gate",
            definition=json.dumps(GATE_MACHINE),
            roleArn="arn:aws:iam::123456789012:role/sluice-gate",
        )["stateMachineArn"]
        yield client, arn


def moto_route(client: Any, state_machine: str, gate: dict[str, Any]) -> str:
    """The Succeed state moto's execution entered, read from the execution history."""
    execution = client.start_execution(
        stateMachineArn=state_machine,
        name=f"gate-{uuid.uuid4().hex}",  # moto names every unnamed execution "None"
        input=json.dumps({"evaluation": {"gate": gate}}, allow_nan=False),
    )["executionArn"]
    deadline = time.monotonic() + 10
    while (status := client.describe_execution(executionArn=execution)["status"]) == "RUNNING":
        assert time.monotonic() < deadline, "moto's execution did not finish"
        time.sleep(0.01)
    assert status == "SUCCEEDED", client.get_execution_history(executionArn=execution)
    entered = [
        event["stateEnteredEventDetails"]["name"]
        for event in client.get_execution_history(executionArn=execution)["events"]
        if event["type"] == "SucceedStateEntered"
    ]
    assert len(entered) == 1, entered
    return str(entered[0])


@pytest.mark.parametrize(("metric", "challenger", "champion", "threshold", "tolerance"), CASES)
def test_moto_routes_the_real_gate_where_decide_and_our_interpreter_do(
    gate_in_moto: tuple[Any, str],
    metric: str,
    challenger: float | None,
    champion: float | None,
    threshold: float,
    tolerance: float,
) -> None:
    # Given the gate inputs the evaluate function would hand the Gate
    gate = gate_inputs(
        metric, challenger, champion, threshold=threshold, tolerance=tolerance
    ).model_dump()
    decision = decide(metric, challenger, champion, threshold=threshold, tolerance=tolerance)

    # When moto runs the real Gate state on them
    route = moto_route(*gate_in_moto, gate)

    # Then it promotes exactly when the policy passes, as the local interpreter does
    assert (route == "Promote") is decision.passed, decision.reasons
    assert gate_route(gate) == route


@pytest.mark.parametrize(
    ("change", "passed"),
    [
        ("none", True),
        ("added", True),
        ("retyped", False),
        ("retyped-accepted", True),
        (None, False),
    ],
    ids=["no-change", "added", "retyped", "retyped-accepted", "comparable-absent"],
)
def test_moto_refuses_a_challenger_the_schema_change_makes_incomparable(
    gate_in_moto: tuple[Any, str], change: str | None, passed: bool
) -> None:
    # Given a challenger over the threshold, under each schema change (or a document from an
    # evaluate that wrote no comparable flag at all)
    evidence = GateEvidence(schema_change=SCHEMA_CHANGES[change] if change else None)
    gate = gate_inputs(
        "roc_auc", 0.9, None, threshold=0.7, tolerance=0.0, evidence=evidence
    ).model_dump()
    if change is None:
        del gate["comparable"]

    # When moto runs the real Gate; Then it routes as the policy and our interpreter do
    route = moto_route(*gate_in_moto, gate)
    assert (route == "Promote") is passed
    assert gate_route(gate) == route
