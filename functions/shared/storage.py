"""Object storage port and its S3 adapter.

Logic takes an ``ObjectStore``; production builds an ``S3ObjectStore`` once per cold start, the
local stack points the same adapter at the loopback endpoint, and unit tests pass an in-memory
fake (tests/fakes.py).
"""

from __future__ import annotations

import hashlib
import io
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode

from functions.shared.errors import SluiceError

CHUNK = 8 * 1024 * 1024
_MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchVersion")


class ObjectChangedError(SluiceError):
    """The object under a key is no longer the one listed (another ETag): it was replaced since,
    and the replacement's own event will act on it."""

    def __init__(self, bucket: str, key: str, etag: str) -> None:
        super().__init__(f"s3://{bucket}/{key} is no longer the object with ETag {etag}")


class ObjectNotFoundError(SluiceError, KeyError):
    """A read named an object (or version) that is not there. S3's own NoSuchKey names neither
    the bucket nor the key, so a log line of it could not say what was missing; this does."""

    def __init__(self, bucket: str, key: str, version_id: str | None = None) -> None:
        self.bucket, self.key, self.version_id = bucket, key, version_id
        self.uri = s3_uri(bucket, key)
        version = f" (version {version_id})" if version_id else ""
        super().__init__(f"{self.uri}{version} does not exist")

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str  # without the quotes S3 puts around it
    version_id: str | None = None


@dataclass(frozen=True)
class StagedObject:
    """An object written but not visible yet: a reader sees it only once it is committed, and
    nothing of it once it is aborted (on S3, a one-part multipart upload)."""

    bucket: str
    key: str
    upload_id: str
    etag: str = ""  # the part's, which S3 needs to complete the upload


