"""The operator commands beside `sluice up`: they find the stack through the local.json it writes,
fail in one line naming what they could not reach, and stop quietly when their reader does.

The stack is stood in for by what a client sees of it: moto's server on a loopback port holding
the registry table, a local API Gateway in front of a fake function, and the local.json naming
both, written by the stack's own writer.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from functions.shared.registry import NewModelVersion
from functions.shared.registry_dynamodb import DynamoDBRegistry, create_table
from infra.cli import main
from infra.local.api_gateway import LocalApiGateway
from infra.local.local_file import LOCAL_FILE, LocalEndpoints, write_local_file
from infra.local.stack import free_port
from infra.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = Topology(stage="local")
API_KEY = "k-local-123"


@dataclass
class Stack:
    state_dir: Path
    endpoint: str
    registry: DynamoDBRegistry
    api_url: str
    requests: list[dict[str, Any]]  # what the fake function behind the API received


@pytest.fixture
def endpoint() -> Iterator[str]:
    """moto's server on a free loopback port, empty before and after."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    _reset(url)
    yield url
    _reset(url)
    server.stop()


def _reset(url: str) -> None:
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.fixture
def no_aws_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials and no region in the environment, as on a laptop without an AWS account;
    one attempt per call, so that a refused connection fails at once."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


@pytest.fixture
def stack(endpoint: str, tmp_path: Path, no_aws_account: None) -> Iterator[Stack]:
    """A registry table with dataset churn (v1 retired, v2 live), an API that answers with a
    fixed prediction when given the key, and local.json naming them."""
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=TOPOLOGY.region,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    create_table(client, TOPOLOGY.registry_table)
    registry = DynamoDBRegistry(client, TOPOLOGY.registry_table)
    live = None
    for run in ("run-1", "run-2"):
        version = registry.register(_new_version(run), actor="pipeline:test").version
        registry.promote("churn", version, expected_live=live, actor="pipeline:test", reason="ok")
        live = version
    requests: list[dict[str, Any]] = []

    def function(event: dict[str, Any], context: Any) -> dict[str, Any]:
        requests.append(event)
        answer = {"model_version": "2", "predictions": [{"label": "no"}], "request_id": "r"}
        return {"statusCode": 200, "body": json.dumps(answer)}

    with LocalApiGateway(function, lambda: None, api_key=API_KEY) as api:
        state_dir = tmp_path / ".sluice"
        write_local_file(state_dir, _endpoints(endpoint, api.url))
        yield Stack(state_dir, endpoint, registry, api.url, requests)


def _endpoints(endpoint: str, api_url: str) -> LocalEndpoints:
    return LocalEndpoints(
        aws_endpoint_url=endpoint,
        api_url=api_url,
        api_key=API_KEY,
        region=TOPOLOGY.region,
        stage=TOPOLOGY.stage,
        raw_bucket=TOPOLOGY.raw_bucket,
        artifacts_bucket=TOPOLOGY.artifacts_bucket,
        registry_table=TOPOLOGY.registry_table,
    )


