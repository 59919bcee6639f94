"""The prediction API's wire format: the parsers of paths and bodies, and the pydantic models of
every request and response, from which Powertools builds the OpenAPI document.

The shapes follow TensorFlow Serving's REST API (``instances`` in, ``predictions`` out,
``model_version_status``), so its clients work unchanged. Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from pydantic_core import from_json, to_json

from functions.inference.errors import (
    MalformedRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    invalid_dataset_name,
    invalid_request,
    invalid_version,
)
from functions.shared.contract import FeatureKind
from functions.shared.explanation_outputs import Output
from functions.shared.features import FeatureSpec
from functions.shared.layout import DATASET_NAME

MAX_BODY_BYTES = 1024 * 1024
# The longest JSON text one value of a feature is taken to need when sizing a request: a float64
# written in full (``-2.2250738585072014e-308``), and a categorical value of up to 32 characters
# with its quotes. A category longer than that makes the estimate optimistic.
NUMERIC_VALUE_BYTES = 24
CATEGORICAL_VALUE_BYTES = 34
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"  # what `curl -d` sends by default

# TF Serving's model states (tensorflow_serving/apis/get_model_status.proto).
ModelState = Literal["START", "LOADING", "AVAILABLE", "UNLOADING", "END", "UNKNOWN"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- request ------------------------------------------------------------------------------------

VERSION = re.compile(r"^[1-9][0-9]{0,8}$")


def parse_dataset(value: str) -> str:
    """The ``{dataset}`` path parameter, checked as the OpenAPI document declares it.

    Raises
    ------
    InvalidPathParameterError
    """
    if not DATASET_NAME.match(value):
        raise invalid_dataset_name(value)
    return value


def parse_version(value: str) -> int:
    """The ``{version}`` path parameter: a positive integer.

    Raises
    ------
    InvalidPathParameterError
    """
    if not VERSION.match(value):
        raise invalid_version(value)
    return int(value)


def unsupported_media_type(content_type: str | None) -> UnsupportedMediaTypeError:
    """The 415, with the fix for the usual cause: ``curl -d`` without a Content-Type header sends
    ``application/x-www-form-urlencoded`` (docs/decisions.md: such a body is not read as JSON)."""
    hint = ""
    if (content_type or "").partition(";")[0].strip().lower() == FORM_MEDIA_TYPE:
        hint = " (curl -d sends that: add -H 'content-type: application/json')"
    return UnsupportedMediaTypeError(
        f"Content-Type '{content_type}' is not supported; send application/json{hint}"
    )


def is_json_media_type(content_type: str | None) -> bool:
    """True for ``application/json``, with or without parameters (``; charset=utf-8``), and
    for no Content-Type at all (curl without ``-H``)."""
    if content_type is None:
        return True
    return content_type.partition(";")[0].strip().lower() == "application/json"


def parse_predict_request(body: str | None, content_type: str | None) -> PredictRequest:
    """A predict request from the raw body, exactly as the OpenAPI document describes it.

    The predict routes parse their body here rather than through Powertools' validation
    middleware, which with this body and a response model took 130 µs a request on a route that
    returns a constant, against 20 µs without (the model itself runs one row in about 15 µs).
    The model (``PredictRequest``) and the error responses are the same.

    Raises
    ------
    UnsupportedMediaTypeError, PayloadTooLargeError, MalformedRequestError, InvalidRequestError
    """
    return _parse_body(body, content_type, PredictRequest)


def parse_explain_request(body: str | None, content_type: str | None) -> ExplainRequest:
    """An explain request (the predict body and ``classes``), as ``parse_predict_request``."""
    return _parse_body(body, content_type, ExplainRequest)


def _parse_body(body: str | None, content_type: str | None, model: type[Request]) -> Request:
    if not is_json_media_type(content_type):
        raise unsupported_media_type(content_type)
    if not body:
        raise MalformedRequestError(
            'the request body is empty; send a JSON object such as {"instances": [{...}]}'
        )
    try:
        return model.model_validate(parse_json_object(body))
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None


def parse_json_object(text: str, example: str = '{"instances": [{...}]}') -> dict[str, Any]:
    """Parse a request body as one JSON object, strictly.

    ``pydantic_core.from_json`` rather than ``json.loads``: it refuses the ``NaN`` and
    ``Infinity`` tokens Python's parser lets through (which would turn a client bug into a silent
    wrong value), and it is five times faster on a 100-row body. The size limit is checked first,
    so an oversized body costs no parse time. Of two duplicate keys the last wins, as in most
    parsers (RFC 8259 leaves it open).

    ``example`` is the shape a refusal suggests.

    Raises
    ------
    PayloadTooLargeError
        The body is over ``MAX_BODY_BYTES`` (UTF-8).
    MalformedRequestError
        Not JSON, a non-standard token, or not an object.
    """
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(
            f"the request body is {len(data)} bytes, over the limit of {MAX_BODY_BYTES}; "
            "send fewer instances per request"
        )
    try:
        body = from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        if _NON_FINITE.search(text):
            raise MalformedRequestError(
                "the request body contains NaN or Infinity, which are not JSON; "
                "send null for a missing value"
            ) from None
        raise MalformedRequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedRequestError(f"the request body must be a JSON object such as {example}")
    return body


_NON_FINITE = re.compile(r"(?<![\w\"])-?(NaN|Infinity)(?![\w\"])")


def instances_that_fit(features: Sequence[FeatureSpec], body_limit: int = MAX_BODY_BYTES) -> int:
    """How many instances of a model surely fit in one request body, as ``json.dumps`` writes
    it (``", "`` and ``": "`` separators, non-ASCII names escaped): every value at its longest
    (``NUMERIC_VALUE_BYTES``, ``CATEGORICAL_VALUE_BYTES``). Compact JSON or short values fit
    more; the estimate is what a client can plan on."""
    per_instance = 2  # {}
    for spec in features:
        value = NUMERIC_VALUE_BYTES if spec.kind is FeatureKind.NUMERIC else CATEGORICAL_VALUE_BYTES
        per_instance += len(json.dumps(spec.name)) + len(": ") + value + len(", ")
    envelope = len('{"instances": []}')
    return max(0, (body_limit - envelope) // (per_instance + len(", ")))


# JSON Schema of one instance, for the OpenAPI document: the exact per-feature types depend on
# the model and are served by the metadata route (``input_schema``).
Instance = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {
                "anyOf": [{"type": t} for t in ("number", "string", "boolean", "null")]
            },
            "description": "One value per feature of the model, null for a missing value.",
        }
    ),
]


class PredictRequest(_Model):
    """TF Serving's row format. ``inputs`` (the columnar format) and ``signature_name`` are
    not accepted: an unknown key is an error rather than ignored."""

    instances: list[Instance] = Field(min_length=1)


class ExplainRequest(PredictRequest):
    """The predict body, and which classes a classifier's explanation covers."""

    classes: Literal["predicted", "all"] = Field(
        default="predicted",
        description="predicted (the default): explain the positive class of a binary classifier "
        "and the predicted class of a multiclass one. all: also one explanation per class, in "
        "each explanation's `classes` (the answer grows by the number of classes). A regressor "
        "answers the same either way.",
    )


