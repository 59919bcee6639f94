"""The gauntlet's fixed rules (bench/gauntlet.py): which column is the target, how a large table
is cut down, how crash messages are grouped. They decide what the sweep's figures mean."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.gauntlet import MAX_CELLS, MAX_ROWS, Target, cap, choose_target, pattern


def test_the_last_column_that_fits_is_the_target() -> None:
    # Given a table whose last column is fractional with few values, before a yes/no column
    frame = pd.DataFrame(
        {
            "rownames": range(100),
            "group": ["yes", "no"] * 50,
            "ratio": [0.5, 1.5] * 50,
        }
    )

    # When the rule picks the target, Then it skips 'ratio' (2 fractional values fit neither)
    assert choose_target(frame) == Target("group", "classification", "f1_macro")


def test_whole_numbers_with_few_values_are_classes_many_values_a_regression() -> None:
    few = pd.DataFrame({"x": range(100), "rating": [1, 2, 3, 4] * 25})
    many = pd.DataFrame({"x": range(100), "income": np.arange(100) * 1.5})

    assert choose_target(few) == Target("rating", "classification", "f1_macro")
    assert choose_target(many) == Target("income", "regression", "r2")


def test_no_column_fits_when_classes_are_small_and_row_names_never_count() -> None:
    # a class with 9 rows, numbers with 19 distinct values, and R's row index
    frame = pd.DataFrame(
        {
            "rownames": range(100),
            "label": ["a"] * 91 + ["b"] * 9,
            "score": [float(i % 19) + 0.5 for i in range(100)],
        }
    )

    assert choose_target(frame) is None


def test_a_large_table_is_sampled_to_the_caps_in_its_original_order() -> None:
    long = pd.DataFrame({"a": range(MAX_ROWS + 500)})
    wide = pd.DataFrame(np.zeros((1000, 2000)))

    sampled = cap(long)
    assert len(sampled) == MAX_ROWS
    assert sampled.index.is_monotonic_increasing
    assert cap(long).equals(sampled)  # the same seed, the same rows
    assert len(cap(wide)) == MAX_CELLS // 2000


def test_crash_messages_group_without_their_data_specific_parts() -> None:
    first = "TrainingError: the exported graph has inputs ['a_b', 'c'] and outputs ['label']"
    second = "TrainingError: the exported graph has inputs ['x_y'] and outputs ['variable']"

    assert pattern(first) == pattern(second)
    assert pattern("ParityError: max diff 0.03 (tolerance 0.0001)") == "ParityError: max diff N …"
