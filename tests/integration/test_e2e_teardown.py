"""``make e2e-aws``'s teardown under moto: it finds what a throwaway stage's stack retains and
deletes it, versions and delete markers included; it refuses any other stage."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from functions.shared.alarms import CloudWatchRetrainAlarms
from infra.e2e_teardown import (
    Retained,
    buckets_in_deletion_order,
    check_throwaway,
    delete,
    delete_retraining_alarms,
    main,
    retained,
)

REGION = "eu-west-1"
TEMPLATE = {
    "Resources": {
        "Raw": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "sluice-raw-e2e-1"}},
        "StorageAccessLogs1A2B": {"Type": "AWS::S3::Bucket"},
        "Registry": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "TableName": "sluice-registry-e2e",
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            },
        },
        "Topic": {"Type": "AWS::SNS::Topic"},
    }
}


@pytest.fixture
def session() -> Iterator[boto3.session.Session]:
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


def test_teardown_deletes_what_the_stack_retains(session: boto3.session.Session) -> None:
    # Given: a deployed throwaway stage whose raw bucket is versioned and holds an overwritten
    # and a deleted object
    session.client("cloudformation").create_stack(
        StackName="sluice-e2e", TemplateBody=json.dumps(TEMPLATE)
    )
    s3 = session.client("s3")
    s3.put_bucket_versioning(
        Bucket="sluice-raw-e2e-1", VersioningConfiguration={"Status": "Enabled"}
    )
    for body in (b"v1", b"v2"):
        s3.put_object(Bucket="sluice-raw-e2e-1", Key="churn/data/a.csv", Body=body)
    s3.delete_object(Bucket="sluice-raw-e2e-1", Key="churn/data/a.csv")

    # When
    found = retained(session.client, "e2e")
    delete(session.client, found)

    # Then: the two buckets and the table, and nothing else, were found and are gone
    kinds = sorted(r.kind for r in found)
    assert kinds == ["AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::S3::Bucket"]
    assert s3.list_buckets()["Buckets"] == []
    assert session.client("dynamodb").list_tables()["TableNames"] == []
    assert session.client("sns").list_topics()["Topics"]  # the stack's own: cdk destroy's job


def test_teardown_deletes_the_stages_retraining_alarms_and_no_others(
    session: boto3.session.Session,
) -> None:
    # Given: promote's alarms for two datasets of the throwaway stage, and one of stage e2e2
    # (whose prefix "sluice-e2e2." does not start with "sluice-e2e.")
    cloudwatch = session.client("cloudwatch")
    for dataset in ("churn", "houses"):
        CloudWatchRetrainAlarms(cloudwatch, "e2e").ensure(dataset)
    kept = CloudWatchRetrainAlarms(cloudwatch, "e2e2").ensure("churn")

    # When
    deleted = delete_retraining_alarms(session.client, "e2e")

    # Then: the stage's six are gone, the other stage's stay
    assert len(deleted) == 6
    left = [a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]]
    assert sorted(left) == sorted(kept)


def test_no_stack_retains_nothing(session: boto3.session.Session) -> None:
    assert retained(session.client, "e2e-gone") == []


def test_a_stage_that_is_not_throwaway_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="stage 'dev' does not start with 'e2e'"):
        check_throwaway("dev")
    assert main(["prod"]) == 2
    assert "stage 'prod' does not start with 'e2e'" in capsys.readouterr().err


def test_the_access_log_bucket_is_emptied_last() -> None:
    # Given: emptying a logged bucket writes access logs, so the log bucket must go last
    resources = [
        Retained("AWS::S3::Bucket", "logs-bucket", "StorageAccessLogs1A2B"),
        Retained("AWS::DynamoDB::Table", "table", "RegistryTable"),
        Retained("AWS::S3::Bucket", "raw-bucket", "StorageRaw9F3C"),
    ]

    assert buckets_in_deletion_order(resources) == ["raw-bucket", "logs-bucket"]
