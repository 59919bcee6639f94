"""Integration tests run handlers in-process against moto's AWS, with real boto3 clients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.topology import Topology


@dataclass
class Aws:
    topology: Topology
    s3: Any
    sfn: Any
    events: Any
    sqs: Any
    upload_queue: str


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """Buckets, an upload-event route (S3 → EventBridge → SQS) and a state machine in moto."""
    topo = Topology(stage="test")
    for name, value in topo.preprocess_environment().items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name=topo.region)
        for bucket in (topo.raw_bucket, topo.artifacts_bucket):
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(
            Bucket=topo.raw_bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        s3.put_bucket_notification_configuration(
            Bucket=topo.raw_bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
        sqs = boto3.client("sqs", region_name=topo.region)
        queue = sqs.create_queue(QueueName="uploads")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events = boto3.client("events", region_name=topo.region)
        events.put_rule(
            Name="uploads",
            EventPattern=json.dumps(
                {
                    "source": ["aws.s3"],
                    "detail-type": ["Object Created"],
                    "detail": {"bucket": {"name": [topo.raw_bucket]}},
                }
            ),
        )
        events.put_targets(Rule="uploads", Targets=[{"Id": "queue", "Arn": queue_arn}])
        sfn = boto3.client("stepfunctions", region_name=topo.region)
        sfn.create_state_machine(
            name=topo.state_machine_name,
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn=topo.pipeline_role_arn,
        )
        yield Aws(topo, s3, sfn, events, sqs, queue)
