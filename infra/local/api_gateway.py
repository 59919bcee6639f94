"""A local API Gateway: real HTTP on loopback, each request handed to a Lambda handler as the REST
proxy event API Gateway would send, the proxy response written back as HTTP.

Like API Gateway with an API key required, a request without the configured ``x-api-key`` gets
403 ``{"message": "Forbidden"}`` before the function runs (the key compared in constant time);
bodies over API Gateway's 10 MB payload limit get 413 without being read. A body the method's
request model refuses (``infra/request_models.py``, the one CDK deploys, checked as JSON Schema
draft-04) gets API Gateway's 400 ``{"message": "Invalid request body"}`` before the function
runs. A ``Content-Length`` that is not a decimal number gets 400 and the connection is closed
(where the body ends is unknown). A function that raises gets 502
``{"message": "Internal server error"}``, as API Gateway answers a failed Lambda invocation, and
the server keeps serving. Like API Gateway, every response the function gives carries the
event's ``requestContext.requestId`` in ``x-amzn-RequestId``.

With an ``ssl_context`` (e.g. ``local_certificate(...).server_context()`` from
:mod:`infra.local.tls`) it serves HTTPS instead. Each connection's TLS handshake happens in that
connection's own thread, so a client that stalls, fails verification or speaks plain HTTP fails
only itself; a plain-HTTP request gets a 400 naming the ``https://`` URL to use.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import ssl
import sys
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft4Validator

from infra.local.apigw import read_response, rest_event
from infra.request_models import INVALID_BODY_MESSAGE, REQUEST_MODELS, RequestModel

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
REQUEST_ID_HEADER = "x-amzn-RequestId"
HANDSHAKE_SECONDS = 10.0
_TLS_HANDSHAKE_RECORD = b"\x16"  # the first byte a TLS client sends
_CONTENT_LENGTH = re.compile(r"[0-9]+")  # RFC 9110: 1*DIGIT, nothing else
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
_log = logging.getLogger(__name__)


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
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._server = _Server(
            (host, port), _request_handler(handler, context, api_key), ssl_context
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return self._server.url

    def __enter__(self) -> LocalApiGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Server(ThreadingHTTPServer):
    """One thread per connection; with a TLS context, each thread does its own handshake."""

    daemon_threads = True
    # socketserver listens with a backlog of 5: clients connecting together beyond that are
    # reset (Linux) or retried a second later. The kernel caps this at net.core.somaxconn.
    request_queue_size = socket.SOMAXCONN

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[BaseHTTPRequestHandler],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.ssl_context = ssl_context
        super().__init__(address, handler_class)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{host!s}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (``curl -f`` leaves on an error status and resets its keep-alive
        connection) is not the gateway's error: socketserver would print a traceback for it on
        ``sluice up``'s console."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's thread (the listening socket stays plain, so accepting
        never blocks on, or fails with, one client's handshake)."""
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        secure = self._handshake(request, self.ssl_context)
        if secure is None:
            return
        try:
            super().finish_request(secure, client_address)
        finally:
            self.shutdown_request(secure)

    def _handshake(
        self, connection: socket.socket, context: ssl.SSLContext
    ) -> ssl.SSLSocket | None:
        """The connection as TLS, or None (and the connection answered or dropped) if the client
        does not complete a handshake within ``HANDSHAKE_SECONDS``."""
        connection.settimeout(HANDSHAKE_SECONDS)
        try:
            first = connection.recv(1, socket.MSG_PEEK)
            if first != _TLS_HANDSHAKE_RECORD:
                if first:  # not TLS: most likely plain HTTP to an https:// port
                    self._refuse_plain_http(connection)
                return None
            secure = context.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        except OSError:
            return None
        try:
            secure.do_handshake()
        except OSError:  # ssl.SSLError (bad client, untrusted certificate), timeouts, resets
            secure.close()
            return None
        secure.settimeout(None)
        return secure

    def _refuse_plain_http(self, connection: socket.socket) -> None:
        body = json.dumps({"message": f"This endpoint serves HTTPS: use {self.url}"}).encode()
        head = (
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        # Read the request head first: closing with it unread would reset the connection,
        # and the client could lose the answer.
        connection.recv(65536)
        connection.sendall(head.encode() + body)


def _request_handler(
    handler: LambdaHandler, context: Callable[[], Any], api_key: str | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The head and the body are two writes: with Nagle's algorithm the body waits for the
        # client to acknowledge the head, which a keep-alive client delays by 40 ms.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            length = _content_length(self.headers.get_all("content-length") or [])
            if length is None:  # where the body ends is unknown: answer, then hang up
                self.close_connection = True
                body = json.dumps({"message": "Invalid Content-Length"}).encode()
                self._reply(400, {"content-type": "application/json"}, body)
                return
            if api_key is not None and not _same_key(headers.get("x-api-key"), api_key):
                self._drain(length)
                self._reply(403, {"content-type": "application/json"}, b'{"message":"Forbidden"}')
                return
            if length > MAX_PAYLOAD_BYTES:
                self.close_connection = True
                body = json.dumps({"message": "Request Too Long"}).encode()
                self._reply(413, {"content-type": "application/json"}, body)
                return
            raw = self.rfile.read(length) if length else None
            target = urlsplit(self.path)
            if not _body_accepted(self.command, target.path, headers.get("content-type"), raw):
                body = json.dumps({"message": INVALID_BODY_MESSAGE}).encode()
                self._reply(400, _gateway_error_headers("BadRequestException"), body)
                return
            event = rest_event(
                self.command,
                target.path,
                body=raw,
                headers=dict(self.headers.items()),
                query=target.query,
                source_ip=self.client_address[0],
                api_key=headers.get("x-api-key"),
            )
            try:
                response = read_response(handler(event, context()))
            except Exception:  # API Gateway's answer to a Lambda invocation that failed
                _log.exception("the function raised; answering 502")
                body = json.dumps({"message": "Internal server error"}).encode()
                self._reply(502, {"content-type": "application/json"}, body)
                return
            reply_headers = {
                name: value
                for name, value in response.headers.items()
                if name != REQUEST_ID_HEADER.lower()
            }
            reply_headers[REQUEST_ID_HEADER] = event["requestContext"]["requestId"]
            self._reply(response.status, reply_headers, response.body)

        def _drain(self, length: int) -> None:
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
            if self.command != "HEAD":  # a HEAD answer has the GET answer's head, never a body
                self.wfile.write(body)

        # http.server dispatches on these names.
        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the function's own structured logs say what happened."""

    return Handler


def _content_length(values: list[str]) -> int | None:
    """The body's length from the ``Content-Length`` headers: 0 without one, None unless every
    one is the same decimal number (not negative, signed, hexadecimal, a list, empty; two that
    differ are how requests are smuggled past a proxy). ``int()`` alone would take ``-5``, ``+5``
    or ``5_0``, and ``rfile.read(-5)`` reads until the client hangs up."""
    lengths = {value.strip() for value in values}
    if not lengths:
        return 0
    if len(lengths) > 1:
        return None
    (value,) = lengths
    if not _CONTENT_LENGTH.fullmatch(value):
        return None
    # int() refuses over 4300 digits; 13 significant digits already say "over any limit".
    return int(value.lstrip("0")[:13] or "0")


def _gateway_error_headers(error_type: str) -> dict[str, str]:
    """The headers API Gateway puts on an answer it gives itself instead of the function's."""
    return {
        "content-type": "application/json",
        REQUEST_ID_HEADER: str(uuid.uuid4()),
        "x-amzn-ErrorType": error_type,
    }


def _body_accepted(method: str, path: str, content_type: str | None, raw: bytes | None) -> bool:
    """Whether API Gateway's request validation lets the body through to the function.

    Only a method with a request model for the request's media type is validated (API Gateway
    validates nothing else; a request without ``Content-Type`` is taken as ``application/json``).
    The body must be UTF-8 JSON that the model's draft-04 schema accepts; none, or JSON nested
    deeper than the parser's stack, is refused like any other invalid body.
    """
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    names = [
        model.name
        for model in REQUEST_MODELS
        if model.applies_to(method, path) and model.content_type == media_type
    ]
    if not names:
        return True
    try:
        document = json.loads((raw or b"").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return all(_VALIDATORS[name].is_valid(document) for name in names)


def _draft4_validator(model: RequestModel) -> Draft4Validator:
    Draft4Validator.check_schema(model.schema)  # a model API Gateway would refuse to create
    return Draft4Validator(model.schema)


_VALIDATORS = {model.name: _draft4_validator(model) for model in REQUEST_MODELS}


def _same_key(sent: str | None, expected: str) -> bool:
    """The request's ``x-api-key`` against the configured key, in time independent of where they
    differ. As bytes: ``hmac.compare_digest`` refuses ``str`` with non-ASCII characters, which a
    header may hold."""
    if sent is None:
        return False
    return hmac.compare_digest(
        sent.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )
