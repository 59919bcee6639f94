"""The preprocess handler under moto: events as S3 and EventBridge really deliver them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.preprocess import handler
from tests.builders import EVENTS, churn_frame, contract_bytes, csv_bytes
from tests.integration.conftest import Aws


class Context(LambdaContext):
    _function_name = "sluice-preprocess-test"
    _memory_limit_in_mb = 3008
    _invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:sluice-preprocess"
    _aws_request_id = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(autouse=True)
def _fresh_clients() -> None:
    handler._deps.cache_clear()  # clients must be built inside each moto context


def delivered_events(aws: Aws) -> list[dict[str, Any]]:
    """What EventBridge routed to the upload queue, as the function would receive it."""
    messages = aws.sqs.receive_message(QueueUrl=aws.upload_queue, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def invoke(event: dict[str, Any]) -> list[dict[str, Any]]:
    result: dict[str, Any] = handler.lambda_handler(event, Context())
    outcomes: list[dict[str, Any]] = result["outcomes"]
    return outcomes


def executions(aws: Aws) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = aws.sfn.list_executions(
        stateMachineArn=aws.topology.state_machine_arn
    )["executions"]
    return found


def test_an_eventbridge_upload_event_builds_a_version_and_starts_one_execution(aws: Aws) -> None:
    raw = aws.topology.raw_bucket
    aws.s3.put_object(Bucket=raw, Key="churn/contract.json", Body=contract_bytes())
    aws.s3.put_object(Bucket=raw, Key="churn/data/jan.csv", Body=csv_bytes(churn_frame(400)))
    events = [e for e in delivered_events(aws) if e["detail"]["object"]["key"].endswith(".csv")]
    assert len(events) == 1

    first = invoke(events[0])
    again = invoke(events[0])  # at-least-once delivery: the same event twice

    assert first[0]["status"] == "started"
    assert again[0]["status"] == "duplicate"
    started = executions(aws)
    assert [e["name"] for e in started] == [first[0]["run_name"]]
    run_input = json.loads(
        aws.sfn.describe_execution(executionArn=started[0]["executionArn"])["input"]
    )
    assert run_input["dataset_version"] == first[0]["dataset_version"]
    listed = aws.s3.list_objects_v2(
        Bucket=aws.topology.artifacts_bucket,
        Prefix=f"churn/versions/{first[0]['dataset_version']}/",
    )
    # schema, profile, three channel manifests, and the manifest; the rows are in the part
    assert len(listed["Contents"]) == 6
    assert run_input["data_type"] == "ManifestFile"
    parts = aws.s3.list_objects_v2(Bucket=aws.topology.artifacts_bucket, Prefix="churn/parts/")
    assert sum(o["Key"].endswith("/part.json") for o in parts["Contents"]) == 1


def test_the_classic_notification_shape_is_accepted(aws: Aws) -> None:
    raw = aws.topology.raw_bucket
    aws.s3.put_object(Bucket=raw, Key="churn/contract.json", Body=contract_bytes())
    put = aws.s3.put_object(Bucket=raw, Key="churn/data/jan.csv", Body=csv_bytes(churn_frame(300)))
    event = json.loads((EVENTS / "s3_object_created.s3_notification.json").read_text())
    obj = event["Records"][0]["s3"]
    obj["bucket"]["name"] = raw
    obj["object"].update(
        {"key": "churn/data/jan.csv", "eTag": put["ETag"].strip('"'), "versionId": put["VersionId"]}
    )
    outcomes = invoke(event)
    assert outcomes[0]["status"] == "started"
    assert len(executions(aws)) == 1


def test_a_test_event_does_nothing(aws: Aws) -> None:
    event = json.loads((EVENTS / "s3_test_event.s3_notification.json").read_text())
    assert invoke(event) == []
    assert executions(aws) == []


def test_a_rejected_upload_leaves_the_raw_object_and_writes_a_report(aws: Aws) -> None:
    raw = aws.topology.raw_bucket
    aws.s3.put_object(Bucket=raw, Key="churn/contract.json", Body=contract_bytes(metric="rmse"))
    body = csv_bytes(churn_frame(300))
    aws.s3.put_object(Bucket=raw, Key="churn/data/jan.csv", Body=body)
    event = next(e for e in delivered_events(aws) if e["detail"]["object"]["key"].endswith(".csv"))

    outcome = invoke(event)[0]

    assert outcome["status"] == "rejected"
    assert aws.s3.get_object(Bucket=raw, Key="churn/data/jan.csv")["Body"].read() == body
    versions = aws.s3.list_object_versions(Bucket=raw, Prefix="churn/data/")["Versions"]
    assert len(versions) == 1
    report = json.loads(
        aws.s3.get_object(Bucket=aws.topology.artifacts_bucket, Key=outcome["report_key"])[
            "Body"
        ].read()
    )
    assert report["violations"][0]["rule"] == "contract_invalid"
    assert executions(aws) == []


def test_the_bundled_sample_is_accepted_with_its_duplicates_dropped(aws: Aws) -> None:
    sample = Path(__file__).resolve().parents[2] / "samples" / "churn"
    raw = aws.topology.raw_bucket
    aws.s3.put_object(
        Bucket=raw, Key="churn/contract.json", Body=(sample / "contract.json").read_bytes()
    )
    aws.s3.put_object(
        Bucket=raw, Key="churn/data/churn.csv", Body=(sample / "data" / "churn.csv").read_bytes()
    )
    event = next(e for e in delivered_events(aws) if e["detail"]["object"]["key"].endswith(".csv"))
    outcome = invoke(event)[0]
    assert outcome["status"] == "started", outcome
    assert outcome["rows"]["read"] == 5040
    assert outcome["rows"]["duplicates_dropped"] == 40
