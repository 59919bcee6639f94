"""``sluice console --stage S``: the console over a deployment on AWS (moto), found with the user's
credentials as every operator command finds it: the registry table, the artifacts bucket of the
caller's account and the pipeline's Step Functions executions, read-only."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.evaluate.logic import evaluate
from functions.shared.registry_dynamodb import DynamoDBRegistry, create_table
from functions.shared.storage import S3ObjectStore
from infra.cli import main
from infra.console.read_model import step_functions_runs
from infra.local.stack import free_port
from infra.topology import Topology
from tests.models import ARTIFACTS, TrainedModel, fixed_now, stage_run

TOPOLOGY = Topology(stage="consoletest")
PASS_MACHINE = {"StartAt": "Train", "States": {"Train": {"Type": "Pass", "End": True}}}


@pytest.fixture
def deployment(trained_models: dict[str, TrainedModel]) -> Iterator[DynamoDBRegistry]:
    """A stage with two evaluated versions of the binary model, 2 promoted then rolled back to 1,
    and one pipeline execution."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s3 = boto3.client("s3", region_name=TOPOLOGY.region)
        s3.create_bucket(Bucket=ARTIFACTS)
        account = boto3.client("sts", region_name=TOPOLOGY.region).get_caller_identity()
        topology = Topology(stage=TOPOLOGY.stage, account=account["Account"])
        s3.create_bucket(Bucket=topology.artifacts_bucket)
        dynamodb = boto3.client("dynamodb", region_name=TOPOLOGY.region)
        create_table(dynamodb, TOPOLOGY.registry_table)
        registry = DynamoDBRegistry(dynamodb, TOPOLOGY.registry_table)
        store = S3ObjectStore(s3)
        for n in (1, 2):
            state = stage_run(store, trained_models["binary"], run_name=f"run-{n}")
            evaluate(state, store=store, registry=registry, clock=fixed_now)
        registry.promote("binary", 1, expected_live=None, actor="test", reason="first")
        registry.promote("binary", 2, expected_live=1, actor="test", reason="better")
        registry.rollback("binary", 1, actor="cli:ops", reason="v2 misbehaves")
        stepfunctions = boto3.client("stepfunctions", region_name=TOPOLOGY.region)
        machine = stepfunctions.create_state_machine(
            name=topology.state_machine_name,
            definition=json.dumps(PASS_MACHINE),
            roleArn=topology.pipeline_role_arn,
        )
        execution = stepfunctions.start_execution(
            stateMachineArn=machine["stateMachineArn"], name="run-2", input='{"dataset": "binary"}'
        )
        # moto runs the execution on a thread of its own: wait for it to end, as the tests
        # read it as ended (under load it was still RUNNING at the first read)
        deadline = time.monotonic() + 30
        arn = execution["executionArn"]
        while stepfunctions.describe_execution(executionArn=arn)["status"] == "RUNNING":
            assert time.monotonic() < deadline, "moto's execution of the Pass machine never ended"
            time.sleep(0.02)
        yield registry


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method != "GET" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _serving(url: str) -> None:
    for _ in range(100):
        try:
            _get(url)
            return
        except urllib.error.URLError:
            time.sleep(0.05)
    raise AssertionError(f"the console never answered at {url}")


def test_the_console_over_a_stage_shows_its_registry_reports_runs_and_audit(
    deployment: DynamoDBRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given `sluice console --stage S` running, as a user runs it (SIGTERM stops it)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pages: dict[str, tuple[int, str]] = {}
    previous = signal.getsignal(signal.SIGTERM)

    def browse() -> None:
        try:
            _serving(url + "/")
            for path in (
                "/",
                "/datasets/binary",
                "/datasets/binary/versions/2/report",
                "/runs",
                "/runs/run-2",
                "/datasets/binary/drift",
                "/datasets/binary/retraining",
                "/datasets/binary/versions/3",
            ):
                pages[path] = _get(url + path)
            pages["POST /"] = _get(url + "/", "POST")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    browser = threading.Thread(target=browse)
    browser.start()
    try:
        code = main(["console", "--stage", TOPOLOGY.stage, "--port", str(port), "--json"])
    finally:
        browser.join()
        signal.signal(signal.SIGTERM, previous)
    assert code == 0
    started: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert started["url"] == url + "/" and "stage consoletest" in started["over"]

    # Then the index shows the dataset with its live version (1, after the rollback)
    status, index = pages["/"]
    assert status == 200 and 'href="/datasets/binary"' in index
    assert '<td class="num">1</td>' in index, index
    # and the dataset page lists both versions and the audit trail, the rollback with its reason
    status, dataset = pages["/datasets/binary"]
    assert status == 200 and "rolled_back" in dataset and "v2 misbehaves" in dataset
    # and the stored model report is served as evaluate wrote it
    status, report = pages["/datasets/binary/versions/2/report"]
    assert status == 200 and "<svg" in report and "version 2" in report
    # and the pipeline's execution is a run, with its state path and the gate's reasons
    status, runs = pages["/runs"]
    assert status == 200 and 'href="/runs/run-2"' in runs
    status, run = pages["/runs/run-2"]
    assert status == 200 and "Train" in run and "SUCCEEDED" in run
    assert 'href="/datasets/binary/versions/2"' in run  # paired with the version it registered
    assert pages["/datasets/binary/drift"][0] == 200
    assert pages["/datasets/binary/retraining"][0] == 200
    status, missing = pages["/datasets/binary/versions/3"]
    assert status == 404 and "no model version 3" in missing
    assert pages["POST /"][0] == 405


def test_an_ended_executions_history_is_read_once_across_page_loads(
    deployment: DynamoDBRegistry,
) -> None:
    # Given the stage's state machine with its one ended execution, and the calls counted
    stepfunctions = boto3.client("stepfunctions", region_name=TOPOLOGY.region)
    arn = stepfunctions.list_state_machines()["stateMachines"][0]["stateMachineArn"]
    calls: list[str] = []
    stepfunctions.meta.events.register(
        "before-call.states.GetExecutionHistory", lambda **_: calls.append("history")
    )
    ended: dict[str, dict[str, Any]] = {}
    # When the runs are read three times, as three page loads read them
    first = step_functions_runs(stepfunctions, arn, finished=ended)
    for _ in range(2):
        assert step_functions_runs(stepfunctions, arn, finished=ended) == first
    # Then its history was read once, and the run is the same each time
    assert [run["name"] for run in first] == ["run-2"] and first[0]["status"] == "SUCCEEDED"
    assert calls == ["history"]
