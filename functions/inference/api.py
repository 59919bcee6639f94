"""What both entry points of the prediction API share: the route table, the settings and the
dependencies built from them, and the request helpers.

``handler`` serves the live predict itself and hands every other request to the resolver that
``routes`` builds on first use; both read their dependencies through ``dependencies``, parse
request bodies with ``predict_request_for``/``explain_request_for`` and answer a prediction
through ``predict_response``. Here, not in either of them, so that neither imports the other
(tests/unit/test_import_graph.py).
"""

from __future__ import annotations

import binascii
import os
import re
import time
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.inference import logic
from functions.inference.cache import ModelCache
from functions.inference.capture import CaptureBuffer, CaptureSettings
from functions.inference.errors import MalformedRequestError, PayloadTooLargeError
from functions.inference.models import (
    ExplainRequest,
    PredictRequest,
    Request,
    parse_explain_request,
    parse_predict_request,
)
from functions.inference.serving_metrics import ServingMetrics
from functions.shared.layout import DATASET_NAME
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.storage import ObjectStore, S3ObjectStore

API_TITLE = "sluice prediction API"
API_VERSION = "1.0.0"
SERVED_VERSION_HEADER = "x-sluice-served-version"

MODELS = "/v1/models"
STATUS = "/v1/models/<dataset>"
VERSION_STATUS = "/v1/models/<dataset>/versions/<version>"
METADATA = "/v1/models/<dataset>/metadata"
PREDICT = "/v1/models/<dataset>:predict"
VERSION_PREDICT = "/v1/models/<dataset>/versions/<version>:predict"
FEEDBACK = "/v1/models/<dataset>:feedback"
EXPLAIN = "/v1/models/<dataset>:explain"
OPENAPI = "/v1/openapi.json"
ROUTES: dict[str, tuple[str, ...]] = {
    MODELS: ("GET",),
    STATUS: ("GET",),
    VERSION_STATUS: ("GET",),
    METADATA: ("GET",),
    PREDICT: ("POST",),
    VERSION_PREDICT: ("POST",),
    FEEDBACK: ("POST",),
    EXPLAIN: ("POST",),
    OPENAPI: ("GET",),
}


class Settings(BaseModel):
    """Environment, validated once per cold start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    REGISTRY_TABLE: str
    MAX_INSTANCES: int = Field(default=1000, ge=1)
    MODEL_CACHE_TTL_SECONDS: float = Field(default=5.0, ge=0)
    FEEDBACK_BUCKET: str | None = None  # unset: the feedback route answers 503

    @field_validator("FEEDBACK_BUCKET")
    @classmethod
    def _empty_bucket_is_none(cls, value: str | None) -> str | None:
        return (value.strip() or None) if value is not None else None


# The settings, the model cache, and the store feedback is written to.
Deps = tuple[Settings, ModelCache, ObjectStore]


@cache
def dependencies() -> Deps:
    settings = Settings.model_validate(dict(os.environ))
    dynamodb = boto3.client("dynamodb")
    store = S3ObjectStore(boto3.client("s3"))
    model_cache = ModelCache(
        DynamoDBRegistry(dynamodb, settings.REGISTRY_TABLE),
        store,
        ttl_seconds=settings.MODEL_CACHE_TTL_SECONDS,
    )
    return settings, model_cache, store


@cache
def observers() -> tuple[CaptureBuffer, ServingMetrics]:
    """Capture and serving metrics, built on first use (after a SnapStart restore, so each
    environment samples with its own random sequence)."""
    settings = CaptureSettings.from_env()
    s3 = boto3.client("s3")
    return CaptureBuffer(settings, S3ObjectStore(s3)), ServingMetrics()


def predict_response(
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
    capture, serving = observers()
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


def predict_request_for(
    deps: Deps, dataset: str, version: int | None, event: BaseProxyEvent
) -> PredictRequest:
    """The predict body of ``event``; a body over the limit is refused saying how many of the
    model's instances fit (``logic.too_large``)."""
    return _request_for(deps, dataset, version, event, parse_predict_request)


def explain_request_for(deps: Deps, dataset: str, event: BaseProxyEvent) -> ExplainRequest:
    """The explain body of ``event`` (the predict body and ``classes``), as
    ``predict_request_for``."""
    return _request_for(deps, dataset, None, event, parse_explain_request)


def _request_for(
    deps: Deps,
    dataset: str,
    version: int | None,
    event: BaseProxyEvent,
    parse: Callable[[str | None, str | None], Request],
) -> Request:
    try:
        return parse(request_body(event), request_header(event, "content-type"))
    except PayloadTooLargeError as exc:
        config, cache, _ = deps
        raise logic.too_large(
            cache, dataset, version, exc, max_instances=config.MAX_INSTANCES
        ) from None


def gateway_request_id(event: Mapping[str, Any]) -> str:
    """API Gateway's id of the request (``requestContext.requestId``): answered to the client,
    recorded by capture, named by feedback; empty in an event without one."""
    context = event.get("requestContext")
    return str(context.get("requestId") or "") if isinstance(context, dict) else ""


def request_body(event: BaseProxyEvent) -> str | None:
    """The request body as text; API Gateway base64-encodes it for binary media types."""
    try:
        return event.decoded_body
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise MalformedRequestError(f"the request body is not base64 of UTF-8 text: {exc}") from exc


def request_header(event: BaseProxyEvent, name: str) -> str | None:
    """One request header, case-insensitively, without Powertools' ``event.headers``, which
    copies all of API Gateway's twenty-odd headers into a new dict on every call (9 µs). The
    spellings clients use (``Content-Type``, ``content-type``) are looked up first."""
    headers: dict[str, str] = event.get("headers") or {}
    value = headers.get(name.title()) or headers.get(name)
    if value is not None:
        return value
    return next((v for key, v in headers.items() if key.lower() == name), None)


def _path_pattern(rule: str) -> re.Pattern[str]:
    # A parameter never holds '/' or ':', so "churn:predict" is not a dataset name here.
    return re.compile("^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/:]+)", re.escape(rule)) + "$")


_ROUTE_PATTERNS = [(_path_pattern(rule), methods) for rule, methods in ROUTES.items()]


def allowed_methods(path: str) -> tuple[str, ...]:
    """The methods the API serves on ``path`` (empty: no route has this path)."""
    return tuple(m for pattern, methods in _ROUTE_PATTERNS if pattern.match(path) for m in methods)


# Any predict path, live or pinned version: the dataset is group 1.
PREDICT_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/[^/:]+)?:predict$")


def count_error(dataset: str, status: int) -> None:
    """A predict request the model could not answer (422: instances it does not take; 5xx) counts
    towards the dataset's ``ErrorRate``; a bad dataset name, an unknown model, a malformed or
    oversized body (400, 404, 413, 415) is the caller's mistake and says nothing about the world.
    """
    if (status == 422 or status >= 500) and DATASET_NAME.match(dataset):
        observers()[1].record_error(dataset)
