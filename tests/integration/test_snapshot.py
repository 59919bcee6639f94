"""The local stack's state on disk: saved through the S3 and DynamoDB APIs, put back the same way.

Each test saves from one moto and restores into a fresh one, as a restart of ``sluice up`` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.shared.registry_dynamodb import create_table
from infra.local.snapshot import BLOBS_DIR, STATE_DIR, SnapshotError, Snapshots

REGION = "eu-west-1"
BUCKETS = ("raw-bucket", "artifacts-bucket")
TABLE = "registry"


def _clients(service: str) -> Any:
    return boto3.client(service, region_name=REGION)


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        _provision()
        yield


def _provision() -> None:
    s3 = _clients("s3")
    for bucket in BUCKETS:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    create_table(_clients("dynamodb"), TABLE)


def _restart() -> None:
    """What a new ``sluice up`` process finds: an endpoint with empty resources."""
    mock_aws().reset()  # type: ignore[no-untyped-call]
    _provision()


def _snapshots(root: Path) -> Snapshots:
    return Snapshots(root, _clients, buckets=BUCKETS, tables=(TABLE,))


def _versions(bucket: str, key: str) -> list[bytes]:
    s3 = _clients("s3")
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    return [
        s3.get_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])["Body"].read()
        for v in reversed(listed)
        if v["Key"] == key
    ]


def test_every_object_version_and_table_item_comes_back(aws: None, tmp_path: Path) -> None:
    # Given objects with several versions, metadata, a deleted key, and registry items
    s3 = _clients("s3")
    for body in (b"v1", b"v2", b"v3"):
        s3.put_object(
            Bucket="raw-bucket",
            Key="churn/data/jan.csv",
            Body=body,
            ContentType="text/csv",
            Metadata={"source": "crm"},
        )
    s3.put_object(Bucket="raw-bucket", Key="churn/data/old.csv", Body=b"gone")
    s3.delete_object(Bucket="raw-bucket", Key="churn/data/old.csv")
    s3.put_object(Bucket="artifacts-bucket", Key="churn/models/m/model.onnx", Body=b"\x00" * 10)
    dynamodb = _clients("dynamodb")
    items: list[dict[str, Any]] = [
        {"pk": {"S": "churn"}, "sk": {"S": "LIVE"}, "version": {"N": "1"}}
    ]
    items += [  # more than one BatchWriteItem
        {"pk": {"S": "churn"}, "sk": {"S": f"MODEL#{i:08d}"}, "tags": {"SS": ["a", "b"]}}
        for i in range(1, 31)
    ]
    for item in items:
        dynamodb.put_item(TableName=TABLE, Item=item)
    etag = s3.head_object(Bucket="raw-bucket", Key="churn/data/jan.csv")["ETag"]

    # When the state is saved, the endpoint restarts empty, and the state is restored
    saved = _snapshots(tmp_path).save()
    _restart()
    restored = _snapshots(tmp_path).restore()

    # Then the versions are there, oldest to newest, with their content type and metadata
    assert restored is not None and saved.objects == restored.objects == 5
    assert _versions("raw-bucket", "churn/data/jan.csv") == [b"v1", b"v2", b"v3"]
    head = s3.head_object(Bucket="raw-bucket", Key="churn/data/jan.csv")
    assert (head["ContentType"], head["Metadata"], head["ETag"]) == (
        "text/csv",
        {"source": "crm"},
        etag,
    )
    # and a deleted key stays deleted, with its earlier bytes still in its history
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket="raw-bucket", Key="churn/data/old.csv")
    assert _versions("raw-bucket", "churn/data/old.csv") == [b"gone"]
    body = s3.get_object(Bucket="artifacts-bucket", Key="churn/models/m/model.onnx")["Body"]
    assert body.read() == b"\x00" * 10
    # and the table holds exactly the saved items
    scanned = dynamodb.scan(TableName=TABLE)["Items"]
    assert sorted(scanned, key=_sort_key) == sorted(items, key=_sort_key)
    assert restored.items == len(items)


def _sort_key(item: dict[str, Any]) -> str:
    return str(item["sk"]["S"])


def test_a_save_reads_only_what_is_new(aws: None, tmp_path: Path) -> None:
    s3 = _clients("s3")
    s3.put_object(Bucket="raw-bucket", Key="a.csv", Body=b"a" * 1000)
    snapshots = _snapshots(tmp_path)
    first = snapshots.save()
    again = snapshots.save()
    s3.put_object(Bucket="raw-bucket", Key="b.csv", Body=b"b" * 10)
    third = snapshots.save()

    assert (first.new_objects, first.new_bytes) == (1, 1000)
    assert (again.new_objects, again.new_bytes) == (0, 0)
    assert (third.objects, third.new_objects, third.new_bytes) == (2, 1, 10)
    # and identical bytes are stored once
    s3.put_object(Bucket="artifacts-bucket", Key="copy.csv", Body=b"a" * 1000)
    snapshots.save()
    assert len(list((tmp_path / STATE_DIR / BLOBS_DIR).iterdir())) == 2


def test_a_save_after_a_restore_does_not_read_the_restored_objects_again(
    aws: None, tmp_path: Path
) -> None:
    _clients("s3").put_object(Bucket="raw-bucket", Key="a.csv", Body=b"a")
    _snapshots(tmp_path).save()
    _restart()
    snapshots = _snapshots(tmp_path)
    snapshots.restore()

    figures = snapshots.save()

    assert (figures.objects, figures.new_objects) == (1, 0)


def test_nothing_saved_restores_nothing(aws: None, tmp_path: Path) -> None:
    assert _snapshots(tmp_path).restore() is None
    assert not _snapshots(tmp_path).exists()


def test_a_missing_blob_is_named(aws: None, tmp_path: Path) -> None:
    _clients("s3").put_object(Bucket="raw-bucket", Key="churn/data/a.csv", Body=b"a")
    _snapshots(tmp_path).save()
    for blob in (tmp_path / STATE_DIR / BLOBS_DIR).iterdir():
        blob.unlink()
    _restart()

    with pytest.raises(SnapshotError, match=r"s3://raw-bucket/churn/data/a.csv names blob"):
        _snapshots(tmp_path).restore()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "unreadable"),
        (json.dumps({"format": 99, "buckets": {}, "tables": {}}), "format 99"),
    ],
)
def test_an_unreadable_index_is_refused_with_its_path(
    aws: None, tmp_path: Path, content: str, message: str
) -> None:
    index = _snapshots(tmp_path).index_path
    index.parent.mkdir(parents=True)
    index.write_text(content)

    with pytest.raises(SnapshotError, match=message) as refused:
        _snapshots(tmp_path).restore()
    assert str(index) in str(refused.value)


def test_a_crash_mid_save_leaves_the_previous_snapshot(aws: None, tmp_path: Path) -> None:
    s3 = _clients("s3")
    s3.put_object(Bucket="raw-bucket", Key="a.csv", Body=b"a")
    snapshots = _snapshots(tmp_path)
    snapshots.save()
    before = snapshots.index_path.read_bytes()
    s3.put_object(Bucket="raw-bucket", Key="b.csv", Body=b"b")

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("infra.local.snapshot.os.replace", crash)
        with pytest.raises(OSError, match="disk full"):
            _snapshots(tmp_path).save()

    assert snapshots.index_path.read_bytes() == before
