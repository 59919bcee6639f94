"""Settings that belong to the account and region, not to a stage: API Gateway's CloudWatch Logs
role (``AWS::ApiGateway::Account`` is one per account and region) and the retention of
SageMaker's training-job log group (one per account and region, shared by every training job).

One stack, ``sluice-account``, that every stage's stack depends on, so ``cdk deploy sluice-dev``
deploys it first. A stage owning the ApiGateway::Account made the account-wide setting the last
deployed stage's, and destroying that stage deleted the role every other API logs through. Both
resources here are retained when the stack is deleted: other APIs of the account rely on them.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.aws.nag import acknowledge

ACCOUNT_STACK = "sluice-account"
SAGEMAKER_TRAINING_LOGS = "/aws/sagemaker/TrainingJobs"
SAGEMAKER_LOG_RETENTION = logs.RetentionDays.THREE_MONTHS


class AccountSettings(Stack):
    def __init__(self, scope: Construct, **kwargs: Any) -> None:
        super().__init__(
            scope,
            ACCOUNT_STACK,
            description="sluice: account-wide settings every stage relies on (API Gateway "
            "logging role, SageMaker training log retention)",
            **kwargs,
        )
        role = iam.Role(
            self,
            "ApiGatewayLogsRole",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description="API Gateway: write execution and access logs to CloudWatch Logs "
            "(account-wide)",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AmazonAPIGatewayPushToCloudWatchLogs"
                )
            ],
        )
        role.apply_removal_policy(RemovalPolicy.RETAIN)
        acknowledge(
            role,
            id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            reason="API Gateway's account-level logging role; AWS's managed policy is the "
            "documented way to grant it.",
        )
        self.api_gateway_account = apigw.CfnAccount(
            self, "ApiGatewayAccount", cloud_watch_role_arn=role.role_arn
        )
        self.api_gateway_account.apply_removal_policy(RemovalPolicy.RETAIN)
        self.api_gateway_account.node.add_dependency(role)
        # SageMaker creates the log group on the first training job, without retention; the
        # custom resource sets it whether the group exists yet or not
        self.training_logs = logs.LogRetention(
            self,
            "SageMakerTrainingLogs",
            log_group_name=SAGEMAKER_TRAINING_LOGS,
            retention=SAGEMAKER_LOG_RETENTION,
            removal_policy=RemovalPolicy.RETAIN,
        )
        for child in self.node.children:  # CDK's singleton handler behind LogRetention
            if child.node.id.startswith("LogRetention"):
                acknowledge(
                    child,
                    id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    "service-role/AWSLambdaBasicExecutionRole]",
                    reason="CDK's own custom resource that sets a log group's retention; it "
                    "runs only during deployments.",
                )
                acknowledge(
                    child,
                    id="AwsSolutions-IAM5[Resource::*]",
                    reason="CDK's LogRetention handler may set the retention of any log group "
                    "(logs:PutRetentionPolicy, DeleteRetentionPolicy); it runs only during "
                    "deployments, on the SageMaker training log group named here.",
                )
