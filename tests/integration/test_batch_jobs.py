"""Batch files past the Lambda, end to end on moto's server: the batch function routes a file past
its cap to the batch jobs state machine (infra/statemachine/batch.asl.json), the local
processing runner runs the job (``python -m functions.batch.job_boot``) in a subprocess that
reaches the endpoint over HTTP, and the predictions it leaves are the Lambda path's."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from functions.batch.handler import lambda_handler
from functions.batch.route import BatchJobInput
from functions.shared import layout
from functions.shared.storage import ObjectInfo, S3ObjectStore
from infra.local.asl import Execution
from infra.local.context import LocalLambdaContext
from infra.local.pipeline import run_batch_job
from infra.topology import Topology
from tests.builders import eventbridge_event
from tests.integration.conftest import provisioned_server
from tests.models import ARTIFACTS, TrainedModel, publish_live


@dataclass
class Endpoint:
    topology: Topology
    s3: Any
    sfn: Any
    store: S3ObjectStore


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    topology = Topology(stage="batchjobs")
    with provisioned_server(topology) as client:
        s3 = client("s3")
        yield Endpoint(topology, s3, client("stepfunctions"), S3ObjectStore(s3))


def _event(env: Endpoint, key: str, body: bytes) -> dict[str, Any]:
    put = env.s3.put_object(Bucket=env.topology.raw_bucket, Key=key, Body=body)
    info = ObjectInfo(
        env.topology.raw_bucket, key, len(body), put["ETag"].strip('"'), put.get("VersionId")
    )
    return eventbridge_event(info)


def _handle(env: Endpoint, event: dict[str, Any]) -> dict[str, Any]:
    context = LocalLambdaContext.for_function(env.topology, "batch")
    (outcome,) = lambda_handler(event, context)["outcomes"]
    return outcome  # type: ignore[no-any-return]


def _job(env: Endpoint, outcome: dict[str, Any], **changes: Any) -> Execution:
    assert outcome["status"] == "routed", outcome["reason"]
    described = env.sfn.describe_execution(executionArn=outcome["execution"])
    job = BatchJobInput.model_validate_json(described["input"]).model_copy(update=changes)
    return run_batch_job(env.topology, job, env.store)


def _predictions(env: Endpoint, prefix: str) -> pd.DataFrame:
    listed = env.s3.list_objects_v2(Bucket=env.topology.artifacts_bucket, Prefix=prefix)
    keys = sorted(o["Key"] for o in listed["Contents"] if o["Key"].endswith(".parquet"))
    frames = [
        pq.read_table(io.BytesIO(env.store.get_bytes(env.topology.artifacts_bucket, k)))
        for k in keys
    ]
    return pd.concat([f.to_pandas() for f in frames], ignore_index=True)


def _setup(env: Endpoint, model: TrainedModel) -> tuple[str, bytes]:
    """The model live, and a batch file of its test rows (features only)."""
    # tests.models publishes to its own bucket name: mirror it into the stack's
    env.s3.create_bucket(Bucket=ARTIFACTS)
    publish_live(env.store, _registry(env), model)
    frame = model.split("test")[[f.name for f in model.card.features]]
    return f"{model.card.dataset}/batch/big.csv", frame.to_csv(index=False).encode()


def _registry(env: Endpoint) -> Any:
    import boto3

    from functions.shared.registry_dynamodb import DynamoDBRegistry

    client = boto3.client("dynamodb", region_name=env.topology.region)
    return DynamoDBRegistry(client, env.topology.registry_table)


def test_a_file_past_the_cap_is_scored_by_a_processing_job_as_the_lambda_scores_it(
    endpoint: Endpoint, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a live model and a batch file bigger than the function's cap (1 KB here)
    env = endpoint
    model = trained_models["multiclass"]
    key, body = _setup(env, model)
    os.environ["MAX_FILE_BYTES"] = "1000"
    from functions.batch import handler

    handler._deps.cache_clear()

    # When its upload event reaches the batch function
    event = _event(env, key, body)
    outcome = _handle(env, event)

    # Then it started a job and scored nothing itself; the same event again starts nothing
    assert outcome["status"] == "routed" and outcome["job_name"], outcome
    assert _handle(env, event)["status"] == "duplicate"
    executions = env.sfn.list_executions(stateMachineArn=env.topology.batch_jobs_state_machine_arn)[
        "executions"
    ]
    assert len(executions) == 1

    # When the machine runs: the local runner runs the job in a subprocess
    execution = _job(env, outcome)

    # Then the job scored every row, and its predictions are the Lambda path's, to the value
    assert execution.status == "SUCCEEDED", execution.history[-1]
    assert execution.path == ["ScoreFile", "Scored"]
    prefix = layout.predictions_prefix(model.card.dataset, key, 1)
    manifest = json.loads(
        env.store.get_bytes(env.topology.artifacts_bucket, f"{prefix}_manifest.json")
    )
    assert manifest["status"] == "scored" and manifest["rows"] == len(model.split("test"))
    by_job = _predictions(env, prefix)
    os.environ["MAX_FILE_BYTES"] = str(10**9)
    handler._deps.cache_clear()
    again = json.loads(json.dumps(event))
    again["detail"]["object"]["sequencer"] = "0002"  # the file uploaded again: another event
    assert _handle(env, again)["status"] == "scored"
    pd.testing.assert_frame_equal(by_job, _predictions(env, prefix))


def test_a_failed_job_leaves_the_files_report_and_publishes_nothing(
    endpoint: Endpoint, trained_models: dict[str, TrainedModel]
) -> None:
    # Given a file routed to a job, then the pinned model's card lost before the job runs (a
    # fault of the job's world, not of the file)
    env = endpoint
    model = trained_models["regression"]
    key, body = _setup(env, model)
    os.environ["MAX_FILE_BYTES"] = "1000"
    from functions.batch import handler

    handler._deps.cache_clear()
    outcome = _handle(env, _event(env, key, body))
    live = _registry(env).live(model.card.dataset)
    env.s3.delete_object(Bucket=ARTIFACTS, Key=live.card_uri.split("/", 3)[3])

    # When the job runs
    execution = _job(env, outcome)

    # Then the machine failed after the function filed the file's report with the job's reason
    assert execution.status == "FAILED" and execution.path == [
        "ScoreFile",
        "ReportFailure",
        "Failed",
    ]
    error_key = layout.predictions_error_key(model.card.dataset, key)
    report = json.loads(env.store.get_bytes(env.topology.artifacts_bucket, error_key))
    assert report["status"] == "rejected" and "AlgorithmError" in report["reason"]
    assert "ObjectNotFoundError" in report["reason"]  # the job's own words
    assert outcome["job_name"] in report["reason"]
    listed = env.s3.list_objects_v2(
        Bucket=env.topology.artifacts_bucket, Prefix=f"{model.card.dataset}/predictions/"
    )
    assert not [o["Key"] for o in listed["Contents"] if o["Key"].endswith(".parquet")]
