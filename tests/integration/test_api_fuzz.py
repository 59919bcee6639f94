"""Schemathesis against the served prediction API: the real inference handler behind the local
API Gateway (real HTTP on loopback, an API key required), three trained models live in moto.

The OpenAPI document is read from ``GET /v1/openapi.json`` as a client would read it, and every
operation in it is fuzzed with positive and negative cases (over 1000 requests a run). Every
answer must be no 5xx, a documented status code, with the documented content type and a body
that matches the documented schema. Part of the cases are aimed at the live models (the dataset
named, valid instances, feedback in the right shape), so that the 200 and 202 answers are
checked too, not only the refusals. ``make soak`` runs ten times as many.

Then hostile HTTP, some of it as raw bytes on a socket: bodies over the gateway's 10 MB cap and
the function's 1 MiB limit (413), JSON nested 100 000 deep (400), other content types (415), a
``Content-Length`` that is negative or not a number (400, the server keeps serving), no key or a
wrong one (403, in constant time), HEAD, a client that hangs up mid-body, a function that raises
(502). The figures are in docs/reliability-parts/api.md.
"""

from __future__ import annotations

import hmac
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from functions.inference import api as inference_api
from functions.inference import handler as inference_handler
from functions.inference.models import MAX_BODY_BYTES
from functions.shared.contract import FeatureKind
from functions.shared.registry_dynamodb import DynamoDBRegistry, create_table
from functions.shared.storage import S3ObjectStore
from infra.local.api_gateway import MAX_PAYLOAD_BYTES, REQUEST_ID_HEADER, LocalApiGateway
from infra.local.context import LocalLambdaContext
from infra.topology import Topology
from tests.models import ARTIFACTS, TrainedModel, publish_live

TOPOLOGY = Topology(stage="fuzz")
API_KEY = "fuzz-key"
KEY = {"x-api-key": API_KEY}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Examples per operation, by path: over 1000 requests in all. The predict and feedback routes
# parse their bodies themselves, so they get the most.
EXAMPLES = {
    "/v1/models/{dataset}:predict": 400,
    "/v1/models/{dataset}/versions/{version}:predict": 250,
    "/v1/models/{dataset}:feedback": 250,
    "/v1/models/{dataset}:explain": 150,
    "/v1/models/{dataset}": 150,
    "/v1/models/{dataset}/versions/{version}": 150,
    "/v1/models/{dataset}/metadata": 150,
    "/v1/models": 50,
}
# ``GET /v1/openapi.json`` is the document's own location, which schemathesis leaves out of the
# operations it fuzzes; the loader's fetch of it is the test that it is served.
MIN_REQUESTS = 1000


@dataclass
class Served:
    """The local API in front of the real handler, and what is live behind it."""

    url: str
    models: dict[str, TrainedModel]  # by dataset name, each live at version 1
    versions: dict[str, list[int]]


@pytest.fixture(scope="module")
def served(trained_models: dict[str, TrainedModel]) -> Iterator[Served]:
    """Every trained model published and live, the binary one with a second version (a
    candidate) too; the inference handler behind a ``LocalApiGateway`` on loopback."""
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name, value in TOPOLOGY.inference_environment().items():
            env.setenv(name, value)
        env.setenv("POWERTOOLS_METRICS_DISABLED", "true")
        s3 = boto3.client("s3", region_name=TOPOLOGY.region)
        for bucket in {ARTIFACTS, TOPOLOGY.artifacts_bucket}:
            s3.create_bucket(Bucket=bucket)
        dynamodb = boto3.client("dynamodb", region_name=TOPOLOGY.region)
        create_table(dynamodb, TOPOLOGY.registry_table)
        registry = DynamoDBRegistry(dynamodb, TOPOLOGY.registry_table)
        store = S3ObjectStore(s3)
        models, versions = {}, {}
        for model in trained_models.values():
            dataset = model.card.dataset
            models[dataset] = model
            versions[dataset] = [publish_live(store, registry, model)]
        binary = trained_models["binary"]
        versions["binary"].append(
            publish_live(store, registry, binary, run_name="run-2", promote=False)
        )
        inference_api.dependencies.cache_clear()
        inference_api.observers.cache_clear()
        context = LocalLambdaContext.for_function(TOPOLOGY, "inference")
        try:
            with LocalApiGateway(
                inference_handler.lambda_handler, lambda: context, api_key=API_KEY
            ) as gateway:
                yield Served(gateway.url, models, versions)
        finally:
            inference_api.observers()[0].close()  # capture writes to moto, never beyond
            inference_api.dependencies.cache_clear()
            inference_api.observers.cache_clear()


