"""What the prediction API gives away: predictions and model metadata, never where anything
is stored. The one API key opens every dataset's predictions (docs/decisions.md), so no answer
may lead a caller to a model file, a training split, a report or a bucket, and a dataset that
has no live model is a 404 whatever else exists."""

from __future__ import annotations

import json

import pytest

from tests.models import TrainedModel
from tests.unit.test_inference import BUCKET, DATASET, Api, client_rows

# Anything that locates an artifact: a URI, the bucket, the registry's key layout.
LEAKS = ("s3://", BUCKET, "/models/", "/versions/", "report", "model.onnx", "profile.json")


def test_no_answer_says_where_models_data_or_reports_are_stored(
    trained_models: dict[str, TrainedModel],
) -> None:
    api = Api()
    model = trained_models["binary"]
    api.publish(model, run="run-1")
    version = api.publish(model, run="run-2", promote=False)  # a candidate next to the live one
    _, instances = client_rows(model, 3)
    replies = {
        "status": api.call("GET", f"/v1/models/{DATASET}"),
        "version": api.call("GET", f"/v1/models/{DATASET}/versions/{version}"),
        "metadata": api.call("GET", f"/v1/models/{DATASET}/metadata"),
        "predict": api.predict(instances),
        "pinned": api.predict(instances, f"/v1/models/{DATASET}/versions/{version}:predict"),
        "unknown version": api.call("GET", f"/v1/models/{DATASET}/versions/99"),
        "bad body": api.call("POST", f"/v1/models/{DATASET}:predict", "{"),
    }
    assert [r.status for r in replies.values()] == [200, 200, 200, 200, 200, 404, 400]
    for what, reply in replies.items():
        text = json.dumps(reply.body)
        assert not [leak for leak in LEAKS if leak in text], (what, text)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/other",  # a dataset with no live model
        "/v1/models/other/metadata",
        "/v1/models/other/versions/1",
        "/v1/models/..%2Fchurn",  # path-like names never reach the registry
        "/v1/models/%2E%2E",
        "/v1/models/churn%2F..%2Fother/metadata",
    ],
)
def test_another_name_reaches_nothing_of_the_live_dataset(
    path: str, trained_models: dict[str, TrainedModel]
) -> None:
    api = Api()
    api.publish(trained_models["binary"], run="run-1")
    reads = len(api.store.reads)
    reply = api.call("GET", path)
    assert reply.status in (400, 404), (path, reply.body)
    assert set(reply.body) <= {"error", "code", "details"}, reply.body  # an error, nothing else
    assert len(api.store.reads) == reads  # no model file was read for it
