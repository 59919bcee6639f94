"""A local API Gateway: real HTTP on loopback, each request handed to a Lambda handler as the REST
proxy event API Gateway would send, the proxy response written back as HTTP.

Like API Gateway with an API key required, a request without the configured ``x-api-key`` gets
403 ``{"message": "Forbidden"}`` before the function runs; bodies over API Gateway's 10 MB
payload limit get 413 without being read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from infra.local.apigw import read_response, rest_event

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


class LocalApiGateway:
    """``with LocalApiGateway(handler, context_factory) as gateway: gateway.url``."""

    def __init__(
        self,
        handler: LambdaHandler,
        context: Callable[[], Any],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        self._server = ThreadingHTTPServer(
            (host, port), _request_handler(handler, context, api_key)
        )
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> LocalApiGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _request_handler(
    handler: LambdaHandler, context: Callable[[], Any], api_key: str | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            if api_key is not None and headers.get("x-api-key") != api_key:
                self._drain(headers)
                self._reply(403, {"content-type": "application/json"}, b'{"message":"Forbidden"}')
                return
            length = int(headers.get("content-length") or 0)
            if length > MAX_PAYLOAD_BYTES:
                self.close_connection = True
                body = json.dumps({"message": "Request Too Long"}).encode()
                self._reply(413, {"content-type": "application/json"}, body)
                return
            raw = self.rfile.read(length) if length else None
            target = urlsplit(self.path)
            event = rest_event(
                self.command,
                target.path,
                body=raw,
                headers=dict(self.headers.items()),
                query=target.query,
                source_ip=self.client_address[0],
                api_key=headers.get("x-api-key"),
            )
            response = read_response(handler(event, context()))
            self._reply(response.status, response.headers, response.body)

        def _drain(self, headers: dict[str, str]) -> None:
            length = int(headers.get("content-length") or 0)
            if 0 < length <= MAX_PAYLOAD_BYTES:
                self.rfile.read(length)
            elif length:
                self.close_connection = True

        def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name not in ("content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        # http.server dispatches on these names.
        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the function's own structured logs say what happened."""

    return Handler
