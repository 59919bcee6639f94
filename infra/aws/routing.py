"""EventBridge → Lambda, the way sluice routes every event: the rule's target retries delivery,
Lambda retries a failed invocation twice, and what still fails lands in a dead-letter queue
(the local stack's router does the same: 3 attempts, then a dead letter)."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.aws.functions import SluiceFunction
from infra.aws.nag import acknowledge

MAX_EVENT_AGE = Duration.hours(6)


def dead_letter_queue(scope: Construct, construct_id: str) -> sqs.Queue:
    queue = sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=Duration.days(14),
    )
    acknowledge(
        queue,
        id="AwsSolutions-SQS3",
        reason="This queue is the dead-letter queue (the rule target's and the function's "
        "on-failure destination).",
    )
    return queue


def retry_then_dead_letter(to: SluiceFunction, dead_letters: sqs.IQueue) -> None:
    """Asynchronous invocations of ``to``: 3 attempts, then the dead-letter queue. Once per
    function, whatever number of rules invoke it."""
    to.function.configure_async_invoke(
        retry_attempts=2,
        max_event_age=MAX_EVENT_AGE,
        on_failure=destinations.SqsDestination(dead_letters),
    )


def rule(
    scope: Construct,
    construct_id: str,
    *,
    description: str,
    pattern: dict[str, Any],
    to: SluiceFunction,
    dead_letters: sqs.IQueue,
) -> events.Rule:
    """A rule invoking ``to`` asynchronously; events it cannot deliver go to the queue too."""
    return events.Rule(
        scope,
        construct_id,
        description=description,
        event_pattern=events.EventPattern(
            source=pattern["source"],
            detail_type=pattern["detail-type"],
            detail=pattern["detail"],
        ),
        targets=[
            targets.LambdaFunction(
                to.function,
                retry_attempts=8,
                max_event_age=MAX_EVENT_AGE,
                dead_letter_queue=dead_letters,
            )
        ],
    )
