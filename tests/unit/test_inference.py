"""The prediction API on in-memory fakes: real models, real Powertools routing, no AWS.

Requests are the API Gateway REST event of events/predict.apigw_rest.json with another path,
method, body or headers, so they carry every header API Gateway adds.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.inference.api import SERVED_VERSION_HEADER, Settings
from functions.inference.cache import ModelCache
from functions.inference.models import ModelStatusResponse, PredictResponse
from functions.inference.routes import create_app
from functions.shared.features import MISSING_CATEGORY
from functions.shared.model_card import MODEL_FILE
from functions.shared.observability import metrics
from functions.shared.registry import GateVerdict, ModelVersion
from functions.shared.scoring import ScoringModel
from tests import datasets
from tests.fakes import InMemoryObjectStore, InMemoryRegistry
from tests.models import TrainedModel, publish_live, train_model

EVENTS = Path(__file__).resolve().parents[2] / "events"
TEMPLATE: dict[str, Any] = json.loads((EVENTS / "predict.apigw_rest.json").read_text())
BUCKET = "artifacts-bucket"
DATASET = "churn"
TTL = 5.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingStore(InMemoryObjectStore):
    """The in-memory store, counting reads: a warm request must make none."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, str]] = []

    def get_bytes(self, bucket: str, key: str) -> bytes:
        self.reads.append((bucket, key))
        return super().get_bytes(bucket, key)


class CountingRegistry(InMemoryRegistry):
    """The in-memory registry, counting the reads the inference path makes."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.down = False

    def live(self, dataset: str) -> Any:
        self._read()
        return super().live(dataset)

    def get(self, dataset: str, version: int) -> ModelVersion:
        self._read()
        return super().get(dataset, version)

    def _read(self) -> None:
        if self.down:
            raise ConnectionError("registry unreachable")
        self.reads += 1


@dataclass
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: Any

    @property
    def served_version(self) -> str:
        return self.headers[SERVED_VERSION_HEADER][0]


class Api:
    """The API as Lambda runs it (minus the decorators), over fakes and a fake clock."""

    def __init__(self, max_instances: int = 1000, feedback_bucket: str | None = BUCKET) -> None:
        self.store = CountingStore()
        self.registry = CountingRegistry()
        self.clock = Clock()
        self.cache = ModelCache(self.registry, self.store, ttl_seconds=TTL, clock=self.clock)
        config = Settings(
            REGISTRY_TABLE="unused", MAX_INSTANCES=max_instances, FEEDBACK_BUCKET=feedback_bucket
        )
        self.app = create_app(lambda: (config, self.cache, self.store))

    def publish(
        self,
        model: TrainedModel,
        *,
        run: str,
        promote: bool = True,
        onnx: bytes | None = None,
        gate: GateVerdict | None = None,
    ) -> int:
        """Put a model where a pipeline run leaves it (files in the store, a registered version),
        then promote it unless told not to. ``onnx`` replaces the file, not the recorded sha256."""
        return publish_live(
            self.store,
            self.registry,
            model,
            run_name=run,
            onnx=onnx,
            dataset=DATASET,
            promote=promote,
            metric_value=0.91,
            gate=gate,
        )

    def call(
        self,
        method: str,
        path: str,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        base64_body: bool = False,
    ) -> Reply:
        event = copy.deepcopy(TEMPLATE)
        event.update(httpMethod=method, path=path, body=body, isBase64Encoded=base64_body)
        if headers is not None:
            event["headers"] = headers
            event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
        response = self.app.resolve(event, None)  # type: ignore[arg-type]
        raw = response["body"]
        return Reply(response["statusCode"], response["multiValueHeaders"], json.loads(raw))

    def predict(self, instances: Any, path: str = f"/v1/models/{DATASET}:predict") -> Reply:
        return self.call("POST", path, json.dumps({"instances": instances}))


@pytest.fixture
def api() -> Api:
    return Api()


def client_rows(model: TrainedModel, rows: int = 60) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Test-split rows, and the same rows as a client sends them: null for a missing value."""
    names = [f.name for f in model.card.features]
    frame = model.split("test")[names].head(rows)
    instances: list[dict[str, Any]] = []
    for record in frame.to_dict("records"):
        instances.append(
            {
                key: None
                if value is None
                or value == MISSING_CATEGORY
                or (isinstance(value, float) and math.isnan(value))
                else value
                for key, value in record.items()
            }
        )
    return frame, instances


def assert_error(reply: Reply, status: int, code: str, *, mentions: str) -> None:
    assert reply.status == status, reply.body
    assert reply.body["code"] == code
    assert isinstance(reply.body["error"], str)
    assert mentions in reply.body["error"], reply.body["error"]