def s3_uri(bucket: str, key: str = "") -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` → ``("bucket", "some/key")``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class ObjectStore(ABC):
    @abstractmethod
    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """Current object at ``key``, or None if there is none."""

    @abstractmethod
    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix``, sorted by key."""

    @abstractmethod
    def get_bytes(self, bucket: str, key: str) -> bytes:
        """The object's bytes; ObjectNotFoundError when there is none (so do the other reads)."""

    @abstractmethod
    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Write an object; ``tags`` become its S3 object tags (lifecycle rules match them)."""

    @abstractmethod
    def download(
        self,
        bucket: str,
        key: str,
        dest: Path,
        version_id: str | None = None,
        if_match: str | None = None,
    ) -> str:
        """Stream an object to ``dest`` and return its sha256 (hex), in one pass. ``if_match``:
        only the object with that ETag; another one there raises ``ObjectChangedError``."""

    @abstractmethod
    def upload(self, src: Path, bucket: str, key: str) -> None: ...

    def read_head(
        self, bucket: str, key: str, max_bytes: int, version_id: str | None = None
    ) -> bytes:
        """The first ``max_bytes`` of an object (fewer if it is shorter), without fetching the
        rest: how an object too large to download still gets its header checked. This default
        reads the whole object; adapters for real stores override it with a ranged read."""
        return self.get_bytes(bucket, key)[:max_bytes]

    def open_read(
        self, bucket: str, key: str, *, start: int = 0, if_match: str | None = None
    ) -> BinaryIO:
        """The object's bytes from ``start`` as a stream read as it goes, never whole: how a
        file of any size is read in bounded memory. ``if_match``: only the object with that
        ETag (else ``ObjectChangedError``), so that a stream reopened part way reads the same
        object. This default holds the object in memory; adapters for real stores override it."""
        self.require_etag(bucket, key, if_match)
        return io.BytesIO(self.get_bytes(bucket, key)[start:])

    def read_range(
        self, bucket: str, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of the object: random access for formats that
        keep their index at the end (Parquet); ``if_match`` as for ``open_read``. This default
        reads the whole object."""
        self.require_etag(bucket, key, if_match)
        return self.get_bytes(bucket, key)[start:end]

    def require_etag(self, bucket: str, key: str, if_match: str | None) -> None:
        """``ObjectChangedError`` unless the object is still the one with ETag ``if_match``
        (None: any object will do)."""
        if if_match is None:
            return
        current = self.head(bucket, key)
        if current is None or current.etag != if_match.strip('"'):
            raise ObjectChangedError(bucket, key, if_match)

    def stage(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/json"
    ) -> StagedObject:
        """Write an object that stays invisible until ``commit``; ``abort`` discards it."""
        raise NotImplementedError(f"{type(self).__name__} cannot stage writes")

    def commit(self, staged: StagedObject) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot stage writes")

    def abort(self, staged: StagedObject) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot stage writes")

    @abstractmethod
    def purge_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under ``prefix`` for good: every version and delete marker of a
        versioned bucket, not only the current objects. Returns how many were deleted. Only
        ``sluice retire --purge`` calls it."""


def sha256_stream(source: BinaryIO, sink: BinaryIO | None = None) -> str:
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
    return digest.hexdigest()


def _if_match(etag: str | None) -> dict[str, str]:
    """S3's IfMatch header for an ETag as sluice keeps it (unquoted)."""
    return {} if etag is None else {"IfMatch": f'"{etag.strip(chr(34))}"'}


class S3ObjectStore(ObjectStore):
    def __init__(self, client: Any) -> None:
        self._s3 = client

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            meta = self._s3.head_object(Bucket=bucket, Key=key)
        except self._s3.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=int(meta["ContentLength"]),
            etag=meta["ETag"].strip('"'),
            version_id=_real_version(meta.get("VersionId")),
        )

    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                found.append(
                    ObjectInfo(bucket, obj["Key"], int(obj["Size"]), obj["ETag"].strip('"'))
                )
        return sorted(found, key=lambda o: o.key)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        body: bytes = self._get_object(bucket, key)["Body"].read()
        return body

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/json",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        tagging = {"Tagging": urlencode(dict(tags))} if tags else {}
        self._s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, **tagging)

    def download(
        self,
        bucket: str,
        key: str,
        dest: Path,
        version_id: str | None = None,
        if_match: str | None = None,
    ) -> str:
        body = self._get_object(bucket, key, version_id, **_if_match(if_match))["Body"]
        with dest.open("wb") as sink:
            return sha256_stream(body, sink)

    def upload(self, src: Path, bucket: str, key: str) -> None:
        self._s3.upload_file(str(src), bucket, key)

    def read_head(
        self, bucket: str, key: str, max_bytes: int, version_id: str | None = None
    ) -> bytes:
        response = self._get_object(bucket, key, version_id, Range=f"bytes=0-{max_bytes - 1}")
        head: bytes = response["Body"].read(max_bytes)
        return head

    def open_read(
        self, bucket: str, key: str, *, start: int = 0, if_match: str | None = None
    ) -> BinaryIO:
        extra = _if_match(if_match) | ({"Range": f"bytes={start}-"} if start else {})
        body: BinaryIO = self._get_object(bucket, key, **extra)["Body"]
        return body

    def read_range(
        self, bucket: str, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes:
        if end <= start:
            return b""
        extra = _if_match(if_match) | {"Range": f"bytes={start}-{end - 1}"}
        data: bytes = self._get_object(bucket, key, **extra)["Body"].read()
        return data

    def stage(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/json"
    ) -> StagedObject:
        """A multipart upload of one part (its only part may be any size), left open."""
        upload = self._s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)
        staged = StagedObject(bucket, key, upload["UploadId"])
        try:
            part = self._s3.upload_part(
                Bucket=bucket, Key=key, UploadId=staged.upload_id, PartNumber=1, Body=data
            )
        except BaseException:
            self.abort(staged)
            raise
        return StagedObject(bucket, key, staged.upload_id, part["ETag"])

    def commit(self, staged: StagedObject) -> None:
        self._s3.complete_multipart_upload(
            Bucket=staged.bucket,
            Key=staged.key,
            UploadId=staged.upload_id,
            MultipartUpload={"Parts": [{"ETag": staged.etag, "PartNumber": 1}]},
        )

    def abort(self, staged: StagedObject) -> None:
        self._s3.abort_multipart_upload(
            Bucket=staged.bucket, Key=staged.key, UploadId=staged.upload_id
        )

    def _get_object(
        self, bucket: str, key: str, version_id: str | None = None, **extra: str
    ) -> dict[str, Any]:
        if version_id:
            extra["VersionId"] = version_id
        try:
            response: dict[str, Any] = self._s3.get_object(Bucket=bucket, Key=key, **extra)
        except self._s3.exceptions.ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in _MISSING:
                raise ObjectNotFoundError(bucket, key, version_id) from exc
            if code in ("412", "PreconditionFailed"):
                raise ObjectChangedError(bucket, key, extra.get("IfMatch", "")) from exc
            raise
        return response

    def purge_prefix(self, bucket: str, prefix: str) -> int:
        """ListObjectVersions pages, each deleted with DeleteObjects (1000 keys a call, S3's
        most); a key S3 reports it could not delete fails the purge, naming it."""
        deleted = 0
        for page in self._s3.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            targets = [
                {"Key": entry["Key"], "VersionId": entry["VersionId"]}
                for entry in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            for start in range(0, len(targets), 1000):
                batch = targets[start : start + 1000]
                response = self._s3.delete_objects(
                    Bucket=bucket, Delete={"Objects": batch, "Quiet": True}
                )
                errors = response.get("Errors", [])
                if errors:
                    first = errors[0]
                    raise RuntimeError(
                        f"purge of s3://{bucket}/{prefix}: {len(errors)} objects not deleted, "
                        f"first s3://{bucket}/{first.get('Key')}: {first.get('Code')} "
                        f"{first.get('Message')}"
                    )
                deleted += len(batch)
        return deleted


def _real_version(version_id: str | None) -> str | None:
    # Unversioned buckets report the literal "null".
    return None if version_id in (None, "null") else version_id
