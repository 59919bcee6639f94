"""Closing the loop on the local stack, through real clients: a served model gets traffic from a
shifted distribution, the drift job measures it, the drift alarm (the definition CDK deploys)
fires, the retrain guard starts exactly one run, which is gated as usual; then a burst of alarm
events starts nothing more."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from functions.shared.registry_dynamodb import DynamoDBRegistry
from infra.alarms import alarm_prefix, alarm_specs
from infra.cli import main
from infra.local.alarms import evaluate, state_change_event
from infra.local.stack import (
    ALARMS_FILE,
    DRIFT_FILE,
    RETRAIN_FILE,
    LocalStack,
    StackConfig,
    free_port,
    read_history,
)
from infra.topology import Topology
from tests.builders import churn_frame, contract_bytes, csv_bytes
from tests.e2e.test_local_stack import API_KEY, _get, _post, live_pointer
from tests.e2e.test_local_stack import _wait_for as wait_for

DRIFT_SECONDS = 2.0  # the drift job's schedule, and so the drift alarm's period


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    saved = dict(os.environ)  # the stack sets its functions' environment process-wide
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    config = StackConfig(
        topology=Topology(stage="e2e"),
        aws_port=free_port(),
        api_port=free_port(),
        api_key=API_KEY,
        state_dir=tmp_path / ".sluice",
        drift_seconds=DRIFT_SECONDS,
        alarm_seconds=0.5,
        environment={  # every request captured, and written within a second
            "CAPTURE_SAMPLE_RATE": "1",
            "CAPTURE_MAX_AGE_SECONDS": "0.5",
            "CAPTURE_FLUSH_INTERVAL_SECONDS": "0.2",
        },
    )
    try:
        with LocalStack(config, log=lambda line: None) as running:
            yield running
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _wait_for(condition: Callable[[], Any], what: str, stack: LocalStack) -> Any:
    """test_local_stack's wait, its failure also naming the latest monitoring history."""
    try:
        return wait_for(condition, what, stack)
    except AssertionError as error:
        history = {
            name: read_history(stack.config.state_dir, name)[-5:]
            for name in (DRIFT_FILE, ALARMS_FILE, RETRAIN_FILE)
        }
        raise AssertionError(f"{error}; {history}") from None


def _decisions(stack: LocalStack) -> list[dict[str, Any]]:
    return read_history(stack.config.state_dir, RETRAIN_FILE)