def _new_version(run: str) -> NewModelVersion:
    uri = f"s3://{TOPOLOGY.artifacts_bucket}/churn/models/{run}/"
    return NewModelVersion(
        dataset="churn",
        run_name=run,
        dataset_version="dv-1",
        model_uri=uri + "model.onnx",
        card_uri=uri + "model_card.json",
        report_uri=uri + "evaluation.json",
        artifact_uri=uri + "output/model.tar.gz",
        sha256="0" * 64,
        metric="roc_auc",
        metric_value=0.8,
    )


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_finds_the_local_stack_through_local_json(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a running stack and no AWS account, when an operator lists models without --stage
    code, out, err = _run(capsys, "models", "--state-dir", str(stack.state_dir), "--json")
    # then the stack's table answers
    assert code == 0, err
    assert json.loads(out) == {"datasets": [{"dataset": "churn", "live_version": 2, "versions": 2}]}
    # and --stage local says the same
    code, out, _ = _run(capsys, "models", "churn", "--state-dir", str(stack.state_dir), "--stage",
                        "local", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["live"]["version"] == 2


def test_promote_and_rollback_act_on_the_local_stack(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ("--state-dir", str(stack.state_dir))
    code, _, err = _run(capsys, "rollback", "churn", "--reason", "v2 misbehaves", *state)
    assert code == 0, err
    live = stack.registry.live("churn")
    assert live is not None and live.version == 1

    code, out, err = _run(capsys, "promote", "churn", "2", "--reason", "fixed", *state, "--json")
    assert code == 0, err
    assert json.loads(out)["live"]["version"] == 2
    assert stack.registry.audit("churn")[-1].reason == "fixed"


def test_predict_posts_to_the_local_api_with_its_key(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # When an operator predicts with neither --url nor --api-key
    code, out, err = _run(capsys, "predict", "churn", '[{"tenure_months": 3}]', "--state-dir",
                          str(stack.state_dir), "--json")  # fmt: skip
    # then the stack's API answered (it refuses a request without its key)
    assert code == 0, err
    assert json.loads(out)["model_version"] == "2"
    assert [r["path"] for r in stack.requests] == ["/v1/models/churn:predict"]


def test_a_named_stage_means_aws_even_beside_a_local_stack(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given local.json and an operator's AWS credentials, when they name a stage on the endpoint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "operator")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator")
    code, _, err = _run(capsys, "models", "--state-dir", str(stack.state_dir), "--stage", "dev",
                        "--endpoint-url", stack.endpoint)  # fmt: skip
    # then the dev stage's table is read, and its absence is one line naming it and the endpoint
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "sluice-registry-dev" in err and stack.endpoint in err
    assert "ResourceNotFoundException" in err


def test_a_missing_table_is_one_line_naming_table_and_endpoint(
    endpoint: str, tmp_path: Path, no_aws_account: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given local.json naming an endpoint that holds no registry table
    write_local_file(tmp_path, _endpoints(endpoint, "http://127.0.0.1:9"))
    code, out, err = _run(capsys, "models", "churn", "--state-dir", str(tmp_path))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert TOPOLOGY.registry_table in err and endpoint in err
    assert str(tmp_path / LOCAL_FILE) in err  # where those names came from
    # and --debug shows the traceback
    code, _, err = _run(capsys, "models", "churn", "--state-dir", str(tmp_path), "--debug")
    assert code == 1 and "Traceback" in err and TOPOLOGY.registry_table in err


def test_an_endpoint_that_is_down_is_one_line_naming_it(
    tmp_path: Path, no_aws_account: None, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    write_local_file(tmp_path, _endpoints(down, "http://127.0.0.1:9"))
    code, _, err = _run(capsys, "promote", "churn", "2", "--reason", "x", "--state-dir",
                        str(tmp_path))  # fmt: skip
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err and down in err
    assert "is `sluice up` running?" in err


def test_an_api_failure_is_one_line_naming_the_url(
    tmp_path: Path, no_aws_account: None, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(event: dict[str, Any], context: Any) -> dict[str, Any]:
        body = {"error": "the model registry cannot be read for dataset 'churn'; retry shortly"}
        return {"statusCode": 503, "body": json.dumps(body)}

    with LocalApiGateway(failing, lambda: None, api_key=API_KEY) as api:
        write_local_file(tmp_path, _endpoints("http://127.0.0.1:9", api.url))
        code, _, err = _run(capsys, "predict", "churn", "[{}]", "--state-dir", str(tmp_path))
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert api.url in err and "HTTP 503" in err and "registry cannot be read" in err


def test_stage_local_without_a_stack_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "models", "--stage", "local", "--state-dir", str(tmp_path))
    assert code == 2
    assert err.count("\n") == 1 and str(tmp_path / LOCAL_FILE) in err and "sluice up" in err


def test_a_damaged_local_json_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / LOCAL_FILE).write_text('{"aws_endpoint_url": "http://127.0.0.1:4566"}')
    code, _, err = _run(capsys, "models", "--state-dir", str(tmp_path))
    assert code == 2
    assert err.count("\n") == 1 and str(tmp_path / LOCAL_FILE) in err and "registry_table" in err


def test_env_exports_point_boto3_at_the_local_stack(stack: Stack) -> None:
    # Given the exports `sluice env` prints, evaluated by a shell without any AWS settings
    probe = 'import boto3; print(boto3.client("dynamodb").list_tables()["TableNames"])'
    script = (
        f'eval "$({sys.executable} -m infra.cli env --state-dir {stack.state_dir})" && '
        f'{sys.executable} -c {shlex.quote(probe)} && echo "$SLUICE_API_URL $SLUICE_API_KEY"'
    )
    # (AWS_MAX_ATTEMPTS and the nonexistent config files the fixture set stay out)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(["bash", "-c", script], env=clean | {"PYTHONPATH": str(ROOT)},
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    # then boto3 finds the stack's table, and the API's URL and key are set for curl
    assert done.returncode == 0, done.stderr
    tables, api = done.stdout.strip().splitlines()
    assert tables == str([TOPOLOGY.registry_table])
    assert api == f"{stack.api_url} {API_KEY}"


def test_env_as_json(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "env", "--state-dir", str(stack.state_dir), "--json")
    assert code == 0
    variables = json.loads(out)
    assert variables["AWS_ENDPOINT_URL"] == stack.endpoint
    assert variables["AWS_DEFAULT_REGION"] == TOPOLOGY.region
    assert variables["AWS_ACCESS_KEY_ID"] and variables["AWS_SECRET_ACCESS_KEY"]
    assert "SLUICE_API_CA_BUNDLE" not in variables  # the stack serves plain HTTP
    # and the text's first line says how to evaluate it for this state directory
    code, out, _ = _run(capsys, "env", "--state-dir", str(stack.state_dir))
    assert code == 0
    assert out.splitlines()[0].endswith(f'eval "$(sluice env --state-dir {stack.state_dir})"')


def test_env_without_a_stack_fails_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "env", "--state-dir", str(tmp_path))
    assert code == 1 and out == "" and str(tmp_path / LOCAL_FILE) in err


@pytest.mark.parametrize("command", [["models", "churn"], ["status"]])
def test_a_reader_that_closes_early_ends_the_command_quietly(
    stack: Stack, command: list[str]
) -> None:
    # Given `sluice models churn | head -0`: a reader gone before the first line is written
    writer = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", *command, "--state-dir", str(stack.state_dir)],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.close()
    err = writer.stderr.read().decode()
    # then the command stops as other Unix tools do: no traceback, the SIGPIPE status
    assert writer.wait(timeout=60) == 141
    assert err == ""


def test_an_aws_error_names_the_endpoint_boto3_took_from_the_environment(
    endpoint: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a shell left pointed at a stack (`eval "$(sluice env)"`) and a named stage
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    code, _, err = _run(capsys, "models", "--stage", "dev", "--state-dir", str(tmp_path))
    # then the error says where boto3 went: not "on AWS"
    assert code == 1 and "sluice-registry-dev" in err
    assert f"at {endpoint} (AWS_ENDPOINT_URL)" in err and "on AWS" not in err


def test_the_console_without_a_running_stack_is_one_line_asking_for_it(
    tmp_path: Path, no_aws_account: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given local.json left by a stack that is not running
    down = f"http://127.0.0.1:{free_port()}"
    write_local_file(tmp_path, _endpoints(down, "http://127.0.0.1:9"))
    # When the console is started beside it, it fails before serving anything
    code, out, err = _run(capsys, "console", "--state-dir", str(tmp_path), "--port", "0")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and down in err and "is `sluice up` running?" in err


def test_the_console_listens_on_loopback_only(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "console", "--state-dir", str(stack.state_dir), "--host", "0.0.0.0")
    assert code == 2 and "loopback only" in err
