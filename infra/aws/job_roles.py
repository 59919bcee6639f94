"""The role a SageMaker job runs as (training, processing): what every such job needs beyond
its data, in one place: its code asset, the image's ECR repository, its CloudWatch log group and
metric namespace. The caller grants the data."""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
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
