"""SageMaker jobs' IAM in one place: the role a job runs as (training, processing: its code
asset, the image's ECR repository, its CloudWatch log group and metric namespace; the caller
grants the data), and the state machine that starts such jobs with ``.sync``."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Aws, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.aws.images import TrainingImage
from infra.aws.nag import acknowledge


def sagemaker_job_role(
    scope: Construct,
    construct_id: str,
    *,
    description: str,
    jobs: str,
    image: TrainingImage,
    code: s3_assets.Asset,
) -> iam.Role:
    """``jobs``: SageMaker's name for the kind, as its log group and namespace spell it
    (``TrainingJobs``, ``ProcessingJobs``)."""
    role = iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
        description=description,
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[code.bucket.arn_for_objects(code.s3_object_key)]
        )
    )
    # the code is an S3Prefix input, which SageMaker lists before it downloads
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[code.bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{code.s3_object_key}*"]}},
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=[
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
            ],
            resources=[image.repository_arn],
        )
    )
    role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
    role.add_to_policy(
        iam.PolicyStatement(
            actions=[
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:DescribeLogStreams",
                "logs:PutLogEvents",
            ],
            resources=[
                f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:"
                f"/aws/sagemaker/{jobs}:*"
            ],
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": f"/aws/sagemaker/{jobs}"}},
        )
    )
    acknowledge(
        role,
        id="AwsSolutions-IAM5[Resource::*]",
        reason="ecr:GetAuthorizationToken and cloudwatch:PutMetricData support no "
        "resource-level permissions; PutMetricData is conditioned on SageMaker's namespace.",
    )
    acknowledge(
        role,
        id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:"
        f"<AWS::AccountId>:log-group:/aws/sagemaker/{jobs}:*]",
        reason="SageMaker names one log stream per job under its fixed log group.",
    )
    return role


def job_state_machine(
    scope: Construct,
    *,
    name: str,
    definition: Path,
    substitutions: dict[str, str],
    description: str,
    job_arn: str,
    job_actions: list[str],
    job_role: iam.IRole,
    events_rule: str,
    invokes: list[str],
    job_reason: str,
) -> sfn.StateMachine:
    """A state machine from an ASL file whose tasks run SageMaker jobs (``.sync``) and invoke
    functions: its role (the job actions on ``job_arn``, PassRole of ``job_role`` to SageMaker
    only, the rule ``.sync`` watches jobs with, InvokeFunction on ``invokes``), its execution
    logs (ALL, with data) and tracing. Construct ids ``ExecutionLogs``, ``StateMachineRole``,
    ``StateMachine`` under ``scope``."""
    log_group = logs.LogGroup(
        scope,
        "ExecutionLogs",
        log_group_name=f"/aws/vendedlogs/states/{name}",
        retention=logs.RetentionDays.THREE_MONTHS,
        removal_policy=RemovalPolicy.DESTROY,
    )
    role = iam.Role(
        scope,
        "StateMachineRole",
        assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
        description=description,
    )
    role.add_to_policy(iam.PolicyStatement(actions=job_actions, resources=[job_arn]))
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["iam:PassRole"],
            resources=[job_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(  # what .sync uses to learn that a job finished
            actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            resources=[
                f"arn:{Aws.PARTITION}:events:{Aws.REGION}:{Aws.ACCOUNT_ID}:rule/{events_rule}"
            ],
        )
    )
    for arn in invokes:
        role.add_to_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[arn]))
    machine = sfn.StateMachine(
        scope,
        "StateMachine",
        state_machine_name=name,
        definition_body=sfn.DefinitionBody.from_file(str(definition)),
        definition_substitutions=substitutions,
        role=role,
        logs=sfn.LogOptions(
            destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True
        ),
        tracing_enabled=True,
    )
    kind = job_arn.rsplit(":", 1)[-1]  # training-job/*, processing-job/*
    acknowledge(
        role,
        id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
        f"<AWS::AccountId>:{kind}]",
        reason=job_reason,
    )
    acknowledge(
        role,
        id="AwsSolutions-IAM5[Resource::*]",
        reason="CloudWatch Logs delivery (logs:*LogDelivery*, DescribeLogGroups, "
        "resource policies) and X-Ray support no resource-level permissions; CDK adds "
        "them for logging ALL and tracing.",
    )
    return machine
