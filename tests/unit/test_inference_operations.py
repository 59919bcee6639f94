"""The operator-facing parts of the prediction API on in-memory fakes: a retired dataset answers
410, ``GET /v1/models`` lists the live models, and a 413 says how many instances fit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.inference.models import (
    CATEGORICAL_VALUE_BYTES,
    MAX_BODY_BYTES,
    NUMERIC_VALUE_BYTES,
    instances_that_fit,
)
from functions.shared.contract import FeatureKind
from functions.shared.features import FeatureSpec
from tests.models import TrainedModel, publish_live
from tests.unit.test_inference import DATASET, TTL, Api, assert_error, client_rows


@pytest.fixture
def api() -> Api:
    return Api()


# --- retirement ----------------------------------------------------------------------------------


def test_a_retired_dataset_answers_410_on_every_route_and_serves_again_once_unretired(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a live model answering
    model = trained_models["binary"]
    api.publish(model, run="run-1")
    _, rows = client_rows(model, rows=2)
    assert api.predict(rows).status == 200

    # When an operator retires the dataset and the TTL passes
    api.registry.retire_dataset(DATASET, actor="cli:ana", reason="product closed")
    api.clock.advance(TTL)

    # Then every route naming it answers 410 model_retired, without the operator's words
    feedback = json.dumps({"feedback": [{"request_id": "r", "actual": model.card.classes[0]}]})
    replies = [
        api.predict(rows),
        api.predict(rows, path=f"/v1/models/{DATASET}/versions/1:predict"),
        api.call("GET", f"/v1/models/{DATASET}"),
        api.call("GET", f"/v1/models/{DATASET}/versions/1"),
        api.call("GET", f"/v1/models/{DATASET}/metadata"),
        api.call("POST", f"/v1/models/{DATASET}:feedback", feedback),
    ]
    for reply in replies:
        assert_error(reply, 410, "model_retired", mentions=f"'{DATASET}' was retired on")
        assert "product closed" not in reply.body["error"] and "ana" not in reply.body["error"]

    # And once un-retired it serves the same live version again
    api.registry.unretire_dataset(DATASET, actor="cli:ana", reason="back")
    api.clock.advance(TTL)
    assert api.predict(rows).body["model_version"] == "1"


# --- GET /v1/models -----------------------------------------------------------------------------


def test_the_model_list_names_each_live_model_and_nothing_that_locates_it(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    # Given two live datasets, one with a candidate only, and one retired
    api.publish(trained_models["binary"], run="run-1")  # churn v1
    publish_live(api.store, api.registry, trained_models["regression"], dataset="prices")
    publish_live(
        api.store, api.registry, trained_models["multiclass"], dataset="pending", promote=False
    )
    publish_live(api.store, api.registry, trained_models["binary"], dataset="closed")
    api.registry.retire_dataset("closed", actor="cli:ana", reason="gone")

    # When the list is read
    reply = api.call("GET", "/v1/models")

    # Then the live models are listed by name with version, task, metric and promotion time
    assert reply.status == 200, reply.body
    models = reply.body["models"]
    assert [m["dataset"] for m in models] == ["churn", "prices"]
    churn, prices = models
    live = api.registry.live("churn")
    assert live is not None
    assert churn == {
        "dataset": "churn",
        "model_version": "1",
        "task": "classification",
        "metric": {"name": trained_models["binary"].card.metric, "value": 0.91},
        "promoted_at": live.updated_at.isoformat().replace("+00:00", "Z"),
    }
    assert prices["task"] == "regression"
    # and nothing that locates an artifact
    text = json.dumps(reply.body)
    assert "s3://" not in text and "sha256" not in text and "run-1" not in text


def test_the_model_list_is_read_at_most_once_per_ttl(
    api: Api, trained_models: dict[str, TrainedModel]
) -> None:
    api.publish(trained_models["binary"], run="run-1")
    assert api.call("GET", "/v1/models").status == 200
    reads, store_reads = api.registry.reads, len(api.store.reads)
    assert api.call("GET", "/v1/models").status == 200
    assert (api.registry.reads, len(api.store.reads)) == (reads, store_reads)
    # a promotion shows once the TTL has passed
    api.publish(trained_models["binary"], run="run-2")
    api.clock.advance(TTL)
    assert api.call("GET", "/v1/models").body["models"][0]["model_version"] == "2"


# --- how many instances fit ----------------------------------------------------------------------


def _worst_case_instance(features: list[FeatureSpec]) -> dict[str, Any]:
    longest_float = -2.2250738585072014e-308
    assert len(json.dumps(longest_float)) == NUMERIC_VALUE_BYTES
    category = "x" * (CATEGORICAL_VALUE_BYTES - 2)
    return {f.name: longest_float if f.kind is FeatureKind.NUMERIC else category for f in features}


@pytest.mark.parametrize(
    "features",
    [
        [FeatureSpec(name=f"num_{i}", kind=FeatureKind.NUMERIC) for i in range(300)],
        [
            FeatureSpec(name=f"größe {i}", kind=FeatureKind.CATEGORICAL if i % 2 else "numeric")
            for i in range(57)
        ],
    ],
    ids=["300 numeric", "57 mixed, non-ASCII names"],
)
def test_the_estimated_instances_fit_in_the_body_at_their_longest(
    features: list[FeatureSpec],
) -> None:
    fit = instances_that_fit(features)
    instance = _worst_case_instance(features)
    assert len(json.dumps({"instances": [instance] * fit}).encode()) <= MAX_BODY_BYTES
    # and the estimate is tight: a few more would not fit
    assert len(json.dumps({"instances": [instance] * (fit + 2)}).encode()) > MAX_BODY_BYTES


def test_a_wide_models_metadata_advertises_what_fits_not_the_instance_limit(
    api: Api, wide_model: TrainedModel
) -> None:
    api.publish(wide_model, run="run-1")
    body = api.call("GET", f"/v1/models/{DATASET}/metadata").body
    fit = instances_that_fit(wide_model.card.features)
    assert len(wide_model.card.features) == 300
    assert body["max_instances"] == fit < 1000


def test_a_413_says_how_many_instances_of_this_model_fit(
    api: Api, wide_model: TrainedModel
) -> None:
    # Given a live 300-column model
    api.publish(wide_model, run="run-1")
    _, rows = client_rows(wide_model, rows=1)
    fit = instances_that_fit(wide_model.card.features)

    # When a body over 1 MiB is sent (live and pinned routes)
    body = json.dumps({"instances": rows * 600})
    assert len(body) > MAX_BODY_BYTES
    for path in (f"/v1/models/{DATASET}:predict", f"/v1/models/{DATASET}/versions/1:predict"):
        reply = api.call("POST", path, body)
        # Then the 413 names the model's width and how many instances fit, in message and body
        assert_error(reply, 413, "payload_too_large", mentions=f"at most {fit} instances fit")
        assert reply.body["max_instances"] == fit
        assert "300 features" in reply.body["error"]
    # and what it advertises does fit and is served
    within = api.predict(rows * fit)
    assert within.status == 200, within.body


def test_too_many_instances_says_how_many_fit_and_an_unknown_model_says_nothing_of_it(
    trained_models: dict[str, TrainedModel],
) -> None:
    api = Api(max_instances=3)
    model = trained_models["binary"]
    api.publish(model, run="run-1")
    _, rows = client_rows(model, rows=4)
    reply = api.predict(rows)
    assert_error(reply, 413, "too_many_instances", mentions="at most 3 instances fit")
    assert reply.body["max_instances"] == 3
    unknown = api.predict(rows, path="/v1/models/nobody:predict")
    assert unknown.status == 413 and "max_instances" not in unknown.body
