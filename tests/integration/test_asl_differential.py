"""Differential test: the same small state machines run by our ASL interpreter
(``infra/local/asl/``, what the local stack runs ``pipeline.asl.json`` with) and by moto's
Step Functions executor (``mock_aws(config={"stepfunctions": {"execute_state_machine": True}})``,
LocalStack's ASL engine), on the same input. They must agree on the status, the output (or the
error name) and the states entered, and both must give what AWS's documentation says.

Covered: every construct ``pipeline.asl.json`` uses (Pass with ``Parameters`` and
``ResultPath``, ``States.JsonMerge``, Choice with ``And``/``Or``/``Not``, ``IsPresent``,
``IsNumeric``, ``IsBoolean``, ``BooleanEquals`` and the ``...Path`` comparisons, Task with
``ResultSelector``/``ResultPath``/``Retry``/``Catch``, Fail), plus ``InputPath``, ``OutputPath``,
``Result``, the context object and the other intrinsics our interpreter implements
(``States.Format``, ``States.StringToJson``, ``States.JsonToString``, ``States.Array``).
Tasks use ``arn:aws:states:::dynamodb:getItem``, which moto really runs against its DynamoDB;
our interpreter gets a handler making the same call, so what is compared is the state's
processing of the result (``ResultSelector``, ``ResultPath``, ``Catch``), not the service.

Where moto departs from AWS's documented behaviour, the case says so and which side is trusted
(AWS's documentation), and asserts moto's departure exactly, so that a moto upgrade that fixes
it fails here and the note can go.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.local.asl import TaskFailure, run

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/sluice-differential"
GET_ITEM = "arn:aws:states:::dynamodb:getItem"
TABLE = "sluice-differential"
EXECUTION_NAME = "differential"


@dataclass(frozen=True)
class Outcome:
    """What an execution ended with, in the terms both engines report."""

    status: str
    output: Any = None
    error: str | None = None
    path: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    id: str
    states: dict[str, Any]
    input: Any
    expected: Outcome  # from AWS's documentation of the construct
    # Where moto departs from AWS's documentation: what moto does instead, and why we trust AWS
    moto_departs: Outcome | None = None
    note: str = ""


def machine(states: dict[str, Any]) -> dict[str, Any]:
    return {"StartAt": next(iter(states)), "States": states}


def passes(**fields: Any) -> dict[str, Any]:
    return {"Type": "Pass", "End": True, **fields}


def choice(rule: dict[str, Any]) -> dict[str, Any]:
    """A Choice that goes to ``Yes`` when ``rule`` matches, else ``No``."""
    return {
        "Check": {"Type": "Choice", "Choices": [{**rule, "Next": "Yes"}], "Default": "No"},
        "Yes": {"Type": "Succeed"},
        "No": {"Type": "Succeed"},
    }


GATE = {"challenger": 0.82, "threshold": 0.75, "champion_floor": None, "higher_is_better": True}

CASES = [
    # --- Pass: Parameters, Result, InputPath, ResultPath, OutputPath -----------------------
    Case(
        "prepare-training",  # pipeline.asl.json's PrepareTraining, then Train's JsonMerge
        {
            "Prepare": {
                "Type": "Pass",
                "Parameters": {"sagemaker_program": "train.py", "sagemaker_region": "us-east-1"},
                "ResultPath": "$.script",
                "Next": "Merge",
            },
            "Merge": passes(
                Parameters={
                    "HyperParameters.$": "States.JsonMerge($.hyperparameters, $.script, false)",
                    "Name.$": "$.job",
                    "Tags": [{"Key": "sluice:dataset", "Value.$": "$.dataset"}],
                }
            ),
        },
        {
            "job": "j-1",
            "dataset": "churn",
            "hyperparameters": {"seed": "7", "sagemaker_region": "x"},
        },
        Outcome(
            "SUCCEEDED",
            {
                "HyperParameters": {
                    "seed": "7",
                    "sagemaker_region": "us-east-1",
                    "sagemaker_program": "train.py",
                },
                "Name": "j-1",
                "Tags": [{"Key": "sluice:dataset", "Value": "churn"}],
            },
            path=("Prepare", "Merge"),
        ),
    ),
    Case(
        "channel-type-from-the-input",  # Train's InputDataConfig: S3Prefix or ManifestFile
        {
            "Channels": passes(
                Parameters={
                    "InputDataConfig": [
                        {
                            "ChannelName": "train",
                            "DataSource": {
                                "S3DataSource": {
                                    "S3Uri.$": "$.train_uri",
                                    "S3DataType.$": "$.data_type",
                                    "S3DataDistributionType": "FullyReplicated",
                                }
                            },
                        }
                    ]
                }
            )
        },
        {
            "train_uri": "s3://a/churn/versions/v/channels/train.manifest",
            "data_type": "ManifestFile",
        },
        Outcome(
            "SUCCEEDED",
            {
                "InputDataConfig": [
                    {
                        "ChannelName": "train",
                        "DataSource": {
                            "S3DataSource": {
                                "S3Uri": "s3://a/churn/versions/v/channels/train.manifest",
                                "S3DataType": "ManifestFile",
                                "S3DataDistributionType": "FullyReplicated",
                            }
                        },
                    }
                ]
            },
            path=("Channels",),
        ),
    ),
    Case(
        "channel-type-absent-from-an-older-input-is-a-runtime-error",
        {
            "Channels": passes(
                Parameters={
                    "InputDataConfig": [
                        {
                            "ChannelName": "train",
                            "DataSource": {
                                "S3DataSource": {
                                    "S3Uri.$": "$.train_uri",
                                    "S3DataType.$": "$.data_type",
                                    "S3DataDistributionType": "FullyReplicated",
                                }
                            },
                        }
                    ]
                }
            )
        },
        {"train_uri": "s3://a/churn/versions/v/train/"},
        Outcome("FAILED", error="States.Runtime", path=("Channels",)),
        note="Why RunInput always dumps data_type: a Parameters path the input lacks fails the "
        "execution, past any Catch.",
    ),
    Case(
        "input-result-output-paths",
        {
            "Shape": passes(
                InputPath="$.order",
                Parameters={"second.$": "$.items[1]", "all.$": "$.items", "n": 2},
                ResultPath="$.picked",
                OutputPath="$.picked",
            )
        },
        {"order": {"items": [{"sku": "a"}, {"sku": "b"}]}, "other": 1},
        Outcome(
            "SUCCEEDED",
            {"second": {"sku": "b"}, "all": [{"sku": "a"}, {"sku": "b"}], "n": 2},
            path=("Shape",),
        ),
    ),
    Case(
        "a-field-after-an-index-selects-one-value",
        {"Pick": passes(Parameters={"sku.$": "$.items[1].sku"})},
        {"items": [{"sku": "a"}, {"sku": "b"}]},
        Outcome("SUCCEEDED", {"sku": "b"}, path=("Pick",)),
        moto_departs=Outcome("SUCCEEDED", {"sku": ["b"]}, path=("Pick",)),
        note="AWS: a Reference Path (no wildcard, filter or ..) selects one value, so "
        "$.items[1].sku is the string 'b'; moto 5.2.5 wraps it in a list. pipeline.asl.json "
        "indexes no list.",
    ),
    Case(
        "result-path-merges-into-the-raw-input",  # ResultPath applies to the raw input
        {"Keep": passes(InputPath="$.a", ResultPath="$.x.y.z")},
        {"a": {"b": 1}, "x": {"kept": True}},
        Outcome(
            "SUCCEEDED",
            {"a": {"b": 1}, "x": {"kept": True, "y": {"z": {"b": 1}}}},
            path=("Keep",),
        ),
    ),
    Case(
        "result-path-null-discards-the-result",
        {"Discard": passes(Result={"ignored": True}, ResultPath=None)},
        {"kept": [1, 2]},
        Outcome("SUCCEEDED", {"kept": [1, 2]}, path=("Discard",)),
    ),
    Case(
        "result-replaces-the-input",
        {"Replace": passes(Result={"r": [1, {"s": None}]})},
        {"gone": True},
        Outcome("SUCCEEDED", {"r": [1, {"s": None}]}, path=("Replace",)),
    ),
    Case(
        "context-object",
        {"Context": passes(Parameters={"run.$": "$$.Execution.Name", "state.$": "$$.State.Name"})},
        {},
        Outcome("SUCCEEDED", {"run": EXECUTION_NAME, "state": "Context"}, path=("Context",)),
    ),
    # --- intrinsic functions ----------------------------------------------------------------
    Case(
        "format",
        {
            "Format": passes(
                Parameters={
                    "text.$": "States.Format('{}: {} ({}, {})', $.name, $.score, $.ok, $.none)",
                }
            )
        },
        {"name": "churn", "score": 0.5, "ok": True, "none": None},
        Outcome(
            "SUCCEEDED",
            {"text": "churn: 0.5 (true, null)"},
            path=("Format",),
        ),
    ),
    Case(
        "format-escaped-braces",
        {"Format": passes(Parameters={"text.$": "States.Format('a \\{b\\} {}', $.name)"})},
        {"name": "churn"},
        Outcome("SUCCEEDED", {"text": "a {b} churn"}, path=("Format",)),
        moto_departs=Outcome("FAILED", error="States.Runtime", path=("Format",)),
        note="AWS: in an intrinsic's string literal, \\{ and \\} are a literal brace; moto "
        "5.2.5 hands the template to Python's str.format and fails (KeyError). "
        "pipeline.asl.json uses no States.Format.",
    ),
    Case(
        "string-to-json",
        {"Parse": passes(Parameters={"value.$": "States.StringToJson($.text)"})},
        {"text": '{"a": [1, 2.5, "x", null, true]}'},
        Outcome("SUCCEEDED", {"value": {"a": [1, 2.5, "x", None, True]}}, path=("Parse",)),
    ),
    Case(
        "json-to-string",  # AWS's examples serialise without spaces
        {"Dump": passes(Parameters={"text.$": "States.JsonToString($.value)"})},
        {"value": {"a": [1, "x", None], "b": {"c": False}}},
        Outcome("SUCCEEDED", {"text": '{"a":[1,"x",null],"b":{"c":false}}'}, path=("Dump",)),
    ),
    Case(
        "array-and-nesting",
        {
            "Array": passes(
                Parameters={
                    "items.$": "States.Array($.a, 'two', 3, $.o)",
                    "round_trip.$": "States.StringToJson(States.JsonToString($.o))",
                }
            )
        },
        {"a": 1, "o": {"k": [True]}},
        Outcome(
            "SUCCEEDED",
            {"items": [1, "two", 3, {"k": [True]}], "round_trip": {"k": [True]}},
            path=("Array",),
        ),
    ),
    Case(
        "json-merge-is-shallow",  # the second object's keys win, nested objects are replaced
        {"Merge": passes(Parameters={"m.$": "States.JsonMerge($.a, $.b, false)"})},
        {"a": {"x": {"p": 1, "q": 2}, "y": 1}, "b": {"x": {"p": 9}, "z": 3}},
        Outcome("SUCCEEDED", {"m": {"x": {"p": 9}, "y": 1, "z": 3}}, path=("Merge",)),
    ),
    # --- Choice: the Gate's constructs -------------------------------------------------------
    Case(
        "gate-like-and-or-not-paths",
        choice(
            {
                "And": [
                    {"Variable": "$.g.challenger", "IsPresent": True},
                    {"Variable": "$.g.challenger", "IsNumeric": True},
                    {"Variable": "$.g.higher_is_better", "IsBoolean": True},
                    {"Variable": "$.g.higher_is_better", "BooleanEquals": True},
                    {"Variable": "$.g.challenger", "NumericGreaterThanEqualsPath": "$.g.threshold"},
                    {
                        "Or": [
                            {"Not": {"Variable": "$.g.champion_floor", "IsNumeric": True}},
                            {
                                "Variable": "$.g.challenger",
                                "NumericGreaterThanEqualsPath": "$.g.champion_floor",
                            },
                        ]
                    },
                ]
            }
        ),
        {"g": GATE},
        Outcome("SUCCEEDED", {"g": GATE}, path=("Check", "Yes")),
    ),
    Case(
        "choice-absent-field-guarded-by-is-present",  # And stops at the first false
        choice(
            {
                "And": [
                    {"Variable": "$.missing", "IsPresent": True},
                    {"Variable": "$.missing", "NumericEquals": 1},
                ]
            }
        ),
        {"other": 1},
        Outcome("SUCCEEDED", {"other": 1}, path=("Check", "No")),
    ),
    Case(
        "choice-less-than-equals-path-boundary",
        choice({"Variable": "$.rmse", "NumericLessThanEqualsPath": "$.limit"}),
        {"rmse": 10.0, "limit": 10},
        Outcome("SUCCEEDED", {"rmse": 10.0, "limit": 10}, path=("Check", "Yes")),
    ),
    Case(
        "choice-numeric-on-a-string-is-false",
        choice({"Variable": "$.v", "NumericGreaterThan": 0}),
        {"v": "5"},
        Outcome("SUCCEEDED", {"v": "5"}, path=("Check", "No")),
    ),
    Case(
        "choice-string-null-and-type-tests",
        choice(
            {
                "And": [
                    {"Variable": "$.s", "StringEquals": "churn"},
                    {"Variable": "$.s", "IsString": True},
                    {"Variable": "$.n", "IsNull": True},
                    {"Variable": "$.b", "IsNumeric": False},
                ]
            }
        ),
        {"s": "churn", "n": None, "b": False},
        Outcome("SUCCEEDED", {"s": "churn", "n": None, "b": False}, path=("Check", "Yes")),
    ),
    Case(
        "choice-input-and-output-paths",
        {
            "Check": {
                "Type": "Choice",
                "InputPath": "$.inner",
                "OutputPath": "$.keep",
                "Choices": [{"Variable": "$.flag", "BooleanEquals": False, "Next": "Yes"}],
                "Default": "No",
            },
            "Yes": {"Type": "Succeed"},
            "No": {"Type": "Succeed"},
        },
        {"inner": {"flag": False, "keep": {"k": 1}}, "outer": 2},
        Outcome("SUCCEEDED", {"k": 1}, path=("Check", "Yes")),
    ),
    # --- failures ----------------------------------------------------------------------------
    Case(
        "fail-state",  # RunFailed
        {"RunFailed": {"Type": "Fail", "Error": "Sluice.RunFailed", "Cause": "a step failed"}},
        {},
        Outcome("FAILED", error="Sluice.RunFailed", path=("RunFailed",)),
    ),
    Case(
        "choice-comparison-on-an-absent-field-is-a-runtime-error",
        choice({"Variable": "$.missing", "NumericEquals": 1}),
        {},
        Outcome("FAILED", error="States.Runtime", path=("Check",)),
        moto_departs=Outcome("SUCCEEDED", {}, path=("Check", "No")),
        note="AWS: a comparison on a Variable path that is not in the input fails the execution "
        "with States.Runtime ('Invalid path ...: The choice state's condition path references "
        "an invalid value'), which is why AWS's docs guard with IsPresent and why the Gate "
        "checks IsPresent first; moto 5.2.5 takes the comparison as false. The Gate never "
        "reaches it, so both route every gate document alike (test_asl_vs_moto.py).",
    ),
    Case(
        "input-path-to-an-absent-field-is-a-runtime-error",
        {"Narrow": passes(InputPath="$.missing")},
        {"other": 1},
        Outcome("FAILED", error="States.Runtime", path=("Narrow",)),
    ),
    # --- Task: ResultSelector, ResultPath, Catch (the pipeline's Task shape) -------------------
    Case(
        "task-result-selector-and-result-path",
        {
            "Read": {
                "Type": "Task",
                "Resource": GET_ITEM,
                "Parameters": {"TableName": TABLE, "Key": {"pk": {"S.$": "$.key"}}},
                "ResultSelector": {"value.$": "$.Item.value.S", "key.$": "$.Item.pk.S"},
                "ResultPath": "$.read",
                "End": True,
            }
        },
        {"key": "k-1", "kept": True},
        Outcome(
            "SUCCEEDED",
            {"key": "k-1", "kept": True, "read": {"value": "v-1", "key": "k-1"}},
            path=("Read",),
        ),
    ),
    Case(
        "task-catch-result-path-then-fail",  # Train's Catch → RecordFailure → RunFailed
        {
            "Read": {
                "Type": "Task",
                "Resource": GET_ITEM,
                "Parameters": {"TableName": "no-such-table", "Key": {"pk": {"S": "k"}}},
                "ResultPath": "$.read",
                "Catch": [
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Record"}
                ],
                "Next": "Done",
            },
            "Record": passes(Parameters={"error.$": "$.failure.Error", "kept.$": "$.kept"}),
            "Done": {"Type": "Succeed"},
        },
        {"kept": 1},
        Outcome(
            "SUCCEEDED",
            {"error": "DynamoDB.ResourceNotFoundException", "kept": 1},
            path=("Read", "Record"),
        ),
    ),
]


@pytest.fixture(scope="module")
def moto_sfn() -> Iterator[tuple[Any, Any]]:
    """moto with Step Functions executing, and one DynamoDB item for the Task cases."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "k-1"}, "value": {"S": "v-1"}})
        yield boto3.client("stepfunctions", region_name=REGION), dynamodb


