"""The S3 adapter writes object tags with the object, as the artifacts bucket's lifecycle rule
matches them (captured requests and feedback expire; nothing else is tagged)."""

from __future__ import annotations

from functions.shared.layout import TELEMETRY_TAGS
from functions.shared.storage import S3ObjectStore
from tests.integration.conftest import Aws


def test_a_tagged_put_carries_its_tags_and_an_untagged_one_none(aws: Aws) -> None:
    # Given the artifacts bucket behind the S3 adapter
    store = S3ObjectStore(aws.s3)
    bucket = aws.topology.artifacts_bucket

    # When one object is put with the telemetry tags and one without
    store.put_bytes(bucket, "churn/capture/a.jsonl.gz", b"x", "application/gzip", TELEMETRY_TAGS)
    store.put_bytes(bucket, "churn/models/card.json", b"{}")

    # Then S3 holds the tags on the first only
    tagged = aws.s3.get_object_tagging(Bucket=bucket, Key="churn/capture/a.jsonl.gz")
    assert {t["Key"]: t["Value"] for t in tagged["TagSet"]} == TELEMETRY_TAGS
    untagged = aws.s3.get_object_tagging(Bucket=bucket, Key="churn/models/card.json")
    assert untagged["TagSet"] == []
    assert store.get_bytes(bucket, "churn/capture/a.jsonl.gz") == b"x"
