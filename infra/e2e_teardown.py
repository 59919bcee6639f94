"""``make e2e-aws``'s last step: destroy a throwaway stage and the data its stack retains.

A stage's buckets and registry table outlive ``cdk destroy`` on purpose (docs/deploy.md), so a
second ``make e2e-aws`` would fail on names that already exist. This deletes them too, and only
for a stage whose name starts with ``e2e``: that name is the confirmation that the stage and
everything in it exist for the test alone. Usage: ``python -m infra.e2e_teardown STAGE``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

THROWAWAY = "e2e"
RETAINED = ("AWS::S3::Bucket", "AWS::DynamoDB::Table")
CDK = "node_modules/.bin/cdk"


def check_throwaway(stage: str) -> None:
    if not stage.startswith(THROWAWAY):
        raise ValueError(
            f"stage '{stage}' does not start with '{THROWAWAY}': only a throwaway stage is "
            "destroyed with its data (docs/deploy.md, Tearing down, for any other)"
        )


@dataclass(frozen=True)
class Retained:
    kind: str
    name: str
    logical_id: str


def retained(client: Callable[[str], Any], stage: str) -> list[Retained]:
    """What the stack keeps when deleted; empty without the stack."""
    cloudformation = client("cloudformation")
    found: list[Retained] = []
    paginator = cloudformation.get_paginator("list_stack_resources")
    try:
        for page in paginator.paginate(StackName=f"sluice-{stage}"):
            for resource in page["StackResourceSummaries"]:
                if resource["ResourceType"] in RETAINED and resource.get("PhysicalResourceId"):
                    found.append(
                        Retained(
                            kind=resource["ResourceType"],
                            name=resource["PhysicalResourceId"],
                            logical_id=resource["LogicalResourceId"],
                        )
                    )
    except ClientError as error:
        if "does not exist" in str(error):
            return []
        raise
    return found


def buckets_in_deletion_order(resources: Sequence[Retained]) -> list[str]:
    """The access-log bucket (infra/aws/storage.py's ``AccessLogs``) after the buckets it logs."""
    buckets = [r for r in resources if r.kind == "AWS::S3::Bucket"]
    return [r.name for r in sorted(buckets, key=lambda r: "AccessLogs" in r.logical_id)]


def delete(client: Callable[[str], Any], resources: Sequence[Retained]) -> None:
    """Buckets emptied of every object version and delete marker, then removed (the access-log
    bucket last, since emptying the others logs into it); then the tables."""
    s3, dynamodb = client("s3"), client("dynamodb")
    for bucket in buckets_in_deletion_order(resources):
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            doomed = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            for start in range(0, len(doomed), 1000):
                s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed[start : start + 1000]})
        s3.delete_bucket(Bucket=bucket)
    for table in (r for r in resources if r.kind == "AWS::DynamoDB::Table"):
        dynamodb.delete_table(TableName=table.name)


def delete_retraining_alarms(client: Callable[[str], Any], stage: str) -> list[str]:
    """The retraining alarms promote put per dataset (functions/shared/alarms.py): not
    CloudFormation resources, so ``cdk destroy`` leaves them; the stage's name prefix finds
    them all, and nothing of another stage."""
    from functions.shared.alarms import alarm_prefix

    cloudwatch = client("cloudwatch")
    names = [
        alarm["AlarmName"]
        for page in cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmNamePrefix=alarm_prefix(stage), AlarmTypes=["MetricAlarm"]
        )
        for alarm in page["MetricAlarms"]
    ]
    for start in range(0, len(names), 100):  # DeleteAlarms takes 100 names at most
        cloudwatch.delete_alarms(AlarmNames=names[start : start + 100])
    return names


def main(argv: Sequence[str] | None = None) -> int:
    import boto3

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m infra.e2e_teardown STAGE", file=sys.stderr)
        return 2
    stage = args[0]
    try:
        check_throwaway(stage)
    except ValueError as error:
        print(f"e2e teardown: {error}", file=sys.stderr)
        return 2
    session = boto3.session.Session()
    keep = retained(session.client, stage)  # listed first: the deleted stack forgets them
    destroy = [CDK, "destroy", "--force", "-c", f"stage={stage}", f"sluice-{stage}"]
    if subprocess.run(destroy, check=False).returncode != 0:
        print(f"e2e teardown: {' '.join(destroy)} failed; retained: {keep}", file=sys.stderr)
        return 1
    delete(session.client, keep)
    alarms = delete_retraining_alarms(session.client, stage)
    print(
        f"e2e teardown: sluice-{stage} destroyed, {len(keep)} retained resources and "
        f"{len(alarms)} retraining alarms deleted"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
