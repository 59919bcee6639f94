"""The drift job's handler under moto: the DynamoDB registry and S3, a scheduled event in, each
dataset's drift and live-quality outcome out (and their metrics as EMF on stdout)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from functions.drift import handler
from functions.inference.capture import CaptureBuffer, CaptureSettings
from functions.inference.feedback import FeedbackRequest, encode_feedback, feedback_key
from functions.shared.registry_dynamodb import DynamoDBRegistry, create_table
from functions.shared.storage import S3ObjectStore
from infra.local.context import LocalLambdaContext
from infra.topology import Topology
from tests.models import ARTIFACTS, TrainedModel, publish_live

TOPOLOGY = Topology(stage="test")
CONTEXT = LocalLambdaContext.for_function(TOPOLOGY, "drift")


@pytest.fixture
def deployment(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[S3ObjectStore, DynamoDBRegistry]]:
    for name, value in TOPOLOGY.drift_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ARTIFACTS_BUCKET", ARTIFACTS)  # where tests.models publishes
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    with mock_aws():
        handler._deps.cache_clear()  # clients must be built inside the moto context
        s3 = boto3.client("s3", region_name=TOPOLOGY.region)
        s3.create_bucket(Bucket=ARTIFACTS)
        dynamodb = boto3.client("dynamodb", region_name=TOPOLOGY.region)
        create_table(dynamodb, TOPOLOGY.registry_table)
        yield S3ObjectStore(s3), DynamoDBRegistry(dynamodb, TOPOLOGY.registry_table)
    handler._deps.cache_clear()


def test_each_outcome_carries_live_quality_and_publishes_it(
    deployment: tuple[S3ObjectStore, DynamoDBRegistry],
    trained_models: dict[str, TrainedModel],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a live classifier, 40 captured predictions of "yes" and feedback on each
    store, registry = deployment
    model = trained_models["binary"]
    publish_live(store, registry, model)
    dataset = model.card.dataset
    now = datetime.now(UTC)
    captured_at = (now - timedelta(hours=2)).timestamp()
    capture = CaptureBuffer(
        CaptureSettings(bucket=ARTIFACTS, sample_rate=1.0),
        store,
        lambda: captured_at,
        background=False,
    )
    prediction = {"label": "yes", "probabilities": {"no": 0.1, "yes": 0.9}}
    for n in range(40):
        capture.offer(dataset, "1", f"r{n}", [{}], [prediction])
    capture.flush()
    received = now - timedelta(hours=1)
    items = [{"request_id": f"r{n}", "actual": "yes" if n < 36 else "no"} for n in range(40)]
    store.put_bytes(
        ARTIFACTS,
        feedback_key(dataset, received, "0" * 32),
        encode_feedback(
            FeedbackRequest.model_validate({"feedback": items}),
            [item["actual"] for item in items],
            received,
        ),
    )
    capsys.readouterr()

    # When the schedule fires
    result = handler.lambda_handler({"source": "aws.events"}, CONTEXT)

    # Then the outcome (no profile: drift skipped) carries the measured accuracy, as JSON
    [outcome] = result["outcomes"]
    assert outcome["status"] == "skipped"
    quality = outcome["quality"]
    assert (quality["status"], quality["metric"], quality["value"]) == ("measured", "accuracy", 0.9)
    assert (quality["matched"], quality["unmatched"]) == (40, 0)
    assert json.loads(json.dumps(result)) == result
    # and the figure went out as EMF, under the dataset dimension only
    documents = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    [accuracy] = [d for d in documents if "LiveAccuracy" in d]
    assert accuracy["LiveAccuracy"] == 0.9
    assert accuracy["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["dataset"]]


def test_a_broken_dataset_is_logged_with_its_key_and_the_others_are_measured(
    deployment: tuple[S3ObjectStore, DynamoDBRegistry],
    trained_models: dict[str, TrainedModel],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given two datasets with a live model, one of whose model card was deleted from S3
    store, registry = deployment
    model = trained_models["binary"]
    publish_live(store, registry, model, dataset="aaa-broken")
    publish_live(store, registry, model, dataset="zzz-healthy")
    card_key = "aaa-broken/models/run-1/model_card.json"
    boto3.client("s3", region_name=TOPOLOGY.region).delete_object(Bucket=ARTIFACTS, Key=card_key)

    # When the schedule fires
    result = handler.lambda_handler({"source": "aws.events"}, CONTEXT)

    # Then the broken dataset's failure is an outcome and the healthy one is still looked at
    outcomes = {o["dataset"]: o for o in result["outcomes"]}
    assert outcomes["aaa-broken"]["status"] == "failed"
    assert outcomes["zzz-healthy"]["status"] == "skipped"  # no profile published: reached
    assert "training profile" in outcomes["zzz-healthy"]["reason"]
    # and the log line names the dataset and the S3 key, with the traceback
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    [failure] = [r for r in errors if r.getMessage().startswith("drift failed")]
    assert "aaa-broken" in failure.getMessage() and card_key in failure.getMessage()
    assert failure.__dict__["dataset"] == "aaa-broken"
    assert failure.__dict__["missing_key"] == f"s3://{ARTIFACTS}/{card_key}"
    assert failure.exc_info is not None  # the traceback goes with it
    # and so does live quality's, which reads the same card
    [quality] = [r for r in errors if r.getMessage().startswith("live quality failed")]
    assert card_key in quality.getMessage() and quality.__dict__["dataset"] == "aaa-broken"
