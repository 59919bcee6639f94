"""Feature handling shared by preprocessing, training and inference: one source of truth.

Numeric features travel as float32 columns (missing = NaN, imputed inside the ONNX graph).
Categorical features travel as normalised strings; a missing value is the token
``MISSING_CATEGORY`` so that "no value" is a category the model can learn. Boolean features
travel as float32 1/0 (missing = NaN). A date or datetime feature becomes six float32 graph
inputs, its parts (``DATE_PARTS``), derived here from the text as written, so training,
evaluation and serving derive them with one function. Feature names are the user's headers
everywhere but inside the ONNX graph, whose inputs take ``onnx_input_name``'s spelling. This
module imports only numpy and pydantic: it is on the inference path.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
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
    """One feature as the model takes it. ``text_only``: a categorical feature none of whose
    training values is a number; a request sending it a number is refused (422) instead of
    being read as an unseen category, which is what a client still sending the numbers of a
    feature that became text bands would otherwise get: a silent wrong answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: FeatureKind
    text_only: bool = False


# --- labels ---------------------------------------------------------------------------------

_INTEGER = re.compile(r"^[+-]?\d{1,15}$")
LabelValue = str | int | bool


def label_values(classes: Sequence[str]) -> list[LabelValue]:
    """Each class as a prediction's ``label`` carries it: the data's own spelling, as a JSON
    integer when every class is an integer (classes coded 1, 3, 7 come back as 1, 3, 7) and as
    a JSON boolean when the classes are true and false."""
    keys = {normalise_category(c) for c in classes}
    if keys == {"true", "false"}:
        return [normalise_category(c) == "true" for c in classes]
    if all(_INTEGER.match(c.strip()) for c in classes):
        return [int(c) for c in classes]
    return list(classes)


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
    # The classes as the data spells them (the most frequent spelling of each); matching a
    # label to a class normalises both (``class_keys``), every output uses these spellings.
    classes: list[str] | None = None

    @property
    def class_keys(self) -> list[str]:
        """The classes as matched: ``normalise_category`` of each, in ``classes`` order."""
        return [normalise_category(c) for c in self.classes or []]

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
            len(self.classes) < 2 or len(set(self.class_keys)) < len(self.classes)
        ):
            raise ValueError(f"a classifier needs two or more distinct classes, got {self.classes}")
        onnx_input_names(self.features)  # two features may not share a graph input
        return self


ColumnUse = Literal["feature", "target", "id_column", "sensitive", "excluded"]


class ColumnRole(BaseModel):
    """What preprocessing made of one column of the data, and why: the dataset report's view of
    every column, so that a column left out (a date taken apart, an id, free text, a constant)
    is a decision a person can read, not a surprise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    use: ColumnUse
    kind: FeatureKind | None = None
    reason: str


class DatasetSchema(DatasetFacts):
    """What one dataset version holds; written next to its splits and copied into model cards."""

    id_column: str | None = None
    sensitive: list[str] = Field(default_factory=list)
    columns: list[ColumnRole] = Field(default_factory=list)

    @property
    def numeric(self) -> list[str]:
        """The graph's float inputs, named as ``onnx_feeds`` names them."""
        columns = graph_columns(self.features, onnx_input_names(self.features))
        return [name for name, text in columns if not text]

    @property
    def categorical(self) -> list[str]:
        """The graph's string inputs, named as ``onnx_feeds`` names them."""
        columns = graph_columns(self.features, onnx_input_names(self.features))
        return [name for name, text in columns if text]


# --- booleans and dates -----------------------------------------------------------------------

_TRUE, _FALSE = "true", "false"
# Year, month, day, day of the week (Monday 0), hour of the day (minutes as a fraction) as
# written, and days since 1970-01-01 (UTC where the value has an offset): what a data scientist
# derives from a date so that trees can split on season, weekday and trend.
DATE_PARTS = ("year", "month", "day", "weekday", "hour", "epoch_days")
# ISO 8601 as spreadsheets and databases export it: a date, optionally a time, optionally an
# offset; '/' between the date's parts is accepted too. Day-first and month-first forms
# (01/02/2020) are ambiguous and are not dates here (docs/decisions.md, "Column roles").
_DATETIME = re.compile(
    r"^(\d{4})[-/](\d{1,2})[-/](\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r" ?(Z|[+-]\d{2}(?::?\d{2})?)?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DatePartsT = tuple[float, float, float, float, float, float]


def parse_datetime(value: object) -> _DatePartsT | None:
    """The ``DATE_PARTS`` of a date or datetime written in ISO 8601, or None when ``value`` is
    not one. Missing values (None, NaN, a null token) are not dates either: callers check for
    missing first (``is_missing``)."""
    if isinstance(value, datetime):
        moment = value
    else:
        if type(value) is not str:
            return None
        match = _DATETIME.match(value.strip())
        if match is None:
            return None
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        try:
            moment = datetime(
                int(year),
                int(month),
                int(day),
                int(hour or 0),
                int(minute or 0),
                int(second or 0),
                int((fraction or "0")[:6].ljust(6, "0")),
                tzinfo=_offset(offset),
            )
        except ValueError:  # 2021-02-30, 25:00
            return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    epoch_days = (aware - _EPOCH) / timedelta(days=1)
    return (
        float(moment.year),
        float(moment.month),
        float(moment.day),
        float(moment.weekday()),
        moment.hour + moment.minute / 60.0,
        epoch_days,
    )


def _offset(text: str | None) -> timezone | None:
    if text is None:
        return None
    if text == "Z":
        return UTC
    digits = text[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:4] or 0)
    return timezone(timedelta(minutes=-minutes if text[0] == "-" else minutes))


