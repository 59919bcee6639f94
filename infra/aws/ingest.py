"""Uploads → preprocess: an EventBridge rule on ``<dataset>/data/`` keys of the raw bucket invokes
the preprocess function asynchronously; Lambda retries a failed event twice, then the event goes
to the dead-letter queue (infra/aws/routing.py).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.shared.layout import CONTRACT_FILE, DATA_PREFIX
from infra.aws.functions import Layers, SluiceFunction
from infra.aws.nag import acknowledge
from infra.aws.routing import dead_letter_queue, retry_then_dead_letter, rule
from infra.aws.storage import Storage, grant_read, grant_write
from infra.topology import Topology, upload_event_pattern

PREPROCESS_TMP_MB = 10_240  # Lambda's most; the default 512 MB held no 1 GiB upload


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
        self.dead_letters = dead_letter_queue(self, "DeadLetters")
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
            # /tmp holds one downloaded data file (at most Policy.max_upload_bytes, 1 GiB) and
            # the splits of the whole dataset; docs/decisions.md, "Upload size cap"
            ephemeral_storage_mb=PREPROCESS_TMP_MB,
            timeout=Duration.minutes(15),
        )
        self.rule = self.route(
            "Uploads",
            "Object Created under <dataset>/data/ in the raw bucket → preprocess",
            upload_event_pattern(topology),
            self.preprocess,
        )
        role = self.preprocess.role
        grant_read(role, storage.raw, f"*/{DATA_PREFIX}*", f"*/{CONTRACT_FILE}")
        grant_read(role, storage.artifacts, "*/versions/*", "*/parts/*")
        grant_write(role, storage.artifacts, "*/versions/*", "*/parts/*", "*/rejected/*")

    def route(
        self, construct_id: str, description: str, pattern: dict[str, Any], to: SluiceFunction
    ) -> events.Rule:
        """A rule invoking ``to`` (one rule per function): 3 attempts, then this construct's
        dead-letter queue (delivery failures too)."""
        retry_then_dead_letter(to, self.dead_letters)
        return rule(
            self,
            construct_id,
            description=description,
            pattern=pattern,
            to=to,
            dead_letters=self.dead_letters,
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
