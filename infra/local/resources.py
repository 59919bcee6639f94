"""Create, in any AWS-compatible endpoint (moto in-process or moto's server), the resources the
CDK stack declares: the two buckets, the upload route S3 → EventBridge → SQS, the state
machines (the pipeline, the part builds and the batch jobs), the model registry table and the
decisions topic. Names come from the topology module."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from functions.shared.registry_dynamodb import create_table
from infra.local.pipeline import batch_definition, builds_definition
from infra.local.pipeline import definition as pipeline_definition
from infra.topology import Topology, batch_event_pattern, upload_event_pattern

UPLOAD_QUEUE = "sluice-uploads"
UPLOAD_RULE = "sluice-data-uploads"
BATCH_RULE = "sluice-batch-uploads"


@dataclass(frozen=True)
class LocalResources:
    topology: Topology
    upload_queue_url: str


def provision(
    clients: Any, topology: Topology, *, before_events: Callable[[], None] | None = None
) -> LocalResources:
    """``clients(service)`` returns a boto3 client for that service. ``before_events`` runs
    once the buckets, table, topic and state machine exist and before S3 events are wired, so
    what it writes (a restored snapshot) is not taken for new uploads."""
    s3 = clients("s3")
    for bucket in (topology.raw_bucket, topology.artifacts_bucket):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    clients("stepfunctions").create_state_machine(
        name=topology.state_machine_name,
        # The real definition, so the endpoint holds what AWS would; moto records executions,
        # and infra/local/pipeline.py runs them.
        definition=json.dumps(pipeline_definition(topology)),
        roleArn=topology.pipeline_role_arn,
    )
    clients("stepfunctions").create_state_machine(
        name=topology.builds_state_machine_name,
        definition=json.dumps(builds_definition(topology)),
        roleArn=topology.pipeline_role_arn,
    )
    clients("stepfunctions").create_state_machine(
        name=topology.batch_jobs_state_machine_name,
        definition=json.dumps(batch_definition(topology)),
        roleArn=topology.pipeline_role_arn,
    )
    create_table(clients("dynamodb"), topology.registry_table)
    clients("sns").create_topic(Name=topology.decisions_topic_name)
    if before_events is not None:
        before_events()
    sqs = clients("sqs")
    queue_url = sqs.create_queue(QueueName=UPLOAD_QUEUE)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events = clients("events")
    # Both rules feed one queue; the router hands each event to the function its key belongs to.
    for rule, pattern in (
        (UPLOAD_RULE, upload_event_pattern(topology)),
        (BATCH_RULE, batch_event_pattern(topology)),
    ):
        events.put_rule(Name=rule, EventPattern=json.dumps(pattern))
        events.put_targets(Rule=rule, Targets=[{"Id": "uploads", "Arn": queue_arn}])
    s3.put_bucket_notification_configuration(
        Bucket=topology.raw_bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    return LocalResources(topology=topology, upload_queue_url=queue_url)


def receive_upload_events(clients: Any, resources: LocalResources) -> list[dict[str, Any]]:
    """Drain the upload queue: the EventBridge events S3 emitted, as Lambda would receive them."""
    sqs = clients("sqs")
    events: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=resources.upload_queue_url, MaxNumberOfMessages=10)
        messages = batch.get("Messages", [])
        if not messages:
            return events
        for message in messages:
            events.append(json.loads(message["Body"]))
            sqs.delete_message(
                QueueUrl=resources.upload_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
