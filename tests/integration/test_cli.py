"""The operator commands against a deployment's AWS APIs (moto): models, promote, rollback,
predict. Each runs through ``infra.cli.main`` exactly as the console script does."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.evaluate.logic import evaluate
from functions.inference import api as inference_api
from functions.inference import handler as inference_handler
from functions.shared.registry_dynamodb import DynamoDBRegistry, create_table
from functions.shared.storage import S3ObjectStore
from infra.cli import function_logs_to, main
from infra.local.api_gateway import REQUEST_ID_HEADER, LocalApiGateway
from infra.local.context import LocalLambdaContext
from infra.local.stack import PENDING_DIR, RUNS_FILE, UPLOADS_FILE
from infra.topology import Topology
from tests.models import ARTIFACTS, TrainedModel, fixed_now, stage_run

TOPOLOGY = Topology(stage="clitest")


@pytest.fixture
def deployment(trained_models: dict[str, TrainedModel]) -> Iterator[DynamoDBRegistry]:
    """A stage with three evaluated versions of the binary model: 1 retired, 2 live, 3 refused by
    the gate (its threshold out of reach) and rejected."""
    environment = dict(os.environ)  # `sluice predict` sets the inference function's environment
    with mock_aws():
        s3 = boto3.client("s3", region_name=TOPOLOGY.region)
        s3.create_bucket(Bucket=ARTIFACTS)
        dynamodb = boto3.client("dynamodb", region_name=TOPOLOGY.region)
        create_table(dynamodb, TOPOLOGY.registry_table)
        registry = DynamoDBRegistry(dynamodb, TOPOLOGY.registry_table)
        store = S3ObjectStore(s3)
        for n in (1, 2, 3):
            threshold = 0.9999 if n == 3 else None
            state = stage_run(
                store, trained_models["binary"], run_name=f"run-{n}", threshold=threshold
            )
            evaluate(state, store=store, registry=registry, clock=fixed_now)
        registry.promote("binary", 1, expected_live=None, actor="test", reason="first")
        registry.promote("binary", 2, expected_live=1, actor="test", reason="better")
        registry.reject("binary", 3, actor="test", reason="worse")
        inference_api.dependencies.cache_clear()
        inference_api.observers.cache_clear()
        yield registry
        inference_api.observers()[0].close()  # capture writes to moto, never beyond
        inference_api.dependencies.cache_clear()
        inference_api.observers.cache_clear()
    os.environ.clear()
    os.environ.update(environment)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--stage", TOPOLOGY.stage])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_models_lists_datasets_then_versions_and_audit(
    deployment: DynamoDBRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = _json(capsys, "models")
    assert listing == {"datasets": [{"dataset": "binary", "live_version": 2, "versions": 3}]}

    detail = _json(capsys, "models", "binary")
    assert [(v["version"], v["status"]) for v in detail["versions"]] == [
        (1, "retired"),
        (2, "live"),
        (3, "rejected"),
    ]
    assert detail["live"]["version"] == 2
    assert [a["action"] for a in detail["audit"]][-3:] == ["promoted", "promoted", "rejected"]

    code, out, _ = _run(capsys, "models", "binary")
    assert code == 0 and "rejected" in out and "audit:" in out


def test_promote_and_rollback_are_audited_operations(
    deployment: DynamoDBRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    # When an operator rolls back, then the most recent retired version (1) serves again
    rolled = _json(capsys, "rollback", "binary", "--reason", "v2 misbehaves")
    assert rolled["previous_live"] == 2 and rolled["live"]["version"] == 1
    # and promoting 2 again works, with the reason in the audit trail, by a cli actor
    promoted = _json(capsys, "promote", "binary", "2", "--reason", "fixed upstream")
    assert promoted["live"]["version"] == 2
    last = deployment.audit("binary")[-1]
    assert last.action == "promoted" and last.reason == "fixed upstream"
    assert last.actor.startswith("cli:")


def test_promoting_a_rejected_version_needs_force(
    deployment: DynamoDBRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "promote", "binary", "3", "--reason", "try", "--json")
    assert code == 1
    assert json.loads(out)["error"] == "InvalidTransitionError"
    live = deployment.live("binary")
    assert live is not None and live.version == 2

    forced = _json(capsys, "promote", "binary", "3", "--reason", "operator override", "--force")
    assert forced["live"]["version"] == 3


def test_rollback_says_from_which_version_to_which_and_why(
    deployment: DynamoDBRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 2 live after 1, and an operator who promoted 1 again over 2
    _json(capsys, "promote", "binary", "1", "--reason", "compare with the old one")
    # When rolling back / Then 2, which 1 replaced, is back, and the line says why
    code, out, err = _run(capsys, "rollback", "binary", "--reason", "undo")
    assert code == 0, err
    assert out.startswith("binary: rolled back from version 1 to version 2: version 2 was live ")
    assert "promoted version 1" in out and "(compare with the old one)" in out
    # And a second rollback undoes the first
    again = _json(capsys, "rollback", "binary", "--reason", "undo the undo")
    assert (again["previous_live"], again["live"]["version"]) == (2, 1)
    assert "rolled back to version 2" in again["why"]


def test_a_refused_version_stays_refused_in_listings_after_force_and_rollback(
    deployment: DynamoDBRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given version 3, refused by the gate, forced live by an operator, then rolled back
    _json(capsys, "promote", "binary", "3", "--reason", "operator override", "--force")
    _json(capsys, "rollback", "binary", "--reason", "the gate was right")
    # When the versions are listed / Then 3 is retired and still refused, with the gate's reasons
    detail = _json(capsys, "models", "binary")
    assert [(v["version"], v["status"], v["gate"]) for v in detail["versions"]] == [
        (1, "retired", "passed"),
        (2, "live", "passed"),
        (3, "retired", "refused"),
    ]
    assert any("0.9999" in reason for reason in detail["versions"][2]["gate_reasons"])
    code, out, _ = _run(capsys, "models", "binary")
    row = next(line for line in out.splitlines() if line.split()[:1] == ["3"])
    assert code == 0 and row.split()[1:3] == ["retired", "refused"]


def test_rollback_to_a_version_that_never_served_is_refused(
    deployment: DynamoDBRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "rollback", "binary", "--to", "3", "--reason", "x")
    assert code == 1 and "only a retired version" in err


def test_predict_runs_the_inference_handler_against_the_stage(
    deployment: DynamoDBRegistry,
    trained_models: dict[str, TrainedModel],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given two rows of the binary model's test split, as JSON instances
    test = trained_models["binary"].split("test").head(2)
    features = [f.name for f in trained_models["binary"].card.features]
    instances = json.loads(test[features].to_json(orient="records"))

    answer = _json(capsys, "predict", "binary", json.dumps(instances))
    assert answer["model_version"] == "2" and len(answer["predictions"]) == 2

    pinned = _json(
        capsys, "predict", "binary", json.dumps({"instances": instances}), "--version", "1"
    )
    assert pinned["model_version"] == "1"


def test_predict_reports_a_clients_mistake_with_the_apis_message(
    deployment: DynamoDBRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "predict", "binary", json.dumps([{"num_0": 1.0}]))
    assert code == 1
    assert "num_1" in err  # the API names a missing feature


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "binary", "{not json"], "not valid JSON"),
        (["predict", "binary", "42"], "list of instances"),
        (["predict", "../etc", "[]"], "must match"),
        (["predict", "binary", "@/no/such/file.json"], "no such file"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err


def test_predict_over_http_through_the_local_api_gateway(
    deployment: DynamoDBRegistry,
    trained_models: dict[str, TrainedModel],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the inference handler behind a local API Gateway that requires an API key
    test = trained_models["binary"].split("test").head(3)
    features = [f.name for f in trained_models["binary"].card.features]
    instances = json.dumps(json.loads(test[features].to_json(orient="records")))
    os.environ.update(TOPOLOGY.inference_environment())
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"  # EMF would print to this stdout
    context = lambda: LocalLambdaContext.for_function(TOPOLOGY, "inference")  # noqa: E731
    gateway = LocalApiGateway(inference_handler.lambda_handler, context, api_key="k-123")
    # (the server thread's function logs must not mix with the command's answer)
    with function_logs_to(sys.stderr), gateway as api:
        # When the CLI posts with the key, then real HTTP returns the live model's predictions
        answer = _json(
            capsys, "predict", "binary", instances, "--url", api.url, "--api-key", "k-123"
        )
        # and without the key the gateway refuses before the function runs
        code, _, err = _run(capsys, "predict", "binary", instances, "--url", api.url)
        # and, as on AWS, the request id the body names is the x-amzn-RequestId header
        request = urllib.request.Request(
            f"{api.url}/v1/models/binary:predict",
            data=json.dumps({"instances": json.loads(instances)}).encode(),
            headers={"x-api-key": "k-123", "content-type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            header, body = response.headers[REQUEST_ID_HEADER], json.loads(response.read())
    assert answer["model_version"] == "2" and len(answer["predictions"]) == 3
    assert code == 1 and "Forbidden" in err
    assert answer["request_id"] and header == body["request_id"]


def test_status_keeps_every_complete_record_and_lists_pending_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given history files as a crash mid-append leaves them (a torn last line), and a pending run
    run = {
        "name": "churn-abc",
        "dataset": "churn",
        "status": "SUCCEEDED",
        "path": ["Train", "Promoted"],
        "error": None,
        "cause": None,
        "states_seconds": {},
        "started_at": "2026-11-22T00:00:00+00:00",
        "seconds": 1.5,
        "decision": None,
    }
    (tmp_path / RUNS_FILE).write_text(json.dumps(run) + '\n{"name": "churn-to')
    (tmp_path / PENDING_DIR).mkdir()
    (tmp_path / PENDING_DIR / "1700000000000000000-churn-def.json").write_text("{}")

    assert main(["status", "--state-dir", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in listed["runs"]] == ["churn-abc"]
    assert listed["pending"] == ["churn-def"]
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    assert "pending  churn-def" in capsys.readouterr().out


def test_status_shows_a_model_shipped_as_a_parity_fallback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a run whose promoted model is linear because xgboost's export failed parity
    note = "'linear' shipped because a better candidate failed parity: max diff 0.0011"
    run = {
        "name": "cars-abc",
        "dataset": "cars",
        "status": "SUCCEEDED",
        "path": ["Train", "Promoted"],
        "error": None,
        "cause": None,
        "states_seconds": {},
        "started_at": "2026-12-03T00:00:00+00:00",
        "seconds": 1.5,
        "decision": {"kind": "promoted", "model_version": 2, "live_version": 2,
                     "reasons": [], "parity_fallback": note},
    }  # fmt: skip
    (tmp_path / RUNS_FILE).write_text(json.dumps(run) + "\n")
    # When the status is shown, then the run says so under its decision
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    assert f"parity fallback: {note}" in capsys.readouterr().out


def test_status_shows_a_batch_file_routed_to_a_job_and_what_the_job_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the history a batch file past the function's cap leaves: routed, then the job's
    parts = [f"s3://a/churn/predictions/big.csv/v1/part-{i:05d}.parquet" for i in range(2)]
    routed = {
        "at": "2026-12-05T00:00:00+00:00",
        "kind": "batch",
        "key": "churn/batch/big.csv",
        "status": "routed",
        "dataset": "churn",
        "reason": "processing job churn-b scores it",
    }
    scored = {
        "at": "2026-12-05T00:01:00+00:00",
        "kind": "batch-job",
        "key": "churn/batch/big.csv",
        "status": "scored",
        "dataset": "churn",
        "reason": "9 rows scored",
        "parts": parts,
    }
    (tmp_path / UPLOADS_FILE).write_text(json.dumps(routed) + "\n" + json.dumps(scored) + "\n")

    # When the status is shown, then each says what happened to the file, as a batch line
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "batch    2026-12-05T00:00:00+00:00  churn: routed — processing job churn-b" in out
    assert "batch    2026-12-05T00:01:00+00:00  churn: 9 rows scored" in out
    assert "2 part(s) under s3://a/churn/predictions/big.csv/v1/" in out
    assert "upload   " not in out


def test_retraining_shows_the_guard_state_and_its_decisions(
    deployment: DynamoDBRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from functions.retrain.guard import GuardPolicy, Trigger
    from functions.retrain.guard_store import DynamoDBGuardStore, run_guarded

    store = DynamoDBGuardStore(
        boto3.client("dynamodb", region_name=TOPOLOGY.region), TOPOLOGY.registry_table
    )
    at = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    for event in ("e1", "e2"):
        trigger = Trigger(dataset="binary", source="drift", reason="PSI", at=at, event_id=event)
        run_guarded(store, GuardPolicy(), trigger, 500, at, start=lambda name: f"arn:{name}")

    shown = _json(capsys, "retraining", "binary")
    assert shown["state"]["in_flight"]["run_name"] == "retrain-binary-202611220900"
    assert [(d["outcome"], d["guard"]) for d in shown["decisions"]] == [
        ("skipped", "in_flight"),
        ("started", None),
    ]
    code, out, _ = _run(capsys, "retraining", "binary")
    assert code == 0 and "in flight retrain-binary-202611220900" in out
    assert "skipped (in_flight) [drift]" in out


def test_predict_in_process_against_a_missing_registry_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stage whose registry table does not exist (no local.json in the state dir)
    environment = dict(os.environ)  # `sluice predict` sets the inference function's environment
    inference_api.dependencies.cache_clear()
    argv = ["predict", "binary", '[{"num_0": 1.0}]', "--state-dir", str(tmp_path)]
    try:
        with mock_aws():
            code, out, err = _run(capsys, *argv)
            debug_code, _, debug_err = _run(capsys, *argv, "--debug")
    finally:
        if inference_api.observers.cache_info().currsize:
            inference_api.observers()[0].close()
        inference_api.dependencies.cache_clear()
        inference_api.observers.cache_clear()
        os.environ.clear()
        os.environ.update(environment)
    # then the function's failure is one line naming the table, not its JSON log
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err and '"level"' not in err
    assert "HTTP 503" in err and TOPOLOGY.registry_table in err and "--debug" in err
    # and --debug shows the function's log, traceback included
    assert debug_code == 1 and "Traceback" in debug_err