# --- predictions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_predictions_equal_the_scoring_model_on_the_test_split(
    api: Api, trained_models: dict[str, TrainedModel], kind: str
) -> None:
    # Given a live model and test-split rows sent as JSON, with null for missing values
    model = trained_models[kind]
    api.publish(model, run="run-1")
    frame, instances = client_rows(model)
    expected = ScoringModel(model.onnx, model.card, expected_sha256=model.card.onnx.sha256).score(
        {name: frame[name].to_numpy() for name in frame.columns}
    )

    # When they are posted to the predict route
    reply = api.predict(instances)

    # Then every prediction is what the scoring model says for the same rows, bit for bit
    assert reply.status == 200, reply.body
    PredictResponse.model_validate(reply.body)
    assert reply.body["model_version"] == reply.served_version == "1"
    assert reply.body["request_id"] == TEMPLATE["requestContext"]["requestId"]
    predictions = reply.body["predictions"]
    assert len(predictions) == len(instances)
    if expected.values is not None:
        np.testing.assert_array_equal(np.array(predictions, dtype=np.float32), expected.values)
    else:
        assert expected.probabilities is not None
        classes = model.card.classes or []
        assert [p["label"] for p in predictions] == expected.labels
        got = np.array([[p["probabilities"][c] for c in classes] for p in predictions])
        np.testing.assert_array_equal(got.astype(np.float32), expected.probabilities)


