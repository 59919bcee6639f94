"""The buckets: raw uploads (versioned, EventBridge notifications on), artifacts, and the bucket
their access logs go to. Encrypted, SSL-only, public access blocked, retained on stack delete and
on replacement, but deleted when the create that made them rolls back (RetainExceptOnCreate), so a
failed first deploy can simply be retried."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from functions.shared.layout import CHECKPOINTS_PREFIX, TELEMETRY_TAGS
from infra.aws.nag import acknowledge, logical_id
from infra.topology import Topology

# Captured requests and feedback (tagged TELEMETRY_TAGS by the inference function) expire after
# this: the drift and quality windows read hours to days of them; 90 days keep a quarter to look
# back on (docs/decisions.md).
TELEMETRY_RETENTION_DAYS = 90


def _bucket(scope: Construct, construct_id: str, **props: object) -> s3.Bucket:
    return s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        removal_policy=RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
        **props,  # type: ignore[arg-type]
    )


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, topology: Topology) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = _bucket(
            self,
            "AccessLogs",
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
        )
        acknowledge(
            self.access_logs,
            id="AwsSolutions-S1",
            reason="This is the access-log bucket; logging it to itself would loop.",
        )
        self.raw = _bucket(
            self,
            "Raw",
            bucket_name=topology.raw_bucket,
            versioned=True,  # raw data is never overwritten: every upload stays readable
            event_bridge_enabled=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="raw/",
        )
        self.artifacts = _bucket(
            self,
            "Artifacts",
            bucket_name=topology.artifacts_bucket,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="artifacts/",
            lifecycle_rules=[
                # SageMaker spot checkpoints only matter while their run is alive; S3 prefixes
                # are literal, so they live under one top-level prefix (functions/shared/layout.py)
                s3.LifecycleRule(prefix=CHECKPOINTS_PREFIX, expiration=Duration.days(14)),
                # capture and feedback live under each dataset's prefix: a tag marks them
                s3.LifecycleRule(
                    tag_filters=TELEMETRY_TAGS,
                    expiration=Duration.days(TELEMETRY_RETENTION_DAYS),
                ),
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(90)),
                # batch parts are staged as multipart uploads; one left open by a run that was
                # killed (its timeout) before it could abort is never visible, only billed
                s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
        )


def objects(bucket: s3.IBucket, *patterns: str) -> list[str]:
    """ARNs of the objects under the given key patterns (e.g. ``*/models/*``)."""
    return [bucket.arn_for_objects(pattern) for pattern in patterns]


def grant_read(role: iam.IRole, bucket: s3.Bucket, *patterns: str) -> None:
    """GetObject under the key patterns, and ListBucket, without which a missing key reads as
    403 rather than 404."""
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:GetObject", "s3:GetObjectVersion"], resources=objects(bucket, *patterns)
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
    )
    _acknowledge(role, bucket, patterns)


def grant_write(role: iam.IRole, bucket: s3.Bucket, *patterns: str, tagged: bool = False) -> None:
    """PutObject under the key patterns; ``tagged``: with object tags on the put, which S3
    authorizes as PutObjectTagging too."""
    tagging = ["s3:PutObjectTagging"] if tagged else []
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:PutObject", "s3:AbortMultipartUpload", *tagging],
            resources=objects(bucket, *patterns),
        )
    )
    _acknowledge(role, bucket, patterns)


def _acknowledge(role: iam.IRole, bucket: s3.Bucket, patterns: tuple[str, ...]) -> None:
    """A key-pattern grant is a wildcard to cdk-nag; each is acknowledged by name, so any other
    wildcard on the role is still a finding."""
    for pattern in patterns:
        acknowledge(
            role,
            id=f"AwsSolutions-IAM5[Resource::<{logical_id(bucket)}.Arn>/{pattern}]",
            reason=f"Scoped to the key pattern {pattern} of one bucket; the wildcard is the "
            "dataset name (and the file name below its prefix).",
        )
