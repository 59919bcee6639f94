"""The operator-facing API answers over real HTTP: the real inference handler behind the local
API Gateway (an API key required), the registry in DynamoDB and the models in S3 under moto.

``GET /v1/models`` lists the live models; a body over 1 MiB for a 300-column model gets a 413
saying how many of its instances fit, and that many are served; a retired dataset answers 410.
Each answer is checked against the served OpenAPI document.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import requests
import schemathesis
from moto import mock_aws
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from functions.inference import api as inference_api
from functions.inference import handler as inference_handler
from functions.inference.models import MAX_BODY_BYTES
from functions.shared.registry_dynamodb import DynamoDBRegistry, create_table
from functions.shared.storage import S3ObjectStore
from infra.local.api_gateway import LocalApiGateway
from infra.local.context import LocalLambdaContext
from infra.topology import Topology
from tests.models import ARTIFACTS, TrainedModel, publish_live

TOPOLOGY = Topology(stage="ops")
API_KEY = "ops-key"
KEY = {"x-api-key": API_KEY}


@dataclass
class Served:
    url: str
    registry: DynamoDBRegistry
    wide: TrainedModel


@pytest.fixture(scope="module")
def served(trained_models: dict[str, TrainedModel], wide_model: TrainedModel) -> Iterator[Served]:
    """A 300-column model live as ``wide``, the binary one as ``binary``; the registry is read
    on every request (TTL 0), so a retirement shows at once."""
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name, value in TOPOLOGY.inference_environment().items():
            env.setenv(name, value)
        env.setenv("POWERTOOLS_METRICS_DISABLED", "true")
        env.setenv("MODEL_CACHE_TTL_SECONDS", "0")
        s3 = boto3.client("s3", region_name=TOPOLOGY.region)
        for bucket in {ARTIFACTS, TOPOLOGY.artifacts_bucket}:
            s3.create_bucket(Bucket=bucket)
        dynamodb = boto3.client("dynamodb", region_name=TOPOLOGY.region)
        create_table(dynamodb, TOPOLOGY.registry_table)
        registry = DynamoDBRegistry(dynamodb, TOPOLOGY.registry_table)
        store = S3ObjectStore(s3)
        publish_live(store, registry, wide_model, dataset="wide")
        publish_live(store, registry, trained_models["binary"], dataset="binary")
        inference_api.dependencies.cache_clear()
        inference_api.observers.cache_clear()
        context = LocalLambdaContext.for_function(TOPOLOGY, "inference")
        try:
            with LocalApiGateway(
                inference_handler.lambda_handler, lambda: context, api_key=API_KEY
            ) as gateway:
                yield Served(gateway.url, registry, wide_model)
        finally:
            inference_api.observers()[0].close()
            inference_api.dependencies.cache_clear()
            inference_api.observers.cache_clear()


def _send(served: Served, method: str, path: str, body: bytes | None = None) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        headers = {**KEY, "Content-Type": "application/json"}
        return session.request(method, served.url + path, data=body, headers=headers, timeout=30)


def _conforms(served: Served, reply: requests.Response, path: str, method: str) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/v1/openapi.json", headers=KEY)
    operation = schema[path][method]
    case = operation.Case(path_parameters={"dataset": "wide", "version": "1"})
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    case.validate_response(reply, checks=checks)


def _wide_rows(served: Served, n: int) -> list[dict[str, Any]]:
    names = [f.name for f in served.wide.card.features]
    row: dict[str, Any] = json.loads(
        served.wide.split("test").head(1)[names].to_json(orient="records")
    )[0]
    return [row] * n


def test_get_models_lists_the_live_models_over_http(served: Served) -> None:
    reply = _send(served, "GET", "/v1/models")
    assert reply.status_code == 200, reply.text
    listed = {m["dataset"]: m for m in reply.json()["models"]}
    assert set(listed) == {"binary", "wide"}
    assert listed["wide"]["model_version"] == "1"
    assert listed["wide"]["task"] == "classification"
    assert "s3://" not in reply.text
    _conforms(served, reply, "/v1/models", "GET")
    # and like every route it needs the key
    with requests.Session() as session:
        session.trust_env = False
        assert session.get(served.url + "/v1/models", timeout=30).status_code == 403


def test_a_413_for_a_wide_model_says_how_many_fit_and_that_many_are_served(
    served: Served,
) -> None:
    metadata = _send(served, "GET", "/v1/models/wide/metadata").json()
    fit = metadata["max_instances"]
    assert 0 < fit < 1000  # the instance limit is not what decides for 300 columns
    body = json.dumps({"instances": _wide_rows(served, 2 * fit)}).encode()
    assert len(body) > MAX_BODY_BYTES

    reply = _send(served, "POST", "/v1/models/wide:predict", body)

    assert reply.status_code == 413, reply.text
    answer = reply.json()
    assert (answer["code"], answer["max_instances"]) == ("payload_too_large", fit)
    assert f"at most {fit} instances fit" in answer["error"]
    _conforms(served, reply, "/v1/models/{dataset}:predict", "POST")
    within = json.dumps({"instances": _wide_rows(served, fit)}).encode()
    served_reply = _send(served, "POST", "/v1/models/wide:predict", within)
    assert served_reply.status_code == 200, served_reply.text
    assert len(served_reply.json()["predictions"]) == fit


def test_a_retired_dataset_answers_410_and_leaves_the_list(served: Served) -> None:
    served.registry.retire_dataset("binary", actor="cli:test", reason="closed")
    try:
        reply = _send(served, "GET", "/v1/models/binary")
        assert reply.status_code == 410, reply.text
        assert reply.json()["code"] == "model_retired"
        _conforms(served, reply, "/v1/models/{dataset}", "GET")
        listed = [m["dataset"] for m in _send(served, "GET", "/v1/models").json()["models"]]
        assert listed == ["wide"]
    finally:
        served.registry.unretire_dataset("binary", actor="cli:test", reason="test over")
    assert _send(served, "GET", "/v1/models/binary").status_code == 200
