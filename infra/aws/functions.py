"""One Lambda function the way sluice deploys every function: a zip of its code (no Docker),
its dependency layer built for the Lambda platform by ``layers/build.py``, its own role with
nothing attached but what its construct grants, its own log group, X-Ray tracing on."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy, Size
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.aws.nag import acknowledge
from infra.topology import Topology
from layers.build import function_zip, layer_zip

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.X86_64
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
DEFAULT_TIMEOUT = Duration.seconds(60)


class Layers(Construct):
    """One dependency layer per code package, shared by the functions deployed from it
    (promote and reject share one)."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self._layers: dict[str, lambda_.LayerVersion] = {}

    def for_package(self, package: str) -> lambda_.LayerVersion:
        if package not in self._layers:
            self._layers[package] = lambda_.LayerVersion(
                self,
                package.capitalize(),
                code=lambda_.Code.from_asset(str(layer_zip(package))),
                compatible_runtimes=[RUNTIME],
                compatible_architectures=[ARCHITECTURE],
                description=f"sluice {package} dependencies (layers/build.py)",
            )
        return self._layers[package]


class SluiceFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topology: Topology,
        name: str,
        package: str,
        handler: str,
        layers: Layers,
        environment: Mapping[str, str],
        memory_mb: int = 512,
        ephemeral_storage_mb: int | None = None,  # /tmp; Lambda's default is 512 MB
        timeout: Duration = DEFAULT_TIMEOUT,
        reserved_concurrency: int | None = None,
        snap_start: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/lambda/{topology.function_name(name)}",
            retention=LOG_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"sluice {name} function ({topology.stage})",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=topology.function_name(name),
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=lambda_.Code.from_asset(str(function_zip(package))),
            handler=handler,
            layers=[layers.for_package(package)],
            role=self.role,
            environment={**environment, "POWERTOOLS_METRICS_NAMESPACE": "Sluice"},
            memory_size=memory_mb,
            ephemeral_storage_size=(
                Size.mebibytes(ephemeral_storage_mb) if ephemeral_storage_mb else None
            ),
            timeout=timeout,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            reserved_concurrent_executions=reserved_concurrency,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if snap_start else None,
        )
        if snap_start:
            acknowledge(
                self.function,
                id="@aws-cdk/aws-lambda:snapStartRequirePublish",
                reason="The function is served through a published version (the live alias).",
            )
        acknowledge(
            self,
            id="AwsSolutions-L1",
            reason="Python 3.12 is the runtime the layers are built and verified for "
            "(layers/build.py imports every handler under python3.12); moving to a newer "
            "runtime is a layer rebuild, tracked in docs/decisions.md.",
        )
        acknowledge(
            self.role,
            id="AwsSolutions-IAM5[Resource::*]",
            reason="X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level "
            "permissions; CDK adds them for active tracing.",
        )
