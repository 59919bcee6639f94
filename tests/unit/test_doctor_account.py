"""The doctor's findings where moto cannot produce the account state (a subscription pending
confirmation, a refused call), on a fake account; and the boto3 adapter's reading of the two APIs
moto lacks, through botocore's Stubber, which checks each request and response against the
service's own model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from infra.doctor import (
    AwsAccount,
    Plan,
    ProbeError,
    Quota,
    Report,
    Subscription,
    diagnose,
)

REGION = "eu-west-1"


@dataclass
class FakeAccount:
    """An account in memory: bootstrapped, room for anything, the GPU quotas granted, the stage
    deployed; each test changes what it is about. ``refuse`` names methods that raise."""

    subscriptions: list[Subscription] | None = field(
        default_factory=lambda: [Subscription("email", "ops@example.com", confirmed=True)]
    )
    refuse: set[str] = field(default_factory=set)

    def _allow(self, method: str) -> None:
        if method in self.refuse:
            raise ProbeError(f"{method}: AccessDenied")

    def identity(self) -> str:
        self._allow("identity")
        return "111122223333"

    def bootstrap_version(self, qualifier: str) -> int | None:
        return 21

    def stack_status(self, name: str) -> str | None:
        return "UPDATE_COMPLETE"

    def lambda_concurrency(self) -> tuple[int, int]:
        self._allow("lambda_concurrency")
        return 1000, 1000

    def function_reservation(self, function_name: str) -> int:
        return 0

    def sagemaker_quota(self, name: str) -> Quota | None:
        return Quota(code="L-TEST", name=name, value=2)

    def topic_subscriptions(self, topic_arn: str) -> list[Subscription] | None:
        return self.subscriptions


def checks(report: Report) -> dict[str, str]:
    return {finding.check: finding.status for finding in report.findings}


def test_the_fake_ready_account_passes() -> None:
    report = diagnose(FakeAccount(), Plan(stage="dev"), REGION)

    assert report.problems == []
    assert set(checks(report)) == {
        "credentials",
        "bootstrap",
        "lambda-concurrency",
        "training-quota-spot",
        "training-quota-on-demand",
        "ops-subscription",
    }


def test_without_a_region_nothing_else_is_checked() -> None:
    report = diagnose(FakeAccount(), Plan(stage="dev"), None)

    assert checks(report) == {"region": "problem"}
    assert report.findings[0].fix is not None and "AWS_REGION" in report.findings[0].fix


def test_without_credentials_nothing_else_is_checked() -> None:
    report = diagnose(FakeAccount(refuse={"identity"}), Plan(stage="dev"), REGION)

    assert checks(report) == {"credentials": "problem"}


def test_a_refused_call_is_a_problem_naming_the_permission() -> None:
    report = diagnose(FakeAccount(refuse={"lambda_concurrency"}), Plan(stage="dev"), REGION)

    (problem,) = report.problems
    assert problem.check == "lambda-concurrency"
    assert problem.detail == "could not check: lambda_concurrency: AccessDenied"
    assert problem.fix is not None and "lambda:GetAccountSettings" in problem.fix


def test_a_subscription_pending_confirmation_is_a_problem() -> None:
    pending = [Subscription("email", "ops@example.com", confirmed=False)]

    report = diagnose(FakeAccount(subscriptions=pending), Plan(stage="dev"), REGION)

    (problem,) = report.problems
    assert problem.check == "ops-subscription"
    assert "email ops@example.com not confirmed" in problem.detail
    assert problem.fix is not None and "confirmation mail" in problem.fix


@pytest.fixture
def stubbed() -> Iterator[tuple[AwsAccount, dict[str, Stubber]]]:
    session = boto3.session.Session(
        region_name=REGION, aws_access_key_id="stub", aws_secret_access_key="stub"
    )
    clients = {name: session.client(name) for name in ("lambda", "service-quotas", "sns")}
    stubbers = {name: Stubber(client) for name, client in clients.items()}
    for stubber in stubbers.values():
        stubber.activate()
    yield AwsAccount(clients.__getitem__), stubbers
    for stubber in stubbers.values():
        stubber.assert_no_pending_responses()
        stubber.deactivate()


def test_adapter_reads_lambda_account_settings(
    stubbed: tuple[AwsAccount, dict[str, Stubber]],
) -> None:
    account, stubbers = stubbed
    limit = {
        "TotalCodeSize": 80530636800,
        "CodeSizeUnzipped": 262144000,
        "CodeSizeZipped": 52428800,
        "ConcurrentExecutions": 10,
        "UnreservedConcurrentExecutions": 10,
    }
    usage = {"TotalCodeSize": 0, "FunctionCount": 0}
    stubbers["lambda"].add_response(
        "get_account_settings", {"AccountLimit": limit, "AccountUsage": usage}, {}
    )

    assert account.lambda_concurrency() == (10, 10)


def quota(name: str, code: str, value: float) -> dict[str, Any]:
    return {"ServiceCode": "sagemaker", "QuotaName": name, "QuotaCode": code, "Value": value}


def test_adapter_finds_quotas_by_name_applied_over_default(
    stubbed: tuple[AwsAccount, dict[str, Stubber]],
) -> None:
    # Given: defaults over two pages (the spot one 0), then the applied values (spot raised to 2)
    account, stubbers = stubbed
    spot = "ml.g5.xlarge for spot training job usage"
    on_demand = "ml.g5.xlarge for training job usage"
    quotas = stubbers["service-quotas"]
    quotas.add_response(
        "list_aws_default_service_quotas",
        {"Quotas": [quota(spot, "L-SPOT", 0)], "NextToken": "page-2"},
        {"ServiceCode": "sagemaker"},
    )
    quotas.add_response(
        "list_aws_default_service_quotas",
        {"Quotas": [quota(on_demand, "L-OND", 0)]},
        {"ServiceCode": "sagemaker", "NextToken": "page-2"},
    )
    quotas.add_response(
        "list_service_quotas", {"Quotas": [quota(spot, "L-SPOT", 2)]}, {"ServiceCode": "sagemaker"}
    )

    # When / Then: one listing serves every lookup
    assert account.sagemaker_quota(spot) == Quota(code="L-SPOT", name=spot, value=2)
    assert account.sagemaker_quota(on_demand) == Quota(code="L-OND", name=on_demand, value=0)
    assert account.sagemaker_quota("ml.p5.48xlarge for training job usage") is None


def test_adapter_reads_a_pending_subscription(
    stubbed: tuple[AwsAccount, dict[str, Stubber]],
) -> None:
    account, stubbers = stubbed
    arn = "arn:aws:sns:eu-west-1:111122223333:sluice-ops-dev"
    stubbers["sns"].add_response("get_topic_attributes", {"Attributes": {}}, {"TopicArn": arn})
    pending = {
        "SubscriptionArn": "PendingConfirmation",
        "Owner": "111122223333",
        "Protocol": "email",
        "Endpoint": "ops@example.com",
        "TopicArn": arn,
    }
    stubbers["sns"].add_response(
        "list_subscriptions_by_topic", {"Subscriptions": [pending]}, {"TopicArn": arn}
    )

    assert account.topic_subscriptions(arn) == [
        Subscription("email", "ops@example.com", confirmed=False)
    ]
