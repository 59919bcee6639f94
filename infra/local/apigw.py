"""HTTP requests as API Gateway REST proxy events, and proxy responses back, for the local stack.

The inference function is written for ``APIGatewayRestResolver``; running it on one machine means
building the event API Gateway would send (``events/predict.apigw_rest.json`` is a real one) and
reading the proxy response it returns.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from infra.topology import LOCAL_ACCOUNT

STAGE = "local"


def rest_event(
    method: str,
    path: str,
    *,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    query: str = "",
    source_ip: str = "127.0.0.1",
    api_key: str | None = None,
) -> dict[str, Any]:
    """The REST (v1) proxy event for one request to ``/{proxy+}``."""
    header_map = dict(headers or {})
    raw = body.encode() if isinstance(body, str) else body
    is_text = raw is None or _is_text(raw)
    pairs = parse_qsl(query, keep_blank_values=True)
    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method.upper(),
        "headers": header_map or None,
        "multiValueHeaders": {k: [v] for k, v in header_map.items()} or None,
        "queryStringParameters": dict(pairs) or None,
        "multiValueQueryStringParameters": _multi(pairs) or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": "/{proxy+}",
            "httpMethod": method.upper(),
            "extendedRequestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{STAGE}{path}",
            "accountId": LOCAL_ACCOUNT,
            "protocol": "HTTP/1.1",
            "stage": STAGE,
            "domainPrefix": "localhost",
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id,
            "identity": {
                "sourceIp": source_ip,
                "userAgent": header_map.get("user-agent"),
                "apiKey": api_key,
            },
            "domainName": "localhost",
            "apiId": "local",
        },
        "body": None
        if raw is None
        else (raw.decode() if is_text else base64.b64encode(raw).decode()),
        "isBase64Encoded": not is_text,
    }


@dataclass(frozen=True)
class ProxyResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(response: Mapping[str, Any]) -> ProxyResponse:
    """A proxy integration response as API Gateway would turn it into HTTP."""
    headers = {str(k).lower(): str(v) for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[str(name).lower()] = ", ".join(str(v) for v in values)
    body = response.get("body") or ""
    raw = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()
    return ProxyResponse(status=int(response["statusCode"]), headers=headers, body=raw)


def _is_text(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped
