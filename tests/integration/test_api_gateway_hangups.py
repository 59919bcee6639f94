"""A client that hangs up on the local API Gateway (``curl -f`` leaving on an error status, a
keep-alive connection reset) is the client's business: ``sluice up``'s console shows no
traceback for it."""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any

import pytest

from infra.local.api_gateway import LocalApiGateway


def not_found(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = json.dumps({"error": "no model", "code": "model_not_found"})
    return {"statusCode": 404, "headers": {"content-type": "application/json"}, "body": body}


def test_a_client_resetting_its_connection_leaves_no_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with LocalApiGateway(not_found, lambda: None) as gateway:
        host, port = gateway.url.removeprefix("http://").split(":")
        # Given a keep-alive request answered with a 404
        client = socket.create_connection((host, int(port)), timeout=5)
        client.sendall(f"GET /v1/models/churn HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert client.recv(4096).startswith(b"HTTP/1.1 404")
        # When the client resets the connection instead of sending its next request
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        time.sleep(0.5)  # the server's connection thread reads the reset at once
        # Then nothing is printed: no "Exception occurred during processing of request"
        captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
