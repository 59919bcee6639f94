"""The pipeline definition run locally with the real handlers under moto: the happy path and the
failure paths, each leaving the live model untouched and the cause visible."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pandas as pd
import pytest

from functions.preprocess import handler as preprocess
from functions.preprocess.versions import read_manifest
from functions.shared import layout
from functions.shared.orchestration import RunInput
from functions.shared.pipeline_deps import pipeline_deps
from functions.shared.registry import ModelStatus
from functions.shared.registry_dynamodb import DynamoDBRegistry
from functions.shared.storage import S3ObjectStore, parse_s3_uri
from infra.local.asl import Execution
from infra.local.context import LocalLambdaContext
from infra.local.pipeline import run_pipeline
from infra.local.resources import LocalResources, receive_upload_events
from tests.builders import churn_frame, contract_bytes, csv_bytes, eventbridge_event
from tests.integration.conftest import Aws


@pytest.fixture(autouse=True)
def _pipeline_environment(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in aws.topology.pipeline_environment().items():
        monkeypatch.setenv(name, value)
    preprocess._deps.cache_clear()
    pipeline_deps.cache_clear()  # clients must be built inside each moto context
    yield
    pipeline_deps.cache_clear()


def _registry(aws: Aws) -> DynamoDBRegistry:
    client = boto3.client("dynamodb", region_name=aws.topology.region)
    return DynamoDBRegistry(client, aws.topology.registry_table)


def _upload(
    aws: Aws,
    name: str,
    seed: int,
    *,
    frame: pd.DataFrame | None = None,
    contract: bytes | None = None,
) -> RunInput:
    """Upload one more data file (``churn_frame`` unless ``frame``) and return the run
    preprocess started for it."""
    raw = aws.topology.raw_bucket
    contract = contract or contract_bytes(metric="roc_auc")
    aws.s3.put_object(Bucket=raw, Key="churn/contract.json", Body=contract)
    key = f"churn/data/{name}.csv"
    data = churn_frame(600, seed=seed) if frame is None else frame
    aws.s3.put_object(Bucket=raw, Key=key, Body=csv_bytes(data))
    info = aws.s3.head_object(Bucket=raw, Key=key)
    event: dict[str, Any] = {
        "version": "0",
        "id": f"event-{name}",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": aws.topology.account,
        "time": "2026-11-22T12:00:00Z",
        "region": aws.topology.region,
        "resources": [f"arn:aws:s3:::{raw}"],
        "detail": {
            "version": "0",
            "bucket": {"name": raw},
            "object": {
                "key": key,
                "size": info["ContentLength"],
                "etag": info["ETag"].strip('"'),
                "version-id": info.get("VersionId"),
                "sequencer": f"{seed:016d}",
            },
            "request-id": "r",
            "requester": aws.topology.account,
            "reason": "PutObject",
        },
    }
    outcome = preprocess.lambda_handler(
        event, LocalLambdaContext.for_function(aws.topology, "preprocess")
    )["outcomes"][0]
    assert outcome["status"] == "started", outcome
    execution = aws.sfn.describe_execution(executionArn=outcome["run_id"])
    return RunInput.model_validate_json(execution["input"])


def _run(aws: Aws, run: RunInput) -> Execution:
    return run_pipeline(aws.topology, run, S3ObjectStore(aws.s3))


def test_a_good_run_goes_live_through_every_state(aws: Aws) -> None:
    execution = _run(aws, _upload(aws, "jan", seed=1))

    assert execution.status == "SUCCEEDED"
    assert execution.path == [
        "PrepareTraining",
        "Train",
        "Evaluate",
        "Gate",
        "Promote",
        "Promoted",
    ]
    live = _registry(aws).live("churn")
    assert live is not None and live.version == 1
    # the model inference will load is byte-for-byte the one the registry vouches for
    model = aws.s3.get_object(
        Bucket=parse_s3_uri(live.model_uri)[0], Key=parse_s3_uri(live.model_uri)[1]
    )
    assert hashlib.sha256(model["Body"].read()).hexdigest() == live.sha256
    # and its report sits beside it: the page, and the JSON twin naming this version and gate
    bucket, model_key = parse_s3_uri(live.model_uri)
    page_key = layout.model_report_page_of(model_key)
    page = aws.s3.get_object(Bucket=bucket, Key=page_key)
    assert page["ContentType"].startswith("text/html")
    assert b"Model report" in page["Body"].read()
    twin_key = page_key.replace(layout.MODEL_REPORT_PAGE, layout.MODEL_REPORT_JSON)
    twin = json.loads(aws.s3.get_object(Bucket=bucket, Key=twin_key)["Body"].read())
    assert twin["model_version"] == 1 and twin["gate"]["passed"] is True
    # with the data section read from the dataset version preprocessing wrote
    assert twin["profile"]["available"] is True
    assert {c["column"] for c in twin["profile"]["columns"]} >= set(twin["profile"]["features"])


def test_a_failing_training_job_is_recorded_and_the_champion_stays(aws: Aws) -> None:
    # Given a live model
    assert _run(aws, _upload(aws, "jan", seed=1)).status == "SUCCEEDED"
    # When the next run's training job fails (a hyperparameter the script does not know)
    broken = _upload(aws, "feb", seed=2).model_copy(update={"hyperparameters": {"bogus": "1"}})
    execution = _run(aws, broken)
    # Then the run fails through RecordFailure with the job's reason, and version 1 serves
    assert execution.status == "FAILED" and execution.error == "Sluice.RunFailed"
    assert execution.path[-3:] == ["Train", "RecordFailure", "RunFailed"]
    registry = _registry(aws)
    live = registry.live("churn")
    assert live is not None and live.version == 1
    failure = registry.audit("churn")[-1]
    assert failure.action == "run_failed" and "bogus" in failure.reason
    assert failure.run_name == broken.run_name


def test_an_evaluate_crash_is_recorded_and_the_champion_stays(aws: Aws) -> None:
    assert _run(aws, _upload(aws, "jan", seed=1)).status == "SUCCEEDED"
    run = _upload(aws, "feb", seed=2)
    # Given the run's test split vanished between preprocessing and evaluation
    bucket, prefix = parse_s3_uri(run.test_uri)
    for item in aws.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        aws.s3.delete_object(Bucket=bucket, Key=item["Key"])
    # When the pipeline runs, then Evaluate's error is caught and recorded
    execution = _run(aws, run)
    assert execution.path[-3:] == ["Evaluate", "RecordFailure", "RunFailed"]
    recorded = next(e for e in execution.history if e.name == "RecordFailure")
    assert recorded.input is not None and recorded.input["failure"]["Error"] == "EvaluationError"
    live = _registry(aws).live("churn")
    assert live is not None and live.version == 1


def test_a_refused_challenger_is_rejected_with_reasons(aws: Aws) -> None:
    assert _run(aws, _upload(aws, "jan", seed=1)).status == "SUCCEEDED"
    # Given a run whose contract threshold no model can meet
    run = _upload(aws, "feb", seed=2).model_copy(update={"threshold": 0.9999})
    execution = _run(aws, run)
    assert execution.status == "SUCCEEDED" and execution.path[-2:] == ["Reject", "Refused"]
    registry = _registry(aws)
    assert registry.get("churn", 2).status is ModelStatus.REJECTED
    assert "misses threshold" in registry.get("churn", 2).status_reason
    assert json.loads(json.dumps(execution.output))["outcome"]["decision"]["live_version"] == 1


def _reshaped_churn(seed: int) -> pd.DataFrame:
    """A later export of the churn table: ``tenure`` renamed, ``region`` gone, monthly charges
    given as text bands, a ``channel`` column added."""
    frame = churn_frame(600, seed=seed)
    bands = pd.cut(frame["monthly_charges"], [-1e9, 50, 90, 1e9], labels=["low", "mid", "high"])
    return (
        frame.drop(columns=["region"])
        .rename(columns={"tenure": "tenure_months"})
        .assign(
            monthly_charges=bands.astype(str).where(bands.notna(), ""),
            channel=["web" if i % 3 else "shop" for i in range(len(frame))],
        )
    )


def test_a_schema_change_is_refused_naming_it_until_the_contract_accepts_it(aws: Aws) -> None:
    # Given version 1 live, trained on tenure, monthly_charges (numbers), plan, region
    assert _run(aws, _upload(aws, "jan", seed=1)).status == "SUCCEEDED"
    aws.s3.delete_object(Bucket=aws.topology.raw_bucket, Key="churn/data/jan.csv")

    # When the data is replaced by an export whose columns changed
    execution = _run(aws, _upload(aws, "feb", seed=2, frame=_reshaped_churn(2)))

    # Then the gate refuses the challenger and the decision names every change
    assert execution.status == "SUCCEEDED" and execution.path[-2:] == ["Reject", "Refused"]
    decision = json.loads(json.dumps(execution.output))["outcome"]["decision"]
    refusal = next(r for r in decision["reasons"] if r.startswith("refused:"))
    for named in (
        "removed: region (categorical)",
        "renamed: tenure → tenure_months (numeric)",
        "re-typed: monthly_charges (numeric → categorical)",
        "added: channel (categorical)",
    ):
        assert named in refusal, named
    assert decision["live_version"] == 1

    # And once the contract accepts the change, the threshold alone decides, and says so
    accepting = contract_bytes(metric="roc_auc", accept_schema_change=True)
    run = _upload(aws, "mar", seed=3, frame=_reshaped_churn(3), contract=accepting)
    assert run.accept_schema_change is True
    execution = _run(aws, run)
    assert execution.path[-2:] == ["Promote", "Promoted"], execution.path
    decision = json.loads(json.dumps(execution.output))["outcome"]["decision"]
    assert any("accepted by the contract (accept_schema_change)" in r for r in decision["reasons"])
    assert decision["live_version"] == 3


def test_a_bad_file_then_a_good_one_the_good_one_goes_live_and_the_bad_one_is_named(
    aws: Aws,
) -> None:
    # Given a dataset whose first file is ';'-separated (moto's S3, the real handler)
    raw = aws.topology.raw_bucket
    store = S3ObjectStore(aws.s3)
    aws.s3.put_object(Bucket=raw, Key="churn/contract.json", Body=contract_bytes(metric="roc_auc"))
    bad = csv_bytes(churn_frame(600, seed=1)).replace(b",", b";")

    def deliver(key: str, body: bytes) -> dict[str, Any]:
        aws.s3.put_object(Bucket=raw, Key=key, Body=body)
        info = store.head(raw, key)
        assert info is not None
        context = LocalLambdaContext.for_function(aws.topology, "preprocess")
        outcome: dict[str, Any] = preprocess.lambda_handler(eventbridge_event(info), context)[
            "outcomes"
        ][0]
        return outcome

    # When it is uploaded, it is rejected and starts nothing
    refused = deliver("churn/data/feb.csv", bad)
    assert refused["status"] == "rejected"
    assert "aws s3 rm s3://" in refused["reason"]
    # And when a good file follows, its run starts over the good file only and goes live
    outcome = deliver("churn/data/mar.csv", csv_bytes(churn_frame(600, seed=2)))
    assert outcome["status"] == "started", outcome
    [left_out] = outcome["excluded"]
    assert left_out["key"] == "churn/data/feb.csv" and left_out["rule"] == "unreadable_file"
    execution = aws.sfn.describe_execution(executionArn=outcome["run_id"])
    assert _run(aws, RunInput.model_validate_json(execution["input"])).status == "SUCCEEDED"
    live = _registry(aws).live("churn")
    assert live is not None and live.version == 1
    # The bad file's report says what is wrong and what to do; the raw file is as uploaded
    bucket = aws.topology.artifacts_bucket
    report = json.loads(store.get_bytes(bucket, left_out["report_key"]))
    assert report["decision"] == "excluded"
    assert "';'-separated" in report["violations"][0]["message"]
    assert f"aws s3 rm s3://{raw}/churn/data/feb.csv" in report["note"]
    assert aws.s3.get_object(Bucket=raw, Key="churn/data/feb.csv")["Body"].read() == bad


def test_a_deleted_file_drops_its_rows_and_a_replaced_one_supersedes_its_part(aws: Aws) -> None:
    """``aws s3 rm`` on a data file: S3 (moto, with the local stack's delete events) sends
    "Object Deleted" through the data rule; preprocess builds the version without the file and
    its run goes live. A file uploaded again under its key replaces its part."""
    raw = aws.topology.raw_bucket
    store = S3ObjectStore(aws.s3)
    first = _upload(aws, "jan", seed=1)
    assert _run(aws, first).status == "SUCCEEDED"
    second = _upload(aws, "feb", seed=2)
    assert _run(aws, second).status == "SUCCEEDED"
    receive_upload_events(lambda s: boto3.client(s, region_name=aws.topology.region), _queue(aws))

    # When feb is deleted (a delete marker: the raw object's versions stay)
    aws.s3.delete_object(Bucket=raw, Key="churn/data/feb.csv")
    events = receive_upload_events(
        lambda s: boto3.client(s, region_name=aws.topology.region), _queue(aws)
    )
    assert [e["detail-type"] for e in events] == ["Object Deleted"]
    context = LocalLambdaContext.for_function(aws.topology, "preprocess")
    [outcome] = preprocess.lambda_handler(events[0], context)["outcomes"]

    # Then the version holds jan's rows only, and its run trains and goes live
    assert outcome["status"] == "started", outcome
    bucket = aws.topology.artifacts_bucket
    manifest = read_manifest(store, bucket, "churn", outcome["dataset_version"])
    assert [p.key for p in manifest.parts] == ["churn/data/jan.csv"]
    assert manifest.rows.read == 600
    run = RunInput.model_validate_json(
        aws.sfn.describe_execution(executionArn=outcome["run_id"])["input"]
    )
    assert _run(aws, run).status == "SUCCEEDED"
    versions = aws.s3.list_object_versions(Bucket=raw, Prefix="churn/data/feb.csv")
    assert len(versions["Versions"]) == 1 and len(versions["DeleteMarkers"]) == 1
    # a replayed delete is a duplicate; a delete of an object that exists again is stale
    again = preprocess.lambda_handler(events[0], context)["outcomes"][0]
    assert again["status"] == "duplicate"

    # And jan uploaded again with other rows replaces its part
    replaced = _upload(aws, "jan", seed=3)
    after = read_manifest(store, bucket, "churn", replaced.dataset_version)
    assert [p.key for p in after.parts] == ["churn/data/jan.csv"]
    assert after.parts[0].part_id != manifest.parts[0].part_id
    assert after.parts[0].etag != manifest.parts[0].etag


def _queue(aws: Aws) -> LocalResources:
    return LocalResources(topology=aws.topology, upload_queue_url=aws.upload_queue)
