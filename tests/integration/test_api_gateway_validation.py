"""The local gateway validates POST bodies as API Gateway does with the model CDK deploys.

``infra/request_models.py`` is the one model: CDK attaches it to ``POST /v1/models/{proxy+}``
with a body validator, and the local gateway applies the same draft-04 schema. A body it refuses
gets API Gateway's 400 ``{"message": "Invalid request body"}`` and never reaches the function;
a request API Gateway would not validate (another method or path, another content type) does.
Real HTTP on loopback; the function is a recorder, since the gateway is what is under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from infra.local.api_gateway import REQUEST_ID_HEADER, LocalApiGateway
from infra.request_models import PREDICT_REQUEST

PREDICT = "/v1/models/churn:predict"
FEEDBACK = "/v1/models/churn:feedback"
JSON = {"Content-Type": "application/json"}


class Gateway:
    def __init__(self, url: str, calls: list[dict[str, Any]]) -> None:
        self.url = url
        self.calls = calls

    def send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None = None
    ) -> requests.Response:
        with requests.Session() as session:
            session.trust_env = False
            request = requests.Request(method, self.url + path, data=body, headers=headers or {})
            prepared = session.prepare_request(request)
            if headers is not None and "Content-Type" not in headers:
                prepared.headers.pop("Content-Type", None)
            return session.send(prepared, timeout=10)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    calls: list[dict[str, Any]] = []

    def function(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event)
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": "{}"}

    with LocalApiGateway(function, lambda: None) as served:
        yield Gateway(served.url, calls)


def refused_by_the_gateway(gateway: Gateway, reply: requests.Response, calls_before: int) -> bool:
    return (
        reply.status_code == 400
        and reply.json() == {"message": "Invalid request body"}
        and reply.headers["x-amzn-ErrorType"] == "BadRequestException"
        and bool(reply.headers[REQUEST_ID_HEADER])
        and len(gateway.calls) == calls_before
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"instances": []}',
        b'{"instances": [1, 2]}',
        b'{"instances": [{"a": 1}, "b"]}',
        b'{"instances": {"a": 1}}',
        b'{"feedback": []}',
        b'{"rows": [{"a": 1}]}',
        b'[{"a": 1}]',
        b'"instances"',
        b"null",
        b"not json",
        b'{"instances": [{"a": 1}]',
        b"",
        b"\xff\xfe{\x00}",
        b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=[
        "empty-object",
        "no-instances",
        "instances-not-objects",
        "one-instance-not-an-object",
        "instances-an-object",
        "no-feedback",
        "neither-key",
        "bare-list",
        "a-string",
        "null",
        "not-json",
        "truncated-json",
        "no-body",
        "not-utf-8",
        "nested-100000-deep",
    ],
)
def test_a_body_the_model_refuses_gets_api_gateways_400_and_never_reaches_the_function(
    gateway: Gateway, body: bytes
) -> None:
    calls = len(gateway.calls)
    reply = gateway.send("POST", PREDICT, body, JSON)
    assert refused_by_the_gateway(gateway, reply, calls), (reply.status_code, reply.text)


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        (PREDICT, {"instances": [{"a": 1}]}, JSON),
        (PREDICT, {"instances": [{}]}, JSON),  # the model's shape only: features are the function's
        (FEEDBACK, {"feedback": [{"request_id": "r", "actual": 1}]}, JSON),
        (PREDICT, {"instances": [{"a": 1}], "feedback": []}, JSON),  # anyOf: the function's 422
        (PREDICT, {"instances": [{"a": 1}], "signature_name": "x"}, JSON),  # other keys pass
        (PREDICT, {"instances": [{"a": 1}]}, {"Content-Type": "application/json; charset=utf-8"}),
        (PREDICT, {"instances": [{"a": 1}]}, {"Content-Type": "Application/JSON"}),
        ("/v1/models/churn/versions/2:predict", {"instances": [{"a": 1}]}, JSON),
    ],
    ids=[
        "instances",
        "an-empty-instance",
        "feedback",
        "both-keys",
        "extra-keys",
        "charset",
        "media-type-case",
        "version-path",
    ],
)
def test_a_body_the_model_accepts_reaches_the_function(
    gateway: Gateway, path: str, body: Any, headers: dict[str, str]
) -> None:
    calls = len(gateway.calls)
    reply = gateway.send("POST", path, json.dumps(body).encode(), headers)
    assert reply.status_code == 200, reply.text
    assert len(gateway.calls) == calls + 1
    assert json.loads(gateway.calls[-1]["body"]) == body


def test_a_request_without_content_type_is_validated_as_application_json(gateway: Gateway) -> None:
    # API Gateway takes a request without Content-Type as application/json
    calls = len(gateway.calls)
    refused = gateway.send("POST", PREDICT, b'{"instances": []}', {})
    assert refused_by_the_gateway(gateway, refused, calls)
    accepted = gateway.send("POST", PREDICT, b'{"instances": [{"a": 1}]}', {})
    assert accepted.status_code == 200 and len(gateway.calls) == calls + 1
    assert "content-type" not in {k.lower() for k in gateway.calls[-1]["headers"] or {}}


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", PREDICT, {"Content-Type": "text/plain"}),  # no model for it: the function's 415
        ("POST", PREDICT, {"Content-Type": "application/x-www-form-urlencoded"}),
        ("GET", "/v1/models/churn", JSON),  # GET has no model
        ("PUT", PREDICT, JSON),
        ("POST", "/v1/openapi.json", JSON),  # outside /v1/models/{proxy+}
    ],
    ids=["text-plain", "form", "get", "put", "other-resource"],
)
def test_a_request_api_gateway_does_not_validate_reaches_the_function_as_sent(
    gateway: Gateway, method: str, path: str, headers: dict[str, str]
) -> None:
    calls = len(gateway.calls)
    reply = gateway.send(method, path, b"not json", headers)
    assert reply.status_code == 200, reply.text
    assert len(gateway.calls) == calls + 1 and gateway.calls[-1]["body"] == "not json"


@pytest.mark.parametrize(
    ("method", "path", "applies"),
    [
        ("POST", "/v1/models/churn:predict", True),
        ("post", "/v1/models/churn/versions/3:predict", True),
        ("POST", "/v1/models/churn:feedback", True),
        ("POST", "/v1/models/", False),  # {proxy+} needs at least one character
        ("POST", "/v1/models", False),
        ("POST", "/v1/openapi.json", False),
        ("POST", "/v2/models/churn:predict", False),
        ("GET", "/v1/models/churn", False),
    ],
)
def test_the_model_applies_to_the_method_and_resource_cdk_attaches_it_to(
    method: str, path: str, applies: bool
) -> None:
    assert PREDICT_REQUEST.resource == "/v1/models/{proxy+}"
    assert PREDICT_REQUEST.applies_to(method, path) is applies
