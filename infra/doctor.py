"""``sluice doctor``: what a stage's first deploy and first training run need from the account,
checked before ``cdk deploy`` finds out. Each finding names its fix.

The checks read the account through the ``Account`` port; ``AwsAccount`` is its boto3 adapter.
What the stage asks for comes from the places that define it: reservations from the
``reserved_concurrency`` context (infra/concurrency.py), names from the topology, the training
instance from the contract's ``training`` section (its defaults when a contract has none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from functions.shared.contract import TrainingConfig
from infra.concurrency import RESERVABLE
from infra.topology import Topology

# The CDK's default bootstrap qualifier and the oldest bootstrap version the synthesized template
# accepts (its CheckBootstrapVersion rule; tests/infra/test_first_deploy.py keeps them in step).
BOOTSTRAP_QUALIFIER = "hnb659fds"
MIN_BOOTSTRAP_VERSION = 6
BOOTSTRAP_STACK = "CDKToolkit"
# Service Quotas → AWS Lambda → "Concurrent executions".
LAMBDA_CONCURRENCY_QUOTA = "L-B99A9384"
# Lambda keeps this many units unreserved, or the account's whole limit when that is smaller
# (a new account's limit of 10 leaves nothing to reserve): docs/decisions.md (2026-12-03).
LAMBDA_MIN_UNRESERVED = 100
# Stacks in these states have their resources in place (an update rolled back is still whole).
STACK_USABLE = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE")
PENDING_CONFIRMATION = "PendingConfirmation"

Status = Literal["ok", "problem", "note"]


class ProbeError(Exception):
    """An account API call failed (no permission, throttled, unreachable): the check it served
    becomes a problem naming the call."""


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    check: str
    status: Status
    detail: str
    fix: str | None = None


class Report(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    region: str | None
    account: str | None
    findings: list[Finding]

    @property
    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.status == "problem"]


@dataclass(frozen=True)
class Quota:
    code: str
    name: str
    value: float


@dataclass(frozen=True)
class Subscription:
    protocol: str
    endpoint: str
    confirmed: bool


@dataclass(frozen=True)
class Plan:
    """What the stage will ask of the account."""

    stage: str
    reserved: Mapping[str, int] = field(default_factory=dict)
    training: Sequence[TrainingConfig] = (TrainingConfig(),)


class Account(Protocol):
    """The account, read-only. Each method raises ProbeError when its call fails."""

    def identity(self) -> str:
        """The account id the credentials belong to."""
        ...

    def bootstrap_version(self, qualifier: str) -> int | None: ...

    def stack_status(self, name: str) -> str | None: ...

    def lambda_concurrency(self) -> tuple[int, int]:
        """(the account's concurrency limit, its unreserved concurrency)."""
        ...

    def function_reservation(self, function_name: str) -> int:
        """The function's reserved concurrency; 0 without one or without the function."""
        ...

    def sagemaker_quota(self, name: str) -> Quota | None: ...

    def topic_subscriptions(self, topic_arn: str) -> list[Subscription] | None:
        """None when the topic does not exist."""
        ...


def diagnose(account: Account, plan: Plan, region: str | None) -> Report:
    """Every check, in the order a fresh account meets them; a check whose prerequisite failed
    (no region, no credentials) is not run."""
    report = Report(stage=plan.stage, region=region, account=None, findings=[])
    if not region:
        report.findings.append(
            Finding(
                check="region",
                status="problem",
                detail="no AWS region configured",
                fix="export AWS_REGION=<region> (or set one in the profile, or pass --region)",
            )
        )
        return report
    try:
        report.account = account.identity()
    except ProbeError as error:
        report.findings.append(
            Finding(
                check="credentials",
                status="problem",
                detail=f"no usable AWS credentials: {error}",
                fix="configure credentials (export AWS_PROFILE=…, or `aws configure sso`) until "
                "`aws sts get-caller-identity` names the account to deploy into",
            )
        )
        return report
    report.findings.append(
        Finding(
            check="credentials",
            status="ok",
            detail=f"account {report.account}, region {region}",
        )
    )
    topology = Topology(stage=plan.stage, account=report.account, region=region)
    checks: list[tuple[str, str, Callable[[], list[Finding]]]] = [
        (
            "bootstrap",
            "ssm:GetParameter, cloudformation:DescribeStacks",
            lambda: _bootstrap(account),
        ),
        (
            "lambda-concurrency",
            "lambda:GetAccountSettings, lambda:GetFunctionConcurrency",
            lambda: _concurrency(account, plan, topology),
        ),
        (
            "training-quota",
            "servicequotas:ListServiceQuotas, servicequotas:ListAWSDefaultServiceQuotas",
            lambda: _training_quotas(account, plan),
        ),
        (
            "ops-subscription",
            "sns:GetTopicAttributes, sns:ListSubscriptionsByTopic",
            lambda: _ops_subscription(account, topology),
        ),
    ]
    for name, actions, check in checks:
        try:
            report.findings.extend(check())
        except ProbeError as error:
            report.findings.append(
                Finding(
                    check=name,
                    status="problem",
                    detail=f"could not check: {error}",
                    fix=f"allow {actions} for these credentials, then run the doctor again",
                )
            )
    return report


def _bootstrap(account: Account) -> list[Finding]:
    fix = "make bootstrap (cdk bootstrap for the credentials' account and region)"
    status = account.stack_status(BOOTSTRAP_STACK)
    if status is None:
        return [Finding(check="bootstrap", status="problem", detail="not bootstrapped", fix=fix)]
    if status not in STACK_USABLE:
        return [
            Finding(
                check="bootstrap",
                status="problem",
                detail=f"stack {BOOTSTRAP_STACK} is {status}",
                fix=f"look at its events in the CloudFormation console, then {fix}",
            )
        ]
    version = account.bootstrap_version(BOOTSTRAP_QUALIFIER)
    parameter = f"/cdk-bootstrap/{BOOTSTRAP_QUALIFIER}/version"
    if version is None or version < MIN_BOOTSTRAP_VERSION:
        found = "missing" if version is None else f"version {version}"
        return [
            Finding(
                check="bootstrap",
                status="problem",
                detail=f"{parameter} is {found}; the stack needs ≥ {MIN_BOOTSTRAP_VERSION}",
                fix=f"{fix}: re-running upgrades it in place",
            )
        ]
    return [
        Finding(
            check="bootstrap",
            status="ok",
            detail=f"{BOOTSTRAP_STACK} {status}, bootstrap version {version}",
        )
    ]


def minimum_unreserved(limit: int) -> int:
    return min(LAMBDA_MIN_UNRESERVED, limit)


def _concurrency(account: Account, plan: Plan, topology: Topology) -> list[Finding]:
    """The deploy sets each function's reservation to what the context asks (or removes it): what
    the stage holds now comes back to the pool, what it asks for leaves it."""
    limit, unreserved = account.lambda_concurrency()
    held = {name: account.function_reservation(topology.function_name(name)) for name in RESERVABLE}
    asked = sum(plan.reserved.values())
    after = unreserved + sum(held.values()) - asked
    floor = minimum_unreserved(limit)
    asks = ", ".join(f"{name} {count}" for name, count in plan.reserved.items()) or "nothing"
    detail = (
        f"limit {limit}, unreserved {unreserved}; the stage reserves {asks} "
        f"(holds {sum(held.values())} now), leaving {after} unreserved (Lambda's minimum: {floor})"
    )
    if after >= floor:
        return [Finding(check="lambda-concurrency", status="ok", detail=detail)]
    # any reservation needs Lambda's full minimum beside it, whatever the limit becomes
    needed = limit - after + LAMBDA_MIN_UNRESERVED
    return [
        Finding(
            check="lambda-concurrency",
            status="problem",
            detail=detail,
            fix=f"reserve less (context reserved_concurrency), or raise Service Quotas → AWS "
            f"Lambda → Concurrent executions ({LAMBDA_CONCURRENCY_QUOTA}) to at least "
            f"{needed}",
        )
    ]


def _training_quotas(account: Account, plan: Plan) -> list[Finding]:
    """Both quotas of each instance type the contracts train on. An on-demand contract needs
    its on-demand quota. A spot contract needs either: the pipeline retrains on-demand when
    SageMaker refuses the spot job for its quota (the ASL's spot fallback), so a spot quota of
    0 beside an on-demand one is a note (every run pays on-demand), and both at 0 a problem."""
    findings = []
    for instance_type, spot in dict.fromkeys((t.instance_type, t.spot) for t in plan.training):
        names = {
            kind: f"{instance_type} for {'spot ' if kind == 'spot' else ''}training job usage"
            for kind in ("spot", "on-demand")
        }
        quotas = {kind: account.sagemaker_quota(name) for kind, name in names.items()}
        usable = {kind: q is not None and q.value >= 1 for kind, q in quotas.items()}
        runs = usable["on-demand"] or (spot and usable["spot"])
        for kind, quota in quotas.items():
            check, name = f"training-quota-{kind}", names[kind]
            needed = kind == "on-demand" or spot  # spot is used by spot contracts only
            if quota is None:
                findings.append(
                    Finding(
                        check=check,
                        status="note" if runs or not needed else "problem",
                        detail=f"no SageMaker quota '{name}' in this region",
                        fix=f"use an instance type SageMaker trains on here in the contract's "
                        f"training.instance_type (not {instance_type})",
                    )
                )
                continue
            detail = f"'{name}' ({quota.code}) is {quota.value:g}"
            if quota.value >= 1:
                findings.append(Finding(check=check, status="ok", detail=detail))
                continue
            fix = (
                "aws service-quotas request-service-quota-increase --service-code sagemaker "
                f"--quota-code {quota.code} --desired-value 1"
            )
            if not runs and needed:
                if kind == "on-demand" and not spot and usable["spot"]:  # switching works today
                    fix += "; or train spot (the contract's training.spot), whose quota is"
                    fix += f" {quotas['spot'].value:g}" if quotas["spot"] else ""
                status, detail = "problem", f"{detail}: the first training run fails"
                detail += " (ResourceLimitExceeded)"
            elif kind == "spot" and spot:
                status = "note"
                detail += ": SageMaker refuses the spot job and every run retrains on-demand"
                detail += " (the pipeline's fallback; it costs more)"
            elif kind == "on-demand" and spot:
                status = "note"
                detail += " (the contract trains spot; on-demand is its fallback)"
            else:
                status = "note"
                detail += " (the contract trains on-demand)"
                fix = f"if you switch: {fix}"
            findings.append(Finding(check=check, status=status, detail=detail, fix=fix))
    return findings


def _ops_subscription(account: Account, topology: Topology) -> list[Finding]:
    subscribe = (
        f"make deploy STAGE={topology.stage} OPS_EMAIL=you@example.com (or opsEmail in cdk.json's "
        "context), then click the link in the confirmation mail"
    )
    subscriptions = account.topic_subscriptions(topology.ops_topic_arn)
    if subscriptions is None:
        if account.stack_status(f"sluice-{topology.stage}") is None:
            return [
                Finding(
                    check="ops-subscription",
                    status="note",
                    detail=f"sluice-{topology.stage} is not deployed yet, so no ops topic",
                    fix=f"{subscribe}; run the doctor again after the deploy",
                )
            ]
        return [
            Finding(
                check="ops-subscription",
                status="problem",
                detail=f"sluice-{topology.stage} has no topic {topology.ops_topic_name}",
                fix=f"deploy this version of the stack: {subscribe}",
            )
        ]
    confirmed = [s for s in subscriptions if s.confirmed]
    pending = [s for s in subscriptions if not s.confirmed]
    if confirmed:
        endpoints = ", ".join(f"{s.protocol} {s.endpoint}" for s in confirmed)
        return [
            Finding(
                check="ops-subscription",
                status="ok",
                detail=f"{topology.ops_topic_name} notifies {endpoints}",
            )
        ]
    if pending:
        endpoints = ", ".join(f"{s.protocol} {s.endpoint}" for s in pending)
        return [
            Finding(
                check="ops-subscription",
                status="problem",
                detail=f"{topology.ops_topic_name}: {endpoints} not confirmed, so alarms reach "
                "nobody",
                fix="click the link in the mail AWS sent (Subscription Confirmation); if it is "
                f"lost, redeploy without and then with the address: {subscribe}",
            )
        ]
    return [
        Finding(
            check="ops-subscription",
            status="problem",
            detail=f"{topology.ops_topic_name} has no subscription, so alarms reach nobody",
            fix=subscribe,
        )
    ]


class AwsAccount:
    """The Account port over boto3 clients of one session (or of any endpoint)."""

    def __init__(self, client: Callable[[str], Any]) -> None:
        self._client = client
        self._quotas: dict[str, Quota] | None = None

    def _call(self, service: str, operation: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client(service), operation)(**params)
        except ClientError as error:
            raise _ProbeClientError(service, operation, error) from None
        except BotoCoreError as error:
            raise ProbeError(f"{service} {operation}: {error}") from None

    def identity(self) -> str:
        return str(self._call("sts", "get_caller_identity")["Account"])

    def bootstrap_version(self, qualifier: str) -> int | None:
        try:
            found = self._call("ssm", "get_parameter", Name=f"/cdk-bootstrap/{qualifier}/version")
        except _ProbeClientError as error:
            if error.code == "ParameterNotFound":
                return None
            raise
        value = found["Parameter"]["Value"]
        return int(value) if str(value).isdigit() else None

    def stack_status(self, name: str) -> str | None:
        try:
            found = self._call("cloudformation", "describe_stacks", StackName=name)
        except _ProbeClientError as error:
            if error.code == "ValidationError" and "does not exist" in str(error):
                return None
            raise
        return str(found["Stacks"][0]["StackStatus"])

    def lambda_concurrency(self) -> tuple[int, int]:
        settings = self._call("lambda", "get_account_settings")
        limit = settings["AccountLimit"]
        return int(limit["ConcurrentExecutions"]), int(limit["UnreservedConcurrentExecutions"])

    def function_reservation(self, function_name: str) -> int:
        try:
            found = self._call("lambda", "get_function_concurrency", FunctionName=function_name)
        except _ProbeClientError as error:
            if error.code == "ResourceNotFoundException":
                return 0
            raise
        return int(found.get("ReservedConcurrentExecutions", 0))

    def sagemaker_quota(self, name: str) -> Quota | None:
        """By name: each instance type's quota has its own code. The applied values first;
        ListServiceQuotas leaves out quotas that only have a default, so those come second."""
        if self._quotas is None:
            quotas: dict[str, Quota] = {}
            for operation in ("list_aws_default_service_quotas", "list_service_quotas"):
                for quota in self._pages(
                    "service-quotas", operation, "Quotas", ServiceCode="sagemaker"
                ):
                    quotas[quota["QuotaName"]] = Quota(
                        code=quota["QuotaCode"], name=quota["QuotaName"], value=quota["Value"]
                    )
            self._quotas = quotas
        return self._quotas.get(name)

    def topic_subscriptions(self, topic_arn: str) -> list[Subscription] | None:
        try:
            self._call("sns", "get_topic_attributes", TopicArn=topic_arn)
        except _ProbeClientError as error:
            if error.code == "NotFound":
                return None
            raise
        return [
            Subscription(
                protocol=item["Protocol"],
                endpoint=item["Endpoint"],
                confirmed=item["SubscriptionArn"].startswith("arn:"),
            )
            for item in self._pages(
                "sns", "list_subscriptions_by_topic", "Subscriptions", TopicArn=topic_arn
            )
        ]

    def _pages(self, service: str, operation: str, key: str, **params: Any) -> list[Any]:
        items: list[Any] = []
        token: str | None = None
        while True:
            page = self._call(
                service, operation, **params, **({"NextToken": token} if token else {})
            )
            items.extend(page.get(key, []))
            token = page.get("NextToken")
            if not token:
                return items


class _ProbeClientError(ProbeError):
    def __init__(self, service: str, operation: str, error: Any) -> None:
        self.code = str(error.response.get("Error", {}).get("Code", ""))
        super().__init__(f"{service} {operation}: {error}")


def render(report: Report) -> str:
    """The report as an operator reads it: one line per finding, its fix under it."""
    marks = {"ok": "ok  ", "problem": "FAIL", "note": "note"}
    where = f"account {report.account or '?'}, region {report.region or '?'}"
    lines = [f"sluice doctor: stage {report.stage}, {where}"]
    for finding in report.findings:
        lines.append(f"  {marks[finding.status]}  {finding.check}: {finding.detail}")
        if finding.fix and finding.status != "ok":
            lines.append(f"        fix: {finding.fix}")
    count = len(report.problems)
    lines.append(
        f"{count} problem{'s' if count != 1 else ''}" if count else "no problems: ready to deploy"
    )
    return "\n".join(lines)
