"""Inference Lambda: API Gateway REST proxy events in, TF-Serving-shaped ONNX predictions out.

The live predict (``POST /v1/models/{dataset}:predict``, nearly every request) is served here
without the resolver; every other route is in ``routes``, whose resolver is built on the first
request that needs it. Both parse with the API models, make one call into ``logic`` and answer
through ``api.predict_response``; every exception, Powertools' own included, leaves through
``errors.error_response``. What both use (route table, settings, dependencies, request helpers)
is in ``api``, which imports neither.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.api_gateway import ResponseBuilder
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.inference import api
from functions.inference.errors import RequestFacts, error_response
from functions.inference.models import parse_dataset
from functions.shared.observability import logger, metrics, traced


@cache
def routed_app() -> APIGatewayRestResolver:
    """The resolver for every request but the live predict, built on the first such request."""
    from functions.inference.routes import create_app

    return create_app(api.dependencies)


# The hot route, matched before the resolver: the live-model predict is nearly every request.
_LIVE_PREDICT = re.compile(r"^/v1/models/([^/]+):predict$")


def _live_predict(event: dict[str, Any], dataset: str) -> dict[str, Any]:
    """``POST /v1/models/{dataset}:predict`` without the resolver's per-request machinery (route
    table scan, middleware stack, compression check over every header: ≈ 60 µs, four times the
    model's run on one row). Same parsing, same logic, same error mapping and the same response
    serialisation as the routed path; a test holds the two to identical responses."""
    proxy = APIGatewayProxyEvent(event)
    try:
        name, deps = parse_dataset(dataset), api.dependencies()
        request = api.predict_request_for(deps, name, None, proxy)
        response = api.predict_response(deps, name, None, request, api.gateway_request_id(event))
    except Exception as exc:  # mapped exactly as the resolver's exception handler maps it
        response = error_response(exc, RequestFacts("POST", api.allowed_methods(proxy.path)))
        api.count_error(dataset, response.status_code)
    return ResponseBuilder[APIGatewayProxyEvent](response).build(proxy)


@logger.inject_lambda_context
@metrics.log_metrics
@traced
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The API Gateway request id as correlation id, read directly: the decorator's
    # correlation_id_path evaluates a JMESPath expression on every request (≈ 20 µs).
    request = event.get("requestContext")
    logger.set_correlation_id(request.get("requestId") if isinstance(request, dict) else None)
    capture, serving = api.observers()
    capture.maybe_flush_async()  # the flusher thread was frozen between invocations
    serving.maybe_flush()
    if event.get("httpMethod") == "POST":
        hot = _LIVE_PREDICT.match(event.get("path") or "")
        if hot is not None:
            return _live_predict(event, hot.group(1))
    return routed_app().resolve(event, context)