Request = TypeVar("Request", PredictRequest, ExplainRequest)  # what a body parses into


# --- responses ---------------------------------------------------------------------------------


class ClassPrediction(_Model):
    label: str | int | bool = Field(
        description="The predicted class as the training data spells it: a number when the "
        "classes are integers (1, 3, 7), a boolean when they are true and false, else a string."
    )
    probabilities: dict[str, float] = Field(description="Class → probability, summing to 1.")


class PredictResponse(_Model):
    predictions: list[ClassPrediction] | list[float] = Field(
        description="One per instance, in order: label and probabilities for a classifier, "
        "a number for a regressor."
    )
    model_version: str = Field(description="The version that answered.")
    request_id: str = Field(
        description="API Gateway's id of this request (also the x-amzn-RequestId header): "
        "what feedback names, with each instance's index, to report the true label or value."
    )


@dataclass(frozen=True)
class Prediction:
    """A predict answer as the handler serialises it: ``PredictResponse``'s shape, built from
    the model's own output without pydantic validation, which for 100 rows cost more than the
    model (tests check that it validates as ``PredictResponse``)."""

    model_version: str
    predictions: list[dict[str, Any]] | list[float]
    request_id: str

    def to_json(self) -> str:
        # pydantic-core's serialiser writes floats five times faster than json.dumps; a
        # non-finite output (which no model should give) becomes null, never invalid JSON.
        body = {
            "predictions": self.predictions,
            "model_version": self.model_version,
            "request_id": self.request_id,
        }
        return to_json(body, inf_nan_mode="null").decode()


class ClassExplanation(_Model):
    explained_class: str | int | bool = Field(description="The class explained.")
    probability: float = Field(description="Its served probability.")
    base_value: float = Field(description="As the explanation's base_value, for this class.")
    output_value: float = Field(
        description="base_value plus the sum of the contributions: this class's log-odds or "
        "logit, in the unit the explanation's output states."
    )
    contributions: dict[str, float] = Field(description="Feature -> its exact SHAP value.")


class Explanation(_Model):
    prediction: ClassPrediction | float = Field(
        description="As the predict route answers it. A regressor's is the value served: "
        "exp(output_value) where output is log_value."
    )
    output: Output = Field(
        description="What base_value + contributions add up to: the predicted value for a "
        "regressor (a blend of regressors included); the log of the predicted value for trees "
        "fitted on log(target) (log_value: prediction is exp(output_value)); the log-odds of "
        "explained_class for a binary classifier; the logit (softmax input) of explained_class "
        "for a multiclass one. A calibrated model's log-odds are its calibrated ones (its margin "
        "divided by its temperature). A blend of classifiers averages its members' "
        "probabilities, which no sum of margins gives: its output is the weighted sum of its "
        "members' (uncalibrated) log-odds (weighted_log_odds) or logits (weighted_logit), so the "
        "served probability is not its sigmoid or softmax. Likewise a blend of trees fitted on "
        "log(target) averages their values: its output is the weighted sum of their logs "
        "(weighted_log_value, the log of their weighted geometric mean), so the served "
        "prediction is not its exp."
    )
    explained_class: str | int | bool | None = Field(
        description="The class whose log-odds or logit is explained: the second (positive) "
        "class of a binary classifier, the predicted class of a multiclass one; null for a "
        "regressor."
    )
    probability: float | None = Field(
        description="The served probability of explained_class; null for a regressor."
    )
    base_value: float = Field(
        description="The output expected over the training rows (the SHAP base value)."
    )
    output_value: float = Field(description="base_value plus the sum of the contributions.")
    contributions: dict[str, float] = Field(
        description="Feature (as the model's metadata names it) -> its exact SHAP value, in "
        "the units of output. Encoded columns (one-hot categories, imputed numbers, date "
        "parts) are summed back into the feature they come from."
    )
    classes: list[ClassExplanation] | None = Field(
        default=None,
        description='Only when the request asks "classes": "all", for a classifier: one '
        "explanation per class, in the order of the prediction's probabilities (a binary "
        "classifier's first class: the negated log-odds of its second).",
    )


class ExplainResponse(_Model):
    explanations: list[Explanation] = Field(description="One per instance, in order.")
    model_version: str = Field(description="The version that answered.")
    request_id: str = Field(description="API Gateway's id of this request.")


@dataclass(frozen=True)
class Explanations:
    """An explain answer as the handler serialises it, in ``ExplainResponse``'s shape (tests
    check that it validates as one)."""

    model_version: str
    explanations: list[dict[str, Any]]
    request_id: str

    def to_json(self) -> str:
        body = {
            "explanations": self.explanations,
            "model_version": self.model_version,
            "request_id": self.request_id,
        }
        return to_json(body, inf_nan_mode="null").decode()


class StatusDetail(_Model):
    error_code: str = "OK"
    error_message: str = ""


class VersionStatus(_Model):
    version: str
    state: ModelState
    status: StatusDetail = StatusDetail()


class ModelStatusResponse(_Model):
    model_version_status: list[VersionStatus]


class FeatureInfo(_Model):
    name: str
    kind: FeatureKind
    json_types: list[str]


class MetricInfo(_Model):
    name: str
    value: float | None = Field(description="On the test split at evaluation; null if undefined.")


class MetadataResponse(_Model):
    dataset: str
    model_version: str
    dataset_version: str
    task: Literal["classification", "regression"]
    target: str
    classes: list[str] | None
    features: list[FeatureInfo]
    metric: MetricInfo
    created_at: AwareDatetime
    sha256: str
    max_instances: int = Field(
        description="How many instances surely fit in one request: the instance limit, or "
        "fewer when the 1 MiB body holds fewer of this model's instances."
    )
    input_schema: dict[str, Any] = Field(description="JSON Schema of one instance.")


class ModelSummary(_Model):
    dataset: str
    model_version: str = Field(description="The live version.")
    task: Literal["classification", "regression"]
    metric: MetricInfo
    promoted_at: AwareDatetime = Field(
        description="When this version went live (its promotion or the rollback to it)."
    )


class ModelListResponse(_Model):
    models: list[ModelSummary] = Field(
        description="Every dataset in service with a live version, by name; retired datasets "
        "are left out."
    )
