"""functions/shared/row_hash.py: which copy of a row shared by parts is kept, and the channel
manifests that list a format-2 version's files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from functions.shared.row_hash import (
    ChannelManifestError,
    first_occurrences,
    is_manifest_uri,
    read_channel_manifest,
)


def u64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def test_the_first_occurrence_across_the_list_wins() -> None:
    masks = first_occurrences([u64(5, 1, 2**64 - 1), u64(2, 5, 9), u64(), u64(9, 1, 7)])
    assert [m.tolist() for m in masks] == [
        [True, True, True],
        [True, False, True],
        [],
        [False, False, True],
    ]
    assert all(m.dtype == np.bool_ for m in masks)
    assert first_occurrences([]) == []


def test_the_kept_rows_do_not_depend_on_order_within_a_file() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2**63, 1000, dtype=np.uint64)
    b = np.concatenate([a[::3], rng.integers(0, 2**63, 500, dtype=np.uint64)])
    rng.shuffle(b)
    keep_a, keep_b = first_occurrences([a, b])
    assert keep_a.all()
    assert not np.isin(b[keep_b], a).any()
    assert keep_b.sum() == len(b) - len(a[::3])


def test_manifest_uris_are_told_from_prefixes() -> None:
    assert is_manifest_uri("s3://art/churn/versions/v1/channels/train.manifest")
    assert not is_manifest_uri("s3://art/churn/versions/v1/train/")


def manifest(*entries: object) -> bytes:
    return json.dumps(list(entries)).encode()


def test_a_channel_manifest_gives_its_prefix_and_keys() -> None:
    raw = manifest(
        {"prefix": "s3://art/churn/"},
        "parts/a/train-a.parquet",
        "parts/b/train-b.parquet",
        "versions/v1/dataset.json",
    )
    assert read_channel_manifest(raw) == (
        "s3://art/churn/",
        ["parts/a/train-a.parquet", "parts/b/train-b.parquet", "versions/v1/dataset.json"],
    )
    assert read_channel_manifest(manifest({"prefix": "s3://art/churn/"})) == ("s3://art/churn/", [])


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"not json", "is not JSON"),
        (b"\xff", "is not JSON"),
        (manifest(), "must be a JSON list"),
        (b'{"prefix": "s3://art/"}', "must be a JSON list"),
        (manifest("parts/a.parquet"), "first entry must be"),
        (manifest({"prefix": "s3://art/", "x": 1}), "first entry must be"),
        (manifest({"prefix": "https://art/"}), "is not an s3://"),
        (manifest({"prefix": "s3://art/churn"}), "is not an s3://"),
        (manifest({"prefix": "s3:///churn/"}), "names no bucket"),
        (manifest({"prefix": "s3://art/"}, "/etc/passwd"), "entry 1 ('/etc/passwd') is absolute"),
        (manifest({"prefix": "s3://art/"}, "a.parquet", "../b.parquet"), "entry 2"),
        (manifest({"prefix": "s3://art/"}, "parts/../../x.parquet"), "'..'"),
        (manifest({"prefix": "s3://art/"}, "parts//x.parquet"), "empty"),
        (manifest({"prefix": "s3://art/"}, "./x.parquet"), "'.'"),
        (manifest({"prefix": "s3://art/"}, ""), "not a non-empty string"),
        (manifest({"prefix": "s3://art/"}, 7), "not a non-empty string"),
    ],
)
def test_a_malformed_channel_manifest_is_refused_saying_what(raw: bytes, says: str) -> None:
    with pytest.raises(ChannelManifestError, match=r"s3://x/m\.manifest") as caught:
        read_channel_manifest(raw, source="s3://x/m.manifest")
    assert says in str(caught.value)
