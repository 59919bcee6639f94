"""The local stack driven only through real clients: boto3 against its AWS endpoint, HTTP against
its API. Upload → the event router → preprocess → the pipeline definition → a live model →
predictions over HTTP."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.shared.registry_dynamodb import DynamoDBRegistry
from infra.cli import main
from infra.local.stack import LOCAL_FILE, LocalStack, StackConfig
from infra.topology import Topology
from tests.builders import churn_frame, contract_bytes, csv_bytes

API_KEY = "e2e-key"
WAIT_SECONDS = 180


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    environment = dict(os.environ)  # the stack sets its functions' environment process-wide
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    config = StackConfig(
        topology=Topology(stage="e2e"),
        aws_port=_free_port(),
        api_port=_free_port(),
        api_key=API_KEY,
        state_dir=tmp_path / ".sluice",
    )
    lines: list[str] = []
    try:
        with LocalStack(config, log=lines.append) as running:
            yield running
    finally:
        os.environ.clear()
        os.environ.update(environment)


def _post(url: str, body: Any, key: str | None) -> tuple[int, Any]:
    headers = {"content-type": "application/json", **({"x-api-key": key} if key else {})}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_an_upload_becomes_a_live_model_answering_over_http(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the stack's own description of itself
    local = json.loads((stack.config.state_dir / LOCAL_FILE).read_text())
    assert local["api_key"] == API_KEY and local["aws_endpoint_url"] == stack.endpoint

    # When a user uploads a contract and data with boto3, to the endpoint local.json names
    s3 = stack.client("s3")
    topology = stack.config.topology
    s3.put_object(Bucket=topology.raw_bucket, Key="churn/contract.json", Body=contract_bytes())
    frame = churn_frame(800, seed=4)
    s3.put_object(Bucket=topology.raw_bucket, Key="churn/data/jan.csv", Body=csv_bytes(frame))

    # Then, with no other help, a model goes live
    registry = DynamoDBRegistry(stack.client("dynamodb"), topology.registry_table)
    deadline = time.monotonic() + WAIT_SECONDS
    while registry.live("churn") is None and time.monotonic() < deadline:
        time.sleep(0.5)
    live = registry.live("churn")
    assert live is not None, [r.__dict__ for r in stack.runs]
    assert stack.runs[-1].path[-2:] == ["Promote", "Promoted"]

    # and predictions come back over real HTTP with the API key, and not without it
    request = urllib.request.Request(
        f"{stack.api_url}/v1/models/churn/metadata", headers={"x-api-key": API_KEY}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        features = [f["name"] for f in json.loads(response.read())["features"]]
    instances = json.loads(frame[features].head(2).to_json(orient="records"))
    url = f"{stack.api_url}/v1/models/churn:predict"
    status, answer = _post(url, {"instances": instances}, API_KEY)
    assert status == 200, answer
    assert answer["model_version"] == str(live.version) and len(answer["predictions"]) == 2
    assert _post(url, {"instances": instances}, None)[0] == 403
    # and the run is in the history file
    # and `sluice status` lists the upload and the run with its state path and decision
    code = main(["status", "--state-dir", str(stack.config.state_dir), "--json"])
    history = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [u["status"] for u in history["uploads"]] == ["started"]
    run = history["runs"][-1]
    assert run["status"] == "SUCCEEDED" and run["path"][-1] == "Promoted"
    assert run["decision"]["kind"] == "promoted" and run["decision"]["live_version"] == 1
    assert any("meets threshold" in r for r in run["decision"]["reasons"])
    assert main(["status", "--state-dir", str(stack.config.state_dir)]) == 0
    readable = capsys.readouterr().out
    assert "→ Promote → Promoted" in readable and "promoted: model version 1, live 1" in readable


def test_sluice_up_starts_in_the_foreground_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    aws_port, api_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.cli",
            "up",
            "--aws-port",
            str(aws_port),
            "--api-port",
            str(api_port),
            "--api-key",
            API_KEY,
            "--state-dir",
            str(tmp_path),
        ],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        # One line per component, then "ready"
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready"):
                break
        assert [line.split()[0] for line in lines] == ["aws", "resources", "api", "router", "ready"]
        # The API answers in our JSON format (no model yet), with the key
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/v1/models/churn", headers={"x-api-key": API_KEY}
        )
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(request, timeout=10)
        assert missing.value.code == 404
        assert json.loads(missing.value.read())["code"] == "model_not_found"
        assert json.loads((tmp_path / LOCAL_FILE).read_text())["api_url"].endswith(str(api_port))
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, "".join(lines) + rest
    assert rest.strip().endswith("stopped")
