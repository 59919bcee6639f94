"""The request model as CDK renders it: the same JSON Schema the local gateway applies.

``infra/request_models.py`` holds the schema as a dict; ``cdk_json_schema`` turns it into CDK's
``JsonSchema``. A keyword lost or renamed on the way would leave AWS and the local stack
validating different bodies, so the rendered template is compared with the dict itself.
"""

from __future__ import annotations

import os

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk.assertions import Template

from infra.aws.inference_api import cdk_json_schema
from infra.request_models import PREDICT_REQUEST, RequestModel

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def rendered(model: RequestModel) -> dict[str, object]:
    stack = Stack(App(), "Models")
    api = apigw.RestApi(stack, "Api")
    api.root.add_method("ANY")
    apigw.Model(
        stack,
        model.name,
        rest_api=api,
        content_type=model.content_type,
        schema=cdk_json_schema(model.schema),
    )
    [properties] = [
        resource["Properties"]
        for resource in Template.from_stack(stack).to_json()["Resources"].values()
        if resource["Type"] == "AWS::ApiGateway::Model"
    ]
    return properties  # type: ignore[no-any-return]


def test_cdk_renders_the_predict_model_as_the_schema_the_local_gateway_applies() -> None:
    properties = rendered(PREDICT_REQUEST)
    assert properties["Schema"] == PREDICT_REQUEST.schema
    assert properties["ContentType"] == "application/json"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "maxProperties": 3},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
    ],
    ids=["unmapped-keyword", "not-draft-04"],
)
def test_a_schema_cdk_cannot_render_faithfully_is_refused(schema: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="request model"):
        cdk_json_schema(schema)
