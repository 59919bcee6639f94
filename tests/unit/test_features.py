"""One feature encoding for training, evaluation and serving."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from functions.preprocess.cleaning import normalise_categories
from functions.shared.contract import FeatureKind
from functions.shared.features import MISSING_CATEGORY, FeatureSpec, normalise_category, onnx_feeds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Red", "red"),
        ("  Dark   Red ", "dark red"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),
        (None, MISSING_CATEGORY),
        (float("nan"), MISSING_CATEGORY),
        ("", MISSING_CATEGORY),
        ("  ", MISSING_CATEGORY),
        ("NULL", MISSING_CATEGORY),
        (3, "3"),
        (3.0, "3"),
        ("3", "3"),
        (2.5, "2.5"),
        (True, "true"),
        (np.int64(7), "7"),
        (np.float32(1.0), "1"),
    ],
)
def test_category_spellings_collapse_to_one(value: object, expected: str) -> None:
    assert normalise_category(value) == expected


def test_the_vectorised_normaliser_is_the_same_function() -> None:
    values = pd.Series(["  A", "a", None, "B b", "NaN", "x"] * 3, dtype="string")
    assert list(normalise_categories(values)) == [normalise_category(v) for v in values]


def test_onnx_feeds_are_one_column_tensor_per_feature() -> None:
    specs = [
        FeatureSpec(name="age", kind=FeatureKind.NUMERIC),
        FeatureSpec(name="plan", kind=FeatureKind.CATEGORICAL),
    ]
    feeds = onnx_feeds(specs, {"age": [31, None, 2.5], "plan": ["Gold ", None, 3]})
    assert feeds["age"].dtype == np.float32
    assert feeds["age"].shape == (3, 1)
    assert np.isnan(feeds["age"][1, 0])
    assert feeds["plan"].ravel().tolist() == ["gold", MISSING_CATEGORY, "3"]
