"""The inference handler under moto: API Gateway events in, the real DynamoDB registry and S3.

The model is trained on the bundled churn sample (samples/churn), so the shared event
events/predict.apigw_rest.json is sent exactly as it is stored.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from moto import mock_aws

from functions.inference import api, handler
from functions.shared.contract import FeatureKind
from functions.shared.features import DatasetSchema, FeatureSpec, normalise_category
from functions.shared.model_card import MODEL_CARD_FILE, MODEL_FILE, ModelCard
from functions.shared.observability import route_emf
from functions.shared.registry import NewModelVersion
from functions.shared.registry_dynamodb import DynamoDBRegistry, create_table
from functions.training.script_mode import Hyperparameters, SageMakerPaths
from functions.training.train import train
from infra.local.context import LocalLambdaContext
from infra.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
CHURN_CSV = ROOT / "samples" / "churn" / "data" / "churn.csv"
NUMERIC = ("tenure_months", "monthly_charges", "total_charges", "support_calls")
CATEGORICAL = ("senior_citizen", "contract", "internet_service", "payment_method")


CONTEXT = LocalLambdaContext.for_function(Topology(stage="test"), "inference")


@dataclass(frozen=True)
class ChurnModel:
    onnx: bytes
    card: ModelCard


@pytest.fixture(scope="module")
def churn_model(tmp_path_factory: pytest.TempPathFactory) -> ChurnModel:
    """A classifier trained on the churn sample, split and encoded as preprocess would."""
    root = tmp_path_factory.mktemp("churn")
    frame = pd.read_csv(CHURN_CSV)
    for column in CATEGORICAL:
        frame[column] = [normalise_category(v) for v in frame[column]]
    features = [FeatureSpec(name=c, kind=FeatureKind.NUMERIC) for c in NUMERIC]
    features += [FeatureSpec(name=c, kind=FeatureKind.CATEGORICAL) for c in CATEGORICAL]
    schema = DatasetSchema(
        dataset="churn",
        dataset_version="v-test",
        task="classification",
        target="churned",
        metric="roc_auc",
        features=features,
        classes=["no", "yes"],
    )
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    cut = int(len(frame) * 0.8)
    for split, part in (("train", frame.iloc[:cut]), ("validation", frame.iloc[cut:])):
        (root / split).mkdir()
        part.to_parquet(root / split / "part-0.parquet", index=False)
    (root / "train" / "dataset.json").write_text(schema.model_dump_json())
    paths = SageMakerPaths.for_version(root, root)
    card = train(
        paths, Hyperparameters(n_estimators=40, early_stopping_rounds=5, max_trials=1), num_gpus=0
    )
    return ChurnModel((paths.model / MODEL_FILE).read_bytes(), card)


@dataclass
class Stack:
    topology: Topology
    s3: Any
    registry: DynamoDBRegistry

    def publish(self, model: ChurnModel, run: str, onnx: bytes | None = None) -> int:
        """Files in the artifacts bucket, a version registered and promoted, as Promote leaves
        them; ``onnx`` replaces the file but not the sha256 the registry records."""
        bucket, prefix = self.topology.artifacts_bucket, f"churn/models/{run}/"
        self.s3.put_object(Bucket=bucket, Key=prefix + MODEL_FILE, Body=onnx or model.onnx)
        self.s3.put_object(
            Bucket=bucket, Key=prefix + MODEL_CARD_FILE, Body=model.card.model_dump_json()
        )
        uri = f"s3://{bucket}/{prefix}"
        version = self.registry.register(
            NewModelVersion(
                dataset="churn",
                run_name=run,
                dataset_version=model.card.dataset_version,
                model_uri=uri + MODEL_FILE,
                card_uri=uri + MODEL_CARD_FILE,
                report_uri=uri + "evaluation.json",
                artifact_uri=uri + "output/model.tar.gz",
                sha256=model.card.onnx.sha256,
                metric="roc_auc",
                metric_value=0.8,
            ),
            actor="pipeline:test",
        ).version
        live = self.registry.live("churn")
        self.registry.promote(
            "churn",
            version,
            expected_live=None if live is None else live.version,
            actor="pipeline:test",
            reason="passed the gate",
        )
        return version


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """The registry table and the artifacts bucket in moto, the function's environment set,
    and the model cache re-reading the live pointer on every request."""
    topology = Topology(stage="test")
    for name, value in topology.inference_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MODEL_CACHE_TTL_SECONDS", "0")
    with mock_aws():
        api.dependencies.cache_clear()  # clients must be built inside the moto context
        api.observers.cache_clear()
        s3 = boto3.client("s3", region_name=topology.region)
        s3.create_bucket(Bucket=topology.artifacts_bucket)
        dynamodb = boto3.client("dynamodb", region_name=topology.region)
        create_table(dynamodb, topology.registry_table)
        yield Stack(topology, s3, DynamoDBRegistry(dynamodb, topology.registry_table))
        api.observers()[0].close()  # the capture thread writes to moto, never beyond
    api.dependencies.cache_clear()
    api.observers.cache_clear()


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def invoke(event: dict[str, Any]) -> tuple[int, dict[str, list[str]], Any]:
    response: dict[str, Any] = handler.lambda_handler(copy.deepcopy(event), CONTEXT)
    return response["statusCode"], response["multiValueHeaders"], json.loads(response["body"])


def test_the_shared_predict_event_is_answered_end_to_end(
    stack: Stack, churn_model: ChurnModel
) -> None:
    # Given the churn model promoted through the DynamoDB registry, its files in S3
    stack.publish(churn_model, "run-1")

    # When API Gateway delivers the stored predict event
    status, headers, body = invoke(load_event("predict.apigw_rest.json"))

    # Then both instances get a label and class probabilities from version 1
    assert status == 200, body
    assert body["model_version"] == "1"
    assert headers[api.SERVED_VERSION_HEADER] == ["1"]
    assert [set(p["probabilities"]) for p in body["predictions"]] == [{"no", "yes"}] * 2
    for prediction in body["predictions"]:
        probabilities = prediction["probabilities"]
        assert prediction["label"] == max(probabilities, key=probabilities.get)
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_the_model_status_event_reports_the_live_version(
    stack: Stack, churn_model: ChurnModel
) -> None:
    stack.publish(churn_model, "run-1")
    status, _, body = invoke(load_event("model_status.apigw_rest.json"))
    assert status == 200
    assert body["model_version_status"][0] == {
        "version": "1",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }


def test_a_promotion_in_dynamodb_reaches_the_next_request(
    stack: Stack, churn_model: ChurnModel
) -> None:
    # Given version 1 serving
    stack.publish(churn_model, "run-1")
    event = load_event("predict.apigw_rest.json")
    assert invoke(event)[2]["model_version"] == "1"

    # When the pipeline promotes version 2 (the cache TTL is 0 here)
    stack.publish(churn_model, "run-2")

    # Then the next request is answered by version 2, with the same predictions
    first = invoke(event)[2]
    assert first["model_version"] == "2"
    assert first["predictions"] == invoke(event)[2]["predictions"]


def test_a_tampered_s3_object_is_refused_and_counted(
    stack: Stack, churn_model: ChurnModel, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given version 1 serving, then version 2 promoted with a file that is not the recorded one
    stack.publish(churn_model, "run-1")
    event = load_event("predict.apigw_rest.json")
    invoke(event)
    stack.publish(churn_model, "run-2", onnx=churn_model.onnx[::-1])
    capsys.readouterr()

    # When a prediction is asked for
    status, headers, body = invoke(event)

    # Then version 1 answers, and the function's metrics say the model was refused
    assert (status, body["model_version"], headers[api.SERVED_VERSION_HEADER]) == (
        200,
        "1",
        ["1"],
    )
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    assert any(blob.get("ModelIntegrityFailure") == [1.0] for blob in emitted)


def test_a_client_error_comes_back_as_json_through_the_whole_stack(
    stack: Stack, churn_model: ChurnModel
) -> None:
    # Given a live model and the stored event with a typo in one feature name
    stack.publish(churn_model, "run-1")
    event = load_event("predict.apigw_rest.json")
    instances = json.loads(event["body"])["instances"]
    instances[1]["tenure_month"] = instances[1].pop("tenure_months")
    event["body"] = json.dumps({"instances": instances})

    # When it is delivered
    status, _, body = invoke(event)

    # Then the 422 points at the typo and suggests the feature it meant
    assert status == 422
    assert body["code"] == "invalid_instances"
    fields = {d["field"]: d["message"] for d in body["details"]}
    assert "did you mean 'tenure_months'" in fields["instances[1].tenure_month"]
    assert "send null for a missing value" in fields["instances[1].tenure_months"]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (None, {}),  # the stored event as it is
        ('{"instances": [{"tenure_months": "3"}]}', {}),  # 422: wrong type, missing features
        ('{"instances": [{"tenure_months": NaN}]}', {}),  # 400: NaN token
        ("not json", {}),  # 400
        ('{"instances": []}', {}),  # 422: empty
        (None, {"Content-Type": "text/plain"}),  # 415
    ],
    ids=["ok", "wrong-type", "nan", "malformed", "empty", "media-type"],
)
@pytest.mark.parametrize("path", ["/v1/models/churn:predict", "/v1/models/nope:predict"])
def test_the_live_predict_fast_path_answers_exactly_as_the_routed_path(
    stack: Stack,
    churn_model: ChurnModel,
    body: str | None,
    headers: dict[str, str],
    path: str,
) -> None:
    # Given the live model, and one request as API Gateway would deliver it
    stack.publish(churn_model, "run-1")
    event = load_event("predict.apigw_rest.json")
    event["path"] = path
    if body is not None:
        event["body"] = body
    event["headers"] = {**event["headers"], **headers}
    # When the handler answers it (through the fast path) and the resolver answers it (routed)
    fast = handler.lambda_handler(copy.deepcopy(event), CONTEXT)
    routed = handler.routed_app().resolve(copy.deepcopy(event), CONTEXT)
    # Then the two responses are identical, status, headers and body
    assert fast == routed


def test_a_sample_of_predictions_is_captured_to_s3_for_the_drift_job(
    stack: Stack, churn_model: ChurnModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given capture at 100 % (the deployed default samples 10 %)
    monkeypatch.setenv("CAPTURE_SAMPLE_RATE", "1")
    api.observers.cache_clear()
    stack.publish(churn_model, "run-1")
    status, _, answer = invoke(load_event("predict.apigw_rest.json"))
    assert status == 200

    # When the buffer is flushed (its thread does this off the request path)
    capture, _ = api.observers()
    capture.flush()

    # Then the instance, its prediction and the version that answered are in the bucket
    listed = stack.s3.list_objects_v2(
        Bucket=stack.topology.artifacts_bucket, Prefix="churn/capture/"
    )
    [key] = [o["Key"] for o in listed["Contents"]]

    body = stack.s3.get_object(Bucket=stack.topology.artifacts_bucket, Key=key)["Body"].read()
    lines = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert [line["prediction"] for line in lines] == answer["predictions"]
    assert {line["model_version"] for line in lines} == {answer["model_version"]}


def test_predict_answers_api_gateways_request_id_on_both_paths(
    stack: Stack, churn_model: ChurnModel
) -> None:
    # Given a live model and the stored predict event
    stack.publish(churn_model, "run-1")
    event = load_event("predict.apigw_rest.json")

    # When it is answered through the handler's fast path and through the resolver
    _, _, fast = invoke(event)
    routed = json.loads(handler.routed_app().resolve(copy.deepcopy(event), CONTEXT)["body"])

    # Then both name the request as API Gateway did
    assert fast["request_id"] == routed["request_id"] == event["requestContext"]["requestId"]


def test_feedback_on_a_prediction_is_stored_in_s3_for_the_drift_job(
    stack: Stack, churn_model: ChurnModel
) -> None:
    # Given a live model, and the stored feedback event about the stored predict event
    stack.publish(churn_model, "run-1")
    _, _, answer = invoke(load_event("predict.apigw_rest.json"))
    event = load_event("feedback.apigw_rest.json")
    items = json.loads(event["body"])["feedback"]
    assert {item["request_id"] for item in items} == {answer["request_id"]}

    # When API Gateway delivers it
    status, _, body = invoke(event)

    # Then it is accepted and one object in the artifacts bucket holds one line per item
    assert (status, body) == (202, {"accepted": 2})
    listed = stack.s3.list_objects_v2(
        Bucket=stack.topology.artifacts_bucket, Prefix="churn/feedback/dt="
    )
    [key] = [o["Key"] for o in listed["Contents"]]
    data = stack.s3.get_object(Bucket=stack.topology.artifacts_bucket, Key=key)["Body"].read()
    lines = [json.loads(line) for line in gzip.decompress(data).splitlines()]
    assert [(line["request_id"], line["index"], line["actual"]) for line in lines] == [
        (answer["request_id"], 0, "yes"),
        (answer["request_id"], 1, "no"),
    ]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code", "field"),
    [
        ("/v1/models/nope:feedback", None, {}, 404, "model_not_found", None),
        (
            "/v1/models/churn:feedback",
            '{"feedback": [{"request_id": "r", "actual": "yes"},'
            ' {"request_id": "r", "index": 1, "actual": "maybe"}]}',
            {},
            422,
            "invalid_feedback",
            "feedback[1].actual",
        ),
        (
            "/v1/models/churn:feedback",
            '{"feedback": [{"request_id": "r", "actual": "yes", "weight": 2}]}',
            {},
            422,
            "invalid_request",
            "feedback[0].weight",
        ),
        ("/v1/models/churn:feedback", None, {"Content-Type": "text/plain"}, 415, None, None),
    ],
    ids=["unknown-dataset", "unknown-class", "unknown-key", "media-type"],
)
def test_feedback_refusals_come_back_as_json_and_store_nothing(
    stack: Stack,
    churn_model: ChurnModel,
    path: str,
    body: str | None,
    headers: dict[str, str],
    status: int,
    code: str | None,
    field: str | None,
) -> None:
    # Given a live model and the stored feedback event, changed
    stack.publish(churn_model, "run-1")
    event = load_event("feedback.apigw_rest.json")
    event["path"] = path
    if body is not None:
        event["body"] = body
    event["headers"] = {**event["headers"], **headers}

    # When it is delivered
    answered, _, reply = invoke(event)

    # Then it is refused as the API's JSON error, naming the item at fault, and nothing is stored
    assert answered == status, reply
    assert code is None or reply["code"] == code
    assert field is None or reply["details"][0]["field"] == field
    if field is not None:
        assert reply["error"].startswith(f"{field}: ")
    listed = stack.s3.list_objects_v2(
        Bucket=stack.topology.artifacts_bucket, Prefix="churn/feedback/"
    )
    assert listed["KeyCount"] == 0


def test_predict_requests_the_model_cannot_answer_count_towards_the_error_rate(
    stack: Stack, churn_model: ChurnModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given serving metrics on, their documents caught
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    api.observers.cache_clear()
    documents: list[dict[str, Any]] = []
    route_emf(lambda line: documents.append(json.loads(line)), echo=False)
    try:
        stack.publish(churn_model, "run-1")
        good = load_event("predict.apigw_rest.json")
        wrong_type = copy.deepcopy(good) | {"body": '{"instances": [{"tenure_months": "3"}]}'}
        unknown = copy.deepcopy(good) | {"path": "/v1/models/nope:predict"}
        pinned = copy.deepcopy(wrong_type) | {"path": "/v1/models/churn/versions/1:predict"}
        malformed = copy.deepcopy(good) | {"body": "not json"}
        # When three are answered, two get 422 (live and pinned), one 404 and one 400
        statuses = [
            invoke(e)[0] for e in (good, good, good, wrong_type, pinned, unknown, malformed)
        ]
        assert statuses == [200, 200, 200, 422, 422, 404, 400]
        api.observers()[1].flush()
    finally:
        route_emf(None, echo=True)
    # Then only the 422s count: 2 of 5 requests for churn; nothing for an unknown dataset
    rates = {d["dataset"]: (d["Errors"], d["ErrorRate"]) for d in documents if "ErrorRate" in d}
    assert rates == {"churn": (2, 0.4)}
