"""A training channel downloaded as SageMaker does in File mode, for the local training runner
(infra/local/training_runner.py) and the bench scripts that train in-process.

* ``S3Prefix``: every object under the prefix, at its path below the prefix (a format-1
  version's split folder);
* ``ManifestFile``: the channel manifest's objects (``prefix`` + each key), each at its key's
  path under the channel (a format-2 version: the parts' files of one split, and for train the
  schema). Keys are relative and never hold ``..`` (functions/shared/row_hash.py refuses them),
  so nothing lands outside the channel.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

from functions.shared.row_hash import is_manifest_uri, read_channel_manifest
from functions.shared.storage import ObjectStore, parse_s3_uri

DataType = Literal["S3Prefix", "ManifestFile"]


def download_channel(
    store: ObjectStore, uri: str, target: Path, data_type: DataType | None = None
) -> int:
    """Copy the channel ``uri`` names into ``target``; returns how many objects were copied.
    ``data_type`` None: a ``*.manifest`` uri is a ManifestFile, anything else a prefix.
    A malformed manifest raises ``ChannelManifestError``, a listed object that is not there
    ``ObjectNotFoundError``."""
    kind = data_type or ("ManifestFile" if is_manifest_uri(uri) else "S3Prefix")
    if kind == "ManifestFile":
        return download_manifest(store, uri, target)
    return download_prefix(store, uri, target)


def download_prefix(store: ObjectStore, uri: str, target: Path) -> int:
    """Every object under the prefix, keeping the key's path below the prefix."""
    bucket, prefix = parse_s3_uri(uri)
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for info in store.list(bucket, prefix):
        relative = PurePosixPath(info.key[len(prefix) :].lstrip("/"))
        if info.key.endswith("/") or not relative.parts or ".." in relative.parts:
            continue  # folder markers, and nothing may land outside the channel
        dest = target.joinpath(*relative.parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        store.download(bucket, info.key, dest)
        copied += 1
    return copied


def download_manifest(store: ObjectStore, uri: str, target: Path) -> int:
    """Every object the channel manifest at ``uri`` lists, at ``target/<key>``."""
    manifest_bucket, manifest_key = parse_s3_uri(uri)
    prefix, keys = read_channel_manifest(store.get_bytes(manifest_bucket, manifest_key), source=uri)
    bucket, key_prefix = parse_s3_uri(prefix)
    target.mkdir(parents=True, exist_ok=True)
    for key in keys:
        dest = target.joinpath(*PurePosixPath(key).parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        store.download(bucket, f"{key_prefix}{key}", dest)
    return len(keys)
