"""The request model API Gateway applies to prediction bodies: one definition, deployed by CDK
(``infra/aws/inference_api.py``) and applied by the local gateway (``infra/local/api_gateway.py``).

One POST method serves ``:predict``, ``:explain`` and ``:feedback`` (the proxy resource
``/v1/models/{proxy+}``: TF Serving's ``name:verb`` paths cannot be API Gateway path parts), so
its model takes either body: an object with at least one object in ``instances`` or in
``feedback``. ``anyOf`` rather than ``oneOf``: a body with both keys reaches the function, whose
422 names the key at fault where API Gateway would only say "Invalid request body".

The schema is JSON Schema draft-04, the only draft API Gateway models use, written with the
keywords CDK's ``JsonSchema`` renders (``infra.aws.inference_api.cdk_json_schema``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DRAFT4 = "http://json-schema.org/draft-04/schema#"
# API Gateway's answer to a body its model refuses (a 400 gateway response, BAD_REQUEST_BODY).
INVALID_BODY_MESSAGE = "Invalid request body"


def _non_empty_list_of_objects(key: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"type": "array", "minItems": 1, "items": {"type": "object"}}},
    }


@dataclass(frozen=True)
class RequestModel:
    """A method's body model: which requests API Gateway checks, and against what.

    Attributes
    ----------
    name : str
        The model's construct id in the CDK app.
    method : str
        The HTTP method it is attached to.
    resource : str
        The API Gateway resource path (``{name}`` one path part, ``{name+}`` one or more).
    content_type : str
        The request content type the model is keyed by; API Gateway validates no other.
    description : str
        The model's description in API Gateway.
    schema : Mapping
        The JSON Schema (draft-04).
    """

    name: str
    method: str
    resource: str
    content_type: str
    description: str
    schema: Mapping[str, Any]
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"(\{[A-Za-z0-9_]+\+?\})", self.resource)
        regex = "".join(
            (".+" if part.endswith("+}") else "[^/]+") if part.startswith("{") else re.escape(part)
            for part in parts
        )
        object.__setattr__(self, "_pattern", re.compile(regex))

    def applies_to(self, method: str, path: str) -> bool:
        """Whether a request to ``method path`` reaches the method this model is attached to."""
        return method.upper() == self.method and self._pattern.fullmatch(path) is not None


PREDICT_REQUEST = RequestModel(
    name="PredictRequest",
    method="POST",
    resource="/v1/models/{proxy+}",
    content_type="application/json",
    description='{"instances": [...]} or {"feedback": [...]}: at least one of either',
    schema={
        "$schema": DRAFT4,
        "type": "object",
        "anyOf": [_non_empty_list_of_objects("instances"), _non_empty_list_of_objects("feedback")],
    },
)

# Every body model the API deploys.
REQUEST_MODELS: tuple[RequestModel, ...] = (PREDICT_REQUEST,)