def in_moto(
    client: Any, definition: dict[str, Any], execution_input: Any
) -> tuple[Outcome, list[dict[str, Any]]]:
    """moto's outcome, and its execution history's events."""
    arn = client.create_state_machine(
        name=f"differential-{uuid.uuid4().hex[:12]}",
        definition=json.dumps(definition),
        roleArn=ROLE,
    )["stateMachineArn"]
    execution = client.start_execution(
        stateMachineArn=arn, name=EXECUTION_NAME, input=json.dumps(execution_input)
    )["executionArn"]
    deadline = time.monotonic() + 10
    while (described := client.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "moto's execution did not finish"
        time.sleep(0.01)
    history = client.get_execution_history(executionArn=execution)["events"]
    entered = tuple(
        event["stateEnteredEventDetails"]["name"]
        for event in history
        if event["type"].endswith("StateEntered")
    )
    if described["status"] == "SUCCEEDED":
        return Outcome("SUCCEEDED", json.loads(described["output"]), path=entered), history
    return Outcome(described["status"], error=described.get("error"), path=entered), history


def _get_item(dynamodb: Any, parameters: dict[str, Any]) -> Any:
    """Our stand-in for the ``dynamodb:getItem`` integration: the same call, the same error name."""
    try:
        answer = dynamodb.get_item(TableName=parameters["TableName"], Key=parameters["Key"])
    except dynamodb.exceptions.ResourceNotFoundException as exc:
        raise TaskFailure("DynamoDB.ResourceNotFoundException", str(exc)) from exc
    return {"Item": answer["Item"]}


def locally(dynamodb: Any, definition: dict[str, Any], execution_input: Any) -> Outcome:
    execution = run(
        definition,
        execution_input,
        tasks={GET_ITEM: lambda parameters: _get_item(dynamodb, parameters)},
        execution_name=EXECUTION_NAME,
    )
    if execution.status == "SUCCEEDED":
        return Outcome("SUCCEEDED", execution.output, path=tuple(execution.path))
    return Outcome("FAILED", error=execution.error, path=tuple(execution.path))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_our_interpreter_and_moto_agree_with_each_other_and_with_aws(
    moto_sfn: tuple[Any, Any], case: Case
) -> None:
    client, dynamodb = moto_sfn
    definition = machine(case.states)

    ours = locally(dynamodb, definition, case.input)
    theirs, _ = in_moto(client, definition, case.input)

    assert ours == case.expected
    if case.moto_departs is None:
        assert theirs == ours
    else:  # a documented departure of moto's, asserted exactly: a moto that fixes it fails here
        assert theirs == case.moto_departs, case.note


def test_retry_then_catch_agree_on_the_attempts_and_the_route(moto_sfn: tuple[Any, Any]) -> None:
    # Given the pipeline's Task shape: a retrier for the service's error, then a catcher
    client, dynamodb = moto_sfn
    definition = machine(
        {
            "Read": {
                "Type": "Task",
                "Resource": GET_ITEM,
                "Parameters": {"TableName": "no-such-table", "Key": {"pk": {"S": "k"}}},
                "Retry": [
                    {
                        "ErrorEquals": ["DynamoDB.ResourceNotFoundException"],
                        "IntervalSeconds": 1,
                        "MaxAttempts": 2,
                        "BackoffRate": 1,
                    }
                ],
                "Catch": [
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Failed"}
                ],
                "End": True,
            },
            "Failed": {"Type": "Fail", "Error": "Sluice.RunFailed"},
        }
    )

    # When both engines run it (ours waits nowhere; moto waits its 2 × 1 s)
    waits: list[float] = []
    ours = run(
        definition,
        {},
        tasks={GET_ITEM: lambda p: _get_item(dynamodb, p)},
        execution_name=EXECUTION_NAME,
        sleep=waits.append,
    )
    theirs, history = in_moto(client, definition, {})
    scheduled = [event for event in history if event["type"] == "TaskScheduled"]

    # Then both tried three times (one try, two retries), waited 1 s twice, and failed via Catch
    assert (ours.history[0].attempts, waits) == (3, [1.0, 1.0])
    assert len(scheduled) == 3
    assert theirs == Outcome("FAILED", error="Sluice.RunFailed", path=("Read", "Failed"))
    assert (ours.status, ours.error, tuple(ours.path)) == (
        "FAILED",
        "Sluice.RunFailed",
        theirs.path,
    )
