"""The cleaning primitives preprocessing streams every block through: number parsing (Arrow's
kernels, agreeing with pandas.to_numeric), the cross-batch deduplicator, and the category
profile (Arrow's value counts, ties in category order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from functions.preprocess.cleaning import Deduplicator, _as_numbers
from functions.preprocess.profile import categorical_profile


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


def test_the_deduplicator_agrees_with_a_set_over_many_batches_and_its_index_is_sorted(
    tmp_path: Path,
) -> None:
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