def test_shifted_traffic_fires_the_drift_alarm_and_the_guard_starts_exactly_one_gated_run(
    stack: LocalStack,
) -> None:
    topology = stack.config.topology
    cloudwatch = stack.client("cloudwatch")

    def retraining_alarms() -> dict[str, dict[str, Any]]:
        found = cloudwatch.describe_alarms(AlarmNamePrefix=alarm_prefix(topology))
        return {a["AlarmName"]: a for a in found["MetricAlarms"]}

    # churn is declared nowhere (no deployment context, no configuration): no alarm watches it
    assert retraining_alarms() == {}
    s3 = stack.client("s3")
    s3.put_object(Bucket=topology.raw_bucket, Key="churn/contract.json", Body=contract_bytes())
    frame = churn_frame(800, seed=4)
    s3.put_object(Bucket=topology.raw_bucket, Key="churn/data/jan.csv", Body=csv_bytes(frame))
    registry = DynamoDBRegistry(stack.client("dynamodb"), topology.registry_table)
    first = _wait_for(lambda: live_pointer(registry, "churn"), "a live model", stack)
    _wait_for(lambda: stack.runs, "the upload's run record", stack)
    # Its first model went live: promote put its three alarms, with the drift job's period
    specs = alarm_specs(topology, "churn", monitor_period_seconds=int(DRIFT_SECONDS))
    decision = stack.runs[0].decision
    assert decision is not None and decision["alarms"] == [spec.name for spec in specs]
    put = retraining_alarms()
    assert set(put) == {spec.name for spec in specs}
    for spec in specs:
        expected = spec.put_metric_alarm()
        assert {k: put[spec.name][k] for k in expected} == expected
    # No traffic yet: the drift job skips, the alarm has no datapoints and stays OK.
    assert not [d for d in _decisions(stack) if d["outcome"] == "started"]

    # Traffic from a shifted distribution: much longer tenure, triple the charges.
    shifted = churn_frame(500, seed=11)
    shifted["tenure"] = shifted["tenure"] + 60
    shifted["monthly_charges"] = shifted["monthly_charges"] * 3
    _, metadata = _get(f"{stack.api_url}/v1/models/churn/metadata")
    features = [f["name"] for f in metadata["features"]]
    rows = json.loads(shifted[features].to_json(orient="records"))
    for start in range(0, len(rows), 100):
        status, body = _post(
            f"{stack.api_url}/v1/models/churn:predict",
            {"instances": rows[start : start + 100]},
            API_KEY,
        )
        assert status == 200, body

    # The drift metric rises...
    measured = _wait_for(
        lambda: [
            d for d in read_history(stack.config.state_dir, DRIFT_FILE) if d["live_rows"] >= 100
        ],
        "a drift measurement",
        stack,
    )
    assert "level major" in measured[-1]["reason"], measured[-1]
    report_key = measured[-1]["report_uri"].split("/", 3)[3]
    report = json.loads(
        s3.get_object(Bucket=topology.artifacts_bucket, Key=report_key)["Body"].read()
    )
    assert report["level"] == "major" and report["max_psi"] >= 0.25
    # ...the drift alarm fires, on 2 of the last 3 datapoints...
    fired = _wait_for(
        lambda: [
            a for a in read_history(stack.config.state_dir, ALARMS_FILE) if a["state"] == "ALARM"
        ],
        "the drift alarm",
        stack,
    )
    assert fired[0]["alarm"] == "sluice-e2e.retrain.churn.drift"
    assert fired[0]["reason"].startswith("Threshold Crossed: 2 out of the last 3 datapoints")
    # ...and the guard starts one run over the dataset's current data.
    started = _wait_for(
        lambda: [d for d in _decisions(stack) if d["outcome"] == "started"],
        "a guarded start",
        stack,
    )[0]
    assert started["source"] == "sluice-e2e.retrain.churn.drift"
    assert started["run_name"].startswith("retrain-churn-")
    assert started["reason"].startswith("started: no previous run recorded (")

    # The run is gated as usual: evaluated against the live champion, then promoted or refused.
    run = _wait_for(
        lambda: [r for r in stack.runs if r.name == started["run_name"]], "the guarded run", stack
    )[0]
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    assert "Evaluate" in run.path and run.path[-1] in ("Promoted", "Rejected"), run.path
    assert run.decision is not None and run.decision["kind"] in ("promoted", "refused")
    reasons = run.decision["reasons"]
    assert any(r.startswith("challenger ") and " vs champion " in r for r in reasons), reasons
    live = registry.live("churn")
    assert live is not None
    if run.decision["kind"] == "promoted":  # a new version serves; else the champion stands
        assert live.version == first.version + 1
    else:
        assert live == first
    finished = _wait_for(
        lambda: [d for d in _decisions(stack) if d["outcome"] == "finished"], "the run's end", stack
    )
    assert finished[0]["run_name"] == started["run_name"]

    # A burst of 100 alarm events within a minute starts nothing more.
    spec = alarm_specs(topology, "churn", monitor_period_seconds=int(DRIFT_SECONDS))[0]
    before = len(_decisions(stack))
    began = time.monotonic()
    for _ in range(100):
        now = datetime.now(UTC)
        current = int(now.timestamp()) // spec.period_seconds * spec.period_seconds
        evaluation = evaluate(spec, {current: 0.9, current - spec.period_seconds: 0.9}, now)
        assert evaluation.state == "ALARM"
        stack.retrain(state_change_event(spec, topology, evaluation, "OK", "", now))
    assert time.monotonic() - began < 60
    burst = _decisions(stack)[before:]
    assert len([d for d in burst if d["source"] == spec.name]) >= 100
    assert [d for d in _decisions(stack) if d["outcome"] == "started"] == [started]
    assert {d["guard"] for d in burst if d["outcome"] == "skipped"} <= {"debounce", "in_flight"}
    assert len([r for r in stack.runs if r.name.startswith("retrain-")]) == 1

    # Every decision, the alarm and the measurements are in `sluice status`.
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["status", "--state-dir", str(stack.config.state_dir), "--json"]) == 0
    status = json.loads(out.getvalue())
    assert [d["outcome"] for d in status["retrain"]].count("started") == 1
    assert any(a["state"] == "ALARM" for a in status["alarms"])
    out = io.StringIO()
    with redirect_stdout(out):
        main(["status", "--state-dir", str(stack.config.state_dir)])
    assert "retrain" in out.getvalue() and "(debounce)" in out.getvalue()

    # Retiring the dataset deletes its alarms, and the local CloudWatch stops evaluating them
    with redirect_stdout(io.StringIO()):
        assert (
            main(
                ["retire", "churn", "--reason", "done", "--state-dir", str(stack.config.state_dir)]
            )
            == 0
        )
    assert retraining_alarms() == {}
    _wait_for(
        lambda: stack.alarms is not None and not stack.alarms.specs(), "no alarm evaluated", stack
    )
