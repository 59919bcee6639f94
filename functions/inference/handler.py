"""Inference Lambda: API Gateway REST proxy events in, TF-Serving-shaped ONNX predictions out.

The routes are thin: each checks its path and body against the API models (which also make the
OpenAPI document), makes one call into ``logic`` and returns a typed response. Every exception,
Powertools' own included, leaves through ``errors.error_response``.
"""

from __future__ import annotations

import binascii
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any

import boto3
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import ResponseBuilder
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.inference import logic
from functions.inference.cache import ModelCache
from functions.inference.capture import CaptureBuffer, CaptureSettings
from functions.inference.errors import (
    ErrorResponse,
    MalformedRequestError,
    RequestFacts,
    error_response,
)
from functions.inference.feedback import (
    FeedbackRequest,
    FeedbackResponse,
    parse_feedback_request,
    record_feedback,
)
from functions.inference.models import (
    VERSION,
    MetadataResponse,
    ModelStatusResponse,
    PredictRequest,
    PredictResponse,
    parse_dataset,
    parse_predict_request,
    parse_version,
)
from functions.inference.serving_metrics import ServingMetrics
from functions.shared.layout import DATASET_NAME
from functions.shared.observability import logger, metrics, tracer
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.storage import ObjectStore, S3ObjectStore

API_TITLE = "sluice prediction API"
API_VERSION = "1.0.0"
SERVED_VERSION_HEADER = "x-sluice-served-version"

STATUS = "/v1/models/<dataset>"
VERSION_STATUS = "/v1/models/<dataset>/versions/<version>"
METADATA = "/v1/models/<dataset>/metadata"
PREDICT = "/v1/models/<dataset>:predict"
VERSION_PREDICT = "/v1/models/<dataset>/versions/<version>:predict"
FEEDBACK = "/v1/models/<dataset>:feedback"
OPENAPI = "/v1/openapi.json"
ROUTES: dict[str, tuple[str, ...]] = {
    STATUS: ("GET",),
    VERSION_STATUS: ("GET",),
    METADATA: ("GET",),
    PREDICT: ("POST",),
    VERSION_PREDICT: ("POST",),
    FEEDBACK: ("POST",),
    OPENAPI: ("GET",),
}


