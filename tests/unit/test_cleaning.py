"""The cleaning primitives preprocessing streams every block through: number parsing (Arrow's
kernels, agreeing with pandas.to_numeric), the Arrow-native batch cleaner (its row hashes equal
to pandas' over the same typed values, so no row's split moves), the read-ahead, the
cross-batch deduplicator, and the category profile (Arrow's value counts, ties in category
order)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from functions.preprocess.cleaning import (
    BatchCleaner,
    Deduplicator,
    RowIssues,
    _as_numbers,
    arrow_numbers,
    row_hashes,
)
from functions.preprocess.profile import categorical_profile
from functions.preprocess.reader import prefetched
from functions.shared.contract import Contract, FeatureKind
from functions.shared.features import ColumnRole, FeatureSpec


def test_text_cells_read_as_numbers_exactly_as_pandas_reads_them() -> None:
    cells = ["1", " 2.5 ", "-3e2", "+.5", "5.", "inf", "-Infinity", "1e500", "nan", "1_000",
             "0x10", "--1", "abc", "", None]  # fmt: skip
    numbers, unreadable = _as_numbers(pd.Series(cells, dtype="str"))
    expected = pd.to_numeric(pd.Series(cells, dtype="str").str.strip(), errors="coerce")
    np.testing.assert_array_equal(numbers, np.asarray(expected, dtype=np.float64))
    assert unreadable.tolist() == [False] * 8 + [True] * 6 + [False]  # a null is missing
    objects, _ = _as_numbers(pd.Series(["7", 8, None], dtype=object))  # mixed: pandas' way
    np.testing.assert_array_equal(objects, [7.0, 8.0, np.nan])


def test_the_deduplicator_keeps_first_sightings_within_and_across_batches() -> None:
    dedup = Deduplicator()
    first = np.array([9, 3, 9, 7], dtype=np.uint64)
    assert dedup.fresh(first).tolist() == [True, True, False, True]
    second = np.array([1, 7, 12, 3, 1, 2**64 - 1], dtype=np.uint64)
    assert dedup.fresh(second).tolist() == [True, False, True, False, False, True]
    assert dedup.fresh(np.array([0, 2**64 - 1], dtype=np.uint64)).tolist() == [True, False]
    assert dedup.fresh(np.empty(0, dtype=np.uint64)).tolist() == []


def test_category_shares_rank_by_count_then_by_category() -> None:
    values = ["b", "a", "c", "a", "b", "d"]
    profile = categorical_profile(pa.chunked_array([values[:3], values[3:]]))
    assert profile == categorical_profile(np.array(values, dtype=object))
    assert list(profile["shares"]) == ["a", "b", "c", "d"]
    assert (profile["count"], profile["cardinality"]) == (6, 4)
    assert profile["shares"]["a"] == 2 / 6


@pytest.mark.parametrize("map_bits", [24, 4])  # 4: every byte of the map set, all searched
def test_the_deduplicator_agrees_with_a_set_over_many_batches_and_its_index_is_sorted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, map_bits: int
) -> None:
    monkeypatch.setattr(Deduplicator, "MAP_BITS", map_bits)
    rng = np.random.default_rng(5)
    dedup, seen = Deduplicator(), set()
    # values from a few thousand, so batches repeat each other, spread over all 64 bits, so
    # every shard is used (a shard is the top 4 bits), its edges included
    pool = np.concatenate(
        [
            rng.integers(0, 2**64, 50_000, dtype=np.uint64, endpoint=False),
            np.array([0, 1, 2**60 - 1, 2**60, 2**63, 2**64 - 1], dtype=np.uint64),
        ]
    )
    for size in [0, 1, 5, 300, 17, 4000, 2, 900, 12000, 64, 3000] * 3:
        batch = pool[rng.integers(0, pool.size, size)]  # many repeats across batches
        want = []
        for value in batch.tolist():
            want.append(value not in seen)
            seen.add(value)
        assert dedup.fresh(batch).tolist() == want
        assert all(len(runs) <= 20 for runs in dedup._shards)
    assert all(dedup._shards)  # every shard holds hashes
    index = dedup.seen
    assert index.tolist() == sorted(seen)
    assert dedup.fresh(np.array(sorted(seen)[:3], dtype=np.uint64)).tolist() == [False] * 3
    # draining writes the same index as NPY and leaves nothing behind
    dedup.drain(tmp_path / "rows.npy")
    assert np.load(tmp_path / "rows.npy").tolist() == index.tolist()
    assert dedup.size == 0 and dedup.seen.size == 0


MESSY = {
    "id": [" a1", "a1 ", "b\u00a02", "\u3000c", "d", None, "e", "f", "g", "h"],
    "label": ["Yes", " yes", "NO", "no", None, "maybe", "N/A", "Yes", "no", "YES"],
    "n": ["1", "-0", "0", "2.50", "inf", "x", None, "1e39", " 3 ", "-0.0"],
    "cat": [" Red", "red", "BLUE", None, "1", "1.0", "na", "Grün", "grün ", "  "],
    "when": ["2024-01-02", "2024-01-02T03:04:05Z", "yesterday", None, "", "2024-13-01",
             "2024-02-29", "2023-02-29", "2024-01-02 ", "2020-01-01T00:00:00+02:00"],
    "flag": ["true", "False", "TRUE", "yes", None, "0", "false", "true", "n/a", "true"],
    "row": ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"],
}  # fmt: skip


def test_the_arrow_cleaner_hashes_rows_as_pandas_hashes_the_same_typed_values() -> None:
    contract = Contract(
        target="label", task="classification", metric="accuracy", threshold=0.5, id_column="id"
    )
    features = [
        FeatureSpec(name="n", kind=FeatureKind.NUMERIC),
        FeatureSpec(name="cat", kind=FeatureKind.CATEGORICAL),
        FeatureSpec(name="when", kind=FeatureKind.DATETIME),
        FeatureSpec(name="flag", kind=FeatureKind.BOOLEAN),
    ]
    carried = [ColumnRole(column="row", use="excluded", kind=FeatureKind.NUMERIC, reason="r")]
    batch = pa.RecordBatch.from_pydict(MESSY, schema=pa.schema([(c, pa.string()) for c in MESSY]))
    issues = RowIssues()
    cleaned = BatchCleaner(contract, features, carried).clean(
        batch, file="f.csv", first_row=1, issues=issues
    )
    rows = np.arange(batch.num_rows)
    # the typed values as a frame, as the pandas cleaner held them (NaN for a missing number)
    frame = pd.DataFrame(
        {
            name: column.values.to_numpy(zero_copy_only=False)
            if pa.types.is_floating(column.values.type)
            else np.asarray(column.values.to_pylist(), dtype=object)
            for name, column in cleaned.columns.items()
        }
    )
    np.testing.assert_array_equal(cleaned.row_hashes(rows), row_hashes(frame, list(frame)))
    np.testing.assert_array_equal(cleaned.row_hashes(rows, ["id"]), row_hashes(frame, ["id"]))
    assert cleaned.columns["id"].values.to_pylist()[:5] == ["a1", "a1", "b\u00a02", "c", "d"]
    assert cleaned.columns["cat"].values.to_pylist()[:4] == ["red", "red", "blue", "__missing__"]
    assert cleaned.columns["flag"].values.to_pylist()[:3] == ["true", "false", "true"]
    assert cleaned.columns["n"].values.to_pylist()[:4] == [1.0, -0.0, 0.0, 2.5]
    # -0.0 and 0.0 are one value to the hash, as they are to pandas
    assert cleaned.columns["n"].hashes[1] == cleaned.columns["n"].hashes[2]
    # each row under the first rule it breaks (what the pandas cleaner counted, to the row)
    assert [(e.rule, e.column, [x["row"] for x in e.examples]) for e in issues.entries()] == [
        ("non_finite", "n", [8]),
        ("target_null", "label", [5, 7]),
        ("type_mismatch", "flag", [4]),
        ("type_mismatch", "n", [6]),
        ("type_mismatch", "when", [3]),
    ]
    assert np.flatnonzero(cleaned.keep).tolist() == [0, 1, 8, 9]
    assert cleaned.class_counts(np.array([0, 1, 8, 9])) == [("yes", 3), ("no", 1)]


def test_typed_parquet_columns_read_as_numbers_as_pandas_reads_them() -> None:
    values = [
        (pa.array([1, None, 2**60]), [1.0, np.nan, float(2**60)], [False, False, False]),
        (pa.array([1.5, float("nan"), None]), [1.5, np.nan, np.nan], [False, False, False]),
        (pa.array([True, None]), [np.nan, np.nan], [True, False]),
        (pa.array([None, None]), [np.nan, np.nan], [False, False]),
    ]
    for array, numbers, unreadable in values:
        parsed, bad = arrow_numbers(array)
        np.testing.assert_array_equal(parsed, numbers)
        assert bad.tolist() == unreadable, array.type


def test_read_ahead_keeps_order_raises_in_place_and_stops_when_left() -> None:
    def items(fail_at: int) -> Iterator[int]:
        for n in range(6):
            if n == fail_at:
                raise ValueError(f"item {n}")
            yield n

    assert list(prefetched(iter(range(5)), depth=2)) == [0, 1, 2, 3, 4]
    seen: list[int] = []

    def consume() -> None:
        seen.extend(prefetched(items(3)))

    with pytest.raises(ValueError, match="item 3"):
        consume()
    assert seen == [0, 1, 2]
    endless = prefetched(iter(lambda: 1, None))  # never ends: leaving it must stop the thread
    assert next(endless) == 1
    endless.close()
    import threading

    assert not [t for t in threading.enumerate() if t.name == "sluice-read-ahead"]


def test_a_batchs_distinct_hashes_and_first_positions_are_np_uniques() -> None:
    from functions.preprocess.cleaning import _distinct_sorted

    rng = np.random.default_rng(3)
    for rows in (0, 1, 2, 7, 5000):
        for duplicated in (0.0, 0.01, 0.5):
            hashes = rng.integers(0, 2**64 - 1, rows, dtype=np.uint64)
            again = rng.random(rows) < duplicated
            hashes[again] = hashes[rng.integers(0, max(rows, 1), int(again.sum()))]
            distinct, first = _distinct_sorted(hashes)
            expected, expected_first = np.unique(hashes, return_index=True)
            np.testing.assert_array_equal(distinct, expected)
            np.testing.assert_array_equal(first, expected_first)


def test_numbers_are_bucketed_by_their_distinct_values_as_by_every_value() -> None:
    from functions.preprocess.profile import _BUCKET_CHUNK, _bucket_counts, bucket_keys

    rng = np.random.default_rng(5)
    extremes = [0.0, -0.0, 1e-300, -1e-300, 5e-324, 1.7e308, -1.7e308, 1e-9, -1e-9, 1.0, -1.0]
    for values in (
        np.round(rng.normal(70, 25, _BUCKET_CHUNK + 999), 2),
        rng.standard_cauchy(5000),
        np.array(extremes),
    ):
        every: dict[int, int] = {}
        for start in range(0, values.size, _BUCKET_CHUNK):
            keys, counts = np.unique(
                bucket_keys(values[start : start + _BUCKET_CHUNK]), return_counts=True
            )
            for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
                every[key] = every.get(key, 0) + count
        assert _bucket_counts(values) == dict(sorted(every.items()))
