"""The prediction API's routed requests: every route but the live predict, the OpenAPI document,
and the resolver's error mapping.

Imported on the first request that is not a live predict (``handler.routed_app``), not at cold
start: the route signatures need Powertools' OpenAPI parameter models and the document needs
the request models' JSON schemas, ≈ 50 ms of imports and schema building that the hot path never
uses (docs/decisions.md, "Cold start").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel

from functions.inference import logic
from functions.inference.api import (
    API_TITLE,
    API_VERSION,
    EXPLAIN,
    FEEDBACK,
    METADATA,
    MODELS,
    OPENAPI,
    PREDICT,
    PREDICT_PATH,
    SERVED_VERSION_HEADER,
    STATUS,
    VERSION_PREDICT,
    VERSION_STATUS,
    Deps,
    allowed_methods,
    count_error,
    explain_request_for,
    gateway_request_id,
    predict_request_for,
    predict_response,
    request_body,
    request_header,
)
from functions.inference.errors import ErrorResponse, RequestFacts, error_response
from functions.inference.feedback import (
    FeedbackRequest,
    FeedbackResponse,
    parse_feedback_request,
    record_feedback,
)
from functions.inference.models import (
    VERSION,
    ExplainRequest,
    ExplainResponse,
    MetadataResponse,
    ModelListResponse,
    ModelStatusResponse,
    PredictRequest,
    PredictResponse,
    parse_dataset,
    parse_version,
)
from functions.shared.layout import DATASET_NAME

Dataset = Annotated[
    str,
    Path(pattern=DATASET_NAME.pattern, description="Dataset name, as in the raw bucket prefix."),
]
Version = Annotated[str, Path(pattern=VERSION.pattern, description="Model version number.")]


def create_app(deps: Callable[[], Deps]) -> APIGatewayRestResolver:
    """The prediction API, its routes reading settings and the model cache from ``deps``.

    Production passes the cached ``api.dependencies``, unit tests pass fakes. A factory rather than
    Powertools' ``Depends``, which rebuilds its dependency tree (``get_type_hints``) on every
    request: 70 µs per dependency, five times the model's run on one row.
    """
    app = APIGatewayRestResolver(enable_validation=True)

    def predict_request(dataset: str, version: int | None) -> PredictRequest:
        return predict_request_for(deps(), dataset, version, app.current_event)

    # The predict routes check their path and body themselves (models.parse_*), against the same
    # patterns and model the OpenAPI document shows: Powertools' validation middleware costs
    # ~100 µs a request, seven times the model's own run on one row (see parse_predict_request).
    @app.post(
        PREDICT,
        summary="Predict with the live model",
        responses={
            **_ok("Predictions", PredictResponse),
            **_errors(400, 404, 410, 413, 415, 422, 503, body_model=True),
        },
        openapi_extensions=_PREDICT_BODY,
        enable_validation=False,
    )
    def predict(dataset: Dataset) -> Response[str]:
        rid = gateway_request_id(app.current_event)
        name = parse_dataset(dataset)
        return predict_response(deps(), name, None, predict_request(name, None), rid)

    @app.post(
        VERSION_PREDICT,
        summary="Predict with one version: live, retired or candidate",
        responses={
            **_ok("Predictions", PredictResponse),
            **_errors(400, 404, 410, 413, 415, 422, 503, body_model=True),
        },
        openapi_extensions=_PREDICT_BODY,
        enable_validation=False,
    )
    def predict_version(dataset: Dataset, version: Version) -> Response[str]:
        name, pinned = parse_dataset(dataset), parse_version(version)
        rid = gateway_request_id(app.current_event)
        return predict_response(deps(), name, pinned, predict_request(name, pinned), rid)

    @app.post(
        EXPLAIN,
        summary="Predict with the live model and explain each prediction",
        description="The predict body, and optionally `classes` (`predicted` or `all`). Per "
        "instance: the prediction, a base value and one exact SHAP contribution per feature, "
        "adding up to the model's output (the value, its log for trees fitted on log(target), "
        "or the log-odds / logit, stated in `output`), with the prediction and probability "
        "alongside; with `classes: all`, one such explanation "
        "per class. Exact for linear and tree models; a blend's are its members' weighted sum. "
        "See docs/api.md.",
        responses={
            **_ok("Explained predictions", ExplainResponse),
            **_errors(400, 404, 410, 413, 415, 422, 503, body_model=True),
        },
        openapi_extensions=_EXPLAIN_BODY,
        enable_validation=False,
    )
    def explain(dataset: Dataset) -> Response[str]:
        config, cache, _ = deps()
        name = parse_dataset(dataset)
        result = logic.explain(
            cache,
            name,
            None,
            explain_request_for(deps(), name, app.current_event),
            max_instances=config.MAX_INSTANCES,
            request_id=gateway_request_id(app.current_event),
        )
        return Response(
            status_code=200,
            content_type=content_types.APPLICATION_JSON,
            body=result.to_json(),
            headers={SERVED_VERSION_HEADER: result.model_version},
        )

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
            **_errors(400, 404, 410, 413, 415, 422, 503, body_model=True),
        },
        openapi_extensions=_FEEDBACK_BODY,
        enable_validation=False,
    )
    def feedback(dataset: Dataset) -> Response[str]:
        config, cache, store = deps()
        name = parse_dataset(dataset)
        event = app.current_event
        request = parse_feedback_request(request_body(event), request_header(event, "content-type"))
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
        MODELS,
        summary="Every dataset in service and its live version",
        description="Task, metric and promotion time of each live model; retired datasets and "
        "datasets with no live version yet are left out.",
        responses={**_ok("The live models, by dataset"), **_errors(503)},
    )
    def list_models() -> ModelListResponse:
        return logic.list_models(deps()[1])

    @app.get(
        STATUS,
        summary="State of the live version",
        responses={**_ok("The live version's state"), **_errors(400, 404, 410, 503)},
    )
    def model_status(dataset: Dataset) -> ModelStatusResponse:
        return logic.model_status(deps()[1], dataset)

    @app.get(
        VERSION_STATUS,
        summary="State of one version",
        responses={**_ok("The version's state"), **_errors(400, 404, 410, 503)},
    )
    def version_status(dataset: Dataset, version: Version) -> ModelStatusResponse:
        return logic.version_status(deps()[1], dataset, int(version))

    @app.get(
        METADATA,
        summary="What the model answering for the dataset expects and returns",
        responses={**_ok("Features, input schema, classes, metric"), **_errors(400, 404, 410, 503)},
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
            },
            **_errors(),
        },
    )
    def openapi_document() -> Response[str]:
        return Response(
            status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_json()
        )

    @cache
    def openapi_json() -> str:
        # Configured here, on the first request for the document, not at import: Powertools'
        # OpenAPI models (APIKey) cost ≈ 45 ms of every cold start (docs/decisions.md).
        from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

        app.configure_openapi(
            title=API_TITLE,
            version=API_VERSION,
            description="TensorFlow-Serving-shaped predictions from the models sluice trained, "
            "gated and promoted. See docs/api.md.",
            security_schemes={"apiKey": APIKey(name="x-api-key", in_=APIKeyIn.header)},
            security=[{"apiKey": []}],
        )
        document = json.loads(app.get_openapi_json_schema(title=API_TITLE, version=API_VERSION))
        return json.dumps(_without_powertools_errors(document))

    def on_error(exc: Exception) -> Response[str]:
        event = app.current_event
        facts = RequestFacts(event.http_method.upper(), allowed_methods(event.path))
        response = error_response(exc, facts)
        predicted = PREDICT_PATH.match(event.path or "")
        if predicted is not None and event.http_method.upper() == "POST":
            count_error(predicted.group(1), response.status_code)
        return response

    # Every exception, Powertools' NotFoundError (no route) and RequestValidationError included:
    # handlers are looked up along the exception's MRO, so this one replaces all the defaults.
    app.exception_handler(Exception)(on_error)
    return app


# The predict routes' body in the OpenAPI document: they parse it themselves (see above).
_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {content_types.APPLICATION_JSON: {"schema": PredictRequest.model_json_schema()}},
    }
}

_EXPLAIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {content_types.APPLICATION_JSON: {"schema": ExplainRequest.model_json_schema()}},
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


def _errors(*codes: int, body_model: bool = False) -> dict[int, OpenAPIResponse]:
    """The function's refusals ``codes``, in ``ErrorResponse``, and API Gateway's own 403; with
    ``body_model`` (a POST whose body API Gateway checks against the request model), its own 400
    too."""
    reasons = {
        400: "Malformed JSON body or path parameter",
        404: "Unknown dataset or version, no live model, or a version the gate rejected",
        410: "The dataset was retired by an operator and no longer serves",
        413: "Body over 1 MiB or more instances (or feedback items) than allowed; a body over "
        "API Gateway's 10 MB limit is refused by API Gateway itself, in its own format",
        415: "Content-Type is not application/json",
        422: "Instances do not match the model's features, feedback does not fit the model, "
        "or (explain) the model carries no explanation table",
        503: "The model cannot be loaded and no earlier model can answer, or feedback cannot "
        "be stored",
    }
    responses: dict[int, OpenAPIResponse] = {
        code: {
            "description": reasons[code],
            "content": {content_types.APPLICATION_JSON: {"model": ErrorResponse}},
        }
        for code in codes
    }
    if body_model:
        responses[400]["description"] += (
            "; a body that is not an object with at least one object in `instances` or in "
            "`feedback` is refused by API Gateway itself, in its own format "
            '(`{"message": "Invalid request body"}`)'
        )
        responses[400]["content"] = {
            content_types.APPLICATION_JSON: {
                "schema": {"anyOf": [{"$ref": _ERROR_RESPONSE_REF}, _GATEWAY_MESSAGE]}
            }
        }
    if 413 in responses:
        responses[413]["content"] = {
            content_types.APPLICATION_JSON: {
                "schema": {"anyOf": [{"$ref": _ERROR_RESPONSE_REF}, _GATEWAY_MESSAGE]}
            }
        }
    responses[403] = {
        "description": "No valid API key in x-api-key: refused by API Gateway before the function "
        "runs, in API Gateway's format",
        "content": {content_types.APPLICATION_JSON: {"schema": _GATEWAY_MESSAGE}},
    }
    return responses


# What API Gateway answers when it refuses a request itself (403 without a valid API key, 400 for
# a body its request model refuses, 413 over its 10 MB payload limit): ``{"message": "Forbidden"}``,
# not the function's ErrorResponse.
_GATEWAY_MESSAGE: dict[str, Any] = {
    "type": "object",
    "title": "GatewayMessage",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
}
_ERROR_RESPONSE_REF = "#/components/schemas/ErrorResponse"


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
