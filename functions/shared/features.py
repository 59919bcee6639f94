"""Feature handling shared by preprocessing, training and inference: one source of truth.

Numeric features travel as float32 columns (missing = NaN, imputed inside the ONNX graph).
Categorical features travel as normalised strings; a missing value is the token
``MISSING_CATEGORY`` so that "no value" is a category the model can learn. Feature names are the
user's headers everywhere but inside the ONNX graph, whose inputs take ``onnx_input_name``'s
spelling. This module imports only numpy and pydantic: it is on the inference path.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from functions.shared.contract import FeatureKind
from functions.shared.errors import SluiceError
from functions.shared.metrics import metric_info

MISSING_CATEGORY = "__missing__"
# Output names of the ONNX graph; inference looks them up by name, so no input may take one.
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
PREDICTION_OUTPUT = "variable"
_GRAPH_OUTPUTS = frozenset({LABEL_OUTPUT, PROBABILITIES_OUTPUT, PREDICTION_OUTPUT})
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_PLAIN = re.compile(r"[^A-Za-z0-9_]")
_STEM_LENGTH = 48
_DIGEST_LENGTH = 8
# Cell values read as "no value" in CSV files (case-sensitive, as pyarrow matches them).
NULL_TOKENS = ("", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "none", "#N/A")


def normalise_category(value: object) -> str:
    """Canonical spelling of a category: trimmed, inner whitespace collapsed, case-folded.

    Numbers get one spelling whatever their type (``1``, ``1.0`` and ``"1"`` are one category)
    and missing values become ``MISSING_CATEGORY``.
    """
    if type(value) is not str:  # strings, what JSON requests send, skip these checks
        if value is None or type(value).__name__ == "NAType":  # pandas' NA, without pandas
            return MISSING_CATEGORY
        if isinstance(value, bool | np.bool_):
            return "true" if value else "false"
        if isinstance(value, int | np.integer):
            return str(int(value))
        if isinstance(value, float | np.floating):
            if math.isnan(value):
                return MISSING_CATEGORY
            return str(int(value)) if float(value).is_integer() else repr(float(value))
        value = str(value)
    text = " ".join(value.split()).casefold()
    if not text or text in _NULL_TOKENS_FOLDED:
        return MISSING_CATEGORY
    return text


_NULL_TOKENS_FOLDED = frozenset(t.casefold() for t in NULL_TOKENS)


def onnx_input_name(header: str) -> str:
    """The ONNX graph's input name for a feature: a plain identifier, a function of the header
    alone, so the same column keeps its input name in every model version whatever the other
    columns are.

    A header that is already an identifier (``[A-Za-z_][A-Za-z0-9_]*``) and not one of the
    graph's output names is kept as is, so every model trained before the mapping existed
    keeps its inputs. Any other header becomes its first 48 characters with each character
    outside ``[A-Za-z0-9_]`` replaced by ``_`` (``_`` prepended before a digit or an empty
    stem), then ``_`` and the first 8 hex digits of the header's sha256: ``a b`` ->
    ``a_b_c8687a08``, ``label`` -> ``label_1aca80e8``. The digest keeps ``a b``, ``a-b`` and
    ``a_b`` apart (converters such as skl2onnx would otherwise rename them, silently and
    depending on which other inputs exist).
    """
    if _PLAIN_NAME.fullmatch(header) and header not in _GRAPH_OUTPUTS:
        return header
    stem = _NOT_PLAIN.sub("_", header[:_STEM_LENGTH])
    if not stem or stem[0].isdigit():
        stem = f"_{stem}"
    digest = hashlib.sha256(header.encode("utf-8")).hexdigest()[:_DIGEST_LENGTH]
    return f"{stem}_{digest}"


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
        onnx_input_names(self.features)  # two features may not share a graph input
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


def onnx_input_names(features: Sequence[FeatureSpec]) -> dict[str, str]:
    """Each feature's graph input name (``onnx_input_name``), in feature order.

    Raises
    ------
    ValueError
        When two features would feed one input: duplicate names, or a header spelled as
        another header's sanitised name with the same digest.
    """
    names = {spec.name: onnx_input_name(spec.name) for spec in features}
    if len(names) < len(features) or len(set(names.values())) < len(names):
        raise ValueError(f"features {[f.name for f in features]} do not map to distinct inputs")
    return names


def onnx_feeds(
    features: Sequence[FeatureSpec],
    columns: Mapping[str, Sequence[Any] | NDArray[Any]],
    input_names: Mapping[str, str] | None = None,
) -> dict[str, NDArray[Any]]:
    """Build the ONNX graph's inputs, one ``(n, 1)`` tensor per raw feature.

    ``columns`` is keyed by the features' (user's) names; the feeds are keyed by
    ``input_names[name]``, the graph's names a model card records (``None``: the same names,
    as in a card written before the mapping existed). Training (parity check), evaluation and
    inference all feed the model through this function, so the encoding the model was checked
    with is the one it serves with.
    """
    feeds: dict[str, NDArray[Any]] = {}
    for spec in features:
        values = columns[spec.name]
        if spec.kind is FeatureKind.NUMERIC:
            arr = np.asarray(values, dtype=np.float32)
        else:
            arr = np.array([normalise_category(v) for v in values], dtype=object)
        feeds[spec.name if input_names is None else input_names[spec.name]] = arr.reshape(-1, 1)
    return feeds


# What a prediction request may send per feature kind, as JSON types. A numeric feature takes a
# number or null only: a string such as "12" is a client bug to report, not a value to coerce.
INSTANCE_JSON_TYPES: dict[FeatureKind, tuple[str, ...]] = {
    FeatureKind.NUMERIC: ("number", "null"),
    FeatureKind.CATEGORICAL: ("string", "number", "boolean", "null"),
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMERIC = FeatureKind.NUMERIC  # an enum member lookup costs 0.17 µs: once per feature adds up
_MAX_PROBLEMS = 20


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with a request, located the way the client wrote it
    (``instances[3].tenure``)."""

    field: str
    message: str


