"""The local stack's AWS state on disk, so it survives a restart of ``sluice up``.

moto's server keeps everything in memory. The stack saves what matters — every object version
in the buckets the topology names, and every item in its tables — through the same AWS API any
client uses, and puts it back through that API when it starts again, before S3 events are wired,
so a restore never looks like a new upload. One exception: which object versions exist is read
from moto's backend in this process, because moto's ListObjectVersions leaks a temp file per
version per call (see ``_versions``).

On disk, under ``<state dir>/state/``:

- ``blobs/<sha256>``: each object version's bytes, once (content-addressed, written before the
  index that names them);
- ``index.json``: per bucket, each key's versions oldest first (blob, content type, user
  metadata) and whether the key's latest version is a delete marker; per table, its items as
  DynamoDB JSON. It is replaced atomically, so a crash mid-save leaves the previous snapshot.

Saves are incremental: an object version already saved (known by its version id) is not read
again, so a save is a listing and a table scan unless something new arrived.

What does not come back: object version ids and last-modified times (S3 assigns new ones on
restore; the bytes, ETags, content types and metadata are identical), and Step Functions
execution records (the run history lives in ``runs.jsonl``; pending runs in their own journal).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = 1
STATE_DIR = "state"
INDEX_FILE = "index.json"
BLOBS_DIR = "blobs"
CHUNK = 1 << 20
BATCH_WRITE = 25  # DynamoDB's BatchWriteItem limit


class SnapshotError(RuntimeError):
    """The saved state cannot be read back; the message names the file and the problem."""


@dataclass(frozen=True)
class SnapshotFigures:
    objects: int
    new_objects: int
    new_bytes: int
    items: int
    seconds: float


class Snapshots:
    """Save and restore the named buckets and tables of one AWS-compatible endpoint.

    ``clients(service)`` returns a boto3 client for that service. Safe to call from several
    threads: saves and restores are serialized.
    """

    def __init__(
        self,
        root: Path,
        clients: Callable[[str], Any],
        *,
        buckets: Iterable[str],
        tables: Iterable[str],
    ) -> None:
        self.root = root / STATE_DIR
        self._clients = clients
        self._buckets = list(buckets)
        self._tables = list(tables)
        self._lock = threading.Lock()
        # (bucket, version id) → the saved entry, for the versions the endpoint holds now
        self._known: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    def exists(self) -> bool:
        return self.index_path.is_file()

    # -- save ------------------------------------------------------------------------------

    def save(self) -> SnapshotFigures:
        with self._lock:
            started = time.perf_counter()
            s3 = self._clients("s3")
            buckets: dict[str, dict[str, Any]] = {}
            objects = new_objects = new_bytes = 0
            for bucket in self._buckets:
                keys: dict[str, Any] = {}
                for key, versions, deleted in _versions(bucket):
                    entries = []
                    for version_id in versions:
                        entry = self._known.get((bucket, version_id))
                        if entry is None:
                            entry = self._save_version(s3, bucket, key, version_id)
                            self._known[(bucket, version_id)] = entry
                            new_objects += 1
                            new_bytes += entry["bytes"]
                        entries.append(entry)
                    objects += len(entries)
                    keys[key] = {"versions": entries, "deleted": deleted}
                buckets[bucket] = keys
            tables = {table: _scan(self._clients("dynamodb"), table) for table in self._tables}
            document = {
                "format": FORMAT,
                "saved_at": datetime.now(UTC).isoformat(),
                "buckets": buckets,
                "tables": tables,
            }
            write_atomically(self.index_path, json.dumps(document).encode())
            return SnapshotFigures(
                objects=objects,
                new_objects=new_objects,
                new_bytes=new_bytes,
                items=sum(len(items) for items in tables.values()),
                seconds=round(time.perf_counter() - started, 3),
            )

    def _save_version(self, s3: Any, bucket: str, key: str, version_id: str) -> dict[str, Any]:
        extra = {} if version_id == "null" else {"VersionId": version_id}
        response = s3.get_object(Bucket=bucket, Key=key, **extra)
        blobs = self.root / BLOBS_DIR
        blobs.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with tempfile.NamedTemporaryFile(dir=blobs, delete=False) as sink:
            for chunk in response["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                sink.write(chunk)
        blob = digest.hexdigest()
        os.replace(sink.name, blobs / blob)
        return {
            "version_id": version_id,
            "blob": blob,
            "bytes": size,
            "content_type": response.get("ContentType"),
            "metadata": response.get("Metadata") or {},
        }

    # -- restore ---------------------------------------------------------------------------

    def restore(self) -> SnapshotFigures | None:
        """Put the saved state back into the (empty) endpoint; None when nothing was saved."""
        if not self.exists():
            return None
        with self._lock:
            started = time.perf_counter()
            document = self._read_index()
            s3 = self._clients("s3")
            objects = restored_bytes = 0
            for bucket, keys in document["buckets"].items():
                if bucket not in self._buckets:
                    continue  # a bucket this topology no longer names
                for key, saved in keys.items():
                    for entry in saved["versions"]:
                        blob = self.root / BLOBS_DIR / entry["blob"]
                        if not blob.is_file():
                            raise SnapshotError(
                                f"{self.index_path}: s3://{bucket}/{key} names blob "
                                f"{entry['blob']}, which is missing from {blob.parent}"
                            )
                        extra: dict[str, Any] = {"Metadata": entry["metadata"]}
                        if entry["content_type"]:
                            extra["ContentType"] = entry["content_type"]
                        with blob.open("rb") as body:
                            put = s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)
                        # S3 assigns a new version id: remember the bytes under it
                        renewed = {**entry, "version_id": put.get("VersionId") or "null"}
                        self._known[(bucket, renewed["version_id"])] = renewed
                        objects += 1
                        restored_bytes += entry["bytes"]
                    if saved["deleted"]:
                        s3.delete_object(Bucket=bucket, Key=key)
            dynamodb = self._clients("dynamodb")
            items = 0
            for table, saved_items in document["tables"].items():
                if table not in self._tables:
                    continue
                for start in range(0, len(saved_items), BATCH_WRITE):
                    batch = saved_items[start : start + BATCH_WRITE]
                    _batch_put(dynamodb, table, batch)
                    items += len(batch)
            return SnapshotFigures(
                objects=objects,
                new_objects=objects,
                new_bytes=restored_bytes,
                items=items,
                seconds=round(time.perf_counter() - started, 3),
            )

    def _read_index(self) -> dict[str, Any]:
        try:
            document: dict[str, Any] = json.loads(self.index_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SnapshotError(f"{self.index_path}: unreadable ({exc})") from None
        if document.get("format") != FORMAT:
            raise SnapshotError(
                f"{self.index_path}: format {document.get('format')!r}, this sluice reads "
                f"{FORMAT}; move the state directory aside to start empty"
            )
        return document


def _versions(bucket: str) -> list[tuple[str, list[str], bool]]:
    """Per key: its version ids oldest first, and whether its latest version is a delete
    marker.

    Read from moto's backend in this process (``sluice up`` runs moto's server in-process), not
    through ListObjectVersions: moto 5.2.5 answers that call with ``copy.deepcopy`` of every
    version, which puts each body in a new temp file (beyond 5 MiB, on disk), and registers
    each copy in ``FakeKey.instances_tracked`` for its dashboard, so no copy is ever collected
    or closed. A save every 5 s then held gigabytes of deleted-but-open files within a minute.
    Here nothing is copied: only names and version ids are read.
    """
    from moto.s3.models import FakeDeleteMarker, FakeKey, s3_backends

    located = s3_backends.bucket_accounts.get(bucket)
    if located is None:
        raise SnapshotError(f"bucket {bucket} is not in this process's moto endpoint")
    partition, account_id = located
    store = s3_backends[account_id][partition].get_bucket(bucket).keys
    listed = []
    for key in list(store):  # a copy of the names: uploads may arrive while this runs
        history = list(store.getlist(key, []))  # oldest first, as they were put
        ids = [version.version_id for version in history if isinstance(version, FakeKey)]
        if ids:
            deleted = isinstance(history[-1], FakeDeleteMarker)
            listed.append((key, ids, deleted))
    return listed


def _scan(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(page["Items"])
    return items


def _batch_put(dynamodb: Any, table: str, items: list[dict[str, Any]]) -> None:
    requests: dict[str, Any] = {table: [{"PutRequest": {"Item": item}} for item in items]}
    while requests:
        requests = dynamodb.batch_write_item(RequestItems=requests).get("UnprocessedItems") or {}


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one; the file is readable by this
    user only (the temporary file is created 0600 and the replace keeps its mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as sink:
        sink.write(data)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(sink.name, path)
