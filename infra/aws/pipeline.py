"""The training pipeline: the state machine from ``infra/statemachine/pipeline.asl.json`` (the file
the local stack runs), the SageMaker training role and source asset, and the evaluate, promote and
reject functions its Task states call."""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.shared.alarms import alarm_prefix
from functions.shared.layout import CHECKPOINTS_PREFIX
from infra.aws.functions import Layers, SluiceFunction
from infra.aws.images import TrainingImage
from infra.aws.job_roles import job_state_machine, sagemaker_job_role
from infra.aws.nag import acknowledge
from infra.aws.registry import Registry
from infra.aws.storage import Storage, grant_read, grant_write
from infra.local.pipeline import DEFINITION
from infra.topology import Topology
from layers.build import training_source_tarball

SAGEMAKER_EVENTS_RULE = "StepFunctionsGetEventsForSageMakerTrainingJobsRule"


class TrainingPipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topology: Topology,
        storage: Storage,
        registry: Registry,
        layers: Layers,
    ) -> None:
        super().__init__(scope, construct_id)
        environment = topology.pipeline_environment()

        def function(name: str, package: str, handler: str, memory_mb: int) -> SluiceFunction:
            return SluiceFunction(
                self,
                name.capitalize(),
                topology=topology,
                name=name,
                package=package,
                handler=handler,
                layers=layers,
                environment=environment,
                memory_mb=memory_mb,
                timeout=Duration.minutes(5),
            )

        self.evaluate = function(
            "evaluate", "evaluate", "functions.evaluate.handler.lambda_handler", 2048
        )
        self.promote = function(
            "promote", "promote", "functions.promote.handler.promote_handler", 256
        )
        self.reject = function("reject", "promote", "functions.promote.handler.reject_handler", 256)
        # a format-2 version's test split is its parts' files, listed by a channel manifest
        grant_read(self.evaluate.role, storage.artifacts, "*/versions/*", "*/parts/*", "*/models/*")
        grant_write(self.evaluate.role, storage.artifacts, "*/models/*")
        self.evaluate.role.add_to_policy(registry.writer())
        for decider in (self.promote, self.reject):
            decider.role.add_to_policy(registry.writer())
            decider.role.add_to_policy(registry.publisher())
        self._allow_retraining_alarms(topology)

        self.image = TrainingImage(self, "TrainingImage")
        self.source = s3_assets.Asset(self, "TrainingSource", path=str(training_source_tarball()))
        self.training_role = self._training_role(storage)
        self.state_machine = self._state_machine(topology)

    def _allow_retraining_alarms(self, topology: Topology) -> None:
        """Promote puts the dataset's retraining alarms when a model goes live
        (functions/shared/alarms.py): PutMetricAlarm on those names only. Deleting them is the
        operator's ``sluice retire``, with the operator's credentials."""
        prefix = alarm_prefix(topology.stage)
        alarms = Stack.of(self).format_arn(
            service="cloudwatch",
            resource="alarm",
            resource_name=f"{prefix}*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role = self.promote.role
        role.add_to_policy(
            iam.PolicyStatement(actions=["cloudwatch:PutMetricAlarm"], resources=[alarms])
        )
        acknowledge(
            role,
            id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:cloudwatch:<AWS::Region>:"
            f"<AWS::AccountId>:alarm:{prefix}*]",
            reason="Alarm names are made per dataset when its model goes live; promote may only "
            "put the retraining alarms (the prefix the retraining rule matches), no other alarm.",
        )

    def _training_role(self, storage: Storage) -> iam.Role:
        role = sagemaker_job_role(
            self,
            "TrainingRole",
            description="SageMaker training jobs: read a dataset version, write the model",
            jobs="TrainingJobs",
            image=self.image,
            code=self.source,
        )
        # channels: a format-1 version's split folders, or a format-2 one's channel manifests
        # and the parts' files they list
        grant_read(role, storage.artifacts, "*/versions/*", "*/parts/*", f"{CHECKPOINTS_PREFIX}*")
        grant_write(role, storage.artifacts, "*/models/*", f"{CHECKPOINTS_PREFIX}*")
        return role

    def _state_machine(self, topology: Topology) -> sfn.StateMachine:
        return job_state_machine(
            self,
            name=topology.state_machine_name,
            definition=DEFINITION,
            substitutions={
                "Region": Aws.REGION,
                "TrainingImage": self.image.uri,
                "TrainingRoleArn": self.training_role.role_arn,
                "TrainingSourceUri": self.source.s3_object_url,
                "EvaluateFunctionArn": self.evaluate.function.function_arn,
                "PromoteFunctionArn": self.promote.function.function_arn,
                "RejectFunctionArn": self.reject.function.function_arn,
            },
            description="The pipeline: start and watch training jobs, call its functions",
            job_arn=f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:training-job/*",
            job_actions=[
                "sagemaker:CreateTrainingJob",
                "sagemaker:DescribeTrainingJob",
                "sagemaker:StopTrainingJob",
                "sagemaker:AddTags",
                # in the policy Step Functions generates for createTrainingJob.sync
                "sagemaker:ListTags",
            ],
            job_role=self.training_role,
            events_rule=SAGEMAKER_EVENTS_RULE,
            invokes=[fn.function.function_arn for fn in (self.evaluate, self.promote, self.reject)],
            job_reason="Training job names are made per run (from the dataset version); the "
            "pipeline may only create, watch and stop training jobs.",
        )