class InvalidInstancesError(SluiceError):
    """Prediction instances do not match the model's feature schema; ``problems`` names each
    offending field (at most ``_MAX_PROBLEMS`` of them, ``total`` counts them all)."""

    def __init__(self, problems: list[FieldProblem], total: int) -> None:
        self.problems = problems
        self.total = total
        more = f" (and {total - 1} more)" if total > 1 else ""
        first = problems[0]
        super().__init__(f"{first.field}: {first.message}{more}")


def instances_to_columns(
    features: Sequence[FeatureSpec], instances: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """Check JSON prediction instances against a model's features and pivot them to columns.

    Strict on purpose: every instance names exactly the model's features (a typo must not
    silently become a missing value), numeric features take JSON numbers or null (not strings,
    not booleans, nothing beyond float32's range), categorical features take any JSON scalar.
    ``null`` is a missing value, as NaN / ``MISSING_CATEGORY`` were in training. The columns hold
    the JSON values as sent and feed ``onnx_feeds`` unchanged, so serving encodes them exactly as
    evaluation did (``None`` becomes NaN there, and a checked number always fits in float32).

    Raises
    ------
    InvalidInstancesError
        With one ``FieldProblem`` per offending field, in instance order.
    """
    pairs = [(spec.name, spec.kind is _NUMERIC) for spec in features]
    if not _instances_valid(pairs, instances):
        problems = _instance_problems(features, instances)
        raise InvalidInstancesError(problems[:_MAX_PROBLEMS], len(problems))
    return {name: [instance[name] for instance in instances] for name, _ in pairs}


def _instances_valid(pairs: list[tuple[str, bool]], instances: Sequence[Mapping[str, Any]]) -> bool:
    """The check every request pays: one pass, nothing allocated per value. The diagnosis
    (``_instance_problems``) only runs when this says no."""
    expected = {name for name, _ in pairs}
    for instance in instances:
        if type(instance) is not dict or instance.keys() != expected:
            return False
        for name, numeric in pairs:
            value = instance[name]
            if value is None:
                continue
            kind = type(value)
            if numeric:
                # type() rather than isinstance(): bool is an int subclass and must be refused.
                if not ((kind is float or kind is int) and -_FLOAT32_MAX <= value <= _FLOAT32_MAX):
                    return False
            elif kind is dict or kind is list:
                return False
    return True


def _instance_problems(
    features: Sequence[FeatureSpec], instances: Sequence[Mapping[str, Any]]
) -> list[FieldProblem]:
    """Every problem of every instance, in instance order, for the error response."""
    problems: list[FieldProblem] = []
    expected = {spec.name for spec in features}
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict):
            problems.append(
                FieldProblem(
                    f"instances[{index}]",
                    f"expected an object of feature values, got {json_type(instance)}",
                )
            )
        elif instance.keys() != expected:
            problems.extend(_key_problems(index, instance, features))
    for spec in features:
        name = spec.name
        values = [i.get(name) if isinstance(i, dict) else None for i in instances]
        if spec.kind is FeatureKind.NUMERIC:
            problems.extend(_numeric_problems(name, values))
        else:
            problems.extend(
                FieldProblem(
                    f"instances[{i}].{name}",
                    f"categorical feature '{name}' takes a string, number, boolean or null, "
                    f"got {json_type(v)}",
                )
                for i, v in enumerate(values)
                if type(v) is dict or type(v) is list
            )
    problems.sort(key=_instance_order)
    return problems


def _key_problems(
    index: int, instance: Mapping[str, Any], features: Sequence[FeatureSpec]
) -> list[FieldProblem]:
    names = [spec.name for spec in features]
    problems = [
        FieldProblem(
            f"instances[{index}].{name}",
            f"missing feature '{name}'; send null for a missing value",
        )
        for name in names
        if name not in instance
    ]
    for key in instance:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; the features are {names}"
            problems.append(
                FieldProblem(f"instances[{index}].{key}", f"unknown feature '{key}'{hint}")
            )
    return problems


def _numeric_problems(name: str, values: list[Any]) -> list[FieldProblem]:
    problems = []
    for index, value in enumerate(values):
        if value is None:
            continue
        if type(value) is not float and type(value) is not int:
            got = json_type(value)
            problems.append(
                FieldProblem(
                    f"instances[{index}].{name}",
                    f"numeric feature '{name}' takes a number or null, got {got}",
                )
            )
        elif not abs(value) <= _FLOAT32_MAX:
            problems.append(
                FieldProblem(
                    f"instances[{index}].{name}",
                    f"numeric feature '{name}' is outside the float32 range (±{_FLOAT32_MAX:.4g})",
                )
            )
    return problems


def _instance_order(problem: FieldProblem) -> int:
    return int(problem.field[len("instances[") : problem.field.index("]")])


def json_type(value: object) -> str:
    """What a client sent, in JSON's words, for error messages: ``a string ("12")``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else f"{value[:17]}..."
        return f"a string ({json.dumps(shown)})"
    if isinstance(value, list):
        return "an array"
    return "an object"