@dataclass
class Tally:
    """What the fuzzer sent and what came back."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


def _session(tally: Tally) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment between the test and loopback

    def count(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        tally.statuses[(str(response.request.method), response.status_code)] += 1

    session.hooks["response"].append(count)
    return session


def _instance(model: TrainedModel) -> st.SearchStrategy[dict[str, Any]]:
    """One instance with exactly the model's features: any JSON value a feature may take,
    extreme numbers and odd strings included, so the model itself is fuzzed."""
    numeric = st.one_of(
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.integers(min_value=-(2**63), max_value=2**63),
    )
    categorical = st.one_of(st.none(), st.text(max_size=20), st.integers(), st.booleans())
    return st.fixed_dictionaries(
        {
            f.name: numeric if f.kind is FeatureKind.NUMERIC else categorical
            for f in model.card.features
        }
    )


def _feedback(model: TrainedModel) -> st.SearchStrategy[dict[str, Any]]:
    """Feedback the model takes: one of its classes, or a finite number for a regressor (the
    positive and negative cases schemathesis generates bring the ``actual`` it refuses)."""
    classes = model.card.classes
    actual = (
        st.sampled_from(classes)
        if classes
        else st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers())
    )
    item = st.fixed_dictionaries(
        {"request_id": st.text(min_size=1, max_size=40), "actual": actual},
        optional={"index": st.integers(min_value=0, max_value=2000)},
    )
    return st.fixed_dictionaries({"feedback": st.lists(item, min_size=1, max_size=5)})


def _aim(case: Case[Any], data: st.DataObject, served: Served) -> None:
    """Point some of the generated cases at a live model, and some of those at a body it
    accepts: random dataset names only ever meet a 404."""
    if "dataset" not in (case.path_parameters or {}):
        return
    dataset = data.draw(st.sampled_from([None, *served.models]), label="live dataset")
    if dataset is None:
        return
    assert case.path_parameters is not None
    case.path_parameters["dataset"] = dataset
    if "version" in case.path_parameters:
        known = [str(v) for v in served.versions[dataset]]
        case.path_parameters["version"] = data.draw(
            st.sampled_from([*known, "7", case.path_parameters["version"]]), label="version"
        )
    if case.method != "POST" or not data.draw(st.booleans(), label="valid body"):
        return
    model = served.models[dataset]
    if case.path.endswith(":feedback"):
        case.body = data.draw(_feedback(model), label="feedback")
    else:
        rows: list[Any] = data.draw(st.lists(_instance(model), min_size=1, max_size=8))
        case.body = {"instances": rows}
    case.media_type = "application/json"


def fuzz(served: Served, scale: int = 1) -> Tally:
    """Every operation of the document the API serves, ``scale`` times ``EXAMPLES`` cases each,
    positive and negative, each sent with the key and its answer checked with ``CHECKS``."""
    schema = schemathesis.openapi.from_url(f"{served.url}/v1/openapi.json", headers=KEY)
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results)  # every operation in the document could be read
    assert {op.path for op in operations} == set(EXAMPLES)
    tally = Tally()
    session = _session(tally)
    for operation in operations:
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        cases = st.one_of(*(operation.as_strategy(mode) for mode in modes))

        @settings(
            max_examples=EXAMPLES[operation.path] * scale,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases, data=st.data())
        def send(case: Case[Any], data: st.DataObject) -> None:
            _aim(case, data, served)
            tally.by_operation[case.operation.label] += 1
            case.call_and_validate(base_url=served.url, session=session, headers=KEY, checks=CHECKS)

        send()
    return tally


def _assert_clean(tally: Tally, minimum: int) -> None:
    assert tally.requests >= minimum
    assert not any(status >= 500 for _, status in tally.statuses)
    # and the success answers were fuzzed, not only the refusals
    assert {("POST", 200), ("POST", 202), ("GET", 200)} <= set(tally.statuses)


def _report(tally: Tally, seconds: float) -> None:
    print(  # the figures docs/reliability-parts/api.md quotes (pytest -s)
        f"\n{tally.requests} requests in {seconds:.1f} s over {len(tally.by_operation)} "
        f"operations; by operation {dict(tally.by_operation)}; "
        f"statuses {sorted(tally.statuses.items())}"
    )


def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_document(served: Served) -> None:
    # When every operation of the served document is fuzzed, over 1000 requests in all
    started = time.monotonic()
    tally = fuzz(served)
    _report(tally, time.monotonic() - started)

    # Then no answer was a 5xx, and every one was documented, with its content type and schema
    # (call_and_validate raised otherwise)
    _assert_clean(tally, MIN_REQUESTS)


@pytest.mark.soak
def test_a_ten_times_longer_fuzz_finds_nothing_either(served: Served) -> None:
    started = time.monotonic()
    tally = fuzz(served, scale=10)
    _report(tally, time.monotonic() - started)
    _assert_clean(tally, 10 * MIN_REQUESTS)


# --- hostile HTTP at the local gateway -----------------------------------------------------------

PREDICT_PATH = "/v1/models/binary:predict"
BODY_PATHS = (PREDICT_PATH, "/v1/models/binary/versions/1:predict", "/v1/models/binary:feedback")


def _rows(served: Served, n: int = 2) -> list[dict[str, Any]]:
    model = served.models["binary"]
    features = [f.name for f in model.card.features]
    rows: list[dict[str, Any]] = json.loads(
        model.split("test").head(n)[features].to_json(orient="records")
    )
    return rows


def _post(
    served: Served, path: str, body: bytes, headers: dict[str, str] | None = None
) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.post(
            served.url + path, data=body, headers={**KEY, **(headers or {})}, timeout=30
        )


def _raw(served: Served, request: bytes) -> bytes:
    """Bytes sent as they are on one connection; everything the server answers until it hangs
    up (a 10 s timeout fails the test: the server must neither hang nor leave it open)."""
    address = urlsplit(served.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def _head(method: str, path: str, *lines: str) -> bytes:
    text = "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *lines, "", ""])
    return text.encode()  # a non-ASCII header value as the UTF-8 bytes a client may send


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _still_serving(served: Served) -> None:
    reply = _post(served, PREDICT_PATH, json.dumps({"instances": _rows(served)}).encode())
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["predictions"]) == 2


def _conforms(served: Served, reply: requests.Response, path: str, method: str = "POST") -> None:
    """The answer is documented in the served OpenAPI document, content type and schema."""
    schema = schemathesis.openapi.from_url(f"{served.url}/v1/openapi.json", headers=KEY)
    operation = schema[path][method]
    dataset = urlsplit(reply.url).path.split("/")[3].split(":")[0]
    case = operation.Case(path_parameters={"dataset": dataset, "version": "1"})
    case.validate_response(reply, checks=CHECKS[1:])


def test_a_body_over_api_gateways_10_mb_gets_413_unread(served: Served) -> None:
    # When a request announces a body over the gateway's cap (API Gateway's 10 MB payload limit)
    answer = _raw(
        served,
        _head(
            "POST",
            PREDICT_PATH,
            f"x-api-key: {API_KEY}",
            "Content-Type: application/json",
            f"Content-Length: {MAX_PAYLOAD_BYTES + 1}",
        ),
    )
    # Then it is refused on the header, in API Gateway's format, and the connection closed
    assert _status(answer) == 413
    assert answer.endswith(b'{"message": "Request Too Long"}')
    _still_serving(served)


def test_a_body_over_the_functions_1_mib_gets_413_in_the_documented_format(
    served: Served,
) -> None:
    rows = _rows(served, 1) * 12_000  # ≈ 2 MiB of valid instances
    body = json.dumps({"instances": rows}).encode()
    assert MAX_BODY_BYTES < len(body) < MAX_PAYLOAD_BYTES
    for path in (PREDICT_PATH, "/v1/models/binary:feedback"):
        reply = _post(served, path, body)
        assert reply.status_code == 413 and reply.json()["code"] == "payload_too_large"
        _conforms(served, reply, path.replace("binary", "{dataset}"))
    _still_serving(served)


@pytest.mark.parametrize(
    "body",
    [
        '{"instances": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"instances": [' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "]}",
        "[" * 1_000_000,  # never closed
    ],
    ids=["100k nested lists", "100k nested objects", "1M open brackets"],
)
def test_deeply_nested_json_gets_400_and_the_server_keeps_serving(
    served: Served, body: str
) -> None:
    for path in (
        PREDICT_PATH,
        "/v1/models/binary/versions/1:predict",
        "/v1/models/binary:feedback",
    ):
        reply = _post(served, path, body.encode())
        # the gateway's request validation cannot parse it either: API Gateway's own 400
        assert reply.status_code == 400, reply.text
        assert reply.json() == {"message": "Invalid request body"}
    _still_serving(served)


def test_nesting_the_parser_takes_is_refused_as_a_bad_value(served: Served) -> None:
    # A value 150 lists deep parses, and is then no feature value and no feedback label
    deep = "[" * 150 + "1" + "]" * 150
    row = {**_rows(served, 1)[0], "num_0": "__deep__"}
    body = json.dumps({"instances": [row]}).replace('"__deep__"', deep)
    assert _post(served, PREDICT_PATH, body.encode()).status_code == 422
    feedback = '{"feedback": [{"request_id": "r", "actual": ' + deep + "}]}"
    assert _post(served, "/v1/models/binary:feedback", feedback.encode()).status_code == 422


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "application/json-patch+json",
        "",
    ],
)
def test_a_content_type_other_than_json_gets_415(served: Served, content_type: str) -> None:
    body = json.dumps({"instances": _rows(served)}).encode()
    for path in (
        PREDICT_PATH,
        "/v1/models/binary/versions/1:predict",
        "/v1/models/binary:feedback",
    ):
        reply = _post(served, path, body, {"Content-Type": content_type})
        assert reply.status_code == 415, (path, reply.text)
        assert reply.json()["code"] == "unsupported_media_type"
    _conforms(served, reply, "/v1/models/{dataset}:feedback")


def test_a_body_that_is_not_utf_8_gets_400(served: Served) -> None:
    # refused by the gateway's request validation, as API Gateway does, before the function
    reply = _post(served, PREDICT_PATH, b"\xff\xfe{\x00}", {"Content-Type": "application/json"})
    assert reply.status_code == 400 and reply.json() == {"message": "Invalid request body"}


@pytest.mark.parametrize(
    "length",
    ["-5", "-1", "abc", "+5", "0x10", "5_0", "1e3", "", "5, 5", "٥"],
)
def test_a_content_length_that_is_not_a_number_gets_400_and_the_server_keeps_serving(
    served: Served, length: str
) -> None:
    # When a request's Content-Length is negative, signed, not decimal or not a number at all
    answer = _raw(
        served,
        _head("POST", PREDICT_PATH, f"x-api-key: {API_KEY}", f"Content-Length: {length}") + b"{}",
    )
    # Then it gets a 400, the connection is closed (where its body ends is unknown)
    assert _status(answer) == 400, answer
    assert answer.endswith(b'{"message": "Invalid Content-Length"}')
    # and the next request is served
    _still_serving(served)


def test_two_content_lengths_that_differ_get_400(served: Served) -> None:
    request = _head(
        "POST", PREDICT_PATH, f"x-api-key: {API_KEY}", "Content-Length: 2", "Content-Length: 7"
    )
    assert _status(_raw(served, request + b"{}")) == 400


def test_a_client_that_hangs_up_mid_body_costs_the_server_nothing(served: Served) -> None:
    address = urlsplit(served.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(
            _head("POST", PREDICT_PATH, f"x-api-key: {API_KEY}", "Content-Length: 1000")
            + b'{"instances": ['
        )
    _still_serving(served)


@pytest.mark.parametrize(
    "key",
    [None, "", "wrong", API_KEY + "x", API_KEY[:-1], API_KEY.upper(), "ключ"],
    ids=["none", "empty", "wrong", "longer", "shorter", "case", "non-ascii"],
)
def test_a_request_without_the_key_gets_403_before_the_function(
    served: Served, key: str | None
) -> None:
    headers = [] if key is None else [f"x-api-key: {key}"]
    body = json.dumps({"instances": _rows(served)}).encode()
    answer = _raw(
        served,
        _head(
            "POST",
            PREDICT_PATH,
            *headers,
            f"Content-Length: {len(body)}",
            "Connection: close",
        )
        + body,
    )
    assert _status(answer) == 403
    assert answer.endswith(b'{"message":"Forbidden"}')
    assert REQUEST_ID_HEADER.encode() not in answer  # the function never ran
    _still_serving(served)


def test_the_403_is_in_the_served_document(served: Served) -> None:
    with requests.Session() as session:
        session.trust_env = False
        reply = session.get(f"{served.url}/v1/models/binary", timeout=10)
    assert reply.status_code == 403
    _conforms(served, reply, "/v1/models/{dataset}", "GET")


def test_the_key_is_compared_in_constant_time(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module the gateway calls into
    _still_serving(served)
    assert (API_KEY.encode(), API_KEY.encode()) in compared


def test_head_gets_the_get_answers_head_without_a_body(served: Served) -> None:
    answer = _raw(
        served, _head("HEAD", "/v1/models/binary", f"x-api-key: {API_KEY}", "Connection: close")
    )
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert _status(answer) == 405 and b"allow: get" in head.lower() and rest == b""
    _still_serving(served)


def test_a_function_that_raises_gets_502_and_the_gateway_keeps_serving() -> None:
    calls: list[str] = []

    def flaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event["path"])
        if event["path"] == "/boom":
            raise RuntimeError("a bug in the function")
        return {"statusCode": 200, "headers": {}, "body": "ok"}

    with LocalApiGateway(flaky, lambda: None) as gateway, requests.Session() as session:
        session.trust_env = False
        boom = session.get(gateway.url + "/boom", timeout=10)
        fine = session.get(gateway.url + "/fine", timeout=10)
    assert (boom.status_code, boom.json()) == (502, {"message": "Internal server error"})
    assert (fine.status_code, fine.text) == (200, "ok")
    assert calls == ["/boom", "/fine"]
