"""``sluice doctor`` against an account under moto: STS, SSM, CloudFormation, Lambda's function
concurrency and SNS are moto's own. moto has no Lambda GetAccountSettings and no SageMaker
Service Quotas, so those two answers come from ``MotoLacks``, a fixed account over the real
adapter; the adapter's parsing of them is checked against botocore's service model with
``Stubber`` (tests/unit/test_doctor_account.py)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from functions.shared.contract import TrainingConfig
from infra.cli import main
from infra.doctor import AwsAccount, Finding, Plan, Quota, Report, diagnose
from infra.local.stack import free_port
from infra.topology import Topology

REGION = "eu-west-1"
STAGE = "dev"
SPOT = "ml.g5.xlarge for spot training job usage"
ON_DEMAND = "ml.g5.xlarge for training job usage"
TEMPLATE = json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})


class MotoLacks(AwsAccount):
    """The real adapter over moto, with the two answers moto cannot give fixed here."""

    def __init__(self, session: boto3.session.Session, limits: Limits) -> None:
        super().__init__(session.client)
        self.limits = limits

    def lambda_concurrency(self) -> tuple[int, int]:
        return self.limits.concurrency, self.limits.unreserved

    def sagemaker_quota(self, name: str) -> Quota | None:
        value = self.limits.quotas.get(name)
        return None if value is None else Quota(code=f"L-{len(name):08d}", name=name, value=value)


@dataclass
class Limits:
    concurrency: int = 10
    unreserved: int = 10
    quotas: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.quotas is None:
            self.quotas = {SPOT: 0.0, ON_DEMAND: 0.0}  # a new account's


@dataclass
class Aws:
    session: boto3.session.Session
    limits: Limits

    def diagnose(self, **plan: Any) -> Report:
        return diagnose(MotoLacks(self.session, self.limits), Plan(stage=STAGE, **plan), REGION)

    def bootstrap(self, version: str = "21") -> None:
        self.session.client("ssm").put_parameter(
            Name="/cdk-bootstrap/hnb659fds/version", Value=version, Type="String"
        )
        self.session.client("cloudformation").create_stack(
            StackName="CDKToolkit", TemplateBody=TEMPLATE
        )

    def deploy(self, email: str | None = "ops@example.com", *, topic: bool = True) -> None:
        """The stage's stack, its ops topic and the address subscribed to it."""
        self.session.client("cloudformation").create_stack(
            StackName=f"sluice-{STAGE}", TemplateBody=TEMPLATE
        )
        if not topic:
            return
        sns = self.session.client("sns")
        arn = sns.create_topic(Name=Topology(stage=STAGE).ops_topic_name)["TopicArn"]
        if email:
            sns.subscribe(TopicArn=arn, Protocol="email", Endpoint=email)

    def function(self, name: str, reserved: int) -> None:
        iam = self.session.client("iam")
        role = iam.create_role(RoleName=f"role-{name}", AssumeRolePolicyDocument="{}")["Role"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("handler.py", "def handler(event, context):\n    return None\n")
        client = self.session.client("lambda")
        function_name = Topology(stage=STAGE).function_name(name)
        client.create_function(
            FunctionName=function_name,
            Runtime="python3.12",
            Role=role["Arn"],
            Handler="handler.handler",
            Code={"ZipFile": code.getvalue()},
        )
        client.put_function_concurrency(
            FunctionName=function_name, ReservedConcurrentExecutions=reserved
        )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield Aws(session=boto3.session.Session(region_name=REGION), limits=Limits())


def by_check(report: Report) -> dict[str, Finding]:
    return {finding.check: finding for finding in report.findings}


def test_a_fresh_account_is_told_each_problem_and_its_fix(aws: Aws) -> None:
    # Given: a new account (concurrency 10, GPU quotas 0), not bootstrapped, a stage that reserves
    # When
    report = aws.diagnose(reserved={"retrain": 1})

    # Then: bootstrap, concurrency and both training quotas fail (the spot contract's job is
    # refused, and so is its on-demand fallback), each with the fix that resolves it
    found = by_check(report)
    assert report.account == "123456789012"
    assert [f.check for f in report.problems] == [
        "bootstrap",
        "lambda-concurrency",
        "training-quota-spot",
        "training-quota-on-demand",
    ]
    assert found["bootstrap"].fix is not None and "make bootstrap" in found["bootstrap"].fix
    concurrency = found["lambda-concurrency"]
    assert "leaving 9 unreserved (Lambda's minimum: 10)" in concurrency.detail
    assert concurrency.fix is not None and "L-B99A9384) to at least 101" in concurrency.fix
    spot = found["training-quota-spot"]
    assert spot.fix is not None and "request-service-quota-increase" in spot.fix
    assert "on-demand" not in spot.fix  # its quota is 0 too: no use suggesting it
    fallback = found["training-quota-on-demand"].fix
    assert fallback is not None and "request-service-quota-increase" in fallback
    assert found["ops-subscription"].status == "note"  # nothing deployed yet: not a problem


def test_a_ready_account_has_no_problem(aws: Aws) -> None:
    # Given: bootstrapped, room for the reservations, a spot quota, a deployed stage whose ops
    # topic mails someone (moto confirms a subscription at once)
    aws.bootstrap()
    aws.limits = Limits(concurrency=1000, unreserved=1000, quotas={SPOT: 1.0, ON_DEMAND: 0.0})
    aws.deploy()

    # When
    report = aws.diagnose(reserved={"preprocess": 5, "batch": 2})

    # Then
    assert report.problems == []
    found = by_check(report)
    assert found["bootstrap"].detail == "CDKToolkit CREATE_COMPLETE, bootstrap version 21"
    assert "leaving 993 unreserved (Lambda's minimum: 100)" in found["lambda-concurrency"].detail
    assert found["ops-subscription"].detail == "sluice-ops-dev notifies email ops@example.com"


def test_no_reservation_fits_a_new_account(aws: Aws) -> None:
    # Given: the stack's default, no reservation, in an account whose limit is 10
    aws.bootstrap()

    # When / Then
    assert by_check(aws.diagnose())["lambda-concurrency"].status == "ok"


def test_reservations_the_stage_holds_now_count_back(aws: Aws) -> None:
    # Given: a deployed stage holding 5 for preprocess, so 95 of 200 are unreserved
    aws.limits = Limits(concurrency=200, unreserved=95)
    aws.function("preprocess", reserved=5)

    # When: the next deploy keeps 5 for preprocess and adds 1 for drift
    finding = by_check(aws.diagnose(reserved={"preprocess": 5, "drift": 1}))["lambda-concurrency"]

    # Then: the 5 it already holds are no new demand: 95 + 5 - 6 = 94 < 100
    assert finding.status == "problem"
    assert "(holds 5 now), leaving 94 unreserved" in finding.detail


def test_an_old_bootstrap_is_a_problem(aws: Aws) -> None:
    aws.bootstrap(version="5")

    finding = by_check(aws.diagnose())["bootstrap"]

    assert finding.status == "problem"
    assert "version 5; the stack needs ≥ 6" in finding.detail


def test_a_deployed_stage_without_a_subscriber_is_a_problem(aws: Aws) -> None:
    aws.deploy(email=None)

    finding = by_check(aws.diagnose())["ops-subscription"]

    assert finding.status == "problem"
    assert "no subscription, so alarms reach nobody" in finding.detail
    assert finding.fix is not None and "OPS_EMAIL=" in finding.fix


def test_a_deployed_stage_without_its_ops_topic_is_a_problem(aws: Aws) -> None:
    aws.deploy(topic=False)

    finding = by_check(aws.diagnose())["ops-subscription"]

    assert finding.status == "problem"
    assert finding.detail == "sluice-dev has no topic sluice-ops-dev"


def test_a_spot_contract_without_spot_quota_is_a_note_as_runs_fall_back_to_on_demand(
    aws: Aws,
) -> None:
    # Given: a spot contract, no spot quota, an on-demand quota (the pipeline's fallback)
    aws.limits.quotas = {SPOT: 0.0, ON_DEMAND: 2.0}

    found = by_check(aws.diagnose())

    # Then: no training problem; the note says every run retrains on-demand
    assert found["training-quota-spot"].status == "note"
    assert "every run retrains on-demand" in found["training-quota-spot"].detail
    assert found["training-quota-on-demand"].status == "ok"


def test_an_on_demand_contract_without_its_quota_fails_and_suggests_spot(aws: Aws) -> None:
    # Given: an on-demand contract (no fallback to spot), its quota 0, the spot quota 2
    aws.limits.quotas = {SPOT: 2.0, ON_DEMAND: 0.0}

    report = aws.diagnose(training=[TrainingConfig(instance_type="ml.g5.xlarge", spot=False)])

    on_demand = by_check(report)["training-quota-on-demand"]
    assert on_demand.status == "problem"
    assert on_demand.fix is not None
    assert on_demand.fix.endswith(
        "; or train spot (the contract's training.spot), whose quota is 2"
    )


def test_the_contracts_instance_type_is_the_one_checked(aws: Aws) -> None:
    # Given: a contract training on-demand on a CPU instance whose quota is 4
    aws.limits.quotas = {"ml.m5.xlarge for training job usage": 4.0}

    # When
    report = aws.diagnose(training=[TrainingConfig(instance_type="ml.m5.xlarge", spot=False)])

    # Then: the on-demand quota passes; the spot one, unused, is only a note
    found = by_check(report)
    assert found["training-quota-on-demand"].status == "ok"
    assert "'ml.m5.xlarge for training job usage' (" in found["training-quota-on-demand"].detail
    assert found["training-quota-spot"].status == "note"


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's server on a free loopback port, and keys it accepts."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "doctor")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "doctor")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_cli_reports_json_and_fails_on_problems(
    endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given: cdk.json reserving 5, and an endpoint that cannot answer the quota calls
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(json.dumps({"context": {"reserved_concurrency": {"preprocess": 5}}}))

    # When
    code = main(
        [
            *("doctor", "--stage", STAGE, "--region", REGION, "--endpoint-url", endpoint),
            *("--cdk-json", str(cdk_json), "--json"),
        ]
    )

    # Then: exit 1, one JSON report; a check the endpoint cannot answer is a problem naming the
    # permission to grant, never a pass
    assert code == 1
    report = Report.model_validate_json(capsys.readouterr().out)
    found = by_check(report)
    assert found["credentials"].status == "ok"
    assert found["bootstrap"].status == "problem"
    assert found["lambda-concurrency"].detail.startswith("could not check: lambda")
    assert found["lambda-concurrency"].fix is not None
    assert "lambda:GetAccountSettings" in found["lambda-concurrency"].fix


def test_cli_text_names_each_fix(endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--region", REGION, "--endpoint-url", endpoint, "--cdk-json", "none"])

    out = capsys.readouterr().out
    assert code == 1
    assert "  FAIL  bootstrap: not bootstrapped\n        fix: make bootstrap" in out
    assert out.rstrip().endswith("problems")


def test_cli_refuses_a_bad_reservation(endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            *("doctor", "--region", REGION, "--endpoint-url", endpoint),
            *("--reserved-concurrency", '{"inference": 2}'),
        ]
    )

    assert code == 2
    assert capsys.readouterr().err.startswith(
        "sluice doctor: context reserved_concurrency: 'inference' is not a function"
    )
