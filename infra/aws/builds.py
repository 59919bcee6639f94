"""Parts past one Lambda (docs/decisions.md, "Parts past one Lambda"): the state machine from
``infra/statemachine/builds.asl.json`` (the file the local stack runs), the SageMaker Processing
job's role, image, code and limits, and the grants that let preprocess start it and the
machine call preprocess back to assemble the version.

The job runs ``python3 -m functions.preprocess.job_boot`` in the CPU variant of the training
image (infra/aws/images.py) with preprocess's own code zip on ``PYTHONPATH``; ``job_boot``
installs ``functions/preprocess/job-requirements.txt`` when the image lacks a package. Instance
type, count, volume and time limit come from ``functions.preprocess.part_job.JobLimits``
through the execution input.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Aws, Fn
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.shared.layout import CONTRACT_FILE, DATA_PREFIX
from infra.aws.functions import SluiceFunction
from infra.aws.images import PROCESSING_TAG, TrainingImage
from infra.aws.job_roles import job_state_machine, sagemaker_job_role
from infra.aws.nag import acknowledge
from infra.aws.storage import Storage, grant_read, grant_write
from infra.local.pipeline import BUILDS_DEFINITION
from infra.topology import Topology
from layers.build import function_zip

SAGEMAKER_EVENTS_RULE = "StepFunctionsGetEventsForSageMakerProcessingJobsRule"
CODE_DIR = "/opt/ml/processing/input/code/"


def processing_jobs_state_machine(
    scope: Construct,
    *,
    name: str,
    definition: Path,
    image_uri: str,
    job_role: iam.IRole,
    code: s3_assets.Asset,
    function: tuple[str, str],
    description: str,
    job_reason: str,
) -> sfn.StateMachine:
    """A machine that runs SageMaker Processing jobs (the part builds', the batch jobs'): the
    placeholders every such ASL file has (image, role, the code zip as its input), plus one
    function's ARN (``function``: its placeholder, its ARN), which the machine may invoke."""
    placeholder, function_arn = function
    return job_state_machine(
        scope,
        name=name,
        definition=definition,
        substitutions={
            "Region": Aws.REGION,
            "ProcessingImage": image_uri,
            "ProcessingRoleArn": job_role.role_arn,
            "ProcessingCodeUri": code.s3_object_url,
            # an object named by its uri lands under its own name in LocalPath
            "ProcessingCodePath": Fn.join("", [CODE_DIR, code.s3_object_key]),
            placeholder: function_arn,
        },
        description=description,
        job_arn=f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:processing-job/*",
        job_actions=[
            "sagemaker:CreateProcessingJob",
            "sagemaker:DescribeProcessingJob",
            "sagemaker:StopProcessingJob",
            "sagemaker:AddTags",
            "sagemaker:ListTags",
        ],
        job_role=job_role,
        events_rule=SAGEMAKER_EVENTS_RULE,
        invokes=[function_arn],
        job_reason=job_reason,
    )


class PartBuilds(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topology: Topology,
        storage: Storage,
        preprocess: SluiceFunction,
        image: TrainingImage,
    ) -> None:
        super().__init__(scope, construct_id)
        self.image = image
        self.image_uri = image.uri_with(PROCESSING_TAG)
        # preprocess's own code: functions/{__init__,shared,preprocess}, the job's requirements
        self.code = s3_assets.Asset(self, "Code", path=str(function_zip("preprocess")))
        self.role = self._processing_role(storage)
        self.state_machine = self._state_machine(topology)
        self._allow_preprocess(topology, preprocess)

    def _processing_role(self, storage: Storage) -> iam.Role:
        role = sagemaker_job_role(
            self,
            "ProcessingRole",
            description="Processing jobs that build dataset parts: read data files, write parts",
            jobs="ProcessingJobs",
            image=self.image,
            code=self.code,
        )
        grant_read(role, storage.raw, f"*/{DATA_PREFIX}*", f"*/{CONTRACT_FILE}")
        # the plan, other parts' records and roles; the parts and the instances' reports
        grant_read(role, storage.artifacts, "*/parts/*")
        grant_write(role, storage.artifacts, "*/parts/*")
        return role

    def _state_machine(self, topology: Topology) -> sfn.StateMachine:
        return processing_jobs_state_machine(
            self,
            name=topology.builds_state_machine_name,
            definition=BUILDS_DEFINITION,
            image_uri=self.image_uri,
            job_role=self.role,
            code=self.code,
            # by name (the topology's), not by reference: preprocess's own policy names this
            # machine, and two references would make a cycle
            function=("PreprocessFunctionArn", topology.function_arn("preprocess")),
            description="Part builds: start and watch processing jobs, call preprocess back",
            job_reason="Processing job names are made per upload (from its run); the machine "
            "may only create, watch and stop processing jobs.",
        )

    def _allow_preprocess(self, topology: Topology, preprocess: SluiceFunction) -> None:
        """Preprocess starts builds (named by the run) and asks whether one was started."""
        executions = (
            f"arn:aws:states:{topology.region}:{topology.account}:execution:"
            f"{topology.builds_state_machine_name}:*"
        )
        preprocess.role.add_to_policy(
            iam.PolicyStatement(
                actions=["states:StartExecution"], resources=[topology.builds_state_machine_arn]
            )
        )
        preprocess.role.add_to_policy(
            iam.PolicyStatement(actions=["states:DescribeExecution"], resources=[executions])
        )
        acknowledge(
            preprocess.role,
            id="AwsSolutions-IAM5[Resource::arn:aws:states:<AWS::Region>:<AWS::AccountId>:"
            f"execution:{topology.builds_state_machine_name}:*]",
            reason="Build names are made per upload; preprocess may only describe the "
            "executions of the builds machine (a redelivered upload finds its build).",
        )
