"""The S3 adapter downloads the object a listing named, not one uploaded since: a data file's
part is named by the ETag it was listed with (S3's ListObjectsV2 gives no version id), so its
download asks for that ETag (``IfMatch``) and a replaced object is an ``ObjectChangedError``."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.shared.storage import ObjectChangedError, S3ObjectStore
from tests.integration.conftest import Aws


def test_a_download_of_a_listed_etag_fails_once_the_object_is_replaced(
    aws: Aws, tmp_path: Path
) -> None:
    store = S3ObjectStore(aws.s3)
    bucket, key = aws.topology.raw_bucket, "churn/data/a.csv"
    aws.s3.put_object(Bucket=bucket, Key=key, Body=b"a,b\n1,2\n")
    [listed] = store.list(bucket, "churn/data/")
    assert store.download(bucket, key, tmp_path / "one", if_match=listed.etag)
    assert (tmp_path / "one").read_bytes() == b"a,b\n1,2\n"
    aws.s3.put_object(Bucket=bucket, Key=key, Body=b"a,b\n3,4\n")
    with pytest.raises(ObjectChangedError, match=f"no longer the object with ETag.*{listed.etag}"):
        store.download(bucket, key, tmp_path / "two", if_match=listed.etag)
