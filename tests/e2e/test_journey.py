"""A user's first day, as one test body run against a target: the local stack (``make test``) or
a real deployment (``make e2e-aws STAGE=…``, which deploys, runs this module with
``SLUICE_E2E_AWS_STAGE`` set, and destroys). Upload the bundled sample in two halves → the first
model goes live → predictions over HTTPS/HTTP with the API key → a second version → roll back →
the first answers again. Only real clients: boto3 for S3 and the registry, the ``sluice`` CLI for
promote and rollback, HTTP for the API."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions.shared.registry import ModelStatus
from functions.shared.registry_dynamodb import DynamoDBRegistry
from infra.cli import main
from infra.local.stack import LocalStack, StackConfig, free_port
from infra.topology import Topology
from tests.e2e.test_local_stack import environment, live_pointer  # noqa: F401 (a fixture)

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "churn"
AWS_STAGE = "SLUICE_E2E_AWS_STAGE"
DATASET = "churn"


@dataclass
class Target:
    """Where the body acts, and how long a run may take there."""

    name: str
    s3: Any
    raw_bucket: str
    registry: DynamoDBRegistry
    api_url: str  # without a trailing slash
    api_key: str
    cli: list[str]  # what points an operator command at it
    wait_seconds: float
    poll_seconds: float


def _local(tmp_path: Path) -> Iterator[Target]:
    topology = Topology(stage="journey")
    config = StackConfig(
        topology=topology,
        aws_port=free_port(),
        api_port=free_port(),
        api_key="journey-key",
        state_dir=tmp_path / ".sluice",
    )
    with LocalStack(config, log=lambda line: None) as stack:
        yield Target(
            name="local",
            s3=stack.client("s3"),
            raw_bucket=topology.raw_bucket,
            registry=DynamoDBRegistry(stack.client("dynamodb"), topology.registry_table),
            api_url=stack.api_url,
            api_key="journey-key",
            cli=["--state-dir", str(config.state_dir)],
            wait_seconds=240,
            poll_seconds=0.3,
        )


def _aws(stage: str) -> Iterator[Target]:
    """The deployed stage ``sluice-<stage>``, found through its stack outputs."""
    session = boto3.session.Session()
    stack = session.client("cloudformation").describe_stacks(StackName=f"sluice-{stage}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Stacks"][0]["Outputs"]}
    key = session.client("apigateway").get_api_key(apiKey=outputs["ApiKeyId"], includeValue=True)
    yield Target(
        name="aws",
        s3=session.client("s3"),
        raw_bucket=outputs["RawBucketName"],
        registry=DynamoDBRegistry(session.client("dynamodb"), outputs["RegistryTableName"]),
        api_url=outputs["ApiUrl"].rstrip("/"),
        api_key=key["value"],
        cli=["--stage", stage, "--region", str(session.region_name)],
        wait_seconds=45 * 60,  # SageMaker: instance start, image pull, spot capacity
        poll_seconds=15,
    )


@pytest.fixture(
    params=[
        "local",
        pytest.param(
            "aws",
            marks=pytest.mark.skipif(
                not os.environ.get(AWS_STAGE),
                reason=f"real AWS only with {AWS_STAGE}=<stage> (make e2e-aws STAGE=…)",
            ),
        ),
    ]
)
def target(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    environment: None,  # noqa: F811
) -> Iterator[Target]:
    if request.param == "local":
        yield from _local(tmp_path)
    else:
        yield from _aws(os.environ[AWS_STAGE])


def _wait_for(target: Target, condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + target.wait_seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(target.poll_seconds)
    raise AssertionError(f"{target.name}: timed out after {target.wait_seconds:g} s on {what}")


def _call(target: Target, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"x-api-key": target.api_key, "content-type": "application/json"}
    request = urllib.request.Request(target.api_url + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _answers(target: Target, instance: dict[str, Any]) -> str:
    """The model version that answers a prediction now."""
    status, answer = _call(
        target, "POST", f"/v1/models/{DATASET}:predict", {"instances": [instance]}
    )
    assert status == 200, answer
    return str(answer["model_version"])


def _sluice(target: Target, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    command, *rest = args
    code = main([command, *target.cli, "--json", *rest])
    out = capsys.readouterr().out
    assert code == 0, f"sluice {' '.join(args)} exited {code}: {out}"
    return json.loads(out)


def test_upload_goes_live_predicts_and_rolls_back(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the bundled sample, split in two uploads by its rows
    lines = (SAMPLE / "data" / "churn.csv").read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    halves = [header + "".join(rows[: len(rows) // 2]), header + "".join(rows[len(rows) // 2 :])]
    raw = target.raw_bucket
    contract = (SAMPLE / "contract.json").read_bytes()

    # When the contract and the first half are uploaded
    target.s3.put_object(Bucket=raw, Key=f"{DATASET}/contract.json", Body=contract)
    target.s3.put_object(Bucket=raw, Key=f"{DATASET}/data/first.csv", Body=halves[0].encode())

    # Then a first model goes live, and the API answers with it
    first = _wait_for(target, lambda: live_pointer(target.registry, DATASET), "a live model")
    status, described = _call(target, "GET", f"/v1/models/{DATASET}")
    assert status == 200, described
    assert described["model_version_status"][0]["state"] == "AVAILABLE"
    instance = {
        "tenure_months": 2,
        "monthly_charges": 89.1,
        "total_charges": 178.2,
        "support_calls": 4,
        "contract": "Month-to-month",
        "internet_service": "Fiber optic",
        "payment_method": "Electronic check",
    }
    predict = f"/v1/models/{DATASET}:predict"
    status, answer = _call(target, "POST", predict, {"instances": [instance]})
    assert status == 200, answer
    assert answer["model_version"] == str(first.version)
    [prediction] = answer["predictions"]
    assert prediction["label"] in prediction["probabilities"]

    # When the second half lands, a second version is trained over both and decided
    target.s3.put_object(Bucket=raw, Key=f"{DATASET}/data/second.csv", Body=halves[1].encode())

    def second_decided() -> bool:
        versions = target.registry.versions(DATASET)
        return any(
            v.version > first.version and v.status != ModelStatus.CANDIDATE for v in versions
        )

    _wait_for(target, second_decided, "the second version's decision")
    second = max(v.version for v in target.registry.versions(DATASET))
    live = live_pointer(target.registry, DATASET)
    assert live is not None
    if live.version != second:  # the gate refused it: an operator makes it live anyway
        _sluice(target, capsys, "promote", DATASET, str(second), "--force", "--reason", "e2e")
    _wait_for(target, lambda: _answers(target, instance) == str(second), "version 2 answering")

    # Then a rollback puts the first back, and the API answers with it again
    _sluice(target, capsys, "rollback", DATASET, "--reason", "e2e: the journey's rollback")
    rolled_back = live_pointer(target.registry, DATASET)
    assert rolled_back is not None and rolled_back.version == first.version
    # (the API re-reads the live pointer within seconds: docs/api.md)
    _wait_for(target, lambda: _answers(target, instance) == str(first.version), "version 1 again")
