"""Every error the prediction API can answer, and the one place that maps them to HTTP.

Logic, the cache and the body parser raise typed errors and never think about status codes;
``error_response`` turns any exception into the JSON error body
``{"error": "...", "code": "...", "details": [{"field": ..., "message": ...}]}``. ``error``
stays a string so TensorFlow Serving clients, which read ``error`` as text, keep working.
Powertools' own validation errors (the GET routes' path parameters) and its 404 are translated
here too, so a client never sees Powertools' default format, and anything a client can send ends
in a 4xx: a 500 means a bug on our side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field

from functions.shared.errors import SluiceError
from functions.shared.features import InvalidInstancesError
from functions.shared.observability import logger, metrics

MAX_DETAILS = 20  # per response: enough to fix a request, bounded for a 1000-row one


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    message: str


class ErrorResponse(BaseModel):
    """Every error response. ``error`` names the field and says what to change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error: str
    code: str
    details: list[ErrorDetail] = []
    max_instances: int | None = Field(
        default=None,
        description="On a 413 for a known model: how many of its instances surely fit in one "
        "request (the 1 MiB body and the instance limit); absent otherwise.",
    )


class InferenceError(SluiceError):
    """Base of the API's refusals; ``details`` locate the fields at fault."""

    def __init__(self, message: str, details: Sequence[ErrorDetail] = ()) -> None:
        super().__init__(message)
        self.details = list(details)


class MalformedRequestError(InferenceError):
    """The body is not one JSON object (not JSON, NaN/Infinity, duplicate keys, empty...)."""


class InvalidPathParameterError(InferenceError):
    """A dataset name or version in the URL cannot name a model."""


class InvalidRequestError(InferenceError):
    """The body is JSON but not a predict request (no ``instances``, an empty list...)."""


class TooLargeError(InferenceError):
    """A request too large for one call; ``max_instances`` says how many instances of the
    model fit, when the model is known."""

    def __init__(self, message: str, max_instances: int | None = None) -> None:
        super().__init__(message)
        self.max_instances = max_instances


class PayloadTooLargeError(TooLargeError):
    """The body is over the size limit."""


class TooManyInstancesError(TooLargeError):
    """More instances than one request may carry."""


class TooManyFeedbackItemsError(InferenceError):
    """More feedback items than one request may carry."""


class InvalidFeedbackError(InferenceError):
    """Feedback items that do not fit the live model: a label that is not one of its classes, a
    value that is not a number, an index past the last instance a request can hold."""


class FeedbackUnavailableError(InferenceError):
    """Feedback cannot be stored: no bucket is configured, or the write failed."""


class UnsupportedMediaTypeError(InferenceError):
    """A Content-Type other than application/json."""


class RouteNotFoundError(InferenceError):
    """No route has this path."""


class MethodNotAllowedError(InferenceError):
    def __init__(self, message: str, allowed: Sequence[str]) -> None:
        super().__init__(message)
        self.allowed = list(allowed)


class ModelNotFoundError(InferenceError):
    """The dataset has no live model (unknown dataset, or nothing promoted yet)."""


class VersionNotFoundError(InferenceError):
    """The dataset has no such version."""


class VersionRejectedError(InferenceError):
    """The gate rejected this version: it never serves."""


class ModelRetiredError(InferenceError):
    """An operator retired the dataset (``sluice retire``): it no longer serves."""


class ModelNotExplainableError(InferenceError):
    """The model answering cannot explain its predictions: its file carries no explanation
    table (trained before explanations existed, or a kind of model they do not cover)."""


class ModelUnavailableError(InferenceError):
    """The model cannot be loaded (integrity failure, storage or registry down) and no earlier
    good model can answer instead."""


