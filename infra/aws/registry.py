"""The model registry table and the decisions topic."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from functions.shared.registry_dynamodb import TABLE_KEY_SCHEMA
from infra.topology import Topology

# What DynamoDBRegistry calls (TransactWriteItems and TransactGetItems are authorised per item
# by these); Scan is for the operators' `sluice models` and the API's `GET /v1/models` only.
READ_ACTIONS = ["dynamodb:GetItem", "dynamodb:Query"]
WRITE_ACTIONS = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"]
# What DynamoDBGuardStore calls (functions/retrain/guard_store.py): GetItem, Query, and PutItem,
# alone or as the two Puts of a TransactWriteItems (authorised per item, as PutItem).
GUARD_ACTIONS = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem"]


class Registry(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, topology: Topology) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self,
            "Table",
            table_name=topology.registry_table,
            partition_key=dynamodb.Attribute(name=_key("HASH"), type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=_key("RANGE"), type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            # retraining decision records expire (functions/retrain/guard_store.py)
            time_to_live_attribute="expires_at",
            # kept on stack delete and replacement, deleted only when the create that made it
            # rolls back (so a failed first deploy can be retried); no deletion protection,
            # which would make that rollback fail (docs/decisions.md)
            removal_policy=RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
        )
        self.decisions = sns.Topic(
            self,
            "Decisions",
            topic_name=topology.decisions_topic_name,
            master_key=kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns"),
            enforce_ssl=True,
        )

    def reader(self) -> iam.PolicyStatement:
        return iam.PolicyStatement(actions=READ_ACTIONS, resources=[self.table.table_arn])

    def lister(self) -> iam.PolicyStatement:
        """``active_datasets()``: one Scan of the table, for the API's ``GET /v1/models``."""
        return iam.PolicyStatement(actions=["dynamodb:Scan"], resources=[self.table.table_arn])

    def writer(self) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            actions=READ_ACTIONS + WRITE_ACTIONS, resources=[self.table.table_arn]
        )

    def guard_keeper(self) -> iam.PolicyStatement:
        """The retraining guard's state and decision log, kept in the datasets' partitions."""
        return iam.PolicyStatement(actions=GUARD_ACTIONS, resources=[self.table.table_arn])

    def publisher(self) -> iam.PolicyStatement:
        return iam.PolicyStatement(actions=["sns:Publish"], resources=[self.decisions.topic_arn])


def _key(kind: str) -> str:
    """The key names come from the one schema the local stack and the tests create."""
    return next(k["AttributeName"] for k in TABLE_KEY_SCHEMA if k["KeyType"] == kind)
