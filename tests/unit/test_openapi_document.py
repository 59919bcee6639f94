"""docs/openapi.json is the document the API serves, so that an API change is a visible diff.

The document is fetched as the other API tests fetch it (``GET /v1/openapi.json`` through the
function's resolver, over fakes); ``make openapi`` (``python -m infra.openapi``) rewrites the file.
"""

from __future__ import annotations

import json

import pytest

from infra.openapi import DOCUMENT, main, render, served
from tests.unit.test_inference import Api

REGENERATE = "docs/openapi.json is not the served document: run `make openapi` and commit it"


def test_the_committed_document_is_the_served_one() -> None:
    # Given the committed file
    committed = json.loads(DOCUMENT.read_text(encoding="utf-8"))

    # When a client fetches the document
    reply = Api().call("GET", "/v1/openapi.json")

    # Then it is the committed one
    assert reply.status == 200
    assert reply.body == committed, REGENERATE


def test_the_committed_file_is_in_its_canonical_form() -> None:
    # keys sorted, indent 2, a trailing newline: the same API always gives the same bytes
    text = DOCUMENT.read_text(encoding="utf-8")
    assert text == render(json.loads(text))
    assert text.endswith("}\n")


def test_the_generator_reads_what_a_client_reads() -> None:
    # make openapi writes what the route answers, not a document built some other way
    assert served() == Api().call("GET", "/v1/openapi.json").body


def test_the_check_passes_on_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    # `python -m infra.openapi --check` compares only: 0 on the committed file, which it leaves
    before = DOCUMENT.read_bytes()
    assert main(["--check"]) == 0
    assert "matches" in capsys.readouterr().out
    assert DOCUMENT.read_bytes() == before