# The mapping, looked up along the exception's MRO: the most specific entry wins.
_STATUS: dict[type[Exception], tuple[HTTPStatus, str]] = {
    MalformedRequestError: (HTTPStatus.BAD_REQUEST, "malformed_request"),
    InvalidPathParameterError: (HTTPStatus.BAD_REQUEST, "invalid_path_parameter"),
    RouteNotFoundError: (HTTPStatus.NOT_FOUND, "route_not_found"),
    ModelNotFoundError: (HTTPStatus.NOT_FOUND, "model_not_found"),
    VersionNotFoundError: (HTTPStatus.NOT_FOUND, "version_not_found"),
    VersionRejectedError: (HTTPStatus.NOT_FOUND, "version_rejected"),
    ModelRetiredError: (HTTPStatus.GONE, "model_retired"),
    MethodNotAllowedError: (HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed"),
    PayloadTooLargeError: (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload_too_large"),
    TooManyInstancesError: (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_many_instances"),
    TooManyFeedbackItemsError: (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_many_items"),
    UnsupportedMediaTypeError: (HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
    InvalidRequestError: (HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_request"),
    InvalidInstancesError: (HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_instances"),
    InvalidFeedbackError: (HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_feedback"),
    ModelNotExplainableError: (HTTPStatus.UNPROCESSABLE_ENTITY, "not_explainable"),
    ModelUnavailableError: (HTTPStatus.SERVICE_UNAVAILABLE, "model_unavailable"),
    FeedbackUnavailableError: (HTTPStatus.SERVICE_UNAVAILABLE, "feedback_unavailable"),
}
_INTERNAL = (HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error")


@dataclass(frozen=True)
class RequestFacts:
    """What the mapping needs to know about the request that failed.

    ``allowed_methods`` are the methods the API serves on this path (empty: no route has it).
    """

    method: str
    allowed_methods: tuple[str, ...]


def error_response(exc: Exception, request: RequestFacts) -> Response[str]:
    """The HTTP response for any exception raised while serving ``request``.

    A method the path does not serve is decided first (405): Powertools routes ``GET
    /v1/models/churn:predict`` to the status route, whose dataset check would say 400.
    Anything not mapped is a bug of ours: logged with its traceback, answered 500 without it.
    """
    error = _typed(exc, request)
    status, code = next((_STATUS[cls] for cls in type(error).__mro__ if cls in _STATUS), _INTERNAL)
    headers: dict[str, str] = {}
    if isinstance(error, MethodNotAllowedError):
        headers["Allow"] = ", ".join(error.allowed)
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=1)
        if (status, code) == _INTERNAL:
            logger.exception("unexpected error", exc_info=exc)
            message = "internal error; the request was not processed"
        else:
            logger.error("request failed", extra={"code": code, "reason": str(error)})
            message = str(error)
    else:
        metrics.add_metric(name="ClientErrors", unit=MetricUnit.Count, value=1)
        logger.info("request refused", extra={"status": int(status), "code": code})
        message = str(error)
    fit = error.max_instances if isinstance(error, TooLargeError) else None
    body = ErrorResponse(error=message, code=code, details=_details(error), max_instances=fit)
    return Response(
        status_code=int(status),
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump_json(exclude_none=True),
        headers=headers,
    )


def _details(error: Exception) -> list[ErrorDetail]:
    if isinstance(error, InvalidInstancesError):
        return [ErrorDetail(field=p.field, message=p.message) for p in error.problems]
    if isinstance(error, InferenceError):
        return error.details
    return []


def _typed(exc: Exception, request: RequestFacts) -> Exception:
    """Translate what Powertools and the standard library raise into the API's typed errors."""
    if request.allowed_methods and request.method not in request.allowed_methods:
        allowed = ", ".join(request.allowed_methods)
        return MethodNotAllowedError(
            f"{request.method} is not served on this path; use {allowed}", request.allowed_methods
        )
    if isinstance(exc, NotFoundError):
        return RouteNotFoundError(
            "no such route; the API serves /v1/models, "
            "/v1/models/{dataset}[/versions/{version}][:predict], "
            "/v1/models/{dataset}:feedback, /v1/models/{dataset}/metadata and /v1/openapi.json"
        )
    if isinstance(exc, RequestValidationError) and all(
        e["loc"][0] != "response" for e in exc.errors()
    ):
        return _from_validation(exc.errors())
    return exc  # a response that fails its own model is our bug: 500


def _from_validation(errors: Sequence[Any]) -> InferenceError:
    """Powertools' validation errors (path parameters of the GET routes) as typed errors."""
    path = [e for e in errors if e["loc"][0] == "path"]
    if path:
        first = path[0]
        if first["loc"][1] == "dataset":
            return invalid_dataset_name(first.get("input"))
        return invalid_version(first.get("input"))
    return invalid_request([{**e, "loc": tuple(e["loc"][1:])} for e in errors])


def invalid_dataset_name(value: object) -> InvalidPathParameterError:
    message = (
        f"'{value}' is not a dataset name: 1 to 64 letters, digits, '_' or '-', "
        "starting with a letter or digit"
    )
    return InvalidPathParameterError(
        f"dataset: {message}", [ErrorDetail(field="dataset", message=message)]
    )


def invalid_version(value: object) -> InvalidPathParameterError:
    message = f"'{value}' is not a version: versions are positive integers"
    return InvalidPathParameterError(
        f"version: {message}", [ErrorDetail(field="version", message=message)]
    )


def invalid_request(
    errors: Sequence[Any], describe: Callable[[Any], str] | None = None
) -> InvalidRequestError:
    """A body that is a JSON object but not a valid request, from pydantic's errors (``loc``
    relative to the body); ``describe`` words one error (default: as a predict request)."""
    describe = describe or _body_message
    details = [
        ErrorDetail(field=_field(e["loc"]), message=describe(e)) for e in errors[:MAX_DETAILS]
    ]
    return InvalidRequestError(summary(details, len(errors)), details)


def summary(details: Sequence[ErrorDetail], total: int) -> str:
    """The ``error`` string of a refusal with several details: the first, and a count of the
    rest (``total`` may exceed the details listed)."""
    more = f" (and {total - 1} more)" if total > 1 else ""
    return f"{details[0].field}: {details[0].message}{more}"


def _body_message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required"
    if kind == "too_short":
        return "must hold at least one instance"
    if kind == "list_type":
        return "must be a list of instances (objects of feature values)"
    if kind == "dict_type":
        return "must be an object of feature values"
    if kind == "extra_forbidden":
        return (
            "unknown field; a predict request holds only 'instances' (the row format), "
            "the columnar 'inputs' format and 'signature_name' are not supported"
        )
    return str(error.get("msg", kind))


def _field(loc: Sequence[str | int]) -> str:
    """``("instances", 3, "tenure")`` → ``instances[3].tenure``, as the client wrote it."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"
