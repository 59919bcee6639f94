"""Orchestration port: start a pipeline run; on AWS a Step Functions execution.

Runs are named deterministically from the event that caused them, so a duplicate delivery
collapses onto the run that already exists (Step Functions refuses a second execution with the
same name), which makes "start the pipeline" idempotent without a separate table.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TRAINING_JOB_NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"


class StoppingCondition(BaseModel):
    """SageMaker's StoppingCondition, spelled as the CreateTrainingJob API spells it; the wait
    limit is only allowed (and only set) for managed spot training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    MaxRuntimeInSeconds: int = Field(ge=1)
    MaxWaitTimeInSeconds: int | None = Field(default=None, ge=1)


class RunInput(BaseModel):
    """The state machine's input. Deterministic for one event: no clocks, no random ids.

    Paths the pipeline definition reads (``$.training_job_name``, ``$.output_uri``...) are
    fields here, computed in Python from the key layout, so the ASL file builds no names.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_name: str
    training_job_name: str = Field(pattern=TRAINING_JOB_NAME)
    dataset: str
    dataset_version: str
    rows: int | None = Field(default=None, ge=0)  # rows of the dataset version it trains on
    artifacts_bucket: str
    train_uri: str
    validation_uri: str
    test_uri: str
    # How SageMaker reads the channels: S3Prefix (a format-1 version's split folders) or
    # ManifestFile (format 2: each uri a channel manifest listing the parts' files). Always in
    # the execution input (defaults are dumped), which the Train state reads as $.data_type.
    data_type: Literal["S3Prefix", "ManifestFile"] = "S3Prefix"
    output_uri: str  # SageMaker writes {output_uri}{training_job_name}/output/model.tar.gz
    checkpoint_uri: str
    task: str
    metric: str
    threshold: float
    tolerance: float
    sensitive: list[str] = Field(default_factory=list)  # columns for group metrics
    fairness_threshold: float | None = None  # the contract's; None: gaps shown, not flagged
    accept_schema_change: bool = False  # the contract's; absent in executions started before it
    instance_type: str
    spot: bool
    stopping_condition: StoppingCondition
    hyperparameters: dict[str, str]

    def execution_input(self) -> str:
        """The JSON Step Functions receives; absent optional fields are left out, not null."""
        return json.dumps(self.model_dump(mode="json", exclude_none=True))


class NoBuildRouteError(RuntimeError):
    """A build was asked of an orchestrator that has no route past one Lambda."""


class BuildInput(BaseModel):
    """The part builds' state machine input (infra/statemachine/builds.asl.json): a processing
    job over the plan at ``plan_uri``, then preprocess again to assemble the version and start
    the run ``run_name``. Deterministic for one event, like ``RunInput``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_name: str
    dataset: str
    job_name: str = Field(pattern=TRAINING_JOB_NAME)
    plan_uri: str
    report_uri: str  # the instances' reports, when the job ends
    instance_count: int = Field(ge=1)
    instance_type: str
    volume_gb: int = Field(ge=1)
    max_runtime_seconds: int = Field(ge=1)

    def execution_input(self) -> str:
        return json.dumps(self.model_dump(mode="json"))


@dataclass(frozen=True)
class RunStart:
    name: str
    run_id: str
    started: bool  # False when a run of that name already existed


class Orchestrator(ABC):
    @abstractmethod
    def run_exists(self, name: str) -> bool: ...

    @abstractmethod
    def start_run(self, run: RunInput) -> RunStart: ...

    @abstractmethod
    def running(self, dataset: str) -> list[str]:
        """Names of the dataset's runs executing now."""

    @property
    def builds(self) -> bool:
        """Whether parts past one Lambda can be built (``start_build``)."""
        return False

    def start_build(self, build: BuildInput) -> RunStart:
        """Start the processing job that builds the parts, then the version and its run.
        Callers ask ``builds`` first; an orchestrator without the route refuses."""
        raise NoBuildRouteError(
            f"no builds state machine to start {build.run_name} on: preprocess reads such "
            "uploads only where one is deployed (BUILDS_STATE_MACHINE_ARN)"
        )

    def build_exists(self, name: str) -> bool:
        """Whether a build of that name was started (running or ended)."""
        return False


class StepFunctionsOrchestrator(Orchestrator):
    def __init__(self, client: Any, state_machine_arn: str, builds_arn: str | None = None) -> None:
        self._sfn = client
        self._arn = state_machine_arn
        self._builds_arn = builds_arn

    def _execution_arn(self, name: str, machine: str | None = None) -> str:
        return (machine or self._arn).replace(":stateMachine:", ":execution:") + f":{name}"

    @property
    def builds(self) -> bool:
        return self._builds_arn is not None

    def build_exists(self, name: str) -> bool:
        if self._builds_arn is None:
            return False
        try:
            self._sfn.describe_execution(executionArn=self._execution_arn(name, self._builds_arn))
        except self._sfn.exceptions.ExecutionDoesNotExist:
            return False
        return True

    def start_build(self, build: BuildInput) -> RunStart:
        if self._builds_arn is None:
            return super().start_build(build)
        try:
            started = self._sfn.start_execution(
                stateMachineArn=self._builds_arn,
                name=build.run_name,
                input=build.execution_input(),
            )
        except self._sfn.exceptions.ExecutionAlreadyExists:
            arn = self._execution_arn(build.run_name, self._builds_arn)
            return RunStart(build.run_name, arn, started=False)
        return RunStart(build.run_name, started["executionArn"], started=True)

    def run_exists(self, name: str) -> bool:
        # Step Functions starts no second execution of a running one's name and input (it
        # answers with the first), so callers ask before they start
        try:
            self._sfn.describe_execution(executionArn=self._execution_arn(name))
        except self._sfn.exceptions.ExecutionDoesNotExist:
            return False
        return True

    def start_run(self, run: RunInput) -> RunStart:
        try:
            started = self._sfn.start_execution(
                stateMachineArn=self._arn, name=run.run_name, input=run.execution_input()
            )
        except self._sfn.exceptions.ExecutionAlreadyExists:
            return RunStart(run.run_name, self._execution_arn(run.run_name), started=False)
        return RunStart(run.run_name, started["executionArn"], started=True)

    def running(self, dataset: str) -> list[str]:
        """ListExecutions (RUNNING), then each one's input names its dataset: a handful of
        calls, since runs execute one per upload or guarded alarm."""
        names: list[str] = []
        pages = self._sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self._arn, statusFilter="RUNNING"
        )
        for page in pages:
            for execution in page["executions"]:
                described = self._sfn.describe_execution(executionArn=execution["executionArn"])
                try:
                    run_dataset = json.loads(described.get("input") or "{}").get("dataset")
                except (ValueError, AttributeError):
                    continue  # not an input sluice wrote: not one of our runs
                if run_dataset == dataset:
                    names.append(execution["name"])
        return names
