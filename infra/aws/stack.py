"""The sluice stack: one construct per capability, composed; names from infra/topology.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from aws_cdk import Aws, CfnOutput, Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.aws.batch import BatchPredictions
from infra.aws.builds import PartBuilds
from infra.aws.functions import Layers, SluiceFunction
from infra.aws.inference_api import ApiAuth, InferenceApi
from infra.aws.ingest import Ingest
from infra.aws.monitoring import Monitoring
from infra.aws.nag import acknowledge
from infra.aws.pipeline import TrainingPipeline
from infra.aws.registry import Registry
from infra.aws.retraining import Retraining
from infra.aws.storage import Storage
from infra.topology import Topology


def stack_name(stage: str) -> str:
    return f"sluice-{stage}"


class SluiceStack(Stack):
    def __init__(
        self,
        scope: Construct,
        *,
        stage: str,
        api_auth: ApiAuth = "api_key",
        datasets: Sequence[str] = (),
        guard_overrides: Mapping[str, str] | None = None,
        reserved_concurrency: Mapping[str, int] | None = None,
        ops_email: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            stack_name(stage),
            description=f"sluice ({stage}): drop a CSV, get a gated, served ONNX model",
            **kwargs,
        )
        topology = Topology(stage=stage, account=Aws.ACCOUNT_ID, region=Aws.REGION)
        layers = Layers(self, "Layers")
        self.storage = Storage(self, "Storage", topology=topology)
        self.registry = Registry(self, "Registry", topology=topology)
        self.ingest = Ingest(self, "Ingest", topology=topology, storage=self.storage, layers=layers)
        # preprocess reads a dataset's retirement (an upload to a retired dataset is refused)
        self.ingest.preprocess.role.add_to_policy(self.registry.reader())
        self.pipeline = TrainingPipeline(
            self,
            "Pipeline",
            topology=topology,
            storage=self.storage,
            registry=self.registry,
            layers=layers,
        )
        self.ingest.allow_start(self.pipeline.state_machine, topology)
        self.builds = PartBuilds(
            self,
            "Builds",
            topology=topology,
            storage=self.storage,
            preprocess=self.ingest.preprocess,
            image=self.pipeline.image,
        )
        self.api = InferenceApi(
            self,
            "Inference",
            topology=topology,
            storage=self.storage,
            registry=self.registry,
            layers=layers,
            auth=api_auth,
        )
        self.batch = BatchPredictions(
            self,
            "BatchPredictions",
            topology=topology,
            storage=self.storage,
            registry=self.registry,
            ingest=self.ingest,
            layers=layers,
            image=self.pipeline.image,
        )
        self.retraining = Retraining(
            self,
            "Retraining",
            topology=topology,
            datasets=datasets,
            storage=self.storage,
            registry=self.registry,
            pipeline=self.pipeline,
            layers=layers,
            guard_overrides=guard_overrides,
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            topology=topology,
            ingest=self.ingest,
            pipeline=self.pipeline,
            api=self.api,
            retraining=self.retraining,
            storage=self.storage,
            registry=self.registry,
            layers=layers,
            ops_email=ops_email,
        )
        self.reservable: dict[str, SluiceFunction] = {
            "preprocess": self.ingest.preprocess,
            "batch": self.batch.batch,
            "retrain": self.retraining.retrain,
            "drift": self.monitoring.drift,
        }
        self._reserve(reserved_concurrency or {})
        for child in self.node.children:  # CDK's deploy-time handler for bucket notifications
            if child.node.id.startswith("BucketNotificationsHandler"):
                acknowledge(
                    child,
                    id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    "service-role/AWSLambdaBasicExecutionRole]",
                    reason="CDK's own custom resource that turns on EventBridge notifications "
                    "for the raw bucket; it runs only during deployments.",
                )
        outputs = {
            "RawBucketName": self.storage.raw.bucket_name,
            "ArtifactsBucketName": self.storage.artifacts.bucket_name,
            "ApiUrl": self.api.api.url,
            "StateMachineArn": self.pipeline.state_machine.state_machine_arn,
            "RegistryTableName": self.registry.table.table_name,
            "DecisionsTopicArn": self.registry.decisions.topic_arn,
            "OpsTopicArn": self.monitoring.ops_topic.topic_arn,
        }
        if api_auth == "api_key":
            outputs["ApiKeyId"] = self.api.api_key.key_id
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)

    def _reserve(self, counts: Mapping[str, int]) -> None:
        """Reserved concurrency only where the stage's context asks for it (infra/aws/app.py):
        none by default, so the stack deploys into an account whose quota is 10."""
        for name, count in counts.items():
            if name not in self.reservable:
                raise ValueError(
                    f"reserved_concurrency: '{name}' is not one of {', '.join(self.reservable)}"
                )
            function = cast(lambda_.CfnFunction, self.reservable[name].function.node.default_child)
            function.reserved_concurrent_executions = count
