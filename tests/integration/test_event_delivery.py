"""Duplicate and out-of-order upload events, as S3 → EventBridge → SQS deliver them (at least
once, in no promised order), through the preprocess handler under moto: one dataset version
and one run per object version, and a stale event changes nothing."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from functions.preprocess import handler
from tests.builders import churn_frame, contract_bytes, csv_bytes
from tests.integration.conftest import Aws
from tests.integration.test_preprocess_handler import delivered_events, executions, invoke

DELIVERIES = 10


@pytest.fixture(autouse=True)
def _fresh_clients() -> None:
    handler._deps.cache_clear()  # clients must be built inside each moto context


def _data_events(aws: Aws) -> list[dict[str, Any]]:
    return [e for e in delivered_events(aws) if e["detail"]["object"]["key"].endswith(".csv")]


def _versions(aws: Aws) -> set[str]:
    listed = aws.s3.list_objects_v2(Bucket=aws.topology.artifacts_bucket, Prefix="churn/versions/")
    return {item["Key"].split("/")[2] for item in listed.get("Contents", [])}


def _upload(aws: Aws, rows: int = 400, seed: int = 1) -> dict[str, Any]:
    raw = aws.topology.raw_bucket
    aws.s3.put_object(Bucket=raw, Key="churn/contract.json", Body=contract_bytes())
    aws.s3.put_object(
        Bucket=raw, Key="churn/data/jan.csv", Body=csv_bytes(churn_frame(rows, seed=seed))
    )
    [event] = _data_events(aws)
    return event


def test_ten_deliveries_of_one_upload_give_one_version_and_one_run(aws: Aws) -> None:
    event = _upload(aws)
    statuses = [invoke(json.loads(json.dumps(event)))[0]["status"] for _ in range(DELIVERIES)]
    assert statuses == ["started"] + ["duplicate"] * (DELIVERIES - 1)
    assert len(executions(aws)) == 1
    assert len(_versions(aws)) == 1


def test_ten_concurrent_deliveries_give_one_run_and_an_intact_version(aws: Aws) -> None:
    # Lambda may run the same message's redeliveries side by side
    event = _upload(aws)
    outcomes: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(DELIVERIES)

    def deliver() -> None:
        start.wait()
        try:
            outcomes.extend(invoke(json.loads(json.dumps(event))))
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(DELIVERIES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(outcomes) == DELIVERIES
    assert {o["status"] for o in outcomes} <= {"started", "duplicate"}
    [run] = executions(aws)  # however many raced, one execution
    [version] = _versions(aws)
    assert {o["run_name"] for o in outcomes if o.get("run_name")} == {run["name"]}
    manifest = json.loads(
        aws.s3.get_object(
            Bucket=aws.topology.artifacts_bucket, Key=f"churn/versions/{version}/manifest.json"
        )["Body"].read()
    )
    assert manifest["rows"]["read"] == 400  # written whole, whichever delivery wrote it last


def test_a_late_event_for_an_older_object_version_is_a_no_op(aws: Aws) -> None:
    # Given January's file uploaded twice: two object versions, two events
    raw = aws.topology.raw_bucket
    aws.s3.put_object(Bucket=raw, Key="churn/contract.json", Body=contract_bytes())
    bodies = [csv_bytes(churn_frame(400, seed=seed)) for seed in (1, 2)]
    put = [aws.s3.put_object(Bucket=raw, Key="churn/data/jan.csv", Body=b) for b in bodies]
    by_version = {e["detail"]["object"]["version-id"]: e for e in _data_events(aws)}
    older, newer = (by_version[p["VersionId"]] for p in put)
    # When the newer one is delivered first and the older one after it
    assert invoke(newer)[0]["status"] == "started"
    versions = _versions(aws)
    late = invoke(older)
    # Then the late one is stale: no version, no run, and the raw objects are as uploaded
    assert late[0]["status"] == "stale"
    assert len(executions(aws)) == 1 and _versions(aws) == versions
    current = aws.s3.get_object(Bucket=raw, Key="churn/data/jan.csv")["Body"].read()
    assert current == bodies[1]
    listed = aws.s3.list_object_versions(Bucket=raw, Prefix="churn/data/jan.csv")["Versions"]
    assert len(listed) == 2  # nothing deleted or overwritten
