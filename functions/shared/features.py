"""Feature handling shared by preprocessing, training and inference: one source of truth.

Numeric features travel as float32 columns (missing = NaN, imputed inside the ONNX graph).
Categorical features travel as normalised strings; a missing value is the token
``MISSING_CATEGORY`` so that "no value" is a category the model can learn. This module imports
only numpy and pydantic: it is on the inference path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from functions.shared.contract import FeatureKind
from functions.shared.metrics import metric_info

MISSING_CATEGORY = "__missing__"
# Cell values read as "no value" in CSV files (case-sensitive, as pyarrow matches them).
NULL_TOKENS = ("", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "none", "#N/A")


def normalise_category(value: object) -> str:
    """Canonical spelling of a category: trimmed, inner whitespace collapsed, case-folded.

    Numbers get one spelling whatever their type (``1``, ``1.0`` and ``"1"`` are one category)
    and missing values become ``MISSING_CATEGORY``.
    """
    if value is None or type(value).__name__ == "NAType":  # pandas' NA, without importing pandas
        return MISSING_CATEGORY
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return MISSING_CATEGORY
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = " ".join(str(value).split()).casefold()
    if not text or text in _NULL_TOKENS_FOLDED:
        return MISSING_CATEGORY
    return text


_NULL_TOKENS_FOLDED = frozenset(t.casefold() for t in NULL_TOKENS)


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: FeatureKind


class DatasetFacts(BaseModel):
    """What a dataset version is: shared by its schema (dataset.json) and every model card
    trained on it, so the two cannot drift apart or disagree on what is consistent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    dataset_version: str
    task: Literal["classification", "regression"]
    target: str
    metric: str
    features: list[FeatureSpec] = Field(min_length=1)
    classes: list[str] | None = None

    @model_validator(mode="after")
    def _facts_consistent(self) -> Self:
        info = metric_info(self.metric)  # UnknownMetricError is a ValueError: a field error
        if info.task != self.task:
            raise ValueError(
                f"metric '{self.metric}' is a {info.task} metric but task is '{self.task}'"
            )
        if (self.task == "classification") != (self.classes is not None):
            raise ValueError("classes must be given for classification and only then")
        if self.classes is not None and (
            len(self.classes) < 2 or len(set(self.classes)) < len(self.classes)
        ):
            raise ValueError(f"a classifier needs two or more distinct classes, got {self.classes}")
        return self


class DatasetSchema(DatasetFacts):
    """What one dataset version holds; written next to its splits and copied into model cards."""

    id_column: str | None = None
    sensitive: list[str] = Field(default_factory=list)

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.kind is FeatureKind.NUMERIC]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind is FeatureKind.CATEGORICAL]


def onnx_feeds(
    features: Sequence[FeatureSpec], columns: Mapping[str, Sequence[Any] | NDArray[Any]]
) -> dict[str, NDArray[Any]]:
    """Build the ONNX graph's inputs, one ``(n, 1)`` tensor per raw feature.

    Training (parity check), evaluation and inference all feed the model through this function,
    so the encoding the model was checked with is the one it serves with.
    """
    feeds: dict[str, NDArray[Any]] = {}
    for spec in features:
        values = columns[spec.name]
        if spec.kind is FeatureKind.NUMERIC:
            arr = np.asarray(values, dtype=np.float32)
        else:
            arr = np.array([normalise_category(v) for v in values], dtype=object)
        feeds[spec.name] = arr.reshape(-1, 1)
    return feeds
