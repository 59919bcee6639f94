"""The console's HTTP server: stdlib ``http.server`` (as the local API gateway), GET and HEAD only.

Routes (every path parameter is checked before anything is read; an unknown or malformed one is
a 404 page naming what was not found; any other method is 405):

- ``/``: the datasets, each with its live version and that version's metric;
- ``/datasets/<dataset>``: its model versions and the audit trail of promotions and rollbacks;
- ``/datasets/<dataset>/versions/<n>``: one version; ``…/report``: its stored model report page;
- ``/datasets/<dataset>/runs`` and ``/runs``: the runs; ``/runs/<name>``: one run;
- ``/datasets/<dataset>/drift``: the drift and quality series; ``…/drift/<minute>``: a report;
- ``/datasets/<dataset>/retraining``: the retrain guard's decisions.

Pages hold user data (names, labels, reasons) and the stored reports are served as they are, so
every answer carries a Content-Security-Policy that allows no script and no fetch at all.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from functions.shared.layout import DATASET_NAME
from infra.console import pages
from infra.console.read_model import DRIFT_STAMP, ConsoleData, NotFoundError

DEFAULT_PORT = 8090
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
VERSION = re.compile(r"^[1-9][0-9]{0,8}$")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class _NoPageError(Exception):
    """A path the console does not serve, or a parameter that names nothing."""


Page = tuple[int, bytes]


class Console:
    """``with Console(data, host, port) as console: console.url`` serves until the block ends."""

    def __init__(self, data: ConsoleData, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data = data
        self._server = _Server((host, port), _handler(self.render))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> Console:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Console:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def render(self, path: str) -> Page:
        """The status and the page for a GET of ``path``."""
        where = self.data.where
        try:
            return 200, self._route([unquote(p) for p in path.strip("/").split("/") if p])
        except (_NoPageError, NotFoundError) as exc:
            return 404, pages.error_page(404, str(exc) or f"nothing at {path}", where=where)
        except Exception as exc:  # the deployment unreachable, a corrupt record: one line
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            return 500, pages.error_page(500, f"reading {where} failed: {message}", where=where)

    def _route(self, parts: list[str]) -> bytes:
        data, where = self.data, self.data.where
        match parts:
            case []:
                return pages.index_page(data.datasets(), where=where)
            case ["runs"]:
                return pages.runs_page(data.runs(), dataset=None, where=where, note=self._note())
            case ["runs", name]:
                run = data.run(_checked(name, RUN_NAME, "run"))
                return pages.run_page(run, self._version_of(run), where=where)
            case ["datasets", dataset, *rest]:
                dataset = _checked(dataset, DATASET_NAME, "dataset")
                return self._dataset(dataset, rest)
        raise _NoPageError(f"the console has no page at /{'/'.join(parts)}")

    def _dataset(self, dataset: str, rest: list[str]) -> bytes:
        data, where = self.data, self.data.where
        match rest:
            case []:
                versions, live = data.dataset(dataset)
                return pages.dataset_page(dataset, versions, live, data.audit(dataset), where=where)
            case ["versions", number]:
                version = int(_checked(number, VERSION, f"model version of '{dataset}'"))
                return pages.version_page(dataset, data.version(dataset, version), where=where)
            case ["versions", number, "report"]:
                version = int(_checked(number, VERSION, f"model version of '{dataset}'"))
                return data.report_page(dataset, version)
            case ["runs"]:
                runs = data.runs(dataset)
                return pages.runs_page(runs, dataset=dataset, where=where, note=self._note())
            case ["drift"]:
                return pages.drift_page(
                    dataset, data.drift(dataset), data.quality(dataset), where=where
                )
            case ["drift", stamp]:
                stamp = _checked(
                    stamp, re.compile(f"^{DRIFT_STAMP}$"), f"drift report of '{dataset}'"
                )
                return data.drift_page(dataset, stamp)
            case ["retraining"]:
                return pages.retraining_page(dataset, data.retraining(dataset), where=where)
        raise _NoPageError(f"the console has no page at /datasets/{dataset}/{'/'.join(rest)}")

    def _version_of(self, run: dict[str, Any]) -> Any:
        """The model version a run registered, if any (its gate verdict and reasons)."""
        dataset = run.get("dataset")
        if not isinstance(dataset, str):
            return None
        try:
            versions, _ = self.data.dataset(dataset)
        except NotFoundError:
            return None
        return next((v for v in versions if v.run_name == run.get("name")), None)

    def _note(self) -> str:
        return f"Runs recorded by {self.data.where}."


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise _NoPageError(f"no {what} named '{value}'")
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = socket.SOMAXCONN

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # a browser that hung up
            return
        super().handle_error(request, client_address)


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def _loopback_host(host: str) -> bool:
    """Whether a Host header names this machine by a loopback name (any port: the socket is
    bound to loopback, so the port is ours)."""
    return urlsplit(f"//{host.strip()}").hostname in LOOPBACK_NAMES


def _handler(render: Callable[[str], Page]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sluice-console"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer(*self._page(), body=True)

        def do_HEAD(self) -> None:
            self._answer(*self._page(), body=False)

        def _page(self) -> Page:
            """The page, for a request that names this console as its host. Any other Host is
            a page of another site whose name was re-pointed at 127.0.0.1 (DNS rebinding),
            which would otherwise read the console as same-origin: refused (421)."""
            host = self.headers.get("Host", "")
            if not _loopback_host(host):
                message = (
                    f"the console answers requests for 127.0.0.1 or localhost only, not {host!r}"
                )
                return 421, pages.error_page(421, message, where="this console")
            return render(urlsplit(self.path).path)

        def _refuse(self) -> None:
            message = f"the console is read-only: {self.command} is not allowed, only GET and HEAD"
            page = pages.error_page(405, message, where="this console")
            self._answer(405, page, body=True, allow=True)

        def __getattr__(self, name: str) -> Any:
            """``do_POST``, ``do_DELETE``, any method but GET and HEAD: refused (405)."""
            if name.startswith("do_"):
                return self._refuse
            raise AttributeError(name)

        def _answer(self, status: int, page: bytes, *, body: bool, allow: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            if allow:
                self.send_header("Allow", "GET, HEAD")
                self.send_header("Connection", "close")  # the request's body is left unread
                self.close_connection = True
            self.end_headers()
            if body:
                self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: ``sluice up``'s console holds its own lines only."""

    return Handler