def parse_boolean(value: object) -> bool | None:
    """True or False for a boolean (or the words true / false, any case), else None."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if type(value) is str:
        word = value.strip().casefold()
        if word == _TRUE:
            return True
        if word == _FALSE:
            return False
    return None


def is_missing(value: object) -> bool:
    """A value that stands for "no value": None, NaN, pandas' NA or a null token."""
    return normalise_category(value) == MISSING_CATEGORY


def graph_columns(
    features: Sequence[FeatureSpec], input_names: Mapping[str, str] | None = None
) -> list[tuple[str, bool]]:
    """The graph's inputs as ``(name, is_text)``, in order: one per feature, named
    ``input_names[feature]`` (``None``: the feature's name), except a datetime feature, which
    gives one float input per date part (``<input name>__<part>``)."""
    columns: list[tuple[str, bool]] = []
    for spec in features:
        base = spec.name if input_names is None else input_names[spec.name]
        if spec.kind is FeatureKind.DATETIME:
            columns.extend((f"{base}__{part}", False) for part in DATE_PARTS)
        else:
            columns.append((base, spec.kind is FeatureKind.CATEGORICAL))
    return columns


def onnx_input_names(features: Sequence[FeatureSpec]) -> dict[str, str]:
    """Each feature's graph input name (``onnx_input_name``), in feature order.

    Raises
    ------
    ValueError
        When two features would feed one input: duplicate names, or a header spelled as
        another header's sanitised name with the same digest.
    """
    names = {spec.name: onnx_input_name(spec.name) for spec in features}
    inputs = [name for name, _ in graph_columns(features, names)]
    if len(names) < len(features) or len(set(inputs)) < len(inputs):
        raise ValueError(f"features {[f.name for f in features]} do not map to distinct inputs")
    return names


def onnx_feeds(
    features: Sequence[FeatureSpec],
    columns: Mapping[str, Sequence[Any] | NDArray[Any]],
    input_names: Mapping[str, str] | None = None,
) -> dict[str, NDArray[Any]]:
    """Build the ONNX graph's inputs, one ``(n, 1)`` tensor per graph column
    (``graph_columns``).

    ``columns`` is keyed by the features' (user's) names; the feeds are keyed by
    ``input_names[name]`` (a datetime feature's parts by ``<input name>__<part>``), the graph's
    names a model card records (``None``: the same names, as in a card written before the
    mapping existed). Training (parity check), evaluation and inference all feed the model
    through this function, so the encoding the model was checked with is the one it serves
    with. A boolean or date value that does not parse is fed as missing (NaN): preprocessing
    drops such rows and the API refuses such requests before they get here.
    """
    feeds: dict[str, NDArray[Any]] = {}
    for spec in features:
        values = columns[spec.name]
        kind = spec.kind
        if kind is _NUMERIC:
            arr = np.asarray(values, dtype=np.float32)
        elif kind is FeatureKind.CATEGORICAL:
            arr = np.array([normalise_category(v) for v in values], dtype=object)
        elif kind is FeatureKind.BOOLEAN:
            arr = np.array([_boolean_number(v) for v in values], dtype=np.float32)
        else:
            parts = _date_parts(values)
            base = spec.name if input_names is None else input_names[spec.name]
            for index, part in enumerate(DATE_PARTS):
                feeds[f"{base}__{part}"] = parts[:, index : index + 1]
            continue
        feeds[spec.name if input_names is None else input_names[spec.name]] = arr.reshape(-1, 1)
    return feeds


def _boolean_number(value: object) -> float:
    parsed = parse_boolean(value)
    return math.nan if parsed is None else float(parsed)


_NO_DATE: _DatePartsT = (math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)


def _date_parts(values: Sequence[Any] | NDArray[Any]) -> NDArray[np.float32]:
    """Rows × ``DATE_PARTS``; each distinct value is parsed once (dates repeat)."""
    seen: dict[Any, _DatePartsT] = {}
    rows: list[_DatePartsT] = []
    for value in values:
        try:
            known = seen.get(value)
        except TypeError:  # unhashable: refused upstream, missing here
            known = _NO_DATE
        if known is None:
            known = seen[value] = parse_datetime(value) or _NO_DATE
        rows.append(known)
    return np.array(rows, dtype=np.float32).reshape(-1, len(DATE_PARTS))


# What a prediction request may send per feature kind, as JSON types. A numeric feature takes a
# number or null only: a string such as "12" is a client bug to report, not a value to coerce.
# A boolean takes true/false (or the strings "true"/"false", as a CSV spells them), a date an
# ISO 8601 string. A categorical feature takes any scalar, unless its training values hold no
# number (``text_only``): then a number is refused rather than silently unseen.
INSTANCE_JSON_TYPES: dict[FeatureKind, tuple[str, ...]] = {
    FeatureKind.NUMERIC: ("number", "null"),
    FeatureKind.CATEGORICAL: ("string", "number", "boolean", "null"),
    FeatureKind.BOOLEAN: ("boolean", "string", "null"),
    FeatureKind.DATETIME: ("string", "null"),
}
_TEXT_ONLY_TYPES = ("string", "null")


def instance_json_types(spec: FeatureSpec) -> tuple[str, ...]:
    """The JSON types a request may send for ``spec``."""
    if spec.kind is FeatureKind.CATEGORICAL and spec.text_only:
        return _TEXT_ONLY_TYPES
    return INSTANCE_JSON_TYPES[spec.kind]


def instance_schema(spec: FeatureSpec) -> dict[str, Any]:
    """JSON Schema of one feature's value in a request."""
    schema: dict[str, Any] = {"type": list(instance_json_types(spec))}
    if spec.kind is FeatureKind.BOOLEAN:
        schema["description"] = 'true, false, "true", "false" or null'
    elif spec.kind is FeatureKind.DATETIME:
        schema["description"] = "an ISO 8601 date or date-time (2024-03-01, 2024-03-01T08:30:00Z)"
    return schema


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMERIC = FeatureKind.NUMERIC  # an enum member lookup costs 0.17 µs: once per feature adds up
# Kind codes for the per-request check: plain ints compare faster than enum members.
_K_NUMERIC, _K_ANY, _K_TEXT, _K_BOOLEAN, _K_DATETIME = range(5)
_MAX_PROBLEMS = 20


def _kind_code(spec: FeatureSpec) -> int:
    if spec.kind is _NUMERIC:
        return _K_NUMERIC
    if spec.kind is FeatureKind.CATEGORICAL:
        return _K_TEXT if spec.text_only else _K_ANY
    return _K_BOOLEAN if spec.kind is FeatureKind.BOOLEAN else _K_DATETIME


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
    pairs = [(spec.name, _kind_code(spec)) for spec in features]
    if not _instances_valid(pairs, instances):
        problems = _instance_problems(features, instances)
        raise InvalidInstancesError(problems[:_MAX_PROBLEMS], len(problems))
    return {name: [instance[name] for instance in instances] for name, _ in pairs}


def _instances_valid(pairs: list[tuple[str, int]], instances: Sequence[Mapping[str, Any]]) -> bool:
    """The check every request pays: one pass, nothing allocated per value. The diagnosis
    (``_instance_problems``) only runs when this says no."""
    expected = {name for name, _ in pairs}
    for instance in instances:
        if type(instance) is not dict or instance.keys() != expected:
            return False
        for name, code in pairs:
            value = instance[name]
            if value is None:
                continue
            kind = type(value)
            if code == _K_NUMERIC:
                # type() rather than isinstance(): bool is an int subclass and must be refused.
                if not ((kind is float or kind is int) and -_FLOAT32_MAX <= value <= _FLOAT32_MAX):
                    return False
            elif code == _K_ANY:
                if kind is dict or kind is list:
                    return False
            elif code == _K_TEXT:
                if kind is not str:
                    return False
            elif not _special_valid(code, value):
                return False
    return True


def _special_valid(code: int, value: object) -> bool:
    if code == _K_BOOLEAN:
        return parse_boolean(value) is not None or is_missing(value)
    return type(value) is str and (parse_datetime(value) is not None or is_missing(value))


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
            continue
        code = _kind_code(spec)
        for i, v in enumerate(values):
            message = _value_problem(spec, code, v)
            if message is not None:
                problems.append(FieldProblem(f"instances[{i}].{name}", message))
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


def _value_problem(spec: FeatureSpec, code: int, value: object) -> str | None:
    """What is wrong with a non-numeric feature's value, or None."""
    if value is None:
        return None
    name, kind = spec.name, type(value)
    if code == _K_ANY:
        if kind is dict or kind is list:
            return (
                f"categorical feature '{name}' takes a string, number, boolean or null, "
                f"got {json_type(value)}"
            )
    elif code == _K_TEXT:
        if kind is not str:
            return (
                f"feature '{name}' is categorical with text values in this model (it takes a "
                f"string or null), got {json_type(value)}; if it was numeric in an earlier "
                "version, send its new text value"
            )
    elif code == _K_BOOLEAN:
        if parse_boolean(value) is None and not (kind is str and is_missing(value)):
            return (
                f'boolean feature \'{name}\' takes true, false, "true", "false" or null, '
                f"got {json_type(value)}"
            )
    elif kind is not str or (parse_datetime(value) is None and not is_missing(value)):
        return (
            f"date feature '{name}' takes an ISO 8601 date or date-time string such as "
            f'"2024-03-01" or "2024-03-01T08:30:00Z", or null, got {json_type(value)}'
        )
    return None


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
