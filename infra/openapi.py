"""Write ``docs/openapi.json``, the prediction API's OpenAPI document as the API serves it.

The document is committed so that a change to the API (a route, a parameter, a response model)
shows as a diff in review. ``python -m infra.openapi`` (``make openapi``) asks the inference
function's resolver for ``GET /v1/openapi.json``, exactly as a client would, and rewrites the
file: keys sorted, indented by 2, a trailing newline, so that the same API gives the same bytes.
``--check`` exits 1 when the committed file differs. ``tests/unit/test_openapi_document.py``
holds the served document and the committed file equal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from functions.inference.api import OPENAPI

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"

# The least of an API Gateway (REST, proxy) event the resolver needs to route a GET.
_EVENT: dict[str, Any] = {
    "resource": "/{proxy+}",
    "path": OPENAPI,
    "httpMethod": "GET",
    "headers": {"Accept": "application/json"},
    "multiValueHeaders": {"Accept": ["application/json"]},
    "queryStringParameters": None,
    "multiValueQueryStringParameters": None,
    "pathParameters": {"proxy": OPENAPI.lstrip("/")},
    "stageVariables": None,
    "requestContext": {"requestId": "openapi", "stage": "v1", "httpMethod": "GET"},
    "body": None,
    "isBase64Encoded": False,
}


def _no_deps() -> Any:
    raise RuntimeError("the OpenAPI document reads no settings, model cache or store")


def served() -> dict[str, Any]:
    """The document ``GET /v1/openapi.json`` answers, through the function's own resolver."""
    from functions.inference.routes import create_app

    response = create_app(_no_deps).resolve(dict(_EVENT), None)  # type: ignore[arg-type]
    if response["statusCode"] != 200:
        raise RuntimeError(f"GET {OPENAPI} answered {response['statusCode']}: {response['body']}")
    document: dict[str, Any] = json.loads(response["body"])
    return document


def render(document: dict[str, Any]) -> str:
    """The committed file's text: the same document always gives the same bytes."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.openapi", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/openapi.json is out of date"
    )
    args = parser.parse_args(argv)
    text = render(served())
    if args.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text(encoding="utf-8") != text:
            print(f"{DOCUMENT} is not the served document: run `make openapi`", file=sys.stderr)
            return 1
        print(f"{DOCUMENT} matches the served document")
        return 0
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