class Settings(BaseModel):
    """Environment, validated once per cold start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    REGISTRY_TABLE: str
    MAX_INSTANCES: int = Field(default=1000, ge=1)
    MODEL_CACHE_TTL_SECONDS: float = Field(default=5.0, ge=0)
    FEEDBACK_BUCKET: str | None = None  # unset: the feedback route answers 503
    AWS_ENDPOINT_URL: str | None = None  # set by the local stack only

    @field_validator("FEEDBACK_BUCKET")
    @classmethod
    def _empty_bucket_is_none(cls, value: str | None) -> str | None:
        return (value.strip() or None) if value is not None else None


# The settings, the model cache, and the store feedback is written to.
Deps = tuple[Settings, ModelCache, ObjectStore]


@cache
def _deps() -> Deps:
    settings = Settings.model_validate(dict(os.environ))
    dynamodb = boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL)
    store = S3ObjectStore(boto3.client("s3", endpoint_url=settings.AWS_ENDPOINT_URL))
    model_cache = ModelCache(
        DynamoDBRegistry(dynamodb, settings.REGISTRY_TABLE),
        store,
        ttl_seconds=settings.MODEL_CACHE_TTL_SECONDS,
    )
    return settings, model_cache, store


@cache
def _observers() -> tuple[CaptureBuffer, ServingMetrics]:
    """Capture and serving metrics, built on first use (after a SnapStart restore, so each
    environment samples with its own random sequence)."""
    settings = CaptureSettings.from_env()
    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    return CaptureBuffer(settings, S3ObjectStore(s3)), ServingMetrics()


Dataset = Annotated[
    str,
    Path(pattern=DATASET_NAME.pattern, description="Dataset name, as in the raw bucket prefix."),
]
Version = Annotated[str, Path(pattern=VERSION.pattern, description="Model version number.")]


def create_app(deps: Callable[[], Deps]) -> APIGatewayRestResolver:
    """The prediction API, its routes reading settings and the model cache from ``deps``.

    Production passes the cached ``_deps``, unit tests pass fakes. A factory rather than
    Powertools' ``Depends``, which rebuilds its dependency tree (``get_type_hints``) on every
    request: 70 µs per dependency, five times the model's run on one row.
    """
    app = APIGatewayRestResolver(enable_validation=True)
    app.configure_openapi(
        title=API_TITLE,
        version=API_VERSION,
        description="TensorFlow-Serving-shaped predictions from the models sluice trained, "
        "gated and promoted. See docs/api.md.",
        security_schemes={"apiKey": APIKey(name="x-api-key", in_=APIKeyIn.header)},
        security=[{"apiKey": []}],
    )

    def predict_request() -> PredictRequest:
        event = app.current_event
        return parse_predict_request(_body(event), _header(event, "content-type"))

    # The predict routes check their path and body themselves (models.parse_*), against the same
    # patterns and model the OpenAPI document shows: Powertools' validation middleware costs
    # ~100 µs a request, seven times the model's own run on one row (see parse_predict_request).
    @app.post(
        PREDICT,
        summary="Predict with the live model",
        responses={**_ok("Predictions", PredictResponse), **_errors(400, 404, 413, 415, 422, 503)},
        openapi_extensions=_PREDICT_BODY,
        enable_validation=False,
    )
    def predict(dataset: Dataset) -> Response[str]:
        request_id = _request_id(app.current_event)
        return _predict(deps(), parse_dataset(dataset), None, predict_request(), request_id)

    @app.post(
        VERSION_PREDICT,
        summary="Predict with one version: live, retired or candidate",
        responses={**_ok("Predictions", PredictResponse), **_errors(400, 404, 413, 415, 422, 503)},
        openapi_extensions=_PREDICT_BODY,
        enable_validation=False,
    )
    def predict_version(dataset: Dataset, version: Version) -> Response[str]:
        pinned = parse_version(version)
        request_id = _request_id(app.current_event)
        return _predict(deps(), parse_dataset(dataset), pinned, predict_request(), request_id)

    @app.post(
        FEEDBACK,
        summary="Report the true label or value of predicted instances",
        description="Names each instance by the predict answer's request_id and its index in "
        "that request. The drift job joins feedback with the capture sample into live accuracy "
        "or RMSE. The request is stored whole or not at all.",
        responses={
            202: {
                "description": "Stored",
                "content": {content_types.APPLICATION_JSON: {"model": FeedbackResponse}},
            },
            **_errors(400, 404, 413, 415, 422, 503),
        },
        openapi_extensions=_FEEDBACK_BODY,
        enable_validation=False,
    )
    def feedback(dataset: Dataset) -> Response[str]:
        config, cache, store = deps()
        name = parse_dataset(dataset)
        event = app.current_event
        request = parse_feedback_request(_body(event), _header(event, "content-type"))
        accepted = record_feedback(
            cache,
            store,
            config.FEEDBACK_BUCKET,
            name,
            request,
            max_index=config.MAX_INSTANCES,
            now=datetime.now(UTC),
        )
        return Response(
            status_code=202,
            content_type=content_types.APPLICATION_JSON,
            body=accepted.model_dump_json(),
        )

    @app.get(
        STATUS,
        summary="State of the live version",
        responses={**_ok("The live version's state"), **_errors(400, 404, 503)},
    )
    def model_status(dataset: Dataset) -> ModelStatusResponse:
        return logic.model_status(deps()[1], dataset)

    @app.get(
        VERSION_STATUS,
        summary="State of one version",
        responses={**_ok("The version's state"), **_errors(400, 404, 503)},
    )
    def version_status(dataset: Dataset, version: Version) -> ModelStatusResponse:
        return logic.version_status(deps()[1], dataset, int(version))

    @app.get(
        METADATA,
        summary="What the model answering for the dataset expects and returns",
        responses={**_ok("Features, input schema, classes, metric"), **_errors(400, 404, 503)},
    )
    def model_metadata(dataset: Dataset) -> MetadataResponse:
        config, cache, _ = deps()
        return logic.metadata(cache, dataset, max_instances=config.MAX_INSTANCES)

    @app.get(
        OPENAPI,
        summary="This API's OpenAPI document",
        responses={
            200: {
                "description": "OpenAPI 3.1 document",
                "content": {content_types.APPLICATION_JSON: {"schema": {"type": "object"}}},
            }
        },
    )
    def openapi_document() -> Response[str]:
        return Response(
            status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_json()
        )

    @cache
    def openapi_json() -> str:
        document = json.loads(app.get_openapi_json_schema(title=API_TITLE, version=API_VERSION))
        return json.dumps(_without_powertools_errors(document))

    def on_error(exc: Exception) -> Response[str]:
        event = app.current_event
        facts = RequestFacts(event.http_method.upper(), allowed_methods(event.path))
        response = error_response(exc, facts)
        predicted = _PREDICT_PATH.match(event.path or "")
        if predicted is not None and event.http_method.upper() == "POST":
            _count_error(predicted.group(1), response.status_code)
        return response

    # Every exception, Powertools' NotFoundError (no route) and RequestValidationError included:
    # handlers are looked up along the exception's MRO, so this one replaces all the defaults.
    app.exception_handler(Exception)(on_error)
    return app


def _predict(
    deps: Deps, dataset: str, version: int | None, request: PredictRequest, request_id: str
) -> Response[str]:
    config, cache, _ = deps
    started = time.perf_counter()
    result = logic.predict(
        cache,
        dataset,
        version,
        request,
        max_instances=config.MAX_INSTANCES,
        request_id=request_id,
    )
    # Aggregated per window, not an EMF document per request (≈ 30 µs); captured off the hot
    # path (serving_metrics.py, capture.py).
    capture, serving = _observers()
    serving.record(
        dataset,
        result.model_version,
        time.perf_counter() - started,
        len(request.instances),
        result.predictions,
    )
    capture.offer(dataset, result.model_version, request_id, request.instances, result.predictions)
    return Response(
        status_code=200,
        content_type=content_types.APPLICATION_JSON,
        body=result.to_json(),
        headers={SERVED_VERSION_HEADER: result.model_version},
    )


def _request_id(event: Mapping[str, Any]) -> str:
    """API Gateway's id of the request (``requestContext.requestId``): answered to the client,
    recorded by capture, named by feedback; empty in an event without one."""
    context = event.get("requestContext")
    return str(context.get("requestId") or "") if isinstance(context, dict) else ""


def _body(event: BaseProxyEvent) -> str | None:
    """The request body as text; API Gateway base64-encodes it for binary media types."""
    try:
        return event.decoded_body
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise MalformedRequestError(f"the request body is not base64 of UTF-8 text: {exc}") from exc


def _header(event: BaseProxyEvent, name: str) -> str | None:
    """One request header, case-insensitively, without Powertools' ``event.headers``, which
    copies all of API Gateway's twenty-odd headers into a new dict on every call (9 µs). The
    spellings clients use (``Content-Type``, ``content-type``) are looked up first."""
    headers: dict[str, str] = event.get("headers") or {}
    value = headers.get(name.title()) or headers.get(name)
    if value is not None:
        return value
    return next((v for key, v in headers.items() if key.lower() == name), None)


# The predict routes' body in the OpenAPI document: they parse it themselves (see above).
_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {content_types.APPLICATION_JSON: {"schema": PredictRequest.model_json_schema()}},
    }
}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON Schema with its ``$defs`` substituted: in an OpenAPI document a
    ``#/$defs/...`` reference would resolve against the document's root, not the schema's."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_FEEDBACK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            content_types.APPLICATION_JSON: {
                "schema": _inlined(FeedbackRequest.model_json_schema())
            }
        },
    }
}


def _errors(*codes: int) -> dict[int, OpenAPIResponse]:
    reasons = {
        400: "Malformed JSON body or path parameter",
        404: "Unknown dataset or version, no live model, or a version the gate rejected",
        413: "Body over 1 MiB or more instances (or feedback items) than allowed",
        415: "Content-Type is not application/json",
        422: "Instances do not match the model's features, or feedback does not fit the model",
        503: "The model cannot be loaded and no earlier model can answer, or feedback cannot "
        "be stored",
    }
    return {
        code: {
            "description": reasons[code],
            "content": {content_types.APPLICATION_JSON: {"model": ErrorResponse}},
        }
        for code in codes
    }


def _ok(description: str, model: type[BaseModel] | None = None) -> dict[int, OpenAPIResponse]:
    """The 200 response; its schema comes from ``model`` or else the return annotation."""
    if model is None:
        return {200: {"description": description}}
    return {
        200: {
            "description": description,
            "content": {content_types.APPLICATION_JSON: {"model": model}},
        }
    }


def _without_powertools_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Drop what Powertools documents of its own error format: a 422 ``HTTPValidationError`` on
    every validated route. ``errors.error_response`` replaces that format, and the GET routes
    answer a bad path parameter with 400, never 422."""
    for operations in document["paths"].values():
        for operation in operations.values():
            unprocessable = operation["responses"].get("422", {})
            if "HTTPValidationError" in json.dumps(unprocessable):
                del operation["responses"]["422"]
    schemas = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(name, None)
    return document


def _path_pattern(rule: str) -> re.Pattern[str]:
    # A parameter never holds '/' or ':', so "churn:predict" is not a dataset name here.
    return re.compile("^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/:]+)", re.escape(rule)) + "$")


_ROUTE_PATTERNS = [(_path_pattern(rule), methods) for rule, methods in ROUTES.items()]


def allowed_methods(path: str) -> tuple[str, ...]:
    """The methods the API serves on ``path`` (empty: no route has this path)."""
    return tuple(m for pattern, methods in _ROUTE_PATTERNS if pattern.match(path) for m in methods)


app = create_app(_deps)


# The hot route, matched before the resolver: the live-model predict is nearly every request.
_LIVE_PREDICT = re.compile(r"^/v1/models/([^/]+):predict$")


def _live_predict(event: dict[str, Any], dataset: str) -> dict[str, Any]:
    """``POST /v1/models/{dataset}:predict`` without the resolver's per-request machinery (route
    table scan, middleware stack, compression check over every header: ≈ 60 µs, four times the
    model's run on one row). Same parsing, same logic, same error mapping and the same response
    serialisation as the routed path; a test holds the two to identical responses."""
    proxy = APIGatewayProxyEvent(event)
    try:
        request = parse_predict_request(_body(proxy), _header(proxy, "content-type"))
        response = _predict(_deps(), parse_dataset(dataset), None, request, _request_id(event))
    except Exception as exc:  # mapped exactly as the resolver's exception handler maps it
        response = error_response(exc, RequestFacts("POST", allowed_methods(proxy.path)))
        _count_error(dataset, response.status_code)
    return ResponseBuilder[APIGatewayProxyEvent](response).build(proxy)


# Any predict path, live or pinned version: the dataset is group 1.
_PREDICT_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/[^/:]+)?:predict$")


def _count_error(dataset: str, status: int) -> None:
    """A predict request the model could not answer (422: instances it does not take; 5xx) counts
    towards the dataset's ``ErrorRate``; a bad dataset name, an unknown model, a malformed or
    oversized body (400, 404, 413, 415) is the caller's mistake and says nothing about the world.
    """
    if (status == 422 or status >= 500) and DATASET_NAME.match(dataset):
        _observers()[1].record_error(dataset)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The API Gateway request id as correlation id, read directly: the decorator's
    # correlation_id_path evaluates a JMESPath expression on every request (≈ 20 µs).
    request = event.get("requestContext")
    logger.set_correlation_id(request.get("requestId") if isinstance(request, dict) else None)
    capture, serving = _observers()
    capture.maybe_flush_async()  # the flusher thread was frozen between invocations
    serving.maybe_flush()
    if event.get("httpMethod") == "POST":
        hot = _LIVE_PREDICT.match(event.get("path") or "")
        if hot is not None:
            return _live_predict(event, hot.group(1))
    return app.resolve(event, context)