def test_multiclass_requests_carry_nulls_in_numeric_and_categorical_features(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given the multiclass test rows as a client sends them
    model = trained_models["multiclass"]
    kinds = {f.name: f.kind.value for f in model.card.features}

    # When they are converted
    _, instances = client_rows(model)

    # Then nulls reach both kinds of feature: the equality test above covers imputation
    null_kinds = {kinds[k] for row in instances for k, v in row.items() if v is None}
    assert null_kinds == {"numeric", "categorical"}


def test_the_router_matches_a_colon_in_the_last_path_segment(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a live model
    api.publish(trained_models["binary"], run="run-1")
    _, instances = client_rows(trained_models["binary"], rows=2)

    # When TF Serving's colon routes are called, and near misses of them
    live = api.predict(instances)
    pinned = api.predict(instances, path=f"/v1/models/{DATASET}/versions/1:predict")
    wrong_verb = api.predict(instances, path=f"/v1/models/{DATASET}:classify")
    get_predict = api.call("GET", f"/v1/models/{DATASET}:predict")

    # Then the colon routes predict, others are not routes, and GET on predict is not allowed
    assert (live.status, pinned.status) == (200, 200)
    assert pinned.body["model_version"] == "1"
    assert_error(wrong_verb, 404, "route_not_found", mentions="no such route")
    assert_error(get_predict, 405, "method_not_allowed", mentions="use POST")
    assert get_predict.headers["Allow"] == ["POST"]


def test_unseen_categories_are_accepted_and_scored_as_training_left_them(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a model with categorical features and a row whose categories it never saw
    model = trained_models["multiclass"]
    api.publish(model, run="run-1")
    _, instances = client_rows(model, rows=1)
    row = {**instances[0], "cat_0": "a level nobody trained on", "cat_1": 12345, "cat_2": True}
    expected = ScoringModel(model.onnx, model.card, expected_sha256=model.card.onnx.sha256).score(
        {k: [v] for k, v in row.items()}
    )

    # When it is posted
    reply = api.predict([row])

    # Then it is answered like the scoring model answers it (one-hot: unseen is all zeros)
    assert reply.status == 200, reply.body
    assert reply.body["predictions"][0]["label"] == (expected.labels or [""])[0]


def test_a_base64_encoded_body_is_decoded(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a live model and a body API Gateway passed base64-encoded
    api.publish(trained_models["binary"], run="run-1")
    _, instances = client_rows(trained_models["binary"], rows=1)
    encoded = base64.b64encode(json.dumps({"instances": instances}).encode()).decode()

    # When it is posted, and a body that is not valid base64 UTF-8
    ok = api.call("POST", f"/v1/models/{DATASET}:predict", encoded, base64_body=True)
    bad = api.call("POST", f"/v1/models/{DATASET}:predict", "//79", base64_body=True)

    # Then the first is predicted and the second is a client error
    assert ok.status == 200, ok.body
    assert_error(bad, 400, "malformed_request", mentions="UTF-8")


def test_pinned_predictions_name_their_request_too(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    api.publish(trained_models["binary"], run="run-1")
    _, rows = client_rows(trained_models["binary"], rows=1)
    reply = api.predict(rows, path=f"/v1/models/{DATASET}/versions/1:predict")
    assert reply.body["request_id"] == TEMPLATE["requestContext"]["requestId"]


# --- feedback ------------------------------------------------------------------------------------


def test_feedback_is_accepted_with_202_and_stored_as_one_object(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a live classifier that answered a request
    api.publish(trained_models["binary"], run="run-1")
    _, rows = client_rows(trained_models["binary"], rows=2)
    answer = api.predict(rows).body

    # When the client reports the truth about both instances
    items = [
        {"request_id": answer["request_id"], "index": i, "actual": p["label"]}
        for i, p in enumerate(answer["predictions"])
    ]
    reply = api.call("POST", f"/v1/models/{DATASET}:feedback", json.dumps({"feedback": items}))

    # Then it is accepted, and the artifacts bucket holds it under the dataset's feedback prefix
    assert (reply.status, reply.body) == (202, {"accepted": 2})
    [key] = api.store.keys(BUCKET, f"{DATASET}/feedback/dt=")
    assert key.endswith(".jsonl.gz")


def test_feedback_without_a_bucket_is_a_503_and_a_get_is_a_405(
    trained_models: dict[str, TrainedModel],
) -> None:
    api = Api(feedback_bucket=None)
    api.publish(trained_models["binary"], run="run-1")
    body = json.dumps({"feedback": [{"request_id": "r", "actual": "yes"}]})

    assert_error(
        api.call("POST", f"/v1/models/{DATASET}:feedback", body),
        503,
        "feedback_unavailable",
        mentions="FEEDBACK_BUCKET",
    )
    wrong_method = api.call("GET", f"/v1/models/{DATASET}:feedback")
    assert_error(wrong_method, 405, "method_not_allowed", mentions="use POST")
    assert_error(
        api.call("POST", "/v1/models/bad.name:feedback", body),
        400,
        "invalid_path_parameter",
        mentions="dataset:",
    )


# --- client errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ('{"instances": [{"num_0": 1', "not valid JSON"),
        # behind API Gateway its request validation refuses this first; invoked directly, the
        # function's parser stops at its depth limit
        ('{"instances": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON"),
        ('{"instances": [{"num_0": NaN}]}', "send null for a missing value"),
        ('{"instances": [{"num_0": Infinity}]}', "send null for a missing value"),
        ('{"instances": [{"num_0": -Infinity}]}', "send null for a missing value"),
        ("[1, 2]", "must be a JSON object"),
        ('"instances"', "must be a JSON object"),
        ("", "empty"),
    ],
)
def test_a_body_that_is_not_one_json_object_is_a_400(api: Api, body: str, mentions: str) -> None:
    # Given no model at all: the body is refused before any model is looked up
    # When a broken body is posted
    reply = api.call("POST", f"/v1/models/{DATASET}:predict", body)

    # Then it is a 400 that says what is wrong
    assert_error(reply, 400, "malformed_request", mentions=mentions)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/models/bad.name:predict", "dataset"),
        ("/v1/models/-churn:predict", "dataset"),
        (f"/v1/models/{DATASET}/versions/0:predict", "version"),
        (f"/v1/models/{DATASET}/versions/abc:predict", "version"),
        ("/v1/models/bad.name", "dataset"),
        (f"/v1/models/{DATASET}/versions/v2", "version"),
        ("/v1/models/bad.name/metadata", "dataset"),
    ],
)
def test_a_path_parameter_that_cannot_name_a_model_is_a_400(
    api: Api, path: str, field: str
) -> None:
    # Given any path whose dataset or version is malformed
    method = "POST" if path.endswith(":predict") else "GET"

    # When it is called
    reply = api.call(method, path, json.dumps({"instances": [{}]}) if method == "POST" else None)

    # Then the 400 names the parameter
    assert_error(reply, 400, "invalid_path_parameter", mentions=f"{field}:")
    assert reply.body["details"][0]["field"] == field


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/jsonl"],
)
def test_a_content_type_other_than_json_is_a_415(api: Api, content_type: str) -> None:
    # When a JSON body is posted under another Content-Type
    reply = api.call(
        "POST",
        f"/v1/models/{DATASET}:predict",
        json.dumps({"instances": [{"a": 1}]}),
        {"Content-Type": content_type},
    )

    # Then it is refused as such, whatever else would have gone wrong
    assert_error(reply, 415, "unsupported_media_type", mentions=content_type)


def test_a_form_content_type_is_a_415_that_says_how_to_fix_curl(api: Api) -> None:
    # When JSON is posted as curl -d sends it without a Content-Type header
    for path in (f"/v1/models/{DATASET}:predict", f"/v1/models/{DATASET}:feedback"):
        reply = api.call(
            "POST", path, '{"instances": []}', {"content-type": "application/x-www-form-urlencoded"}
        )
        # Then the 415 names the header to add
        assert_error(
            reply, 415, "unsupported_media_type", mentions="-H 'content-type: application/json'"
        )


@pytest.mark.parametrize("headers", [{"content-type": "application/json; charset=utf-8"}, {}])
def test_json_with_parameters_or_no_content_type_is_accepted(
    api: Api, trained_models: dict[str, TrainedModel], headers: dict[str, str]
) -> None:
    # Given a live model
    api.publish(trained_models["binary"], run="run-1")
    _, instances = client_rows(trained_models["binary"], rows=1)

    # When JSON is posted with a charset parameter, or with no Content-Type (curl's default)
    reply = api.call(
        "POST", f"/v1/models/{DATASET}:predict", json.dumps({"instances": instances}), headers
    )

    # Then it is read as JSON
    assert reply.status == 200, reply.body


def _edit(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    edited = {**row, **changes}
    return {k: v for k, v in edited.items() if v != "<drop>"}


@pytest.mark.parametrize(
    ("change", "field", "mentions"),
    [
        ({"num_1": "<drop>"}, "instances[1].num_1", "send null for a missing value"),
        ({"num_11": 3.0}, "instances[1].num_11", "did you mean 'num_1"),
        ({"num_0": "12"}, "instances[1].num_0", 'got a string ("12")'),
        ({"num_0": True}, "instances[1].num_0", "got a boolean"),
        ({"num_0": [1]}, "instances[1].num_0", "got an array"),
        ({"num_0": 1e39}, "instances[1].num_0", "float32 range"),
        ({"num_0": 10**400}, "instances[1].num_0", "float32 range"),
        ({"cat_0": {"a": 1}}, "instances[1].cat_0", "got an object"),
        ({"cat_1": ["x"]}, "instances[1].cat_1", "got an array"),
    ],
)
def test_an_instance_that_breaks_the_feature_schema_is_a_422_naming_the_field(
    api: Api,
    trained_models: dict[str, TrainedModel],
    change: dict[str, Any],
    field: str,
    mentions: str,
) -> None:
    # Given a live model and two rows, the second with one fault
    api.publish(trained_models["multiclass"], run="run-1")
    _, rows = client_rows(trained_models["multiclass"], rows=2)
    rows[1] = _edit(rows[1], **change)

    # When they are posted
    reply = api.predict(rows)

    # Then the 422 names the field in the message and in the details
    assert_error(reply, 422, "invalid_instances", mentions=field)
    assert reply.body["details"][0]["field"] == field
    assert mentions in reply.body["details"][0]["message"]


def test_every_fault_is_reported_in_instance_order(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given rows with faults in the third and first instances
    api.publish(trained_models["binary"], run="run-1")
    _, rows = client_rows(trained_models["binary"], rows=3)
    rows[2] = _edit(rows[2], num_2="x")
    rows[0] = _edit(rows[0], num_5="<drop>", extra=1)

    # When they are posted
    reply = api.predict(rows)

    # Then the details list all three, first instance first, and the message counts the rest
    fields = [d["field"] for d in reply.body["details"]]
    assert fields == ["instances[0].num_5", "instances[0].extra", "instances[2].num_2"]
    assert "(and 2 more)" in reply.body["error"]


@pytest.mark.parametrize(
    ("body", "field", "mentions"),
    [
        ({"instances": []}, "instances", "at least one instance"),
        ({"instances": [3]}, "instances[0]", "object of feature values"),
        ({"instances": {"num_0": 1}}, "instances", "list of instances"),
        ({"inputs": {"num_0": [1]}}, "instances", "required"),
        ({"instances": [{}], "signature_name": "x"}, "signature_name", "not supported"),
    ],
)
def test_a_body_that_is_not_a_predict_request_is_a_422(
    api: Api, body: dict[str, Any], field: str, mentions: str
) -> None:
    # When a JSON object that is not a row-format predict request is posted
    reply = api.call("POST", f"/v1/models/{DATASET}:predict", json.dumps(body))

    # Then the 422 names the field and says what is wrong with it
    assert_error(reply, 422, "invalid_request", mentions=field)
    assert any(d["field"] == field and mentions in d["message"] for d in reply.body["details"])


def test_error_details_are_bounded_however_many_faults(api: Api) -> None:
    # When 30 instances are all not objects
    reply = api.call("POST", f"/v1/models/{DATASET}:predict", json.dumps({"instances": [1] * 30}))

    # Then 20 details are listed and the message counts the rest
    assert_error(reply, 422, "invalid_request", mentions="(and 29 more)")
    assert len(reply.body["details"]) == 20


def test_a_body_over_one_mib_is_a_413(api: Api) -> None:
    # Given a body just over 1 MiB
    body = json.dumps({"instances": [{"cat_0": "x" * (1024 * 1024)}]})

    # When it is posted
    reply = api.call("POST", f"/v1/models/{DATASET}:predict", body)

    # Then it is refused for its size, before it is parsed
    assert_error(reply, 413, "payload_too_large", mentions="over the limit")


def test_more_instances_than_allowed_is_a_413_and_the_limit_itself_is_served(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given an API that takes at most 5 instances a request
    api = Api(max_instances=5)
    api.publish(trained_models["binary"], run="run-1")
    _, rows = client_rows(trained_models["binary"], rows=6)

    # When 6 and then 5 are posted
    over = api.predict(rows)
    at_limit = api.predict(rows[:5])

    # Then 6 is refused with the limit in the message and 5 is served
    assert_error(over, 413, "too_many_instances", mentions="the limit is 5")
    assert at_limit.status == 200


# --- not found -----------------------------------------------------------------------------------


def test_unknown_datasets_versions_and_routes_are_404s(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given one live version, one candidate and one rejected version
    model = trained_models["binary"]
    api.publish(model, run="run-1")
    api.publish(model, run="run-2", promote=False)
    rejected = api.publish(model, run="run-3", promote=False)
    api.registry.reject(DATASET, rejected, actor="test", reason="f1 0.41 below threshold 0.6")
    _, rows = client_rows(model, rows=1)

    # When unknown things are asked for
    unknown_dataset = api.predict(rows, path="/v1/models/nothing:predict")
    unknown_version = api.predict(rows, path=f"/v1/models/{DATASET}/versions/9:predict")
    rejected_version = api.predict(rows, path=f"/v1/models/{DATASET}/versions/3:predict")
    unknown_status = api.call("GET", "/v1/models/nothing")
    unknown_route = api.call("GET", "/v2/models")
    wrong_method = api.call("DELETE", f"/v1/models/{DATASET}")

    # Then each is a 404 (or 405) in the API's error format, saying which
    assert_error(unknown_dataset, 404, "model_not_found", mentions="'nothing' has no live model")
    assert_error(unknown_version, 404, "version_not_found", mentions="no version 9")
    assert_error(rejected_version, 404, "version_rejected", mentions="rejected by the gate")
    assert "f1 0.41 below threshold" in rejected_version.body["error"]
    assert_error(unknown_status, 404, "model_not_found", mentions="nothing")
    assert_error(unknown_route, 404, "route_not_found", mentions="/v1/openapi.json")
    assert_error(wrong_method, 405, "method_not_allowed", mentions="use GET")


def test_a_dataset_whose_versions_never_passed_the_gate_has_no_live_model(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a registered version the gate has not promoted
    api.publish(trained_models["binary"], run="run-1", promote=False)
    _, rows = client_rows(trained_models["binary"], rows=1)

    # When the dataset is asked to predict, Then there is no live model to answer
    assert_error(api.predict(rows), 404, "model_not_found", mentions="no live model")


def test_pinned_predict_serves_retired_and_candidate_versions(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given version 1 retired by version 2, and version 3 still a candidate
    model = trained_models["binary"]
    api.publish(model, run="run-1")
    api.publish(model, run="run-2")
    api.publish(model, run="run-3", promote=False)
    _, rows = client_rows(model, rows=2)

    # When each version is pinned
    replies = {
        v: api.predict(rows, path=f"/v1/models/{DATASET}/versions/{v}:predict") for v in "123"
    }

    # Then each answers as itself
    assert {v: (r.status, r.body["model_version"]) for v, r in replies.items()} == {
        "1": (200, "1"),
        "2": (200, "2"),
        "3": (200, "3"),
    }


@pytest.fixture(scope="module")
def awkward_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """A classifier whose features are headers such as "a b", "a_b", "a-b", "revenu €",
    "od280/od315_of_diluted_wines" and "label"."""
    return train_model(
        tmp_path_factory.mktemp("awkward"), "awkward", generate=datasets.awkward_headers
    )


def test_a_request_keyed_by_the_users_headers_predicts(
    api: Api, awkward_model: TrainedModel
) -> None:
    # Given a live model trained on awkward headers; the graph's inputs are spelled otherwise
    api.publish(awkward_model, run="run-1")
    assert "a b" not in [i.name for i in awkward_model.card.onnx.inputs]
    frame, instances = client_rows(awkward_model, 20)
    instance = dict(instances[0])
    instance.update({"a b": 1, "od280/od315_of_diluted_wines": 2.5, "label": None})
    expected = ScoringModel(
        awkward_model.onnx, awkward_model.card, expected_sha256=awkward_model.card.onnx.sha256
    ).score({name: frame[name].to_numpy() for name in frame.columns})

    # When a client posts instances keyed by the headers as the file spelled them
    reply = api.predict([instance, *instances])

    # Then they are predicted, each row as the scoring model scores it
    assert reply.status == 200, reply.body
    predictions = reply.body["predictions"]
    assert len(predictions) == 21
    assert predictions[0]["label"] in (awkward_model.card.classes or [])
    assert [p["label"] for p in predictions[1:]] == expected.labels
    # And the metadata and the errors speak the user's names too
    metadata = api.call("GET", f"/v1/models/{DATASET}/metadata").body
    assert [f["name"] for f in metadata["features"]] == list(datasets.AWKWARD_HEADERS)
    typo = {k: v for k, v in instance.items() if k != "revenu €"} | {"revenu": 1.0}
    assert_error(api.predict([typo]), 422, "invalid_instances", mentions="'revenu €'")


# --- status and metadata ------------------------------------------------------------------------


def test_status_routes_report_tf_serving_states(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a retired, a live, a candidate and a rejected version
    model = trained_models["binary"]
    for run in ("run-1", "run-2"):
        api.publish(model, run=run)
    api.publish(model, run="run-3", promote=False)
    api.publish(model, run="run-4", promote=False)
    api.registry.reject(DATASET, 4, actor="test", reason="worse than the champion")

    # When the dataset's and each version's status are read
    live = api.call("GET", f"/v1/models/{DATASET}")
    versions = {v: api.call("GET", f"/v1/models/{DATASET}/versions/{v}") for v in "1234"}

    # Then the live one is AVAILABLE and the others are in their TF Serving state
    assert live.status == 200
    assert live.body == {
        "model_version_status": [
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    states = {}
    for v, reply in versions.items():
        (entry,) = ModelStatusResponse.model_validate(reply.body).model_version_status
        states[v] = (entry.state, entry.status.error_code)
    assert states == {
        "1": ("END", "OK"),
        "2": ("AVAILABLE", "OK"),
        "3": ("START", "OK"),
        "4": ("END", "FAILED_PRECONDITION"),
    }
    assert (
        "worse than the champion"
        in versions["4"].body["model_version_status"][0]["status"]["error_message"]
    )
    assert_error(
        api.call("GET", f"/v1/models/{DATASET}/versions/7"), 404, "version_not_found", mentions="7"
    )


def test_version_status_keeps_the_gates_refusal_after_a_forced_promotion_and_a_rollback(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given 1 live and 2 refused by the gate, forced live by an operator
    model = trained_models["binary"]
    api.publish(model, run="run-1", gate="passed")
    api.publish(model, run="run-2", promote=False, gate="refused")
    api.registry.reject(DATASET, 2, actor="pipeline:run-2", reason="gate refused")
    api.registry.promote(
        DATASET, 2, expected_live=1, actor="cli:ops", reason="override", force=True
    )
    path = f"/v1/models/{DATASET}/versions/2"
    (forced,) = api.call("GET", path).body["model_version_status"]
    # When it is rolled back
    api.registry.rollback(DATASET, None, actor="cli:ops", reason="the gate was right")
    api.clock.advance(TTL)  # past the record cache
    (retired,) = api.call("GET", path).body["model_version_status"]
    # Then its status says, live and retired alike, that the gate refused it and why
    assert forced["state"] == "AVAILABLE"
    assert retired["state"] == "END"
    for status in (forced, retired):
        assert "the gate refused it (gate refused (test))" in status["status"]["error_message"]


def test_metadata_describes_the_input_a_client_must_send(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a live multiclass model
    model = trained_models["multiclass"]
    api.publish(model, run="run-1")

    # When its metadata is read
    reply = api.call("GET", f"/v1/models/{DATASET}/metadata")

    # Then it names the version, the task, the classes, the metric and every feature's JSON types
    assert reply.status == 200, reply.body
    body = reply.body
    assert (body["model_version"], body["task"], body["classes"]) == (
        "1",
        "classification",
        model.card.classes,
    )
    assert body["metric"] == {"name": model.card.metric, "value": 0.91}
    assert body["sha256"] == model.card.onnx.sha256
    assert body["max_instances"] == 1000
    kinds = {f["name"]: (f["kind"], f["json_types"]) for f in body["features"]}
    assert kinds["num_0"] == ("numeric", ["number", "null"])
    assert kinds["cat_0"] == ("categorical", ["string", "number", "boolean", "null"])
    schema = body["input_schema"]
    assert schema["required"] == [f.name for f in model.card.features]
    assert schema["additionalProperties"] is False


def test_the_openapi_document_is_served_and_documents_every_route(api: Api) -> None:
    # When the document is fetched
    reply = api.call("GET", "/v1/openapi.json")

    # Then it is the API's, with every route, the predict body and the error model
    assert reply.status == 200
    document = reply.body
    assert document["info"]["title"] == "sluice prediction API"
    paths = document["paths"]
    assert set(paths) == {
        "/v1/models",
        "/v1/models/{dataset}",
        "/v1/models/{dataset}/versions/{version}",
        "/v1/models/{dataset}/metadata",
        "/v1/models/{dataset}:predict",
        "/v1/models/{dataset}/versions/{version}:predict",
        "/v1/models/{dataset}:feedback",
        "/v1/models/{dataset}:explain",
        "/v1/openapi.json",
    }
    for path, operations in paths.items():
        for operation in operations.values():
            success = operation["responses"].get("200") or operation["responses"]["202"]
            assert "content" in success, path
            unprocessable = json.dumps(operation["responses"].get("422", {}))
            assert "HTTPValidationError" not in unprocessable, path  # Powertools' format
    predict = paths["/v1/models/{dataset}:predict"]["post"]
    body_schema = predict["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["required"] == ["instances"]
    error_ref = predict["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    assert error_ref.endswith("/ErrorResponse")
    schemas = set(document["components"]["schemas"])
    assert {"PredictResponse", "ExplainResponse", "ErrorResponse", "ModelStatusResponse"} <= schemas
    explain = paths["/v1/models/{dataset}:explain"]["post"]
    # the predict body, and which classes to explain
    explain_body = explain["requestBody"]["content"]["application/json"]["schema"]
    assert explain_body["required"] == ["instances"]
    assert explain_body["properties"]["instances"] == body_schema["properties"]["instances"]
    assert explain_body["properties"]["classes"]["enum"] == ["predicted", "all"]
    assert explain_body["properties"]["classes"]["default"] == "predicted"
    assert "HTTPValidationError" not in schemas
    dataset_param = predict["parameters"][0]
    assert dataset_param["schema"]["pattern"].startswith("^[A-Za-z0-9]")
    feedback = paths["/v1/models/{dataset}:feedback"]["post"]
    assert set(feedback["responses"]) == {
        "202",
        "400",
        "403",
        "404",
        "410",
        "413",
        "415",
        "422",
        "503",
    }
    feedback_schema = feedback["requestBody"]["content"]["application/json"]["schema"]
    assert feedback_schema["required"] == ["feedback"]
    item = feedback_schema["properties"]["feedback"]["items"]  # inlined: no dangling $ref
    assert item["required"] == ["request_id", "actual"] and "$ref" not in json.dumps(item)
    # API Gateway's own 400 for a body its request model refuses, on every POST; not on a GET
    for path, operations in paths.items():
        for method, operation in operations.items():
            bad_request = json.dumps(operation["responses"].get("400", {}))
            assert ("GatewayMessage" in bad_request) is (method == "post"), (method, path)


# --- the model cache ------------------------------------------------------------------------------


def test_a_promotion_is_noticed_after_the_ttl_and_not_before(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given version 1 live and answering
    model = trained_models["binary"]
    api.publish(model, run="run-1")
    _, rows = client_rows(model, rows=1)
    assert api.predict(rows).body["model_version"] == "1"

    # When version 2 is promoted
    api.publish(model, run="run-2")
    api.clock.advance(TTL - 0.1)
    before = api.predict(rows)
    api.clock.advance(0.2)
    after = api.predict(rows)

    # Then version 1 answers until the TTL runs out and version 2 right after
    assert (before.body["model_version"], before.served_version) == ("1", "1")
    assert (after.body["model_version"], after.served_version) == ("2", "2")


def _version_2_after_version_1(
    api: Api, model: TrainedModel, onnx: bytes | None = None
) -> list[dict[str, Any]]:
    """Version 1 live and answering, then version 2 promoted (with ``onnx`` as its model file
    when given) and the TTL run out. Returns the rows the client sends."""
    api.publish(model, run="run-1")
    _, rows = client_rows(model, rows=1)
    api.predict(rows)
    api.publish(model, run="run-2", onnx=onnx)
    api.clock.advance(TTL)
    return rows


def test_a_rollback_is_noticed_after_the_ttl_and_needs_no_reload(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given version 2 live after version 1, both served once
    model = trained_models["binary"]
    rows = _version_2_after_version_1(api, model)
    assert api.predict(rows).body["model_version"] == "2"
    reads = len(api.store.reads)

    # When an operator rolls back to version 1
    api.registry.rollback(DATASET, None, actor="cli:ops", reason="bad predictions")
    before = api.predict(rows)
    api.clock.advance(TTL)
    after = api.predict(rows)

    # Then version 1 answers once the TTL runs out, from its cached session
    assert before.body["model_version"] == "2"
    assert after.body["model_version"] == "1"
    assert len(api.store.reads) == reads


def test_warm_requests_read_neither_the_store_nor_the_registry(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a model loaded by a first request
    model = trained_models["binary"]
    api.publish(model, run="run-1")
    _, rows = client_rows(model, rows=3)
    api.predict(rows)
    store_reads, registry_reads = len(api.store.reads), api.registry.reads

    # When more requests come within the TTL
    for _ in range(5):
        api.clock.advance(TTL / 10)
        assert api.predict(rows).status == 200

    # Then none of them did any I/O
    assert (len(api.store.reads), api.registry.reads) == (store_reads, registry_reads)
    assert store_reads == 2  # the card and the model, once


def test_a_tampered_model_is_refused_and_the_champion_keeps_answering(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given version 1 live and answering
    model = trained_models["binary"]
    api.publish(model, run="run-1")
    _, rows = client_rows(model, rows=2)
    assert api.predict(rows).status == 200

    # When version 2 is promoted but its file is not the one the registry recorded
    api.publish(model, run="run-2", onnx=model.onnx + b"\x00")
    api.clock.advance(TTL)
    first = api.predict(rows)
    reads_after_refusal = len(api.store.reads)
    again = api.predict(rows)
    status = api.call("GET", f"/v1/models/{DATASET}")

    # Then version 1 answers and says so, the refusal is counted once, and not retried yet
    assert (first.status, first.body["model_version"], first.served_version) == (200, "1", "1")
    assert again.body["model_version"] == "1"
    assert metrics.metric_set["ModelIntegrityFailure"]["Value"] == [1.0]
    assert len(api.store.reads) == reads_after_refusal
    states = [(s["version"], s["state"]) for s in status.body["model_version_status"]]
    assert states == [("2", "END"), ("1", "AVAILABLE")]
    assert "sha256" in status.body["model_version_status"][0]["status"]["error_message"]

    # And after the TTL the load is tried again (and refused again)
    api.clock.advance(TTL)
    assert api.predict(rows).body["model_version"] == "1"
    assert len(api.store.reads) > reads_after_refusal
    assert metrics.metric_set["ModelIntegrityFailure"]["Value"] == [1.0, 1.0]


def test_rolling_back_a_refused_promotion_clears_the_refusal(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given version 2 refused for its file while version 1 stands in
    model = trained_models["binary"]
    rows = _version_2_after_version_1(api, model, b"not a model")
    assert api.predict(rows).body["model_version"] == "1"

    # When an operator rolls back to version 1
    api.registry.rollback(DATASET, 1, actor="cli:ops", reason="version 2 refused")
    api.clock.advance(TTL)

    # Then version 1 is simply the live, available version again
    status = api.call("GET", f"/v1/models/{DATASET}").body["model_version_status"]
    assert [(s["version"], s["state"], s["status"]["error_code"]) for s in status] == [
        ("1", "AVAILABLE", "OK")
    ]
    version_1 = api.call("GET", f"/v1/models/{DATASET}/versions/1").body
    assert version_1["model_version_status"][0]["state"] == "AVAILABLE"


def test_a_refused_file_that_is_put_right_is_served_after_the_ttl(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given version 2 refused for its file while version 1 stands in
    model = trained_models["binary"]
    rows = _version_2_after_version_1(api, model, b"truncated upload")
    assert api.predict(rows).body["model_version"] == "1"

    # When the right file is uploaded in its place
    api.store.put(BUCKET, f"{DATASET}/models/run-2/{MODEL_FILE}", model.onnx)
    api.clock.advance(TTL)

    # Then version 2 answers and every status route says it is available
    assert api.predict(rows).body["model_version"] == "2"
    live = api.call("GET", f"/v1/models/{DATASET}").body["model_version_status"]
    pinned = api.call("GET", f"/v1/models/{DATASET}/versions/2").body["model_version_status"]
    assert [(s["version"], s["state"]) for s in live + pinned] == [
        ("2", "AVAILABLE"),
        ("2", "AVAILABLE"),
    ]


def test_a_tampered_model_with_no_earlier_good_one_is_a_503(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a first live version whose file was tampered with
    model = trained_models["binary"]
    api.publish(model, run="run-1", onnx=model.onnx[:-1])
    _, rows = client_rows(model, rows=1)

    # When it is asked to predict, live and pinned
    live = api.predict(rows)
    pinned = api.predict(rows, path=f"/v1/models/{DATASET}/versions/1:predict")

    # Then nothing can answer: 503, saying why
    assert_error(live, 503, "model_unavailable", mentions="sha256")
    assert_error(pinned, 503, "model_unavailable", mentions="sha256")


def test_a_registry_outage_keeps_the_current_model_serving(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a model loaded before the registry became unreachable
    model = trained_models["binary"]
    api.publish(model, run="run-1")
    _, rows = client_rows(model, rows=1)
    api.predict(rows)
    api.registry.down = True

    # When requests come after the TTL, for that dataset and for one never read
    api.clock.advance(TTL)
    known = api.predict(rows)
    unknown = api.predict(rows, path="/v1/models/other:predict")

    # Then the known dataset is still served, and the unknown one is unavailable, not a 500
    assert known.status == 200
    assert_error(unknown, 503, "model_unavailable", mentions="registry")


# --- no 5xx for anything a client sends -----------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
FEATURE_NAMES = ["num_0", "num_1", "num_2", "num_3", "num_4", "cat_0", "cat_1", "cat_2", "other"]


@pytest.fixture(scope="module")
def fuzz_api(trained_models: dict[str, TrainedModel]) -> Api:
    api = Api(max_instances=3)
    api.publish(trained_models["multiclass"], run="run-1")
    return api


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        JSON.map(json.dumps),
        st.text(max_size=40),
        st.builds(
            lambda rows: json.dumps({"instances": rows}),
            st.lists(st.dictionaries(st.sampled_from(FEATURE_NAMES), JSON, max_size=9), max_size=4),
        ),
        st.builds(
            lambda items: json.dumps({"feedback": items}),
            st.lists(
                st.dictionaries(st.sampled_from(["request_id", "index", "actual", "x"]), JSON),
                max_size=4,
            ),
        ),
    ),
    path=st.sampled_from(
        [
            f"/v1/models/{DATASET}:predict",
            f"/v1/models/{DATASET}/versions/1:predict",
            f"/v1/models/{DATASET}/versions/2:predict",
            "/v1/models/x%2F:predict",
            f"/v1/models/{DATASET}:feedback",
        ]
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "application/json; x=1"]),
)
def test_no_request_body_gets_a_5xx(fuzz_api: Api, body: str, path: str, content_type: str) -> None:
    # When anything at all is posted
    reply = fuzz_api.call("POST", path, body, {"Content-Type": content_type})

    # Then the answer is a success or a client error in the API's format
    assert reply.status < 500, reply.body
    if reply.status >= 400:
        assert isinstance(reply.body["error"], str) and reply.body["code"]
