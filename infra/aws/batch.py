"""Batch predictions: a file under ``<dataset>/batch/`` in the raw bucket is scored by the live
model in chunks, the predictions written under ``<dataset>/predictions/`` in the artifacts bucket
(functions/batch). A file past the function's cap is scored by a SageMaker Processing job
running the same code (functions/batch/job.py), started through the state machine from
``infra/statemachine/batch.asl.json`` (the file the local stack runs): its role reads batch
files, the contract and models, and writes predictions; the image is the part builds' CPU one,
the code the batch function's own zip; limits come from ``functions.batch.route.BatchJobLimits``
through the execution input."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.shared.layout import BATCH_PREFIX, CONTRACT_FILE
from infra.aws.builds import processing_jobs_state_machine
from infra.aws.functions import Layers, SluiceFunction
from infra.aws.images import PROCESSING_TAG, TrainingImage
from infra.aws.ingest import Ingest
from infra.aws.job_roles import sagemaker_job_role
from infra.aws.nag import acknowledge
from infra.aws.registry import Registry
from infra.aws.storage import Storage, grant_read, grant_write
from infra.local.pipeline import BATCH_DEFINITION
from infra.topology import Topology, batch_event_pattern
from layers.build import function_zip


class BatchPredictions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topology: Topology,
        storage: Storage,
        registry: Registry,
        ingest: Ingest,
        layers: Layers,
        image: TrainingImage,
    ) -> None:
        super().__init__(scope, construct_id)
        self.batch = SluiceFunction(
            self,
            "Batch",
            topology=topology,
            name="batch",
            package="batch",
            handler="functions.batch.handler.lambda_handler",
            layers=layers,
            environment=topology.batch_environment(),
            memory_mb=3008,
            # the file is streamed from S3 and the parts staged in S3, so /tmp keeps Lambda's
            # default 512 MB; the 15 minutes bound the file (functions/batch/logic.py)
            timeout=Duration.minutes(15),
        )
        role = self.batch.role
        grant_read(role, storage.raw, f"*/{BATCH_PREFIX}*", f"*/{CONTRACT_FILE}")
        # models; a failed job's request, for the file's report
        grant_read(role, storage.artifacts, "*/models/*", "*/predictions/*")
        grant_write(role, storage.artifacts, "*/predictions/*")
        role.add_to_policy(registry.reader())
        self.rule = ingest.route(
            "BatchUploads",
            "Object Created under <dataset>/batch/ in the raw bucket → batch predictions",
            batch_event_pattern(topology),
            self.batch,
        )
        self.code = s3_assets.Asset(self, "Code", path=str(function_zip("batch")))
        self.job_role = self._job_role(storage, image)
        self.state_machine = self._state_machine(topology, image)
        self._allow_batch(topology)

    def _job_role(self, storage: Storage, image: TrainingImage) -> iam.Role:
        role = sagemaker_job_role(
            self,
            "JobRole",
            description="Processing jobs that score batch files past the batch function",
            jobs="ProcessingJobs",
            image=image,
            code=self.code,
        )
        grant_read(role, storage.raw, f"*/{BATCH_PREFIX}*", f"*/{CONTRACT_FILE}")
        grant_read(role, storage.artifacts, "*/models/*", "*/predictions/*")  # + the request
        grant_write(role, storage.artifacts, "*/predictions/*")
        return role

    def _state_machine(self, topology: Topology, image: TrainingImage) -> sfn.StateMachine:
        return processing_jobs_state_machine(
            self,
            name=topology.batch_jobs_state_machine_name,
            definition=BATCH_DEFINITION,
            image_uri=image.uri_with(PROCESSING_TAG),
            job_role=self.job_role,
            code=self.code,
            # by name: the batch function's own policy names this machine (no cycle)
            function=("BatchFunctionArn", topology.function_arn("batch")),
            description="Batch jobs: start and watch processing jobs, report a failed one",
            job_reason="Processing job names are made per batch file (from its upload); the "
            "machine may only create, watch and stop processing jobs.",
        )

    def _allow_batch(self, topology: Topology) -> None:
        """The batch function starts jobs (named by the upload) and asks whether one was."""
        executions = (
            f"arn:aws:states:{topology.region}:{topology.account}:execution:"
            f"{topology.batch_jobs_state_machine_name}:*"
        )
        self.batch.role.add_to_policy(
            iam.PolicyStatement(
                actions=["states:StartExecution"],
                resources=[topology.batch_jobs_state_machine_arn],
            )
        )
        self.batch.role.add_to_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[executions])
        )
        acknowledge(
            self.batch.role,
            id="AwsSolutions-IAM5[Resource::arn:aws:states:<AWS::Region>:<AWS::AccountId>:"
            f"execution:{topology.batch_jobs_state_machine_name}:*]",
            reason="Batch job names are made per upload; the batch function may only describe "
            "the executions of the batch jobs machine (a redelivered upload finds its job).",
        )
