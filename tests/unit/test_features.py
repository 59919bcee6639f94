"""One feature encoding for training, evaluation and serving."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from functions.preprocess.cleaning import normalise_categories
from functions.shared.contract import FeatureKind
from functions.shared.features import (
    MISSING_CATEGORY,
    DatasetSchema,
    FeatureSpec,
    normalise_category,
    onnx_feeds,
    onnx_input_name,
    onnx_input_names,
)
from functions.shared.model_card import LABEL_OUTPUT, PREDICTION_OUTPUT, PROBABILITIES_OUTPUT


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


# --- graph input names ---------------------------------------------------------------------------

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@pytest.mark.parametrize("header", ["tenure", "a_b", "_x", "MonthlyCharges", "num_0", "x" * 80])
def test_a_header_that_is_already_an_identifier_is_its_own_input_name(header: str) -> None:
    # Every model trained before the mapping existed keeps its inputs
    assert onnx_input_name(header) == header


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("a b", "a_b_c8687a08"),
        ("a-b", "a_b_d44362d6"),
        ("od280/od315_of_diluted_wines", "od280_od315_of_diluted_wines_900f8f93"),
        ("revenu €", "revenu___3a86ef0a"),
        ("2024 sales", "_2024_sales_"),
        ("label", "label_1aca80e8"),
        ("€", "__"),
    ],
)
def test_any_other_header_is_sanitised_and_tagged_with_its_digest(
    header: str, expected: str
) -> None:
    name = onnx_input_name(header)
    # Pinned spellings: a change here renames every deployed model's inputs
    assert name.startswith(expected)
    assert IDENTIFIER.fullmatch(name), name
    assert len(name) <= 48 + 1 + 8 + 1


@pytest.mark.parametrize("output", [LABEL_OUTPUT, PROBABILITIES_OUTPUT, PREDICTION_OUTPUT])
def test_no_feature_takes_an_output_name(output: str) -> None:
    assert onnx_input_name(output) != output
    assert IDENTIFIER.fullmatch(onnx_input_name(output))


def test_headers_that_sanitise_alike_get_distinct_inputs() -> None:
    headers = ["a b", "a_b", "a-b", "a.b", "a/b", "a  b", "a b "]
    names = onnx_input_names([FeatureSpec(name=h, kind=FeatureKind.NUMERIC) for h in headers])
    assert list(names) == headers
    assert len(set(names.values())) == len(headers)


def test_an_input_name_depends_on_its_header_alone() -> None:
    # Given the same header among different other columns, in different orders
    numeric = FeatureKind.NUMERIC
    alone = onnx_input_names([FeatureSpec(name="a b", kind=numeric)])
    crowded = onnx_input_names(
        [FeatureSpec(name=n, kind=numeric) for n in ("a-b", "a_b", "a b", "label")]
    )
    # Then it keeps its input name: version 2 of a dataset feeds version 1's inputs alike
    assert alone["a b"] == crowded["a b"] == onnx_input_name("a b")


def test_a_header_spelled_as_another_headers_input_name_is_refused() -> None:
    # Given "a b" and a column literally named what "a b" becomes in the graph
    clash = [FeatureSpec(name=n, kind=FeatureKind.NUMERIC) for n in ("a b", "a_b_c8687a08")]
    with pytest.raises(ValueError, match="do not map to distinct inputs"):
        onnx_input_names(clash)
    # And a schema holding them does not validate
    with pytest.raises(ValidationError, match="do not map to distinct inputs"):
        DatasetSchema(
            dataset="d", dataset_version="v", task="regression", target="y", metric="rmse",
            features=clash,
        )  # fmt: skip


def test_onnx_feeds_are_keyed_by_the_graphs_input_names() -> None:
    features = [
        FeatureSpec(name="a b", kind=FeatureKind.NUMERIC),
        FeatureSpec(name="label", kind=FeatureKind.CATEGORICAL),
    ]
    columns = {"a b": [1.5, None], "label": ["Red", None]}
    feeds = onnx_feeds(features, columns, onnx_input_names(features))
    assert list(feeds) == ["a_b_c8687a08", onnx_input_name("label")]
    np.testing.assert_array_equal(feeds["a_b_c8687a08"], np.array([[1.5], [np.nan]], np.float32))
    assert feeds[onnx_input_name("label")].ravel().tolist() == ["red", MISSING_CATEGORY]
    # Without a mapping (a card written before it existed) the feature names are the inputs
    assert list(onnx_feeds(features, columns)) == ["a b", "label"]
