"""Reading a format-2 dataset version: parts whose files carry each row's hash, and the channel
manifests that list them (docs/proposals/issue-20-per-file-ingestion.md, "Readers").

A row that two parts both hold (equal ``__row_hash``) is one row of the version: readers keep the
copy in the file whose name sorts first, which is a function of the part set alone, so the order
in which files arrived cannot change the rows training and evaluation see.

numpy only: training and evaluate import it; the retrain function, whose layer has no numpy,
never does (tests/unit/test_import_graph.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

ROW_HASH = "__row_hash"  # uint64: the row's hash over every column; unique within one file
MANIFEST_SUFFIX = ".manifest"


class ChannelManifestError(ValueError):
    """A channel manifest that is not a SageMaker ManifestFile this system could have written."""


def first_occurrences(hashes: Sequence[NDArray[np.uint64]]) -> list[NDArray[np.bool_]]:
    """One keep-mask per array: True where the hash is not in an earlier position of the
    concatenation in list order, i.e. the first occurrence across the list wins."""
    sizes = [len(h) for h in hashes]
    if not sizes:
        return []
    joined = np.concatenate([np.asarray(h, dtype=np.uint64) for h in hashes])
    keep = np.zeros(len(joined), dtype=np.bool_)
    # np.unique's return_index is the first index of each value in the input order
    keep[np.unique(joined, return_index=True)[1]] = True
    return list(np.split(keep, np.cumsum(sizes)[:-1]))


def is_manifest_uri(uri: str) -> bool:
    """A channel given as a SageMaker ManifestFile (format 2) rather than an S3 prefix."""
    return uri.endswith(MANIFEST_SUFFIX)


def read_channel_manifest(raw: bytes, *, source: str = "channel manifest") -> tuple[str, list[str]]:
    """``(prefix uri, relative keys)`` of a ManifestFile
    ``[{"prefix": "s3://bucket/dataset/"}, "parts/p/train-p.parquet", ...]``.

    Refuses anything else: not JSON, not a list, no ``{"prefix": ...}`` first, a prefix that is
    not an ``s3://`` folder, a key that is not a non-empty relative path, or one with ``.`` or
    ``..`` parts (a key must stay under the prefix), naming ``source`` and what is wrong."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChannelManifestError(f"{source} is not JSON: {exc}") from None
    if not isinstance(document, list) or not document:
        raise ChannelManifestError(f"{source} must be a JSON list starting with a prefix object")
    head, *keys = document
    if not isinstance(head, dict) or set(head) != {"prefix"}:
        raise ChannelManifestError(f'{source}: the first entry must be {{"prefix": "s3://..."}}')
    prefix = head["prefix"]
    if not isinstance(prefix, str) or not prefix.startswith("s3://") or not prefix.endswith("/"):
        raise ChannelManifestError(f"{source}: prefix {prefix!r} is not an s3://bucket/folder/")
    if len(prefix) <= len("s3:///") or prefix[len("s3://")] == "/":
        raise ChannelManifestError(f"{source}: prefix {prefix!r} names no bucket")
    for index, key in enumerate(keys, start=1):
        problem = _key_problem(key)
        if problem:
            raise ChannelManifestError(f"{source}: entry {index} ({key!r}) {problem}")
    return prefix, keys


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str) or not key:
        return "is not a non-empty string"
    if key.startswith("/"):
        return "is absolute; keys are relative to the prefix"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "has an empty, '.' or '..' part; keys must stay under the prefix"
    return None
