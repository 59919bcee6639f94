"""Uploads → preprocess: an EventBridge rule on ``<dataset>/data/`` keys of the raw bucket invokes
the preprocess function asynchronously; Lambda retries a failed event twice, then the event goes
to the dead-letter queue (the local stack's router does the same: 3 attempts, then a dead letter).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.shared.layout import CONTRACT_FILE, DATA_PREFIX
from infra.aws.functions import Layers, SluiceFunction
from infra.aws.nag import acknowledge
from infra.aws.storage import Storage, grant_read, grant_write
from infra.topology import Topology, upload_event_pattern

PREPROCESS_CONCURRENCY = 5  # uploads are rare; a burst must not starve the account's pool


class Ingest(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topology: Topology,
        storage: Storage,
        layers: Layers,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.preprocess = SluiceFunction(
            self,
            "Preprocess",
            topology=topology,
            name="preprocess",
            package="preprocess",
            handler="functions.preprocess.handler.lambda_handler",
            layers=layers,
            environment=topology.preprocess_environment(),
            memory_mb=3008,
            timeout=Duration.minutes(15),
            reserved_concurrency=PREPROCESS_CONCURRENCY,
        )
        self.rule = self.route(
            "Uploads",
            "Object Created under <dataset>/data/ in the raw bucket → preprocess",
            upload_event_pattern(topology),
            self.preprocess,
        )
        role = self.preprocess.role
        grant_read(role, storage.raw, f"*/{DATA_PREFIX}*", f"*/{CONTRACT_FILE}")
        grant_read(role, storage.artifacts, "*/versions/*")
        grant_write(role, storage.artifacts, "*/versions/*", "*/rejected/*")
        acknowledge(
            self.dead_letters,
            id="AwsSolutions-SQS3",
            reason="This queue is the dead-letter queue (the rule target's and the function's "
            "on-failure destination).",
        )

    def route(
        self, construct_id: str, description: str, pattern: dict[str, Any], to: SluiceFunction
    ) -> events.Rule:
        """An EventBridge rule invoking ``to`` asynchronously: 3 attempts, then the dead-letter
        queue (delivery failures too)."""
        to.function.configure_async_invoke(
            retry_attempts=2,
            max_event_age=Duration.hours(6),
            on_failure=destinations.SqsDestination(self.dead_letters),
        )
        return events.Rule(
            self,
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
                    max_event_age=Duration.hours(6),
                    dead_letter_queue=self.dead_letters,
                )
            ],
        )

    def allow_start(self, state_machine: sfn.IStateMachine, topology: Topology) -> None:
        executions = (
            f"arn:aws:states:{topology.region}:{topology.account}:execution:"
            f"{topology.state_machine_name}:*"
        )
        self.preprocess.role.add_to_policy(
            iam.PolicyStatement(
                actions=["states:StartExecution"], resources=[state_machine.state_machine_arn]
            )
        )
        self.preprocess.role.add_to_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[executions])
        )
        acknowledge(
            self.preprocess.role,
            id="AwsSolutions-IAM5[Resource::arn:aws:states:<AWS::Region>:<AWS::AccountId>:"
            f"execution:{topology.state_machine_name}:*]",
            reason="Execution names are made per upload; preprocess may only describe the "
            "executions of this state machine (an idempotent restart reads the existing one).",
        )
